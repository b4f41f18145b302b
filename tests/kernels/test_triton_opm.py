"""The Triton outer product mean update against the reference (CPU interpreter; GPU marked)."""

import pytest
import torch
from tolerances import BF16_MODULE, MODULE, assert_close_scaled

from sparkfold.model import kernels
from sparkfold.model.kernels import reference

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
EPS = 1e-3


def _half(device):
    return torch.bfloat16 if device == "cuda" else torch.float16  # the interpreter has no bf16


def _inputs(device, dtype, batch=(2,), n=37, s=11, c=6, e=6, c_z=10, seed=0):
    """Masked projections ``a [*, N, S, C]``, ``b [*, N, S, E]`` (residue 0 fully masked, so its
    row and column of ``norm`` are 0), fp32 ``norm [*, N, N, 1]`` and ``linear_out``'s
    parameters."""
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.rand(*batch, s, n, 1, generator=gen) > 0.25).float()  # [*, S, N, 1]
    mask[..., 0, :] = 0.0
    a = (torch.randn(*batch, s, n, c, generator=gen) * mask).transpose(-2, -3)  # [*, N, S, C]
    b = (torch.randn(*batch, s, n, e, generator=gen) * mask).transpose(-2, -3)
    norm = torch.einsum("...sic,...sjc->...ijc", mask, mask)  # [*, N, N, 1]
    w = torch.randn(c_z, c * e, generator=gen) * 0.2
    bias = torch.randn(c_z, generator=gen) * 0.01
    return [t.to(device, dtype) for t in (a, b)] + [norm.to(device)] + [
        t.to(device, dtype) for t in (w, bias)]


def _fp32(args):
    return [t.float() for t in args]


def _check(out, ref32, bias, level, name):
    """Pairs with a mask count compared at their own scale; the fully masked ones are bias/eps."""
    assert_close_scaled(out[..., 1:, 1:, :], ref32[..., 1:, 1:, :], level=level, name=name)
    expect = (bias.float() / EPS).expand_as(ref32[..., 0, :, :])
    assert_close_scaled(out[..., 0, :, :], expect, level=level, name=f"{name} masked")


@pytest.mark.parametrize("device", DEVICES)
def test_opm_update_matches_reference(triton_on, device):
    """Odd sizes (C ≠ E, none a multiple of 16), fully masked pairs, chunked and whole."""
    for dtype in (torch.float32, _half(device)):
        a, b, norm, w, bias = args = _inputs(device, dtype, c=6, e=5)
        ref32 = reference.outer_product_update(*_fp32(args), EPS)
        ref = reference.outer_product_update(*args, EPS)
        with kernels.use_backend("triton"):
            assert kernels.has_fast("outer_product_update", dtype, a.device)
            whole = kernels.outer_product_update(a, b, norm, w, bias, EPS)
            chunked = kernels.outer_product_update(a, b, norm, w, bias, EPS, chunk_size=8)
        assert whole.dtype == dtype and whole.shape == ref.shape
        level = MODULE if dtype == torch.float32 else BF16_MODULE
        _check(whole, ref32, bias, level, f"whole {dtype}")
        _check(chunked, ref32, bias, level, f"chunked {dtype}")
        assert_close_scaled(chunked, whole, level=level, name=f"chunked vs whole {dtype}")
        # one rounding of linear_out's output instead of two: at most about one ulp from the
        # reference in the input dtype
        assert_close_scaled(whole, ref.float(), level=(1e-2, 1e-3) if dtype != torch.float32
                            else MODULE, name=f"vs same-dtype reference {dtype}")


@pytest.mark.parametrize("device", DEVICES)
def test_opm_update_into_matches_out_of_place(triton_on, device):
    """``add_into`` in place (a strided view: channels of a wider buffer, unit stride) equals
    the out-of-place update added; a view the kernel cannot address falls back."""
    for dtype in (torch.float32, _half(device)):
        a, b, norm, w, bias = _inputs(device, dtype, n=21, s=7, c=5, e=5, c_z=12, seed=1)
        gen = torch.Generator().manual_seed(2)
        wide = torch.randn(2, 21, 21, 15, generator=gen).to(device, dtype)
        wide0 = wide.clone()
        z0 = wide[..., :12].clone()
        with kernels.use_backend("triton"):
            update = kernels.outer_product_update(a, b, norm, w, bias, EPS, chunk_size=6)
            target = wide[..., :12]  # [*, N, N, C_z], row stride 15·N
            got = kernels.outer_product_update(a, b, norm, w, bias, EPS, add_into=target,
                                               chunk_size=6)
            assert got is target
            assert torch.equal(wide[..., :12], z0 + update), dtype  # the same values, added
            assert torch.equal(wide[..., 12:], wide0[..., 12:])  # nothing written outside it
            cf = z0.movedim(-1, -3).contiguous().movedim(-3, -1)  # channel stride N·N: fallback
            got_cf = kernels.outer_product_update(a, b, norm, w, bias, EPS, add_into=cf,
                                                  chunk_size=6)
            assert got_cf is cf
            assert torch.equal(cf, z0 + update)


