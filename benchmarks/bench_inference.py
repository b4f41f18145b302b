"""Inference benchmark: seconds per model forward and peak GPU memory at several lengths.

Workload (the issue's): model_3_ptm at full depth (48 Evoformer + 4 extra-MSA blocks, no
templates, random weights), 512 MSA clusters, 1024 extra sequences, 4 trunk passes, one
sequence of N residues. Each length gets one warm-up forward (reported as ``first_s``; it
includes torch.compile when ``--compile``) and ``--repeats`` timed forwards (median reported).

Per-module breakdown (``--breakdown``): one more forward with CUDA events around every block
sub-module (MSA row/column attention, transitions, outer product mean, the triangle ops),
summed over blocks and passes, with achieved TFLOP/s and GB/s from ``benchmarks/flops.py``.

Examples::

    PYTHONPATH=src python benchmarks/bench_inference.py --lengths 128,256,512 --precision bf16
    PYTHONPATH=src python benchmarks/bench_inference.py --lengths 256 --kernels reference \
        --precision fp32 --out ref.json
    PYTHONPATH=src python benchmarks/bench_inference.py --tiny --device cpu --lengths 16  # smoke
"""

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections import defaultdict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flops import Workload, module_costs, total_bytes, total_flops

#: The issue's peer timings on one H100 (s per forward).
PEERS = {
    "openfold_fp32": {128: 2.06, 256: 4.92, 512: 15.4, 1024: 67.8, 2048: 470.0},
    "af2_jax_bf16": {128: 2.4, 256: 4.1, 512: 8.0, 1024: 23.7, 2048: 102.0},
}
SUBMODULES = ("msa_att_row", "msa_att_col", "msa_transition", "outer_product_mean",
              "pair_stack.tri_mul_out", "pair_stack.tri_mul_in", "pair_stack.tri_att_start",
              "pair_stack.tri_att_end", "pair_stack.pair_transition")


