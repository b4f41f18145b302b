"""Parsers for the sequence and alignment formats of the AF2/OpenFold data pipeline.

Pure functions returning frozen records: FASTA, A3M, Stockholm (streamed), HHR, the
hmmsearch Stockholm used for multimer templates, and mmCIF (via gemmi). Every parser raises
:class:`ParseError` (a ``ValueError``) on bad input, never another exception type; messages
name the source, the line and the fix.

Semantics follow OpenFold ``openfold/data/parsers.py`` (commit ce0029e) so that the golden
fixtures match exactly; the few places where we are stricter or more tolerant are marked
``DEVIATION:``.
"""

import dataclasses
import io
import os
import re
from collections.abc import Iterable, Iterator
from typing import IO

import numpy as np

__all__ = [
    "FastaRecord",
    "MmcifChain",
    "MmcifStructure",
    "Msa",
    "ParseError",
    "TemplateHit",
    "as_text",
    "parse_a3m",
    "parse_fasta",
    "parse_hhr",
    "parse_hmmsearch_sto",
    "parse_mmcif",
    "parse_stockholm",
    "read_fasta",
    "read_mmcif",
    "read_stockholm",
    "sanitize_name",
    "species_id",
]


class ParseError(ValueError):
    """Malformed input file; the message names the source, the line and what was expected."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None):
        where = source or ""
        if line is not None:
            where = f"{where}, line {line}" if where else f"line {line}"
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.line = line


# ---------------------------------------------------------------------------------------------
# Records


@dataclasses.dataclass(frozen=True)
class FastaRecord:
    """One FASTA entry: the header text after '>' and the upper-case residue string."""

    description: str
    sequence: str
    line: int  # 1-based line number of the header

    @property
    def tag(self) -> str:
        """The file-name-safe tag of this record (see :func:`sanitize_name`)."""
        return sanitize_name(self.description)


@dataclasses.dataclass(frozen=True)
class Msa:
    """A parsed alignment: rows aligned to the query (row 0), insertions removed.

    Attributes:
        sequences: aligned rows, each of the query length; upper-case letters and '-'.
        deletion_matrix: int32 [num_rows, query_length]; entry (i, j) counts the residues of
            row i inserted (deleted w.r.t. the query) just before column j.
        descriptions: one description per row (FASTA header text / Stockholm sequence name).
    """

    sequences: tuple[str, ...]
    deletion_matrix: np.ndarray
    descriptions: tuple[str, ...]

    def __post_init__(self):
        n = len(self.sequences)
        if len(self.descriptions) != n or self.deletion_matrix.shape[0] != n:
            raise ValueError(
                f"Msa fields disagree: {n} sequences, {len(self.descriptions)} descriptions, "
                f"deletion matrix {self.deletion_matrix.shape}"
            )

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def query_length(self) -> int:
        """Number of aligned columns (0 for an empty alignment)."""
        return self.deletion_matrix.shape[1] if self.deletion_matrix.ndim == 2 else 0

    def truncate(self, max_sequences: int) -> "Msa":
        """The first ``max_sequences`` rows."""
        return Msa(
            self.sequences[:max_sequences],
            self.deletion_matrix[:max_sequences],
            self.descriptions[:max_sequences],
        )


@dataclasses.dataclass(frozen=True)
class TemplateHit:
    """One template search hit (HHR block or hmmsearch row), as OpenFold's ``TemplateHit``.

    ``indices_query`` / ``indices_hit`` give, per alignment column, the 0-based residue index
    in the query / hit sequence, or -1 for a gap. ``sum_probs`` is None for hmmsearch hits.
    """

    index: int
    name: str
    aligned_cols: int
    sum_probs: float | None
    query: str
    hit_sequence: str
    indices_query: tuple[int, ...]
    indices_hit: tuple[int, ...]


# ---------------------------------------------------------------------------------------------
# Helpers


def as_text(data: str | bytes, source: str) -> str:
    """Decode bytes as UTF-8 (a ParseError names the offending byte); pass str through."""
    if isinstance(data, str):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ParseError(
                f"not UTF-8 text ({e.reason} at byte {e.start})", source=source
            ) from None
    raise ParseError(f"expected text or bytes, got {type(data).__name__}", source=source)


def _read_path(path: str | os.PathLike) -> str:
    try:
        with open(path, "rb") as f:
            return as_text(f.read(), os.fspath(path))
    except OSError as e:
        raise ParseError(f"cannot read file: {e.strerror}", source=os.fspath(path)) from None


_WHITESPACE = re.compile(r"\s+")
_ALIGNED_OK = re.compile(r"[A-Za-z.\-]*")
_RESIDUES_OK = re.compile(r"[A-Z]*")


def _fasta_chunks(text: str, source: str) -> list[tuple[str, str, int]]:
    """(description, raw sequence, header line) per '>' record; '#' and blank lines skipped."""
    records: list[tuple[str, list[str], int]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(">"):
            records.append((line[1:].strip(), [], lineno))
        elif not records:
            raise ParseError(
                "sequence data before the first '>' header line; FASTA/A3M records start with '>name'",
                source=source,
                line=lineno,
            )
        else:
            records[-1][1].append(_WHITESPACE.sub("", line))
    return [(desc, "".join(parts), lineno) for desc, parts, lineno in records]


def _first_bad_char(seq: str, pattern: re.Pattern) -> str:
    for ch in seq:
        if not pattern.fullmatch(ch):
            return ch
    return ""


# ---------------------------------------------------------------------------------------------
# FASTA


def parse_fasta(text: str | bytes, *, source: str = "<fasta>") -> tuple[FastaRecord, ...]:
    """Parse protein FASTA text into records (one or more).

    Sequences are upper-cased, internal whitespace and a trailing '*' are removed. Any letter
    A-Z is accepted; letters outside the 20 standard residues (B, J, O, U, X, Z, ...) are kept
    here and mapped as AF2 maps them by the feature builders (to X for ``aatype``; B→D, Z→E,
    U→C, J/O→X in the MSA alphabet).

    Raises:
        ParseError: no records, an empty record, data before the first header, or a character
            that is not a letter (the message names the record and its line).
    """
    text = as_text(text, source)
    records = []
    for desc, seq, lineno in _fasta_chunks(text, source):
        seq = seq.upper()
        seq = seq.removesuffix("*")
        if not seq:
            raise ParseError(f"record '{desc}' has no sequence", source=source, line=lineno)
        if not _RESIDUES_OK.fullmatch(seq):
            bad = _first_bad_char(seq, re.compile("[A-Z]"))
            raise ParseError(
                f"record '{desc}' contains {bad!r}, which is not an amino-acid letter "
                "(gaps and digits are not allowed in a query sequence)",
                source=source,
                line=lineno,
            )
        records.append(FastaRecord(desc, seq, lineno))
    if not records:
        raise ParseError("no FASTA records found; expected '>name' header lines", source=source)
    return tuple(records)


def read_fasta(path: str | os.PathLike) -> tuple[FastaRecord, ...]:
    """Read and parse a FASTA file (see :func:`parse_fasta`)."""
    return parse_fasta(_read_path(path), source=os.fspath(path))


_WINDOWS_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(10)),
    *(f"LPT{i}" for i in range(10)),
}


def sanitize_name(header: str, *, max_length: int = 100) -> str:
    """File-name-safe tag for a FASTA header, as OpenFold cuts it (up to the first non-word char).

    The result uses only ``[A-Za-z0-9_]``, so it is never a path component such as ``..``; it is
    never empty (falls back to the whole header with unsafe runs replaced by '_', then to
    ``"query"``) and at most ``max_length`` characters.
    """
    header = str(header).strip()
    tag = re.split(r"\W", header, maxsplit=1)[0] if header else ""
    tag = re.sub(r"[^A-Za-z0-9_]", "_", tag)
    if not tag.strip("_"):
        tag = re.sub(r"[^A-Za-z0-9]+", "_", header).strip("_")
    if not tag:
        tag = "query"
    tag = tag[:max_length]
    if tag.upper() in _WINDOWS_RESERVED:
        tag += "_"
    return tag


# ---------------------------------------------------------------------------------------------
# A3M

_DROP_LOWER_AND_DOT = str.maketrans("", "", "abcdefghijklmnopqrstuvwxyz.")
_MATCH_CHAR = re.compile(r"[A-Z\-]")


def parse_a3m(text: str | bytes, *, source: str = "<a3m>") -> Msa:
    """Parse an A3M alignment (first record = query).

    Upper-case letters and '-' are aligned columns; lower-case letters are insertions counted
    into the deletion matrix. DEVIATION: '.' (an optional gap in an insert column in A3M) is
    dropped; OpenFold would keep it as a column and fail later.

    Raises:
        ParseError: no records, a character other than letters/'-'/'.', or a row whose number
            of aligned columns differs from the query's.
    """
    text = as_text(text, source)
    chunks = _fasta_chunks(text, source)
    if not chunks:
        raise ParseError("no A3M records found; expected '>name' header lines", source=source)
    sequences, descriptions, deletions = [], [], []
    width = None
    for desc, seq, lineno in chunks:
        if not _ALIGNED_OK.fullmatch(seq):
            bad = _first_bad_char(seq, re.compile(r"[A-Za-z.\-]"))
            raise ParseError(
                f"record '{desc}' contains {bad!r}; A3M rows hold letters, '-' and '.' only",
                source=source,
                line=lineno,
            )
        seq = seq.replace(".", "")
        aligned = seq.translate(_DROP_LOWER_AND_DOT)
        if width is None:
            width = len(aligned)
            if width == 0:
                raise ParseError(
                    f"query record '{desc}' has no aligned residues", source=source, line=lineno
                )
        elif len(aligned) != width:
            raise ParseError(
                f"record '{desc}' has {len(aligned)} aligned columns but the query has {width}",
                source=source,
                line=lineno,
            )
        # Lower-case runs before each match column = deletions at that column.
        runs = _MATCH_CHAR.split(seq)
        deletions.append([len(r) for r in runs[:-1]])
        sequences.append(aligned)
        descriptions.append(desc)
    matrix = np.asarray(deletions, dtype=np.int32).reshape(len(sequences), width)
    return Msa(tuple(sequences), matrix, tuple(descriptions))


# ---------------------------------------------------------------------------------------------
# Stockholm (streamed)

_GAP_BYTES = (ord("-"), ord("."))
_VALID_STO = np.zeros(256, dtype=bool)
_VALID_STO[[ord(c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-."]] = True
_UPPER_LUT = np.arange(256, dtype=np.uint8)
_UPPER_LUT[ord("a") : ord("z") + 1] -= 32
_UPPER_LUT[ord(".")] = ord("-")


class _StockholmBuilder:
    """Accumulates Stockholm sequence lines into query-reduced rows, block by block.

    Each line segment is reduced as soon as the query's segment of the same block is known:
    only query (non-gap) columns are kept and insert-column residues become deletion counts.
    Memory is therefore proportional to the rows kept x query length, never the file size.
    """

    _BATCH = 4096

    def __init__(self, max_sequences: int | None, source: str):
        if max_sequences is not None and max_sequences < 1:
            raise ValueError(f"max_sequences must be >= 1, got {max_sequences}")
        self.max_sequences = max_sequences
        self.source = source
        self.index: dict[str, int] = {}  # kept name -> row
        self.names: list[str] = []
        self.seg_count: list[int] = []  # segments seen per row
        self.carry = np.zeros(1024, dtype=np.int32)  # pending insert count per row
        self.query_keep: list[np.ndarray] = []  # bool mask of query columns per block
        self.col_offset: list[int] = [0]
        self.groups: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]] = []
        self.pending: list[tuple[int, int, str, int]] = []  # (row, k, segment, line)

    def add_line(self, name: str, segment: str, lineno: int) -> None:
        row = self.index.get(name)
        if row is None:
            if self.max_sequences is not None and len(self.names) >= self.max_sequences:
                return
            row = len(self.names)
            self.index[name] = row
            self.names.append(name)
            self.seg_count.append(0)
            if row >= self.carry.shape[0]:
                self.carry = np.concatenate([self.carry, np.zeros_like(self.carry)])
        k = self.seg_count[row]
        self.seg_count[row] = k + 1
        if row == 0:
            self._add_query_segment(segment, lineno)
        self.pending.append((row, k, segment, lineno))
        if len(self.pending) >= self._BATCH:
            self.flush()

    def _add_query_segment(self, segment: str, lineno: int) -> None:
        arr = self._to_array([segment], [lineno], len(segment))[0]
        keep = (arr != _GAP_BYTES[0]) & (arr != _GAP_BYTES[1])
        self.query_keep.append(keep)
        self.col_offset.append(self.col_offset[-1] + int(keep.sum()))

    def _to_array(self, segments: list[str], lines: list[int], width: int) -> np.ndarray:
        try:
            blob = "".join(segments).encode("ascii")
        except UnicodeEncodeError:
            blob = b""
        if len(blob) != len(segments) * width:
            for seg, line in zip(segments, lines):
                if not seg.isascii():
                    raise ParseError(
                        "non-ASCII character in an alignment row", source=self.source, line=line
                    )
            raise AssertionError("unreachable")  # pragma: no cover
        arr = np.frombuffer(blob, dtype=np.uint8).reshape(len(segments), width)
        ok = _VALID_STO[arr]
        if not ok.all():
            bad_row = int(np.flatnonzero(~ok.all(axis=1))[0])
            bad = chr(arr[bad_row][~ok[bad_row]][0])
            raise ParseError(
                f"invalid character {bad!r} in an alignment row (letters, '-' and '.' only)",
                source=self.source,
                line=lines[bad_row],
            )
        return arr

    def flush(self, final: bool = False) -> None:
        ready: dict[int, list[tuple[int, str, int]]] = {}
        waiting = []
        for row, k, seg, line in self.pending:
            if k < len(self.query_keep):
                ready.setdefault(k, []).append((row, seg, line))
            elif final:
                raise ParseError(
                    f"sequence '{self.names[row]}' has more alignment blocks than the query "
                    f"'{self.names[0]}'",
                    source=self.source,
                    line=line,
                )
            else:
                waiting.append((row, k, seg, line))
        self.pending = waiting
        for k in sorted(ready):
            self._reduce(k, ready[k])

    def _reduce(self, k: int, items: list[tuple[int, str, int]]) -> None:
        keep = self.query_keep[k]
        width = keep.shape[0]
        for row, seg, line in items:
            if len(seg) != width:
                raise ParseError(
                    f"sequence '{self.names[row]}' has {len(seg)} columns in this block but the "
                    f"query has {width}",
                    source=self.source,
                    line=line,
                )
        rows = np.fromiter((r for r, _, _ in items), dtype=np.int64, count=len(items))
        arr = self._to_array([s for _, s, _ in items], [ln for _, _, ln in items], width)
        present = (arr != _GAP_BYTES[0]) & (arr != _GAP_BYTES[1])
        # A residue in an insert column (query gap) is a deletion w.r.t. the query.
        cum = np.cumsum(present & ~keep, axis=1, dtype=np.int32)  # [n, w]
        kept = np.flatnonzero(keep)
        carry = self.carry[rows]
        if kept.size == 0:
            self.carry[rows] = carry + cum[:, -1]
            return
        at = cum[:, kept]  # [n, kept]
        dels = np.diff(at, axis=1, prepend=0).astype(np.int32)
        dels[:, 0] += carry
        self.carry[rows] = cum[:, -1] - at[:, -1]
        residues = _UPPER_LUT[arr[:, kept]]
        self.groups.append((rows, self.col_offset[k], residues, dels))

    def result(self) -> Msa:
        self.flush(final=True)
        n = len(self.names)
        if n == 0:
            return Msa((), np.zeros((0, 0), dtype=np.int32), ())
        for row in range(n):
            if self.seg_count[row] != len(self.query_keep):
                raise ParseError(
                    f"sequence '{self.names[row]}' appears in {self.seg_count[row]} blocks but the "
                    f"query in {len(self.query_keep)}",
                    source=self.source,
                )
        length = self.col_offset[-1]
        if length == 0:
            raise ParseError(
                f"the query '{self.names[0]}' has no aligned residues", source=self.source
            )
        residues = np.full((n, length), ord("-"), dtype=np.uint8)
        deletions = np.zeros((n, length), dtype=np.int32)
        while self.groups:
            rows, offset, res, dels = self.groups.pop()
            residues[rows, offset : offset + res.shape[1]] = res
            deletions[rows, offset : offset + res.shape[1]] = dels
        seqs = tuple(b.decode("ascii") for b in residues.view(f"S{length}").ravel())
        return Msa(seqs, deletions, tuple(self.names))


def _stockholm_lines(lines: Iterable[str], builder: _StockholmBuilder) -> Msa:
    seen_header = False
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if not seen_header:
            if not line.startswith("# STOCKHOLM"):
                raise ParseError(
                    "not a Stockholm file: the first line must be '# STOCKHOLM 1.0'",
                    source=builder.source,
                    line=lineno,
                )
            seen_header = True
            continue
        if line.startswith("//"):
            break  # end of the (first) alignment
        if line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ParseError(
                f"expected '<name> <aligned sequence>', got {len(parts)} fields",
                source=builder.source,
                line=lineno,
            )
        builder.add_line(parts[0], parts[1], lineno)
    if not seen_header:
        raise ParseError("empty file; expected a Stockholm alignment", source=builder.source)
    return builder.result()


def parse_stockholm(
    text: str | bytes, *, max_sequences: int | None = None, source: str = "<stockholm>"
) -> Msa:
    """Parse Stockholm text (first sequence = query); see :func:`read_stockholm`."""
    text = as_text(text, source)
    return _stockholm_lines(io.StringIO(text), _StockholmBuilder(max_sequences, source))


def read_stockholm(source: str | os.PathLike | IO[str], *, max_sequences: int | None = None) -> Msa:
    """Stream a Stockholm alignment from a path or text file object, line by line.

    The file is never loaded whole: each block's rows are reduced to the query columns as they
    are read, so memory is proportional to (rows kept) x (query length). With
    ``max_sequences`` only the first N distinct names (query included) are kept, as AF2's
    ``truncate_stockholm_msa``; by default (precomputed files) every row is read. Reading
    stops at the first '//' line.

    Columns where the query has a gap ('-' or '.') are removed; residues of other rows in those
    columns are counted into the deletion matrix (OpenFold ``parse_stockholm``). Kept residues
    are upper-cased and '.' becomes '-'. Descriptions are the sequence names.

    Raises:
        ParseError: no '# STOCKHOLM' header, a malformed line, an invalid character or rows
            of inconsistent width.
    """
    if hasattr(source, "read"):
        name = getattr(source, "name", "<stockholm>")
        return _stockholm_lines(
            _checked_lines(source, str(name)), _StockholmBuilder(max_sequences, str(name))
        )
    path = os.fspath(source)
    try:
        with open(path, encoding="utf-8") as f:
            return _stockholm_lines(_checked_lines(f, path), _StockholmBuilder(max_sequences, path))
    except OSError as e:
        raise ParseError(f"cannot read file: {e.strerror}", source=path) from None


def _checked_lines(f: IO, source: str) -> Iterator[str]:
    try:
        for line in f:
            yield as_text(line, source)
    except UnicodeDecodeError as e:
        raise ParseError(f"not UTF-8 text ({e.reason})", source=source) from None


# ---------------------------------------------------------------------------------------------
# Species identifiers (AF2 msa_identifiers)

_UNIPROT = re.compile(
    r"^(?:tr|sp)\|[A-Za-z0-9]{6,10}(?:_\d)?\|[A-Za-z0-9]+_(?P<species>[A-Za-z0-9]{1,5})(?:_\d+)?$"
)


def species_id(description: str) -> str:
    """UniProt mnemonic species code from an MSA row description ('' if none).

    The identifier is the first word up to '/', matched against
    ``(tr|sp)|ACCESSION|ENTRY_SPECIES`` (AF2 ``msa_identifiers.get_identifiers``).
    """
    words = description.split()
    if not words:
        return ""
    match = _UNIPROT.search(words[0].partition("/")[0].strip())
    return match.group("species") if match else ""


# Template hits and mmCIF live in their own modules; re-exported here for one import point.
from sparkfold.data.hits import parse_hhr, parse_hmmsearch_sto
from sparkfold.data.mmcif import MmcifChain, MmcifStructure, parse_mmcif, read_mmcif
