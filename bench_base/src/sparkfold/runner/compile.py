"""torch.compile for the trunk: regional compilation of the repeated blocks, length buckets.

Compiling the whole model unrolls 4 passes × 52 blocks into one graph (minutes). Instead every
Evoformer / extra-MSA block is compiled in place with :meth:`torch.nn.Module.compile`; the blocks
share their code, so Dynamo traces one graph per block type and input shape and reuses it for
all 48 (resp. 4) blocks (parameters are graph inputs). Shapes are static, so each residue count
compiles once: :func:`bucket_length` rounds a length up to a small set of buckets so that a
runner that pads its batch to the bucket (with ``seq_mask``/``msa_mask`` zero on the padding)
compiles a handful of shapes instead of one per protein. :func:`warm_up` compiles the buckets
ahead of time and reports progress through a callback (the library itself never prints).
"""

import logging
import time
from collections.abc import Callable, Iterable

import torch

__all__ = ["DEFAULT_BUCKETS", "bucket_length", "compile_trunk", "warm_up"]

log = logging.getLogger(__name__)

#: Residue-count buckets (multiples of 64 up to 512, then coarser).
DEFAULT_BUCKETS: tuple[int, ...] = (64, 128, 192, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
                                    1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144,
                                    7168, 8192)


def bucket_length(n_res: int, buckets: Iterable[int] = DEFAULT_BUCKETS) -> int:
    """The smallest bucket ``>= n_res``; lengths past the last bucket round up to a multiple of 512."""
    if n_res <= 0:
        raise ValueError(f"n_res must be positive, got {n_res}")
    for b in sorted(buckets):
        if b >= n_res:
            return b
    return -(-n_res // 512) * 512


def _trunk_blocks(model) -> list[torch.nn.Module]:
    blocks = []
    for name in ("template_embedder", "extra_msa_stack", "evoformer"):
        stack = getattr(model, name, None)
        if stack is None:
            continue
        if name == "template_embedder":
            pair_stack = getattr(stack, "template_pair_stack", None)
            blocks.extend(getattr(pair_stack, "blocks", []) if pair_stack is not None else [])
        else:
            blocks.extend(stack.blocks)
    return blocks


def compile_trunk(model, mode: str = "default", dynamic: bool = False,
                  log: Callable[[str], None] | None = None) -> int:
    """Compile every trunk block of ``model`` in place (state-dict keys are unchanged).

    Args:
        model: an :class:`~sparkfold.model.alphafold.AlphaFold`.
        mode: ``torch.compile`` mode (``"default"``, ``"max-autotune-no-cudagraphs"``, ...).
            CUDA-graph modes are not used per block: chunked blocks allocate per call.
        dynamic: let Dynamo trace length-generic graphs (fewer recompiles, slower kernels).
        log: progress callback (e.g. ``print``); default: this module's logger.

    Returns:
        The number of blocks set to compile (compilation itself happens on the first forward).
    """
    say = log or globals()["log"].info
    blocks = _trunk_blocks(model)
    # Each block instance is a new guard context; allow one entry per block and shape.
    limit = max(torch._dynamo.config.cache_size_limit, 8 * len(blocks))
    torch._dynamo.config.cache_size_limit = limit
    if hasattr(torch._dynamo.config, "accumulated_cache_size_limit"):
        torch._dynamo.config.accumulated_cache_size_limit = max(
            torch._dynamo.config.accumulated_cache_size_limit, limit)
    for block in blocks:
        block.compile(mode=mode, dynamic=dynamic)
    say(f"torch.compile set on {len(blocks)} trunk blocks (mode={mode}, dynamic={dynamic}); "
        "the first forward at each length compiles")
    return len(blocks)


def warm_up(model, make_batch: Callable[[int], dict], lengths: Iterable[int],
            log: Callable[[str], None] | None = None) -> dict[int, float]:
    """Run one forward per bucketed length so that compilation happens before real work.

    Args:
        model: the (compiled) model.
        make_batch: ``n_res -> batch`` of that length (e.g. a padded dummy batch).
        lengths: residue counts to prepare; each is rounded up with :func:`bucket_length`.
        log: progress callback.

    Returns:
        ``{bucket: seconds}`` of each warm-up forward (compile time included).
    """
    say = log or globals()["log"].info
    buckets = sorted({bucket_length(n) for n in lengths})
    times = {}
    for i, n in enumerate(buckets, 1):
        say(f"warm-up {i}/{len(buckets)}: compiling for N={n} ...")
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(make_batch(n))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times[n] = time.perf_counter() - t0
        say(f"warm-up {i}/{len(buckets)}: N={n} done in {times[n]:.1f} s")
    return times
