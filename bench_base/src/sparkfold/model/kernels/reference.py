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


def attention(q, k, v, biases, scale=None):
    """``softmax(q·scale·kᵀ + Σ biases) · v``; q is scaled before the product, as OpenFold does."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    q = q * scale
    logits = torch.matmul(q, k.transpose(-1, -2))  # [*, H, Q, K]
    for b in biases:
        logits = logits + b
    weights = torch.softmax(logits.float(), dim=-1).to(v.dtype)
    return torch.matmul(weights, v)  # [*, H, Q, C_v]


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


def sigmoid_gate(p, g, mask, out=None):
    """``mask · σ(g) · p``, rounded after each product in the input dtype."""
    r = torch.sigmoid(g).mul_(p).mul_(mask)
    if out is None:
        return r
    out.copy_(r)
    return out
