"""``run_search``: compute the alignments of a set of targets into OpenFold's folder layout.

``<out_dir>/<tag>/`` receives, depending on ``mode``:

* ``"local"`` — OpenFold's files (shared/spec/inference_cli.md §4): ``uniref90_hits.sto``
  (jackhmmer, first 10,000 rows), ``mgnify_hits.sto`` (jackhmmer, 5,000), ``bfd_uniref_hits.a3m``
  (hhblits over BFD + UniRef30; ``bfd_uniclust_hits.a3m`` with Uniclust30) or, without BFD,
  ``small_bfd_hits.sto`` (jackhmmer), and ``hhsearch_output.hhr`` (hhsearch over PDB70, input
  built from the UniRef90 alignment). The data pipeline reads the folder unchanged.
* ``"server"`` — the ColabFold MMseqs2 server's ``uniref.a3m`` and, with the environmental
  databases, ``bfd.mgnify30.metaeuk30.smag30.a3m`` (each a normal a3m, query first). With
  templates: ``pdb70.m8`` (the server's hits), ``templates/`` (the hits' HH-suite database
  and mmCIF files; use it as the template mmCIF folder) and ``hhsearch_output.hhr`` (hhsearch
  of the alignment against ``templates/pdb70``, as ColabFold does). Sequences leave the
  machine only in this mode.
* ``"single"`` — ``single_sequence.a3m``: one row, the query, named by its tag. The features
  are those of a folder without alignments (the 1-row MSA); the file makes the folder
  self-describing, so every target of a run has a folder.

Finished steps are recorded in a hidden manifest and reused on reruns (see
:mod:`sparkfold.data.search.cache`); ``overwrite=True`` recomputes. Files of steps that a new
run does not include (another mode, fewer databases) are removed, so a folder always holds
exactly the last run's alignments. Other files in the folder are left alone (and, if they are
``.a3m``/``.sto``, read by the pipeline: a warning names them).
"""

import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sparkfold.data.search import hhsuite as hh
from sparkfold.data.search import msa_server as ms
from sparkfold.data.search._util import (
    PARTIAL_MARK,
    SearchError,
    atomic_write,
    check_database_file,
    check_hhsuite_database,
    find_binary,
    remove_partials,
)
from sparkfold.data.search.cache import MANIFEST_NAME, TargetManifest, database_identity, step_key
from sparkfold.data.search.jackhmmer import JACKHMMER_OPTIONS, import_pyhmmer, jackhmmer
from sparkfold.errors import SparkfoldError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LOCAL_DATABASES",
    "MANIFEST_NAME",
    "MGNIFY_MAX_HITS",
    "SEARCH_MODES",
    "UNIREF90_MAX_HITS",
    "SearchProgress",
    "TargetResult",
    "run_search",
]

SearchMode = Literal["local", "server", "single"]
SEARCH_MODES: tuple[str, ...] = ("local", "server", "single")
UNIREF90_MAX_HITS = 10_000
MGNIFY_MAX_HITS = 5_000
#: Databases searchable in local mode (``bfd`` brings ``uniref30`` or ``uniclust30`` along).
LOCAL_DATABASES: tuple[str, ...] = ("uniref90", "mgnify", "bfd", "small_bfd", "pdb70")
#: The default local set (OpenFold full_dbs; ``small_bfd`` replaces ``bfd`` when only it is set).
DEFAULT_LOCAL_DATABASES: tuple[str, ...] = ("uniref90", "mgnify", "bfd")

JACKHMMER_STEPS = {  # step -> (output file, row limit)
    "uniref90": ("uniref90_hits.sto", UNIREF90_MAX_HITS),
    "mgnify": ("mgnify_hits.sto", MGNIFY_MAX_HITS),
    "small_bfd": ("small_bfd_hits.sto", None),
}
HHSEARCH_OUTPUT = "hhsearch_output.hhr"
SINGLE_OUTPUT = "single_sequence.a3m"
TEMPLATES_DIR = "templates"
_SEQUENCE_OK = re.compile(r"[A-Z]+")
HHBLITS_SETTINGS = (
    "hhblits -n 3 -e 0.001 -maxseq 1000000 -realign_max 100000 -maxfilt 100000 "
    "-min_prefilter_hits 1000"
)
HHSEARCH_SETTINGS = "hhsearch -maxseq 1000000"


@dataclass(frozen=True)
class SearchProgress:
    """One progress report of :func:`run_search`.

    Attributes:
        step: The database or step (``uniref90``, ``pdb70``, ``server``, ``single``...).
        message: Human-readable text.
        fraction: Completed fraction of this step in [0, 1], when known.
    """

    step: str
    message: str
    fraction: float | None = None


