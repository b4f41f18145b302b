"""PDB files of predictions: the AF2/OpenFold layout, pLDDT in the B-factor column.

Layout (``shared/spec/outputs.md`` §1.6, ``inference_cli.md`` §2): optional ``REMARK``/``PARENT``
header lines, ``MODEL     1``, one ``ATOM`` line per existing atom in atom37 order (N, CA, C, CB,
O, …), ``TER`` after each chain, ``ENDMDL``, ``END``; every line right-padded to 80 characters;
occupancy ``1.00``; B-factor = pLDDT of the residue (``%6.2f``); residue number =
``residue_index + 1``.
"""

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparkfold import constants as rc
from sparkfold.errors import SparkfoldError
from sparkfold.io.atomic import atomic_write
from sparkfold.io.prediction import Prediction

__all__ = ["PdbParseError", "parse_pdb", "read_pdb", "to_pdb", "write_pdb"]

_LINE_WIDTH = 80


class PdbParseError(SparkfoldError):
    """A PDB file has no usable protein ATOM records or a malformed line."""


def _resname(aatype: int) -> str:
    if 0 <= aatype < 20:
        return rc.restype_1to3[rc.RESTYPES[aatype]]
    return "UNK"


def _pad(line: str) -> str:
    return f"{line:<{_LINE_WIDTH}}"


def _atom_name_field(name: str) -> str:
    # Columns 13-16: names shorter than 4 characters start in column 14 (PDB convention).
    return name if len(name) == 4 else f" {name:<3}"


def to_pdb(
    prediction: Prediction,
    *,
    b_factors: np.ndarray | None = None,
    remark: str | None = None,
    parents: Sequence[str] | None = None,
) -> str:
    """The PDB text of a prediction.

    Args:
        prediction: The structure to write.
        b_factors: [N, 37] values for the B-factor column; default pLDDT on every atom
            (:meth:`Prediction.b_factors`).
        remark: Text of one ``REMARK`` line written first (OpenFold writes e.g.
            ``no_recycling=3, max_templates=4, config_preset=model_1_ptm``).
        parents: Template identifiers for a ``PARENT`` line (``PARENT N/A`` when empty); no
            line when ``None``.

    Returns:
        The file content, lines of 80 characters joined by ``\\n``, ending with a newline.
    """
    n = prediction.num_residues
    if b_factors is None:
        b_factors = prediction.b_factors()
    b_factors = np.asarray(b_factors, dtype=np.float64)
    if b_factors.shape != (n, 37):
        raise ValueError(f"b_factors must have shape {(n, 37)}, got {b_factors.shape}")
    if np.any(prediction.aatype > 20) or np.any(prediction.aatype < 0):
        raise ValueError("aatype must be in 0..20 (model order, 20 = unknown)")
    lines = []
    if remark is not None:
        lines.append(_pad(f"REMARK {remark}"))
    if parents is not None:
        lines.append(_pad("PARENT " + (" ".join(parents) if len(parents) else "N/A")))
    lines.append(_pad("MODEL     1"))
    atom_types = rc.atom_types
    positions = prediction.atom_positions
    mask = prediction.atom_mask
    chain_ids = prediction.residue_chain_ids
    for cid in chain_ids:
        if len(cid) != 1:
            raise ValueError(f"PDB chain ids are one character; got {cid!r} (use mmCIF)")
    serial = 1
    for i in range(n):
        resname = _resname(int(prediction.aatype[i]))
        resnum = int(prediction.residue_index[i]) + 1
        if not -999 <= resnum <= 9999:
            raise ValueError(f"residue number {resnum} does not fit the PDB format (use mmCIF)")
        chain = chain_ids[i]
        for j, atom in enumerate(atom_types):
            if mask[i, j] < 0.5:
                continue
            x, y, z = (float(v) for v in positions[i, j])
            element = atom[0]
            lines.append(_pad(
                f"{'ATOM':<6}{serial % 100000:>5} {_atom_name_field(atom)}{'':>1}"
                f"{resname:>3} {chain:>1}{resnum:>4}{'':>1}   "
                f"{x:>8.3f}{y:>8.3f}{z:>8.3f}{1.0:>6.2f}{b_factors[i, j]:>6.2f}          "
                f"{element:>2}{'':>2}"
            ))
            serial += 1
        last_of_chain = i == n - 1 or prediction.chain_index[i + 1] != prediction.chain_index[i]
        if last_of_chain:
            lines.append(_pad(f"{'TER':<6}{serial % 100000:>5}      {resname:>3} {chain:>1}{resnum:>4}"))
            serial += 1
    lines.append(_pad("ENDMDL"))
    lines.append(_pad("END"))
    return "\n".join(lines) + "\n"


