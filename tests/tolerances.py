"""One place for every comparison tolerance (see shared/golden/README.md, "Recommended tolerances").

Tolerances are scale-aware: ``|a - b| <= atol + rtol*|b|`` with ``atol = k * max(1, max|b|)``.
"""

import numpy as np
import torch

#: (rtol, k) per level, fp32.
MODULE = (1e-4, 1e-5)
STRUCTURE = (1e-4, 1e-4)  # structure_module, angle_resnet: 8 composed frame updates
MODEL = (1e-3, 1e-4)
MODEL_ANGLES = (1e-3, 5e-4)  # sm/angles, sm/unnormalized_angles in whole-model runs
PIPELINE_FLOAT = (0.0, 1e-6)  # derived float features (absolute, not scaled)
GEOMETRY_FROM_COORDS = (0.0, 1e-5)

#: bf16 against the fp32 reference, per module (scale-relative).
BF16_MODULE = (2e-2, 2e-2)


def assert_close_scaled(actual, expected, level=MODULE, name="", scaled=True):
    """Assert ``|a-b| <= atol + rtol|b|`` with ``atol = k*max(1, max|b|)`` (or ``k`` if not scaled).

    Reports the max and mean absolute error on failure.
    """
    rtol, k = level
    a = actual.detach().cpu().double() if isinstance(actual, torch.Tensor) else torch.as_tensor(
        np.asarray(actual), dtype=torch.float64)
    b = expected.detach().cpu().double() if isinstance(expected, torch.Tensor) else torch.as_tensor(
        np.asarray(expected), dtype=torch.float64)
    assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} != expected {tuple(b.shape)}"
    scale = max(1.0, float(b.abs().max())) if (scaled and b.numel()) else 1.0
    atol = k * scale
    diff = (a - b).abs()
    msg = (f"{name}: max abs err {float(diff.max()) if diff.numel() else 0:.3e}, "
           f"mean abs err {float(diff.mean()) if diff.numel() else 0:.3e}, atol {atol:.1e}, rtol {rtol:.0e}")
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=msg, equal_nan=False)
