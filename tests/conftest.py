"""pytest configuration: GPU tests skip cleanly without a CUDA device."""

import pytest

from testutil import has_cuda


def pytest_collection_modifyitems(config, items):
    if has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
