"""Triangle multiplication as batched GEMMs on channel-first copies made by a Triton transpose.

The contraction ``x[i,j,c] = Σ_k a[i,k,c]·b[j,k,c]`` is one batched GEMM per channel once
``a`` and ``b`` are laid out ``[C, N, N]``. The reference gets there through ``movedim`` +
``matmul``, whose implicit copies of the channel-last tensors run in PyTorch's generic strided
copy kernel (measured on an H100 at N=1024, C=128, bf16: 9.1 ms for the whole contraction
against 0.37 ms for the GEMM alone). Here the layout changes are a tiled Triton transpose of
the last two axes, near memory bandwidth; the GEMMs are cuBLAS's (bf16 in, fp32 accumulate).
"""

import functools

import torch

from sparkfold.model.kernels.triton_layer_norm import triton_cdiv

__all__ = ["transpose_last2", "triangle_multiplication"]


@functools.lru_cache(maxsize=1)
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def _transpose(x_ptr, y_ptr, R, S, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr):
        # x: [B, R, S] contiguous -> y: [B, S, R] contiguous.
        pid = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        num_r = tl.cdiv(R, BLOCK_R)
        pid_r = pid % num_r
        pid_s = pid // num_r
        offs_r = (pid_r * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        offs_s = (pid_s * BLOCK_S + tl.arange(0, BLOCK_S)).to(tl.int64)
        ok = (offs_r[:, None] < R) & (offs_s[None, :] < S)
        base = b * R * S
        tile = tl.load(x_ptr + base + offs_r[:, None] * S + offs_s[None, :], mask=ok)
        tl.store(y_ptr + base + offs_s[None, :] * R + offs_r[:, None], tile, mask=ok)

    return _transpose


@torch.library.custom_op("sparkfold::transpose_last2", mutates_args=())
def _transpose_op(x: torch.Tensor) -> torch.Tensor:
    x3 = x.reshape(-1, x.shape[-2], x.shape[-1])
    if not x3.is_contiguous():
        x3 = x3.contiguous()
    bsz, r, s = x3.shape
    y = torch.empty((bsz, s, r), dtype=x.dtype, device=x.device)
    block_r, block_s = 64, 64
    if y.numel():
        _kernel()[(triton_cdiv(r, block_r) * triton_cdiv(s, block_s), bsz)](
            x3, y, r, s, BLOCK_R=block_r, BLOCK_S=block_s, num_warps=4)
    return y.reshape(*x.shape[:-2], s, r)


@_transpose_op.register_fake
def _(x):
    return x.new_empty((*x.shape[:-2], x.shape[-1], x.shape[-2]))


def transpose_last2(x: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``x.transpose(-1, -2)`` (CUDA, Triton)."""
    return _transpose_op(x)


def _channel_first(t: torch.Tensor) -> torch.Tensor:
    """``t [*, N, N, C]`` as a contiguous ``[*, C, N, N]``: a free view when ``t`` is already a
    channel-last view of channel-first storage (as the model's projections produce it)."""
    cf = t.movedim(-1, -3)
    if cf.is_contiguous():
        return cf
    *batch, n1, n2, c = t.shape
    return transpose_last2(t.reshape(*batch, n1 * n2, c)).reshape(*batch, c, n1, n2)


def triangle_multiplication(a, b, direction):
    """Same contract as the reference: channel-last ``[*, N, N, C]`` in and out."""
    if direction not in ("outgoing", "incoming"):
        raise ValueError(f"direction must be 'outgoing' or 'incoming', got {direction!r}")
    *batch, n_i, n_k, c = a.shape
    a_cf, b_cf = _channel_first(a), _channel_first(b)  # [*, C, N, N]
    if direction == "outgoing":
        x = torch.matmul(a_cf, b_cf.transpose(-1, -2))  # [*, C, i, j] = Σ_k a[i,k] b[j,k]
    else:
        x = torch.matmul(a_cf.transpose(-1, -2), b_cf)  # [*, C, i, j] = Σ_k a[k,i] b[k,j]
    del a_cf, b_cf
    n1, n2 = x.shape[-2], x.shape[-1]
    out = transpose_last2(x.reshape(*batch, c, n1 * n2))  # [*, N·N, C]
    return out.reshape(*batch, n1, n2, c)  # [*, N, N, C]
