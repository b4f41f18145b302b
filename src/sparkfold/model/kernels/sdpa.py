"""The ``sdpa`` backend: PyTorch's fused ops, nothing compiled.

* ``attention`` runs through :func:`torch.nn.functional.scaled_dot_product_attention` with one
  float ``attn_mask`` in the compute dtype. On CUDA the memory-efficient (or cuDNN) kernel then
  never writes the ``[*, H, Q, K]`` logits or softmax weights to memory; the mask stays a
  broadcast (stride-0) view, so a pair bias shared by every MSA row is stored once.
* ``layer_norm`` is the native LayerNorm in the input dtype (its kernels keep the statistics in
  fp32 for bf16/fp16 inputs), which avoids the fp32 copy of the activations that the reference
  makes.

Key-only biases. AlphaFold's attentions carry two biases: a mask bias that depends only on the
key (``[*, 1, 1, K]``) and a pair/triangle bias shared by the batch rows (``[1, H, Q, K]``).
Their sum is ``[*, H, Q, K]``: as large as the logits a fused kernel avoids. Instead the key-only
bias is folded into the product as one extra channel, ``q' = [q·scale, 1]``,
``k' = [k, bias]`` (zero-padded to a multiple of 8 channels), so that
``q'·k'ᵀ = q·kᵀ·scale + bias`` while the ``attn_mask`` keeps the pair bias's small shape.
Hard-masked keys (bias ``<= -1e8``; AF2 uses ``-1e9``) also get ``k = 0``: their logit is the
bias plus the pair bias, as in the reference, where ``q·k`` vanishes in the rounding at
``1e9``. So a fully masked row gives the reference's uniform softmax regardless of the fused
kernel's summation order.

DEVIATION from the reference (numerics only): the logits and softmax are computed in fp32
inside the fused kernel, so bf16 results are closer to fp32 than the reference backend's.
"""

import functools
import math

import torch
import torch.nn.functional as F

from sparkfold.model import kernels as _kernels
from sparkfold.model.kernels.bias import is_key_only, logits_batch

_ALIGN = 8  # channel / key alignment that keeps the fused SDPA kernels eligible
_HARD_MASK = -1e8  # key biases at or below this are masks (AF2 uses -1e9)


@functools.lru_cache(maxsize=1)
def is_available() -> bool:
    """SDPA exists in every supported torch; the scale argument needs torch >= 2.1."""
    return hasattr(F, "scaled_dot_product_attention")


def supports(op: str, dtype: torch.dtype, device: torch.device, **info) -> bool:
    """Which calls this backend takes.

    Under ``kernels="auto"`` only bf16/fp16 on CUDA (so that the fp32 path stays exactly the
    reference); when ``kernels="sdpa"`` is asked for explicitly, every float dtype on CPU and
    CUDA (the tests compare both against the reference).
    """
    if op not in ("attention", "layer_norm"):
        return False
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    if _kernels.current_backend() == "sdpa":
        return True
    return device.type == "cuda" and dtype in (torch.bfloat16, torch.float16)


