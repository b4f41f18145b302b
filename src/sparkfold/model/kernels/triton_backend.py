"""The ``triton`` backend: Triton kernels (LayerNorm; triangle multiplication with Triton layout
transposes around cuBLAS GEMMs), CUDA only.

Operations it does not provide fall back to the reference; under ``kernels="auto"`` the
dispatcher asks the next backend (``sdpa``) first.
"""

import functools

import torch

from sparkfold.model import kernels as _kernels
from sparkfold.model.kernels.triton_layer_norm import _MAX_C, layer_norm, triton_importable
from sparkfold.model.kernels.triton_triangle import triangle_multiplication

__all__ = ["is_available", "layer_norm", "supports", "triangle_multiplication"]


@functools.lru_cache(maxsize=1)
def is_available() -> bool:
    """Triton importable and a CUDA device present."""
    return triton_importable() and torch.cuda.is_available()


def supports(op: str, dtype: torch.dtype, device: torch.device, **info) -> bool:
    """LayerNorm (≤ 8192 channels) and triangle multiplication on CUDA.

    bf16/fp16 always; fp32 only when ``kernels="triton"`` is explicit (under ``auto`` the fp32
    path stays exactly the reference).
    """
    if op not in ("layer_norm", "triangle_multiplication") or device.type != "cuda":
        return False
    shape = info.get("shape")
    if op == "layer_norm" and shape is not None and (len(shape) == 0 or shape[-1] > _MAX_C):
        return False
    if dtype in (torch.bfloat16, torch.float16):
        return True
    return dtype == torch.float32 and _kernels.current_backend() == "triton"
