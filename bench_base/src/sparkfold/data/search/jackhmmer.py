"""jackhmmer, in-process through pyhmmer, with AF2/OpenFold's flags.

AF2 and OpenFold run ``jackhmmer -o /dev/null -A <sto> --noali --F1 0.0005 --F2 0.00005
--F3 0.0000005 --incE 0.0001 -E 0.0001 --cpu <cpus> -N 1`` and keep the first 10,000
(UniRef90) / 5,000 (MGnify) sequences of the Stockholm output. With ``-N 1`` jackhmmer is a
single search with the query's one-sequence HMM (BLOSUM62, gap open 0.02, extend 0.4), so this
module builds that HMM once and searches the database in blocks:

* the database is streamed (``block_size`` sequences at a time), never loaded whole, and the
  blocks are searched on ``cpus`` threads (pyhmmer releases the GIL);
* all queries are searched in the same pass over the database (one read of a 70 GB UniRef90
  for a whole batch of targets);
* per-block hits are merged with ``TopHits.merge``, which recomputes E-values for the total
  database size exactly as one jackhmmer run would (the test checks the output against the
  ``jackhmmer`` binary).

The Stockholm text written is the binary's ``-A`` output: the query row first, then the
included domains named ``<name>/<start>-<end>``, ``#=GS <name> DE`` descriptions, per-residue
``PP`` lines and the ``#=GC RF`` line.
"""

import concurrent.futures
import io
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sparkfold.data.search._util import SearchError, ToolNotFoundError, check_database_file

log = logging.getLogger(__name__)

__all__ = [
    "JACKHMMER_OPTIONS",
    "JackhmmerOptions",
    "jackhmmer",
    "truncate_stockholm",
]


@dataclass(frozen=True)
class JackhmmerOptions:
    """jackhmmer's thresholds (defaults: AF2/OpenFold's command line).

    Attributes:
        f1: ``--F1``, MSV filter P-value threshold.
        f2: ``--F2``, Viterbi filter P-value threshold.
        f3: ``--F3``, Forward filter P-value threshold.
        e_value: ``-E``, per-sequence reporting E-value threshold.
        inclusion_e_value: ``--incE``, per-sequence inclusion E-value threshold (the hits
            that go into the alignment).
        domain_inclusion_e_value: ``--incdomE``, per-domain inclusion threshold (AF2 leaves
            jackhmmer's default, 0.001).
        domain_e_value: ``--domE``, per-domain reporting threshold (jackhmmer's default, 10).
        seed: ``--seed``, jackhmmer's default (42).
    """

    f1: float = 0.0005
    f2: float = 0.00005
    f3: float = 0.0000005
    e_value: float = 0.0001
    inclusion_e_value: float = 0.0001
    domain_inclusion_e_value: float = 0.001
    domain_e_value: float = 10.0
    seed: int = 42

    def pipeline_kwargs(self) -> dict:
        """Keyword arguments of ``pyhmmer.plan7.Pipeline``."""
        return {
            "F1": self.f1,
            "F2": self.f2,
            "F3": self.f3,
            "E": self.e_value,
            "incE": self.inclusion_e_value,
            "incdomE": self.domain_inclusion_e_value,
            "domE": self.domain_e_value,
            "seed": self.seed,
        }

    def as_flags(self) -> list[str]:
        """The equivalent ``jackhmmer`` command-line flags (for the cache key and the benchmark)."""
        return [
            "--F1", str(self.f1), "--F2", str(self.f2), "--F3", str(self.f3),
            "--incE", str(self.inclusion_e_value), "-E", str(self.e_value),
            "--incdomE", str(self.domain_inclusion_e_value), "--domE", str(self.domain_e_value),
            "--seed", str(self.seed), "-N", "1",
        ]


#: AF2/OpenFold's jackhmmer settings.
JACKHMMER_OPTIONS = JackhmmerOptions()


def import_pyhmmer():
    """``(pyhmmer.easel, pyhmmer.plan7)``; a clear error when pyhmmer is not installed."""
    try:
        import pyhmmer  # noqa: F401
        from pyhmmer import easel, plan7
    except ImportError as exc:
        raise ToolNotFoundError(
            "pyhmmer is not installed (needed for jackhmmer searches)",
            fix="pip install 'sparkfold[msa]' (or pip install pyhmmer)",
        ) from exc
    return easel, plan7


def truncate_stockholm(text: str, max_sequences: int) -> str:
    """Keep the first ``max_sequences`` sequences of a Stockholm alignment (AF2 semantics).

    Sequence lines, ``#=GS`` and ``#=GR`` lines of the other sequences are dropped; every other
    line (header, ``#=GF``, ``#=GC``, blank lines, ``//``) is kept.
    """
    keep: set[str] = set()
    for line in text.splitlines():
        if line.strip() and not line.startswith(("#", "//")):
            name = line.split(maxsplit=1)[0]
            if name not in keep:
                if len(keep) >= max_sequences:
                    break
                keep.add(name)
    out = []
    for line in text.splitlines():
        if line.startswith(("#=GS", "#=GR")):
            parts = line.split(maxsplit=2)
            if len(parts) >= 2 and parts[1] not in keep:
                continue
        elif (
            line.strip()
            and not line.startswith(("#", "//"))
            and line.split(maxsplit=1)[0] not in keep
        ):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def _prune_hits(hits, max_rows: int) -> None:
    """Exclude hits past the first ``max_rows`` included domains (they would be truncated).

    DEVIATION: the jackhmmer binary aligns every included hit and AF2 then cuts the file to
    N sequences; dropping the surplus hits first bounds memory for very large hit lists. The
    rows kept are identical; only all-gap insert columns of dropped rows are absent, which no
    reader of the file (query-column parsing, template a3m conversion) depends on.
    """
    rows = 0
    for hit in hits:
        if not hit.included:
            continue
        if rows >= max_rows:
            hit.included = False
            continue
        rows += sum(1 for d in hit.domains if d.included)


