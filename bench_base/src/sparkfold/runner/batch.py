"""Batch prediction over many workers (GPUs, threads or Ray actors), resumable.

:func:`run_batch` predicts every target of an input with several inference workers: one per
local GPU in this process (:class:`~sparkfold.runner.ray_backend.LocalBackend`, no Ray needed),
or one per GPU of a Ray cluster (:class:`~sparkfold.runner.ray_backend.RayBackend`,
``sparkfold predict --ray``). Both go through the same driver loop and the same
``<out>/manifest.json`` as :func:`sparkfold.runner.predict.predict`.

The scheduling logic, which knows nothing about Ray, is in :mod:`sparkfold.runner.scheduler`:

* **Order**: targets run longest first, so that the long ones do not start last and hold up the
  end of the batch (the plain single-device run goes shortest first, for early results).
* **Placement**: every worker reports the longest sequence its device's free memory holds
  (:func:`worker_max_length`, the estimate of :func:`sparkfold.doctor.estimate_max_length`
  that ``check_lengths`` uses). A free worker takes the longest waiting target that it can
  hold; a target longer than what every worker holds fails with that reason, and the batch
  goes on. A DGX Spark (one GPU, unified memory) and an 8-GPU node take the same path.
* **MSA stage**: targets that need a search (``--msa local``/``server``) go through CPU
  search tasks first (at most a few in flight), which feed the inference queue.
* **Retries**: a target whose worker died (process killed, node lost) goes back to the queue
  and runs on another or a replacement worker, up to ``max_attempts`` attempts in all; one
  that ran out of GPU memory is retried only on a worker with more memory. Any other error
  fails the target at once (rerunning the same input would fail again); the batch carries on.
* **Single writer**: only the driver writes the manifest. Workers write their target's folder
  directly into ``<out>`` with the runner's atomic commit (hidden temporary folder, renamed when
  complete, ``.done`` last), so ``<out>`` must be on a filesystem every worker sees at the same
  path (NFS, Lustre, a local disk for one node). Temporary folders of a worker that died are
  removed by the driver before its target runs again.
* **Backends** (:mod:`sparkfold.runner.ray_backend`) start workers, run tasks on them and report
  :class:`~sparkfold.runner.ray_backend.Completion` objects; the driver here reacts to them.
* **Progress**: done/running/failed/pending counts, throughput and an ETA after every finished
  target (:class:`BatchStatus`).
"""

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from sparkfold.runner.manifest import DONE_MARKER, Manifest
from sparkfold.runner.options import (
    ModelSpec,
    PredictError,
    PredictOptions,
    Progress,
    ProgressEvent,
    TargetResult,
)
from sparkfold.runner.scheduler import (
    BatchScheduler,
    BatchStatus,
    TargetHook,
    Task,
    WorkerInfo,
    needs_search,
    target_cost,
    worker_max_length,
)
from sparkfold.runner.targets import Target

__all__ = [
    "BatchReport",
    "BatchScheduler",
    "BatchStatus",
    "TargetHook",
    "Task",
    "WorkerInfo",
    "needs_search",
    "run_batch",
    "target_cost",
    "worker_max_length",
]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ the driver
@dataclasses.dataclass(frozen=True)
class BatchReport:
    """What :func:`run_batch` returns.

    Attributes:
        results: One :class:`TargetResult` per target (``done``, ``skipped`` or ``failed``),
            longest first.
        status: The final :class:`BatchStatus`.
        workers: Every worker that came up (replacements included).
        backend: ``local`` or ``ray``.
    """

    results: list[TargetResult]
    status: BatchStatus
    workers: list[WorkerInfo]
    backend: str


def _remove_partial(out: Path, tag: str) -> None:
    """Remove the temporary folders a dead worker left for ``tag`` (no partial files)."""
    for pattern in (f".{tag}.tmp-*", f".{tag}.old-*"):
        for path in out.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


def _done_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


