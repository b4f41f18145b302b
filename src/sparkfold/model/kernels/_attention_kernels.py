"""The Triton source of ``triton_attention``'s kernel (imports Triton at the top).

Loaded by :func:`sparkfold.model.kernels.triton_attention._kernel` once per mode (compiled, or
Triton's CPU interpreter, which ``triton.jit`` picks when the module is executed).

Per score element the inner loop spends, besides the two products: the pair bias's load and
conversion, two fused multiply-adds (``qk·keep + (pb·log2e + kb·log2e)``, where ``keep`` is
``log2e`` for live keys and 0 for hard-masked ones, a per-key vector), the running maximum,
one ``exp2`` and the row sum. Bounds checks only in the last key tile when ``n_k`` is not a
multiple of ``BLOCK_N`` (``MASK_N``), and on queries only when ``n_q`` is not a multiple of
``BLOCK_M`` (``EVEN_M``): at head dim 32 that elementwise work, not the products, bounds the
kernel.
"""

import triton
import triton.language as tl


@triton.jit
def _attn_block(start, q, m_i, l_i, acc, k_base, v_base, pb_base, kb_base, m_ok,
                offs_d, offs_dv, sk_n, sk_c, sv_n, sv_c, sp_n, skb_n, n_k, c, c_v,
                HAS_PB: tl.constexpr, HAS_KB: tl.constexpr, IEEE: tl.constexpr,
                EVEN_M: tl.constexpr, MASK_N: tl.constexpr, EVEN_D: tl.constexpr,
                BLOCK_N: tl.constexpr):
    """One key tile of the online softmax; returns the updated (max, sum, accumulator)."""
    LOG2E: tl.constexpr = 1.4426950408889634
    offs_n = start + tl.arange(0, BLOCK_N)
    n_ok = offs_n < n_k
    k_ptrs = k_base + offs_n[None, :] * sk_n + offs_d[:, None] * sk_c
    v_ptrs = v_base + offs_n[:, None] * sv_n + offs_dv[None, :] * sv_c
    if MASK_N:
        kt = tl.load(k_ptrs, mask=n_ok[None, :] & (offs_d[:, None] < c), other=0.0)  # [D, N]
    elif EVEN_D:
        kt = tl.load(k_ptrs)
    else:
        kt = tl.load(k_ptrs, mask=offs_d[:, None] < c, other=0.0)
    if IEEE:
        s = tl.dot(q, kt, input_precision="ieee")
    else:
        s = tl.dot(q, kt)
    # Bias in base 2: pb·log2e + kb·log2e, and q·k scaled by `keep` (0 for hard-masked keys,
    # whose logit is their bias alone).
    if HAS_KB:
        if MASK_N:
            kb = tl.load(kb_base + offs_n * skb_n, mask=n_ok, other=0.0).to(tl.float32)
        else:
            kb = tl.load(kb_base + offs_n * skb_n).to(tl.float32)
        keep = tl.where(kb <= -1e8, 0.0, LOG2E)
        kb2 = kb * LOG2E
    if HAS_PB:
        pb_ptrs = pb_base + offs_n[None, :] * sp_n
        if MASK_N or not EVEN_M:
            pb = tl.load(pb_ptrs, mask=m_ok[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
        else:
            pb = tl.load(pb_ptrs).to(tl.float32)
        if HAS_KB:
            s = s * keep[None, :] + (pb * LOG2E + kb2[None, :])
        else:
            s = s * LOG2E + pb * LOG2E
    elif HAS_KB:
        s = s * keep[None, :] + kb2[None, :]
    else:
        s = s * LOG2E
    if MASK_N:
        s = tl.where(n_ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    if MASK_N:
        vt = tl.load(v_ptrs, mask=n_ok[:, None] & (offs_dv[None, :] < c_v), other=0.0)  # [N, DV]
    elif EVEN_D:
        vt = tl.load(v_ptrs)
    else:
        vt = tl.load(v_ptrs, mask=offs_dv[None, :] < c_v, other=0.0)
    if IEEE:
        pv = tl.dot(p.to(vt.dtype), vt, input_precision="ieee")
    else:
        pv = tl.dot(p.to(vt.dtype), vt)
    return m_new, l_i, acc * alpha[:, None] + pv


@triton.jit
def _attn_fwd(q_ptr, k_ptr, v_ptr, pb_ptr, kb_ptr, o_ptr,
              sq_b, sq_h, sq_m, sq_c, sk_b, sk_h, sk_n, sk_c, sv_b, sv_h, sv_n, sv_c,
              sp_b, sp_h, sp_m, sp_n, skb_b, skb_n, so_b, so_h, so_m, so_c,
              g_ptr, sg_b, sg_h, sg_m, sg_c,
              n_q, n_k, c, c_v, scale,
              HAS_PB: tl.constexpr, HAS_KB: tl.constexpr, HAS_G: tl.constexpr, IEEE: tl.constexpr,
              INTERPRET: tl.constexpr, EVEN_M: tl.constexpr, EVEN_N: tl.constexpr,
              EVEN_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    pid_m = tl.program_id(1)
    h = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_ok = offs_m < n_q
    q = tl.load(q_ptr + b * sq_b + h * sq_h + offs_m[:, None] * sq_m + offs_d[None, :] * sq_c,
                mask=m_ok[:, None] & (offs_d[None, :] < c), other=0.0)
    q = (q * scale).to(q_ptr.dtype.element_ty)  # the reference's rounding of q·scale
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h
    pb_base = pb_ptr + b * sp_b + h * sp_h + offs_m[:, None] * sp_m
    kb_base = kb_ptr + b * skb_b
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    n_full = n_k if EVEN_N else (n_k // BLOCK_N) * BLOCK_N
    if INTERPRET:
        # Triton's interpreter cannot use a scalar argument as a range bound with NumPy
        # >= 2.4; a while loop runs the same tiles (compiled code keeps the pipelined for).
        start = 0
        while start < n_full:
            m_i, l_i, acc = _attn_block(
                start, q, m_i, l_i, acc, k_base, v_base, pb_base, kb_base, m_ok,
                offs_d, offs_dv, sk_n, sk_c, sv_n, sv_c, sp_n, skb_n, n_k, c, c_v,
                HAS_PB, HAS_KB, IEEE, EVEN_M, False, EVEN_D, BLOCK_N)
            start += BLOCK_N
    else:
        for start in range(0, n_full, BLOCK_N):
            m_i, l_i, acc = _attn_block(
                start, q, m_i, l_i, acc, k_base, v_base, pb_base, kb_base, m_ok,
                offs_d, offs_dv, sk_n, sk_c, sv_n, sv_c, sp_n, skb_n, n_k, c, c_v,
                HAS_PB, HAS_KB, IEEE, EVEN_M, False, EVEN_D, BLOCK_N)
    if not EVEN_N:  # the last, partial key tile, with bounds checks
        m_i, l_i, acc = _attn_block(
            n_full, q, m_i, l_i, acc, k_base, v_base, pb_base, kb_base, m_ok,
            offs_d, offs_dv, sk_n, sk_c, sv_n, sv_c, sp_n, skb_n, n_k, c, c_v,
            HAS_PB, HAS_KB, IEEE, EVEN_M, True, EVEN_D, BLOCK_N)
    acc = acc / l_i[:, None]
    o_ok = m_ok[:, None] & (offs_dv[None, :] < c_v)
    if HAS_G:  # the output gate sigmoid(g), applied before the one rounding
        g = tl.load(g_ptr + b * sg_b + h * sg_h + offs_m[:, None] * sg_m + offs_dv[None, :] * sg_c,
                    mask=o_ok, other=0.0).to(tl.float32)
        acc = acc * tl.sigmoid(g)
    tl.store(o_ptr + b * so_b + h * so_h + offs_m[:, None] * so_m + offs_dv[None, :] * so_c,
             acc.to(o_ptr.dtype.element_ty), mask=o_ok)
