"""Restrained Amber99sb minimisation with OpenMM and AF2's violation loop.

AF2/OpenFold procedure (``amber_minimize.run_pipeline``), per outer iteration:

1. clean up: PDBFixer adds missing heavy atoms and re-places all hydrogens (pH 7);
2. build an ``amber99sb.xml`` system without solvent, hydrogen-bond lengths constrained;
3. restrain every heavy atom outside the excluded residues to its position at the start of this
   iteration with ``0.5 * k * |x - x0|^2``;
4. minimise with L-BFGS (``LocalEnergyMinimizer``) to the force tolerance;
5. check structural violations; residues with violations join the excluded set (their atoms are
   no longer restrained). Repeat while violations remain, at most ``max_outer_iterations``.

Units: ``stiffness`` in kcal/mol/Å², ``tolerance`` in kJ/mol/nm (OpenMM's unit for the force
tolerance), energies reported in kcal/mol.
"""

import dataclasses
import logging
from collections.abc import Iterable

import numpy as np

from sparkfold.relax import cleanup
from sparkfold.relax.errors import RelaxDependencyError, RelaxError
from sparkfold.relax.pdb_utils import Residue
from sparkfold.relax.violations import Violations, find_violations

logger = logging.getLogger(__name__)

#: Platforms tried in order by ``platform="auto"``.
AUTO_PLATFORMS = ("CUDA", "OpenCL", "CPU")
#: Force groups: Amber terms in group 0, the restraint in group 1 (energies exclude it).
_RESTRAINT_GROUP = 1


def import_openmm():
    """``(openmm, openmm.app, openmm.unit)``, or :class:`RelaxDependencyError`."""
    try:
        import openmm
        from openmm import app, unit
    except ImportError:
        raise RelaxDependencyError("openmm") from None
    return openmm, app, unit


@dataclasses.dataclass(frozen=True)
class LoopResult:
    """Output of :func:`minimize_with_violation_loop`.

    Attributes:
        topology: OpenMM topology of the final structure (hydrogens included).
        positions: Final positions in Å, ``[num_atoms, 3]``.
        residues: Final heavy atoms per residue (input order), positions in Å.
        initial_energy: Amber potential energy (kcal/mol, restraints excluded) of the cleaned
            input, before the first minimisation.
        final_energy: Amber potential energy after the last minimisation.
        iterations: Outer iterations run.
        attempts: Minimisation attempts summed over iterations.
        excluded: Residue indices left unrestrained in the last iteration.
        added_atoms: Heavy atoms PDBFixer added in the first cleanup.
        violations: Violations of the final structure.
        platform: OpenMM platform name used.
    """

    topology: object
    positions: np.ndarray
    residues: tuple[Residue, ...]
    initial_energy: float
    final_energy: float
    iterations: int
    attempts: int
    excluded: tuple[int, ...]
    added_atoms: tuple[str, ...]
    violations: Violations
    platform: str


def _template_error(
    err: Exception, residues: tuple[Residue, ...], topology, force_field
) -> RelaxError:
    """Turn OpenMM's "No template found for residue ..." into a message naming the residue."""
    try:
        unmatched = list(force_field.getUnmatchedResidues(topology))
    except Exception:  # noqa: BLE001 - only used to improve the message
        unmatched = []
    labels = [residues[r.index].label for r in unmatched if r.index < len(residues)]
    # OpenMM's first two sentences say what is wrong ("No template found for residue <index>
    # (<name>).  <why>"); the rest is a link to its FAQ. The index is replaced by our label.
    sentences = [part.strip() for part in str(err).split(".  ") if part.strip()]
    if len(sentences) > 1 and sentences[0].startswith("No template found"):
        detail = f"no template found. {sentences[1].rstrip('.')}"
    else:
        detail = (sentences[0] if sentences else type(err).__name__).rstrip(".")
    if labels:
        where = f"residue {labels[0]}" + (
            f" (and {len(labels) - 1} more)" if len(labels) > 1 else ""
        )
    else:
        where = "a residue"
    return RelaxError(
        f"the Amber force field cannot parametrise {where}: {detail}",
        fix="check the residue for missing or misnamed atoms, or delete it",
    )


