"""The outer product mean's update as a cuBLAS GEMM and one Triton GEMM with a gathered operand.

The reference (AF2 Alg. 10, OpenFold variant) forms ``o[i, j, c, e] = Σ_s a[i, s, c]·b[j, s, e]``
with an einsum whose natural GEMM layout is ``[I, C, J, E]``; the ``[I, J, C·E]`` layout that
``linear_out`` needs is a full permuting copy of it (2 GiB per call at N = 1024, C = E = 32,
bf16), and the division by the mask count is another fp32 pass over the update. Here, per slice
of rows ``i``:

1. cuBLAS writes ``O = a_slice [I_c·C, S] @ b [S, J·E]``, i.e. ``O [I_c, C, J, E]`` dense, in the
   inputs' dtype (the reference's einsum rounds its result to the same dtype);
2. one Triton GEMM computes ``out[i, j, z] = Σ_{c,e} O[i, c, j, e]·W[z, c·E + e]`` over rows
   ``m = (i, j)`` and ``K = C·E``, reading ``O`` in place: element ``k = c·E + e`` of row ``m``
   sits at ``i·C·J·E + j·E`` (row part) ``+ c·J·E + e`` (column part), so an A tile is a
   sum of a row and a column offset vector, and for one ``c`` a tile's rows are consecutive
   runs of ``E`` elements (dense loads). Its epilogue adds the bias, divides by
   ``norm[i, j] + eps`` in fp32 and stores into the output, or adds into ``add_into``.

DEVIATION from the reference (numerics only): the reference rounds ``linear_out``'s output to
the input dtype before the fp32 division; the kernel divides the fp32 accumulator and rounds
once. An add into ``add_into`` rounds the update to the input dtype first, as the reference does.

Memory: the only temporary is ``O`` for one slice, ``I_c·C·J·E`` elements (the caller's
``chunk_size`` rows, or as many rows as fit :data:`SLICE_BYTES`).
"""

import functools
import math

import torch

from sparkfold.model.kernels.triton_layer_norm import triton_cdiv

__all__ = ["SLICE_BYTES", "outer_product_update"]

#: Bytes of the per-slice GEMM output ``O`` when the caller gives no chunk size.
SLICE_BYTES = 512 * 2**20

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): H100, 16-bit inputs; fp32 halves BLOCK_K
# so that three pipeline stages still fit in shared memory.
_CONFIG_16 = (128, 128, 64, 8, 3)
_CONFIG_32 = (128, 128, 32, 8, 3)


