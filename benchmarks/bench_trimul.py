"""The triangle multiplicative update: the composed path against the fused ``triangle_update``.

At N residues (bf16, C_z = C = 128, one pair, mask with ~5% zeros) times, per direction:

* ``composed``: ``TriangleMultiplication.forward_composed`` under ``kernels="auto"`` (projection
  GEMM, Triton gate, contraction with its transposes, output stage, in-place add);
* ``fused``: ``kernels.triangle_update`` (Triton kernel A, cuBLAS GEMM, Triton kernel B, added
  into z in place), and its three stages alone (``fused.project``, ``fused.gemm``,
  ``fused.output``);

with CUDA events (warm, median of ``--repeats`` runs of ``--iters`` calls), the peak memory
allocated above the inputs, and the max abs difference of each path's update from the reference
op in bf16 and from the reference in fp32 (scaled by the fp32 update's max). ``--sweep`` times
the fused path under every launch configuration of ``SWEEP_PROJECT`` × ``SWEEP_OUTPUT``.
Example (GPU)::

    PYTHONPATH=src python benchmarks/bench_trimul.py --lengths 512,1024,2048 --out trimul.json
"""

import argparse
import itertools
import json
import statistics

import torch

from sparkfold.model import kernels
from sparkfold.model.kernels import TriangleWeights, reference, triton_trimul
from sparkfold.model.pair import TriangleMultiplication

#: (BLOCK_M, BLOCK_C, num_warps, num_stages) of kernel A; (BLOCK_M, num_warps, num_stages) of B.
SWEEP_PROJECT = [(bm, bc, w, st) for bm, bc, w, st in itertools.product(
    (64, 128, 256), (32, 64), (4, 8), (1, 2, 3)) if not (bm == 256 and w == 4)]
SWEEP_OUTPUT = [(bm, w, st) for bm, w, st in itertools.product((32, 64, 128), (4, 8), (1, 2))]


def timed(fn, iters: int, repeats: int) -> float:
    """Median milliseconds per call over ``repeats`` runs of ``iters`` calls (after a warm-up)."""
    fn()
    torch.cuda.synchronize()
    runs = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        runs.append(start.elapsed_time(end) / iters)
    return statistics.median(runs)


