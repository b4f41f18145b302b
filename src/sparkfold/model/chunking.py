"""Memory strategies for the trunk: one generic chunking utility and a chunk-size heuristic.

Chunking evaluates a layer in slices of its batch-like leading dimensions (MSA rows, pair
rows, ...) so that the large intermediates (attention logits, outer products) exist for one
slice at a time. It only changes the layout of the computation; every module's chunked output
equals its unchunked output up to floating-point summation order (tests/unit/test_chunking.py).

Modules never slice by hand: they call :func:`chunk_layer` with the tensors to slice and a
function that accepts any number of leading dimensions.
"""

import math
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["auto_chunk_size", "chunk_layer", "deliver", "residual_add", "row_slices"]


def _flat_batch_inputs(
    inputs: dict[str, torch.Tensor], num_batch_dims: int
) -> tuple[torch.Size, dict[str, tuple[str, torch.Tensor]]]:
    """Broadcast the leading dims of ``inputs`` and prepare each tensor for flat slicing.

    Returns the broadcast batch shape and, per input, a (kind, tensor) pair:
    ``"whole"`` (all batch dims are 1: passed unsliced as ``[1, *rest]``), ``"flat"`` (full batch
    dims: viewed as ``[B, *rest]``) or ``"gather"`` (partly broadcast: an expanded view, indexed
    per chunk so that the broadcast is never materialised in full).
    """
    for name, t in inputs.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"chunk_layer input {name!r} must be a tensor, got {type(t).__name__}")
        if t.dim() < num_batch_dims:
            raise ValueError(
                f"chunk_layer input {name!r} has {t.dim()} dims but num_batch_dims={num_batch_dims}; "
                "every input needs at least the batch dims (use size-1 dims to broadcast)"
            )
    try:
        batch_shape = torch.broadcast_shapes(*(t.shape[:num_batch_dims] for t in inputs.values()))
    except RuntimeError as exc:
        shapes = {k: tuple(t.shape[:num_batch_dims]) for k, t in inputs.items()}
        raise ValueError(f"chunk_layer inputs have incompatible batch dims {shapes}") from exc
    total = math.prod(batch_shape)
    prepared = {}
    for name, t in inputs.items():
        lead, rest = t.shape[:num_batch_dims], t.shape[num_batch_dims:]
        if all(d == 1 for d in lead):
            prepared[name] = ("whole", t.reshape(1, *rest))
        elif lead == batch_shape:
            prepared[name] = ("flat", t.reshape(total, *rest))
        else:
            prepared[name] = ("gather", t.expand(*batch_shape, *rest))
    return batch_shape, prepared


def _select(
    kind: str, t: torch.Tensor, start: int, end: int, batch_shape: torch.Size
) -> torch.Tensor:
    if kind == "whole":
        return t
    if kind == "flat":
        return t[start:end]
    index = torch.unravel_index(torch.arange(start, end, device=t.device), batch_shape)
    return t[index]  # [end - start, *rest]


