"""The reference backend: plain PyTorch, fp32 accumulation. This file is the specification.

Every fast backend must match these functions within the tolerances of
``tests/tolerances.py`` in fp32 and bf16.
"""

import math
from typing import Literal

import torch


def is_available() -> bool:
    """Always available."""
    return True


def supports(op, dtype, device, **info) -> bool:
    """Supports every op, dtype and device."""
    return True


def attention(q, k, v, biases, scale=None, gate=None):
    """``softmax(q·scale·kᵀ + Σ biases) · v``; q is scaled before the product, as OpenFold does.
    With ``gate``: ``σ(gate) · (…)``, each rounded in the input dtype, as OpenFold does."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    q = q * scale
    logits = torch.matmul(q, k.transpose(-1, -2))  # [*, H, Q, K]
    for b in biases:
        logits = logits + b
    weights = torch.softmax(logits.float(), dim=-1).to(v.dtype)
    out = torch.matmul(weights, v)  # [*, H, Q, C_v]
    return out if gate is None else torch.sigmoid(gate) * out


def triangle_multiplication(a, b, direction: Literal["outgoing", "incoming"]):
    """Channel-last triangle contraction; see ``sparkfold.model.kernels.triangle_multiplication``."""
    a = a.movedim(-1, -3)  # [*, C, N, N]
    b = b.movedim(-1, -3)
    if direction == "outgoing":
        x = torch.matmul(a, b.transpose(-1, -2))  # [*, C, i, j] = Σ_k a[i,k] b[j,k]
    elif direction == "incoming":
        x = torch.matmul(a.transpose(-1, -2), b)  # [*, C, i, j] = Σ_k a[k,i] b[k,j]
    else:
        raise ValueError(f"direction must be 'outgoing' or 'incoming', got {direction!r}")
    return x.movedim(-3, -1)  # [*, N, N, C]


def layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm with statistics in fp32 (bf16 inputs are upcast, output cast back)."""
    out = torch.nn.functional.layer_norm(
        x.float(), x.shape[-1:], weight.float() if weight is not None else None,
        bias.float() if bias is not None else None, eps,
    )
    return out.to(x.dtype)


def contiguous(x):
    """A dense copy (PyTorch's strided copy)."""
    return x.contiguous()


def outer_product_update(a, b, norm, weight, bias, eps, add_into=None, chunk_size=None):
    """The outer product mean's update; see ``sparkfold.model.kernels.outer_product_update``.

    The outer sums are rounded to the input dtype (einsum), ``linear_out`` rounds its output,
    the division runs in fp32 and the quotient is rounded again. ``chunk_size`` (memory only)
    is not used: this is the unchunked specification.
    """
    outer = torch.einsum("...isc,...jse->...ijce", a, b)  # [*, I, J, C, E]
    outer = torch.nn.functional.linear(outer.flatten(-2), weight, bias)  # [*, I, J, C_z]
    update = (outer.float() / (norm + eps)).to(a.dtype)
    if add_into is None:
        return update
    return add_into.add_(update)


def sigmoid_gate(p, g, mask, out=None):
    """``mask · σ(g) · p``, rounded after each product in the input dtype."""
    r = torch.sigmoid(g).mul_(p).mul_(mask)
    if out is None:
        return r
    out.copy_(r)
    return out


def triangle_update(z, mask, weights, direction: Literal["outgoing", "incoming"], add_into=None,
                    channel_block=None):
    """The whole triangle multiplicative update (AF2 Alg. 11/12), unchunked, composed of the ops
    above exactly as ``TriangleMultiplication`` composes them; see
    ``sparkfold.model.kernels.triangle_update``. Weights are used in ``z``'s dtype;
    ``channel_block`` (a memory strategy of the fast backends) is ignored."""
    w = weights
    dt = z.dtype
    c = w.w_ab.shape[0] // 4
    z_ln = layer_norm(z, w.ln_in_w, w.ln_in_b, w.eps)
    # [*, 4C, I, J] = [a_p, a_g, b_p, b_g], channel-first as the module projects them
    p = torch.nn.functional.linear(z_ln, w.w_ab.to(dt), w.b_ab.to(dt)).movedim(-1, -3)
    mask_cf = (z.new_ones(z.shape[:-1]) if mask is None else mask.to(dt)).unsqueeze(-3)  # [*, 1, I, J]
    a = sigmoid_gate(p[..., 0:c, :, :], p[..., c:2 * c, :, :], mask_cf)
    b = sigmoid_gate(p[..., 2 * c:3 * c, :, :], p[..., 3 * c:, :, :], mask_cf)
    del p
    x = triangle_multiplication(a.movedim(-3, -1), b.movedim(-3, -1), direction)  # [*, I, J, C]
    del a, b
    g = torch.sigmoid(torch.nn.functional.linear(z_ln, w.w_g.to(dt), w.b_g.to(dt)))  # [*, I, J, C_z]
    x_ln = layer_norm(x, w.ln_out_w, w.ln_out_b, w.eps)
    update = torch.nn.functional.linear(x_ln, w.w_z.to(dt), w.b_z.to(dt)) * g
    if add_into is None:
        return update
    return add_into.add_(update)
