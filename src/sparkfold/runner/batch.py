"""Batch prediction over many workers (GPUs, threads or Ray actors), resumable.

:func:`run_batch` predicts every target of an input with several inference workers: one per
local GPU in this process (:class:`~sparkfold.runner.ray_backend.LocalBackend`, no Ray needed),
or one per GPU of a Ray cluster (:class:`~sparkfold.runner.ray_backend.RayBackend`,
``sparkfold predict --ray``). Both go through the same driver loop and the same
``<out>/manifest.json`` as :func:`sparkfold.runner.predict.predict`.

This module holds the scheduling logic, which knows nothing about Ray:

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from sparkfold.runner.manifest import DONE_MARKER, Manifest
from sparkfold.runner.options import (
    ModelSpec,
    PredictError,
    PredictOptions,
    Progress,
    ProgressEvent,
    TargetResult,
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

#: Called in the worker process as ``hook(stage, tag, worker_id)`` with stage ``start``,
#: ``done`` or ``failed`` around every target (instrumentation and tests; must pickle).
TargetHook = Callable[[str, str, str], None]


# ------------------------------------------------------------------ workers and tasks
@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """One inference worker, as it reports itself when ready.

    Attributes:
        id: ``w0``, ``w1``, … (replacements get new ids).
        device: Its torch device (``cuda``, ``cuda:1``, ``cpu``).
        max_length: Longest sequence its share of the device memory holds.
        node: Host name (and GPU ids under Ray), for messages.
        free_gib: Free memory of its share of the device when it started.
    """

    id: str
    device: str
    max_length: int
    node: str = ""
    free_gib: float = 0.0

    def describe(self) -> str:
        where = f" on {self.node}" if self.node else ""
        return f"{self.id} ({self.device}{where}, up to {self.max_length} residues)"


def worker_max_length(device: str, precision: str, share: float = 1.0) -> tuple[int, float]:
    """(longest sequence that fits, free GiB) for a worker using ``share`` of ``device``.

    The same estimate as :func:`sparkfold.runner.options.check_lengths` (free memory × the
    usable fraction, :func:`sparkfold.doctor.estimate_max_length`), divided among the workers
    sharing the device (``--workers-per-gpu``).
    """
    from sparkfold.doctor import estimate_max_length
    from sparkfold.runner.options import _free_memory

    free, fraction = _free_memory(device)
    free *= share
    return estimate_max_length(fraction * free, 2 if precision == "bf16" else 4), free / (1 << 30)


def needs_search(msa: tuple[str, Path | None]) -> bool:
    """Whether a target's MSA (from :func:`resolve_msa`) still has to be searched."""
    return msa[0] in ("local", "server") and msa[1] is None


def target_cost(length: int) -> float:
    """Relative run time of a target, for the ETA: a fixed part plus the pair stack's L².

    Rough on purpose (the real exponent lies between 1 and 3 depending on the MSA depth and
    length); the ETA is refined by the measured rate as targets finish.
    """
    return 1.0 + (length / 100.0) ** 2


TaskStage = Literal["search", "msa", "ready", "running", "done", "failed"]


@dataclasses.dataclass
class Task:
    """One target's way through the batch (driver side).

    Attributes:
        target: The target.
        msa: ``(mode, path)``; the path is filled in by the MSA stage.
        stage: ``search`` (waiting for an MSA search), ``msa`` (searching), ``ready`` (waiting
            for a worker), ``running``, ``done`` or ``failed``.
        attempts: Inference attempts started so far.
        worker: The worker running it.
        min_exclusive: After running out of memory: only workers holding more than this.
        error: Why the last attempt failed.
        result: The :class:`TargetResult` once done.
    """

    target: Target
    msa: tuple[str, Path | None]
    stage: TaskStage = "ready"
    attempts: int = 0
    worker: str | None = None
    min_exclusive: int = 0
    error: str | None = None
    result: TargetResult | None = None

    @property
    def tag(self) -> str:
        return self.target.tag

    @property
    def length(self) -> int:
        return self.target.length


