"""Errors raised by Amber relaxation (importable without OpenMM)."""

from sparkfold.errors import SparkfoldError

#: The install command named by every missing-dependency message.
INSTALL_HINT = "pip install 'sparkfold[relax]'"


class RelaxError(SparkfoldError):
    """A structure cannot be relaxed; the message names the residue and the fix.

    Callers that write predictions (``sparkfold predict --relax``) catch this error, log it and
    keep the unrelaxed file.
    """


class RelaxDependencyError(RelaxError, ImportError):
    """OpenMM or PDBFixer is not installed (also an ``ImportError`` for generic handlers)."""

    def __init__(self, package: str):
        super().__init__(
            f"Amber relaxation needs the {package!r} package, which is not installed",
            fix=f"{INSTALL_HINT} (installs openmm and pdbfixer from PyPI; no conda needed)",
        )
        self.name = package
