"""Batch throughput: targets/hour on a mixed-length batch, plain vs local workers vs Ray.

Workload: ``--targets`` synthetic proteins with lengths spread evenly on a log scale over
``--lengths MIN:MAX`` (shuffled, fixed seed), each given as an ``.a3m`` file whose MSA holds the
query and ``--msa-depth - 1`` mutated copies (so features, MSA clustering and the extra-MSA
stack do real work without databases). The model: ``--models`` with ``--weights`` (``random``
by default: full-size AF2 models with seeded random weights, no download; ``--tiny`` for the
tiny test model), ``--num-recycles``, no relaxation, PDB output, no plots.

Measured, in one process, one after the other:

* ``warm``: one :class:`~sparkfold.runner.predict.Predictor` on one device, one warm-up
  target, then every target with ``predict_target`` -> the pure per-target time (``T``).
* ``single_call``: one ``sparkfold predict`` subprocess for the median-length target (Python,
  torch, checks, model load, run, outputs): what one target costs when run on its own.
* modes (``--modes``): ``plain`` = ``sparkfold.runner.predict.predict`` (one device,
  shortest first); ``local`` = ``run_batch`` with worker threads in this process (one per GPU
  × ``--workers-per-gpu``); ``ray`` = ``run_batch`` on a Ray instance started here
  (``ray.init`` time reported apart), one actor per GPU × ``--workers-per-gpu``.

Per mode (the fastest of ``--repeats`` runs; every wall time is kept): wall time,
targets/hour, and the per-target overhead ``(W × wall - T) / N`` (W workers, N targets):
worker-seconds spent per target beyond the warm ``predict_target`` time (startup, model
loading, scheduling, idle workers at the end; with several workers sharing one GPU, also their
slowdown from sharing it).

Scaling: ``--num-gpus G`` uses the first G GPUs; on a single GPU, ``--workers-per-gpu K``
simulates K workers (each with 1/K of the memory): the JSON says which (``scaling``).

Examples::

    PYTHONPATH=src python benchmarks/bench_batch.py --out benchmarks/results/h100_batch.json
    PYTHONPATH=src python benchmarks/bench_batch.py --workers-per-gpu 2 --modes local,ray
    PYTHONPATH=src python benchmarks/bench_batch.py --tiny --device cpu --targets 12 \
        --lengths 10:40 --msa-depth 8 --num-recycles 0 --cpu-workers 2   # CPU smoke test
"""

import argparse
import json
import math
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ALPHABET = "ACDEFGHIKLMNPQRSTVWY"


def make_inputs(folder: Path, n: int, lo: int, hi: int, depth: int, seed: int) -> dict[str, int]:
    """Write ``n`` A3M targets into ``folder``; returns tag -> length."""
    rng = random.Random(seed)
    lengths = [round(math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * k / max(1, n - 1)))
               for k in range(n)]
    rng.shuffle(lengths)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, length in enumerate(lengths):
        tag = f"t{k:03d}_{length}"
        query = "".join(rng.choice(ALPHABET) for _ in range(length))
        rows = [query]
        for _ in range(depth - 1):
            rows.append("".join(rng.choice(ALPHABET) if rng.random() < 0.3 else c
                                for c in query))
        (folder / f"{tag}.a3m").write_text("".join(f">{tag}_{i}\n{r}\n" for i, r in
                                                   enumerate(rows)))
        out[tag] = length
    return out


def options_from(args, device: str):
    from sparkfold.runner.options import PredictOptions

    return PredictOptions(
        msa="auto", models=tuple(args.models.split(",")), weights=args.weights,
        model_config="tiny" if args.tiny else None, num_recycles=args.num_recycles,
        relax="none", device=device, precision=args.precision, output_format="pdb",
        plots=False, report=False,
    )


def warm_pass(args, inputs: Path, device: str, work: Path) -> dict:
    """Per-target time of a warm Predictor (after one warm-up target)."""
    from sparkfold.runner.predict import Predictor, resolve_msa
    from sparkfold.runner.targets import discover_targets

    options = options_from(args, device)
    targets = discover_targets(inputs)
    predictor = Predictor(options)
    out = work / "warm"
    t0 = time.perf_counter()
    first = min(targets, key=lambda t: t.length)
    predictor.predict_target(first, out / "warmup", msa=resolve_msa(first, options))
    warmup = time.perf_counter() - t0
    times = {}
    for target in targets:
        t0 = time.perf_counter()
        predictor.predict_target(target, out, msa=resolve_msa(target, options))
        times[target.tag] = time.perf_counter() - t0
    predictor.release()
    shutil.rmtree(out, ignore_errors=True)
    return {"first_target_s": warmup, "per_target_s": times, "total_s": sum(times.values())}