@dataclasses.dataclass(frozen=True)
class BatchStatus:
    """Progress of the whole batch.

    Attributes:
        total: Targets in the batch (including those done before this run).
        done, skipped, running, pending, failed: Targets per state (``skipped``: done by an
            earlier run; ``running`` includes the MSA stage).
        elapsed: Seconds since the batch started.
        targets_per_hour: Targets finished by this run per hour of its wall time.
        eta_seconds: Estimated seconds to the end (None before the first target finishes).
    """

    total: int
    done: int
    skipped: int
    running: int
    pending: int
    failed: int
    elapsed: float
    targets_per_hour: float | None
    eta_seconds: float | None

    def format(self) -> str:
        """One line, e.g. ``12/40 done, 4 running, 1 failed, 23 pending; 310 targets/h; ETA 5m``."""
        text = (
            f"{self.done + self.skipped}/{self.total} done, {self.running} running, "
            f"{self.failed} failed, {self.pending} pending"
        )
        if self.targets_per_hour is not None:
            text += f"; {self.targets_per_hour:.1f} targets/h"
        if self.eta_seconds is not None:
            text += f"; ETA {_duration(self.eta_seconds)}"
        return text


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# ------------------------------------------------------------------ the scheduler (no I/O)
class BatchScheduler:
    """Orders, places and retries targets; knows nothing of processes, files or Ray.

    Args:
        targets: Targets to run (those already done are not given).
        msa: ``(mode, path)`` per tag.
        max_attempts: Inference attempts per target (a lost worker or out of memory uses one).
        skipped: Targets already done by an earlier run (for the counts only).
        clock: Monotonic clock (tests pass a fake one).
    """

    def __init__(
        self,
        targets: Sequence[Target],
        msa: dict[str, tuple[str, Path | None]],
        *,
        max_attempts: int = 3,
        skipped: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_attempts < 1:
            raise PredictError(f"max_attempts must be >= 1, got {max_attempts}")
        order = sorted(targets, key=lambda t: -t.length)  # stable among equal lengths
        self.tasks: dict[str, Task] = {}
        for target in order:
            m = msa[target.tag]
            self.tasks[target.tag] = Task(target, m, "search" if needs_search(m) else "ready")
        self.max_attempts = max_attempts
        self.skipped = skipped
        self.workers: dict[str, WorkerInfo] = {}
        self.busy: dict[str, str] = {}  # worker id -> tag
        self.starting: set[str] = set()  # workers asked for, not ready yet
        self.clock = clock
        self.start = clock()
        self._done_cost = 0.0

    # ---------------------------------------------------------------- workers
    def worker_starting(self, worker_id: str) -> None:
        self.starting.add(worker_id)

    def add_worker(self, info: WorkerInfo) -> None:
        self.starting.discard(info.id)
        self.workers[info.id] = info

    def remove_worker(self, worker_id: str) -> Task | None:
        """Forget a worker (died or never came up); returns the task it was running."""
        self.starting.discard(worker_id)
        self.workers.pop(worker_id, None)
        tag = self.busy.pop(worker_id, None)
        return None if tag is None else self.tasks[tag]

    def idle_workers(self) -> list[str]:
        return [w for w in self.workers if w not in self.busy]

    # ---------------------------------------------------------------- MSA stage
    def take_searches(self, limit: int) -> list[Task]:
        """Up to ``limit`` targets waiting for an MSA search, longest first (now ``msa``)."""
        taken = [t for t in self.tasks.values() if t.stage == "search"][: max(0, limit)]
        for task in taken:
            task.stage = "msa"
        return taken

    def searching(self) -> int:
        return sum(t.stage == "msa" for t in self.tasks.values())

    def search_done(self, tag: str, path: Path) -> None:
        task = self.tasks[tag]
        task.msa = (task.msa[0], Path(path))
        task.stage = "ready"

    # ---------------------------------------------------------------- placement
    def assign(self, worker_id: str) -> Task | None:
        """The longest ready target that ``worker_id`` can hold (now ``running`` on it)."""
        if worker_id in self.busy:
            raise ValueError(f"worker {worker_id} is busy with {self.busy[worker_id]}")
        limit = self.workers[worker_id].max_length
        for task in self.tasks.values():
            if task.stage == "ready" and task.length <= limit and limit > task.min_exclusive:
                task.stage, task.worker = "running", worker_id
                task.attempts += 1
                self.busy[worker_id] = task.tag
                return task
        return None

    def unplaceable(self) -> list[tuple[Task, str]]:
        """Waiting targets that no worker (ready or starting) can take, with the reason.

        Empty while workers are still starting (they may hold more).
        """
        if self.starting:
            return []
        if not self.workers:
            reason = "no inference worker is left (all died or none could start)"
            return [(t, reason) for t in self.tasks.values() if t.stage in ("search", "ready")]
        best = max(self.workers.values(), key=lambda w: w.max_length)
        out = []
        for task in self.tasks.values():
            if task.stage not in ("search", "ready"):
                continue
            if task.length > best.max_length:
                reason = (
                    f"too long: {task.length} residues, but the worker with the most memory, "
                    f"{best.describe()}, holds about {best.max_length}"
                )
                out.append((task, reason))
            elif task.min_exclusive >= best.max_length:
                reason = (
                    f"out of memory on a worker holding {task.min_exclusive} residues, and no "
                    "worker has more memory"
                )
                out.append((task, reason))
        return out

    # ---------------------------------------------------------------- outcomes
    def _release(self, task: Task) -> None:
        if task.worker is not None and self.busy.get(task.worker) == task.tag:
            del self.busy[task.worker]
        task.worker = None

    def complete(self, tag: str, result: TargetResult) -> None:
        task = self.tasks[tag]
        self._release(task)
        task.stage, task.result, task.error = "done", result, None
        self._done_cost += target_cost(task.length)

    def fail(
        self,
        tag: str,
        error: str,
        *,
        retry: Literal["no", "anywhere", "more_memory"] = "no",
        worker_limit: int = 0,
    ) -> bool:
        """Record a failed attempt; True when the target goes back to the queue.

        Args:
            tag: The target.
            error: What went wrong.
            retry: ``anywhere`` (its worker died), ``more_memory`` (out of memory on a worker
                holding ``worker_limit`` residues) or ``no`` (the target itself failed).
            worker_limit: The failing worker's ``max_length`` (for ``more_memory``).
        """
        task = self.tasks[tag]
        self._release(task)
        task.error = error
        if retry == "more_memory":
            task.min_exclusive = max(task.min_exclusive, worker_limit)
        if retry != "no" and task.attempts < self.max_attempts:
            task.stage = "ready"
            return True
        if retry != "no":
            task.error = f"{error} (gave up after {task.attempts} attempt(s))"
        task.stage = "failed"
        return False

    # ---------------------------------------------------------------- progress
    @property
    def finished(self) -> bool:
        return all(t.stage in ("done", "failed") for t in self.tasks.values())

    def status(self) -> BatchStatus:
        count = {s: 0 for s in ("search", "msa", "ready", "running", "done", "failed")}
        remaining = 0.0
        for task in self.tasks.values():
            count[task.stage] += 1
            if task.stage not in ("done", "failed"):
                remaining += target_cost(task.length)
        elapsed = max(self.clock() - self.start, 1e-9)
        done = count["done"]
        rate = done / elapsed * 3600 if done else None
        eta = remaining / (self._done_cost / elapsed) if done else None
        return BatchStatus(
            total=len(self.tasks) + self.skipped,
            done=done,
            skipped=self.skipped,
            running=count["running"] + count["msa"],
            pending=count["ready"] + count["search"],
            failed=count["failed"],
            elapsed=elapsed,
            targets_per_hour=rate,
            eta_seconds=0.0 if done and not remaining else eta,
        )


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