def build_system(
    topology, residues: tuple[Residue, ...], positions_nm, stiffness: float, excluded: Iterable[int]
):
    """Amber99sb system with heavy-atom restraints (group 1) to ``positions_nm``.

    Args:
        topology: OpenMM topology (residue order = ``residues``).
        residues: The residues, for error messages.
        positions_nm: Reference positions, ``[num_atoms, 3]`` in nm.
        stiffness: Restraint constant in kcal/mol/Å² (0 disables restraints).
        excluded: Residue indices whose atoms are not restrained.
    """
    openmm, app, _ = import_openmm()
    force_field = app.ForceField("amber99sb.xml")
    try:
        system = force_field.createSystem(topology, constraints=app.HBonds)
    except ValueError as err:
        raise _template_error(err, residues, topology, force_field) from None
    if stiffness > 0:
        excluded = set(excluded)
        force = openmm.CustomExternalForce("0.5 * k * ((x - x0)^2 + (y - y0)^2 + (z - z0)^2)")
        # kcal/mol/Å² -> kJ/mol/nm²: x 4.184 x 100.
        force.addGlobalParameter("k", stiffness * 4.184 * 100.0)
        for name in ("x0", "y0", "z0"):
            force.addPerParticleParameter(name)
        for atom in topology.atoms():
            if atom.residue.index in excluded or atom.element is None:
                continue
            if atom.element.symbol in ("H", "D"):
                continue
            force.addParticle(atom.index, [float(v) for v in positions_nm[atom.index]])
        force.setForceGroup(_RESTRAINT_GROUP)
        system.addForce(force)
    return system


def select_platforms(platform: str, use_gpu: bool | None) -> tuple[str, ...]:
    """Platform names to try, in order.

    Args:
        platform: ``"auto"`` or an OpenMM platform name (``"CUDA"``, ``"OpenCL"``, ``"CPU"``,
            ``"Reference"``).
        use_gpu: AF2-style switch: ``True`` = CUDA then OpenCL, ``False`` = CPU, ``None`` =
            decided by ``platform``.

    Raises:
        ValueError: ``use_gpu`` contradicts an explicit ``platform``.
    """
    gpu = ("CUDA", "OpenCL")
    if platform == "auto":
        if use_gpu is None:
            return AUTO_PLATFORMS
        return gpu if use_gpu else ("CPU",)
    if use_gpu is not None and use_gpu != (platform in gpu):
        raise ValueError(f"use_gpu={use_gpu} contradicts platform={platform!r}; pass only one")
    return (platform,)


def _make_simulation(topology, system, candidates: tuple[str, ...], device_index: int | None):
    """A Simulation on the first platform of ``candidates`` that works, and its name."""
    openmm, app, _ = import_openmm()
    available = [
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    ]
    failures = []
    for name in candidates:
        if name not in available:
            failures.append(f"{name}: not installed")
            continue
        platform = openmm.Platform.getPlatformByName(name)
        properties = {}
        if device_index is not None and name in ("CUDA", "OpenCL"):
            properties["DeviceIndex"] = str(device_index)
        integrator = openmm.LangevinIntegrator(0, 0.01, 0.0)  # never stepped; AF2's choice
        try:
            simulation = app.Simulation(topology, system, integrator, platform, properties)
            return simulation, name
        except openmm.OpenMMException as err:  # the device or driver is unusable
            failures.append(
                f"{name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
            )
    fix = (
        "install OpenMM's CUDA plugin (pip install 'openmm[cuda13]', or 'openmm[cuda12]' for a "
        "CUDA 12 driver), or pass platform='CPU'"
        if "CUDA" in candidates
        else f"choose one of the installed platforms: {', '.join(available)}"
    )
    raise RelaxError(f"no usable OpenMM platform ({'; '.join(failures)})", fix=fix)


def _energy_kcal(simulation, groups: set[int]) -> float:
    _, _, unit = import_openmm()
    state = simulation.context.getState(getEnergy=True, groups=groups)
    return state.getPotentialEnergy().value_in_unit(unit.kilocalorie_per_mole)


def minimize_once(
    topology,
    system,
    positions_nm: np.ndarray,
    *,
    tolerance: float,
    max_iterations: int,
    platforms: tuple[str, ...],
    device_index: int | None,
    max_attempts: int,
) -> tuple[np.ndarray, float, float, int, str]:
    """One restrained minimisation.

    Returns:
        ``(positions_nm, initial_energy, final_energy, attempts, platform)``; energies in
        kcal/mol, Amber terms only.
    """
    openmm, _, unit = import_openmm()
    simulation, platform = _make_simulation(topology, system, platforms, device_index)
    last_error = None
    for attempt in range(1, max_attempts + 1):
        # AF2 retries failed minimisations (GPU runs are not bit-reproducible).
        simulation.context.setPositions(positions_nm * unit.nanometer)
        initial = _energy_kcal(simulation, {0})
        try:
            simulation.minimizeEnergy(
                tolerance=tolerance * unit.kilojoule_per_mole / unit.nanometer,
                maxIterations=max_iterations,
            )
        except openmm.OpenMMException as err:  # e.g. NaN coordinates
            last_error = err
            logger.info("minimisation attempt %d on %s failed: %s", attempt, platform, err)
            continue
        state = simulation.context.getState(getPositions=True)
        positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        final = _energy_kcal(simulation, {0})
        if not np.all(np.isfinite(positions)) or not np.isfinite(final):
            last_error = RuntimeError("non-finite energy or positions")
            continue
        return positions, initial, final, attempt, platform
    raise RelaxError(
        f"energy minimisation failed after {max_attempts} attempts on {platform}: {last_error}",
        fix="check the input for overlapping atoms, or try platform='CPU'",
    )


