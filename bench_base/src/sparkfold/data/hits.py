"""Template-hit parsers: HHsearch/HHblits ``.hhr`` and hmmsearch Stockholm.

Semantics follow OpenFold's ``parsers.py`` (commit ce0029e) so the golden hit fixtures match;
errors are :class:`~sparkfold.data.parsers.ParseError`.
"""

import itertools
import re

from sparkfold.data.parsers import _ALIGNED_OK, ParseError, TemplateHit, as_text

__all__ = ["parse_hhr", "parse_hmmsearch_sto"]


# ---------------------------------------------------------------------------------------------
# HHR (hhsearch / hhblits results)

_HHR_ALIGN = re.compile(r"(\d+) ([A-Za-z\-]+)\s+(\d+) \((\d+)\)$")
_HHR_SKIP = ("ss_dssp", "ss_pred", "Consensus")


def _residue_indices(segment: str, start: int) -> list[int]:
    out, counter = [], start
    for ch in segment:
        if ch == "-":
            out.append(-1)
        else:
            out.append(counter)
            counter += 1
    return out


def _parse_hhr_block(lines: list[str], first_line: int, source: str) -> TemplateHit:
    try:
        number = int(lines[0].split()[-1])
    except (ValueError, IndexError):
        raise ParseError(
            f"bad hit header {lines[0]!r}; expected 'No <n>'", source=source, line=first_line
        ) from None
    if len(lines) < 3 or not lines[1].startswith(">"):
        raise ParseError(
            "hit block must start with 'No <n>', '>name', then the summary line",
            source=source,
            line=first_line,
        )
    name = lines[1][1:]
    fields = dict(re.findall(r"([A-Za-z_\-]+)=(\S+)", lines[2]))
    try:
        aligned_cols = int(float(fields["Aligned_cols"]))
        sum_probs = float(fields["Sum_probs"])
    except (KeyError, ValueError):
        raise ParseError(
            "hit summary line lacks 'Aligned_cols=' / 'Sum_probs='",
            source=source,
            line=first_line + 2,
        ) from None
    query, hit = [], []
    indices_query: list[int] = []
    indices_hit: list[int] = []
    block_len = None
    for offset, line in enumerate(lines[3:], start=first_line + 3):
        kind = line[:2]
        if kind not in ("Q ", "T ") or line[2:].split(" ", 1)[0] in _HHR_SKIP:
            continue
        # DEVIATION: fields are read from the right, not at OpenFold's fixed column 17, so
        # names longer than 14 characters still parse.
        match = _HHR_ALIGN.search(line.rstrip())
        if match is None:
            raise ParseError(f"cannot parse alignment line {line!r}", source=source, line=offset)
        start, segment, end = int(match.group(1)) - 1, match.group(2).upper(), int(match.group(3))
        if kind == "Q ":
            block_len = end - start + segment.count("-")
            if block_len != len(segment):
                raise ParseError(
                    "query segment length disagrees with its start/end", source=source, line=offset
                )
            query.append(segment)
            indices_query += _residue_indices(segment, start)
        else:
            if block_len != len(segment):
                raise ParseError(
                    "template segment length differs from the query segment",
                    source=source,
                    line=offset,
                )
            hit.append(segment)
            indices_hit += _residue_indices(segment, start)
    if len(indices_query) != len(indices_hit):
        raise ParseError(
            f"hit {number}: query and template alignments differ in length",
            source=source,
            line=first_line,
        )
    return TemplateHit(
        index=number,
        name=name,
        aligned_cols=aligned_cols,
        sum_probs=sum_probs,
        query="".join(query),
        hit_sequence="".join(hit),
        indices_query=tuple(indices_query),
        indices_hit=tuple(indices_hit),
    )


def parse_hhr(text: str | bytes, *, source: str = "<hhr>") -> tuple[TemplateHit, ...]:
    """Parse an HHsearch/HHblits ``.hhr`` file into its hits (file order; may be empty).

    Each hit block starts at a line 'No <n>'; the Q/T alignment lines (Consensus, ss_dssp and
    ss_pred rows skipped) give the aligned query and template strings and their residue
    indices (0-based, -1 for gaps), as OpenFold ``parse_hhr``.
    """
    lines = as_text(text, source).splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("No ")]
    starts.append(len(lines))
    return tuple(_parse_hhr_block(lines[a:b], a + 1, source) for a, b in itertools.pairwise(starts))


# ---------------------------------------------------------------------------------------------
# hmmsearch Stockholm (hmm_output.sto; multimer template hits)

_HMMSEARCH_DESC = re.compile(
    r"^>?([a-z0-9]+)_(\w+)/([0-9]+)-([0-9]+).*protein length:([0-9]+) *(.*)$"
)


def _a3m_indices(sequence: str, start: int) -> list[int]:
    out, counter = [], start
    for ch in sequence:
        if ch == "-":
            out.append(-1)
        elif ch.islower():
            counter += 1
        else:
            out.append(counter)
            counter += 1
    return out


def parse_hmmsearch_sto(
    text: str | bytes, query_sequence: str, *, source: str = "<hmm_output.sto>"
) -> tuple[TemplateHit, ...]:
    """Template hits from hmmsearch Stockholm output against pdb_seqres (OpenFold semantics).

    Rows whose '#=GS <name> DE' description lacks 'mol:protein' are skipped; names look like
    ``4pqx_A/2-217``. ``sum_probs`` is None; ``query`` is the whole query sequence.
    """
    text = as_text(text, source)
    sequences: dict[str, list[str]] = {}
    descriptions: dict[str, str] = {}
    seen_header = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if not seen_header:
            if not line.startswith("# STOCKHOLM"):
                raise ParseError(
                    "not a Stockholm file: the first line must be '# STOCKHOLM 1.0'",
                    source=source,
                    line=lineno,
                )
            seen_header = True
        elif line.startswith("#=GS"):
            cols = line.split(maxsplit=3)
            if len(cols) >= 3 and cols[2] == "DE":
                descriptions[cols[1]] = cols[3] if len(cols) == 4 else ""
        elif line.startswith("//"):
            break
        elif not line.startswith("#"):
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise ParseError("expected '<name> <aligned sequence>'", source=source, line=lineno)
            if not _ALIGNED_OK.fullmatch(parts[1]):
                raise ParseError(
                    "invalid character in an alignment row", source=source, line=lineno
                )
            sequences.setdefault(parts[0], []).append(parts[1])
    indices_query = tuple(_a3m_indices(query_sequence, 0))
    hits = []
    for i, (name, parts) in enumerate(sequences.items(), start=1):
        description = f"{name} {descriptions.get(name, '')}".strip()
        if "mol:protein" not in description:
            continue
        meta = _HMMSEARCH_DESC.match(description)
        if meta is None:
            raise ParseError(f"cannot parse hmmsearch description {description!r}", source=source)
        sequence = "".join(parts).replace(".", "")
        hits.append(
            TemplateHit(
                index=i,
                name=f"{meta[1]}_{meta[2]}",
                aligned_cols=sum(c.isupper() for c in sequence),
                sum_probs=None,
                query=query_sequence,
                hit_sequence=sequence.upper(),
                indices_query=indices_query,
                indices_hit=tuple(_a3m_indices(sequence, int(meta[3]) - 1)),
            )
        )
    return tuple(hits)