def synthetic_batch(n_res: int, n_seq: int, n_extra: int, passes: int, device,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """A processed feature dict of the right shapes (recycling axis last), random content."""
    from sparkfold.allatom import make_atom14_masks

    g = torch.Generator().manual_seed(seed)
    aatype = torch.randint(0, 20, (n_res,), generator=g)
    feats = {
        "aatype": aatype,
        "residue_index": torch.arange(n_res),
        "seq_length": torch.tensor(n_res),
        "seq_mask": torch.ones(n_res),
        "target_feat": torch.nn.functional.one_hot(aatype + 1, 22).float(),
        "msa_feat": torch.rand(n_seq, n_res, 49, generator=g),
        "msa_mask": torch.ones(n_seq, n_res),
        "msa_row_mask": torch.ones(n_seq),
        "extra_msa": torch.randint(0, 22, (n_extra, n_res), generator=g),
        "extra_msa_mask": torch.ones(n_extra, n_res),
        "extra_msa_row_mask": torch.ones(n_extra),
        "extra_has_deletion": (torch.rand(n_extra, n_res, generator=g) < 0.1).float(),
        "extra_deletion_value": torch.rand(n_extra, n_res, generator=g) * 0.1,
        **make_atom14_masks(aatype),
    }
    return {k: v.unsqueeze(-1).expand(*v.shape, passes).contiguous().to(device)
            for k, v in feats.items()}


class ModuleTimer:
    """CUDA events around every block sub-module; times summed per (stack, sub-module)."""

    def __init__(self, model):
        self.events = defaultdict(list)
        self.handles = []
        stacks = {"evoformer": model.evoformer, "extra_msa": model.extra_msa_stack}
        for stack_name, stack in stacks.items():
            if stack is None:
                continue
            for block in stack.blocks:
                for sub in SUBMODULES:
                    mod = block.get_submodule(sub)
                    key = (stack_name, sub.split(".")[-1])
                    self.handles.append(mod.register_forward_pre_hook(self._pre(key)))
                    self.handles.append(mod.register_forward_hook(self._post(key)))

    def _pre(self, key):
        def hook(_mod, _args):
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.events[key].append([ev, None])
        return hook

    def _post(self, key):
        def hook(_mod, _args, _out):
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.events[key][-1][1] = ev
        return hook

    def results(self) -> dict:
        torch.cuda.synchronize()
        out = {}
        for key, pairs in self.events.items():
            out["/".join(key)] = sum(a.elapsed_time(b) for a, b in pairs) / 1e3  # seconds
        return out

    def remove(self):
        for h in self.handles:
            h.remove()


class ModuleMemory:
    """Peak GPU memory (absolute, GiB) while each block sub-module, embedder, the structure
    module and the heads run: which module sets the forward's peak. The hooked modules do not
    nest, so resetting the peak counter at each entry is safe."""

    def __init__(self, model):
        self.peaks = defaultdict(float)
        self.entry = defaultdict(float)
        self.handles = []
        mods = {name: getattr(model, name) for name in (
            "input_embedder", "recycling_embedder", "extra_msa_embedder", "structure_module",
            "aux_heads") if getattr(model, name, None) is not None}
        for stack_name in ("evoformer", "extra_msa_stack"):
            stack = getattr(model, stack_name, None)
            if stack is None:
                continue
            for block in stack.blocks:
                for sub in SUBMODULES:
                    mods.setdefault(f"{stack_name}/{sub.split('.')[-1]}", [])
                    mods[f"{stack_name}/{sub.split('.')[-1]}"].append(block.get_submodule(sub))
        for key, mod in mods.items():
            for m in (mod if isinstance(mod, list) else [mod]):
                self.handles.append(m.register_forward_pre_hook(self._pre(key)))
                self.handles.append(m.register_forward_hook(self._post(key)))

    def _pre(self, key):
        def hook(_mod, _args):
            torch.cuda.synchronize()
            self.entry[key] = max(self.entry[key], torch.cuda.memory_allocated() / 2**30)
            torch.cuda.reset_peak_memory_stats()
        return hook

    def _post(self, key):
        def hook(_mod, _args, _out):
            torch.cuda.synchronize()
            self.peaks[key] = max(self.peaks[key], torch.cuda.max_memory_allocated() / 2**30)
        return hook

    def results(self) -> dict:
        return {k: {"entry_gib": round(self.entry[k], 3), "peak_gib": round(v, 3)}
                for k, v in sorted(self.peaks.items(), key=lambda kv: -kv[1])}

    def remove(self):
        for h in self.handles:
            h.remove()


def build_model(args, device):
    import sparkfold
    from sparkfold.config import ModelConfig, RuntimeConfig

    chunk = args.chunk_size
    chunk = None if chunk in ("none", "None", None) else ("auto" if chunk == "auto" else int(chunk))
    graphs = {"auto": "auto", "on": True, "off": False}[args.cuda_graphs]
    runtime = RuntimeConfig(device=str(device), precision=args.precision, kernels=args.kernels,
                            chunk_size=chunk, num_recycles=args.passes - 1, cuda_graphs=graphs)
    config = ModelConfig.tiny(templates=False) if args.tiny else ModelConfig.from_preset(args.preset)
    model = sparkfold.load_model("random", preset=config, device=str(device), runtime=runtime)
    if args.compile:
        from sparkfold.runner.compile import compile_trunk

        compile_trunk(model, mode=args.compile_mode, log=print)
    return model, config


def graph_pool_bytes() -> dict:
    """Bytes reserved by CUDA-graph private pools, and the part of them holding live tensors."""
    reserved = active = 0
    for seg in torch.cuda.memory_snapshot():
        if tuple(seg.get("segment_pool_id", (0, 0))) == (0, 0):
            continue  # the default pool
        reserved += seg["total_size"]
        active += sum(b["size"] for b in seg["blocks"] if b["state"] == "active_allocated")
    return {"reserved": reserved, "active": active}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_length(model, config, n: int, args, device) -> dict:
    n_seq = 8 if args.tiny else config.data.max_msa_clusters
    n_extra = 8 if args.tiny else min(config.data.max_extra_msa, args.extra)
    # As predict does, the batch stays in host memory and the model copies one pass's
    # features at a time to the GPU (--batch-on-device: all passes' features live there).
    batch = synthetic_batch(n, n_seq, n_extra, args.passes,
                            device if args.batch_on_device else torch.device("cpu"))
    row = {"n": n, "precision": args.precision, "kernels": args.kernels,
           "chunk_size": args.chunk_size, "compile": bool(args.compile),
           "cuda_graphs": args.cuda_graphs, "batch_on_device": args.batch_on_device}
    try:
        with torch.inference_mode():
            _sync(device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                row["resident_gib"] = torch.cuda.memory_allocated(device) / 2**30
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            out = model(batch)
            _sync(device)
            row["first_s"] = time.perf_counter() - t0
            row["finite"] = bool(torch.isfinite(out["final_atom_positions"]).all())
            del out
            if device.type == "cuda":
                row["peak_gib_first"] = torch.cuda.max_memory_allocated(device) / 2**30
                # Cached blocks of the first forward go back; a recorded graph keeps its pool.
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = model(batch)
                _sync(device)
                times.append(time.perf_counter() - t0)
                del out
            # --repeats 0: report the first forward (long lengths, where warm-up ~ steady state).
            row["seconds"] = statistics.median(times) if times else row["first_s"]
            if device.type == "cuda" and not times:
                row["peak_in_use_gib"] = row["peak_gib_first"]
            row["all_seconds"] = times
            if device.type == "cuda" and times:
                # Allocated: live tensors at the worst moment. A replayed CUDA graph allocates
                # nothing: its activations sit in the graph's private pool, which only the
                # reserved figure (what the process holds on the GPU) counts.
                row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                row["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
                pool = graph_pool_bytes()
                row["graph_pool_gib"] = pool["reserved"] / 2**30
                # In use at the worst moment: the allocated peak plus the part of the graph's
                # pool that only replays use (its reserved size less the outputs that stay
                # allocated there; fragmentation inside the pool counts as used).
                row["peak_in_use_gib"] = row["peak_gib"] + (pool["reserved"] - pool["active"]) / 2**30
            recorders = {"memory": ModuleMemory, "breakdown": ModuleTimer}
            wanted = [k for k in recorders if getattr(args, k)] if device.type == "cuda" else []
            if wanted:
                # Hooks (events, synchronisation) cannot run inside a recorded graph.
                graphs_setting = model.runtime.cuda_graphs
                model.set_runtime(dataclasses.replace(model.runtime, cuda_graphs=False))
                for key in wanted:
                    recorder = recorders[key](model)
                    out = model(batch)
                    del out
                    row[key] = recorder.results()
                    recorder.remove()
                    if key == "memory":
                        print(json.dumps({"n": n, "memory_by_module": row["memory"]}), flush=True)
                model.set_runtime(dataclasses.replace(model.runtime, cuda_graphs=graphs_setting))
    except torch.cuda.OutOfMemoryError as exc:
        row["error"] = f"OOM: {str(exc).splitlines()[0][:160]}"
    del batch
    model.release_graphs()  # as predict does after each target: the next length starts clean
    if device.type == "cuda":
        torch.cuda.empty_cache()
    w = Workload(n, n_seq=n_seq, n_extra=n_extra, passes=args.passes,
                 bytes_per_el=2 if args.precision == "bf16" else 4)
    if not args.tiny:
        row["flops"] = total_flops(w)
        row["min_bytes"] = total_bytes(w)
        if "seconds" in row:
            row["tflops"] = row["flops"] / row["seconds"] / 1e12
    return row


def print_table(rows):
    print("\n| N | s/forward | first (incl. compile) | peak GiB in use | allocated | reserved | TFLOP/s | % of 989 | vs OpenFold fp32 | vs AF2-JAX bf16 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['n']} | {r['error']} | | | | | | | | |")
            continue
        tf = r.get("tflops", float("nan"))
        sec = r["seconds"]
        of = PEERS["openfold_fp32"].get(r["n"])
        jx = PEERS["af2_jax_bf16"].get(r["n"])
        vs_of = f"{of / sec:.2f}x" if of else "-"
        vs_jx = f"{jx / sec:.2f}x" if jx else "-"
        print(f"| {r['n']} | {sec:.3f} | {r['first_s']:.2f} | {r.get('peak_in_use_gib', float('nan')):.2f} | "
              f"{r.get('peak_gib', r.get('peak_gib_first', float('nan'))):.2f} | "
              f"{r.get('peak_reserved_gib', float('nan')):.2f} | "
              f"{tf:.0f} | {100 * tf / 989:.1f}% | {vs_of} | {vs_jx} |")


def print_breakdown(row, args):
    if "breakdown" not in row:
        return
    n = row["n"]
    w = Workload(n, passes=args.passes, bytes_per_el=2 if args.precision == "bf16" else 4)
    costs = module_costs(w)
    blocks = {"evoformer": w.evo_blocks, "extra_msa": w.extra_blocks}
    total = sum(row["breakdown"].values())
    print(f"\nPer-module breakdown, N={n} ({args.precision}, kernels={args.kernels}); "
          f"sum {total:.3f} s of {row['seconds']:.3f} s")
    print("| stack | module | s | % | TFLOP/s | GB/s (min bytes) |")
    print("|---|---|---|---|---|---|")
    for key, sec in sorted(row["breakdown"].items(), key=lambda kv: -kv[1]):
        stack, mod = key.split("/")
        c = costs[stack][mod]
        reps = blocks[stack] * args.passes
        print(f"| {stack} | {mod} | {sec:.3f} | {100 * sec / total:.1f} | "
              f"{c['flops'] * reps / sec / 1e12:.0f} | {c['bytes'] * reps / sec / 1e9:.0f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="128,256,512,1024,2048")
    p.add_argument("--precision", default="bf16", choices=("fp32", "tf32", "bf16"))
    p.add_argument("--kernels", default="auto")
    p.add_argument("--chunk-size", default="auto", help="'auto', 'none' or an integer")
    p.add_argument("--compile", action="store_true", help="torch.compile the trunk blocks")
    p.add_argument("--compile-mode", default="default")
    p.add_argument("--breakdown", action="store_true")
    p.add_argument("--memory", action="store_true", help="peak memory per module (one more forward)")
    p.add_argument("--cuda-graphs", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--passes", type=int, default=4)
    p.add_argument("--extra", type=int, default=1024, help="extra-MSA rows (model_3 allows 5120)")
    p.add_argument("--batch-on-device", action="store_true",
                   help="put every pass's features on the GPU up front (default: host memory)")
    p.add_argument("--preset", default="model_3_ptm")
    p.add_argument("--tiny", action="store_true", help="tiny config (CPU smoke test)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    lengths = [int(x) for x in args.lengths.split(",") if x]

    from sparkfold.model import kernels
    header = {"torch": torch.__version__, "device": torch.cuda.get_device_name(device)
              if device.type == "cuda" else "cpu", "backends": kernels.available_backends()}
    print(json.dumps(header))
    t0 = time.perf_counter()
    model, config = build_model(args, device)
    print(f"model built in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    for n in lengths:
        row = run_length(model, config, n, args, device)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "breakdown"}), flush=True)
        print_breakdown(row, args)
        if args.out:
            _write_json(args.out, {"header": header, "args": vars(args), "rows": rows})
        if "error" in row:
            break  # longer lengths will not fit either
    print_table(rows)
    return rows


def _write_json(path, obj):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=lambda o: list(o) if isinstance(o, tuple) else str(o))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
