"""FASTA to ranked structures: the library behind ``sparkfold predict``.

:func:`predict` runs every target of an input (FASTA file, A3M file or folder) through features,
the models, ranking, optional Amber relaxation and the output writers, shortest target first,
and records each target's state in ``<out>/manifest.json`` (:mod:`sparkfold.runner.manifest`).
:class:`Predictor` does one target at a time and keeps its models loaded between targets (a
batch runner creates one per GPU). Every setting comes from a frozen :class:`PredictOptions`;
the only outside configuration read is the database paths of :mod:`sparkfold.paths` (local MSA
search, the ``pdb_mmcif`` template folder when ``--template-mmcif-dir`` is not given).

Before any model is loaded, :func:`predict` checks the inputs (sequences, alignment folders,
template folder, the longest sequence that fits the device's free memory) and resolves the
weight files, so bad input fails fast with a clear message.

Outputs of a target appear all at once: they are written into a temporary folder
``<out>/.<tag>.tmp-*`` which is renamed to ``<out>/<tag>/`` when complete (``.done`` inside).
A crash or Ctrl-C leaves no partial ``<out>/<tag>/``; a rerun skips finished targets.
"""

import dataclasses
import datetime
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sparkfold.runner.manifest import DONE_MARKER, Manifest
from sparkfold.runner.options import (
    MSA_MODES,
    OUTPUT_FORMATS,
    PRECISIONS,
    RANK_BY,
    RELAX_MODES,
    WEIGHT_SOURCES,
    ModelSpec,
    PredictError,
    PredictOptions,
    Progress,
    ProgressEvent,
    TargetResult,
    check_lengths,
    relax_available,
    resolve_device,
    resolve_models,
    resolve_msa,
    resolve_precision,
)
from sparkfold.runner.outputs import TargetWriter
from sparkfold.runner.targets import Target, discover_targets

__all__ = [
    "MSA_MODES",
    "OUTPUT_FORMATS",
    "PRECISIONS",
    "RANK_BY",
    "RELAX_MODES",
    "WEIGHT_SOURCES",
    "ModelSpec",
    "PredictError",
    "PredictOptions",
    "Predictor",
    "ProgressEvent",
    "TargetResult",
    "check_lengths",
    "predict",
    "relax_available",
    "resolve_device",
    "resolve_models",
    "resolve_msa",
    "resolve_precision",
]

logger = logging.getLogger(__name__)
_RESERVED_TAGS = ("alignments",)


