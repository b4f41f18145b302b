"""The whole triangle multiplicative update as two Triton kernels around cuBLAS's GEMM.

AF2 Suppl. Alg. 11 "TriangleMultiplicationOutgoing" / Alg. 12 "TriangleMultiplicationIncoming".
Composed from separate ops, the update makes many passes over pair-sized tensors: LN_in(z)
stored, the four projections stored, the gating, the contraction's channel-last copy of x,
LN_out(x) stored, two output projections, the gate product and the residual add. Here:

* kernel A (``_project``): per block of ``BLOCK_M`` pixels, load ``z`` ``[BLOCK_M, C_z]``,
  LayerNorm in fp32, round to ``z``'s dtype, then per block of ``BLOCK_C`` channels the four
  projections as ``W · LN(z)ᵀ`` (``[BLOCK_C, BLOCK_M]``, fp32 accumulation, bias in fp32), the
  gate ``mask · σ(g) · p`` in fp32, one rounding, stored channel-first into ``a``, ``b``
  ``[B, C, I, J]`` with the pixels as the contiguous axis;
* the contraction: ``torch.matmul`` per channel on the channel-first ``a``, ``b`` (cuBLAS,
  fp32 accumulation), leaving ``x`` channel-first ``[B, C, I, J]``: no transpose back;
* kernel B (``_output``): per block of pixels, load ``x`` ``[C, BLOCK_M]`` (pixels contiguous),
  LayerNorm_out over the channels in fp32, ``linear_z``; load the same pixels of ``z``,
  LayerNorm_in again (recomputed, cheaper than storing it), ``linear_g``, the sigmoid gate and
  the product; store the update, or add it into ``add_into`` (read-add-write of the program's
  own tile, so ``add_into`` may be ``z`` itself: each program reads the pixels of ``z`` that
  only it writes).

Memory: ``a``, ``b`` and ``x`` (``C·N²`` each) besides ``z``; no LN'd copy of ``z``, no
channel-last copy of ``x``; ``a`` and ``b`` are freed before kernel B. With ``channel_block``,
``a`` and ``b`` exist only for a block of channels at a time (``x`` stays whole).

DEVIATION (numerics only): each kernel rounds once, where the reference rounds the projections,
the gate's two products, LN_out(x), the two output projections, their product and the residual
sum separately in the input dtype. fp32 runs the dots with ``input_precision="ieee"``.
"""

import functools
import math

import torch

from sparkfold.model.kernels.triton_attention import interpreting, kernel_module
from sparkfold.model.kernels.triton_layer_norm import triton_cdiv

__all__ = ["MAX_CHANNELS", "triangle_update"]

#: Largest ``C_z`` / ``C`` handled by the fused kernels (whole channel rows live in registers);
#: larger ones fall back to the reference. AF2's trunk uses 128, template stacks 64.
MAX_CHANNELS = 256

#: ``{"project": (BLOCK_M, BLOCK_C, num_warps, num_stages), "output": (BLOCK_M, num_warps,
#: num_stages)}``: the launch configuration (channel blocks are padded to powers of two ≥ 16).
#: The fastest of ``benchmarks/bench_trimul.py --sweep`` on an H100 at C_z = C = 128,
#: N = 1024 and 2048 (``benchmarks/results/h100_trimul.json``; 1.66 ms against 2.20 ms for
#: the first guess at 1024); the sweep times the alternatives by overriding it.
CONFIG = {"project": (64, 64, 4, 1), "output": (64, 4, 1)}


@functools.lru_cache(maxsize=2)
def _kernels(interpret: bool):
    """``(project, output)``, compiled or interpreted (:func:`triton_attention.kernel_module`)."""
    module = kernel_module("_trimul_kernels", interpret)
    return module._project, module._output


def _block(n: int) -> int:
    """The padded block over ``n`` channels: a power of two, at least 16 (``tl.dot``)."""
    return max(16, 1 << max(0, (n - 1).bit_length()))


