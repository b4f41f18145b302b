"""Structural violation checks (bond lengths, bond angles, clashes) in numpy.

The checks are AF2's ``find_structural_violations`` as the relax loop uses them (violation
tolerance factor 12, clash overlap tolerance 1.5 Å), on heavy atoms in atom14 layout:

* between residues: the C–N peptide bond length and the CA–C–N / C–N–CA angles of bonded
  neighbours (ideal values and standard deviations from ``constants.between_res_*``), flagged
  when the error exceeds 12 standard deviations;
* between residues: clashes, heavy atoms of different residues closer than the sum of their
  van der Waals radii minus 1.5 Å (the peptide C–N pair and SG–SG pairs excluded);
* within residues: every atom pair against ``make_atom14_dists_bounds`` (bonds and 1–3
  "virtual bonds" from ``stereo_chemical_props.txt`` ± 12 standard deviations; other pairs
  clash below the van der Waals sum minus 1.5 Å).

A residue is "violating" when any of its atoms is part of a violation; the relax loop removes
the restraints of violating residues and minimises again.
"""

import dataclasses
import functools
import itertools
from collections.abc import Sequence

import numpy as np

from sparkfold import constants as rc
from sparkfold.relax.pdb_utils import Residue

#: AF2/OpenFold relax settings for the checks.
VIOLATION_TOLERANCE_FACTOR = 12.0
CLASH_OVERLAP_TOLERANCE = 1.5
_BOUNDS_KEY = "make_atom14_dists_bounds(overlap_tolerance=1.5,bond_length_tolerance_factor=12.0)"
_EPS = 1e-6
# Within-residue pair categories.
_PAIR_NONE, _PAIR_BOND, _PAIR_ANGLE, _PAIR_NONBONDED = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Violations:
    """Violation counts of one structure.

    Attributes:
        bonds: Bond lengths outside tolerance (peptide C–N bonds + bonds within residues).
        angles: Bond angles outside tolerance (CA–C–N and C–N–CA between residues, 1–3
            distances within residues).
        clashes: Clashing heavy-atom pairs (between and within residues).
        residues: 0-based indices of residues with any violation (AF2's per-residue mask).
        labels: The same residues as labels, e.g. ``"A 45 GLY"``.
        num_residues: Number of residues checked.
    """

    bonds: int
    angles: int
    clashes: int
    residues: tuple[int, ...]
    labels: tuple[str, ...]
    num_residues: int

    @property
    def total(self) -> int:
        """Number of individual violations (bonds + angles + clashes)."""
        return self.bonds + self.angles + self.clashes

    @property
    def num_violating_residues(self) -> int:
        """AF2's ``remaining_violations_count``."""
        return len(self.residues)

    def to_dict(self) -> dict:
        return {
            "bonds": self.bonds,
            "angles": self.angles,
            "clashes": self.clashes,
            "total": self.total,
            "num_violating_residues": self.num_violating_residues,
            "residues": list(self.labels),
        }


@functools.lru_cache(maxsize=1)
def _tables() -> dict[str, np.ndarray]:
    """atom14 tables: restype index, slot names, radii, within-residue bounds and categories."""
    names = [rc.restype_1to3[a] for a in rc.restypes] + ["UNK"]
    atom14_names = [rc.restype_name_to_atom14_names[n] for n in names]
    radius = np.zeros((21, 14))
    category = np.zeros((21, 14, 14), dtype=np.int8)
    bonds = rc.tables()["stereo_chemical_props.residue_bonds"]
    virtual = rc.tables()["stereo_chemical_props.residue_virtual_bonds"]
    for r, resname in enumerate(names):
        slots = atom14_names[r]
        for s, atom in enumerate(slots):
            if atom:
                radius[r, s] = rc.van_der_waals_radius[atom[0]]
                for t, other in enumerate(slots):
                    if other and t != s:
                        category[r, s, t] = _PAIR_NONBONDED
        for table, kind in ((bonds, _PAIR_BOND), (virtual, _PAIR_ANGLE)):
            for entry in table.get(resname, []):
                s, t = slots.index(entry["atom1_name"]), slots.index(entry["atom2_name"])
                category[r, s, t] = category[r, t, s] = kind
    bounds = rc.tables()[_BOUNDS_KEY]
    return {
        "names": names,
        "atom14_names": atom14_names,
        "radius": radius,
        "category": category,
        "lower": np.asarray(bounds["lower_bound"], dtype=np.float64),
        "upper": np.asarray(bounds["upper_bound"], dtype=np.float64),
    }


