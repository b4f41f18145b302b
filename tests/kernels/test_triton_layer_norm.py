"""The Triton LayerNorm against the reference (GPU only; needs triton)."""

import pytest
import torch
from tolerances import BF16_MODULE, MODULE, assert_close_scaled

from sparkfold.model import kernels
from sparkfold.model.kernels import reference

pytestmark = pytest.mark.gpu


def _triton_ok():
    from sparkfold.model.kernels.triton_backend import is_available

    if not is_available():
        pytest.skip("triton is not importable here")


@pytest.mark.parametrize("c", [64, 128, 256, 49])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_norm_matches_reference(c, dtype):
    _triton_ok()
    gen = torch.Generator().manual_seed(c)
    x = (2 * torch.randn(5, 37, c, generator=gen) - 1).cuda()
    w = (1 + 0.1 * torch.randn(c, generator=gen)).cuda()
    b = (0.1 * torch.randn(c, generator=gen)).cuda()
    ref = reference.layer_norm(x, w, b)
    with kernels.use_backend("triton"):
        out = kernels.layer_norm(x.to(dtype), w.to(dtype), b.to(dtype))
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.isfinite(out).all()
    assert_close_scaled(out, ref, level=MODULE if dtype == torch.float32 else BF16_MODULE,
                        name=f"c={c} {dtype}")


def test_layer_norm_non_contiguous_input():
    _triton_ok()
    x = torch.randn(16, 24, 128, device="cuda").transpose(0, 1)  # rows not uniformly strided
    w = torch.randn(128, device="cuda")
    b = torch.randn(128, device="cuda")
    with kernels.use_backend("triton"):
        out = kernels.layer_norm(x, w, b)
    assert_close_scaled(out, reference.layer_norm(x, w, b), level=MODULE, name="transposed")


def test_opcheck():
    _triton_ok()
    from sparkfold.model.kernels.triton_layer_norm import _layer_norm_op

    x = torch.randn(8, 128, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(128, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(128, device="cuda", dtype=torch.bfloat16)
    torch.library.opcheck(_layer_norm_op, (x, w, b, 1e-5),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("shape", [(33, 20, 128), (1, 17, 9, 64), (3, 5, 7, 256)])
def test_contiguous_rows_and_transposed_layer_norm(shape):
    """Transposed views (the column/ending-node layout) are read in place, not copied first."""
    _triton_ok()
    gen = torch.Generator().manual_seed(len(shape))
    base = torch.randn(*shape, generator=gen).cuda().bfloat16()
    view = base.transpose(-2, -3)
    with kernels.use_backend("triton"):
        dense = kernels.contiguous(view)
        assert dense.is_contiguous() and torch.equal(dense, view.contiguous())
        assert kernels.contiguous(base) is base
        odd = base[..., ::2, :, :]  # a view the two-level addressing cannot merge
        assert torch.equal(kernels.contiguous(odd.transpose(-2, -3)), odd.transpose(-2, -3).contiguous())
        w = torch.randn(shape[-1], generator=gen).cuda().bfloat16()
        b = torch.randn(shape[-1], generator=gen).cuda().bfloat16()
        out = kernels.layer_norm(view, w, b)
    assert out.is_contiguous()
    ref = reference.layer_norm(view.float(), w.float(), b.float())
    assert_close_scaled(out, ref, level=BF16_MODULE, name=str(shape))
