"""Model fidelity and a full-depth forward on a GPU.

1. The two whole-model golden fixtures (tests/fixtures/model_tiny_*.npz) on the device in true fp32:
   the largest absolute difference per output, and whether it lies inside the golden README's
   model tolerance (rtol 1e-3, atol 1e-4·max(1, max|ref|); 5e-4 for sm/angles).
2. A full-depth preset (default model_1_ptm: 48 Evoformer blocks, 4 extra-MSA blocks, templates)
   with random weights at N residues, on a batch made by the real data pipeline from a synthetic
   raw feature dict (MSA rows, 4 templates), timed warm in fp32 (and bf16 with --bf16), with the
   peak GPU memory, plus bf16-vs-fp32 differences in pLDDT and positions.

Usage: PYTHONPATH=src python3 benchmarks/gpu_model_check.py --n 256 --out results.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def tiny_fixture_parity(device: str) -> list[dict]:
    from sparkfold.config import ModelConfig
    from sparkfold.weights import load_model

    rows = []
    for name, templates in (("templ", True), ("notempl", False)):
        with np.load(ROOT / "tests" / "fixtures" / f"model_tiny_{name}.npz") as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
        params = {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("param/")}
        batch = {k[6:]: torch.tensor(v).to(device) for k, v in arrays.items() if k.startswith("input/")}
        model = load_model(params, preset=ModelConfig.tiny(templates=templates), device=device,
                           precision="fp32")
        with torch.no_grad():
            out = model(batch)
        flat = dict(out)
        for k, v in out["sm"].items():
            flat[f"sm/{k}"] = v
        for key, ref in arrays.items():
            if not key.startswith("output/"):
                continue
            name_out = key[len("output/"):]
            got = flat[name_out]
            got = got.detach().double().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
            ref = ref.astype(np.float64)
            k_atol = 5e-4 if name_out in ("sm/angles", "sm/unnormalized_angles") else 1e-4
            atol = k_atol * max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
            diff = np.abs(got - ref)
            ok = bool(np.all(diff <= atol + 1e-3 * np.abs(ref)))
            rows.append({"fixture": name, "output": name_out, "max_abs": float(diff.max()) if diff.size else 0.0,
                         "atol": atol, "within_tolerance": ok})
    return rows


def synthetic_raw(n_res: int, n_msa: int, n_templ: int, seed: int = 0) -> dict:
    """A raw feature dict (OpenFold names/dtypes) with a random MSA and ideal-ish templates."""
    from sparkfold import constants as rc

    rng = np.random.default_rng(seed)
    aatype = rng.integers(0, 20, n_res)
    seq = "".join(rc.restypes[i] for i in aatype)
    hh = {c: i for i, c in enumerate(rc.HHBLITS_ALPHABET)}
    query_hh = np.array([hh[c] for c in seq], dtype=np.int32)
    msa = rng.integers(0, 22, (n_msa, n_res)).astype(np.int32)
    keep = rng.random((n_msa, n_res)) < 0.6
    msa = np.where(keep, query_hh[None], msa)
    msa[0] = query_hh
    deletions = (rng.random((n_msa, n_res)) < 0.05).astype(np.int32) * rng.integers(1, 5, (n_msa, n_res))
    deletions[0] = 0
    raw = {
        "aatype": np.eye(21, dtype=np.int32)[aatype],
        "between_segment_residues": np.zeros(n_res, np.int32),
        "residue_index": np.arange(n_res, dtype=np.int32),
        "seq_length": np.full(n_res, n_res, np.int32),
        "msa": msa,
        "deletion_matrix_int": deletions.astype(np.int32),
        "num_alignments": np.full(n_res, n_msa, np.int32),
    }
    # Templates: a straight chain of CA atoms 3.8 Å apart with N/C/CB offsets, noisy per template.
    pos = np.zeros((n_templ, n_res, 37, 3), np.float32)
    mask = np.zeros((n_templ, n_res, 37), np.float32)
    t = np.arange(n_res, dtype=np.float32)
    ca = np.stack([3.8 * t, 2.0 * np.sin(t / 3.0), 2.0 * np.cos(t / 3.0)], -1)
    for i in range(n_templ):
        noise = rng.normal(0, 0.3, (n_res, 3)).astype(np.float32)
        pos[i, :, 1] = ca + noise
        pos[i, :, 0] = ca + noise + np.array([-1.2, 0.6, 0.3], np.float32)
        pos[i, :, 2] = ca + noise + np.array([1.2, 0.5, -0.2], np.float32)
        pos[i, :, 3] = ca + noise + np.array([0.0, -1.3, 0.8], np.float32)
        mask[i, :, :4] = 1.0
    hh_onehot = np.eye(22, dtype=np.float32)[query_hh]
    raw.update({
        "template_aatype": np.repeat(hh_onehot[None], n_templ, 0).astype(np.int64),
        "template_all_atom_positions": pos,
        "template_all_atom_mask": mask,
        "template_sum_probs": np.linspace(20, 10, n_templ, dtype=np.float32)[:, None],
    })
    return raw


def full_forward(preset: str, n: int, device: str, precisions: list[str], n_msa: int) -> dict:
    from sparkfold.data import make_batch
    from sparkfold.weights import load_model

    raw = synthetic_raw(n, n_msa, 4)
    t0 = time.perf_counter()
    batch = make_batch(raw, preset=preset, seed=0, num_recycles=3)
    featurise_s = time.perf_counter() - t0
    batch = {k: v.to(device) for k, v in batch.items()}
    result = {"preset": preset, "n_res": n, "msa_rows": n_msa, "featurise_s": featurise_s,
              "batch_shapes": {k: list(v.shape) for k, v in batch.items() if k in ("msa_feat", "extra_msa", "template_aatype")}}
    outputs = {}
    for precision in precisions:
        model = load_model("random", preset=preset, device=device, precision=precision)
        times = []
        for _ in range(2):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model(batch)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        result[precision] = {"first_s": times[0], "warm_s": times[1],
                             "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                             "mean_plddt": float(out["plddt"].float().mean()),
                             "ptm": float(out["ptm_score"]) if "ptm_score" in out else None}
        outputs[precision] = {k: out[k].float().cpu() for k in ("plddt", "final_atom_positions")}
        del model, out
        torch.cuda.empty_cache()
    if "fp32" in outputs and "bf16" in outputs:
        a, b = outputs["fp32"], outputs["bf16"]
        mask = batch["atom37_atom_exists"][..., -1].cpu() > 0
        d = (a["final_atom_positions"] - b["final_atom_positions"]).norm(dim=-1)[mask]
        result["bf16_vs_fp32"] = {
            "plddt_max_abs": float((a["plddt"] - b["plddt"]).abs().max()),
            "plddt_mean_abs": float((a["plddt"] - b["plddt"]).abs().mean()),
            "position_max_dev_A": float(d.max()),
            "position_rms_dev_A": float(d.pow(2).mean().sqrt()),
        }
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--n", type=int, default=256, help="residues for the full-depth forward")
    p.add_argument("--msa-rows", type=int, default=2048, help="synthetic MSA rows before sampling")
    p.add_argument("--preset", default="model_1_ptm")
    p.add_argument("--bf16", action="store_true", help="also run bf16 and compare with fp32")
    p.add_argument("--skip-full", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    report = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__}
    report["tiny_fixture_parity"] = tiny_fixture_parity(args.device)
    worst = {}
    for row in report["tiny_fixture_parity"]:
        print(f"{row['fixture']:8s} {row['output']:32s} max|Δ| {row['max_abs']:.2e}  atol {row['atol']:.1e}  "
              f"{'ok' if row['within_tolerance'] else 'FAIL'}")
        worst[row["fixture"]] = worst.get(row["fixture"], True) and row["within_tolerance"]
    if not args.skip_full:
        precisions = ["fp32", "bf16"] if args.bf16 else ["fp32"]
        report["full_forward"] = full_forward(args.preset, args.n, args.device, precisions, args.msa_rows)
        print(json.dumps(report["full_forward"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0 if all(worst.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
