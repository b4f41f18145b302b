"""The Triton attention kernel against the reference backend, fp32 and bf16.

On the CPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``; skipped when Triton
is not installed); on a GPU (marked) it is compiled for the device.
"""

import pytest
import torch
from attention_cases import (
    check_fp32_matches_reference,
    check_fully_masked_row_is_uniform,
    check_half_close_to_fp32,
    mask_bias,
)
from tolerances import BF16_MODULE, MODULE, assert_close_scaled

from sparkfold.model import kernels
from sparkfold.model.kernels import reference

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _used_backend(device, dtype):
    fn = kernels._resolve("attention", dtype, torch.device(device))
    return fn.__module__.rsplit(".", 1)[-1]


@pytest.mark.parametrize("device", DEVICES)
def test_fp32_matches_reference(triton_on, device):
    with kernels.use_backend("triton"):
        assert _used_backend(device, torch.float32) == "triton_attention"
    check_fp32_matches_reference("triton", device, seed=11)


@pytest.mark.parametrize("device", DEVICES)
def test_half_precision_close_to_fp32_reference(triton_on, device):
    """bf16 on the GPU; fp16 on the CPU (Triton's interpreter has no bf16 conversions), with
    fp32 biases there (AF2's -1e9 mask bias is -inf in fp16; the kernel reads any bias dtype).
    fp32 logits inside: never worse than the reference backend's own error."""
    if device == "cuda":
        check_half_close_to_fp32("triton", device, seed=12)
    else:
        check_half_close_to_fp32("triton", device, seed=12, half=torch.float16,
                                 bias_dtype=torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_fully_masked_row_is_uniform(triton_on, device):
    check_fully_masked_row_is_uniform("triton", device, seed=13)


@pytest.mark.parametrize("device", DEVICES)
def test_strided_views_and_long_keys(triton_on, device):
    """The layouts the model hands over: q/k/v as strided views of one fused projection
    (transposed for column/ending attention), a key-aligned pair bias broadcast over rows,
    more keys than one block and a query count that is not a multiple of the block."""
    gen = torch.Generator().manual_seed(14)
    a, b, h, c = 3, 150, 2, 32
    parts = torch.randn(a, b, 4, h, c, generator=gen).to(device)  # [A, B, P, H, C]
    pair = torch.randn(h, b, b + 6, generator=gen).to(device)[..., :b]  # key-aligned view
    mask = (torch.rand(a, b, generator=gen) > 0.2).float().to(device)
    for transpose in (False, True):
        def heads(i, transpose=transpose):
            t = parts.select(-3, i)
            return t.movedim(-4, -2) if transpose else t.transpose(-2, -3)

        q, k, v = heads(0), heads(1), heads(2)
        if transpose:
            biases = [mask_bias(mask.t())[:, None, None, :]]  # [B, 1, 1, A]
        else:
            biases = [mask_bias(mask)[:, None, None, :], pair[None]]  # [A,1,1,B], [1,H,B,B]
        gate = heads(3)  # the output gate: the fused projection's fourth part
        with kernels.use_backend("triton"):
            out = kernels.attention(q, k, v, biases)
            gated = kernels.attention(q, k, v, biases, gate=gate)
        ref = reference.attention(q, k, v, biases)
        assert_close_scaled(out, ref, level=MODULE, name=f"transpose={transpose}")
        assert_close_scaled(gated, reference.attention(q, k, v, biases, gate=gate), level=MODULE,
                            name=f"gated, transpose={transpose}")
        # The output is laid out [*, Q, H, C] underneath: the output projection reads it densely.
        assert out.transpose(-2, -3).is_contiguous() and gated.transpose(-2, -3).is_contiguous()


def test_head_dim_limit_is_named():
    pytest.importorskip("triton")
    from sparkfold.model.kernels import triton_attention

    q = torch.randn(1, 1, 4, 160)
    with pytest.raises(ValueError, match="head dims up to 128"):
        triton_attention.attention(q, q, q, [])


def test_auto_keeps_fp32_and_cpu_on_the_reference():
    pytest.importorskip("triton")
    from sparkfold.model.kernels import triton_backend

    kernels._RESOLVED.clear()
    try:
        with kernels.use_backend("auto"):
            assert not triton_backend.supports("attention", torch.float32, torch.device("cuda"))
            assert triton_backend.supports("attention", torch.bfloat16, torch.device("cuda"))
            # The interpreter is for tests: auto never sends CPU work to it.
            assert not triton_backend.supports("attention", torch.bfloat16, torch.device("cpu"))
            assert _used_backend("cpu", torch.bfloat16) == "reference"
    finally:
        kernels._RESOLVED.clear()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_trunk_sizes_and_no_materialised_bias(dtype):
    """Triangle-attention sized call on the GPU: correct, and no [B, H, Q, K] buffer."""
    pytest.importorskip("triton")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    gen = torch.Generator().manual_seed(15)
    n, h, c = 256, 4, 32
    q, k, v = (torch.randn(n, h, n, c, generator=gen).cuda().to(dtype) for _ in range(3))
    mask = (torch.rand(n, n, generator=gen) > 0.1).float().cuda()
    biases = [mask_bias(mask).to(dtype)[:, None, None, :],
              torch.randn(1, h, n, n, generator=gen).cuda().to(dtype)]
    ref = reference.attention(q.float(), k.float(), v.float(), [b.float() for b in biases])
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with kernels.use_backend("triton"):
        out = kernels.attention(q, k, v, biases)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra <= out.numel() * out.element_size() + (1 << 20), f"{extra} bytes extra"
    level = MODULE if dtype == torch.float32 else BF16_MODULE
    assert_close_scaled(out, ref, level=level, name=str(dtype))