def chunk_layer(
    fn: Callable[..., Any],
    inputs: dict[str, torch.Tensor],
    chunk_size: int,
    num_batch_dims: int,
    add_into: torch.Tensor | None = None,
) -> Any:
    """Evaluate ``fn(**inputs)`` in slices of the flattened leading batch dims.

    The first ``num_batch_dims`` dims of every input are the batch dims; they are broadcast
    against each other (a size-1 dim broadcasts), flattened to one dim of size ``B``, and ``fn``
    is called on consecutive slices of at most ``chunk_size`` of those ``B`` entries. Each call
    receives tensors with ONE leading batch dim: ``[c, *rest]`` for sliced inputs and
    ``[1, *rest]`` for inputs whose batch dims are all 1 (those are never copied). ``fn``
    must therefore treat its leading dims as batch dims and broadcast size-1 ones.

    Args:
        fn: called as ``fn(**chunk)``; returns a tensor, a tuple/list of tensors or a dict of
            tensors, each with leading dim ``c`` (the chunk length).
        inputs: keyword arguments of ``fn`` to slice. Tensors that must not be sliced are
            bound into ``fn`` instead (e.g. with ``functools.partial``).
        chunk_size: maximum number of flattened batch entries per call (> 0).
        num_batch_dims: how many leading dims are batch dims.
        add_into: a residual stream to add ``fn``'s result (one tensor) into, slice by slice,
            in place (autograd disabled): the full result never exists. Its batch dims must
            be the broadcast batch shape. An input may alias it only if it is sliced along the
            same entries (a slice is read before it is updated); when ``add_into`` cannot be
            viewed flat, the full result is made and added at the end.

    Returns:
        ``fn``'s result with the flat batch dim restored to the broadcast batch shape, or
        ``add_into`` (updated) when given.
    """
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if num_batch_dims < 0:
        raise ValueError(f"num_batch_dims must be >= 0, got {num_batch_dims}")
    if not inputs:
        raise ValueError("chunk_layer needs at least one input tensor to slice")
    batch_shape, prepared = _flat_batch_inputs(inputs, num_batch_dims)
    total = math.prod(batch_shape)
    target = None
    if add_into is not None:
        _check_inplace(add_into)
        if add_into.shape[:num_batch_dims] != batch_shape:
            raise ValueError(f"chunk_layer: add_into has batch dims {tuple(add_into.shape[:num_batch_dims])}, "
                             f"the inputs {tuple(batch_shape)}")
        try:
            target = add_into.view(total, *add_into.shape[num_batch_dims:])
        except RuntimeError:  # not viewable flat: make the whole result, then add
            return residual_add(add_into, chunk_layer(fn, inputs, chunk_size, num_batch_dims), True)

    outs: list[torch.Tensor] | None = None
    structure: Any = None
    for start in range(0, max(total, 1), chunk_size):
        end = min(start + chunk_size, total)
        chunk = {
            name: _select(kind, t, start, end, batch_shape) for name, (kind, t) in prepared.items()
        }
        result = fn(**chunk)
        if target is not None:
            if not isinstance(result, torch.Tensor) or result.shape != target[start:end].shape:
                raise ValueError("chunk_layer: with add_into, fn must return one tensor shaped like "
                                 f"the target slice {tuple(target[start:end].shape)}")
            target[start:end].add_(result)
            continue
        if isinstance(result, torch.Tensor):
            structure, flat = "tensor", [result]
        elif isinstance(result, (tuple, list)):
            structure, flat = type(result), list(result)
        elif isinstance(result, dict):
            structure, flat = tuple(result.keys()), list(result.values())
        else:
            raise TypeError(
                f"chunk_layer: fn must return a tensor, tuple/list or dict of tensors, got {type(result).__name__}"
            )
        if outs is None:
            outs = [o.new_empty((total, *o.shape[1:])) for o in flat]
        for buf, o in zip(outs, flat):
            if o.shape[0] != end - start:
                raise ValueError(
                    f"chunk_layer: fn returned leading dim {o.shape[0]} for a chunk of {end - start}; "
                    "every output must keep the flattened batch dim"
                )
            buf[start:end] = o
    if target is not None:
        return add_into
    assert outs is not None
    outs = [o.reshape(*batch_shape, *o.shape[1:]) for o in outs]
    if structure == "tensor":
        return outs[0]
    if isinstance(structure, tuple):
        return dict(zip(structure, outs))
    return structure(outs)


