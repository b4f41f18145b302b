"""Attention kernels at the trunk's shapes: reference, sdpa and triton, with a block-size sweep.

The calls of one model_3_ptm Evoformer block at N residues (512 MSA rows, bf16): MSA row
attention with pair bias (``[512, 8, N, 32]`` + ``[1, 8, N, N]``), MSA column attention
(``[N, 8, 512, 32]``) and triangle attention (``[N, 4, N, 32]`` + ``[1, 4, N, N]``), each with a
key-mask bias. Prints milliseconds and TFLOP/s (4·B·H·Q·K·C FLOPs) per backend, and for the
triton backend every block configuration of ``--sweep``. Example (GPU)::

    PYTHONPATH=src python benchmarks/bench_attention.py --lengths 256,512,1024 --sweep
"""

import argparse
import itertools
import json

import torch

from sparkfold.model import kernels
from sparkfold.model.kernels import triton_attention

SWEEP = [(bm, bn, w, st) for bm, bn, w, st in itertools.product(
    (64, 128), (32, 64, 128), (4, 8), (2, 3)) if not (bm == 64 and w == 8)]


def cases(n: int, n_seq: int = 512, dtype=torch.bfloat16, device="cuda"):
    g = torch.Generator(device=device).manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, device=device, dtype=dtype)

    def mask_bias(b, k):
        m = (torch.rand(b, k, generator=g, device=device) > 0.05).to(dtype)
        return (1e9 * (m - 1))[:, None, None, :]

    return {
        "msa_row": (rnd(n_seq, 8, n, 32), rnd(n_seq, 8, n, 32), rnd(n_seq, 8, n, 32),
                    [mask_bias(n_seq, n), rnd(1, 8, n, n)]),
        "msa_col": (rnd(n, 8, n_seq, 32), rnd(n, 8, n_seq, 32), rnd(n, 8, n_seq, 32),
                    [mask_bias(n, n_seq)]),
        "triangle": (rnd(n, 4, n, 32), rnd(n, 4, n, 32), rnd(n, 4, n, 32),
                     [mask_bias(n, n), rnd(1, 4, n, n)]),
    }


def timed(fn, repeats=10):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="256,512,1024")
    p.add_argument("--backends", default="sdpa,triton")
    p.add_argument("--sweep", action="store_true", help="time every triton block configuration")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    rows = []
    for n in (int(x) for x in args.lengths.split(",")):
        for name, (q, k, v, biases) in cases(n).items():
            flops = 4 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3]
            ref = None
            for backend in args.backends.split(","):
                with kernels.use_backend(backend):
                    def run():
                        return kernels.attention(q, k, v, biases)
                    try:
                        ms = timed(run)
                        out = run()
                    except torch.cuda.OutOfMemoryError:
                        rows.append({"n": n, "case": name, "backend": backend, "error": "OOM"})
                        continue
                ref = out.float() if ref is None else ref
                row = {"n": n, "case": name, "backend": backend, "ms": round(ms, 3),
                       "tflops": round(flops / ms / 1e9, 1),
                       "max_diff_vs_first": float((out.float() - ref).abs().max())}
                rows.append(row)
                print(json.dumps(row), flush=True)
            if args.sweep:
                best = None
                for cfg in SWEEP:
                    triton_attention._SWEEP_OVERRIDE = cfg
                    try:
                        with kernels.use_backend("triton"):
                            ms = timed(lambda: kernels.attention(q, k, v, biases), repeats=5)
                    except Exception as exc:  # noqa: BLE001 - a config that does not compile
                        print(json.dumps({"n": n, "case": name, "cfg": cfg, "error": str(exc)[:80]}))
                        continue
                    finally:
                        triton_attention._SWEEP_OVERRIDE = None
                    if best is None or ms < best[1]:
                        best = (cfg, ms)
                row = {"n": n, "case": name, "sweep_best": best[0], "ms": round(best[1], 3),
                       "tflops": round(flops / best[1] / 1e9, 1),
                       "default": triton_attention.block_sizes(q.shape[2], k.shape[2], 32, 32,
                                                               len(biases) > 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