def write_pdb(path: str | os.PathLike, prediction: Prediction, **kwargs) -> Path:
    """Write :func:`to_pdb` output to ``path`` atomically; keyword arguments as there."""
    return atomic_write(path, to_pdb(prediction, **kwargs))


def _float(line: str, start: int, end: int, what: str, lineno: int) -> float:
    try:
        return float(line[start:end])
    except ValueError:
        raise PdbParseError(
            f"line {lineno}: column {start + 1}-{end} ({what}) is not a number: {line[start:end]!r}",
            fix="check that the file is a fixed-column PDB file",
        ) from None


def parse_pdb(text: str, *, model_name: str = "model", chain: str | None = None) -> Prediction:
    """Read PDB text back into atom37 arrays.

    Reads ``ATOM`` records of the first model (alternate locations other than the first are
    skipped; hydrogens and atoms outside the 37 heavy-atom types are ignored). pLDDT is taken
    from the CA B-factor of each residue (mean over its atoms when it has no CA). PAE and pTM are
    not stored in PDB files and come back as ``None``.

    Args:
        text: PDB file content.
        model_name: Stored as :attr:`Prediction.model_name`.
        chain: Read only this chain; default all chains.

    Returns:
        A :class:`Prediction` (``residue_index`` = residue number − 1).

    Raises:
        PdbParseError: no protein ATOM records, or a malformed coordinate field.
    """
    atom_order = rc.atom_order
    three_to_index = {rc.restype_1to3[c]: i for i, c in enumerate(rc.RESTYPES)}
    residues: dict[tuple[str, int, str], dict] = {}
    chain_order: list[str] = []
    seen_alt: dict[tuple, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        record = line[:6]
        if record.startswith("ENDMDL"):
            break
        if record != "ATOM  ":
            continue
        line = f"{line:<80}"
        chain_id = line[21]
        if chain is not None and chain_id != chain:
            continue
        try:
            resnum = int(line[22:26])
        except ValueError:
            raise PdbParseError(f"line {lineno}: residue number {line[22:26]!r} is not an integer",
                                fix="check that the file is a fixed-column PDB file") from None
        key = (chain_id, resnum, line[26].strip())
        atom_name = line[12:16].strip()
        alt = line[16].strip()
        if alt:
            first = seen_alt.setdefault(key + (atom_name,), alt)
            if alt != first:
                continue
        residue = residues.get(key)
        if residue is None:
            resname = line[17:20].strip()
            residue = {"aatype": three_to_index.get(resname, rc.UNK_INDEX),
                       "pos": np.zeros((37, 3)), "mask": np.zeros(37), "b": {}}
            residues[key] = residue
            if chain_id not in chain_order:
                chain_order.append(chain_id)
        index = atom_order.get(atom_name)
        if index is None:
            continue
        residue["pos"][index] = [_float(line, 30, 38, "x", lineno), _float(line, 38, 46, "y", lineno),
                                 _float(line, 46, 54, "z", lineno)]
        residue["mask"][index] = 1.0
        residue["b"][atom_name] = _float(line, 60, 66, "B-factor", lineno) if line[60:66].strip() else 0.0
    if not residues:
        raise PdbParseError("no ATOM records found" + (f" for chain {chain!r}" if chain else ""),
                            fix="pass a PDB file of a protein structure")
    keys = list(residues)
    plddt = []
    for k in keys:
        b = residues[k]["b"]
        plddt.append(b["CA"] if "CA" in b else (float(np.mean(list(b.values()))) if b else 0.0))
    return Prediction(
        aatype=np.array([residues[k]["aatype"] for k in keys], dtype=np.int64),
        residue_index=np.array([k[1] - 1 for k in keys], dtype=np.int64),
        atom_positions=np.stack([residues[k]["pos"] for k in keys]),
        atom_mask=np.stack([residues[k]["mask"] for k in keys]),
        plddt=np.array(plddt),
        chain_index=np.array([chain_order.index(k[0]) for k in keys], dtype=np.int64),
        chain_ids=tuple(chain_order),
        model_name=model_name,
    )


def read_pdb(path: str | os.PathLike, *, model_name: str | None = None,
             chain: str | None = None) -> Prediction:
    """Read a PDB file (see :func:`parse_pdb`); ``model_name`` defaults to the file stem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PdbParseError(f"cannot read PDB file {path}: {exc.strerror or exc}",
                            fix="check the path and its permissions") from exc
    return parse_pdb(text, model_name=model_name or path.stem, chain=chain)
