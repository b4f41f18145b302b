"""The Triton source of ``triton_trimul``'s two kernels (imports Triton at the top).

Loaded by :func:`sparkfold.model.kernels.triton_trimul._kernels` once per mode (compiled, or
Triton's CPU interpreter, which ``triton.jit`` picks when the module is executed).
"""

import triton
import triton.language as tl


@triton.jit
def _ln_rows(x, ok_c, w_ptr, b_ptr, cols, n_c, eps):
    # LayerNorm along axis 1 of an fp32 tile [R, BLOCK]; padded columns come out 0.
    mean = tl.sum(x, axis=1) / n_c
    xc = tl.where(ok_c[None, :], x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / n_c + eps)
    w = tl.load(w_ptr + cols, mask=ok_c, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=ok_c, other=0.0).to(tl.float32)
    return xc * rstd[:, None] * w[None, :] + b[None, :]


@triton.jit
def _dot(x, y, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(x, y, input_precision="ieee")
    return tl.dot(x, y)


@triton.jit
def _gated_projection(w_ptr, bias_ptr, row_p, row_g, ok_c, k, ok_k, n_cz, zn_t, m,
                      IEEE: tl.constexpr):
    # mask · σ(W_g·z̃ + b_g) · (W_p·z̃ + b_p) for rows row_p/row_g of W: [BLOCK_C, BLOCK_M].
    ok_w = ok_c[:, None] & ok_k[None, :]
    w_p = tl.load(w_ptr + row_p[:, None] * n_cz + k[None, :], mask=ok_w, other=0.0)
    w_g = tl.load(w_ptr + row_g[:, None] * n_cz + k[None, :], mask=ok_w, other=0.0)
    b_p = tl.load(bias_ptr + row_p, mask=ok_c, other=0.0).to(tl.float32)
    b_g = tl.load(bias_ptr + row_g, mask=ok_c, other=0.0).to(tl.float32)
    p = _dot(w_p, zn_t, IEEE) + b_p[:, None]
    g = _dot(w_g, zn_t, IEEE) + b_g[:, None]
    return m[None, :] * p / (1.0 + tl.exp(-g))


@triton.jit
def _project_block(c0, c_lo, c_hi, n_c, n_cz, w_ptr, bias_ptr, a_ptr, b_ptr, bt, t, ok_t, k, ok_k,
                   zn_t, m, s_ob, s_oc, IEEE: tl.constexpr, BLOCK_C: tl.constexpr):
    # Channels [c0, c0 + BLOCK_C) ∩ [c_lo, c_hi) of a and b, stored at channel c - c_lo.
    c = c0 + tl.arange(0, BLOCK_C)
    ok_c = c < c_hi
    ok_o = ok_c[:, None] & ok_t[None, :]
    o_off = bt * s_ob + (c - c_lo).to(tl.int64)[:, None] * s_oc + t[None, :]
    a = _gated_projection(w_ptr, bias_ptr, c, c + n_c, ok_c, k, ok_k, n_cz, zn_t, m, IEEE)
    tl.store(a_ptr + o_off, a.to(a_ptr.dtype.element_ty), mask=ok_o)
    b = _gated_projection(w_ptr, bias_ptr, c + 2 * n_c, c + 3 * n_c, ok_c, k, ok_k, n_cz, zn_t, m,
                          IEEE)
    tl.store(b_ptr + o_off, b.to(b_ptr.dtype.element_ty), mask=ok_o)


@triton.jit
def _project(z_ptr, m_ptr, ln_w_ptr, ln_b_ptr, w_ptr, bias_ptr, a_ptr, b_ptr,
             n_t, n_cz, n_c, c_lo, c_hi, s_zb, s_zt, s_mb, s_ob, s_oc, eps,
             HAS_MASK: tl.constexpr, IEEE: tl.constexpr, INTERPRET: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_CZ: tl.constexpr, BLOCK_C: tl.constexpr):
    # z: [B, T, C_z] (pixel stride s_zt); w: [4C, C_z] rows (a_p, a_g, b_p, b_g);
    # a, b: [B, c_hi - c_lo, T] for channels [c_lo, c_hi).
    pid = tl.program_id(0)
    bt = tl.program_id(1).to(tl.int64)
    t = (pid * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    ok_t = t < n_t
    k = tl.arange(0, BLOCK_CZ)
    ok_k = k < n_cz
    zt = tl.load(z_ptr + bt * s_zb + t[:, None] * s_zt + k[None, :],
                 mask=ok_t[:, None] & ok_k[None, :], other=0.0).to(tl.float32)
    zn = _ln_rows(zt, ok_k, ln_w_ptr, ln_b_ptr, k, n_cz, eps)
    zn_t = tl.trans(zn.to(z_ptr.dtype.element_ty))  # [BLOCK_CZ, BLOCK_M]
    if HAS_MASK:
        m = tl.load(m_ptr + bt * s_mb + t, mask=ok_t, other=0.0).to(tl.float32)
    else:
        m = tl.full((BLOCK_M,), 1.0, tl.float32)
    if INTERPRET:
        # Triton's interpreter cannot use a scalar argument as a range bound with NumPy
        # >= 2.4 (as in _attention_kernels); a while loop runs the same channel blocks.
        c0 = c_lo
        while c0 < c_hi:
            _project_block(c0, c_lo, c_hi, n_c, n_cz, w_ptr, bias_ptr, a_ptr, b_ptr, bt, t, ok_t,
                           k, ok_k, zn_t, m, s_ob, s_oc, IEEE, BLOCK_C)
            c0 += BLOCK_C
    else:
        for c0 in range(c_lo, c_hi, BLOCK_C):
            _project_block(c0, c_lo, c_hi, n_c, n_cz, w_ptr, bias_ptr, a_ptr, b_ptr, bt, t, ok_t,
                           k, ok_k, zn_t, m, s_ob, s_oc, IEEE, BLOCK_C)


@triton.jit
def _output(x_ptr, z_ptr, ln_in_w_ptr, ln_in_b_ptr, w_g_ptr, b_g_ptr, ln_out_w_ptr,
            ln_out_b_ptr, w_z_ptr, b_z_ptr, o_ptr, n_t, n_cz, n_c, s_xb, s_xc, s_zb, s_zt,
            s_ob, s_ot, eps, ADD: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
            BLOCK_CZ: tl.constexpr, BLOCK_C: tl.constexpr):
    # x: [B, C, T] channel-first; z, o: [B, T, C_z]; w_g: [C_z, C_z]; w_z: [C_z, C].
    pid = tl.program_id(0)
    bt = tl.program_id(1).to(tl.int64)
    t = (pid * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    ok_t = t < n_t
    c = tl.arange(0, BLOCK_C)
    ok_c = c < n_c
    k = tl.arange(0, BLOCK_CZ)
    ok_k = k < n_cz
    # linear_z(LN_out(x)): the tile is read channel-first and normalised as [BLOCK_M, C].
    xt = tl.load(x_ptr + bt * s_xb + c[:, None].to(tl.int64) * s_xc + t[None, :],
                 mask=ok_c[:, None] & ok_t[None, :], other=0.0).to(tl.float32)
    xn = _ln_rows(tl.trans(xt), ok_c, ln_out_w_ptr, ln_out_b_ptr, c, n_c, eps)
    # Weights are read in their own row-major layout (coalesced) and transposed in registers.
    w_z = tl.load(w_z_ptr + k[:, None] * n_c + c[None, :],  # [BLOCK_CZ, BLOCK_C]
                  mask=ok_k[:, None] & ok_c[None, :], other=0.0)
    b_z = tl.load(b_z_ptr + k, mask=ok_k, other=0.0).to(tl.float32)
    u = _dot(xn.to(x_ptr.dtype.element_ty), tl.trans(w_z), IEEE) + b_z[None, :]  # [M, CZ]
    # σ(linear_g(LN_in(z))) on the same pixels.
    ok_z = ok_t[:, None] & ok_k[None, :]
    zt = tl.load(z_ptr + bt * s_zb + t[:, None] * s_zt + k[None, :], mask=ok_z,
                 other=0.0).to(tl.float32)
    zn = _ln_rows(zt, ok_k, ln_in_w_ptr, ln_in_b_ptr, k, n_cz, eps)
    w_g = tl.load(w_g_ptr + k[:, None] * n_cz + k[None, :],  # [BLOCK_CZ (out), BLOCK_CZ (in)]
                  mask=ok_k[:, None] & ok_k[None, :], other=0.0)
    b_g = tl.load(b_g_ptr + k, mask=ok_k, other=0.0).to(tl.float32)
    g = _dot(zn.to(z_ptr.dtype.element_ty), tl.trans(w_g), IEEE) + b_g[None, :]
    y = u / (1.0 + tl.exp(-g))
    o_off = bt * s_ob + t[:, None] * s_ot + k[None, :]
    if ADD:
        y += tl.load(o_ptr + o_off, mask=ok_z, other=0.0).to(tl.float32)
    tl.store(o_ptr + o_off, y.to(o_ptr.dtype.element_ty), mask=ok_z)
