"""MSA features: read the alignment files of a target, merge and de-duplicate them.

The alignment folder of a target (``<alignments>/<tag>/``, OpenFold's precomputed layout, see
docs/alignments.md) contributes every ``*.a3m`` and ``*.sto`` file except ``uniprot_hits.sto``
(multimer pairing) and ``hmm_output.sto`` (multimer template hits), in sorted file-name order.
Rows are de-duplicated on the exact aligned string (insertions ignored); the first occurrence
wins, so row 0 is the first file's query row. No per-database row limit is applied to
precomputed files (OpenFold ``DataPipeline._process_msa_feats``).
"""

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparkfold.data.parsers import Msa, ParseError, as_text, parse_a3m, read_stockholm, species_id

__all__ = [
    "EXCLUDED_MSA_FILES",
    "MSA_SUFFIXES",
    "msa_features",
    "msa_features_from_a3m",
    "msa_features_from_dir",
    "msa_files",
    "read_msa",
    "single_sequence_msa",
]

logger = logging.getLogger(__name__)

MSA_SUFFIXES = (".a3m", ".sto")
#: Stockholm files in an alignment folder that are NOT MSA rows (OpenFold skips them).
EXCLUDED_MSA_FILES = ("uniprot_hits.sto", "hmm_output.sto")

# HHblits alphabet lookup: ASCII code -> id (A0 C1 D2 E3 ... Y19 X20 gap21; B->D, Z->E, U->C, J/O->X).
_HHBLITS_LUT = None


def _hhblits_lut() -> np.ndarray:
    global _HHBLITS_LUT
    if _HHBLITS_LUT is None:
        from sparkfold import constants as rc

        lut = np.full(256, -1, dtype=np.int32)
        for letter, idx in rc.HHBLITS_AA_TO_ID.items():
            lut[ord(letter)] = idx
        _HHBLITS_LUT = lut
    return _HHBLITS_LUT


def msa_files(alignment_dir: str | os.PathLike) -> list[Path]:
    """The MSA files of an alignment folder, in sorted name order.

    DEVIATION: OpenFold takes ``os.listdir`` order (filesystem dependent); sorted order makes
    the row order, and so the features, reproducible. The golden fixtures pin sorted order.
    """
    folder = Path(alignment_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"alignment folder {folder} does not exist or is not a directory")
    return [
        folder / name
        for name in sorted(os.listdir(folder))
        if name.endswith(MSA_SUFFIXES)
        and name not in EXCLUDED_MSA_FILES
        and (folder / name).is_file()
    ]


def read_msa(path: str | os.PathLike, *, max_sequences: int | None = None) -> Msa:
    """Parse one ``.a3m`` or ``.sto`` file (Stockholm is streamed)."""
    path = Path(path)
    if path.suffix == ".sto":
        return read_stockholm(path, max_sequences=max_sequences)
    if path.suffix == ".a3m":
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ParseError(f"cannot read file: {e.strerror}", source=str(path)) from None
        msa = parse_a3m(as_text(data, str(path)), source=str(path))
        return msa.truncate(max_sequences) if max_sequences else msa
    raise ValueError(f"{path}: unknown MSA format {path.suffix!r}; expected .a3m or .sto")


def single_sequence_msa(sequence: str) -> Msa:
    """The 1-row MSA of the query alone (single-sequence mode / no alignments)."""
    return Msa((sequence,), np.zeros((1, len(sequence)), dtype=np.int32), ("dummy",))


def msa_features(
    msas: Sequence[Msa], *, names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Merge MSAs into OpenFold's raw MSA features (``make_msa_features``).

    Args:
        msas: alignments over the same query; row 0 of the first is the query.
        names: optional source names (file paths) used in error messages.

    Returns:
        ``msa`` int32 [M, L] (HHblits ids), ``deletion_matrix_int`` int32 [M, L],
        ``num_alignments`` int32 [L] (M repeated), ``msa_species_identifiers`` object [M] of bytes.

    Raises:
        ValueError: no MSA, an empty MSA, or MSAs of different query lengths.
    """
    names = list(names) if names is not None else [f"MSA {i}" for i in range(len(msas))]
    if not msas:
        raise ValueError("At least one MSA is needed (use single_sequence_msa(sequence) for none).")
    length = None
    seen: set[str] = set()
    rows: list[str] = []
    deletions: list[np.ndarray] = []
    species: list[bytes] = []
    for msa, name in zip(msas, names):
        if len(msa) == 0:
            raise ValueError(
                f"{name}: the alignment has no sequences; remove the file or re-run the search"
            )
        if length is None:
            length = msa.query_length
        elif msa.query_length != length:
            raise ValueError(
                f"{name}: query length {msa.query_length} differs from {length} of the first MSA; "
                "all alignment files of a target must be computed for the same sequence"
            )
        keep = []
        for i, seq in enumerate(msa.sequences):
            if seq in seen:
                continue
            seen.add(seq)
            keep.append(i)
            rows.append(seq)
            species.append(species_id(msa.descriptions[i]).encode("utf-8"))
        deletions.append(msa.deletion_matrix[keep])
    num = len(rows)
    codes = np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8).reshape(num, length)
    msa_ids = _hhblits_lut()[codes]
    if (msa_ids < 0).any():
        r, c = np.argwhere(msa_ids < 0)[0]
        raise ValueError(f"MSA row {r} has the invalid residue {rows[r][c]!r} at column {c}")
    return {
        "deletion_matrix_int": np.concatenate(deletions, axis=0).astype(np.int32, copy=False),
        "msa": msa_ids.astype(np.int32, copy=False),
        "num_alignments": np.full((length,), num, dtype=np.int32),
        "msa_species_identifiers": np.array(species, dtype=object),
    }


def _check_query(msa: Msa, sequence: str, name: str) -> None:
    if msa.query_length != len(sequence):
        raise ValueError(
            f"{name}: the alignment has {msa.query_length} query columns but the sequence has "
            f"{len(sequence)} residues; the alignments were computed for a different sequence "
            "(re-run the search or point to the right alignment folder)"
        )
    query = msa.sequences[0].replace("-", "")
    if query != sequence:
        logger.warning(
            "%s: the first row differs from the input sequence; using it as the query row", name
        )


def msa_features_from_dir(
    alignment_dir: str | os.PathLike, sequence: str, *, max_sequences: int | None = None
) -> dict[str, np.ndarray]:
    """MSA features from every MSA file of an alignment folder (see module docstring).

    A folder without MSA files gives the 1-row single-sequence MSA. ``max_sequences`` caps
    the rows read per file (None: all rows, OpenFold's behaviour for precomputed files).
    """
    paths = msa_files(alignment_dir)
    if not paths:
        return msa_features([single_sequence_msa(sequence)])
    msas = []
    for path in paths:
        msa = read_msa(path, max_sequences=max_sequences)
        if len(msa):
            _check_query(msa, sequence, str(path))
        msas.append(msa)
    return msa_features(msas, names=[str(p) for p in paths])


def msa_features_from_a3m(path: str | os.PathLike, sequence: str) -> dict[str, np.ndarray]:
    """MSA features from a single ``.a3m`` file (e.g. from an MSA server)."""
    msa = read_msa(path)
    _check_query(msa, sequence, str(path))
    return msa_features([msa], names=[str(path)])
