"""Where the workers of :func:`sparkfold.runner.batch.run_batch` live: Ray actors or local threads.

* :class:`InferenceWorker` holds one :class:`~sparkfold.runner.predict.Predictor` on one
  device and runs targets one at a time, keeping its models (and compiled kernels) loaded. It
  is a plain class: :class:`LocalBackend` runs one per thread of this process, and
  :class:`RayBackend` wraps it with ``ray.remote`` as an actor holding one GPU
  (``num_gpus=1``, or ``1/k`` with ``workers_per_gpu=k``; on a cluster without GPUs, one CPU).
* :func:`search_msa` is the MSA stage (:meth:`Predictor.search_msa`, i.e.
  :func:`sparkfold.data.search.run_search`): a ``@ray.remote`` CPU task on any node with Ray,
  a small thread pool locally.

Ray is imported only by :class:`RayBackend`; without it (``pip install 'sparkfold[ray]'``)
the local backend covers the GPUs of this machine. With Ray, every node needs the same
sparkfold installed and must see the output folder at the same path (a shared filesystem):
workers write their targets' folders there directly. Weights are resolved by the driver; a
worker whose node lacks the driver's weight files resolves (downloads) them into its own cache.
"""

import concurrent.futures
import contextlib
import dataclasses
import logging
import queue
import socket
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

from sparkfold.runner.options import ModelSpec, PredictError, PredictOptions, TargetResult
from sparkfold.runner.scheduler import TargetHook, Task, WorkerInfo, worker_max_length
from sparkfold.runner.targets import Target

__all__ = [
    "Backend",
    "Completion",
    "InferenceWorker",
    "LocalBackend",
    "RayBackend",
    "import_ray",
    "make_backend",
    "search_msa",
]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ what backends provide
@dataclasses.dataclass
class Completion:
    """Something a backend reports to the driver.

    Attributes:
        kind: ``ready`` (a worker is up: ``info``), ``lost`` (a worker died or could not start;
            ``error``), ``msa`` (a search finished: ``tag``, ``path`` or ``error``) or
            ``target`` (an inference finished: ``tag``, ``result`` or ``error``/``oom``).
    """

    kind: Literal["ready", "lost", "msa", "target"]
    worker: str | None = None
    tag: str | None = None
    info: WorkerInfo | None = None
    result: TargetResult | None = None
    path: Path | None = None
    error: str | None = None
    oom: bool = False
    traceback: str | None = None


class Backend(Protocol):
    """Where workers live (threads of this process, Ray actors)."""

    #: Name shown in messages (``local``, ``ray``).
    name: str

    def start_workers(self) -> list[str]:
        """Ask for the workers; returns their ids (each reports ``ready`` or ``lost``)."""

    def replace_worker(self, worker_id: str) -> str | None:
        """Ask for a replacement of a dead worker; its id, or None when not possible."""

    def submit(self, worker_id: str, task: Task) -> None:
        """Run ``task`` on the (idle) worker; reports a ``target`` completion."""

    def submit_search(self, task: Task) -> None:
        """Search the MSA of ``task``; reports an ``msa`` completion."""

    def search_slots(self) -> int:
        """How many searches may run at once."""

    def poll(self, timeout: float) -> list[Completion]:
        """Completions so far (waits up to ``timeout`` seconds for the first)."""

    def shutdown(self) -> None:
        """Stop every worker (also after an error or Ctrl-C)."""