@pytest.mark.parametrize("device", DEVICES)
def test_opm_update_batch_dims_and_broadcast_norm(triton_on, device):
    """Two batch dims; ``norm`` with no batch dims (stride 0) and with a partial broadcast."""
    a, b, norm, w, bias = _inputs(device, torch.float32, batch=(2, 3), n=13, s=5, c=4, e=6,
                                  c_z=20)
    for nrm in (norm[0, 0], norm[:1]):  # [N, N, 1], [1, 3, N, N, 1]
        ref = reference.outer_product_update(a, b, nrm, w, bias, EPS)
        with kernels.use_backend("triton"):
            out = kernels.outer_product_update(a, b, nrm, w, bias, EPS, chunk_size=5)
        assert out.shape == (2, 3, 13, 13, 20)
        _check(out, ref, bias, MODULE, f"norm {tuple(nrm.shape)}")


@pytest.mark.parametrize("device", DEVICES)
def test_outer_product_mean_triton_equals_reference(triton_on, device):
    """The module under kernels "triton" (fused path) equals it under "reference", fp32,
    whole, chunked and added into the pair in place; with autograd on it keeps the reference
    path (and stays differentiable)."""
    from sparkfold.model.pair import OuterProductMean

    torch.manual_seed(3)
    mod = OuterProductMean(c_m=8, c_z=10, c_hidden=6).to(device)
    for p in mod.parameters():
        torch.nn.init.normal_(p, std=0.2)
    m = torch.randn(5, 13, 8, device=device)  # [S, N, C_m]
    mask = (torch.rand(5, 13, device=device) > 0.3).float()
    mask[:, 2] = 0.0
    z = torch.randn(13, 13, 10, device=device)
    with torch.no_grad():
        with kernels.use_backend("reference"):
            ref = mod(m, mask=mask)
        with kernels.use_backend("triton"):
            assert kernels.has_fast("outer_product_update", torch.float32, m.device)
            out = mod(m, mask=mask)
            out_chunked = mod(m, mask=mask, chunk_size=4)
            z_in = z.clone()
            got = mod(m, mask=mask, chunk_size=4, add_into=z_in)
    assert got is z_in
    assert_close_scaled(out, ref, level=MODULE, name="module")
    assert_close_scaled(out_chunked, ref, level=MODULE, name="module chunked")
    assert_close_scaled(z_in, z + ref, level=MODULE, name="module add_into")
    with kernels.use_backend("triton"):
        out_grad = mod(m.requires_grad_(), mask=mask)
    assert out_grad.requires_grad
    assert_close_scaled(out_grad, ref, level=MODULE, name="module autograd")


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_outer_product_out(triton_on, device):
    from sparkfold.model.kernels.triton_opm import _out_op

    a, b, norm, w, bias = _inputs(device, torch.float32, batch=(), n=9, s=4, c=3, e=5, c_z=7)
    o = torch.einsum("isc,jse->icje", a, b).reshape(9 * 3, 9 * 5).contiguous()  # [I·C, J·E]
    out = torch.zeros(9, 9, 7, device=device)
    w_t = w.t().contiguous()  # [C·E, C_z]
    torch.library.opcheck(_out_op, (o, w_t, bias, norm[..., 0], out, EPS, True, 3, 5),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=pytest.mark.gpu)])
def test_opm_update_model_shapes_cuda(triton_on, device):
    """AF2's shapes (C = E = 32, C_z = 128) in bf16, several row slices."""
    a, b, norm, w, bias = args = _inputs("cuda", torch.bfloat16, batch=(), n=200, s=64, c=32,
                                         e=32, c_z=128)
    ref32 = reference.outer_product_update(*_fp32(args), EPS)
    with kernels.use_backend("triton"):
        out = kernels.outer_product_update(a, b, norm, w, bias, EPS, chunk_size=48)
    _check(out, ref32, bias, BF16_MODULE, "model shapes")