def _heavy_residues(
    topology, positions_angstrom: np.ndarray, like: tuple[Residue, ...]
) -> tuple[Residue, ...]:
    """Heavy atoms of every topology residue as :class:`Residue` records (ids from ``like``)."""
    out = []
    for residue, ref in zip(topology.residues(), like):
        names, elements, index = [], [], []
        for atom in residue.atoms():
            symbol = atom.element.symbol.upper() if atom.element is not None else ""
            if symbol in ("H", "D"):
                continue
            names.append(atom.name)
            elements.append(symbol)
            index.append(atom.index)
        out.append(
            dataclasses.replace(
                ref,
                atom_names=tuple(names),
                elements=tuple(elements),
                positions=positions_angstrom[index],
                b_factors=np.zeros(len(index)),
            )
        )
    return tuple(out)


def minimize_with_violation_loop(
    residues: tuple[Residue, ...],
    connected: np.ndarray,
    *,
    stiffness: float,
    tolerance: float,
    max_iterations: int,
    max_outer_iterations: int,
    exclude_residues: Iterable[int] = (),
    platform: str = "auto",
    use_gpu: bool | None = None,
    device_index: int | None = None,
    max_attempts: int = 100,
) -> LoopResult:
    """Run AF2's iterative restrained minimisation (see the module docstring).

    Args:
        residues: Standard residues, heavy atoms only (from :func:`cleanup.standardize`).
        connected: ``[N - 1]`` peptide-bond flags.
        stiffness: Restraint constant, kcal/mol/Å².
        tolerance: L-BFGS force tolerance, kJ/mol/nm.
        max_iterations: L-BFGS iteration limit per minimisation (0 = until converged).
        max_outer_iterations: Limit on violation-loop iterations (at least one runs).
        exclude_residues: Residue indices never restrained.
        platform: ``"auto"`` or an OpenMM platform name.
        use_gpu: See :func:`select_platforms`.
        device_index: GPU index for CUDA/OpenCL (``None``: OpenMM's default).
        max_attempts: Minimisation attempts per iteration before giving up.

    Returns:
        The :class:`LoopResult`.
    """
    candidates = select_platforms(platform, use_gpu)
    excluded = {int(i) for i in exclude_residues}
    current = residues
    initial_energy = None
    attempts_total = 0
    added_atoms: tuple[str, ...] = ()
    iteration = 0
    while True:
        iteration += 1
        topology, positions, added = cleanup.fix_with_pdbfixer(current, connected)
        if iteration == 1:
            added_atoms = added
        _, _, unit = import_openmm()
        positions_nm = np.asarray(positions.value_in_unit(unit.nanometer), dtype=np.float64)
        system = build_system(topology, residues, positions_nm, stiffness, excluded)
        new_nm, e_init, e_final, attempts, used = minimize_once(
            topology,
            system,
            positions_nm,
            tolerance=tolerance,
            max_iterations=max_iterations,
            platforms=candidates,
            device_index=device_index,
            max_attempts=max_attempts,
        )
        # Once a platform works, keep it for the next iterations.
        candidates = (used,)
        attempts_total += attempts
        if initial_energy is None:
            initial_energy = e_init
        positions_a = new_nm * 10.0
        current = _heavy_residues(topology, positions_a, residues)
        violations = find_violations(current, connected)
        logger.info(
            "relax iteration %d on %s: energy %.1f -> %.1f kcal/mol, %d violating residues, "
            "%d excluded",
            iteration,
            used,
            e_init,
            e_final,
            violations.num_violating_residues,
            len(excluded),
        )
        if violations.num_violating_residues == 0 or iteration >= max_outer_iterations:
            break
        excluded |= set(violations.residues)
    return LoopResult(
        topology=topology,
        positions=positions_a,
        residues=current,
        initial_energy=float(initial_energy),
        final_energy=float(e_final),
        iterations=iteration,
        attempts=attempts_total,
        excluded=tuple(sorted(excluded)),
        added_atoms=added_atoms,
        violations=violations,
        platform=used,
    )