# ------------------------------------------------------------------ the worker (any process)
def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class InferenceWorker:
    """One :class:`Predictor` on one device; runs targets one at a time with its models warm.

    Args:
        worker_id: Its id in the batch (``w0``…).
        options: The run's options.
        models: The models, as the driver resolved them (a node lacking their weight files
            resolves its own).
        device: ``cuda``, ``cuda:N`` or ``cpu``.
        share: Its share of the device memory (``1 / workers_per_gpu``).
        hook: :data:`~sparkfold.runner.scheduler.TargetHook`, called around every target.
        node: Where it runs, for messages (default: the host name).
    """

    def __init__(
        self,
        worker_id: str,
        options: PredictOptions,
        models: Sequence[ModelSpec],
        device: str,
        share: float = 1.0,
        hook: TargetHook | None = None,
        node: str | None = None,
    ):
        from sparkfold.runner.predict import Predictor, resolve_device

        here = all(m.weights == "random" or Path(m.weights).is_file() for m in models)
        self.id = worker_id
        self.hook = hook
        self.predictor = Predictor(
            options, models=list(models) if here else None, device=resolve_device(device)
        )
        self.max_length, self.free_gib = worker_max_length(
            self.predictor.device, self.predictor.precision, share
        )
        self.node = node if node is not None else socket.gethostname()

    def info(self) -> WorkerInfo:
        """How it reports itself to the driver."""
        return WorkerInfo(
            self.id, self.predictor.device, self.max_length, self.node, round(self.free_gib, 1)
        )

    def run(self, target: Target, out_dir: str, msa: tuple[str, Path | None]) -> dict:
        """Predict one target into ``out_dir`` (atomically, see ``Predictor.predict_target``).

        Returns:
            ``{"result": TargetResult}``, or ``{"error": str, "oom": bool, "traceback": str}``
            when the target failed (the worker stays usable).
        """
        try:
            if self.hook is not None:
                self.hook("start", target.tag, self.id)
            result = self.predictor.predict_target(target, out_dir, msa=msa)
        except Exception as exc:  # the target failed; the worker goes on with the next one
            logger.debug("target %s failed on %s", target.tag, self.id, exc_info=True)
            oom = _is_oom(exc)
            if oom and self.predictor.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
            if self.hook is not None:
                self.hook("failed", target.tag, self.id)
            return {
                "error": str(exc) or type(exc).__name__,
                "oom": oom,
                "traceback": "".join(traceback.format_exception(exc)),
            }
        if self.hook is not None:
            self.hook("done", target.tag, self.id)
        return {"result": result}

    def release(self) -> None:
        """Drop the loaded models."""
        self.predictor.release()


def search_msa(
    options: PredictOptions, models: Sequence[ModelSpec], target: Target, mode: str, out_dir: str
) -> Path:
    """The MSA stage of one target: search into ``<out>/alignments/<tag>``; returns that folder.

    Runs on the CPU (no model is loaded); the models only say whether templates are wanted.
    """
    from sparkfold.runner.predict import Predictor

    predictor = Predictor(options, models=list(models), device="cpu")
    return predictor.search_msa(target, mode, Path(out_dir))


def _completion(worker_id: str, tag: str, outcome: dict) -> Completion:
    if "result" in outcome:
        return Completion("target", worker_id, tag, result=outcome["result"])
    return Completion(
        "target", worker_id, tag, error=outcome["error"], oom=outcome["oom"],
        traceback=outcome["traceback"],
    )


def _search_slots(options: PredictOptions, workers: int) -> int:
    # The MSA server takes a few requests at a time; local searches use several cores each.
    return 4 if options.msa == "server" else max(1, min(workers, 4))