@dataclass(frozen=True)
class TargetResult:
    """What :func:`run_search` did for one target.

    Attributes:
        tag: The target's tag (its folder name).
        directory: ``<out_dir>/<tag>``.
        files: Alignment files now in the folder (relative names), sorted.
        searched: Steps computed in this run.
        reused: Steps reused from an earlier run.
    """

    tag: str
    directory: Path
    files: tuple[str, ...]
    searched: tuple[str, ...]
    reused: tuple[str, ...]


ProgressFn = Callable[[SearchProgress], None]


def _check_targets(sequences: Mapping[str, str]) -> dict[str, str]:
    from sparkfold.data.parsers import sanitize_name

    if not sequences:
        raise SparkfoldError("no sequences to search", fix="give at least one FASTA record")
    out = {}
    for tag, seq in sequences.items():
        if not isinstance(tag, str) or sanitize_name(tag) != tag:
            raise SparkfoldError(
                f"target tag {tag!r} is not a safe folder name",
                fix="use sparkfold.data.parsers.sanitize_name(header) to make tags",
            )
        seq = str(seq).strip().upper()
        if not _SEQUENCE_OK.fullmatch(seq):
            raise SparkfoldError(
                f"sequence of {tag!r} is empty or has characters other than letters",
                fix="give the bare amino-acid sequence (no gaps, digits or spaces)",
            )
        out[tag] = seq
    return out


class _Databases:
    """Database paths, from an explicit mapping or :mod:`sparkfold.paths`."""

    def __init__(self, overrides: Mapping[str, str | os.PathLike] | None):
        self.overrides = {k: Path(v) for k, v in (overrides or {}).items()}

    def configured(self, name: str) -> bool:
        if name in self.overrides:
            return True
        from sparkfold.paths import configured_databases

        return name in configured_databases()

    def path(self, name: str) -> Path:
        if name in self.overrides:
            return self.overrides[name]
        from sparkfold.paths import database_path

        return database_path(name)


def _plan_local(dbs: _Databases, databases: Sequence[str] | None, templates: bool | None):
    """The local steps to run, in order, with their database paths (checked)."""
    if databases is None:
        wanted = ["uniref90", "mgnify"]
        if dbs.configured("bfd") or not dbs.configured("small_bfd"):
            wanted.append("bfd")  # raises below if absent, naming bfd
        else:
            wanted.append("small_bfd")
    else:
        wanted = list(dict.fromkeys(databases))
        unknown = [d for d in wanted if d not in LOCAL_DATABASES]
        if unknown:
            raise SparkfoldError(
                f"unknown database(s) for local search: {', '.join(unknown)}",
                fix=f"choose from {', '.join(LOCAL_DATABASES)}",
            )
    if "pdb70" in wanted:
        templates = True
        wanted.remove("pdb70")
    if templates is None:
        templates = dbs.configured("pdb70")
        if not templates:
            log.warning("pdb70 is not configured: no template search (set SPARKFOLD_DB_PDB70)")
    if templates and "uniref90" not in wanted:
        raise SparkfoldError(
            "the template search (pdb70) needs the uniref90 alignment",
            fix="add uniref90 to the databases or turn templates off",
        )
    plan = []
    for name in wanted:
        if name == "bfd":
            bfd = check_hhsuite_database(dbs.path("bfd"), name="bfd")
            if dbs.configured("uniref30"):
                partner, output = "uniref30", "bfd_uniref_hits.a3m"
            elif dbs.configured("uniclust30"):
                partner, output = "uniclust30", "bfd_uniclust_hits.a3m"
            else:
                dbs.path("uniref30")  # raises DatabaseNotConfiguredError with the fix
                raise AssertionError("unreachable")
            paths = [bfd, check_hhsuite_database(dbs.path(partner), name=partner)]
            plan.append(("bfd", output, {"bfd": paths[0], partner: paths[1]}))
        else:
            path = check_database_file(dbs.path(name), name=name)
            plan.append((name, JACKHMMER_STEPS[name][0], {name: path}))
    if templates:
        pdb70 = check_hhsuite_database(dbs.path("pdb70"), name="pdb70")
        plan.append(("pdb70", HHSEARCH_OUTPUT, {"pdb70": pdb70}))
    return plan


