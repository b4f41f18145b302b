"""Building blocks shared by every module: Linear with AF2's init schemes, LayerNorm, Attention.

Parameter names match OpenFold's (``linear_q``, ``linear_o``, ``layer_norm.weight`` …) so that
state dicts load with no renaming.
"""

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from sparkfold.model import kernels
from sparkfold.model.chunking import chunk_layer, deliver

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


def fused_weight(
    module: nn.Module, key: str, params: list[torch.Tensor], pad_front: int = 0
) -> torch.Tensor:
    """``torch.cat([zeros(pad_front), *params])`` along dim 0, cached on ``module``.

    Used to run several projections of one input as one GEMM while the parameters keep their
    OpenFold names (the state dict's keys and shapes are untouched: the cache is a plain
    attribute). Once built, the parameters' data become views of the concatenation, so the
    weights are held once, not twice. The cache is keyed on each parameter's storage, version
    counter, dtype, device and shape, so it is rebuilt after ``load_state_dict``, ``.to()`` or
    an in-place update. With autograd recording (training) or under ``torch.compile`` the
    concatenation is rebuilt on every call instead and the parameters are left alone.
    """

    def build() -> torch.Tensor:
        parts = list(params)
        if pad_front:
            parts.insert(0, params[0].new_zeros((pad_front, *params[0].shape[1:])))
        return torch.cat(parts, dim=0)

    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return build()
    if torch.compiler.is_compiling():
        return build()
    def signature() -> tuple:
        return tuple((p.data_ptr(), _version(p), p.dtype, p.device, tuple(p.shape)) for p in params)

    cache = module.__dict__.setdefault("_fused_cache", {})
    hit = cache.get(key)
    if hit is None or hit[0] != signature():
        # Not an inference tensor even inside inference_mode: the parameters become its views,
        # and they must stay loadable (load_state_dict copies into them) outside it.
        with torch.no_grad(), torch.inference_mode(False):
            fused = build()
            start = pad_front
            for p in params:
                p.data = fused[start:start + p.shape[0]]
                start += p.shape[0]
        hit = cache[key] = (signature(), fused)
    return hit[1]


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors carry no version counter (and cannot change)
        return -1