@functools.lru_cache(maxsize=1)
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def _opm_out(o_ptr, w_ptr, bias_ptr, norm_ptr, y_ptr, n_m, n_j, n_z,
                 s_wz, s_wk, s_ni, s_nj, s_yi, s_yj, eps,
                 C: tl.constexpr, E: tl.constexpr, ADD: tl.constexpr, IEEE: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # o: [I_c, C, J, E] dense; rows m = i·J + j of the slice; w: Wᵀ [C·E, Cz] (any strides).
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_ok = offs_m < n_m
        n_ok = offs_n < n_z
        i = offs_m // n_j
        j = offs_m % n_j
        row_off = i * (C * E) * n_j + j * E  # [BLOCK_M]
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        # C·E is a compile-time bound (a runtime scalar bound fails in the interpreter under
        # NumPy >= 2.4); the loop is still pipelined when compiled.
        for k0 in range(0, C * E, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < C * E
            col_off = (offs_k // E) * E * n_j + offs_k % E  # c·J·E + e
            x = tl.load(o_ptr + row_off[:, None] + col_off[None, :],
                        mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(w_ptr + offs_k[:, None] * s_wk + offs_n[None, :] * s_wz,
                        mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            if IEEE:
                acc = tl.dot(x, w, acc, input_precision="ieee")
            else:
                acc = tl.dot(x, w, acc)
        bias = tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        norm = tl.load(norm_ptr + i * s_ni + j * s_nj, mask=m_ok, other=1.0).to(tl.float32)
        y = (acc + bias[None, :]) / (norm[:, None] + eps)
        y = y.to(o_ptr.dtype.element_ty)  # the update in the input dtype
        ptrs = y_ptr + (i * s_yi + j * s_yj)[:, None] + offs_n[None, :]
        ok = m_ok[:, None] & n_ok[None, :]
        if ADD:
            y = y.to(tl.float32) + tl.load(ptrs, mask=ok, other=0.0).to(tl.float32)
        tl.store(ptrs, y.to(y_ptr.dtype.element_ty), mask=ok)

    return _opm_out, triton.next_power_of_2


@torch.library.custom_op("sparkfold::outer_product_out", mutates_args=("out",))
def _out_op(o: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, norm: torch.Tensor,
            out: torch.Tensor, eps: float, add: bool, c: int, e: int) -> None:
    """``out[i, j] (+)= ((O[i, :, j, :]·Wᵀ + bias) / (norm[i, j] + eps))`` for one slice:
    ``o [I_c·C, J·E]`` dense, ``weight_t = Wᵀ [C·E, Cz]``, ``norm [I_c, J]`` and
    ``out [I_c, J, Cz]`` (unit channel stride)."""
    kernel, next_pow2 = _kernel()
    n_i, n_j, n_z = out.shape
    n_m = n_i * n_j
    if n_m == 0 or n_z == 0:
        return
    block_m, block_n, block_k, warps, stages = _CONFIG_32 if o.dtype == torch.float32 else _CONFIG_16
    block_n = min(block_n, max(16, next_pow2(n_z)))
    block_k = min(block_k, max(16, next_pow2(c * e)))
    grid = (triton_cdiv(n_m, block_m), triton_cdiv(n_z, block_n))
    kernel[grid](o, weight_t, bias, norm, out, n_m, n_j, n_z, weight_t.stride(1), weight_t.stride(0),
                 norm.stride(0), norm.stride(1), out.stride(0), out.stride(1), eps,
                 C=c, E=e, ADD=add, IEEE=o.dtype == torch.float32,
                 BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                 num_warps=warps, num_stages=stages)


@_out_op.register_fake
def _(o, weight_t, bias, norm, out, eps, add, c, e):
    return None


def _flat_batch(t: torch.Tensor, core: int, batch: tuple[int, ...], n_b: int) -> torch.Tensor:
    """``t`` (``core`` trailing non-batch dims) broadcast to ``batch`` and viewed with one batch
    dim; a copy only where a partial broadcast cannot be viewed flat."""
    rest = t.shape[t.dim() - core:]
    t = t.expand(*batch, *rest)
    try:
        return t.view(n_b, *rest)
    except RuntimeError:
        return t.reshape(n_b, *rest)


def outer_product_update(a: torch.Tensor, b: torch.Tensor, norm: torch.Tensor,
                         weight: torch.Tensor, bias: torch.Tensor | None, eps: float,
                         add_into: torch.Tensor | None = None,
                         chunk_size: int | None = None) -> torch.Tensor:
    """Same contract as the reference (CUDA, or the CPU under Triton's interpreter).

    ``a [*, I, S, C]``, ``b [*, J, S, E]``, ``norm [*, I, J, 1]`` (fp32, batch dims may
    broadcast), ``weight [Cz, C·E]``, ``bias [Cz]`` → ``[*, I, J, Cz]`` in ``a``'s dtype, or
    ``add_into`` with it added in place. ``chunk_size``: rows ``i`` per GEMM slice (default:
    as many as keep the slice's ``O`` within :data:`SLICE_BYTES`).
    """
    *batch_a, n_i, n_s, c = a.shape
    n_j, e = b.shape[-3], b.shape[-1]
    n_z = weight.shape[0]
    if weight.shape[-1] != c * e:
        raise ValueError(f"outer_product_update: weight {tuple(weight.shape)} does not take "
                         f"C·E = {c}·{e} inputs")
    batch = tuple(torch.broadcast_shapes(tuple(batch_a), b.shape[:-3], norm.shape[:-3]))
    n_b = math.prod(batch)
    dtype = a.dtype
    out = None
    if add_into is not None and add_into.stride(-1) == 1 and add_into.shape[:-3] == batch:
        try:
            target = add_into.view(n_b, *add_into.shape[-3:])  # [B, I, J, Cz]
        except RuntimeError:
            target = None
    else:
        target = None
    if target is None:  # no add_into, or one the kernel cannot address: a fresh output first
        out = torch.empty((*batch, n_i, n_j, n_z), dtype=dtype, device=a.device)
        target = out.view(n_b, n_i, n_j, n_z)
    add = out is None
    if n_b == 0 or n_i == 0 or n_j == 0 or n_z == 0:
        return out if add_into is None else (add_into if add else add_into.add_(out))

    # a as [B, S, I, C] with (I, C) mergeable, b as [B, S, J·E]: views of the model's
    # [*, S, N, C] projections, small copies otherwise.
    a_sic = _flat_batch(a, 3, batch, n_b).movedim(-2, -3)  # [B, S, I, C]
    if a_sic.stride(-1) != 1 or a_sic.stride(-2) != c:
        a_sic = a_sic.contiguous()
    b_sje = _flat_batch(b, 3, batch, n_b).movedim(-2, -3)  # [B, S, J, E]
    if b_sje.stride(-1) != 1 or b_sje.stride(-2) != e:
        b_sje = b_sje.contiguous()
    b_mat = b_sje.reshape(n_b, n_s, n_j * e)  # [B, S, J·E], a view
    norm3 = _flat_batch(norm[..., 0], 2, batch, n_b)  # [B, I, J] (batch stride may be 0)
    if norm3.dtype != torch.float32:
        norm3 = norm3.float()
    w_t = weight.t().to(dtype).contiguous()  # [C·E, Cz]: tiles load along the channels
    bias_t = bias if bias is not None else torch.zeros(n_z, dtype=torch.float32, device=a.device)

    if chunk_size is None:
        rows = SLICE_BYTES // max(1, c * n_j * e * a.element_size())
    else:
        rows = chunk_size
    rows = max(1, min(int(rows), n_i))
    o_buf = torch.empty((rows * c, n_j * e), dtype=dtype, device=a.device)  # [I_c·C, J·E]
    for bi in range(n_b):
        for i0 in range(0, n_i, rows):
            i1 = min(i0 + rows, n_i)
            o = o_buf[:(i1 - i0) * c]
            a_t = a_sic[bi, :, i0:i1].reshape(n_s, (i1 - i0) * c).mT  # [I_c·C, S]
            torch.mm(a_t, b_mat[bi], out=o)  # O [I_c, C, J, E]
            _out_op(o, w_t, bias_t, norm3[bi, i0:i1], target[bi, i0:i1], float(eps), add, c, e)
    if add_into is None:
        return out
    return add_into if add else add_into.add_(out)
