"""Structure cleanup before Amber minimisation: standard residues, chain segments, PDBFixer.

Two stages:

1. :func:`standardize` (numpy only, no OpenMM): keeps the protein residues, replaces known
   modified residues by their standard parents (PDBFixer's substitution table, e.g. MSE -> MET
   with SE renamed SD), drops waters and ligands, drops hydrogens, and rejects what Amber
   cannot handle with an error naming the residue (unknown residue, missing backbone atoms,
   an isolated one-residue fragment). It also splits chains at breaks into segments.
2. :func:`fix_with_pdbfixer`: PDBFixer adds missing heavy atoms (seed 0) and hydrogens (pH 7),
   as AF2's ``cleanup.fix_pdb``; each segment becomes its own OpenMM chain (so it gets
   proper termini) and keeps its original chain id, residue numbers and insertion codes.
"""

import dataclasses
import io
import itertools
from typing import Any

import numpy as np

from sparkfold import constants as rc
from sparkfold.relax.errors import RelaxDependencyError, RelaxError
from sparkfold.relax.pdb_utils import Residue, Structure, _atom_line

#: Residue names dropped as solvent.
WATER_NAMES = frozenset({"HOH", "WAT", "DOD", "H2O", "TIP", "TIP3", "SOL"})
#: C(i)–N(i+1) distance (Å) above which consecutively numbered residues are a chain break. A
#: stretched peptide bond in a poor model is pulled back by minimisation (AF2 behaviour); beyond
#: this distance the residues cannot have been bonded.
MAX_C_N_CONSECUTIVE = 4.0
#: C(i)–N(i+1) distance (Å) below which residues are bonded even when the numbering jumps
#: (Kabat/Chothia numbering skips numbers inside a continuous chain).
MAX_C_N_NUMBERING_GAP = 2.0
#: pH used to protonate (AF2/OpenFold: 7.0).
PH = 7.0
#: Seed for PDBFixer's placement of missing atoms (AF2/OpenFold: 0).
FIXER_SEED = 0

_BACKBONE = ("N", "CA", "C")