def _check_tools(mode, plan, templates, hhblits_binary, hhsearch_binary) -> None:
    """Fail before any long search when a needed tool is missing."""
    steps = {step for step, _, _ in plan}
    if steps & set(JACKHMMER_STEPS):
        import_pyhmmer()
    if "bfd" in steps:
        find_binary(hhblits_binary, tool="hhblits", option="--hhblits-binary")
    if "pdb70" in steps or (mode == "server" and templates):
        find_binary(hhsearch_binary, tool="hhsearch", option="--hhsearch-binary")


def _identity(paths: Mapping[str, Path], step: str) -> dict:
    hhsuite = step in ("bfd", "pdb70")
    return {name: database_identity(p, hhsuite=hhsuite) for name, p in paths.items()}


class _Run:
    """State of one run_search call: folders, manifests, bookkeeping."""

    def __init__(self, targets, out_dir, overwrite, progress):
        self.targets = targets
        self.out_dir = Path(out_dir)
        self.overwrite = overwrite
        self._progress = progress
        self.folders = {tag: self.out_dir / tag for tag in targets}
        self.manifests = {}
        self.searched = {tag: [] for tag in targets}
        self.reused = {tag: [] for tag in targets}
        for tag, folder in self.folders.items():
            folder.mkdir(parents=True, exist_ok=True)
            remove_partials(folder)
            templates = folder / TEMPLATES_DIR
            if templates.is_dir():
                remove_partials(templates)
            self.manifests[tag] = TargetManifest(folder)

    def report(self, step: str, message: str, fraction: float | None = None) -> None:
        log.info("%s: %s", step, message)
        if self._progress is not None:
            self._progress(SearchProgress(step, message, fraction))

    def pending(self, step: str, keys: Mapping[str, str]) -> list[str]:
        """Tags whose ``step`` must run (others are marked reused)."""
        todo = []
        for tag, key in keys.items():
            if not self.overwrite and self.manifests[tag].is_fresh(step, key):
                self.reused[tag].append(step)
            else:
                self.manifests[tag].forget(step, delete_files=False)
                todo.append(tag)
        if len(todo) < len(keys):
            self.report(step, f"reusing {len(keys) - len(todo)} finished target(s)", None)
        return todo

    def done(self, tag: str, step: str, key: str, files: Sequence[str]) -> None:
        self.manifests[tag].record(step, key, files)
        self.searched[tag].append(step)

    def finish(self, steps: Sequence[str]) -> dict[str, TargetResult]:
        results = {}
        for tag, manifest in self.manifests.items():
            for old in [s for s in manifest.steps if s not in steps]:
                log.info("%s: removing the files of step %r from an earlier run", tag, old)
                manifest.forget(old)
            templates = self.folders[tag] / TEMPLATES_DIR
            if templates.is_dir() and not any(templates.iterdir()):
                templates.rmdir()
            files = sorted({f for s in steps for f in manifest.files(s)})
            strays = sorted(
                p.name for p in self.folders[tag].iterdir()
                if p.suffix in (".a3m", ".sto", ".hhr") and p.name not in files
            )
            if strays:
                log.warning(
                    "%s: %s also hold(s) alignments that this run did not write; the data "
                    "pipeline reads them too", self.folders[tag], ", ".join(strays),
                )
            results[tag] = TargetResult(
                tag, self.folders[tag], tuple(files),
                tuple(self.searched[tag]), tuple(self.reused[tag]),
            )
        return results


def _run_single(run: _Run) -> list[str]:
    for tag, seq in run.targets.items():
        key = step_key(seq, "single", {})
        if run.pending("single", {tag: key}):
            atomic_write(run.folders[tag] / SINGLE_OUTPUT, f">{tag}\n{seq}\n")
            run.done(tag, "single", key, [SINGLE_OUTPUT])
    run.report("single", f"{len(run.targets)} target(s): single-sequence a3m written", 1.0)
    return ["single"]


