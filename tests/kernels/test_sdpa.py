"""The ``sdpa`` backend against the reference backend (fp32 and bf16; CPU and, marked, GPU)."""

import pytest
import torch
from attention_cases import (
    check_fp32_matches_reference,
    check_fully_masked_row_is_uniform,
    check_half_close_to_fp32,
)
from attention_cases import mask_bias as _mask_bias
from tolerances import BF16_MODULE, MODULE, assert_close_scaled

from sparkfold.model import kernels
from sparkfold.model.kernels import reference, sdpa

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device", DEVICES)
def test_attention_fp32_matches_reference(device):
    check_fp32_matches_reference("sdpa", device, seed=1)


@pytest.mark.parametrize("device", DEVICES)
def test_attention_bf16_close_to_fp32_reference(device):
    # fp32 softmax inside: never worse than the reference backend's own bf16 error.
    check_half_close_to_fp32("sdpa", device, seed=2)


@pytest.mark.parametrize("device", DEVICES)
def test_fully_masked_row_is_uniform(device):
    check_fully_masked_row_is_uniform("sdpa", device, seed=3)


def test_bad_bias_shape_is_rejected():
    q = torch.randn(2, 4, 5, 8)
    with pytest.raises(ValueError, match="does not broadcast"):
        sdpa.attention(q, q, q, [torch.randn(3, 1, 1, 5)])


@pytest.mark.parametrize("device", DEVICES)
def test_layer_norm_matches_reference(device):
    gen = torch.Generator().manual_seed(4)
    x = (3 * torch.randn(7, 13, 128, generator=gen) + 1).to(device)
    w = (1 + 0.1 * torch.randn(128, generator=gen)).to(device)
    b = (0.1 * torch.randn(128, generator=gen)).to(device)
    with kernels.use_backend("sdpa"):
        out = kernels.layer_norm(x, w, b)
        ref = reference.layer_norm(x, w, b)
        assert_close_scaled(out, ref, level=MODULE, name="fp32")
        out_bf = kernels.layer_norm(x.bfloat16(), w.bfloat16(), b.bfloat16())
        assert out_bf.dtype == torch.bfloat16
        assert_close_scaled(out_bf, ref, level=BF16_MODULE, name="bf16")


def test_auto_keeps_fp32_on_the_reference():
    """Under ``auto`` fp32 stays exactly the reference; bf16 on CUDA only goes to sdpa."""
    assert not sdpa.supports("attention", torch.float32, torch.device("cuda"))
    assert sdpa.supports("attention", torch.bfloat16, torch.device("cuda"))
    assert not sdpa.supports("attention", torch.bfloat16, torch.device("cpu"))
    assert not sdpa.supports("triangle_multiplication", torch.bfloat16, torch.device("cuda"))
    with kernels.use_backend("sdpa"):
        assert sdpa.supports("attention", torch.float32, torch.device("cpu"))
    q = torch.randn(2, 3, 5, 8)
    bias = [torch.randn(1, 3, 5, 5)]
    with kernels.use_backend("auto"):
        out = kernels.attention(q, q, q, bias)
    assert torch.equal(out, reference.attention(q, q, q, bias))


@pytest.mark.gpu
def test_fused_kernel_is_used_and_bias_not_materialised():
    """On CUDA the memory-efficient kernel takes the call (no math fallback) in bf16."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    gen = torch.Generator().manual_seed(5)
    s, h, n, c = 32, 8, 512, 32
    q, k, v = (torch.randn(s, h, n, c, generator=gen).cuda().bfloat16() for _ in range(3))
    mask = (torch.rand(s, n, generator=gen) > 0.1).float().cuda()
    biases = [_mask_bias(mask).bfloat16()[:, None, None, :],
              torch.randn(1, h, n, n, generator=gen).cuda().bfloat16()]
    ref = reference.attention(q.float(), k.float(), v.float(), [b.float() for b in biases])
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]), kernels.use_backend("sdpa"):
        out = kernels.attention(q, k, v, biases)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    full_bias_bytes = s * h * n * n * 2
    # q/k copies with the folded channel are ~4·S·H·N·40·2 bytes; the summed bias would be 4×.
    assert extra < full_bias_bytes / 2, f"{extra} bytes extra: the summed bias was materialised"
    assert_close_scaled(out, ref, level=BF16_MODULE, name="efficient")


@pytest.mark.parametrize("device", DEVICES)
def test_modules_match_reference_backend(device):
    """MSA row/column, global column and triangle attention modules: sdpa vs reference."""
    from sparkfold.model.msa import (
        MSAColumnAttention,
        MSAColumnGlobalAttention,
        MSARowAttentionWithPairBias,
    )
    from sparkfold.model.pair import TriangleAttention

    torch.manual_seed(6)
    s, n, c_m, c_z = 5, 19, 32, 16
    mods = [
        (MSARowAttentionWithPairBias(c_m, c_z, 8, 4), "msa"),
        (MSAColumnAttention(c_m, 8, 4), "col"),
        (MSAColumnGlobalAttention(c_m, 8, 4), "col"),
        (TriangleAttention(c_z, 8, 4, node="ending"), "tri"),
    ]
    m = torch.randn(s, n, c_m, device=device)
    z = torch.randn(n, n, c_z, device=device)
    msa_mask = (torch.rand(s, n, device=device) > 0.2).float()
    pair_mask = (torch.rand(n, n, device=device) > 0.2).float()
    for mod, kind in mods:
        mod = mod.to(device)
        for p in mod.parameters():  # non-zero output/gating weights
            torch.nn.init.normal_(p, std=0.2)
        with torch.no_grad():
            def run(mod=mod, kind=kind):
                if kind == "msa":
                    return mod(m, z, mask=msa_mask)
                if kind == "col":
                    return mod(m, mask=msa_mask)
                return mod(z, mask=pair_mask)
            with kernels.use_backend("reference"):
                ref = run()
            with kernels.use_backend("sdpa"):
                out = run()
        assert_close_scaled(out, ref, level=MODULE, name=type(mod).__name__)