@torch.library.custom_op("sparkfold::trimul_project", mutates_args=("a", "b"))
def _project_op(z: torch.Tensor, mask: torch.Tensor | None, ln_w: torch.Tensor,
                ln_b: torch.Tensor, w_ab: torch.Tensor, b_ab: torch.Tensor, a: torch.Tensor,
                b: torch.Tensor, c_lo: int, eps: float) -> None:
    """z ``[B, T, C_z]`` (channel axis unit-stride), mask ``[B, T]`` or ``None``, w_ab
    ``[4C, C_z]`` dense → a, b ``[B, c_b, T]`` dense, channels ``[c_lo, c_lo + c_b)``."""
    n_b, n_t, n_cz = z.shape
    n_c, c_b = w_ab.shape[0] // 4, a.shape[1]
    if not (n_b and n_t and c_b):
        return
    block_m, block_c, warps, stages = CONFIG["project"]
    block_c = min(block_c, _block(c_b))
    project = _kernels(interpreting())[0]
    project[(triton_cdiv(n_t, block_m), n_b)](
        z, mask if mask is not None else z, ln_w, ln_b, w_ab, b_ab, a, b,
        n_t, n_cz, n_c, c_lo, c_lo + c_b, z.stride(0), z.stride(1),
        mask.stride(0) if mask is not None else 0, a.stride(0), a.stride(1), eps,
        HAS_MASK=mask is not None, IEEE=z.dtype == torch.float32, INTERPRET=interpreting(),
        BLOCK_M=block_m, BLOCK_CZ=_block(n_cz), BLOCK_C=block_c, num_warps=warps,
        num_stages=stages)


@torch.library.custom_op("sparkfold::trimul_output", mutates_args=("out",))
def _output_op(x: torch.Tensor, z: torch.Tensor, ln_in_w: torch.Tensor, ln_in_b: torch.Tensor,
               w_g: torch.Tensor, b_g: torch.Tensor, ln_out_w: torch.Tensor,
               ln_out_b: torch.Tensor, w_z: torch.Tensor, b_z: torch.Tensor, out: torch.Tensor,
               add: bool, eps: float) -> None:
    """x ``[B, C, T]`` (pixels unit-stride), z and out ``[B, T, C_z]`` (channels unit-stride)
    → out = update (or out + update when ``add``). ``out`` may be ``z`` itself."""
    n_b, n_c, n_t = x.shape
    n_cz = z.shape[-1]
    if not (n_b and n_t):
        return
    block_m, warps, stages = CONFIG["output"]
    output = _kernels(interpreting())[1]
    output[(triton_cdiv(n_t, block_m), n_b)](
        x, z, ln_in_w, ln_in_b, w_g, b_g, ln_out_w, ln_out_b, w_z, b_z, out,
        n_t, n_cz, n_c, x.stride(0), x.stride(1), z.stride(0), z.stride(1),
        out.stride(0), out.stride(1), eps, ADD=add, IEEE=z.dtype == torch.float32,
        BLOCK_M=block_m, BLOCK_CZ=_block(n_cz), BLOCK_C=_block(n_c), num_warps=warps,
        num_stages=stages)


def _pixel_rows(t: torch.Tensor, n_b: int) -> torch.Tensor | None:
    """``t [*, I, J, C]`` as a view ``[B, I·J, C]`` with a unit-stride channel axis, or ``None``
    when no such view exists (the kernels address pixel ``p`` of batch ``b`` at
    ``b·s_b + p·s_p``)."""
    if t.stride(-1) != 1 and t.shape[-1] > 1:
        return None
    try:
        v = t.view(n_b, t.shape[-3] * t.shape[-2], t.shape[-1])
    except RuntimeError:
        return None
    return v if v.stride(-1) == 1 or v.shape[-1] <= 1 else None


def _aliasing(out: torch.Tensor, z: torch.Tensor) -> str:
    """``"same"`` when ``out`` is ``z``'s exact view, ``"overlap"`` when they share storage
    otherwise (the in-place tile argument fails: fall back), else ``"disjoint"``."""
    if out is z:
        return "same"
    if torch.compiler.is_compiling():  # no storage under tracing; only identity is known
        return "disjoint"
    if (out.data_ptr() == z.data_ptr() and out.shape == z.shape and out.stride() == z.stride()
            and out.dtype == z.dtype):
        return "same"
    if out.untyped_storage().data_ptr() == z.untyped_storage().data_ptr():
        return "overlap"
    return "disjoint"