# ------------------------------------------------------------------ one target at a time
class Predictor:
    """Runs targets one at a time with the models of a run, keeping them loaded.

    A batch runner creates one per GPU worker (``device="cuda:N"``) and calls
    :meth:`predict_target` for each target; :func:`predict` wraps it with input checks, the
    manifest and resume.

    Args:
        options: The run's options.
        models: The models (default :func:`resolve_models`, which downloads named weights).
        device: Resolved device (default from ``options.device``).
        progress: Called with every :class:`ProgressEvent`.
    """

    def __init__(
        self,
        options: PredictOptions,
        *,
        models: Sequence[ModelSpec] | None = None,
        device: str | None = None,
        progress: Progress | None = None,
    ):
        self.options = options
        self.device = device if device is not None else resolve_device(options.device)
        self.precision = resolve_precision(options.precision, self.device)
        self.models = (
            list(models)
            if models is not None
            else resolve_models(options, download_progress=progress is not None)
        )
        if not self.models:
            raise PredictError("no models selected", fix="pass --models 1,2,3,4,5 or a subset")
        self.progress = progress
        self.notes: list[str] = []
        self.relax_mode = options.relax
        if self.relax_mode == "auto":
            self.relax_mode = "best" if relax_available() else "none"
            if self.relax_mode == "none":
                self.notes.append(
                    "relaxation skipped: the relax extra is not installed "
                    "(pip install 'sparkfold[relax]' to enable it)"
                )
        self.output_format = options.output_format
        if self.output_format == "auto":
            import importlib.util

            self.output_format = "both" if importlib.util.find_spec("modelcif") else "pdb"
            if self.output_format == "pdb":
                self.notes.append(
                    "mmCIF output skipped: modelcif is not installed "
                    "(pip install 'sparkfold[report]')"
                )
        self.mmcif_dir = self._template_dir()
        self._loaded: dict[str, object] = {}

    # ---------------------------------------------------------------- helpers
    def _template_dir(self) -> Path | None:
        if not self.options.templates or not any(m.config().has_templates for m in self.models):
            return None
        if self.options.template_mmcif_dir is not None:
            folder = self.options.template_mmcif_dir.expanduser()
            if not folder.is_dir():
                raise PredictError(
                    f"--template-mmcif-dir {folder} is not a folder",
                    fix="point it at a folder of <pdb_id>.cif files, or pass --no-templates",
                )
            return folder
        from sparkfold.paths import configured_databases

        return configured_databases().get("pdb_mmcif")

    def _emit(self, stage: str, message: str, **fields) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(stage, message, **fields))

    def runtime(self, spec: ModelSpec):
        """The :class:`~sparkfold.config.RuntimeConfig` of a model."""
        from sparkfold.config import RuntimeConfig

        tolerance = self.options.recycle_early_stop_tolerance
        if tolerance is None:
            tolerance = spec.config().recycle_early_stop_tolerance
        seed = (
            self.options.seed * 1000 + spec.number
            if spec.weights == "random"
            else self.options.seed
        )
        return RuntimeConfig(
            device=self.device,
            precision=self.precision,
            kernels=self.options.kernels,
            chunk_size=self.options.chunk_size,
            cuda_graphs={"on": True, "off": False}.get(self.options.cuda_graphs, "auto"),
            num_recycles=self.options.num_recycles,
            recycle_early_stop_tolerance=tolerance,
            seed=seed,
        )

    def model(self, spec: ModelSpec):
        """The loaded model of ``spec`` (loaded on first use, then kept)."""
        if spec.name not in self._loaded:
            from sparkfold.weights import load_model

            self._loaded[spec.name] = load_model(
                spec.weights if spec.weights == "random" else Path(spec.weights),
                preset=spec.config(),
                runtime=self.runtime(spec),
            )
        return self._loaded[spec.name]

    def release(self) -> None:
        """Drop the loaded models (frees their memory)."""
        self._loaded.clear()

    # ---------------------------------------------------------------- stages
    def search_msa(
        self, target: Target, mode: str, out_dir: Path, emit: Callable[..., None] | None = None
    ) -> Path:
        """Search the MSA of ``target`` (``local`` or ``server``) into ``<out>/alignments/<tag>``.

        :func:`sparkfold.data.search.run_search` writes OpenFold's layout there and reuses
        finished steps on a rerun. With the server, templates are fetched only when template
        models run and ``hhsearch`` is installed (the server's hits are realigned with it).
        """
        from sparkfold.data.search import run_search

        wants_templates = self.options.templates and any(
            m.config().has_templates for m in self.models
        )
        kwargs = {}
        if mode == "server":
            templates = wants_templates and shutil.which("hhsearch") is not None
            if wants_templates and not templates and emit is not None:
                emit("note", "no server templates: hhsearch (HH-suite) is not installed")
            if self.options.msa_server_url:
                kwargs["server_url"] = self.options.msa_server_url
        else:
            templates = None if wants_templates else False
        report = None if emit is None else (lambda p: emit("msa", f"MSA {p.step}: {p.message}"))
        result = run_search(
            {target.tag: target.sequence},
            out_dir / "alignments",
            mode=mode,
            templates=templates,
            cpus=max(1, min(8, os.cpu_count() or 1)),
            progress=report,
            **kwargs,
        )
        return result[target.tag].directory

    def features(self, target: Target, msa: tuple[str, Path | None]) -> dict:
        """The raw feature dict of ``target`` (numpy, ``features.md`` §1)."""
        from sparkfold.data.features import raw_features

        mode, path = msa
        mmcif_dir = self.mmcif_dir if mode in ("precomputed", "local") else None
        if mode == "server" and self.options.templates and (path / "templates").is_dir():
            mmcif_dir = path / "templates"  # the server's template structures
        return raw_features(
            target.sequence,
            path,
            description=target.description,
            mmcif_dir=mmcif_dir,
            max_template_date=self.options.max_template_date,
            max_templates=4,
        )

    def run_model(self, spec: ModelSpec, raw: dict, *, emit: Callable[..., None] | None = None):
        """One model on one target's features → :class:`~sparkfold.io.prediction.Prediction`."""
        import torch

        from sparkfold.data.batch import make_batch
        from sparkfold.io.prediction import Prediction

        model = self.model(spec)
        batch = make_batch(
            raw,
            preset=spec.config(),
            seed=self.options.seed,
            num_recycles=self.options.num_recycles,
        )
        batch = {k: v.to(self.device) for k, v in batch.items()}
        try:
            with torch.no_grad():
                out = model(batch, on_pass=emit)
        finally:
            # A recorded pass serves only inputs of the same shapes (the next target rarely
            # has them); its memory goes back before the next model runs.
            model.release_graphs()
        return Prediction.from_model_output(batch, out, spec.name)

    def _identity(self, spec: ModelSpec) -> tuple:
        """Models with equal identity compute the same prediction (same file, config, seed)."""
        return (str(spec.weights), dataclasses.replace(spec.config(), name=""), self.runtime(spec))

    def _run_models(self, raw: dict, emit: Callable[..., None], timings: dict) -> list:
        n = len(self.models)
        seen: dict[tuple, object] = {}
        predictions = []
        for k, spec in enumerate(self.models, 1):
            identity = self._identity(spec)
            if identity in seen:  # e.g. OpenFold models 3 and 4: one no-template pTM file
                twin = seen[identity]
                emit(
                    "model",
                    f"model {k}/{n} {spec.name}: same weights and settings as "
                    f"{twin.model_name}, prediction reused",
                    model=spec.name,
                    step=k,
                    steps=n,
                )
                predictions.append(twin.replace(model_name=spec.name))
                continue
            if spec.name not in self._loaded:
                label = spec.weights if spec.weights == "random" else Path(spec.weights).name
                emit("load", f"loading {spec.name} ({label})", model=spec.name)
                t_load = time.perf_counter()
                self.model(spec)
                timings[f"load_{spec.name}"] = time.perf_counter() - t_load
            emit("model", f"model {k}/{n} {spec.name}", model=spec.name, step=k, steps=n)
            t0 = time.perf_counter()
            pred = self.run_model(
                spec,
                raw,
                emit=lambda i, passes, k=k, spec=spec: emit(
                    "recycle",
                    f"model {k}/{n} {spec.name}: pass {i}/{passes}",
                    model=spec.name,
                    step=i,
                    steps=passes,
                ),
            )
            timings[f"predict_{spec.name}"] = time.perf_counter() - t0
            ptm = f", pTM {pred.ptm:.3f}" if pred.ptm is not None else ""
            emit(
                "model",
                f"model {k}/{n} {spec.name}: mean pLDDT {pred.mean_plddt:.1f}{ptm}",
                model=spec.name,
                step=k,
                steps=n,
            )
            seen[identity] = pred
            predictions.append(pred)
        return predictions

    def predict_target(
        self,
        target: Target,
        out_dir: str | os.PathLike,
        *,
        msa: tuple[str, Path | None] | None = None,
        index: int = 1,
        total: int = 1,
    ) -> TargetResult:
        """Predict one target and write its outputs to ``<out_dir>/<tag>/`` (all at once).

        Args:
            target: The target.
            out_dir: The run's output folder.
            msa: ``(mode, path)`` from :func:`resolve_msa` (default: resolved here).
            index, total: Position in the run, for progress messages.

        Returns:
            The :class:`TargetResult` (state ``done``).

        Raises:
            Exception: whatever failed; no ``<out_dir>/<tag>/`` is left behind in that case
                (an existing one from an earlier run stays untouched).
        """
        from sparkfold.io.confidence import OutputNames, rank_predictions

        out_dir = _mkdir(Path(out_dir))
        start = time.perf_counter()
        where = {"target": target.tag, "index": index, "total": total}

        def emit(stage, message, **extra):
            self._emit(stage, message, **where, **extra)

        msa = msa if msa is not None else resolve_msa(target, self.options)
        timings: dict[str, float] = {}
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.tag}.tmp-", dir=out_dir))
        try:
            if msa[0] in ("local", "server") and msa[1] is None:  # a path: searched already
                emit("msa", f"searching the MSA ({msa[0]})")
                t0 = time.perf_counter()
                msa = (msa[0], self.search_msa(target, msa[0], out_dir, emit))
                timings["msa_search"] = time.perf_counter() - t0
            emit("features", f"features ({target.length} residues, MSA: {msa[0]})")
            t0 = time.perf_counter()
            raw = self.features(target, msa)
            timings["features"] = time.perf_counter() - t0
            predictions = self._run_models(raw, emit, timings)
            ranked = rank_predictions(predictions, self.options.rank_by)
            names = OutputNames(target.tag)
            writer = TargetWriter(self, target, tmp, names, raw, msa, emit)
            written = writer.write(ranked, timings, start)
            _commit(tmp, out_dir / target.tag)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        seconds = time.perf_counter() - start
        final = out_dir / target.tag
        emit(
            "done",
            f"done in {seconds:.1f} s: rank 1 {ranked[0].model_name} "
            f"(mean pLDDT {ranked[0].mean_plddt:.1f})",
        )
        return TargetResult(
            target.tag,
            "done",
            final,
            tuple(final / p.name for p in written),
            tuple(p.model_name for p in ranked),
            {p.model_name: {"mean_plddt": round(p.mean_plddt, 4), "ptm": p.ptm} for p in ranked},
            None,
            seconds,
        )