def single_call(args, inputs: Path, tags: dict[str, int], device: str, work: Path) -> dict:
    """One ``sparkfold predict`` subprocess for the median-length target."""
    tag = sorted(tags, key=tags.get)[len(tags) // 2]
    cmd = [sys.executable, "-m", "sparkfold", "predict", str(inputs / f"{tag}.a3m"),
           "--out", str(work / "single"), "--models", args.models, "--weights", args.weights,
           "--num-recycles", str(args.num_recycles), "--relax", "none", "--output-format",
           "pdb", "--no-plots", "--no-report", "--device", device, "--precision",
           args.precision, "-q"]
    if args.tiny:
        cmd += ["--model-config", "tiny"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return {"tag": tag, "length": tags[tag], "seconds": time.perf_counter() - t0,
            "command": shlex.join(cmd)}


def run_mode(mode: str, args, inputs: Path, device: str, work: Path, workers: int) -> dict:
    out = work / mode
    options = options_from(args, device)
    extra = {}
    t0 = time.perf_counter()
    if mode == "plain":
        from sparkfold.runner.predict import predict

        results = predict(inputs, out, options)
        workers = 1
    else:
        from sparkfold.runner.batch import run_batch

        ray_address = None
        if mode == "ray":
            import ray

            t1 = time.perf_counter()
            gpus = args.num_gpus if device != "cpu" else 0
            ray.init(num_cpus=os.cpu_count(), num_gpus=gpus, include_dashboard=False,
                     log_to_driver=False)
            extra["ray_init_s"] = time.perf_counter() - t1
            ray_address = "local"
            t0 = time.perf_counter()
        try:
            report = run_batch(inputs, out, options, ray=ray_address,
                               workers_per_gpu=args.workers_per_gpu, num_workers=workers)
        finally:
            if mode == "ray":
                import ray

                ray.shutdown()
        results = report.results
        extra["worker_list"] = [w.describe() for w in report.workers]
    wall = time.perf_counter() - t0
    done = sum(r.state == "done" for r in results)
    shutil.rmtree(out, ignore_errors=True)
    return {"wall_s": wall, "workers": workers, "done": done, "targets": len(results),
            "targets_per_hour": done / wall * 3600, **extra}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modes", default="plain,local,ray")
    p.add_argument("--targets", type=int, default=32)
    p.add_argument("--lengths", default="64:512", metavar="MIN:MAX")
    p.add_argument("--msa-depth", type=int, default=256)
    p.add_argument("--models", default="1")
    p.add_argument("--weights", default="random")
    p.add_argument("--tiny", action="store_true", help="tiny test model (needs --weights random)")
    p.add_argument("--num-recycles", type=int, default=3)
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="auto", help="auto (CUDA if present) or cpu")
    p.add_argument("--num-gpus", type=int, default=None, help="GPUs to use (default: all)")
    p.add_argument("--workers-per-gpu", type=int, default=1)
    p.add_argument("--cpu-workers", type=int, default=2, help="workers on a CPU-only machine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="runs per mode; the fastest is kept")
    p.add_argument("--skip-single-call", action="store_true")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args()

    import torch

    cuda = torch.cuda.is_available() and args.device != "cpu"
    device = "cuda" if cuda else "cpu"
    if cuda:
        args.num_gpus = args.num_gpus or torch.cuda.device_count()
        workers = args.num_gpus * args.workers_per_gpu
        scaling = (f"{args.num_gpus} real GPU(s)" if args.workers_per_gpu == 1 else
                   f"{args.num_gpus} GPU(s), {args.workers_per_gpu} simulated workers per GPU")
        card = torch.cuda.get_device_name(0)
    else:
        args.num_gpus = 0
        workers = args.cpu_workers
        scaling = f"CPU only: {workers} worker(s) on {os.cpu_count()} core(s)"
        card = platform.processor() or platform.machine()
    lo, hi = (int(x) for x in args.lengths.split(":"))
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_batch-"))
    inputs = work / "inputs"
    tags = make_inputs(inputs, args.targets, lo, hi, args.msa_depth, args.seed)
    result = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "device": card, "torch": torch.__version__, "scaling": scaling,
        "workload": {"targets": args.targets, "lengths": sorted(tags.values()),
                     "msa_depth": args.msa_depth, "models": args.models,
                     "weights": args.weights, "tiny": args.tiny,
                     "num_recycles": args.num_recycles, "precision": args.precision,
                     "repeats": args.repeats},
    }
    print(f"# {card}; {scaling}; {args.targets} targets, {lo}-{hi} residues", flush=True)
    warm = warm_pass(args, inputs, device, work)
    result["warm"] = warm
    total = warm["total_s"]
    print(f"warm predict_target: {total:.1f} s for all ({total / args.targets:.2f} s/target, "
          f"{args.targets / total * 3600:.0f} targets/h on one worker)", flush=True)
    if not args.skip_single_call:
        single = single_call(args, inputs, tags, device, work)
        result["single_call"] = single
        print(f"single `sparkfold predict` call ({single['length']} residues): "
              f"{single['seconds']:.1f} s", flush=True)
    result["modes"] = {}
    for mode in args.modes.split(","):
        runs = [run_mode(mode, args, inputs, device, work, workers)
                for _ in range(args.repeats)]
        r = min(runs, key=lambda x: x["wall_s"])  # the least disturbed run
        r["all_wall_s"] = [x["wall_s"] for x in runs]
        r["overhead_per_target_s"] = (r["workers"] * r["wall_s"] - total) / args.targets
        result["modes"][mode] = r
        init = f" (+ ray.init {r['ray_init_s']:.1f} s)" if "ray_init_s" in r else ""
        print(f"{mode:6s} {r['workers']} worker(s): {r['done']}/{r['targets']} done in "
              f"{r['wall_s']:.1f} s{init}; {r['targets_per_hour']:.0f} targets/h; overhead "
              f"{r['overhead_per_target_s']:+.2f} worker-s/target", flush=True)
    if "plain" in result["modes"]:
        base = result["modes"]["plain"]["targets_per_hour"]
        for r in result["modes"].values():
            r["speedup_vs_plain"] = r["targets_per_hour"] / base
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    print("median warm s/target:", f"{statistics.median(warm['per_target_s'].values()):.2f}")


if __name__ == "__main__":
    main()