class _Driver:
    """Runs the scheduler against a backend; the manifest's only writer.

    The backend is a :class:`sparkfold.runner.ray_backend.Backend`; it reports
    :class:`~sparkfold.runner.ray_backend.Completion` objects.
    """

    def __init__(self, scheduler, backend, manifest, out, log, total, *, start_timeout):
        self.s = scheduler
        self.backend = backend
        self.manifest = manifest
        self.out = out
        self.log = log
        self.total = total
        self.start_timeout = start_timeout
        self.index = {tag: i for i, tag in enumerate(scheduler.tasks, 1 + scheduler.skipped)}
        self.started_at: dict[str, float] = {}
        self.workers: list[WorkerInfo] = []
        self.old_done = {}  # --overwrite: the earlier run's .done, to tell it from a new one

    def emit(self, stage: str, message: str, tag: str | None = None) -> None:
        index = self.index.get(tag, 0) if tag else 0
        self.log(ProgressEvent(stage, message, tag, index, self.total if tag else 0))

    def _traceback(self, text: str) -> None:
        """Append a worker's traceback to ``log.txt``."""
        if self.log.file is not None:
            self.log.file.write(text if text.endswith("\n") else text + "\n")
            self.log.file.flush()

    def _set_attempts(self, task: Task) -> None:
        entry = self.manifest.targets.get(task.tag)
        if entry is not None:  # saved by the next mark()
            entry["attempts"] = task.attempts

    def _finish_failed(self, task: Task, reason: str) -> None:
        self.s.fail(task.tag, reason)
        self.manifest.mark(task.tag, "failed", error=task.error, length=task.length)
        self.emit("failed", f"failed: {task.error}", task.tag)
        self._status()

    def _ask_worker(self, worker_id: str | None) -> None:
        if worker_id is not None:
            self.s.worker_starting(worker_id)
            self.started_at[worker_id] = time.monotonic()

    def run(self) -> None:
        for worker_id in self.backend.start_workers():
            self._ask_worker(worker_id)
        while not self.s.finished:
            for task, reason in self.s.unplaceable():
                self._finish_failed(task, reason)
            self._dispatch()
            if self.s.finished:
                break
            for c in self.backend.poll(timeout=1.0):
                self._handle(c)
            self._check_start_timeouts()

    def _dispatch(self) -> None:
        free = self.backend.search_slots() - self.s.searching()
        for task in self.s.take_searches(free):
            self.manifest.mark(task.tag, "running", length=task.length)
            self.emit("msa", f"searching the MSA ({task.msa[0]})", task.tag)
            self.backend.submit_search(task)
        for worker_id in self.s.idle_workers():
            task = self.s.assign(worker_id)
            if task is None:
                continue
            if self._already_done(task):
                continue
            self._set_attempts(task)
            self.manifest.mark(task.tag, "running", length=task.length)
            attempt = f", attempt {task.attempts}" if task.attempts > 1 else ""
            self.emit(
                "target",
                f"{task.target.description} ({task.length} residues) on "
                f"{self.s.workers[worker_id].describe()}{attempt}",
                task.tag,
            )
            self.backend.submit(worker_id, task)

    def _already_done(self, task: Task) -> bool:
        """A retried target whose dead worker finished it after all (idempotence)."""
        if task.attempts < 2:
            return False
        marker = self.out / task.tag / DONE_MARKER
        identity = _done_identity(marker)
        if identity is None or identity == self.old_done.get(task.tag):
            return False
        folder = self.out / task.tag
        outputs = tuple(p for p in sorted(folder.rglob("*")) if p.is_file() and p != marker)
        result = TargetResult(task.tag, "done", folder, outputs)
        self.s.complete(task.tag, result)
        rel = [str(p.relative_to(self.out)) for p in outputs]
        self.manifest.mark(task.tag, "done", outputs=rel, length=task.length)
        self.emit("done", "done (finished by a worker that died afterwards)", task.tag)
        return True

    def _handle(self, c) -> None:
        if c.kind == "ready":
            self.s.add_worker(c.info)
            self.workers.append(c.info)
            self.emit("note", f"worker {c.info.describe()} ready")
        elif c.kind == "lost":
            self._worker_lost(c)
        elif c.kind == "msa":
            task = self.s.tasks[c.tag]
            if c.error is None:
                self.s.search_done(c.tag, c.path)
                self.emit("msa", "MSA ready", c.tag)
            else:
                if c.traceback:
                    self._traceback(c.traceback)
                self._finish_failed(task, f"MSA search failed: {c.error}")
        elif c.kind == "target":
            self._target_finished(c)

    def _target_finished(self, c) -> None:
        task = self.s.tasks[c.tag]
        if c.error is None:
            self.s.complete(c.tag, c.result)
            rel = [str(Path(p).relative_to(self.out)) for p in c.result.outputs]
            self.manifest.mark(c.tag, "done", outputs=rel, length=task.length)
            self.emit("done", f"done in {c.result.seconds:.1f} s on {c.worker}", c.tag)
        else:
            if c.traceback:
                self._traceback(c.traceback)
            limit = self.s.workers[c.worker].max_length if c.worker in self.s.workers else 0
            retry = "more_memory" if c.oom else "no"
            if self.s.fail(c.tag, c.error, retry=retry, worker_limit=limit):
                self.manifest.mark(c.tag, "pending", error=task.error)
                self.emit("retry", f"out of memory on {c.worker}; will retry on a worker "
                          "with more memory", c.tag)
            else:
                self.manifest.mark(c.tag, "failed", error=task.error)
                self.emit("failed", f"failed: {task.error}", c.tag)
        self._status()

    def _worker_lost(self, c) -> None:
        was_ready = c.worker in self.s.workers
        task = self.s.remove_worker(c.worker)
        self.started_at.pop(c.worker, None)
        self.emit("note", f"worker {c.worker} lost: {c.error}")
        if task is not None:
            _remove_partial(self.out, task.tag)
            reason = f"worker {c.worker} died: {c.error}"
            if self.s.fail(task.tag, reason, retry="anywhere"):
                self.manifest.mark(task.tag, "pending", error=task.error)
                self.emit("retry", f"{reason}; requeued", task.tag)
            else:
                self.manifest.mark(task.tag, "failed", error=task.error)
                self.emit("failed", f"failed: {task.error}", task.tag)
        if was_ready and not self.s.finished:
            self._ask_worker(self.backend.replace_worker(c.worker))

    def _check_start_timeouts(self) -> None:
        now = time.monotonic()
        for worker_id in list(self.s.starting):
            if now - self.started_at.get(worker_id, now) > self.start_timeout:
                self.s.remove_worker(worker_id)
                self.emit("note", f"worker {worker_id} did not start within "
                          f"{self.start_timeout:.0f} s; going on without it")

    def _status(self) -> None:
        self.emit("batch", self.s.status().format())


