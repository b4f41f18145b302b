"""Profile one Evoformer block (model_3_ptm sizes, bf16, random weights) on CUDA.

Prints the top CUDA kernels by total time from ``torch.profiler`` and the time of each
sub-module, so that the slow parts of the trunk can be named. Example::

    PYTHONPATH=src python benchmarks/profile_block.py --n 1024 --kernels auto
"""

import argparse

import torch

from sparkfold.config import ModelConfig
from sparkfold.model import kernels
from sparkfold.model.evoformer import EvoformerBlock


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--s", type=int, default=512)
    p.add_argument("--kernels", default="auto")
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args()
    cfg = ModelConfig.from_preset("model_3_ptm").evoformer
    block = EvoformerBlock.from_config(cfg).cuda().bfloat16().eval()
    for prm in block.parameters():
        torch.nn.init.normal_(prm, std=0.05)
    m = torch.randn(args.s, args.n, cfg.c_m, device="cuda", dtype=torch.bfloat16)
    z = torch.randn(args.n, args.n, cfg.c_z, device="cuda", dtype=torch.bfloat16)
    msa_mask = torch.ones(args.s, args.n, device="cuda", dtype=torch.bfloat16)
    pair_mask = torch.ones(args.n, args.n, device="cuda", dtype=torch.bfloat16)
    subs = {"tri_mul_out": block.pair_stack.tri_mul_out, "tri_att_start": block.pair_stack.tri_att_start,
            "msa_att_row": block.msa_att_row, "opm": block.outer_product_mean}
    with torch.inference_mode(), kernels.use_backend(args.kernels):
        for _ in range(2):
            block(m, z, msa_mask, pair_mask, chunk_size=args.chunk_size)
        torch.cuda.synchronize()
        for name, mod in subs.items():
            if name.startswith("tri"):
                call = lambda mod=mod: mod(z, mask=pair_mask, chunk_size=args.chunk_size)
            elif name == "opm":
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