def aligned_keys(t: torch.Tensor) -> torch.Tensor:
    """``t`` with unit stride along the last axis and every other stride a multiple of 8.

    Returns ``t`` itself when it already has that layout, else a copy into a buffer whose last
    axis is padded to a multiple of 8 (the result is a view of it): fused attention kernels
    take such a tensor as a bias without copying it again per call.
    """
    n = t.shape[-1]
    if t.stride(-1) == 1 and all(s % 8 == 0 for s, d in zip(t.stride()[:-1], t.shape[:-1]) if d > 1):
        return t
    buf = t.new_empty((*t.shape[:-1], -(-n // 8) * 8))[..., :n]
    buf.copy_(t)
    return buf


def linear_channel_first(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    row_chunk: int | None = None,
    fn=None,
) -> torch.Tensor:
    """``linear(fn(x), weight, bias)`` for ``x [*, I, J, C]``, written channel-first.

    The product is computed as ``weight @ fn(x)ᵀ`` so that the result ``[*, O, I, J]`` comes
    out contiguous with no transpose (the triangle contraction and the attention biases want
    that layout). ``fn`` (e.g. a LayerNorm) is applied to slices of ``row_chunk`` rows when
    ``row_chunk`` is given, so that ``fn(x)`` never exists in full.

    Args:
        x: ``[*, I, J, C]``.
        weight: ``[O, C]``.
        bias: ``[O]`` or ``None``.
        row_chunk: rows ``I`` per slice, or ``None`` for one slice.
        fn: optional position-wise function applied to ``x`` first.

    Returns:
        ``[*, O, I, J]``, contiguous.
    """
    *batch, n_i, n_j, c = x.shape
    n_b = math.prod(batch)
    x3 = x.reshape(n_b, n_i, n_j, c)
    step = n_i if row_chunk is None else max(1, row_chunk)
    out = None
    for i0 in range(0, n_i, step):
        xs = x3[:, i0:i0 + step]
        if fn is not None:
            xs = fn(xs)
        rows = xs.shape[1]
        w = weight.to(xs.dtype)
        xt = xs.reshape(n_b, rows * n_j, c).transpose(-1, -2)  # [B, C, rows·J]
        if bias is None:
            part = torch.matmul(w, xt)  # [B, O, rows·J]
        else:
            part = torch.baddbmm(bias.to(xs.dtype)[None, :, None], w.expand(n_b, -1, -1), xt)
        part = part.view(n_b, -1, rows, n_j)  # [B, O, rows, J]
        if step >= n_i:
            out = part
            break
        if out is None:
            out = part.new_empty((n_b, part.shape[1], n_i, n_j))
        out[:, :, i0:i0 + rows] = part
    return out.reshape(*batch, *out.shape[1:])


def fp32_linear(linear: nn.Linear, x: torch.Tensor, slice_bytes: int = 64 << 20) -> torch.Tensor:
    """``linear(x.float())`` in fp32, upcasting ``x`` in row slices of at most ``slice_bytes``
    so that a full fp32 copy of a bf16 ``x`` (e.g. the pair representation) never exists.
    An fp32 ``x`` goes through ``linear`` as it is.

    Args:
        linear: an fp32 ``nn.Linear``.
        x: ``[*, C]`` in any float dtype.

    Returns:
        ``[*, O]`` float32.
    """
    if x.dtype == torch.float32:
        return linear(x)
    c = x.shape[-1]
    x2 = x.reshape(-1, c)
    step = max(1, slice_bytes // (4 * max(1, c)))
    if x2.shape[0] <= step:
        return linear(x2.float()).reshape(*x.shape[:-1], -1)
    out = x2.new_empty((x2.shape[0], linear.out_features), dtype=torch.float32)
    for i in range(0, x2.shape[0], step):
        out[i:i + step] = linear(x2[i:i + step].float())
    return out.reshape(*x.shape[:-1], -1)


def deliver_in_frame(out: torch.Tensor, transposed: bool, add_into: torch.Tensor | None) -> torch.Tensor:
    """An update computed in the attended frame (the last two batch axes swapped when
    ``transposed``: column and ending-node attention) returned in the caller's frame, dense,
    or added into ``add_into`` (see :func:`~sparkfold.model.chunking.deliver`)."""
    if transposed:
        out = out.transpose(-2, -3)
        if add_into is None:
            out = kernels.contiguous(out)
    return deliver(out, add_into)


def chunked_in_frame(fn, inputs: dict, chunk_size: int, num_batch_dims: int, transposed: bool,
                     add_into: torch.Tensor | None) -> torch.Tensor:
    """:func:`~sparkfold.model.chunking.chunk_layer` of an attention computed in the attended
    frame; with ``add_into`` each slice goes straight into the matching slice of the caller's
    tensor (through a transposed view when ``transposed``)."""
    if add_into is None:
        return deliver_in_frame(chunk_layer(fn, inputs, chunk_size, num_batch_dims), transposed, None)
    target = add_into.transpose(-2, -3) if transposed else add_into
    chunk_layer(fn, inputs, chunk_size, num_batch_dims, add_into=target)
    return add_into


class Attention(nn.Module):
    """Multi-head attention with additive biases and optional sigmoid gating.

    AF2 Suppl. Alg. 7 "MSARowAttentionWithPairBias" lines 2-7 (the shared attention core):
    q/k/v projections without bias, ``q`` scaled by ``1/sqrt(c_hidden)`` before ``q·kᵀ``,
    biases added, softmax over keys, per-head gate ``sigmoid(linear_g(q_x))`` and an output
    projection with bias.

    Self-attention (:meth:`self_attention`) runs the q/k/v/gate projections as one GEMM on the
    concatenated weights (cached, see :func:`fused_weight`) and hands the kernels strided
    ``[*, H, Q, C]`` views of its output, so no per-head transposes are materialised.
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
        if q_x is kv_x:
            return self.self_attention(q_x, biases)
        h, c = self.num_heads, self.c_hidden
        q = self.linear_q(q_x).unflatten(-1, (h, c)).transpose(-2, -3)  # [*, H, Q, C]
        k = self.linear_k(kv_x).unflatten(-1, (h, c)).transpose(-2, -3)  # [*, H, K, C]
        v = self.linear_v(kv_x).unflatten(-1, (h, c)).transpose(-2, -3)  # [*, H, K, C]
        o = kernels.attention(q, k, v, biases)  # [*, H, Q, C]
        o = o.transpose(-2, -3)  # [*, Q, H, C]
        if self.linear_g is not None:
            g = torch.sigmoid(self.linear_g(q_x)).unflatten(-1, (h, c))  # [*, Q, H, C]
            o = g * o
        return self.linear_o(o.flatten(-2))  # [*, Q, c_q]

    @property
    def fusable(self) -> bool:
        """Whether q, k and v read inputs of one width (self-attention can fuse them)."""
        return self.linear_q.in_features == self.linear_k.in_features == self.linear_v.in_features

    def fused_projection(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The q/k/v(/g) weights and the gate's bias (zeros for q/k/v) as one projection
        (:func:`fused_weight`; the model builds it before recording a CUDA graph)."""
        weights = [self.linear_q.weight, self.linear_k.weight, self.linear_v.weight]
        bias = None
        if self.linear_g is not None:
            weights.append(self.linear_g.weight)
            bias = fused_weight(self, "qkvg_b", [self.linear_g.bias], pad_front=3 * self.num_heads * self.c_hidden)
        return fused_weight(self, "qkvg_w", weights), bias

    def self_attention(
        self,
        x: torch.Tensor,
        biases: list[torch.Tensor] | tuple[torch.Tensor, ...] = (),
    ) -> torch.Tensor:
        """Self-attention of ``x [*, A, B, c]`` along ``B``.

        Biases broadcast to the logits ``[*, A, H, B, B]``. ``x`` needs at least 2 dims
        (``[Q, c]``: one attention over ``Q``).

        Returns:
            ``[*, A, B, c]``.
        """
        h, c = self.num_heads, self.c_hidden
        w, bias = self.fused_projection()
        bias = bias.to(x.dtype) if bias is not None else None
        parts = F.linear(x, w.to(x.dtype), bias).unflatten(-1, (-1, h, c))  # [*, A, B, P, H, C]

        def heads(i: int) -> torch.Tensor:
            return parts.select(-3, i).transpose(-2, -3)  # [*, A, H, B, C] (strided view)

        gate = heads(3) if self.linear_g is not None else None
        o = kernels.attention(heads(0), heads(1), heads(2), biases, gate=gate)  # [*, A, H, B, C]
        o = o.transpose(-2, -3)  # [*, A, B, H, C]: dense for every backend's output layout
        return self.linear_o(o.flatten(-2))  # [*, A, B, c_q]