def residual_add(x: torch.Tensor, update: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``x + update``, written into ``x`` when ``inplace`` (numerically identical either way).

    In-place adds save one activation-sized buffer per residual. They are only allowed with
    autograd disabled, because the overwritten ``x`` may be needed for the backward pass.
    """
    if inplace:
        _check_inplace(x, update)
        return x.add_(update)
    return x + update


def _check_inplace(*tensors: torch.Tensor) -> None:
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise RuntimeError(
            "in-place residual adds need autograd disabled (torch.no_grad/inference_mode); "
            "call with inplace=False when training"
        )


def deliver(update: torch.Tensor, add_into: torch.Tensor | None) -> torch.Tensor:
    """What a module with an ``add_into`` argument returns: its ``update``, or ``add_into``
    with the update added in place (autograd disabled)."""
    return update if add_into is None else residual_add(add_into, update, True)


def row_slices(n_rows: int, bytes_per_row: int, budget_bytes: int) -> list[slice]:
    """Consecutive slices of ``n_rows`` rows, each of at most ``budget_bytes`` of temporaries
    at ``bytes_per_row`` (at least one row per slice): the blocks in which pair-sized work
    outside the trunk (embeddings, structure module, heads) is done."""
    step = max(1, budget_bytes // max(1, bytes_per_row))
    return [slice(i, i + step) for i in range(0, n_rows, step)]


# --------------------------------------------------------------------------- chunk-size heuristic
def _free_bytes(device: torch.device) -> int | None:
    """The memory a chunk may plan with: the usable share of the free memory (sparkfold.memory:
    a safe fraction on unified memory such as a DGX Spark, where running out freezes the machine)."""
    from sparkfold.memory import usable_memory

    if device.type not in ("cuda", "cpu") or (device.type == "cuda" and not torch.cuda.is_available()):
        return None
    free, fraction = usable_memory(device)
    return int(fraction * free)


def _fused_attention(bytes_per_element: int, device: torch.device) -> bool:
    """Whether the kernel backend in force runs attention without materialising the logits."""
    from sparkfold.model import kernels

    dtype = {2: torch.bfloat16, 4: torch.float32}.get(bytes_per_element, torch.float32)
    fn = kernels._resolve("attention", dtype, device)
    return getattr(fn, "__module__", "").rsplit(".", 1)[-1] != "reference"


def auto_chunk_size(
    n_res: int,
    n_seq: int,
    device: torch.device | str,
    *,
    num_heads: int = 8,
    c_hidden_opm: int = 32,
    bytes_per_element: int = 4,
    memory_fraction: float = 0.25,
    free_bytes: int | None = None,
    min_chunk: int = 1,
    fused_attention: bool | None = None,
    c_m: int = 256,
    max_budget_bytes: int | None = None,
) -> int | None:
    """Pick a chunk size for the trunk from the free memory; ``None`` means "do not chunk".

    Heuristic: the largest per-slice intermediates of one Evoformer block are, per chunked
    batch entry (one MSA row, one pair row, one MSA column),

    * with a fused attention kernel (``sdpa``: the logits never exist in memory), the
      projections and gated outputs of MSA row attention and the transitions, about
      ``10·c_m·N_res``, and of MSA column attention, ``8·c_m·N_seq``;
    * otherwise (reference backend) the attention logits + softmax weights of MSA row and
      triangle attention, ``2·H·N_res²``, and of MSA column attention, ``2·H·N_seq²``;
    * the outer-product-mean outer product for one residue row: ``N_res·c_hidden_opm²``,

    each times ``bytes_per_element``. The chunk size is the largest power of two whose
    worst case fits into ``memory_fraction`` of the free memory (the rest holds ``m``, ``z``
    and the other activations). If every batch axis fits whole, no chunking is needed and
    ``None`` is returned; the result is never below ``min_chunk``.

    Args:
        n_res: number of residues.
        n_seq: largest MSA depth the stacks see (e.g. max(clusters, extra rows)).
        device: where the model runs (CUDA: ``torch.cuda.mem_get_info``; CPU: available RAM).
        num_heads: attention heads (8 in AF2's MSA attention; the triangle attention has 4).
        c_hidden_opm: outer-product-mean hidden width.
        bytes_per_element: 4 for fp32, 2 for bf16.
        memory_fraction: share of the free memory granted to one chunk's intermediates.
        free_bytes: override the measured free memory (tests, planning for another device).
        min_chunk: lower bound of the returned chunk size.
        fused_attention: whether attention runs in a fused kernel; ``None`` asks the kernel
            dispatcher (call it inside ``kernels.use_backend``, as the model does).
        c_m: MSA channels (sizes the projections in the fused case).
        max_budget_bytes: upper bound of the chunk budget whatever the free memory (the model
            passes a small multiple of the pair representation's size: chunks stay large
            enough for efficient kernels, and the peak stays close to the resident state).
    """
    if n_res <= 0 or n_seq <= 0:
        raise ValueError(f"n_res and n_seq must be positive, got {n_res} and {n_seq}")
    if not 0.0 < memory_fraction <= 1.0:
        raise ValueError(f"memory_fraction must lie in (0, 1], got {memory_fraction}")
    device = torch.device(device)
    if free_bytes is None:
        free_bytes = _free_bytes(device)
        if free_bytes is None:
            return None
    if fused_attention is None:
        fused_attention = _fused_attention(bytes_per_element, device)
    if fused_attention:
        attention = max(10 * c_m * n_res, 8 * c_m * n_seq)
    else:
        attention = max(2 * num_heads * n_res * n_res, 2 * num_heads * n_seq * n_seq)
    per_entry = bytes_per_element * max(attention, n_res * c_hidden_opm * c_hidden_opm)
    largest_axis = max(n_res, n_seq)
    budget = memory_fraction * free_bytes
    if max_budget_bytes is not None:
        budget = min(budget, max_budget_bytes)
    if per_entry * largest_axis <= budget:
        return None
    chunk = max(1, int(budget // per_entry))
    chunk = 1 << (chunk.bit_length() - 1)  # round down to a power of two
    return max(min_chunk, chunk)
