"""Amber relaxation (AF2/OpenFold procedure) with OpenMM and PDBFixer from PyPI, no conda.

Install the optional dependencies with ``pip install 'sparkfold[relax]'``. Nothing here imports
OpenMM until a structure is relaxed; a missing package raises :class:`RelaxDependencyError`.

Public API (attributes are loaded lazily):

* :func:`relax_pdb` — relax PDB text or a PDB file, returns a :class:`RelaxResult`.
* :class:`RelaxResult` — relaxed PDB text + report (energies, RMSD, violations, platform, time).
* :func:`find_violations`, :class:`Violations` — AF2's structural violation checks in numpy.
* :class:`RelaxError`, :class:`RelaxDependencyError` — user-facing errors
  (subclasses of :class:`sparkfold.errors.SparkfoldError`).
* :func:`write_text_atomic` — temp-file-and-rename writer used for relaxed files and reports.
* Defaults: ``DEFAULT_STIFFNESS`` (10 kcal/mol/Å²), ``DEFAULT_TOLERANCE`` (10 kJ/mol/nm,
  OpenFold), ``AF2_TOLERANCE`` (2.39), ``DEFAULT_MAX_ITERATIONS`` (0 = to convergence),
  ``DEFAULT_MAX_OUTER_ITERATIONS`` (20).
"""

from sparkfold.relax.errors import INSTALL_HINT, RelaxDependencyError, RelaxError

__all__ = [
    "AF2_TOLERANCE",
    "DEFAULT_MAX_ITERATIONS",
    "DEFAULT_MAX_OUTER_ITERATIONS",
    "DEFAULT_STIFFNESS",
    "DEFAULT_TOLERANCE",
    "INSTALL_HINT",
    "RelaxDependencyError",
    "RelaxError",
    "RelaxResult",
    "Violations",
    "find_violations",
    "relax_pdb",
    "write_text_atomic",
]

_LAZY = {
    "relax_pdb": "pipeline",
    "RelaxResult": "pipeline",
    "write_text_atomic": "pipeline",
    "AF2_TOLERANCE": "pipeline",
    "DEFAULT_STIFFNESS": "pipeline",
    "DEFAULT_TOLERANCE": "pipeline",
    "DEFAULT_MAX_ITERATIONS": "pipeline",
    "DEFAULT_MAX_OUTER_ITERATIONS": "pipeline",
    "find_violations": "violations",
    "Violations": "violations",
}


def __getattr__(name):
    # PEP 562: load submodules on first use so that ``import sparkfold.relax`` stays cheap.
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"sparkfold.relax.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'sparkfold.relax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
