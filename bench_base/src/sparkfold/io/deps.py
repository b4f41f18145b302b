"""Optional dependencies of the output writers, imported only when a writer needs them."""

import importlib
from types import ModuleType

from sparkfold.errors import SparkfoldError

__all__ = ["MissingDependencyError", "require"]


class MissingDependencyError(SparkfoldError):
    """An optional package needed for this output is not installed."""


def require(module: str, *, package: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the package to install.

    Args:
        module: Dotted module name, e.g. ``"matplotlib.figure"``.
        package: The PyPI package that provides it, e.g. ``"matplotlib"``.
        purpose: What needs it, e.g. ``"plotting pLDDT"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the '{package}' package, which is not installed ({exc})",
            fix=f"pip install 'sparkfold[report]' (or pip install {package})",
        ) from None
