"""Trunk modules on every backend: fused projections, channel-first and transposed layouts.

The modules hand the kernels strided views (fused q/k/v/gate GEMM, column and ending-node
attention without transposed copies, channel-first triangle projections). These tests run
each module with masks that have zeros, an odd length and chunking on and off, and compare
the fast backends with the reference backend and the chunked with the unchunked result.
"""

import pytest
import torch
from tolerances import BF16_MODULE, MODULE, assert_close_scaled

from sparkfold.model import kernels
from sparkfold.model.msa import MSAColumnAttention, MSARowAttentionWithPairBias
from sparkfold.model.pair import TriangleAttention, TriangleMultiplication
from sparkfold.model.primitives import fused_weight, linear_channel_first

C_M, C_Z, S, N = 16, 12, 5, 13


def _modules():
    return {
        "row": MSARowAttentionWithPairBias(C_M, C_Z, c_hidden=8, num_heads=2),
        "col": MSAColumnAttention(C_M, c_hidden=8, num_heads=2),
        "tri_start": TriangleAttention(C_Z, c_hidden=8, num_heads=3, node="starting"),
        "tri_end": TriangleAttention(C_Z, c_hidden=8, num_heads=3, node="ending"),
        "mul_out": TriangleMultiplication(C_Z, 8, direction="outgoing"),
        "mul_in": TriangleMultiplication(C_Z, 8, direction="incoming"),
    }


def _randomise(module, gen):
    with torch.no_grad():
        for p in module.parameters():  # non-zero gates/outputs so every path matters
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return module


def _inputs(gen, device, dtype):
    m = torch.randn(S, N, C_M, generator=gen)
    z = torch.randn(N, N, C_Z, generator=gen)
    msa_mask = (torch.rand(S, N, generator=gen) > 0.2).float()
    pair_mask = (torch.rand(N, N, generator=gen) > 0.2).float()
    pair_mask[3] = 0.0  # a fully masked row
    return [t.to(device=device, dtype=dtype) for t in (m, z, msa_mask, pair_mask)]


def _call(name, mod, m, z, msa_mask, pair_mask, chunk):
    if name == "row":
        return mod(m, z, mask=msa_mask, chunk_size=chunk)
    if name == "col":
        return mod(m, mask=msa_mask, chunk_size=chunk)
    return mod(z, mask=pair_mask, chunk_size=chunk)


@pytest.mark.parametrize("name", list(_modules()))
def test_backends_and_chunking_agree_cpu(name):
    gen = torch.Generator().manual_seed(11)
    mod = _randomise(_modules()[name], gen).eval()
    args = _inputs(gen, "cpu", torch.float32)
    with torch.no_grad():
        with kernels.use_backend("reference"):
            ref = _call(name, mod, *args, None)
            for chunk in (1, 4):
                assert_close_scaled(_call(name, mod, *args, chunk), ref, level=MODULE,
                                    name=f"{name} chunk {chunk}")
        with kernels.use_backend("sdpa"):
            for chunk in (None, 4):
                assert_close_scaled(_call(name, mod, *args, chunk), ref, level=MODULE,
                                    name=f"{name} sdpa chunk {chunk}")
    # Autograd (training) path: same values, gradients reach every parameter.
    out = _call(name, mod, *args, None)
    assert_close_scaled(out.detach(), ref, level=MODULE, name=f"{name} grad mode")
    out.square().mean().backward()
    assert all(p.grad is not None for p in mod.parameters())


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(_modules()))
def test_bf16_auto_close_to_fp32_reference_gpu(name):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    gen = torch.Generator().manual_seed(12)
    mod = _randomise(_modules()[name], gen).cuda().eval()
    args = _inputs(gen, "cuda", torch.float32)
    with torch.no_grad():
        with kernels.use_backend("reference"):
            ref = _call(name, mod, *args, None)
        mod16 = mod.bfloat16()
        args16 = [t.bfloat16() for t in args]
        with kernels.use_backend("auto"):
            for chunk in (None, 4):
                out = _call(name, mod16, *args16, chunk)
                assert out.dtype == torch.bfloat16
                assert_close_scaled(out.float(), ref, level=BF16_MODULE, name=f"{name} chunk {chunk}")


