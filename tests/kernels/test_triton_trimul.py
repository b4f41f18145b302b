"""The fused Triton triangle update against the reference (CPU interpreter; GPU marked)."""

import pytest
import torch
from tolerances import BF16_MODULE, MODULE, assert_close_scaled

from sparkfold.model import kernels
from sparkfold.model.kernels import TriangleWeights, reference

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
DIRECTIONS = ["outgoing", "incoming"]


def _weights(c_z, c, gen, device, dtype=torch.float32):
    def rand(*shape, offset=0.0):
        return (offset + 0.3 * torch.randn(*shape, generator=gen)).to(device, dtype)

    return TriangleWeights(
        ln_in_w=rand(c_z, offset=1.0), ln_in_b=rand(c_z), w_ab=rand(4 * c, c_z), b_ab=rand(4 * c),
        w_g=rand(c_z, c_z), b_g=rand(c_z), ln_out_w=rand(c, offset=1.0), ln_out_b=rand(c),
        w_z=rand(c_z, c), b_z=rand(c_z))


def _cast(weights, dtype):
    return TriangleWeights(*(t.to(dtype) for t in weights[:-1]), weights.eps)


def _case(device, n=37, c_z=8, c=6, batch=(2,), seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(*batch, n, n, c_z, generator=gen).to(device)
    mask = (torch.rand(*batch, n, n, generator=gen) > 0.2).float().to(device)
    mask[..., 3, :] = 0.0  # a fully masked row
    return z, mask, _weights(c_z, c, gen, device)


def _truth(z, mask, weights, direction):
    """The reference in fp64: the yardstick for every dtype."""
    return reference.triangle_update(z.double(), None if mask is None else mask.double(),
                                     _cast(weights, torch.float64), direction).float()


def _dtypes(device):
    return [torch.float32, torch.bfloat16 if device == "cuda" else torch.float16]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_update_matches_reference(triton_on, device, direction):
    """fp32 and half precision, a mask with a zero row, odd N and channel counts, batch dims;
    in channel blocks too (``a``, ``b`` made and contracted a few channels at a time)."""
    from sparkfold.model.kernels.triton_trimul import triangle_update

    z, mask, w = _case(device)
    truth = _truth(z, mask, w, direction)
    for dtype in _dtypes(device):
        zd, md, wd = z.to(dtype), mask.to(dtype), _cast(w, dtype)
        with kernels.use_backend("triton"):
            got = kernels.triangle_update(zd, md, wd, direction)
        assert got.dtype == dtype and got.shape == z.shape
        if dtype == torch.float32:
            assert_close_scaled(got, truth, level=MODULE, name=f"{direction} {dtype}")
            continue
        # Half precision: the spec run in the same dtype sets the yardstick (its bf16 error on
        # these random weights exceeds the generic module tolerance); the fused kernels, which
        # round once per stage, must be no further from the fp64 truth than it is.
        ref = reference.triangle_update(zd, md, wd, direction)
        err, ref_err = (got.float() - truth).abs(), (ref.float() - truth).abs()
        scale = max(1.0, float(truth.abs().max()))
        assert float(err.max()) <= 1.25 * float(ref_err.max()) + 1e-3 * scale, (
            f"{direction} {dtype}: max err {float(err.max()):.3e}, spec's {float(ref_err.max()):.3e}")
        assert float(err.mean()) <= 1.25 * float(ref_err.mean()) + 1e-4 * scale, (
            f"{direction} {dtype}: mean err {float(err.mean()):.3e}, spec's {float(ref_err.mean()):.3e}")
    blocked = triangle_update(z, mask, w, direction, channel_block=4)  # blocks of 4 + 2 channels
    assert_close_scaled(blocked, truth, level=MODULE, name=f"{direction} channel blocks")


@pytest.mark.parametrize("device", DEVICES)
def test_update_batch_dims_broadcast_mask_and_no_mask(triton_on, device):
    """Two batch axes, a mask broadcast over them, or none; Cz = 16, C = 12."""
    z, _, w = _case(device, n=19, c_z=16, c=12, batch=(2, 1), seed=1)
    mask = (torch.rand(19, 19, generator=torch.Generator().manual_seed(2)) > 0.3).float().to(device)
    for m in (mask, None):
        with kernels.use_backend("triton"):
            got = kernels.triangle_update(z, m, w, "incoming")
        assert_close_scaled(got, _truth(z, m, w, "incoming"), level=MODULE,
                            name=f"mask {m is not None}")


@pytest.mark.parametrize("device", DEVICES)
def test_update_added_in_place_equals_out_of_place(triton_on, device):
    """``add_into=z`` (each program reads its own tile of z before writing it), a separate
    tensor, and a view sharing z's storage (computed out of place, then added)."""
    z, mask, w = _case(device, n=21, seed=3)
    truth = _truth(z, mask, w, "outgoing")
    with kernels.use_backend("triton"):
        update = kernels.triangle_update(z, mask, w, "outgoing")
        z_in = z.clone()
        assert kernels.triangle_update(z_in, mask, w, "outgoing", add_into=z_in) is z_in
        other = torch.randn_like(z)
        got_other = kernels.triangle_update(z, mask, w, "outgoing", add_into=other.clone())
        z_t = z.clone()
        view = z_t.transpose(-2, -3)  # same storage, another layout: no in-place tiles
        kernels.triangle_update(z_t, mask, w, "outgoing", add_into=view)
    assert_close_scaled(update, truth, level=MODULE, name="out of place")
    assert_close_scaled(z_in, z + update, level=MODULE, name="in place into z")
    assert_close_scaled(got_other, other + update, level=MODULE, name="into another tensor")
    assert_close_scaled(z_t, z + update.transpose(-2, -3), level=MODULE, name="into a view of z")


@pytest.mark.parametrize("device", DEVICES)
def test_update_layouts_it_cannot_address_fall_back(triton_on, device):
    """``z`` whose pixels do not merge into one strided row (a transposed view) takes the
    reference; so does a channel count above the kernels' limit."""
    z, mask, w = _case(device, n=13, seed=4)
    z_t = z.transpose(-2, -3)
    with kernels.use_backend("triton"):
        got = kernels.triangle_update(z_t, mask, w, "incoming")
    assert_close_scaled(got, reference.triangle_update(z_t, mask, w, "incoming"), level=MODULE,
                        name="non-dense fallback")
    from sparkfold.model.kernels import triton_trimul

    limit = triton_trimul.MAX_CHANNELS
    triton_trimul.MAX_CHANNELS = 4
    try:
        with kernels.use_backend("triton"):
            got = kernels.triangle_update(z, mask, w, "incoming")
    finally:
        triton_trimul.MAX_CHANNELS = limit
    assert_close_scaled(got, reference.triangle_update(z, mask, w, "incoming"), level=MODULE,
                        name="wide-channel fallback")


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_module_fused_path_matches_reference_backend(triton_on, direction):
    """``TriangleMultiplication`` under ``kernels="triton"`` (the fused op, chunk_size ignored,
    added into z in place) equals the module under the reference backend (fp32, CPU)."""
    from sparkfold.model.pair import TriangleMultiplication

    gen = torch.Generator().manual_seed(5)
    mod = TriangleMultiplication(8, 6, direction).eval()
    with torch.no_grad():
        for p in mod.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    z = torch.randn(17, 17, 8, generator=gen)
    mask = (torch.rand(17, 17, generator=gen) > 0.2).float()
    with torch.no_grad():
        with kernels.use_backend("reference"):
            assert not kernels.has_fast("triangle_update", z.dtype, z.device)
            ref = mod(z, mask=mask)
        with kernels.use_backend("triton"):
            assert kernels.has_fast("triangle_update", z.dtype, z.device)
            out = mod(z, mask=mask, chunk_size=4)
            z_in = z.clone()
            mod(z_in, mask=mask, add_into=z_in)
    assert_close_scaled(out, ref, level=MODULE, name=f"module {direction}")
    assert_close_scaled(z_in, z + ref, level=MODULE, name=f"module {direction} in place")


@pytest.mark.parametrize("device", ["cpu"])
def test_opcheck_fused_ops(triton_on, device):
    """Schemas and fake implementations of the two custom ops (torch.compile, CUDA graphs)."""
    from sparkfold.model.kernels.triton_trimul import _output_op, _project_op

    z, mask, w = _case(device, n=9, seed=6)
    n_t, c = 81, 6
    z3, m2 = z.view(2, n_t, 8), mask.view(2, n_t)
    a, b = z.new_empty(2, c, n_t), z.new_empty(2, c, n_t)
    utils = ("test_schema", "test_faketensor")
    torch.library.opcheck(_project_op, (z3, m2, w.ln_in_w, w.ln_in_b, w.w_ab, w.b_ab, a, b, 0,
                                        1e-5), test_utils=utils)
    x = torch.randn(2, c, n_t)
    out = torch.randn(2, n_t, 8)
    torch.library.opcheck(_output_op, (x, z3, w.ln_in_w, w.ln_in_b, w.w_g, w.b_g, w.ln_out_w,
                                       w.ln_out_b, w.w_z, w.b_z, out, True, 1e-5),
                          test_utils=utils)


@pytest.mark.gpu
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_update_trunk_size_bf16_gpu(triton_on, direction):
    """The trunk's channel counts (C_z = C = 128) in bf16 under ``auto``, and in place."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    gen = torch.Generator().manual_seed(7)
    z, mask, _ = _case("cuda", n=200, c_z=128, c=128, batch=(1,), seed=7)
    w = _weights(128, 128, gen, "cuda")
    w = w._replace(w_ab=w.w_ab * 0.1, w_g=w.w_g * 0.1, w_z=w.w_z * 0.1)  # O(1) activations
    truth = _truth(z, mask, w, direction)
    zb, mb, wb = z.bfloat16(), mask.bfloat16(), _cast(w, torch.bfloat16)
    with torch.no_grad(), kernels.use_backend("auto"):
        assert kernels.has_fast("triangle_update", torch.bfloat16, zb.device)
        got = kernels.triangle_update(zb, mb, wb, direction)
        z_in = zb.clone()
        kernels.triangle_update(z_in, mb, wb, direction, add_into=z_in)
    assert_close_scaled(got.float(), truth, level=BF16_MODULE, name=f"bf16 {direction}")
    assert_close_scaled(z_in.float(), (zb + got).float(), level=BF16_MODULE, name="in place")


def test_channel_blocks_only_for_long_sequences():
    """The fused path keeps a and b whole up to the budget (N = 2048 at C = 128, bf16) and
    makes them in blocks of a multiple of 16 channels beyond (N = 6144)."""
    from sparkfold.model.pair import TriangleMultiplication

    tri = TriangleMultiplication(128, 128, "outgoing")
    short = torch.empty(2048, 2048, 128, device="meta", dtype=torch.bfloat16)
    long = torch.empty(6144, 6144, 128, device="meta", dtype=torch.bfloat16)
    assert tri._channel_block(short) is None
    block = tri._channel_block(long)
    assert block % 16 == 0 and 2 * block * 6144 * 6144 * 2 <= tri.AB_BUDGET_BYTES
