"""Input discovery: FASTA files, folders and A3M files → prediction targets with unique tags.

``sparkfold predict INPUT`` accepts

* a FASTA file: every record is one target (``>name`` header, one chain each);
* an ``.a3m`` file: one target, the alignment's first row is the query, and the file itself is
  the target's MSA (ColabFold-style input);
* a folder: every ``*.fasta``/``*.fa``/``*.faa``/``*.fas``/``*.fna``/``*.a3m`` file in it
  (not recursive), in sorted name order.

Every target gets a **tag**: the FASTA header cut at its first non-word character, as OpenFold
cuts it (:func:`sparkfold.data.parsers.sanitize_name`); for an ``.a3m`` file the file name
without the extension (ColabFold's first row is often just ``>101``). The tag names the output
folder ``<out>/<tag>/`` and the alignment folder ``<alignments>/<tag>/``. Repeated tags get
``_2``, ``_3``, … in input order, so the same input always gives the same tags (resume relies on
this).

Sequences are checked here, before any model is loaded: only the 20 standard amino acids and
``X`` (unknown) are accepted.
"""

import dataclasses
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from sparkfold.errors import SparkfoldError

__all__ = [
    "ALLOWED_RESIDUES",
    "FASTA_SUFFIXES",
    "InputError",
    "Target",
    "check_residues",
    "discover_targets",
    "targets_from_records",
]

#: Residue letters a query may contain: the 20 standard amino acids and X (unknown).
ALLOWED_RESIDUES = frozenset("ACDEFGHIKLMNPQRSTVWYX")
FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas", ".fna")
A3M_SUFFIX = ".a3m"


class InputError(SparkfoldError, ValueError):
    """The prediction input (FASTA/A3M file or folder) is missing, empty or malformed."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One sequence to predict.

    Attributes:
        tag: Unique, file-name-safe name (``[A-Za-z0-9_]``): output folder ``<out>/<tag>/`` and
            alignment folder ``<alignments>/<tag>/``.
        description: The FASTA header (without ``>``).
        sequence: Upper-case residue letters (20 standard + ``X``).
        source: The file the target came from (None when built in memory).
        a3m: For an ``.a3m`` input: the file, used as the target's MSA.
    """

    tag: str
    description: str
    sequence: str
    source: Path | None = None
    a3m: Path | None = None

    @property
    def length(self) -> int:
        """Number of residues."""
        return len(self.sequence)


def check_residues(sequence: str, *, name: str, where: str = "") -> str:
    """Upper-case ``sequence`` and reject letters outside :data:`ALLOWED_RESIDUES`.

    Args:
        sequence: Residue letters.
        name: The record's name, for the message.
        where: Where it was read (``file, line 3``), for the message.

    Raises:
        InputError: empty, or a character that is not one of the 20 amino acids or X; the message
            gives the character, its 1-based position and the fix.
    """
    seq = re.sub(r"\s+", "", sequence).upper().removesuffix("*")
    place = f" ({where})" if where else ""
    if not seq:
        raise InputError(
            f"record {name!r}{place} has no sequence",
            fix="give every '>' header a sequence line, or remove the record",
        )
    for i, ch in enumerate(seq):
        if ch not in ALLOWED_RESIDUES:
            kind = "unknown residue" if ch.isalpha() else "character"
            raise InputError(
                f"record {name!r}{place} has the {kind} {ch!r} at position {i + 1}; only the 20 "
                "standard amino acids and X (unknown) are accepted",
                fix="replace it with the intended residue or X (selenocysteine U → C, "
                "B → D or N, Z → E or Q); gaps and digits do not belong in a query",
            )
    return seq


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read {path}: {exc.strerror or exc}",
            fix="check that the file exists and is readable",
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path} is not UTF-8 text (bad byte at offset {exc.start})",
            fix="save it as a plain-text FASTA file",
        ) from None