def _run_local(run: _Run, plan, *, cpus, hhblits_binary, hhsearch_binary) -> list[str]:
    keys: dict[str, dict[str, str]] = {}
    for step, output, paths in plan:
        settings: dict = {"databases": _identity(paths, step), "output": output}
        if step in JACKHMMER_STEPS:
            settings["flags"] = JACKHMMER_OPTIONS.as_flags()
            settings["max_sequences"] = JACKHMMER_STEPS[step][1]
        elif step == "bfd":
            settings["tool"] = HHBLITS_SETTINGS
        else:
            settings["tool"] = HHSEARCH_SETTINGS
        keys[step] = {}
        for tag, seq in run.targets.items():
            # The template search depends on the uniref90 alignment it starts from.
            extra = {"uniref90": keys["uniref90"][tag]} if step == "pdb70" else {}
            keys[step][tag] = step_key(seq, step, {**settings, **extra})
        todo = run.pending(step, keys[step])
        if not todo:
            continue
        if step in JACKHMMER_STEPS:
            db_name, db_path = next(iter(paths.items()))
            size = db_path.stat().st_size

            def progress(n_seq, done_bytes, total, _step=step):
                run.report(_step, f"{n_seq} database sequences searched "
                           f"({done_bytes / 1e9:.2f}/{total / 1e9:.2f} GB)",
                           done_bytes / total if total else None)

            run.report(step, f"jackhmmer: {len(todo)} target(s) against {db_path} "
                       f"({size / 1e9:.2f} GB)", 0.0)
            stos = jackhmmer(
                {t: run.targets[t] for t in todo}, db_path,
                max_sequences=JACKHMMER_STEPS[step][1], cpus=cpus, database_name=db_name,
                progress=progress,
            )
            for tag in todo:
                atomic_write(run.folders[tag] / output, stos[tag])
                run.done(tag, step, keys[step][tag], [output])
        elif step == "bfd":
            for i, tag in enumerate(todo):
                run.report(step, f"hhblits {tag} ({i + 1}/{len(todo)})", i / len(todo))
                a3m = hh.hhblits(
                    run.targets[tag], list(paths.values()), name=tag, binary=hhblits_binary,
                    cpus=cpus, database_names=list(paths),
                )
                atomic_write(run.folders[tag] / output, a3m)
                run.done(tag, step, keys[step][tag], [output])
        else:
            for i, tag in enumerate(todo):
                run.report(step, f"hhsearch {tag} ({i + 1}/{len(todo)})", i / len(todo))
                sto = (run.folders[tag] / JACKHMMER_STEPS["uniref90"][0]).read_text()
                hhr = hh.hhsearch(hh.template_search_a3m(sto), paths["pdb70"],
                                  binary=hhsearch_binary)
                atomic_write(run.folders[tag] / output, hhr)
                run.done(tag, step, keys[step][tag], [output])
        run.report(step, f"done ({len(todo)} searched)", 1.0)
    return [step for step, _, _ in plan]


def _install_templates(folder: Path, archive: bytes) -> list[str]:
    """Extract a template archive into ``folder/templates`` and make it an hhsearch database.

    Returns the written files, relative to ``folder``.
    """
    dest = folder / TEMPLATES_DIR
    staging = folder / f".{TEMPLATES_DIR}{PARTIAL_MARK}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    ms.safe_extract(archive, staging)
    index = staging / "pdb70_a3m.ffindex"
    if not index.is_file():
        shutil.rmtree(staging, ignore_errors=True)
        raise ms.MalformedArchiveError("the server's template archive has no pdb70_a3m.ffindex")
    # As ColabFold: a cs219 index equal to the a3m index and an empty cs219 data file.
    shutil.copyfile(index, staging / "pdb70_cs219.ffindex")
    (staging / "pdb70_cs219.ffdata").write_bytes(b"")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(staging, dest)
    return sorted(str(p.relative_to(folder)) for p in dest.rglob("*") if p.is_file())


def _run_server(
    run: _Run, *, url, use_env, templates, email, client, hhsearch_binary
) -> list[str]:
    settings = {"url": url, "mode": ms.server_mode(use_env=use_env), "templates": templates}
    keys = {t: step_key(s, "server", settings) for t, s in run.targets.items()}
    todo = run.pending("server", keys)
    if todo:
        client = client or ms.MsaServerClient(url, email=email)
        result = client.search(
            [run.targets[t] for t in todo], use_env=use_env, templates=templates,
            progress=lambda m: run.report("server", m),
        )
        for tag, number in zip(todo, result.numbers):
            folder = run.folders[tag]
            files = []
            for name, text in result.a3m[number].items():
                atomic_write(folder / name, text)
                files.append(name)
            hits = result.template_hits.get(number, []) if templates else []
            if hits:
                run.report("server", f"{tag}: fetching {len(hits)} template(s)")
                files += _install_templates(folder, client.fetch_templates(hits))
                m8 = "".join(f"{number}\t{h}\n" for h in hits)
                atomic_write(folder / ms.TEMPLATE_HITS_M8, m8)
                query = "".join(result.a3m[number].values())
                hhr = hh.hhsearch(query, folder / TEMPLATES_DIR / "pdb70",
                                  binary=hhsearch_binary, database_name=None)
                atomic_write(folder / HHSEARCH_OUTPUT, hhr)
                files += [ms.TEMPLATE_HITS_M8, HHSEARCH_OUTPUT]
            elif templates:
                run.report("server", f"{tag}: the server found no templates")
            run.done(tag, "server", keys[tag], files)
    run.report("server", f"done ({len(todo)} searched)", 1.0)
    return ["server"]


