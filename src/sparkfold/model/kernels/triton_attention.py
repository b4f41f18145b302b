"""Attention with AlphaFold's biases as one Triton kernel (flash-attention style, forward only).

Every attention of the trunk has the shape ``softmax(q·kᵀ·scale + key_bias + pair_bias) · v``
with a key-only mask bias (``[*, 1, 1, K]``) and, for MSA row and triangle attention, a pair
bias shared by all batch rows (``[1, H, Q, K]``). The kernel takes both biases as they are, with
their broadcast (stride-0) strides: neither their sum nor the ``[*, H, Q, K]`` logits is ever
written to memory. One program handles ``BLOCK_M`` queries of one (batch row, head) and streams
the keys in ``BLOCK_N`` tiles with an online softmax in fp32 (log-sum-exp in base 2).

Grid order: the batch row is the fastest grid axis, so the programs resident at one time share
the same (query block, head) tile of the pair bias, which then comes from L2, not HBM.

Numerics against the reference (``kernels/reference.py``):

* ``q`` is scaled in its own dtype before the product (the reference's rounding);
* the logits are fp32 (``q·k`` accumulated in fp32, biases added in fp32, key bias first):
  DEVIATION (numerics only): the reference rounds bf16 logits to bf16 before the softmax;
* hard-masked keys (key bias ``<= -1e8``; AF2 uses ``-1e9``) get the bias alone, without
  ``q·k``: in the reference ``q·k`` vanishes in the rounding at ``1e9``, so a fully masked row
  gives the same uniform softmax whatever the summation order;
* the softmax weights are cast to ``v``'s dtype for the second product, as the reference does.

Wrapped as the custom op ``sparkfold::biased_attention`` (fake implementation for
``torch.compile``). The attention's output gate ``σ(g)`` is applied in the epilogue when
given. Triton is imported lazily. On the CPU the kernel runs only under Triton's
interpreter (``TRITON_INTERPRET=1``), which the tests use.
"""

import functools
import importlib.util
import math
import os
import sys
from pathlib import Path

import torch

from sparkfold.model.kernels.bias import is_key_only, logits_batch
from sparkfold.model.kernels.triton_layer_norm import triton_cdiv

__all__ = ["attention", "block_sizes", "interpreting", "kernel_module"]

MAX_HEAD_DIM = 128


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def kernel_module(stem: str, interpret: bool):
    """The Triton source module ``stem`` of this package (e.g. ``"_attention_kernels"``),
    compiled or interpreted: it is executed once per mode under its own name, because
    ``triton.jit`` decides at decoration time whether it interprets."""
    name = f"{__package__}.{stem}" + ("_interpreted" if interpret else "")
    module = sys.modules.get(name)
    if module is None:
        path = Path(__file__).with_name(f"{stem}.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=2)
def _kernel(interpret: bool):
    """The attention kernel, compiled or interpreted (:func:`kernel_module`)."""
    return kernel_module("_attention_kernels", interpret)._attn_fwd


def _pow2(x: int, lo: int) -> int:
    return max(lo, 1 << max(0, (x - 1).bit_length()))


#: ``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` forced by ``benchmarks/bench_attention.py``'s
#: sweep; ``None`` in normal use.
_SWEEP_OVERRIDE: tuple[int, int, int, int] | None = None


def block_sizes(n_q: int, n_k: int, c: int, c_v: int,
                pair_bias: bool = True) -> tuple[int, int, int, int, int, int]:
    """``(BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, num_warps, num_stages)`` for one call.

    From sweeps on an H100 at the trunk's shapes (``benchmarks/bench_attention.py --sweep``,
    head dim 32; ``results/h100_attention_sweep.json`` and, for the kernel with the fused
    bias arithmetic, ``results/h100_attention_sweep_fma.json``): with a pair bias, 64×64 tiles
    and 4 warps up to 512 queries; beyond, and without a pair bias, 128×32 tiles and 4 warps;
    3 pipeline stages everywhere. ``tl.dot`` needs every block dimension to be at least 16.
    """
    block_d, block_dv = _pow2(c, 16), _pow2(c_v, 16)
    if _SWEEP_OVERRIDE is not None:
        bm, bn, warps, stages = _SWEEP_OVERRIDE
        return bm, bn, block_d, block_dv, warps, stages
    wide = max(block_d, block_dv) > 64
    if pair_bias and n_q <= 512:
        block_m, block_n = 64, 64
    else:
        block_m, block_n = 128, 32
    block_m = min(block_m, _pow2(n_q, 16))
    block_n = min(32 if wide else block_n, _pow2(n_k, 16))
    num_warps = 4
    return block_m, block_n, block_d, block_dv, num_warps, (2 if wide else 3)


def _strides4(t: torch.Tensor | None) -> tuple[int, int, int, int]:
    return tuple(t.stride()) if t is not None else (0, 0, 0, 0)


@torch.library.custom_op("sparkfold::biased_attention", mutates_args=())
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pair_bias: torch.Tensor | None,
                  key_bias: torch.Tensor | None, scale: float,
                  gate: torch.Tensor | None = None) -> torch.Tensor:
    """q ``[B, H, Q, C]``, k ``[B, H, K, C]``, v ``[B, H, K, Cv]``, pair_bias ``[B, H, Q, K]``,
    key_bias ``[B, K]``, gate ``[B, H, Q, Cv]`` (any strides, stride 0 for broadcasts) →
    ``σ(gate) · attention``, ``[B, H, Q, Cv]`` stored as ``[B, Q, H, Cv]`` (the layout the
    output projection reads)."""
    n_b, n_h, n_q, c = q.shape
    n_k, c_v = k.shape[-2], v.shape[-1]
    out = torch.empty((n_b, n_q, n_h, c_v), dtype=q.dtype, device=q.device).transpose(1, 2)
    if out.numel() == 0:
        return out
    if n_k == 0:  # softmax over no keys: zeros (the gate multiplies zeros)
        return out.zero_()
    bm, bn, bd, bdv, warps, stages = block_sizes(n_q, n_k, c, c_v, pair_bias is not None)
    kernel = _kernel(interpreting())
    grid = (n_b, triton_cdiv(n_q, bm), n_h)
    kb_strides = tuple(key_bias.stride()) if key_bias is not None else (0, 0)
    kernel[grid](
        q, k, v,
        pair_bias if pair_bias is not None else q,
        key_bias if key_bias is not None else q,
        out, *q.stride(), *k.stride(), *v.stride(), *_strides4(pair_bias), *kb_strides,
        *out.stride(), gate if gate is not None else q, *_strides4(gate),
        n_q, n_k, c, c_v, scale,
        HAS_PB=pair_bias is not None, HAS_KB=key_bias is not None, HAS_G=gate is not None,
        IEEE=q.dtype == torch.float32, INTERPRET=interpreting(),
        EVEN_M=n_q % bm == 0, EVEN_N=n_k % bn == 0, EVEN_D=(c == bd and c_v == bdv),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, BLOCK_DV=bdv, num_warps=warps, num_stages=stages,
    )
    return out