@dataclasses.dataclass(frozen=True)
class Alterations:
    """What cleanup changed, for the relax report. Entries are residue labels like ``"A 45 GLY"``.

    Attributes:
        replaced_residues: Modified residues replaced by their standard parent, ``"A 3 MSE->MET"``.
        removed_residues: Waters and ligands removed (HETATM residues that are not amino acids).
        dropped_atoms: Atoms removed because the standard residue has no such heavy atom,
            ``"A 3 MET: CE1"`` (hydrogens are always removed and re-added; not listed).
        added_atoms: Heavy atoms PDBFixer added (first cleanup only), ``"A 12 LYS: CE NZ"``;
            OXT atoms at segment ends are not listed.
        chain_breaks: Breaks between segments, ``"A 45 GLY / A 47 SER"``.
    """

    replaced_residues: tuple[str, ...] = ()
    removed_residues: tuple[str, ...] = ()
    dropped_atoms: tuple[str, ...] = ()
    added_atoms: tuple[str, ...] = ()
    chain_breaks: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, list[str]]:
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A standardized protein ready for PDBFixer.

    Attributes:
        structure: Standard residues only, heavy atoms only, input coordinates; header kept.
        source_index: For each residue, its index in the input structure.
        connected: ``[num_res - 1]`` bool, residue i is peptide-bonded to residue i + 1.
        alterations: What was changed.
    """

    structure: Structure
    source_index: tuple[int, ...]
    connected: np.ndarray
    alterations: Alterations

    @property
    def segment_starts(self) -> tuple[int, ...]:
        """Index of the first residue of each segment."""
        return (0,) + tuple(int(i) + 1 for i in np.flatnonzero(~self.connected))


def substitutions() -> dict[str, str]:
    """Modified residue -> standard amino acid (PDBFixer's table, protein entries only)."""
    try:
        from pdbfixer.pdbfixer import substitutions as table
    except ImportError:
        raise RelaxDependencyError("pdbfixer") from None
    standard = set(rc.restype_3to1)
    return {k: v for k, v in table.items() if v in standard}


def _standard_residue(
    res: Residue, table: dict[str, str], notes: dict[str, list]
) -> Residue | None:
    """The residue as a standard amino acid without hydrogens, ``None`` if it is dropped."""
    standard_names = rc.restype_3to1
    name = res.name
    if name in WATER_NAMES:
        notes["removed"].append(res.label)
        return None
    if name not in standard_names:
        parent = table.get(name)
        if parent is None:
            if res.hetero:
                # A ligand or ion: AF2's cleanup removes all heterogens.
                notes["removed"].append(res.label)
                return None
            raise RelaxError(
                f"residue {res.label} is not a standard amino acid and has no known standard "
                "parent; the Amber force field has no template for it",
                fix="replace it by a standard residue or delete it from the input",
            )
        notes["replaced"].append(f"{res.label}->{parent}")
        # PDBFixer's replacement keeps only atoms of the parent; selenomethionine's SE takes
        # the place of SD (AF2's _replace_met_se).
        names = ["SD" if (parent == "MET" and n == "SE") else n for n in res.atom_names]
        elements = [
            "S" if (parent == "MET" and n == "SE") else e
            for n, e in zip(res.atom_names, res.elements)
        ]
        res = dataclasses.replace(
            res, name=parent, atom_names=tuple(names), elements=tuple(elements)
        )
    elif name == "MET" and "SE" in res.atom_names:
        names = ["SD" if n == "SE" else n for n in res.atom_names]
        elements = ["S" if n == "SE" else e for n, e in zip(res.atom_names, res.elements)]
        res = dataclasses.replace(res, atom_names=tuple(names), elements=tuple(elements))
    res = res.without_hydrogens()
    allowed = set(rc.residue_atoms[res.name]) | {"OXT"}
    keep = [n in allowed for n in res.atom_names]
    dropped = [n for n, k in zip(res.atom_names, keep) if not k]
    if dropped:
        notes["dropped"].append(f"{res.label}: {' '.join(dropped)}")
    res = res.select(keep)
    missing = [a for a in _BACKBONE if a not in res.atom_names]
    if missing:
        raise RelaxError(
            f"broken chain: residue {res.label} lacks backbone atom(s) {', '.join(missing)}, "
            "which cannot be rebuilt",
            fix="delete the residue (the chain is then split there) or model its backbone",
        )
    return res


def _connected(a: Residue, b: Residue) -> bool:
    if a.chain_id != b.chain_id:
        return False
    distance = float(np.linalg.norm(a.atom("C") - b.atom("N")))
    consecutive = b.number - a.number in (0, 1)
    return distance <= (MAX_C_N_CONSECUTIVE if consecutive else MAX_C_N_NUMBERING_GAP)


def standardize(structure: Structure) -> Prepared:
    """Keep the standard protein residues of ``structure`` and split its chains into segments.

    Args:
        structure: The parsed input.

    Returns:
        The :class:`Prepared` protein.

    Raises:
        RelaxError: An unknown residue, a residue without N/CA/C, no protein at all, or a
            segment of a single residue (Amber has no template for a residue that is both
            N- and C-terminal; AF2 deletes such chains).
        RelaxDependencyError: PDBFixer is not installed.
    """
    table = substitutions()
    notes: dict[str, list] = {"removed": [], "replaced": [], "dropped": []}
    kept: list[Residue] = []
    source: list[int] = []
    for i, res in enumerate(structure.residues):
        std = _standard_residue(res, table, notes)
        if std is not None:
            kept.append(std)
            source.append(i)
    if not kept:
        raise RelaxError(
            "the structure has no amino-acid residues to relax", fix="pass a protein PDB"
        )
    connected = np.array([_connected(a, b) for a, b in itertools.pairwise(kept)], dtype=bool)
    breaks = [
        f"{kept[i].label} / {kept[i + 1].label}"
        for i in np.flatnonzero(~connected)
        if kept[i].chain_id == kept[i + 1].chain_id
    ]
    starts = [0] + [int(i) + 1 for i in np.flatnonzero(~connected)] + [len(kept)]
    for start, end in itertools.pairwise(starts):
        if end - start == 1:
            raise RelaxError(
                f"broken chain: residue {kept[start].label} is an isolated single residue "
                "(not bonded to either neighbour); Amber has no template for it",
                fix="delete the residue or rebuild its neighbours",
            )
    alterations = Alterations(
        replaced_residues=tuple(notes["replaced"]),
        removed_residues=tuple(notes["removed"]),
        dropped_atoms=tuple(notes["dropped"]),
        chain_breaks=tuple(breaks),
    )
    return Prepared(
        structure=Structure(residues=tuple(kept), header=structure.header),
        source_index=tuple(source),
        connected=connected,
        alterations=alterations,
    )


def segment_pdb_text(residues: tuple[Residue, ...], connected: np.ndarray) -> str:
    """PDB text for OpenMM with a ``TER`` after every segment (OpenMM starts a new chain there)."""
    lines = []
    serial = 1
    for i, res in enumerate(residues):
        for name, element, xyz in zip(res.atom_names, res.elements, res.positions):
            lines.append(
                _atom_line(
                    serial,
                    name,
                    res.name,
                    res.chain_id,
                    res.number,
                    res.insertion_code,
                    xyz,
                    0.0,
                    element,
                )
            )
            serial += 1
        if i + 1 == len(residues) or not connected[i]:
            lines.append("TER")
    lines.append("END")
    return "\n".join(lines) + "\n"


def fix_with_pdbfixer(
    residues: tuple[Residue, ...], connected: np.ndarray, *, seed: int = FIXER_SEED, ph: float = PH
) -> tuple[Any, Any, tuple[str, ...]]:
    """Add missing heavy atoms and hydrogens with PDBFixer.

    Args:
        residues: Standard residues, heavy atoms only.
        connected: ``[num_res - 1]`` peptide-bond flags (segments end where false).
        seed: Random seed for PDBFixer's atom placement.
        ph: pH for protonation states.

    Returns:
        ``(topology, positions, added)``: the OpenMM topology (one chain per segment, residues
        in the order of ``residues``), positions (OpenMM quantity) and the heavy atoms added,
        as ``"A 12 LYS: CE NZ"`` entries (terminal OXT not listed).
    """
    try:
        from pdbfixer import PDBFixer
    except ImportError:
        raise RelaxDependencyError("pdbfixer") from None
    fixer = PDBFixer(pdbfile=io.StringIO(segment_pdb_text(residues, connected)))
    # DEVIATION: AF2 calls findMissingResidues(), a no-op on its own SEQRES-less PDB output. We
    # never build missing residues: the relaxed file must hold the input's residues only.
    fixer.missingResidues = {}
    fixer.findMissingAtoms()
    added = [
        f"{residues[residue.index].label}: {' '.join(a.name for a in atoms)}"
        for residue, atoms in sorted(fixer.missingAtoms.items(), key=lambda item: item[0].index)
    ]
    fixer.addMissingAtoms(seed=seed)
    fixer.addMissingHydrogens(ph)
    topology = fixer.topology
    if topology.getNumResidues() != len(residues):
        raise RelaxError(
            f"PDBFixer returned {topology.getNumResidues()} residues for {len(residues)} input "
            "residues",
            fix="report this structure to the sparkfold developers",
        )
    return topology, fixer.positions, tuple(added)