def to_atom14(residues: Sequence[Residue]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heavy atoms of standard residues in atom14 layout.

    Args:
        residues: Standard amino acids (atoms not in the residue's atom14 slots, e.g. OXT or
            hydrogens, are ignored).

    Returns:
        ``(aatype [N], positions [N, 14, 3], mask [N, 14])``; aatype 20 for an unknown name.
    """
    tables = _tables()
    index = {name: i for i, name in enumerate(tables["names"])}
    n = len(residues)
    aatype = np.full(n, 20, dtype=np.int64)
    positions = np.zeros((n, 14, 3))
    mask = np.zeros((n, 14), dtype=bool)
    for i, res in enumerate(residues):
        aatype[i] = index.get(res.name, 20)
        slots = tables["atom14_names"][aatype[i]]
        for name, xyz in zip(res.atom_names, res.positions):
            if name and name in slots:
                s = slots.index(name)
                positions[i, s] = xyz
                mask[i, s] = True
    return aatype, positions, mask


def _between_residue_geometry(aatype, pos, mask, connected, tol):
    """Peptide-bond length and angle violations; per-residue masks of both."""
    pro = rc.restype_order["P"]
    this_ca, this_c = pos[:-1, 1], pos[:-1, 2]
    next_n, next_ca = pos[1:, 0], pos[1:, 1]
    bond_mask = connected & mask[:-1, 2] & mask[1:, 0]
    angle_mask_1 = bond_mask & mask[:-1, 1]  # CA-C-N
    angle_mask_2 = bond_mask & mask[1:, 1]  # C-N-CA

    c_n = np.sqrt(_EPS + np.sum((this_c - next_n) ** 2, axis=-1))  # [N-1]
    next_is_pro = aatype[1:] == pro
    length = np.where(
        next_is_pro, rc.between_res_bond_length_c_n[1], rc.between_res_bond_length_c_n[0]
    )
    stddev = np.where(
        next_is_pro,
        rc.between_res_bond_length_stddev_c_n[1],
        rc.between_res_bond_length_stddev_c_n[0],
    )
    bond_bad = bond_mask & (np.sqrt(_EPS + (c_n - length) ** 2) > tol * stddev)

    ca_c = np.sqrt(_EPS + np.sum((this_ca - this_c) ** 2, axis=-1))
    n_ca = np.sqrt(_EPS + np.sum((next_ca - next_n) ** 2, axis=-1))
    c_ca_unit = (this_ca - this_c) / ca_c[:, None]
    c_n_unit = (next_n - this_c) / c_n[:, None]
    n_ca_unit = (next_ca - next_n) / n_ca[:, None]
    cos_ca_c_n = np.sum(c_ca_unit * c_n_unit, axis=-1)
    cos_c_n_ca = np.sum(-c_n_unit * n_ca_unit, axis=-1)
    mean1, std1 = rc.between_res_cos_angles_ca_c_n
    mean2, std2 = rc.between_res_cos_angles_c_n_ca
    angle1_bad = angle_mask_1 & (np.sqrt(_EPS + (cos_ca_c_n - mean1) ** 2) > tol * std1)
    angle2_bad = angle_mask_2 & (np.sqrt(_EPS + (cos_c_n_ca - mean2) ** 2) > tol * std2)

    pair_bad = bond_bad | angle1_bad | angle2_bad  # [N-1]
    per_residue = np.zeros(len(aatype), dtype=bool)
    per_residue[:-1] |= pair_bad
    per_residue[1:] |= pair_bad
    return int(bond_bad.sum()), int(angle1_bad.sum() + angle2_bad.sum()), per_residue


def _between_residue_clashes(aatype, pos, mask, connected, overlap):
    """Clashing atom pairs between different residues; per-atom clash mask."""
    tables = _tables()
    n = len(aatype)
    radius = tables["radius"][aatype] * mask  # [N, 14]
    flat_pos = pos.reshape(n * 14, 3)
    flat_mask = mask.reshape(n * 14)
    flat_radius = radius.reshape(n * 14)
    res_of = np.repeat(np.arange(n), 14)
    slot_of = np.tile(np.arange(14), n)
    atoms = np.flatnonzero(flat_mask)
    linked = np.append(np.asarray(connected, dtype=bool), False)  # [N]: bonded to the next
    per_atom = np.zeros(n * 14, dtype=bool)
    count = 0
    # Blocked over rows so memory stays O(block * atoms) for long proteins.
    block = 2048
    for start in range(0, len(atoms), block):
        rows = atoms[start : start + block]
        d = np.sqrt(1e-10 + np.sum((flat_pos[rows, None] - flat_pos[None, atoms]) ** 2, axis=-1))
        ri, rj = res_of[rows][:, None], res_of[atoms][None, :]
        si, sj = slot_of[rows][:, None], slot_of[atoms][None, :]
        valid = ri < rj  # each inter-residue pair once
        # The peptide bond C(i)-N(i+1) is not a clash.
        bonded_next = linked[ri] & (rj == ri + 1) & (si == 2) & (sj == 0)
        # AF2 excludes pairs of atom14 slot 5 (CYS SG) regardless of residue type.
        disulfide = (si == 5) & (sj == 5)
        valid &= ~bonded_next & ~disulfide
        lower = flat_radius[rows][:, None] + flat_radius[atoms][None, :]
        clash = valid & (d < lower - overlap)
        count += int(clash.sum())
        per_atom[rows] |= clash.any(axis=1)
        per_atom[atoms] |= clash.any(axis=0)
    return count, per_atom.reshape(n, 14)


def _within_residue(aatype, pos, mask):
    """Within-residue bond, angle and clash violations; per-atom mask."""
    tables = _tables()
    lower = tables["lower"][aatype]  # [N, 14, 14]
    upper = tables["upper"][aatype]
    category = tables["category"][aatype]
    pair_mask = mask[:, :, None] & mask[:, None, :] & ~np.eye(14, dtype=bool)[None]
    d = np.sqrt(1e-10 + np.sum((pos[:, :, None] - pos[:, None, :]) ** 2, axis=-1))  # [N, 14, 14]
    bad = pair_mask & ((d < lower) | (d > upper))
    per_atom = bad.any(axis=1) | bad.any(axis=2)
    upper_triangle = np.triu(np.ones((14, 14), dtype=bool), k=1)[None]
    bad_pairs = bad & upper_triangle
    counts = {
        kind: int((bad_pairs & (category == kind)).sum())
        for kind in (_PAIR_BOND, _PAIR_ANGLE, _PAIR_NONBONDED)
    }
    return counts, per_atom


def find_violations(
    residues: Sequence[Residue],
    connected: np.ndarray | None = None,
    *,
    violation_tolerance_factor: float = VIOLATION_TOLERANCE_FACTOR,
    clash_overlap_tolerance: float = CLASH_OVERLAP_TOLERANCE,
) -> Violations:
    """Count bond, angle and clash violations of a structure.

    Args:
        residues: Standard amino acids in chain order (heavy atoms are used; hydrogens and
            OXT ignored).
        connected: ``[N - 1]`` bool, residue i is peptide-bonded to i + 1. Default: same chain
            and consecutive residue numbers (AF2 uses residue-index gaps).
        violation_tolerance_factor: Bond/angle tolerance in standard deviations.
        clash_overlap_tolerance: Allowed van der Waals overlap in Å (between residues; the
            within-residue bounds come from the precomputed 12 / 1.5 table).

    Returns:
        The :class:`Violations`.
    """
    n = len(residues)
    if connected is None:
        connected = np.array(
            [
                a.chain_id == b.chain_id and b.number - a.number == 1
                for a, b in itertools.pairwise(residues)
            ],
            dtype=bool,
        )
    connected = np.asarray(connected, dtype=bool)
    if connected.shape != (max(n - 1, 0),):
        raise ValueError(f"connected has shape {connected.shape}, expected ({max(n - 1, 0)},)")
    if n == 0:
        return Violations(0, 0, 0, (), (), 0)
    aatype, pos, mask = to_atom14(residues)
    tol = violation_tolerance_factor
    if n > 1:
        bonds, angles, per_res_links = _between_residue_geometry(aatype, pos, mask, connected, tol)
    else:
        bonds, angles, per_res_links = 0, 0, np.zeros(1, dtype=bool)
    clashes, clash_atoms = _between_residue_clashes(
        aatype, pos, mask, connected, clash_overlap_tolerance
    )
    within, within_atoms = _within_residue(aatype, pos, mask)
    per_residue = per_res_links | clash_atoms.any(axis=1) | within_atoms.any(axis=1)
    indices = tuple(int(i) for i in np.flatnonzero(per_residue))
    return Violations(
        bonds=bonds + within[_PAIR_BOND],
        angles=angles + within[_PAIR_ANGLE],
        clashes=clashes + within[_PAIR_NONBONDED],
        residues=indices,
        labels=tuple(residues[i].label for i in indices),
        num_residues=n,
    )