def _sum(biases: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor | None:
    total = None
    for b in biases:
        b = b.to(dtype)
        total = b if total is None else total + b
    return total


def _aligned_mask(mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``mask`` broadcast (as a view) to ``shape`` with a unit, 16-byte-aligned key stride.

    The fused kernels need the key axis contiguous and every other stride a multiple of 8
    elements; otherwise PyTorch pads the mask and materialises the broadcast. The small,
    un-broadcast mask is padded here instead and a view of it is expanded.
    """
    k = mask.shape[-1]
    k_pad = -(-k // _ALIGN) * _ALIGN
    misaligned = any(s % _ALIGN for s, n in zip(mask.stride()[:-1], mask.shape[:-1]) if n > 1)
    if mask.stride(-1) != 1 or k_pad != k or misaligned or mask.data_ptr() % 16:
        padded = mask.new_zeros((*mask.shape[:-1], k_pad))
        padded[..., :k] = mask
        mask = padded[..., :k]
    return mask.expand(shape)


def _flatten_batch(t: torch.Tensor, batch: tuple[int, ...]) -> torch.Tensor:
    """``[*batch, a, b, c]`` → ``[B, a, b, c]`` (a view when the batch dims are mergeable)."""
    t = t.expand(*batch, *t.shape[-3:])
    return t.reshape(-1, *t.shape[-3:])


def attention(q, k, v, biases, scale=None, gate=None):
    """``softmax(q·scale·kᵀ + Σ biases) · v`` through SDPA, times ``σ(gate)`` when given (as
    the reference: a separate product); see the module docstring."""
    out = _attention(q, k, v, biases, scale)
    return out if gate is None else torch.sigmoid(gate) * out


def _attention(q, k, v, biases, scale):
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    dtype = q.dtype
    q = q * scale  # scaled before the product, as the reference does (same rounding)
    c = q.shape[-1]
    batch, h_all, n_q, n_k = logits_batch(q, k, v, biases)

    key_only = [b for b in biases if is_key_only(b)]
    other = [b for b in biases if not is_key_only(b)]
    mask = _sum(other, dtype)
    key_bias = _sum(key_only, dtype)
    if key_bias is not None and mask is not None:
        combined = math.prod(torch.broadcast_shapes(mask.shape, key_bias.shape))
        if combined <= mask.numel():  # nothing to gain: the sum is no larger than the mask
            mask, key_bias = mask + key_bias, None
    elif key_bias is not None:
        mask, key_bias = key_bias, None

    if key_bias is not None:
        # Fold the key-only bias into one extra channel of the q·k product.
        key_bias = torch.broadcast_to(key_bias, torch.broadcast_shapes(key_bias.shape, (1, 1, n_k)))
        key_bias = torch.broadcast_to(key_bias.reshape(*key_bias.shape[:-3], 1, n_k, 1),
                                      (*batch, h_all, n_k, 1))  # [*, H, K, 1]
        c_ext = c + 1 + (-(c + 1)) % _ALIGN
        q_ext = q.new_zeros((*batch, h_all, n_q, c_ext))  # [*, H, Q, C']
        q_ext[..., :c] = q
        q_ext[..., c] = 1.0
        # Hard-masked keys (bias <= -1e8) also get a zero key vector, so their logit is the
        # bias alone: exactly equal across keys, whatever the kernel's summation order.
        keep = (key_bias > _HARD_MASK).to(k.dtype)
        k_ext = k.new_zeros((*batch, h_all, n_k, c_ext))  # [*, H, K, C']
        torch.mul(k, keep, out=k_ext[..., :c])
        k_ext[..., c:c + 1] = key_bias
        q, k = q_ext, k_ext
    else:
        pad_c = (-c) % _ALIGN
        if pad_c and q.is_cuda:  # zero channels keep the fused kernels eligible
            q = F.pad(q, (0, pad_c))
            k = F.pad(k, (0, pad_c))

    qf = _flatten_batch(q, batch)  # [B, H, Q, C']
    kf = _flatten_batch(k.expand(*k.shape[:-3], h_all, *k.shape[-2:]), batch)  # [B, H, K, C']
    vf = _flatten_batch(v.expand(*v.shape[:-3], h_all, *v.shape[-2:]), batch)  # [B, H, K, C_v]
    attn_mask = None
    if mask is not None:
        mask = mask.reshape((1,) * max(0, 4 - mask.dim()) + tuple(mask.shape))
        mask = _aligned_mask(mask, (*batch, h_all, n_q, n_k))
        attn_mask = mask.reshape(-1, h_all, n_q, n_k)  # [B, H, Q, K]
    out = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=attn_mask, scale=1.0)
    return out.reshape(*batch, h_all, n_q, v.shape[-1])  # [*, H, Q, C_v]


def layer_norm(x, weight, bias, eps=1e-5):
    """Native LayerNorm in ``x``'s dtype (fp32 statistics inside the kernel for bf16/fp16)."""
    w = weight.to(x.dtype) if weight is not None else None
    b = bias.to(x.dtype) if bias is not None else None
    return F.layer_norm(x, x.shape[-1:], w, b, eps)
