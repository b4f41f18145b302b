"""The Triton gate ``mask · σ(g) · p`` against the reference (CPU interpreter; GPU marked)."""

import pytest
import torch
from tolerances import BF16_MODULE, MODULE, assert_close_scaled

from sparkfold.model import kernels
from sparkfold.model.kernels import reference

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _inputs(device, dtype, c=6, n=37, batch=(2,)):
    gen = torch.Generator().manual_seed(c * n)
    p = torch.randn(*batch, 4 * c, n, n, generator=gen).to(device, dtype)  # [*, 4C, I, J]
    mask = (torch.rand(*batch, 1, n, n, generator=gen) > 0.2).to(device, dtype)
    return p, mask


@pytest.mark.parametrize("device", DEVICES)
def test_gate_into_row_slices_matches_reference(triton_on, device):
    """The triangle projections' use: channel slices of one projection, written into row slices
    of full channel-first buffers."""
    dtypes = [torch.float32, torch.bfloat16 if device == "cuda" else torch.float16]
    for dtype in dtypes:
        p, mask = _inputs(device, dtype)
        c, n = p.shape[-3] // 4, p.shape[-1]
        ref = reference.sigmoid_gate(p[:, :c].clone(), p[:, c:2 * c].clone(), mask)
        ref32 = reference.sigmoid_gate(p[:, :c].float(), p[:, c:2 * c].float(), mask.float())
        full = torch.full((2, c, n, n), float("nan"), device=device, dtype=dtype)
        with kernels.use_backend("triton"):
            for i in range(0, n, 16):
                rows = slice(i, i + 16)
                out = full[:, :, rows, :]
                got = kernels.sigmoid_gate(p[:, :c, rows], p[:, c:2 * c, rows], mask[:, :, rows], out=out)
                assert got is out
            whole = kernels.sigmoid_gate(p[:, :c], p[:, c:2 * c], mask)
        assert torch.isfinite(full).all()  # every row written
        level = MODULE if dtype == torch.float32 else BF16_MODULE
        assert_close_scaled(full, ref32, level=level, name=f"slices {dtype}")
        assert_close_scaled(whole, ref32, level=level, name=f"whole {dtype}")
        # one rounding instead of two: never further from fp32 than the reference
        assert (whole.float() - ref32).abs().max() <= (ref.float() - ref32).abs().max() + 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_gate_layouts_it_cannot_address_fall_back(triton_on, device):
    p, mask = _inputs(device, torch.float32, batch=(3,))
    c = p.shape[-3] // 4
    pt = p.transpose(-1, -2)  # last two axes not dense
    with kernels.use_backend("triton"):
        got = kernels.sigmoid_gate(pt[:, :c], pt[:, c:2 * c], mask)
    assert_close_scaled(got, reference.sigmoid_gate(pt[:, :c], pt[:, c:2 * c], mask),
                        level=MODULE, name="fallback")
