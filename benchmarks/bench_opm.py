"""The outer product mean's update at the trunk's shapes: the module's old path against the op.

model_3_ptm shapes: 512 MSA rows, ``C = E = 32`` hidden channels, ``C_z = 128``, bf16, the
update added into the pair in place, in slices of rows ``i`` (by default ``128·1024/N`` rows, a
256 MiB slice of the outer sums, as the model chunks it at N = 1024).

* ``old``: what ``OuterProductMean.forward`` did: ``chunk_layer`` over ``_outer`` (einsum, the
  ``[I, J, C·E]`` flatten copy, ``linear_out``, fp32 division, cast, add);
* ``op``: :func:`sparkfold.model.kernels.outer_product_update` under ``kernels="triton"``
  (a cuBLAS GEMM per slice and one fused Triton GEMM).

Prints milliseconds (CUDA events, median of warm repeats), TFLOP/s (``2·N²·S·C·E`` for the
outer sums plus ``2·N²·C·E·C_z`` for ``linear_out``), the peak memory each path allocates
beyond its inputs, and each path's max abs difference from the fp32 reference of the same
bf16 inputs. Example (GPU)::

    PYTHONPATH=src python benchmarks/bench_opm.py --lengths 512,1024,2048 --out opm.json
"""

import argparse
import json
import statistics
from functools import partial

import torch

from sparkfold.model import kernels
from sparkfold.model.chunking import chunk_layer
from sparkfold.model.kernels import reference
from sparkfold.model.pair import OuterProductMean


def timed(fn, repeats=10, warmup=3):
    """Median milliseconds of ``fn`` over ``repeats`` warm calls (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_extra_bytes(fn):
    """Bytes ``fn`` allocates at its peak beyond what was allocated before it ran."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def inputs(n, n_seq, c, c_z, dtype=torch.bfloat16, device="cuda"):
    """Masked projections ``a, b [N, S, C]`` (residue-major views of ``[S, N, C]``, as the
    module makes them), fp32 ``norm [N, N, 1]``, the pair ``z`` and the module."""
    g = torch.Generator(device=device).manual_seed(0)
    mask = (torch.rand(n_seq, n, 1, generator=g, device=device) > 0.1).float()  # [S, N, 1]
    a = (torch.randn(n_seq, n, c, generator=g, device=device) * mask).to(dtype).transpose(0, 1)
    b = (torch.randn(n_seq, n, c, generator=g, device=device) * mask).to(dtype).transpose(0, 1)
    norm = torch.einsum("sic,sjc->ijc", mask, mask)  # [N, N, 1]
    mod = OuterProductMean(c_m=256, c_z=c_z, c_hidden=c).to(device)
    torch.nn.init.normal_(mod.linear_out.weight, std=c ** -1)
    torch.nn.init.normal_(mod.linear_out.bias, std=0.02)
    mod = mod.to(dtype)
    z = torch.randn(n, n, c_z, generator=g, device=device).to(dtype)
    return a, b, norm, mod, z


def reference_fp32(a, b, norm, mod, rows):
    """The reference on the fp32 values of the bf16 inputs, in row slices (memory)."""
    w, bias = mod.linear_out.weight.float(), mod.linear_out.bias.float()
    bf = b.float()
    out = torch.empty(a.shape[0], b.shape[0], w.shape[0], device=a.device)
    for i in range(0, a.shape[0], rows):
        out[i:i + rows] = reference.outer_product_update(a[i:i + rows].float(), bf,
                                                         norm[i:i + rows], w, bias, mod.eps)
    return out


def bench_length(n: int, n_seq: int, c: int, c_z: int, chunk: int, repeats: int) -> list[dict]:
    """The rows of both paths at ``N = n``."""
    a, b, norm, mod, z = inputs(n, n_seq, c, c_z)
    flops = 2 * n * n * n_seq * c * c + 2 * n * n * c * c * c_z
    ref = reference_fp32(a, b, norm, mod, rows=max(1, chunk // 2))
    w, bias = mod.linear_out.weight, mod.linear_out.bias

    def old(add_into):
        return chunk_layer(partial(mod._outer, b=b), {"a": a, "norm": norm}, chunk, 1,
                           add_into=add_into)

    def op(add_into):
        with kernels.use_backend("triton"):
            return kernels.outer_product_update(a, b, norm, w, bias, mod.eps, add_into=add_into,
                                                chunk_size=chunk)

    rows = []
    with torch.inference_mode():
        for name, fn in (("old", old), ("op", op)):
            row = {"n": n, "n_seq": n_seq, "c_hidden": c, "c_z": c_z, "chunk": chunk, "path": name}
            try:
                update = fn(None)
                row["max_abs_diff_vs_fp32_ref"] = float((update.float() - ref).abs().max())
                row["max_abs_ref"] = float(ref.abs().max())
                del update
                into_z = partial(fn, z)  # the model's use: added into the pair in place
                row["peak_extra_mib"] = round(peak_extra_bytes(into_z) / 2**20, 1)
                ms = timed(into_z, repeats=repeats)
                row["ms"] = round(ms, 3)
                row["tflops"] = round(flops / ms / 1e9, 1)
            except torch.cuda.OutOfMemoryError:
                row["error"] = "OOM"
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="512,1024,2048")
    p.add_argument("--n-seq", type=int, default=512)
    p.add_argument("--c-hidden", type=int, default=32)
    p.add_argument("--c-z", type=int, default=128)
    p.add_argument("--chunk", type=int, default=None,
                   help="rows i per slice (default 128·1024/N)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference in full fp32
    rows = []
    for n in (int(x) for x in args.lengths.split(",")):
        chunk = args.chunk or max(1, 128 * 1024 // n)
        rows += bench_length(n, args.n_seq, args.c_hidden, args.c_z, chunk, args.repeats)
        torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
