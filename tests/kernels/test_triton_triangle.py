"""Triton-transposed triangle multiplication against the reference (GPU only; needs triton)."""

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


@pytest.mark.parametrize("shape", [(37, 37, 16), (2, 64, 64, 128), (1, 200, 200, 7)])
def test_transpose_last2(shape):
    _triton_ok()
    from sparkfold.model.kernels.triton_triangle import transpose_last2

    x = torch.randn(*shape, device="cuda").bfloat16()
    y = transpose_last2(x)
    assert torch.equal(y, x.transpose(-1, -2).contiguous())


@pytest.mark.parametrize("direction", ["outgoing", "incoming"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triangle_multiplication_matches_reference(direction, dtype):
    _triton_ok()
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(2, 45, 45, 32, generator=gen).cuda()
    b = torch.randn(2, 45, 45, 32, generator=gen).cuda()
    ref = reference.triangle_multiplication(a.double(), b.double(), direction).float()
    with kernels.use_backend("triton"):
        out = kernels.triangle_multiplication(a.to(dtype), b.to(dtype), direction)
    assert out.dtype == dtype and out.shape == ref.shape and out.is_contiguous()
    assert_close_scaled(out, ref, level=MODULE if dtype == torch.float32 else BF16_MODULE,
                        name=f"{direction} {dtype}")


def test_triangle_module_matches_reference_backend():
    _triton_ok()
    from sparkfold.model.pair import TriangleMultiplication

    torch.manual_seed(8)
    mod = TriangleMultiplication(32, 16, direction="incoming").cuda()
    for p in mod.parameters():
        torch.nn.init.normal_(p, std=0.2)
    z = torch.randn(40, 40, 32, device="cuda")
    mask = (torch.rand(40, 40, device="cuda") > 0.2).float()
    with torch.no_grad():
        with kernels.use_backend("reference"):
            ref = mod(z, mask=mask)
        with kernels.use_backend("triton"):
            out = mod(z, mask=mask)
            out_chunked = mod(z, mask=mask, chunk_size=7)
    assert_close_scaled(out, ref, level=MODULE, name="module")
    assert_close_scaled(out_chunked, ref, level=MODULE, name="module chunked")


def test_opcheck_transpose():
    _triton_ok()
    from sparkfold.model.kernels.triton_triangle import _transpose_op

    x = torch.randn(3, 40, 24, device="cuda", dtype=torch.bfloat16)
    torch.library.opcheck(_transpose_op, (x,), test_utils=("test_schema", "test_faketensor"))