@_attention_op.register_fake
def _(q, k, v, pair_bias, key_bias, scale, gate=None):
    n_b, n_h, n_q, _ = q.shape
    return q.new_empty((n_b, n_q, n_h, v.shape[-1])).transpose(1, 2)


def _flat(t: torch.Tensor, batch: tuple[int, ...], tail: tuple[int, ...]) -> torch.Tensor:
    """``t`` broadcast to ``(*batch, *tail)`` and viewed as ``[B, *tail]``; a copy only when the
    batch dims cannot be merged into one stride."""
    t = t.expand(*batch, *tail)
    try:
        return t.view(-1, *tail)
    except RuntimeError:
        return t.reshape(-1, *tail)


def attention(q, k, v, biases, scale=None, gate=None):
    """``softmax(q·scale·kᵀ + Σ biases) · v`` in one kernel, times ``σ(gate)`` when given (in
    the kernel's epilogue, before its one rounding: DEVIATION, numerics only — the reference
    rounds the attention output and the sigmoid before the product); see the module docstring.

    Same contract as :func:`sparkfold.model.kernels.attention`. Key-only biases are summed
    (small); if several other biases are given they are summed into one tensor first.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    c, c_v = q.shape[-1], v.shape[-1]
    if c > MAX_HEAD_DIM or c_v > MAX_HEAD_DIM:
        raise ValueError(f"triton attention handles head dims up to {MAX_HEAD_DIM}, got {c}/{c_v}")
    batch, h_all, n_q, n_k = logits_batch(q, k, v, biases)

    key_bias = pair_bias = None
    for b in biases:
        if is_key_only(b):
            key_bias = b if key_bias is None else key_bias + b
        else:
            pair_bias = b if pair_bias is None else pair_bias + b
    if key_bias is not None:
        kb = key_bias.reshape(*key_bias.shape[:-1], 1, 1, n_k) if key_bias.dim() < 3 else key_bias
        kb = _flat(kb, batch, (1, 1, n_k))[:, 0, 0, :]  # [B, K]
    else:
        kb = None
    pb = _flat(pair_bias, batch, (h_all, n_q, n_k)) if pair_bias is not None else None
    qf = _flat(q, batch, (h_all, n_q, c))
    kf = _flat(k, batch, (h_all, n_k, c))
    vf = _flat(v, batch, (h_all, n_k, c_v))
    gf = _flat(gate, batch, (h_all, n_q, c_v)) if gate is not None else None
    out = _attention_op(qf, kf, vf, pb, kb, float(scale), gf)  # [B, H, Q, Cv]
    return out.reshape(*batch, h_all, n_q, c_v)