def run_batch(
    inputs: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[Target],
    out_dir: str | os.PathLike,
    options: PredictOptions | None = None,
    *,
    ray: str | None = None,
    max_attempts: int = 3,
    workers_per_gpu: int = 1,
    num_workers: int | None = None,
    progress: Progress | None = None,
    hook: TargetHook | None = None,
    start_timeout: float = 600.0,
) -> BatchReport:
    """Predict every target of ``inputs`` into ``out_dir`` with several workers (resumable).

    The same checks as :func:`sparkfold.runner.predict.predict` run first (targets, MSA
    sources, weights), except the length check, which is made per worker. Targets whose
    ``<out>/<tag>/.done`` exists are skipped unless ``options.overwrite``; rerunning the same
    call finishes what is left.

    Args:
        inputs: FASTA file, A3M file, folder, a list of them, or a list of :class:`Target`.
        out_dir: Output folder; with Ray, on a filesystem all nodes see at the same path.
        options: Run options. ``device``: ``auto`` (every local GPU, or every GPU of the Ray
            cluster; the CPU when there is none), ``cpu``, ``cuda`` or (local only) ``cuda:N``.
        ray: None for the local backend (threads of this process, no Ray needed); else a Ray
            address: ``local`` (start a Ray instance on this machine), ``auto`` (connect to the
            running cluster), ``default`` (``ray.init()``'s own choice, e.g. ``RAY_ADDRESS``)
            or ``host:port`` / ``ray://host:10001``. An initialised Ray is used as it is.
        max_attempts: Attempts per target when its worker dies or runs out of memory.
        workers_per_gpu: Inference workers sharing each GPU (its memory is split among them).
        num_workers: Number of workers (default: one per GPU × ``workers_per_gpu``; on CPUs
            only, one locally, half the cluster's CPUs with Ray).
        progress: Called with every :class:`ProgressEvent` (stage ``batch`` carries the
            :meth:`BatchStatus.format` line after every finished target).
        hook: :data:`TargetHook` run in the workers (instrumentation, tests).
        start_timeout: Seconds to wait for a worker to come up before going on without it.

    Returns:
        The :class:`BatchReport`.

    Raises:
        SparkfoldError: bad input, options or weights, Ray missing or unreachable.
        KeyboardInterrupt: after stopping the workers; running targets go back to ``pending``.
    """
    from sparkfold.runner import predict as single
    from sparkfold.runner.ray_backend import make_backend
    from sparkfold.runner.targets import discover_targets

    options = options if options is not None else PredictOptions()
    if max_attempts < 1:
        raise PredictError(f"--max-attempts must be >= 1, got {max_attempts}")
    if workers_per_gpu < 1:
        raise PredictError(f"--workers-per-gpu must be >= 1, got {workers_per_gpu}")
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, Target) for t in inputs):
        targets = list(inputs)
    else:
        targets = discover_targets(inputs)
    targets = [
        dataclasses.replace(t, tag=f"{t.tag}_2") if t.tag in single._RESERVED_TAGS else t
        for t in targets
    ]
    targets.sort(key=lambda t: -t.length)
    msa = {t.tag: single.resolve_msa(t, options) for t in targets}
    if any(mode == "local" for mode, _ in msa.values()):
        single._check_local_databases()
    out = Path(out_dir).expanduser()
    todo = [t for t in targets if options.overwrite or not (out / t.tag / DONE_MARKER).is_file()]
    specs: list[ModelSpec] = (
        single.resolve_models(options, download_progress=progress is not None) if todo else []
    )
    # The workers' settings, checked here once (template folder) before anything starts.
    notes = []
    if todo:
        checker = single.Predictor(options, models=specs, device="cpu")
        notes = checker.notes + single._template_notes(checker, msa)
    manifest = Manifest.load(out)  # (reads only) a bad manifest fails before Ray starts
    backend = (
        make_backend(ray, options, specs, out, workers_per_gpu=workers_per_gpu,
                     num_workers=num_workers, hook=hook)
        if todo else None
    )
    try:
        single._mkdir(out)
        single._clean_stale(out)
        manifest.sync(targets)
    except BaseException:
        if backend is not None:
            backend.shutdown()
        raise
    log = single._RunLog(out / "log.txt" if options.log_file else None, progress)
    scheduler = BatchScheduler(todo, msa, max_attempts=max_attempts,
                               skipped=len(targets) - len(todo))
    driver = _Driver(scheduler, backend, manifest, out, log, len(targets),
                     start_timeout=start_timeout)
    if options.overwrite:
        driver.old_done = {t.tag: _done_identity(out / t.tag / DONE_MARKER) for t in todo}
    try:
        where = f"{backend.name} backend" if backend is not None else "nothing to run"
        log(ProgressEvent("note", f"{len(targets)} target(s), {len(todo)} to run, longest "
                          f"first; {where}"))
        for note in notes:
            log(ProgressEvent("note", note))
        for k, t in enumerate(targets, 1):
            if t not in todo:
                log(ProgressEvent("skip", "already done (use --overwrite to redo)", t.tag, k,
                                  len(targets)))
        if backend is not None:
            try:
                driver.run()
            except BaseException as exc:
                for task in scheduler.tasks.values():
                    if task.stage in ("running", "msa"):
                        manifest.mark(task.tag, "pending", error="interrupted"
                                      if isinstance(exc, KeyboardInterrupt) else str(exc))
                raise
            finally:
                backend.shutdown()
            single._clean_stale(out)  # temporary folders of workers that died
    finally:
        log.close()
    results = []
    for t in targets:
        task = scheduler.tasks.get(t.tag)
        if task is None:
            outputs = tuple(out / o for o in manifest.targets[t.tag]["outputs"])
            results.append(TargetResult(t.tag, "skipped", out / t.tag, outputs))
        elif task.stage == "done":
            results.append(task.result)
        else:
            results.append(TargetResult(t.tag, "failed", out / t.tag, error=task.error))
    return BatchReport(results, scheduler.status(), driver.workers,
                       backend.name if backend is not None else "none")

