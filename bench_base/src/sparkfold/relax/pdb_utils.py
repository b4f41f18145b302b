"""Minimal PDB reading and writing for relaxation (ATOM/HETATM records, first model only).

The reader keeps every atom (hydrogens included) grouped by residue, plus the ``REMARK`` and
``PARENT`` header lines that AlphaFold2/OpenFold write, so that a relaxed file can carry them
over. The writer produces the AF2 layout (``protein.to_pdb``): ``MODEL 1``, ATOM lines, ``TER``
after each chain, ``ENDMDL``, ``END``, every line right-padded to 80 characters.

Only what relaxation needs lives here; a general reader belongs to ``sparkfold.io``.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from sparkfold.relax.errors import RelaxError

#: Header records copied from the input to the relaxed file (AF2/OpenFold re-add these).
HEADER_RECORDS = ("REMARK", "PARENT")
_HYDROGEN_ELEMENTS = ("H", "D")


@dataclasses.dataclass(frozen=True)
class Residue:
    """One residue as read from a PDB file.

    Attributes:
        chain_id: Chain identifier (one character, may be blank).
        number: Residue sequence number (``resSeq``).
        insertion_code: Insertion code, ``""`` when blank.
        name: Three-letter residue name.
        hetero: Whether the residue came from HETATM records.
        atom_names: Atom names, in file order.
        elements: Element symbols (upper case), one per atom.
        positions: Coordinates in Å, shape ``[num_atoms, 3]``.
        b_factors: B-factor column, shape ``[num_atoms]``.
    """

    chain_id: str
    number: int
    insertion_code: str
    name: str
    hetero: bool
    atom_names: tuple[str, ...]
    elements: tuple[str, ...]
    positions: np.ndarray
    b_factors: np.ndarray

    @property
    def key(self) -> tuple[str, int, str]:
        """``(chain_id, number, insertion_code)``: unique within a structure."""
        return (self.chain_id, self.number, self.insertion_code)

    @property
    def label(self) -> str:
        """Human-readable name used in messages, e.g. ``"A 45 GLY"`` or ``"B 52A SER"``."""
        chain = self.chain_id.strip() or "_"
        return f"{chain} {self.number}{self.insertion_code} {self.name}"

    def atom(self, name: str) -> np.ndarray | None:
        """Position of atom ``name`` or ``None`` when absent."""
        if name in self.atom_names:
            return self.positions[self.atom_names.index(name)]
        return None

    def select(self, keep: Sequence[bool]) -> "Residue":
        """A copy with only the atoms where ``keep`` is true."""
        keep = np.asarray(keep, dtype=bool)
        return dataclasses.replace(
            self,
            atom_names=tuple(n for n, k in zip(self.atom_names, keep) if k),
            elements=tuple(e for e, k in zip(self.elements, keep) if k),
            positions=self.positions[keep],
            b_factors=self.b_factors[keep],
        )

    def without_hydrogens(self) -> "Residue":
        """A copy without hydrogen/deuterium atoms."""
        return self.select([e not in _HYDROGEN_ELEMENTS for e in self.elements])


@dataclasses.dataclass(frozen=True)
class Structure:
    """Residues of one model plus the header lines to carry over.

    Attributes:
        residues: Residues in file order.
        header: ``REMARK``/``PARENT`` lines (without trailing padding) found before the atoms.
    """

    residues: tuple[Residue, ...]
    header: tuple[str, ...] = ()

    @property
    def num_atoms(self) -> int:
        return sum(len(r.atom_names) for r in self.residues)


def _element(line: str, atom_name: str) -> str:
    element = line[76:78].strip().upper()
    if element:
        return element
    # Columns 77-78 are optional in old files: use the first letter of the name, skipping the
    # leading digit of names such as "1HB".
    letters = atom_name.lstrip("0123456789")
    return letters[:1].upper()


def parse_pdb(text: str) -> Structure:
    """Parse PDB text into residues (first model only; first alternate location per atom).

    Args:
        text: PDB file contents.

    Returns:
        The parsed :class:`Structure`.

    Raises:
        RelaxError: No atoms, an unreadable coordinate line, or a residue that appears twice
            (the same chain, number and insertion code in two separate places).
    """
    header: list[str] = []
    rows: list[dict] = []
    seen_atoms = False
    for line_number, raw in enumerate(text.splitlines(), start=1):
        record = raw[:6].strip()
        if record == "ENDMDL" or (record == "END" and seen_atoms):
            break
        if record in HEADER_RECORDS and not seen_atoms:
            header.append(raw.rstrip())
            continue
        if record not in ("ATOM", "HETATM"):
            continue
        seen_atoms = True
        line = raw.ljust(80)
        alt_loc = line[16]
        try:
            row = {
                "name": line[12:16].strip(),
                "alt_loc": alt_loc,
                "res_name": line[17:20].strip(),
                "chain_id": line[21],
                "number": int(line[22:26]),
                "insertion_code": line[26].strip(),
                "xyz": (float(line[30:38]), float(line[38:46]), float(line[46:54])),
                "b_factor": float(line[60:66]) if line[60:66].strip() else 0.0,
                "hetero": record == "HETATM",
            }
        except ValueError as err:
            raise RelaxError(
                f"PDB line {line_number} is not a valid {record} record ({err}): {raw.rstrip()!r}",
                fix="check the file is a PDB file with fixed-width coordinate columns",
            ) from None
        row["element"] = _element(line, row["name"])
        rows.append(row)
    if not rows:
        raise RelaxError("the PDB text has no ATOM or HETATM records", fix="pass a PDB file")

    residues: list[Residue] = []
    seen_keys: set[tuple[str, int, str]] = set()
    group: list[dict] = []

    def flush() -> None:
        if not group:
            return
        first = group[0]
        chosen: dict[str, dict] = {}
        for atom in group:
            # First alternate location wins; later alternates of the same atom are dropped.
            chosen.setdefault(atom["name"], atom)
        atoms = list(chosen.values())
        residue = Residue(
            chain_id=first["chain_id"],
            number=first["number"],
            insertion_code=first["insertion_code"],
            name=first["res_name"],
            hetero=all(a["hetero"] for a in atoms),
            atom_names=tuple(a["name"] for a in atoms),
            elements=tuple(a["element"] for a in atoms),
            positions=np.array([a["xyz"] for a in atoms], dtype=np.float64),
            b_factors=np.array([a["b_factor"] for a in atoms], dtype=np.float64),
        )
        if residue.key in seen_keys:
            raise RelaxError(
                f"residue {residue.label} appears twice in the PDB file",
                fix="give every residue a unique chain, number and insertion code",
            )
        seen_keys.add(residue.key)
        residues.append(residue)
        group.clear()

    for row in rows:
        if group:
            prev = group[0]
            same = (prev["chain_id"], prev["number"], prev["insertion_code"], prev["res_name"]) == (
                row["chain_id"],
                row["number"],
                row["insertion_code"],
                row["res_name"],
            )
            if not same:
                flush()
        group.append(row)
    flush()
    return Structure(residues=tuple(residues), header=tuple(header))


def _atom_line(
    serial: int,
    atom_name: str,
    res_name: str,
    chain_id: str,
    number: int,
    insertion_code: str,
    xyz: Sequence[float],
    b_factor: float,
    element: str,
    record: str = "ATOM",
) -> str:
    # AF2 layout: names of 4 characters start in column 13, shorter ones in column 14.
    name = atom_name if len(atom_name) == 4 else f" {atom_name}"
    line = (
        f"{record:<6}{serial:>5} {name:<4} {res_name:>3} {chain_id:>1}"
        f"{number:>4}{insertion_code or '':>1}   "
        f"{xyz[0]:>8.3f}{xyz[1]:>8.3f}{xyz[2]:>8.3f}{1.0:>6.2f}{b_factor:>6.2f}"
        f"          {element:>2}  "
    )
    return line


def format_pdb(structure: Structure) -> str:
    """Write a structure as PDB text in the AF2 layout.

    Chains get a ``TER`` line after their last residue; the header lines come first.

    Args:
        structure: Residues and header lines.

    Returns:
        PDB text ending with a newline.
    """
    lines = [h.ljust(80) for h in structure.header]
    lines.append("MODEL     1".ljust(80))
    serial = 1
    residues = structure.residues
    for i, res in enumerate(residues):
        record = "HETATM" if res.hetero else "ATOM"
        for name, element, xyz, b in zip(
            res.atom_names, res.elements, res.positions, res.b_factors
        ):
            lines.append(
                _atom_line(
                    serial,
                    name,
                    res.name,
                    res.chain_id,
                    res.number,
                    res.insertion_code,
                    xyz,
                    float(b),
                    element,
                    record,
                ).ljust(80)
            )
            serial += 1
        last_of_chain = i + 1 == len(residues) or residues[i + 1].chain_id != res.chain_id
        if last_of_chain:
            ter = (
                f"TER   {serial:>5}      {res.name:>3} {res.chain_id:>1}"
                f"{res.number:>4}{res.insertion_code:>1}"
            )
            lines.append(ter.ljust(80))
            serial += 1
    lines.append("ENDMDL".ljust(80))
    lines.append("END".ljust(80))
    return "\n".join(lines) + "\n"
