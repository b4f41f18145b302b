"""The Ray-free scheduling logic of batch prediction (see :mod:`sparkfold.runner.batch`).

Workers and tasks, longest-first placement by each worker's memory, the retry policy and the
batch status (counts, throughput, ETA). Nothing here starts a process or writes a file.
"""

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from sparkfold.runner.options import PredictError, TargetResult
from sparkfold.runner.targets import Target

__all__ = [
    "BatchScheduler",
    "BatchStatus",
    "TargetHook",
    "Task",
    "WorkerInfo",
    "needs_search",
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
