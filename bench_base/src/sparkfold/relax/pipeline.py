"""``relax_pdb``: AF2/OpenFold Amber relaxation of one PDB structure, with a report."""

import dataclasses
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np

from sparkfold.io.atomic import atomic_write
from sparkfold.relax.cleanup import Alterations
from sparkfold.relax.errors import RelaxError
from sparkfold.relax.pdb_utils import Residue, Structure, format_pdb, parse_pdb
from sparkfold.relax.violations import Violations, find_violations

#: OpenFold's relax settings (``config.relax``).
DEFAULT_STIFFNESS = 10.0  # kcal/mol/Å²
# DEVIATION: AF2's run script passes 2.39 (meant as 10 kJ/mol in kcal/mol); OpenFold passes 10.0.
# Both reach OpenMM, whose force tolerance is in kJ/mol/nm; we follow OpenFold.
DEFAULT_TOLERANCE = 10.0  # kJ/mol/nm
DEFAULT_MAX_ITERATIONS = 0  # L-BFGS steps per minimisation, 0 = until converged
DEFAULT_MAX_OUTER_ITERATIONS = 20
#: AF2's value for the same setting, for callers that want its behaviour.
AF2_TOLERANCE = 2.39

Platform = Literal["auto", "CUDA", "OpenCL", "CPU", "Reference"]


