"""LayerNorm over the last axis as one Triton kernel: one read, one write, fp32 statistics.

The reference upcasts the whole activation to fp32, normalises and casts back (three passes
over memory with an fp32 copy). This kernel loads ``BLOCK_R`` rows of up to ``BLOCK_C``
channels, computes mean and variance in fp32 registers, applies ``γ``/``β`` in fp32 and stores
in the input dtype. It is wrapped as the custom op ``sparkfold::layer_norm`` (with a fake
implementation), so ``torch.compile`` treats it as opaque and ``torch.library.opcheck``
validates it. Triton is imported lazily: importing this file needs no Triton.
"""

import functools

import torch

__all__ = ["contiguous", "layer_norm", "triton_importable"]

_MAX_C = 8192


@functools.lru_cache(maxsize=1)
def triton_importable() -> bool:
    """Whether ``import triton`` works."""
    try:
        import triton
        import triton.language  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken Triton install (any error) means unavailable
        return False
    return True


@functools.lru_cache(maxsize=1)
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def _ln_fwd(x_ptr, w_ptr, b_ptr, y_ptr, n_rows, n_cols, n_inner, stride_outer, stride_inner,
                stride_y, eps, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        # Input row r sits at (r // n_inner)·stride_outer + (r % n_inner)·stride_inner: a
        # transposed view ([B, A, C] of [A, B, C] storage) is read in place, no copy first.
        pid = tl.program_id(0)
        rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.arange(0, BLOCK_C)
        row_ok = rows < n_rows
        col_ok = cols < n_cols
        ok = row_ok[:, None] & col_ok[None, :]
        rows64 = rows.to(tl.int64)
        x_off = (rows64 // n_inner) * stride_outer + (rows64 % n_inner) * stride_inner
        x = tl.load(x_ptr + x_off[:, None] + cols[None, :], mask=ok, other=0.0)
        x = x.to(tl.float32)
        mean = tl.sum(x, axis=1) / n_cols
        xc = tl.where(ok, x - mean[:, None], 0.0)
        var = tl.sum(xc * xc, axis=1) / n_cols
        rstd = 1.0 / tl.sqrt(var + eps)
        w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        y = xc * rstd[:, None] * w[None, :] + b[None, :]
        tl.store(y_ptr + rows64[:, None] * stride_y + cols[None, :],
                 y.to(y_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _copy_rows(x_ptr, y_ptr, n_rows, n_cols, n_inner, stride_outer, stride_inner,
                   BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        # The same two-level row addressing; rows written densely.
        pid = tl.program_id(0)
        rows = (pid * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        cols = tl.arange(0, BLOCK_C)
        ok = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
        x_off = (rows // n_inner) * stride_outer + (rows % n_inner) * stride_inner
        tile = tl.load(x_ptr + x_off[:, None] + cols[None, :], mask=ok)
        tl.store(y_ptr + rows[:, None] * n_cols + cols[None, :], tile, mask=ok)

    return _ln_fwd, _copy_rows, triton.next_power_of_2


def _two_level_rows(x: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """``x`` (channel axis unit-stride) as rows of a two-level layout:
    ``(x', n_inner, stride_outer, stride_inner)`` with row ``r`` at
    ``(r // n_inner)·stride_outer + (r % n_inner)·stride_inner``. Dense rows give
    ``n_inner = 1``; a transposed view of dense storage gives ``n_inner = x.shape[-2]``;
    anything else is copied to dense rows first."""
    c = x.shape[-1]
    if x.stride(-1) == 1:
        try:
            x2 = x.view(-1, c)
            return x2, 1, x2.stride(0), 0
        except RuntimeError:
            pass
        if x.dim() >= 3:
            try:
                x3 = x.view(-1, x.shape[-2], c)
                return x3, x3.shape[1], x3.stride(0), x3.stride(1)
            except RuntimeError:
                pass
    x2 = x.reshape(-1, c).contiguous()
    return x2, 1, x2.stride(0), 0


@torch.library.custom_op("sparkfold::layer_norm", mutates_args=())
def _layer_norm_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   eps: float) -> torch.Tensor:
    kernel, _, next_pow2 = _kernel()
    c = x.shape[-1]
    xr, n_inner, s_outer, s_inner = _two_level_rows(x)
    y = torch.empty((x.numel() // max(1, c), c), dtype=x.dtype, device=x.device)
    n_rows = y.shape[0]
    block_c = next_pow2(c)
    block_r = max(1, min(64, 4096 // block_c))
    num_warps = 4 if block_c <= 256 else 8
    grid = (triton_cdiv(n_rows, block_r),)
    if n_rows:
        kernel[grid](xr, weight.contiguous(), bias.contiguous(), y, n_rows, c, n_inner, s_outer,
                     s_inner, y.stride(0), eps, BLOCK_R=block_r, BLOCK_C=block_c,
                     num_warps=num_warps)
    return y.reshape(x.shape)


@torch.library.custom_op("sparkfold::contiguous_rows", mutates_args=())
def _contiguous_op(x: torch.Tensor) -> torch.Tensor:
    _, copy_rows, next_pow2 = _kernel()
    c = x.shape[-1]
    xr, n_inner, s_outer, s_inner = _two_level_rows(x)
    y = torch.empty((x.numel() // max(1, c), c), dtype=x.dtype, device=x.device)
    block_c = next_pow2(c)
    block_r = max(1, min(64, 8192 // block_c))
    if y.numel():
        copy_rows[(triton_cdiv(y.shape[0], block_r),)](
            xr, y, y.shape[0], c, n_inner, s_outer, s_inner, BLOCK_R=block_r, BLOCK_C=block_c,
            num_warps=4)
    return y.reshape(x.shape)


@_contiguous_op.register_fake
def _(x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def contiguous(x: torch.Tensor) -> torch.Tensor:
    """A dense copy of ``x`` (``x`` itself when already dense) through a row-copy kernel that
    reads a transposed view at memory bandwidth (CUDA only)."""
    if x.is_contiguous():
        return x
    if x.shape[-1] > _MAX_C or x.stride(-1) != 1:
        return x.contiguous()
    return _contiguous_op(x)


@_layer_norm_op.register_fake
def _(x, weight, bias, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm over the last axis; fp32 statistics, output in ``x``'s dtype (CUDA only)."""
    if x.shape[-1] > _MAX_C:
        raise ValueError(f"triton layer_norm handles at most {_MAX_C} channels, got {x.shape[-1]}")
    return _layer_norm_op(x, weight, bias, float(eps))