ProgressFn = Callable[[int, int, int], None]


def jackhmmer(
    queries: Mapping[str, str],
    database: str | os.PathLike,
    *,
    max_sequences: int | None,
    cpus: int = 4,
    options: JackhmmerOptions = JACKHMMER_OPTIONS,
    block_size: int = 10_000,
    database_name: str | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, str]:
    """Search protein sequences against a FASTA database, as ``jackhmmer -N 1 -A``.

    Args:
        queries: ``{name: sequence}``; the name is the query row's name in the output.
        database: FASTA file of the sequence database (plain text; gzip is not supported).
        max_sequences: Keep the first N sequences of each alignment, query included (AF2:
            10,000 for UniRef90, 5,000 for MGnify); None keeps all.
        cpus: Worker threads (``--cpu``); each searches one (block, query) pair at a time.
        options: Thresholds; default AF2/OpenFold's (:data:`JACKHMMER_OPTIONS`).
        block_size: Database sequences per block (at most ~``2 * cpus`` blocks in memory).
        database_name: The database's sparkfold name, for error messages.
        progress: Called as ``progress(sequences_done, bytes_done, bytes_total)`` after each
            block.

    Returns:
        ``{name: Stockholm text}`` per query, in the order given.

    Raises:
        ToolNotFoundError: pyhmmer is not installed.
        DatabaseMissingError: the database file is absent or unreadable.
        SearchError: the database is empty or not valid FASTA, or a query is not a protein
            sequence.
    """
    easel, plan7 = import_pyhmmer()
    if not queries:
        return {}
    if max_sequences is not None and max_sequences < 1:
        raise ValueError(f"max_sequences must be >= 1 or None, got {max_sequences}")
    path = check_database_file(database, name=database_name)
    label = database_name or path.name
    alphabet = easel.Alphabet.amino()
    background = plan7.Background(alphabet)
    builder = plan7.Builder(alphabet, seed=options.seed, architecture="hand")
    digital, hmms = {}, {}
    for name, sequence in queries.items():
        try:
            seq = easel.TextSequence(name=name.encode(), sequence=sequence).digitize(alphabet)
        except ValueError as exc:
            raise SearchError(f"query {name!r} is not a protein sequence: {exc}") from exc
        digital[name] = seq
        hmms[name] = builder.build(seq, background)[0]
    kwargs = options.pipeline_kwargs()

    def search(name, block):
        pipeline = plan7.Pipeline(alphabet, background=background, **kwargs)
        return pipeline.search_hmm(hmms[name], block)

    per_query: dict[str, list] = {name: [] for name in queries}
    total_bytes = path.stat().st_size
    if total_bytes == 0:
        raise SearchError(
            f"database {label!r} ({path}) is an empty file",
            fix="point it at the real database (re-download it if it was truncated)",
        )
    done = 0
    workers = max(1, int(cpus))
    try:
        with open(path, "rb") as handle, easel.SequenceFile(
            handle, digital=True, alphabet=alphabet, format="fasta"
        ) as reader, concurrent.futures.ThreadPoolExecutor(workers) as pool:
            # One task per (block, query), so that threads are busy even with one block or
            # one query; at most ~2 * cpus tasks (and their blocks) are in flight.
            pending: list[tuple[str, concurrent.futures.Future, int]] = []

            def collect(name, future, count):
                nonlocal done
                per_query[name].append(future.result())
                if name == last:
                    done += count
                    if progress is not None:
                        progress(done, handle.tell(), total_bytes)

            last = list(queries)[-1]
            while True:
                block = reader.read_block(sequences=block_size)
                if not block:
                    break
                for name in queries:
                    pending.append((name, pool.submit(search, name, block), len(block)))
                while len(pending) > 2 * workers:
                    collect(*pending.pop(0))
            for item in pending:
                collect(*item)
    except (ValueError, EOFError) as exc:
        raise SearchError(
            f"cannot read database {label!r} ({path}) as protein FASTA: {exc}",
            fix="check that the file is an uncompressed protein FASTA file",
        ) from exc
    except OSError as exc:
        raise SearchError(f"cannot read database {label!r} ({path}): {exc}") from exc

    results = {}
    for name, parts in per_query.items():
        query = digital[name]
        if parts:
            hits = parts[0].merge(*parts[1:]) if len(parts) > 1 else parts[0]
        else:  # empty database: search nothing, still write the query row
            hits = plan7.Pipeline(alphabet, background=background, **kwargs).search_hmm(
                hmms[name], easel.DigitalSequenceBlock(alphabet)
            )
        hits.sort(by="key")
        if max_sequences is not None:
            _prune_hits(hits, max_sequences - 1)
        msa = hits.to_msa(
            alphabet,
            sequences=[query],
            traces=[plan7.Trace.from_sequence(query)],
            all_consensus_cols=True,
            digitize=True,
        )
        msa.name = f"{name}-i1".encode()
        msa.author = b"jackhmmer (sparkfold/pyhmmer)"
        buffer = io.BytesIO()
        msa.write(buffer, "stockholm")
        text = buffer.getvalue().decode("utf-8")
        if max_sequences is not None:
            text = truncate_stockholm(text, max_sequences)
        results[name] = text
        log.info("%s: %s: %d included hits", label, name, sum(1 for h in hits if h.included))
    return results

