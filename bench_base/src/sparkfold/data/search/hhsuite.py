"""HH-suite tools as thin subprocess wrappers: hhblits (BFD + UniRef30) and hhsearch (PDB70).

The command lines are AF2/OpenFold's (shared/spec/inference_cli.md §4). The binaries come from
the system (Debian/Ubuntu package ``hhsuite``, or bioconda). The template-search input is the
UniRef90 jackhmmer alignment turned into A3M as AF2 does (:func:`template_search_a3m`).
"""

import itertools
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sparkfold.data.search._util import (
    SearchError,
    check_hhsuite_database,
    find_binary,
    run_tool,
)

log = logging.getLogger(__name__)

__all__ = ["hhblits", "hhsearch", "template_search_a3m"]


def hhblits(
    sequence: str,
    databases: Sequence[str | os.PathLike],
    *,
    name: str = "query",
    binary: str | os.PathLike = "hhblits",
    cpus: int = 4,
    num_iterations: int = 3,
    e_value: float = 0.001,
    maxseq: int = 1_000_000,
    realign_max: int = 100_000,
    maxfilt: int = 100_000,
    min_prefilter_hits: int = 1000,
    database_names: Sequence[str] | None = None,
) -> str:
    """Search a sequence against HH-suite databases with hhblits; return the A3M alignment.

    The command is ``hhblits -i <fasta> -cpu <cpus> -oa3m <a3m> -o /dev/null -n 3 -e 0.001
    -maxseq 1000000 -realign_max 100000 -maxfilt 100000 -min_prefilter_hits 1000 -d <db>...``
    (AF2/OpenFold; their ``-p``/``-Z`` are passed only when changed from hhblits's defaults,
    which they never are, so they are not offered here).

    Args:
        sequence: The query protein sequence.
        databases: HH-suite database prefixes, searched together (``-d`` each); AF2 uses BFD
            then UniRef30 (or Uniclust30).
        name: The query's name (first A3M row header).
        binary: The hhblits executable (name on PATH or path).
        cpus: ``-cpu``, threads.
        num_iterations: ``-n``, search iterations.
        e_value: ``-e``, E-value cutoff for inclusion in the result alignment.
        maxseq: ``-maxseq``, maximum number of input rows.
        realign_max: ``-realign_max``, realign at most this many hits.
        maxfilt: ``-maxfilt``, at most this many hits pass the prefilter.
        min_prefilter_hits: ``-min_prefilter_hits``, minimum hits kept by the prefilter.
        database_names: sparkfold names of ``databases`` (for error messages).

    Returns:
        The A3M text (query first).

    Raises:
        ToolNotFoundError: hhblits is not installed.
        DatabaseMissingError: a database prefix has no ffindex files.
        SearchError: hhblits fails.
    """
    if not databases:
        raise ValueError("hhblits needs at least one database")
    names = list(database_names) if database_names else [None] * len(databases)
    for db, db_name in zip(databases, names):
        check_hhsuite_database(db, name=db_name)
    exe = find_binary(binary, tool="hhblits", option="--hhblits-binary")
    with tempfile.TemporaryDirectory(prefix="sparkfold-hhblits-") as tmp:
        query = Path(tmp, "query.fasta")
        query.write_text(f">{name}\n{sequence}\n")
        out = Path(tmp, "output.a3m")
        cmd = [
            exe, "-i", query, "-cpu", str(cpus), "-oa3m", out, "-o", os.devnull,
            "-n", str(num_iterations), "-e", str(e_value), "-maxseq", str(maxseq),
            "-realign_max", str(realign_max), "-maxfilt", str(maxfilt),
            "-min_prefilter_hits", str(min_prefilter_hits),
        ]
        for db in databases:
            cmd += ["-d", os.fspath(db)]
        run_tool(cmd, what="hhblits", cwd=tmp)
        if not out.is_file():
            raise SearchError(f"hhblits wrote no alignment ({' '.join(map(str, cmd))})")
        return out.read_text()