def peak_mb(fn) -> float:
    """Peak memory allocated by one call above what was allocated before it, MiB."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def make(n: int, direction: str, c_z: int = 128, c: int = 128, device="cuda"):
    g = torch.Generator().manual_seed(n)
    mod = TriangleMultiplication(c_z, c, direction)
    with torch.no_grad():
        for name, p in mod.named_parameters():  # O(1) activations: fan-in scaled weights
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            else:  # biases; LayerNorm scales around 1
                offset = 1.0 if name.startswith("layer_norm") and name.endswith("weight") else 0.0
                p.copy_(offset + 0.1 * torch.randn(p.shape, generator=g))
    mod = mod.to(device).eval()
    z = torch.randn(n, n, c_z, generator=g).to(device)
    mask = (torch.rand(n, n, generator=g) > 0.05).float().to(device)
    return mod, z, mask


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="512,1024,2048")
    p.add_argument("--directions", default="outgoing,incoming")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sweep", action="store_true", help="time every fused launch configuration")
    p.add_argument("--no-fp32", action="store_true", help="skip the fp32 reference (memory)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    rows = []
    for n in (int(x) for x in args.lengths.split(",")):
        for direction in args.directions.split(","):
            row = case(n, direction, args)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                              for k, v in row.items() if k != "sweep"}))
            rows.append(row)
            torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


def case(n: int, direction: str, args) -> dict:
    """One length and direction: accuracy, timings, peak memory (and the sweep)."""
    mod32, z32, mask32 = make(n, direction)
    mod = TriangleMultiplication(mod32.c_z, mod32.c_hidden, direction).cuda().eval()
    mod.load_state_dict(mod32.state_dict())
    mod = mod.bfloat16()
    z, mask = z32.bfloat16(), mask32.bfloat16()
    del z32
    w = mod.kernel_weights()
    row = {"n": n, "direction": direction, "c_z": mod.c_z, "c": mod.c_hidden,
           "device": torch.cuda.get_device_name(), "config": dict(triton_trimul.CONFIG)}
    with torch.no_grad(), kernels.use_backend("auto"):
        ref16 = reference.triangle_update(z, mask, w, direction).float()
        ref32 = None
        if not args.no_fp32:
            w32 = TriangleWeights(*(t.float() for t in mod32.kernel_weights()[:-1]), w.eps)
            ref32 = reference.triangle_update(z.float(), mask32, w32, direction)
        outs = {
            "composed": mod.forward_composed(z, mask).float(),
            "fused": kernels.triangle_update(z, mask, w, direction).float(),
        }
        for name, out in outs.items():
            row[f"{name}.maxdiff_vs_ref_bf16"] = float((out - ref16).abs().max())
            if ref32 is not None:
                row[f"{name}.maxdiff_vs_ref_fp32_rel"] = float(
                    (out - ref32).abs().max() / ref32.abs().max())
        del outs, ref16, ref32
        zw = z.clone()  # the trunk's use: the update added into z in place

        def composed():
            mod.forward_composed(zw, mask, add_into=zw)

        def fused():
            kernels.triangle_update(zw, mask, w, direction, add_into=zw)

        row["composed.ms"] = timed(composed, args.iters, args.repeats)
        row["fused.ms"] = timed(fused, args.iters, args.repeats)
        row["composed.peak_mb"] = peak_mb(composed)
        row["fused.peak_mb"] = peak_mb(fused)
        row.update(stages(zw, mask, w, direction, args))
        if args.sweep:
            row["sweep"] = sweep(fused, args)
            timed_ok = [r for r in row["sweep"] if "ms" in r]
            row["sweep_best"] = min(timed_ok, key=lambda r: r["ms"]) if timed_ok else None
    return row


def stages(z, mask, w, direction, args) -> dict:
    """The fused path's three stages timed alone."""
    n_i, n_j, c_z = z.shape
    c, n_t = w.w_ab.shape[0] // 4, n_i * n_j
    z3, m2 = z.view(1, n_t, c_z), mask.reshape(1, n_t).contiguous()
    a, b = z.new_empty(1, c, n_i, n_j), z.new_empty(1, c, n_i, n_j)

    def project():
        triton_trimul._project_op(z3, m2, w.ln_in_w, w.ln_in_b, w.w_ab, w.b_ab,
                                  a.view(1, c, n_t), b.view(1, c, n_t), 0, w.eps)

    def gemm():
        if direction == "outgoing":
            return torch.matmul(a, b.transpose(-1, -2))
        return torch.matmul(a.transpose(-1, -2), b)

    project()  # a, b and x hold real values before they are timed
    x = gemm()

    def output():
        triton_trimul._output_op(x.view(1, c, n_t), z3, w.ln_in_w, w.ln_in_b, w.w_g, w.b_g,
                                 w.ln_out_w, w.ln_out_b, w.w_z, w.b_z, z3, True, w.eps)

    return {"fused.project.ms": timed(project, args.iters, args.repeats),
            "fused.gemm.ms": timed(gemm, args.iters, args.repeats),
            "fused.output.ms": timed(output, args.iters, args.repeats)}


def sweep(fused, args) -> list[dict]:
    """The fused path under each launch configuration (kernel A swept with B at its default,
    then B with A at its best)."""
    default = dict(triton_trimul.CONFIG)
    out = []
    try:
        for cfg in SWEEP_PROJECT:
            triton_trimul.CONFIG["project"] = cfg
            out.append({"project": cfg, "output": default["output"], **_try(fused, args)})
        ok = [r for r in out if "ms" in r]
        best_project = min(ok, key=lambda r: r["ms"])["project"] if ok else default["project"]
        triton_trimul.CONFIG["project"] = best_project
        for cfg in SWEEP_OUTPUT:
            triton_trimul.CONFIG["output"] = cfg
            out.append({"project": best_project, "output": cfg, **_try(fused, args)})
    finally:
        triton_trimul.CONFIG.update(default)
    return [r for r in out if "ms" in r] + [r for r in out if "ms" not in r]


def _try(fn, args) -> dict:
    try:
        return {"ms": timed(fn, args.iters, args.repeats)}
    except Exception as exc:  # noqa: BLE001 - a configuration the compiler rejects (resources)
        return {"error": f"{type(exc).__name__}: {str(exc)[:120]}"}


if __name__ == "__main__":
    main()