def triangle_update(z, mask, weights, direction, add_into=None, channel_block=None):
    """Same contract as :func:`sparkfold.model.kernels.reference.triangle_update` (CUDA, Triton).

    Args (beyond the reference's):
        channel_block: compute ``a``, ``b`` and the contraction for this many channels at a
            time, so that ``a`` and ``b`` never exist in full (``x`` does); ``None``: all.

    Falls back to the reference when ``z``'s pixels do not form one strided row per batch
    (``[*, I, J]`` not mergeable, channel axis not unit-stride) or a channel count exceeds
    :data:`MAX_CHANNELS`; adds out of place when ``add_into`` shares storage with ``z`` without
    being ``z``, has another shape, or is laid out as the kernels cannot address.
    """
    from sparkfold.model.kernels import reference

    if direction not in ("outgoing", "incoming"):
        raise ValueError(f"direction must be 'outgoing' or 'incoming', got {direction!r}")
    *batch, n_i, n_j, n_cz = z.shape
    n_c = weights.w_ab.shape[0] // 4
    n_b = math.prod(batch)
    z3 = _pixel_rows(z, n_b)
    if z3 is None or max(n_cz, n_c) > MAX_CHANNELS or z.numel() == 0:
        return reference.triangle_update(z, mask, weights, direction, add_into=add_into)
    out3 = None
    if add_into is not None:
        if add_into.shape == z.shape and _aliasing(add_into, z) != "overlap":
            out3 = _pixel_rows(add_into, n_b)
        if out3 is None:  # out of place, then one add (broadcasting, any layout)
            add_into.add_(triangle_update(z, mask, weights, direction, None, channel_block))
            return add_into

    dt = z.dtype
    n_t = n_i * n_j
    m2 = None
    if mask is not None:  # [B, I·J], the kernel's dtype (only N² elements: a copy is cheap)
        m2 = mask.to(dt).expand(*batch, n_i, n_j).reshape(n_b, n_t).contiguous()
    w_ab = weights.w_ab.to(dt).contiguous()
    b_ab = weights.b_ab.contiguous()
    ln_in_w, ln_in_b = weights.ln_in_w.contiguous(), weights.ln_in_b.contiguous()
    eps = float(weights.eps)

    # kernel A + contraction, in channel blocks: x [B, C, I, J] channel-first.
    step = n_c if channel_block is None else max(1, min(int(channel_block), n_c))
    x = None
    for c0 in range(0, n_c, step):
        c_b = min(step, n_c - c0)
        a = z.new_empty((n_b, c_b, n_i, n_j))
        b = z.new_empty((n_b, c_b, n_i, n_j))
        _project_op(z3, m2, ln_in_w, ln_in_b, w_ab, b_ab, a.view(n_b, c_b, n_t),
                    b.view(n_b, c_b, n_t), c0, eps)
        if direction == "outgoing":
            lhs, rhs = a, b.transpose(-1, -2)  # x[c, i, j] = Σ_k a[c, i, k] b[c, j, k]
        else:
            lhs, rhs = a.transpose(-1, -2), b  # x[c, i, j] = Σ_k a[c, k, i] b[c, k, j]
        if step == n_c:
            x = torch.matmul(lhs, rhs)  # [B, C, I, J]
        else:
            if x is None:
                x = z.new_empty((n_b, n_c, n_i, n_j))
            for bi in range(n_b):  # each batch's channel slice of x is dense
                torch.matmul(lhs[bi], rhs[bi], out=x[bi, c0:c0 + c_b])
        del a, b, lhs, rhs

    # kernel B: the output stage, into add_into (possibly z itself) or a new tensor.
    if out3 is None:
        update = torch.empty_like(z, memory_format=torch.contiguous_format)
        out3 = update.view(n_b, n_t, n_cz)
    _output_op(x.view(n_b, n_c, n_t), z3, ln_in_w, ln_in_b, weights.w_g.to(dt).contiguous(),
               weights.b_g.contiguous(), weights.ln_out_w.contiguous(),
               weights.ln_out_b.contiguous(), weights.w_z.to(dt).contiguous(),
               weights.b_z.contiguous(), out3, add_into is not None, eps)
    return add_into if add_into is not None else update
