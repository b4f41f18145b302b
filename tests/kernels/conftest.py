"""Fixtures shared by the kernel tests."""

import pytest

from sparkfold.model import kernels


@pytest.fixture
def triton_on(request):
    """Triton importable; on the CPU, its interpreter on (tests/conftest.py, machines without
    a GPU: it must be set before Triton is imported)."""
    pytest.importorskip("triton", reason="triton is not installed (pip install triton)")
    from sparkfold.model.kernels.triton_attention import interpreting

    device = request.node.callspec.params.get("device", "cpu")
    if device == "cpu" and not interpreting():
        pytest.skip("the CPU case runs under TRITON_INTERPRET=1, set only without a GPU")
    kernels._RESOLVED.clear()  # the dispatch cache keys on the backend, not the interpreter
    yield device
    kernels._RESOLVED.clear()
