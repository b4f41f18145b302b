"""Building blocks shared by every module: Linear with AF2's init schemes, LayerNorm, Attention.

Parameter names match OpenFold's (``linear_q``, ``linear_o``, ``layer_norm.weight`` …) so that
state dicts load with no renaming.
"""

import math
from typing import Literal

import torch
from torch import nn

from sparkfold.model import kernels

InitScheme = Literal["default", "relu", "glorot", "gating", "normal", "final"]


class Linear(nn.Linear):
    """``nn.Linear`` with the initialisation schemes named in AF2 Suppl. 1.11.4.

    ``default``: LeCun (truncated) normal; ``relu``: He normal; ``glorot``: Xavier uniform;
    ``gating``: zero weights, bias 1; ``final``: zeros; ``normal``: fan-in normal.
    Initialisation only matters for models built with random weights (tests, self-test):
    real weights overwrite it.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, init: InitScheme = "default"):
        self._init_scheme = init
        super().__init__(in_dim, out_dim, bias=bias)

    def reset_parameters(self) -> None:
        init = getattr(self, "_init_scheme", "default")
        fan_in = self.in_features
        with torch.no_grad():
            if init == "default":
                std = math.sqrt(1.0 / max(1, fan_in)) / 0.87962566103423978
                nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)
            elif init == "relu":
                std = math.sqrt(2.0 / max(1, fan_in)) / 0.87962566103423978
                nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)
            elif init == "glorot":
                nn.init.xavier_uniform_(self.weight)
            elif init in ("gating", "final"):
                self.weight.zero_()
            elif init == "normal":
                nn.init.normal_(self.weight, std=math.sqrt(1.0 / max(1, fan_in)))
            else:
                raise ValueError(f"unknown init scheme {init!r}")
            if self.bias is not None:
                self.bias.fill_(1.0 if init == "gating" else 0.0)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis (eps 1e-5) with fp32 statistics, via the kernel layer."""

    def __init__(self, c_in: int, eps: float = 1e-5):
        super().__init__()
        self.c_in = c_in
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(c_in))
        self.bias = nn.Parameter(torch.zeros(c_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.layer_norm(x, self.weight, self.bias, self.eps)


class Attention(nn.Module):
    """Multi-head attention with additive biases and optional sigmoid gating.

    AF2 Suppl. Alg. 7 "MSARowAttentionWithPairBias" lines 2-7 (the shared attention core):
    q/k/v projections without bias, ``q`` scaled by ``1/sqrt(c_hidden)`` before ``q·kᵀ``,
    biases added, softmax over keys, per-head gate ``sigmoid(linear_g(q_x))`` and an output
    projection with bias.
    """

    def __init__(
        self, c_q: int, c_k: int, c_v: int, c_hidden: int, num_heads: int, gating: bool = True
    ):
        super().__init__()
        self.c_hidden = c_hidden
        self.num_heads = num_heads
        self.gating = gating
        self.linear_q = Linear(c_q, c_hidden * num_heads, bias=False, init="glorot")
        self.linear_k = Linear(c_k, c_hidden * num_heads, bias=False, init="glorot")
        self.linear_v = Linear(c_v, c_hidden * num_heads, bias=False, init="glorot")
        self.linear_o = Linear(c_hidden * num_heads, c_q, init="final")
        self.linear_g = Linear(c_q, c_hidden * num_heads, init="gating") if gating else None

    def forward(
        self,
        q_x: torch.Tensor,
        kv_x: torch.Tensor,
        biases: list[torch.Tensor] | tuple[torch.Tensor, ...] = (),
    ) -> torch.Tensor:
        """Attend from ``q_x [*, Q, c_q]`` to ``kv_x [*, K, c_k]``; biases broadcast to ``[*, H, Q, K]``."""
        h, c = self.num_heads, self.c_hidden
        q = self.linear_q(q_x).unflatten(-1, (h, c)).transpose(-2, -3)  # [*, H, Q, C]
        k = self.linear_k(kv_x).unflatten(-1, (h, c)).transpose(-2, -3)  # [*, H, K, C]
        v = self.linear_v(kv_x).unflatten(-1, (h, c)).transpose(-2, -3)  # [*, H, K, C]
        o = kernels.attention(q, k, v, biases)  # [*, H, Q, C]
        o = o.transpose(-2, -3)  # [*, Q, H, C]
        if self.linear_g is not None:
            g = torch.sigmoid(self.linear_g(q_x)).unflatten(-1, (h, c))  # [*, Q, H, C]
            o = o * g
        return self.linear_o(o.flatten(-2))  # [*, Q, c_q]
