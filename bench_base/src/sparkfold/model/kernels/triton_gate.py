"""``mask · σ(g) · p`` as one Triton pass, written straight into its destination.

The triangle multiplication gates its channel-first projections ``[*, C, I, J]`` with a pair mask
``[*, 1, I, J]``. In PyTorch that is three passes (sigmoid, two in-place products) plus a copy
when the rows are computed in slices; here one kernel reads ``p``, ``g`` and the mask once,
computes in fp32, rounds once (DEVIATION from the reference, numerics only: the reference rounds
after each product in the input dtype) and writes ``out``, which may be a row slice of a larger
buffer. Each of the four tensors needs its last two axes dense (row stride = J, unit stride).
"""

import functools

import torch

from sparkfold.model.kernels.triton_layer_norm import triton_cdiv

__all__ = ["dense_rows", "sigmoid_gate"]

_BLOCK = 1024


@functools.lru_cache(maxsize=1)
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def _gate(p_ptr, g_ptr, m_ptr, o_ptr, n_t, s_pb, s_pc, s_gb, s_gc, s_mb, s_ob, s_oc,
              BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        c = tl.program_id(1).to(tl.int64)
        b = tl.program_id(2).to(tl.int64)
        t = pid * BLOCK + tl.arange(0, BLOCK)
        ok = t < n_t
        p = tl.load(p_ptr + b * s_pb + c * s_pc + t, mask=ok, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + b * s_gb + c * s_gc + t, mask=ok, other=0.0).to(tl.float32)
        m = tl.load(m_ptr + b * s_mb + t, mask=ok, other=0.0).to(tl.float32)
        y = m * p / (1.0 + tl.exp(-g))
        tl.store(o_ptr + b * s_ob + c * s_oc + t, y.to(o_ptr.dtype.element_ty), mask=ok)

    return _gate


def dense_rows(t: torch.Tensor) -> bool:
    """Whether ``t``'s last two axes are dense (what the kernel addresses as one flat run)."""
    return t.stride(-1) == 1 and (t.shape[-2] <= 1 or t.stride(-2) == t.shape[-1])


def _strides(t: torch.Tensor, shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(batch stride, channel stride) of ``t`` broadcast to ``shape`` = ``[*, C, I, J]`` with
    its batch axes merged into one, or ``None`` when they do not merge (a view would copy)."""
    t = t.expand(shape)
    n_b = 1
    for d in shape[:-3]:
        n_b *= d
    try:
        t4 = t.view(n_b, *shape[-3:])
    except RuntimeError:
        return None
    return (t4.stride(0) if n_b > 1 else 0), t4.stride(1)


@torch.library.custom_op("sparkfold::sigmoid_gate", mutates_args=("out",))
def _gate_op(p: torch.Tensor, g: torch.Tensor, mask: torch.Tensor, out: torch.Tensor,
             strides: list[int]) -> None:
    *batch, n_c, n_i, n_j = p.shape
    n_b = 1
    for d in batch:
        n_b *= d
    n_t = n_i * n_j
    if n_t and n_c and n_b:
        _kernel()[(triton_cdiv(n_t, _BLOCK), n_c, n_b)](
            p, g, mask, out, n_t, *strides, BLOCK=_BLOCK, num_warps=4)


def sigmoid_gate(p: torch.Tensor, g: torch.Tensor, mask: torch.Tensor,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """``mask · σ(g) · p`` for ``p, g [*, C, I, J]`` and ``mask [*, 1, I, J]`` (CUDA, Triton),
    written into ``out`` (a new tensor when ``None``).

    Falls back to PyTorch when a tensor's last two axes are not dense or its batch axes do not
    merge into one stride.
    """
    if out is None:
        out = torch.empty(p.shape, dtype=p.dtype, device=p.device)
    shape = tuple(p.shape)
    found = [_strides(t, shape) if dense_rows(t) else None for t in (p, g, mask, out)]
    if any(f is None for f in found):  # layouts the kernel does not address: plain PyTorch
        torch.mul(torch.sigmoid(g).mul_(p), mask, out=out)
        return out
    (s_pb, s_pc), (s_gb, s_gc), (s_mb, _), (s_ob, s_oc) = found
    _gate_op(p, g, mask, out, [s_pb, s_pc, s_gb, s_gc, s_mb, s_ob, s_oc])
    return out