@dataclasses.dataclass(frozen=True)
class RelaxResult:
    """A relaxed structure and its report.

    Attributes:
        pdb: Relaxed PDB text (hydrogens included; B-factors copied from the input, i.e. pLDDT
            for predictions; the input's REMARK/PARENT lines kept).
        initial_energy: Amber99sb potential energy of the cleaned input, kcal/mol (the
            restraint term excluded).
        final_energy: Amber99sb potential energy after relaxation, kcal/mol.
        rmsd: Heavy-atom RMSD (Å) between input and relaxed atoms present in both, without
            superposition (restraints keep the frame).
        violations_before: Violations of the input.
        violations_after: Violations left after relaxation (AF2's remaining violations).
        platform: OpenMM platform that ran the minimisation (``"CUDA"``, ``"OpenCL"``, ``"CPU"``).
        seconds: Wall time of the whole relaxation.
        iterations: Outer (violation-loop) iterations run.
        attempts: Minimisation attempts summed over iterations.
        excluded_residues: 0-based indices of the protein residues left unrestrained at the end.
        alterations: What cleanup changed (replaced/removed residues, added atoms, chain breaks).
        settings: stiffness, tolerance, max_iterations, max_outer_iterations with their units.
    """

    pdb: str
    initial_energy: float
    final_energy: float
    rmsd: float
    violations_before: Violations
    violations_after: Violations
    platform: str
    seconds: float
    iterations: int
    attempts: int
    excluded_residues: tuple[int, ...]
    alterations: Alterations
    settings: dict

    def to_dict(self) -> dict:
        """The report as JSON-ready data (everything except the PDB text)."""
        return {
            "initial_energy_kcal_mol": self.initial_energy,
            "final_energy_kcal_mol": self.final_energy,
            "rmsd_angstrom": self.rmsd,
            "violations_before": self.violations_before.to_dict(),
            "violations_after": self.violations_after.to_dict(),
            "platform": self.platform,
            "seconds": self.seconds,
            "iterations": self.iterations,
            "attempts": self.attempts,
            "excluded_residues": list(self.excluded_residues),
            "alterations": self.alterations.to_dict(),
            "settings": dict(self.settings),
        }

    def write(self, path: str | os.PathLike) -> Path:
        """Write the relaxed PDB to ``path`` atomically (temporary file, then rename)."""
        return write_text_atomic(path, self.pdb)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (``io.atomic_write``)."""
    return atomic_write(path, text)


def _read_input(pdb: "str | os.PathLike") -> str:
    if isinstance(pdb, os.PathLike) or (isinstance(pdb, str) and "\n" not in pdb):
        path = Path(pdb)
        if not path.is_file():
            raise RelaxError(
                f"{str(path)!r} is neither PDB text nor an existing file",
                fix="pass the PDB text or the path of a PDB file",
            )
        return path.read_text()
    if isinstance(pdb, str):
        return pdb
    raise TypeError(f"relax_pdb takes PDB text or a path, not {type(pdb).__name__}")


def _rmsd(before: tuple[Residue, ...], after: tuple[Residue, ...]) -> float:
    sq, count = 0.0, 0
    for a, b in zip(before, after):
        for name, xyz in zip(a.atom_names, a.positions):
            other = b.atom(name)
            if other is not None:
                sq += float(np.sum((xyz - other) ** 2))
                count += 1
    return float(np.sqrt(sq / max(count, 1)))


def _b_factor_lookup(source: Residue):
    """Per-atom B-factor of the input residue, falling back to its CA (AF2 uses the CA value)."""
    by_name = dict(zip(source.atom_names, source.b_factors))
    if "SE" in by_name and "SD" not in by_name:
        by_name["SD"] = by_name["SE"]
    fallback = by_name.get("CA", float(np.mean(source.b_factors)) if len(source.b_factors) else 0.0)
    return lambda name: float(by_name.get(name, fallback))


def _relaxed_structure(
    topology, positions: np.ndarray, prepared, structure: Structure
) -> Structure:
    residues = []
    for residue, std, src in zip(
        topology.residues(), prepared.structure.residues, prepared.source_index
    ):
        lookup = _b_factor_lookup(structure.residues[src])
        atoms = list(residue.atoms())
        names = tuple(a.name for a in atoms)
        residues.append(
            Residue(
                chain_id=std.chain_id,
                number=std.number,
                insertion_code=std.insertion_code,
                name=std.name,
                hetero=False,
                atom_names=names,
                elements=tuple(
                    a.element.symbol.upper() if a.element is not None else "" for a in atoms
                ),
                positions=positions[[a.index for a in atoms]],
                b_factors=np.array([lookup(n) for n in names]),
            )
        )
    return Structure(residues=tuple(residues), header=structure.header)


def relax_pdb(
    pdb: "str | os.PathLike",
    *,
    stiffness: float = DEFAULT_STIFFNESS,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    max_outer_iterations: int = DEFAULT_MAX_OUTER_ITERATIONS,
    exclude_residues: Iterable[int] | None = None,
    platform: Platform = "auto",
    use_gpu: bool | None = None,
    device_index: int | None = None,
) -> RelaxResult:
    """Amber-relax one structure the AF2/OpenFold way (see :mod:`sparkfold.relax.amber`).

    Args:
        pdb: PDB text, or the path of a PDB file (first model is used).
        stiffness: Harmonic restraint constant on heavy atoms, kcal/mol/Å² (0 = unrestrained).
        tolerance: L-BFGS convergence tolerance on the force, kJ/mol/nm (OpenFold 10.0; AF2's
            value is :data:`AF2_TOLERANCE`).
        max_iterations: L-BFGS iteration limit per minimisation; 0 = run to convergence.
        max_outer_iterations: Limit on minimise-then-check iterations (>= 1).
        exclude_residues: 0-based indices of protein residues (file order, waters/ligands not
            counted) to leave unrestrained.
        platform: ``"auto"`` (CUDA, then OpenCL, then CPU) or an OpenMM platform name.
        use_gpu: AF2-style override: ``True`` = CUDA/OpenCL only, ``False`` = CPU.
        device_index: GPU index for the CUDA/OpenCL platform (default: OpenMM's choice).

    Returns:
        The :class:`RelaxResult`; ``result.platform`` names the platform used.

    Raises:
        RelaxError: The structure cannot be relaxed (the message names the residue).
        RelaxDependencyError: OpenMM or PDBFixer is missing (``pip install 'sparkfold[relax]'``).
        ValueError: Invalid settings.
    """
    from sparkfold.relax import amber, cleanup

    if stiffness < 0 or tolerance <= 0 or max_iterations < 0 or max_outer_iterations < 1:
        raise ValueError(
            "need stiffness >= 0, tolerance > 0, max_iterations >= 0 and "
            "max_outer_iterations >= 1; "
            f"got {stiffness}, {tolerance}, {max_iterations}, {max_outer_iterations}"
        )
    start = time.perf_counter()
    amber.import_openmm()  # fail fast with the install hint
    structure = parse_pdb(_read_input(pdb))
    prepared = cleanup.standardize(structure)
    residues = prepared.structure.residues
    excluded = sorted({int(i) for i in (exclude_residues or ())})
    bad = [i for i in excluded if not 0 <= i < len(residues)]
    if bad:
        raise ValueError(
            f"exclude_residues {bad} out of range for {len(residues)} protein residues"
        )
    before = find_violations(residues, prepared.connected)
    loop = amber.minimize_with_violation_loop(
        residues,
        prepared.connected,
        stiffness=stiffness,
        tolerance=tolerance,
        max_iterations=max_iterations,
        max_outer_iterations=max_outer_iterations,
        exclude_residues=excluded,
        platform=platform,
        use_gpu=use_gpu,
        device_index=device_index,
    )
    relaxed = _relaxed_structure(loop.topology, loop.positions, prepared, structure)
    alterations = dataclasses.replace(prepared.alterations, added_atoms=loop.added_atoms)
    return RelaxResult(
        pdb=format_pdb(relaxed),
        initial_energy=loop.initial_energy,
        final_energy=loop.final_energy,
        rmsd=_rmsd(residues, loop.residues),
        violations_before=before,
        violations_after=loop.violations,
        platform=loop.platform,
        seconds=time.perf_counter() - start,
        iterations=loop.iterations,
        attempts=loop.attempts,
        excluded_residues=loop.excluded,
        alterations=alterations,
        settings={
            "stiffness_kcal_mol_A2": stiffness,
            "tolerance_kj_mol_nm": tolerance,
            "max_iterations": max_iterations,
            "max_outer_iterations": max_outer_iterations,
        },
    )
