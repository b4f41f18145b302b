"""Profile one Evoformer block (model_3_ptm sizes, bf16, random weights) on CUDA.

Prints the top CUDA kernels by total time from ``torch.profiler`` and the time of each
sub-module, so that the slow parts of the trunk can be named. Example::

    PYTHONPATH=src python benchmarks/profile_block.py --n 1024 --kernels auto

``--probe 3072,4096,6144`` instead runs one Evoformer block and one extra-MSA block (512
clusters / 1024 extra rows, bf16, in-place residuals, the model's ``chunk_size="auto"``) at each
length and prints the chunk size, seconds and peak GPU memory: what fits on the card.
"""

import json
import time

import argparse

import torch

from sparkfold.config import ModelConfig
from sparkfold.model import kernels
from sparkfold.model.chunking import auto_chunk_size
from sparkfold.model.evoformer import EvoformerBlock
from sparkfold.model.extra_msa import ExtraMSABlock


def probe(lengths, n_seq=512, n_extra=1024, kernels_name="auto"):
    """Peak memory and time of one Evoformer + one extra-MSA block per length (bf16, CUDA)."""
    cfg = ModelConfig.from_preset("model_3_ptm")
    evo = EvoformerBlock.from_config(cfg.evoformer).cuda().bfloat16().eval()
    extra = ExtraMSABlock.from_config(cfg.extra_msa_stack).cuda().bfloat16().eval()
    for blk in (evo, extra):
        for prm in blk.parameters():
            torch.nn.init.normal_(prm, std=0.02)
    rows = []
    for n in lengths:
        row = {"n": n}
        try:
            with torch.inference_mode(), kernels.use_backend(kernels_name):
                torch.cuda.empty_cache()
                z = torch.randn(n, n, cfg.c_z, device="cuda", dtype=torch.bfloat16)
                pair_mask = torch.ones(n, n, device="cuda", dtype=torch.bfloat16)
                chunk = auto_chunk_size(n, max(n_seq, n_extra), "cuda", bytes_per_element=2,
                                        num_heads=cfg.evoformer.num_heads_msa,
                                        c_hidden_opm=cfg.evoformer.c_hidden_opm)
                row["chunk_size"] = chunk
                for name, blk, s, c in (("extra", extra, n_extra, cfg.extra_msa_stack.c_m),
                                        ("evoformer", evo, n_seq, cfg.c_m)):
                    m = torch.randn(s, n, c, device="cuda", dtype=torch.bfloat16)
                    mask = torch.ones(s, n, device="cuda", dtype=torch.bfloat16)
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    t0 = time.perf_counter()
                    blk(m, z, mask, pair_mask, chunk_size=chunk, inplace=True)
                    torch.cuda.synchronize()
                    row[f"{name}_s"] = round(time.perf_counter() - t0, 3)
                    row[f"{name}_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                    row["finite"] = bool(torch.isfinite(z).all())
                    del m, mask
                del z, pair_mask
        except torch.cuda.OutOfMemoryError as exc:
            row["error"] = f"OOM: {str(exc).splitlines()[0][:160]}"
        torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--s", type=int, default=512)
    p.add_argument("--kernels", default="auto")
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--probe", default=None, help="comma-separated lengths: memory probe mode")
    p.add_argument("--out", default=None, help="--probe: write the rows as JSON here")
    args = p.parse_args()
    if args.probe:
        rows = probe([int(x) for x in args.probe.split(",") if x], kernels_name=args.kernels)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                           "rows": rows}, f, indent=1)
        return
    cfg = ModelConfig.from_preset("model_3_ptm").evoformer
    block = EvoformerBlock.from_config(cfg).cuda().bfloat16().eval()
    for prm in block.parameters():
        torch.nn.init.normal_(prm, std=0.05)
    m = torch.randn(args.s, args.n, cfg.c_m, device="cuda", dtype=torch.bfloat16)
    z = torch.randn(args.n, args.n, cfg.c_z, device="cuda", dtype=torch.bfloat16)
    msa_mask = torch.ones(args.s, args.n, device="cuda", dtype=torch.bfloat16)
    pair_mask = torch.ones(args.n, args.n, device="cuda", dtype=torch.bfloat16)
    subs = {"tri_mul_out": block.pair_stack.tri_mul_out, "tri_att_start": block.pair_stack.tri_att_start,
            "tri_att_end": block.pair_stack.tri_att_end, "msa_att_col": block.msa_att_col,
            "msa_att_row": block.msa_att_row, "opm": block.outer_product_mean}
    with torch.inference_mode(), kernels.use_backend(args.kernels):
        for _ in range(2):
            block(m, z, msa_mask, pair_mask, chunk_size=args.chunk_size)
        torch.cuda.synchronize()
        for name, mod in subs.items():
            if name.startswith("tri"):
                call = lambda mod=mod: mod(z, mask=pair_mask, chunk_size=args.chunk_size)
            elif name in ("opm", "msa_att_col"):
                call = lambda mod=mod: mod(m, mask=msa_mask, chunk_size=args.chunk_size)
            else:
                call = lambda mod=mod: mod(m, z, mask=msa_mask, chunk_size=args.chunk_size)
            call()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(3):
                call()
            end.record()
            torch.cuda.synchronize()
            print(f"{name}: {start.elapsed_time(end) / 3:.2f} ms", flush=True)
        a = torch.randn(args.n, args.n, 128, device="cuda", dtype=torch.bfloat16)
        at = a.permute(2, 0, 1).contiguous()
        for label, fn in (("contraction (dispatch)", lambda: kernels.triangle_multiplication(a, a, "outgoing")),
                          ("bmm on contiguous [C,N,N]", lambda: torch.bmm(at, at.transpose(1, 2)))):
            fn()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(3):
                fn()
            end.record()
            torch.cuda.synchronize()
            print(f"{label}: {start.elapsed_time(end) / 3:.2f} ms", flush=True)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            block(m, z, msa_mask, pair_mask, chunk_size=args.chunk_size)
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.top, max_name_column_width=90))


if __name__ == "__main__":
    main()