# ------------------------------------------------------------------ local: threads, no Ray
class LocalBackend:
    """Workers as threads of this process, one per device (× ``workers_per_gpu``).

    Args:
        options, models, out: The run.
        devices: One entry per worker (``cuda:0``, ``cuda:1``… or ``cpu``).
        share: Memory share of each worker on its device.
        hook: Called around every target.
    """

    name = "local"

    def __init__(
        self,
        options: PredictOptions,
        models: Sequence[ModelSpec],
        out: Path,
        devices: Sequence[str],
        share: float = 1.0,
        hook: TargetHook | None = None,
    ):
        self.options, self.models, self.out = options, list(models), Path(out)
        self.devices, self.share, self.hook = list(devices), share, hook
        self._done: queue.Queue = queue.Queue()
        self._inbox: dict[str, queue.Queue] = {}
        self._threads: list[threading.Thread] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.search_slots(), thread_name_prefix="sparkfold-msa"
        )

    def start_workers(self) -> list[str]:
        ids = []
        for i, device in enumerate(self.devices):
            worker_id = f"w{i}"
            self._inbox[worker_id] = queue.Queue()
            thread = threading.Thread(
                target=self._serve, args=(worker_id, device), name=f"sparkfold-{worker_id}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
            ids.append(worker_id)
        return ids

    def worker_options(self, device: str) -> PredictOptions:
        """The options of a worker on ``device``: CUDA graphs off when several worker threads
        share that GPU (recording a graph forbids work on the device's default stream from
        any other thread of the process)."""
        if device.startswith("cuda") and self.devices.count(device) > 1:
            return dataclasses.replace(self.options, cuda_graphs="off")
        return self.options

    def _serve(self, worker_id: str, device: str) -> None:
        try:
            worker = InferenceWorker(
                worker_id, self.worker_options(device), self.models, device, self.share, self.hook,
                node=f"{socket.gethostname()} (this process)",
            )
        except Exception as exc:  # reported: the batch goes on without this worker
            logger.debug("worker %s could not start", worker_id, exc_info=True)
            self._done.put(Completion("lost", worker_id, error=str(exc) or type(exc).__name__))
            return
        self._done.put(Completion("ready", worker_id, info=worker.info()))
        inbox = self._inbox[worker_id]
        try:
            while (task := inbox.get()) is not None:
                outcome = worker.run(task.target, str(self.out), task.msa)
                self._done.put(_completion(worker_id, task.tag, outcome))
        except BaseException as exc:  # a bug or the interpreter shutting down: the driver requeues
            logger.debug("worker %s stopped", worker_id, exc_info=True)
            self._done.put(Completion("lost", worker_id, error=repr(exc)))
        finally:
            worker.release()

    def replace_worker(self, worker_id: str) -> str | None:
        return None  # a thread does not die of outside causes

    def submit(self, worker_id: str, task: Task) -> None:
        self._inbox[worker_id].put(task)

    def submit_search(self, task: Task) -> None:
        future = self._pool.submit(
            search_msa, self.options, self.models, task.target, task.msa[0], str(self.out)
        )
        tag = task.tag

        def report(f: concurrent.futures.Future) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            if exc is None:
                self._done.put(Completion("msa", tag=tag, path=f.result()))
            else:
                self._done.put(Completion(
                    "msa", tag=tag, error=str(exc) or type(exc).__name__,
                    traceback="".join(traceback.format_exception(exc)),
                ))

        future.add_done_callback(report)

    def search_slots(self) -> int:
        return _search_slots(self.options, len(self.devices))

    def poll(self, timeout: float) -> list[Completion]:
        try:
            out = [self._done.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def shutdown(self) -> None:
        for inbox in self._inbox.values():
            inbox.put(None)
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + 5.0
        for thread in self._threads:  # busy threads (Ctrl-C) are daemons and end with Python
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


# ------------------------------------------------------------------ Ray
def import_ray():
    """``import ray``, or a :class:`PredictError` naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise PredictError(
            "--ray needs Ray, which is not installed",
            fix="pip install 'sparkfold[ray]', or run without --ray (the GPUs of this machine "
            "are used in one process)",
        ) from None
    return ray


class RayBackend:
    """Workers as Ray actors (one per GPU of the cluster), MSA searches as Ray CPU tasks.

    Args:
        address: ``local``, ``auto``, ``default`` (``ray.init()`` chooses) or a cluster address;
            an already initialised Ray is used as it is.
        options, models, out: The run (``out`` on a filesystem every node shares).
        workers_per_gpu: Actors per GPU (``num_gpus=1/k`` each).
        num_workers: Number of actors (default: GPUs × ``workers_per_gpu``; on a cluster without
            GPUs, or with ``options.device == "cpu"``: half its CPUs, one CPU each).
        hook: Called around every target, in the actors.
        max_replacements: Replacement actors started for actors that died (default: as many as
            the initial actors).
    """

    name = "ray"

    def __init__(
        self,
        address: str,
        options: PredictOptions,
        models: Sequence[ModelSpec],
        out: Path,
        *,
        workers_per_gpu: int = 1,
        num_workers: int | None = None,
        hook: TargetHook | None = None,
        max_replacements: int | None = None,
    ):
        ray = import_ray()
        self.ray = ray
        self.options, self.models, self.out, self.hook = options, list(models), Path(out), hook
        self._owns = False
        if not ray.is_initialized():
            try:
                ray.init(address=None if address == "default" else address,
                         logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise PredictError(
                    f"cannot start or reach the Ray cluster {address!r}: {exc}",
                    fix="start one with `ray start --head` (then --ray auto), give its address "
                    "(--ray HOST:6379), or use --ray local for one on this machine",
                ) from None
            self._owns = True
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        if options.device not in ("auto", "cpu", "cuda"):
            raise PredictError(
                f"with --ray, --device takes auto, cpu or cuda, not {options.device!r}",
                fix="each Ray worker gets its own GPU; drop --device or use --device cuda",
            )
        self.use_gpus = gpus > 0 and options.device != "cpu"
        if options.device == "cuda" and not self.use_gpus:
            raise PredictError(
                "--device cuda was asked for, but the Ray cluster has no GPU",
                fix="add GPU nodes to the cluster, or use --device cpu",
            )
        if self.use_gpus:
            default = gpus * workers_per_gpu
            self.actor_resources = {"num_gpus": 1.0 / workers_per_gpu, "num_cpus": 1}
            self.share, self.device = 1.0 / workers_per_gpu, "cuda"
        else:
            default = max(1, cpus // 2)
            self.actor_resources = {"num_cpus": 1}
            self.share, self.device = 1.0, "cpu"
        self.num_workers = num_workers if num_workers is not None else default
        if self.num_workers < 1:
            raise PredictError(f"number of workers must be >= 1, got {self.num_workers}")
        self.replacements_left = (
            self.num_workers if max_replacements is None else max_replacements
        )
        spare = cpus - self.num_workers * self.actor_resources["num_cpus"]
        node_cpus = max(
            (int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")),
            default=1,
        )
        wanted = 1 if options.msa == "server" else max(1, min(8, node_cpus // 2))
        self.msa_cpus = wanted if spare >= wanted else 0  # 0: not reserved (no starvation)
        self._actor_cls = ray.remote(max_restarts=0, max_task_retries=0)(InferenceWorker)
        self._search = ray.remote(max_retries=2)(search_msa)
        self._actors: dict[str, object] = {}
        self._pending: dict[object, tuple[str, str | None, str | None]] = {}
        self._next = 0

    # ---------------------------------------------------------------- workers
    def _new_actor(self) -> str:
        worker_id = f"w{self._next}"
        self._next += 1
        actor = self._actor_cls.options(**self.actor_resources).remote(
            worker_id, self.options, self.models, self.device, self.share, self.hook,
            node=None,
        )
        self._actors[worker_id] = actor
        self._pending[actor.info.remote()] = ("ready", worker_id, None)
        return worker_id

    def start_workers(self) -> list[str]:
        return [self._new_actor() for _ in range(self.num_workers)]

    def replace_worker(self, worker_id: str) -> str | None:
        if self.replacements_left <= 0:
            return None
        self.replacements_left -= 1
        return self._new_actor()

    def actor(self, worker_id: str):
        """The actor handle of a worker (for tests and tools)."""
        return self._actors[worker_id]

    # ---------------------------------------------------------------- work
    def submit(self, worker_id: str, task: Task) -> None:
        ref = self._actors[worker_id].run.remote(task.target, str(self.out), task.msa)
        self._pending[ref] = ("target", worker_id, task.tag)

    def submit_search(self, task: Task) -> None:
        ref = self._search.options(num_cpus=self.msa_cpus).remote(
            self.options, self.models, task.target, task.msa[0], str(self.out)
        )
        self._pending[ref] = ("msa", None, task.tag)

    def search_slots(self) -> int:
        return _search_slots(self.options, self.num_workers)

    def poll(self, timeout: float) -> list[Completion]:
        if not self._pending:
            time.sleep(min(timeout, 0.1))
            return []
        refs = list(self._pending)
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        return [self._collect(ref) for ref in ready]

    def _collect(self, ref) -> Completion:
        kind, worker_id, tag = self._pending.pop(ref)
        exceptions = self.ray.exceptions
        try:
            value = self.ray.get(ref)
        except exceptions.RayActorError as exc:  # the actor died (killed, node lost, crashed)
            return self._lost(worker_id, exc)
        except exceptions.RayTaskError as exc:
            cause = exc.cause if exc.cause is not None else exc
            if kind == "msa":
                return Completion("msa", tag=tag, error=str(cause) or type(cause).__name__,
                                  traceback=str(exc))
            if kind == "ready":  # __init__ raised (e.g. weights, device): not coming up
                return self._lost(worker_id, cause)
            return Completion("target", worker_id, tag, error=str(cause), traceback=str(exc))
        except exceptions.RayError as exc:  # e.g. the search task's worker crashed, object lost
            if kind == "msa":
                return Completion("msa", tag=tag, error=f"{type(exc).__name__}: {exc}")
            return self._lost(worker_id, exc)
        if kind == "ready":
            return Completion("ready", worker_id, info=value)
        if kind == "msa":
            return Completion("msa", tag=tag, path=Path(value))
        return _completion(worker_id, tag, value)

    def _lost(self, worker_id: str, exc: BaseException) -> Completion:
        actor = self._actors.pop(worker_id, None)
        if actor is not None:
            self._kill(actor)  # an unreachable actor must not come back
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        return Completion("lost", worker_id, error=f"{type(exc).__name__}: {first}")

    def _kill(self, actor) -> None:
        with contextlib.suppress(self.ray.exceptions.RayError, ValueError):
            self.ray.kill(actor)  # gone already: nothing to do

    def shutdown(self) -> None:
        for actor in self._actors.values():
            self._kill(actor)
        for ref in list(self._pending):
            with contextlib.suppress(self.ray.exceptions.RayError, TypeError, ValueError):
                self.ray.cancel(ref, force=True)
        self._actors.clear()
        self._pending.clear()
        if self._owns:
            self.ray.shutdown()


# ------------------------------------------------------------------ choosing
def _local_devices(options: PredictOptions, workers_per_gpu: int, num_workers: int | None):
    import torch

    from sparkfold.runner.predict import resolve_device

    if options.device in ("auto", "cuda") and torch.cuda.is_available():
        gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    else:
        device = resolve_device(options.device)
        gpus = [device] if device.startswith("cuda") else []
    if gpus:
        devices = [d for d in gpus for _ in range(workers_per_gpu)]
        share = 1.0 / workers_per_gpu
    else:
        devices, share = ["cpu"], 1.0
    if num_workers is not None:
        if num_workers < 1:
            raise PredictError(f"number of workers must be >= 1, got {num_workers}")
        devices = [devices[i % len(devices)] for i in range(num_workers)]
        if not gpus:
            share = 1.0 / num_workers
    return devices, share


def make_backend(
    ray: str | None,
    options: PredictOptions,
    models: Sequence[ModelSpec],
    out: Path,
    *,
    workers_per_gpu: int = 1,
    num_workers: int | None = None,
    hook: TargetHook | None = None,
):
    """:class:`RayBackend` for a Ray address, else :class:`LocalBackend` on this machine."""
    if ray is not None:
        return RayBackend(ray, options, models, out, workers_per_gpu=workers_per_gpu,
                          num_workers=num_workers, hook=hook)
    devices, share = _local_devices(options, workers_per_gpu, num_workers)
    return LocalBackend(options, models, out, devices, share, hook)