def _parse_file(path: Path, parse, kind: str, fix: str):
    """``parse(text, source=...)`` of a non-empty file; empty or unparsable → InputError with ``fix``."""
    from sparkfold.data.parsers import ParseError

    text = _read_text(path)
    if not text.strip():
        raise InputError(f"{path} is empty", fix=fix)
    try:
        return parse(text, source=str(path))
    except ParseError as exc:
        raise InputError(f"cannot read {path} as {kind}: {exc}", fix=fix) from None


def _fasta_records(path: Path) -> list[tuple[str, str, str]]:
    """(description, sequence, where) per record of a FASTA file."""
    from sparkfold.data.parsers import parse_fasta

    records = _parse_file(
        path, parse_fasta, "FASTA",
        "put one '>name' header line followed by the sequence per target in it",
    )
    return [(r.description, r.sequence, f"{path}, line {r.line}") for r in records]


def _a3m_query(path: Path) -> tuple[str, str, str]:
    """(description, query sequence, where) of an A3M file: its first record, gaps removed."""
    from sparkfold.data.parsers import parse_a3m

    msa = _parse_file(path, parse_a3m, "A3M", "pass an A3M alignment whose first row is the query")
    if len(msa) == 0:
        raise InputError(
            f"{path} holds no sequences", fix="pass an A3M alignment whose first row is the query"
        )
    query = msa.sequences[0].replace("-", "")
    if len(query) != len(msa.sequences[0]):
        raise InputError(
            f"the first row of {path} (the query) has gaps",
            fix="the first row of an A3M input must be the full query sequence",
        )
    return msa.descriptions[0], query, f"{path}, first record"


def _unique(tags: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for tag in tags:
        candidate, k = tag, 1
        while candidate.lower() in seen:  # case-insensitive: case-folding file systems
            k += 1
            candidate = f"{tag}_{k}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def targets_from_records(records: Sequence[tuple[str, str]]) -> list[Target]:
    """Targets from in-memory ``(description, sequence)`` pairs (unique tags, residues checked)."""
    from sparkfold.data.parsers import sanitize_name

    if not records:
        raise InputError("no sequences given", fix="pass at least one (name, sequence) pair")
    checked = [(d, check_residues(s, name=d)) for d, s in records]
    tags = _unique(sanitize_name(d) for d, _ in checked)
    return [Target(t, d, s) for t, (d, s) in zip(tags, checked)]


def _input_files(path: Path) -> list[Path]:
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.suffix.lower() in FASTA_SUFFIXES + (A3M_SUFFIX,)
    )
    if not files:
        raise InputError(
            f"folder {path} has no FASTA or A3M files",
            fix=f"put files ending in {', '.join(FASTA_SUFFIXES + (A3M_SUFFIX,))} in it, "
            "or pass a FASTA file",
        )
    return files


def discover_targets(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Target]:
    """The targets of one or more inputs (FASTA file, A3M file or folder), in input order.

    Args:
        inputs: A path or a list of paths.

    Returns:
        Targets with unique tags, residues checked. Not sorted (the runner sorts by length).

    Raises:
        InputError: a path does not exist, a folder has no input files, a file is empty, not
            FASTA/A3M, or a sequence has a character that is not an amino acid.
    """
    from sparkfold.data.parsers import sanitize_name

    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not paths:
        raise InputError("no input given", fix="pass a FASTA file, an A3M file or a folder of them")
    files: list[Path] = []
    for raw in paths:
        path = Path(os.fspath(raw)).expanduser()
        if path.is_dir():
            files.extend(_input_files(path))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(
                f"input {str(path)!r} does not exist",
                fix="pass a FASTA file, an A3M file or a folder of them",
            )
    pending: list[tuple[str, str, str, str, Path, Path | None]] = []
    for path in files:
        if path.suffix.lower() == A3M_SUFFIX:
            desc, seq, where = _a3m_query(path)
            pending.append((sanitize_name(path.stem), desc, seq, where, path, path))
        else:
            for desc, seq, where in _fasta_records(path):
                pending.append((sanitize_name(desc), desc, seq, where, path, None))
    targets = []
    for tag, (_, desc, seq, where, path, a3m) in zip(_unique(p[0] for p in pending), pending):
        targets.append(Target(tag, desc, check_residues(seq, name=desc, where=where), path, a3m))
    return targets
