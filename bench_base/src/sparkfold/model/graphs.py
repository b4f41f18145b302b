"""CUDA graphs for whole trunk passes: the launch-bound regime of short sequences.

At a few hundred residues one trunk pass is ~10⁴ small kernels, and the time goes to Python and
kernel launches, not to the GPU. A :class:`PassGraph` records one pass (embedders, stacks,
structure module) once per input shape and then replays it with one launch. It is a memory
strategy of the forward loop, outside the maths: the recorded code is the eager code.

Use: the first call for a shape runs the pass eagerly on a side stream (this warms up Triton
compilation, cuBLAS workspaces and the allocator, and is the pass's result), then records it;
later calls copy their inputs into the graph's static buffers and replay. The outputs of a
replay live in the graph's memory and are overwritten by the next replay: the caller copies out
what it keeps (:func:`clone_outputs`).

Requirements the recorded code meets: no host synchronisation (no ``.item()``, no data-dependent
Python branches), shapes fixed per graph, parameters not replaced while a graph is alive (the
model drops its graphs when its precision or device changes).
"""

import logging
from typing import Callable

import torch

__all__ = ["PassGraph", "clone_outputs", "graph_key"]

log = logging.getLogger(__name__)


def graph_key(feats: dict[str, torch.Tensor], prev: tuple[torch.Tensor, ...], *extra) -> tuple:
    """What a recorded pass depends on besides values: every input's shape, dtype and device."""
    shapes = tuple(sorted((k, tuple(v.shape), v.dtype, v.device) for k, v in feats.items()))
    return shapes + tuple((tuple(p.shape), p.dtype) for p in prev) + tuple(extra)


def clone_outputs(obj):
    """A deep copy of the tensors of a (nested) output dict, out of a graph's memory."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: clone_outputs(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_outputs(v) for v in obj)
    return obj


class PassGraph:
    """One recorded pass ``fn(feats, prev)`` with static input buffers.

    Args:
        fn: the pass; takes a dict of tensors and a tuple of tensors, returns any nesting of
            tensors. It must be free of host synchronisation.
        feats: example inputs (shapes and dtypes are what the graph is recorded for).
        prev: example recycled tensors.
    """

    def __init__(self, fn: Callable, feats: dict[str, torch.Tensor], prev: tuple[torch.Tensor, ...]):
        self.fn = fn
        self.feats = {k: torch.empty_like(v, memory_format=torch.contiguous_format)
                      for k, v in feats.items()}
        self.prev = tuple(torch.empty_like(p, memory_format=torch.contiguous_format) for p in prev)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out = None

    def _load(self, feats: dict[str, torch.Tensor], prev: tuple[torch.Tensor, ...]) -> None:
        for k, buf in self.feats.items():
            buf.copy_(feats[k])
        for buf, p in zip(self.prev, prev):
            buf.copy_(p)

    @property
    def recorded(self) -> bool:
        return self.graph is not None

    def __call__(self, feats: dict[str, torch.Tensor], prev: tuple[torch.Tensor, ...]):
        """Run the pass on these inputs. The first call runs eagerly (warm-up) and records;
        its result is returned as computed. Later calls replay."""
        self._load(feats, prev)
        if self.graph is not None:
            self.graph.replay()
            return self.out
        device = next(iter(self.feats.values())).device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            result = self.fn(self.feats, self.prev)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (several inference workers sharing one GPU in one
        # process) keep launching work while this one records.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.out = self.fn(self.feats, self.prev)
        self.graph = graph
        return result

    def release(self) -> None:
        """Free the graph and its memory pool."""
        self.graph = None
        self.out = None
