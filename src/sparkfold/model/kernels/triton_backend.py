"""The ``triton`` backend: Triton kernels, CUDA only (the CPU only under Triton's interpreter).

* ``attention``: softmax attention with the key-mask and pair biases fused into one
  flash-attention-style kernel (``triton_attention``);
* ``layer_norm``: one read, one write, fp32 statistics, reading transposed views in place
  (``triton_layer_norm``); ``contiguous``: the same row addressing as a dense copy;
* ``sigmoid_gate``: the triangle projections' gating in one pass (``triton_gate``);
* ``outer_product_update``: the outer product mean's update as a cuBLAS GEMM and one Triton
  GEMM that reads its output in place, fused with the bias, the division and the add
  (``triton_opm``);
* ``triangle_multiplication``: Triton layout transposes around cuBLAS GEMMs
  (``triton_triangle``);
* ``triangle_update``: the whole triangle multiplicative update as two fused kernels around
  cuBLAS's GEMM (``triton_trimul``).

Operations it does not provide fall back to the reference; under ``kernels="auto"`` the
dispatcher asks the next backend (``sdpa``) first.
"""

import functools

import torch

from sparkfold.model import kernels as _kernels
from sparkfold.model.kernels.triton_attention import attention, interpreting
from sparkfold.model.kernels.triton_gate import sigmoid_gate
from sparkfold.model.kernels.triton_layer_norm import (
    _MAX_C,
    contiguous,
    layer_norm,
    triton_importable,
)
from sparkfold.model.kernels.triton_opm import outer_product_update
from sparkfold.model.kernels.triton_triangle import triangle_multiplication
from sparkfold.model.kernels.triton_trimul import triangle_update

__all__ = ["attention", "contiguous", "is_available", "layer_norm", "outer_product_update",
           "sigmoid_gate", "supports",
           "triangle_multiplication", "triangle_update"]


@functools.lru_cache(maxsize=1)
def _cuda() -> bool:
    return torch.cuda.is_available()


def is_available() -> bool:
    """Triton importable and a CUDA device present (or Triton's CPU interpreter switched on)."""
    return triton_importable() and (_cuda() or interpreting())


def supports(op: str, dtype: torch.dtype, device: torch.device, **info) -> bool:
    """Attention, LayerNorm (≤ 8192 channels), row copies, triangle multiplication, the fused
    triangle update and the outer product update on CUDA.

    bf16/fp16 always; fp32 only when ``kernels="triton"`` is explicit (under ``auto`` the fp32
    path stays exactly the reference). On the CPU only attention, the gate, the triangle
    update and the outer product update, only when explicit and only under Triton's
    interpreter (the CPU tests of the kernels).
    """
    if op not in ("attention", "layer_norm", "triangle_multiplication", "contiguous",
                  "sigmoid_gate", "triangle_update", "outer_product_update"):
        return False
    explicit = _kernels.current_backend() == "triton"
    if device.type != "cuda":
        return (op in ("attention", "sigmoid_gate", "triangle_update", "outer_product_update")
                and device.type == "cpu" and explicit and interpreting())
    shape = info.get("shape")
    if op == "layer_norm" and shape is not None and (len(shape) == 0 or shape[-1] > _MAX_C):
        return False
    if dtype in (torch.bfloat16, torch.float16):
        return True
    return dtype == torch.float32 and explicit