def run_search(
    sequences: Mapping[str, str],
    out_dir: str | os.PathLike,
    *,
    mode: SearchMode = "local",
    databases: Sequence[str] | None = None,
    templates: bool | None = None,
    database_paths: Mapping[str, str | os.PathLike] | None = None,
    cpus: int = 4,
    overwrite: bool = False,
    hhblits_binary: str | os.PathLike = "hhblits",
    hhsearch_binary: str | os.PathLike = "hhsearch",
    server_url: str = ms.DEFAULT_SERVER_URL,
    server_use_env: bool = True,
    email: str | None = None,
    server_client: "ms.MsaServerClient | None" = None,
    progress: ProgressFn | None = None,
) -> dict[str, TargetResult]:
    """Compute alignments for ``sequences`` into ``out_dir/<tag>/`` (see the module docstring).

    Args:
        sequences: ``{tag: sequence}``; tags must be safe folder names
            (:func:`sparkfold.data.parsers.sanitize_name`).
        out_dir: The alignments folder (OpenFold's ``--use_precomputed_alignments`` folder).
        mode: ``"local"`` (jackhmmer/hhblits/hhsearch on local databases), ``"server"``
            (ColabFold MMseqs2 server: sends the sequences to ``server_url``) or
            ``"single"`` (no search).
        databases: Local mode: the databases to search, from ``uniref90``, ``mgnify``,
            ``bfd`` (with ``uniref30``, else ``uniclust30``), ``small_bfd``, ``pdb70``. None:
            OpenFold's set, ``uniref90``, ``mgnify`` and ``bfd`` (``small_bfd`` when only it is
            configured), every one required.
        templates: Template search. Local: None searches ``pdb70`` when it is configured.
            Server: fetch the server's templates (None and False: no; they cost the server
            extra work).
        database_paths: ``{name: path}`` overriding :mod:`sparkfold.paths` (e.g. for tests).
        cpus: Threads for jackhmmer and hhblits.
        overwrite: Recompute every step, ignoring finished results.
        hhblits_binary: The hhblits executable (name on PATH or path).
        hhsearch_binary: The hhsearch executable.
        server_url: The MMseqs2 server (server mode only).
        server_use_env: Also search the environmental databases (ColabFold's default).
        email: Contact address sent in the User-Agent (server mode).
        server_client: A configured :class:`MsaServerClient` to use instead of a default one.
        progress: Called with a :class:`SearchProgress` per step event.

    Returns:
        ``{tag: TargetResult}``.

    Raises:
        SparkfoldError: bad input; a database not configured
            (:class:`sparkfold.paths.DatabaseNotConfiguredError`) or missing
            (:class:`DatabaseMissingError`); a missing tool (:class:`ToolNotFoundError`);
            a failed search (:class:`SearchError`) or server (:class:`MsaServerError`).
    """
    if mode not in SEARCH_MODES:
        raise SparkfoldError(f"unknown MSA mode {mode!r}", fix=f"use one of {SEARCH_MODES}")
    if cpus < 1:
        raise SparkfoldError(f"cpus must be at least 1, got {cpus}", fix="pass --cpus 1 or more")
    targets = _check_targets(sequences)
    if mode == "local":
        plan = _plan_local(_Databases(database_paths), databases, templates)
    elif databases is not None:
        raise SparkfoldError(
            f"databases can only be chosen in local mode (mode is {mode!r})",
            fix="drop --databases or use --msa-mode local",
        )
    _check_tools(mode, plan if mode == "local" else [], bool(templates), hhblits_binary,
                 hhsearch_binary)
    run = _Run(targets, out_dir, overwrite, progress)
    try:
        if mode == "single":
            steps = _run_single(run)
        elif mode == "local":
            steps = _run_local(run, plan, cpus=cpus, hhblits_binary=hhblits_binary,
                               hhsearch_binary=hhsearch_binary)
        else:
            steps = _run_server(
                run, url=server_url, use_env=server_use_env, templates=bool(templates),
                email=email, client=server_client, hhsearch_binary=hhsearch_binary,
            )
    except SearchError:
        raise
    except OSError as exc:
        raise SearchError(f"cannot write the alignments under {out_dir}: {exc}") from exc
    return run.finish(steps)