def _mkdir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PredictError(
            f"cannot create the output folder {path}: {exc.strerror or exc}",
            fix="choose a writable --out folder",
        ) from None
    return path


def _commit(tmp: Path, final: Path) -> None:
    """Move the finished temporary folder into place (replacing an older result)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


# ------------------------------------------------------------------ the whole run
class _RunLog:
    """Forwards progress events to the caller; appends them (and warnings) to ``<out>/log.txt``."""

    def __init__(self, path: Path | None, progress: Progress | None):
        self.progress = progress
        self.file = open(path, "a", encoding="utf-8") if path is not None else None  # noqa: SIM115
        self.handler = None
        if self.file is not None:
            self.handler = logging.StreamHandler(self.file)
            self.handler.setLevel(logging.WARNING)
            self.handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            logging.getLogger("sparkfold").addHandler(self.handler)

    def __call__(self, event: ProgressEvent) -> None:
        if self.file is not None:
            stamp = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
            self.file.write(f"{stamp} {event.format()}\n")
            self.file.flush()
        if self.progress is not None:
            self.progress(event)

    def traceback(self, exc: BaseException) -> None:
        """Append the traceback of ``exc`` to the log file."""
        if self.file is not None:
            import traceback

            self.file.write("".join(traceback.format_exception(exc)))
            self.file.flush()

    def close(self) -> None:
        if self.handler is not None:
            logging.getLogger("sparkfold").removeHandler(self.handler)
        if self.file is not None:
            self.file.close()


def _check_local_databases() -> None:
    from sparkfold.paths import configured_databases

    configured = configured_databases()
    missing = [n for n in ("uniref90", "mgnify") if n not in configured]
    if not ({"bfd", "small_bfd"} & set(configured)):
        missing.append("bfd (or small_bfd)")
    if missing:
        raise PredictError(
            f"--msa local needs the sequence databases {', '.join(missing)}, which are not "
            "configured",
            fix="set SPARKFOLD_DB_<NAME>=/path or add them under [databases] in sparkfold.toml "
            "(`sparkfold doctor` lists them), or use --msa server / --msa single / --alignments",
        )


def _template_notes(predictor: Predictor, msa: dict) -> list[str]:
    wants = predictor.options.templates and any(m.config().has_templates for m in predictor.models)
    searched = any(mode in ("precomputed", "local") for mode, _ in msa.values())
    if wants and searched and predictor.mmcif_dir is None:
        note = (
            "no templates: no mmCIF folder is known (pass --template-mmcif-dir DIR or "
            "configure the pdb_mmcif database)"
        )
        return [note]
    return []


def _clean_stale(out_dir: Path) -> None:
    for pattern in (".*.tmp-*", ".*.old-*", "alignments/.*.tmp-*"):
        for path in out_dir.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def predict(
    inputs: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[Target],
    out_dir: str | os.PathLike,
    options: PredictOptions | None = None,
    *,
    progress: Progress | None = None,
) -> list[TargetResult]:
    """Predict every target of ``inputs`` into ``out_dir`` (resumable).

    Order: check everything that can be checked without a model (targets, MSA sources,
    template folder, lengths against free memory, weights), then run the targets shortest
    first. Targets whose ``<out>/<tag>/.done`` exists are skipped unless ``options.overwrite``.
    A target that fails is recorded as ``failed`` in the manifest and the run goes on.

    Args:
        inputs: FASTA file, A3M file, folder, a list of them, or a list of :class:`Target`.
        out_dir: Output folder (created).
        options: Run options (default :class:`PredictOptions`).
        progress: Called with every :class:`ProgressEvent`.

    Returns:
        One :class:`TargetResult` per target, in run order.

    Raises:
        SparkfoldError: bad input, options or weights (before any model work).
        KeyboardInterrupt: passed on after the current target's temporary files are removed and
            its manifest entry is reset to ``pending``.
    """
    from sparkfold.weights import WeightsError

    options = options if options is not None else PredictOptions()
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, Target) for t in inputs):
        targets = list(inputs)
    else:
        targets = discover_targets(inputs)
    targets = [
        dataclasses.replace(t, tag=f"{t.tag}_2") if t.tag in _RESERVED_TAGS else t for t in targets
    ]
    targets.sort(key=lambda t: t.length)  # stable: input order among equal lengths
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)
    msa = {t.tag: resolve_msa(t, options) for t in targets}
    if any(mode == "local" for mode, _ in msa.values()):
        _check_local_databases()
    check_lengths(targets, device, precision)
    out = Path(out_dir).expanduser()
    todo = [t for t in targets if options.overwrite or not (out / t.tag / DONE_MARKER).is_file()]
    # Weights are resolved (and downloaded) before anything is written.
    predictor = Predictor(options, device=device, progress=progress) if todo else None
    manifest = Manifest.load(_mkdir(out))
    _clean_stale(out)
    manifest.sync(targets)
    log = _RunLog(out / "log.txt" if options.log_file else None, progress)
    results: list[TargetResult] = []
    total = len(targets)
    try:
        log(
            ProgressEvent(
                "note",
                f"{total} target(s), {len(todo)} to run; device {device}, precision {precision}",
            )
        )
        if predictor is not None:
            predictor.progress = log
            predictor.notes += _template_notes(predictor, msa)
            for note in predictor.notes:
                log(ProgressEvent("note", note))
        for i, target in enumerate(targets, 1):
            if target not in todo:
                log(
                    ProgressEvent(
                        "skip", "already done (use --overwrite to redo)", target.tag, i, total
                    )
                )
                outputs = tuple(out / o for o in manifest.targets[target.tag]["outputs"])
                results.append(TargetResult(target.tag, "skipped", out / target.tag, outputs))
                continue
            log(
                ProgressEvent(
                    "target",
                    f"{target.description} ({target.length} residues)",
                    target.tag,
                    i,
                    total,
                )
            )
            manifest.mark(target.tag, "running", length=target.length)
            try:
                result = predictor.predict_target(
                    target, out, msa=msa[target.tag], index=i, total=total
                )
            except (WeightsError, KeyboardInterrupt) as exc:
                error = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
                manifest.mark(target.tag, "pending", error=error)
                raise
            except Exception as exc:  # one target failing does not stop the others
                message = str(exc) or type(exc).__name__
                logger.debug("target %s failed", target.tag, exc_info=True)
                log(ProgressEvent("failed", f"failed: {message}", target.tag, i, total))
                log.traceback(exc)
                manifest.mark(target.tag, "failed", error=message)
                results.append(TargetResult(target.tag, "failed", out / target.tag, error=message))
                continue
            relative = [str(p.relative_to(out)) for p in result.outputs]
            manifest.mark(target.tag, "done", outputs=relative)
            results.append(result)
    finally:
        log.close()
    return results