def hhsearch(
    a3m: str,
    database: str | os.PathLike,
    *,
    binary: str | os.PathLike = "hhsearch",
    cpus: int = 2,
    maxseq: int = 1_000_000,
    database_name: str | None = "pdb70",
) -> str:
    """Search an A3M alignment against an HH-suite template database; return the ``.hhr`` text.

    The command is ``hhsearch -i <a3m> -o <hhr> -maxseq 1000000 -cpu 2 -d <pdb70>``
    (AF2/OpenFold).

    Args:
        a3m: The query alignment (A3M text, query first), usually from
            :func:`template_search_a3m`.
        database: HH-suite database prefix (``.../pdb70/pdb70``).
        binary: The hhsearch executable.
        cpus: ``-cpu``; AF2 and OpenFold use 2.
        maxseq: ``-maxseq``, maximum number of input rows.
        database_name: sparkfold name of the database (error messages).

    Raises:
        ToolNotFoundError: hhsearch is not installed.
        DatabaseMissingError: the database prefix has no ffindex files.
        SearchError: hhsearch fails.
    """
    check_hhsuite_database(database, name=database_name)
    exe = find_binary(binary, tool="hhsearch", option="--hhsearch-binary")
    with tempfile.TemporaryDirectory(prefix="sparkfold-hhsearch-") as tmp:
        query = Path(tmp, "query.a3m")
        query.write_text(a3m)
        out = Path(tmp, "output.hhr")
        cmd = [
            exe, "-i", query, "-o", out, "-maxseq", str(maxseq), "-cpu", str(cpus),
            "-d", os.fspath(database),
        ]
        run_tool(cmd, what="hhsearch", cwd=tmp)
        if not out.is_file():
            raise SearchError(f"hhsearch wrote no result ({' '.join(map(str, cmd))})")
        return out.read_text()


def _stockholm_rows(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Aligned rows (blocks joined) and ``#=GS DE`` descriptions of a Stockholm text."""
    rows: dict[str, list[str]] = {}
    descriptions: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#=GS"):
            cols = line.split(maxsplit=3)
            if len(cols) >= 3 and cols[2] == "DE":
                descriptions[cols[1]] = cols[3] if len(cols) == 4 else ""
        elif line.strip() and not line.startswith(("#", "//")):
            parts = line.split()
            if len(parts) != 2:
                raise SearchError(f"malformed Stockholm line {line[:60]!r}")
            rows.setdefault(parts[0], []).append(parts[1])
    return {k: "".join(v) for k, v in rows.items()}, descriptions


def template_search_a3m(stockholm: str) -> str:
    """The hhsearch input made from the UniRef90 jackhmmer alignment, as AF2 makes it.

    AF2 ``deduplicate_stockholm_msa`` → ``remove_empty_columns_from_stockholm_msa`` →
    ``convert_stockholm_to_a3m``: rows identical on the query's columns are dropped (first
    kept), columns that are gaps in every row are removed, then columns where the query has a
    residue are kept as match states and the others become lower-case insertions (gaps there
    dropped). Headers are ``>name description``.

    Raises:
        SearchError: the text holds no alignment rows.
    """
    rows, descriptions = _stockholm_rows(stockholm)
    if not rows:
        raise SearchError("the UniRef90 alignment has no rows; cannot build the template query")
    rows = {k: v.replace(".", "-") for k, v in rows.items()}
    query = next(iter(rows.values()))
    query_mask = [c != "-" for c in query]
    seen, kept = set(), {}
    for name, aligned in rows.items():
        key = "".join(itertools.compress(aligned, query_mask))
        if key in seen:
            continue
        seen.add(key)
        kept[name] = aligned
    width = len(query)
    for name, aligned in kept.items():
        if len(aligned) != width:
            raise SearchError(f"Stockholm row {name!r} has {len(aligned)} columns, not {width}")
    non_empty = [any(row[j] != "-" for row in kept.values()) for j in range(width)]
    kept = {k: "".join(itertools.compress(v, non_empty)) for k, v in kept.items()}
    query_res = [c != "-" for c in next(iter(kept.values()))]
    chunks = []
    for name, aligned in kept.items():
        out = "".join(
            c if is_match else c.lower()
            for is_match, c in zip(query_res, aligned)
            if is_match or c != "-"
        )
        chunks.append(f">{name} {descriptions.get(name, '')}\n{out}")
    return "\n".join(chunks) + "\n"