def test_fused_weight_cache_follows_parameter_updates():
    gen = torch.Generator().manual_seed(13)
    mod = _randomise(TriangleAttention(C_Z, c_hidden=8, num_heads=2), gen).eval()
    x = torch.randn(N, N, C_Z, generator=gen)
    with torch.no_grad():
        before = mod(x)
        w = fused_weight(mod.mha, "qkvg_w", [mod.mha.linear_q.weight])
        assert fused_weight(mod.mha, "qkvg_w", [mod.mha.linear_q.weight]) is w  # cached
        state = {k: v * 0.5 for k, v in mod.state_dict().items()}
        mod.load_state_dict(state)
        after = mod(x)
        fresh = _randomise(TriangleAttention(C_Z, c_hidden=8, num_heads=2), gen).eval()
        fresh.load_state_dict(state)
        assert_close_scaled(after, fresh(x), level=MODULE, name="after load_state_dict")
    assert not torch.allclose(before, after)
    assert set(mod.state_dict()) == set(fresh.state_dict())  # the cache is not state


def _storage_bytes(module) -> int:
    """Bytes of the distinct storages behind a module's parameters and fused caches."""
    seen = {}
    tensors = list(module.parameters())
    for sub in module.modules():
        tensors += [hit[1] for hit in sub.__dict__.get("_fused_cache", {}).values()]
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def test_fused_projections_hold_the_weights_once():
    gen = torch.Generator().manual_seed(15)
    mod = _randomise(TriangleMultiplication(C_Z, 8, "outgoing"), gen).eval()
    att = _randomise(TriangleAttention(C_Z, c_hidden=8, num_heads=2), gen).eval()
    x = torch.randn(N, N, C_Z, generator=gen)
    param_bytes = sum(p.numel() * p.element_size() for m in (mod, att) for p in m.parameters())
    keys = {k: tuple(v.shape) for m in (mod, att) for k, v in m.state_dict().items()}
    with torch.inference_mode():  # built inside inference mode, loadable outside it
        before = (mod(x), att(x))
    shared = mod.linear_a_p.weight.untyped_storage().data_ptr()
    assert mod.linear_b_g.weight.untyped_storage().data_ptr() == shared
    assert _storage_bytes(mod) + _storage_bytes(att) < param_bytes + 4 * 3 * 2 * 8 * 4  # + q/k/v bias pad
    assert {k: tuple(v.shape) for m in (mod, att) for k, v in m.state_dict().items()} == keys
    with torch.no_grad():
        state = {k: v * 0.5 for k, v in mod.state_dict().items()}
        mod.load_state_dict(state)
        fresh = _randomise(TriangleMultiplication(C_Z, 8, "outgoing"), gen).eval()
        fresh.load_state_dict(state)
        assert_close_scaled(mod(x), fresh(x), level=MODULE, name="after load_state_dict")
        assert not torch.allclose(mod(x), before[0])
        att64 = att.to(torch.float64)
        assert_close_scaled(att64(x.double()).float(), before[1], level=MODULE, name="after .to(float64)")


def test_linear_channel_first_matches_linear():
    gen = torch.Generator().manual_seed(14)
    x = torch.randn(2, 7, 9, 6, generator=gen)
    w, b = torch.randn(5, 6, generator=gen), torch.randn(5, generator=gen)
    ref = torch.nn.functional.linear(torch.tanh(x), w, b).movedim(-1, -3)  # [2, 5, 7, 9]
    for chunk in (None, 3):
        out = linear_channel_first(x, w, b, row_chunk=chunk, fn=torch.tanh)
        assert out.is_contiguous() and out.shape == ref.shape
        assert_close_scaled(out, ref, level=MODULE, name=f"chunk {chunk}")
