"""pytest configuration: shape annotations are checked at run time; GPU tests skip without CUDA."""

import pytest

#: Modules whose shape annotations (sparkfold.typing) are checked at run time in every test.
TYPED_MODULES = [
    "sparkfold.model.pair",
    "sparkfold.model.msa",
    "sparkfold.model.evoformer",
    "sparkfold.model.extra_msa",
    "sparkfold.model.embedders",
    "sparkfold.model.template",
]

try:  # STYLE: runtime shape checks in tests only, never a switch in library code.
    import beartype  # noqa: F401
    from jaxtyping import install_import_hook

    install_import_hook(TYPED_MODULES, "testutil.shape_checker")
except ImportError:  # the dev extra brings both; without them the annotations stay unchecked
    pass

from testutil import has_cuda

if not has_cuda():
    # Without a GPU, Triton kernels run in Triton's CPU interpreter (tests of the attention
    # kernel); it must be switched on before Triton is first imported.
    import os

    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
