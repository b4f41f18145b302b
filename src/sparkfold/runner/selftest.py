"""``sparkfold selftest``: the whole pipeline on the bundled example, with random weights.

Stages, each timed and reported as passed / failed / skipped:

1. ``kernels`` — every available kernel backend against the reference on the device
   (attention with and without its gate, triangle contraction and the whole fused triangle
   update, outer product update, LayerNorm) in the run's precision;
2. ``model`` — build a model with seeded random weights and run it on the example's features
   (single-sequence MSA): outputs finite, shapes right;
3. ``outputs`` — the prediction pipeline end to end (features, model, ranking, every output
   file, ``.done``, the manifest), then read the PDB and scores back;
4. ``relax`` — Amber relaxation of an ideal-geometry peptide made from the example's first
   residues on the device's OpenMM platform (skipped when the relax extra is missing). Random
   weights give unphysical structures, so the predicted model itself is not relaxed.

The model is full size (``model_1_ptm``) on a GPU and the tiny test configuration on the CPU,
where a full-size forward pass takes minutes; ``size`` overrides that.
"""

import dataclasses
import json
import math
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Literal

__all__ = ["EXAMPLE_FASTA", "StageResult", "example_fasta", "ideal_peptide_pdb", "run_selftest"]

#: The bundled example (package data).
EXAMPLE_FASTA = "resources/examples/6kwc.fasta"


@dataclasses.dataclass(frozen=True)
class StageResult:
    """One stage: ``status`` is ``passed``, ``failed`` or ``skipped``; ``detail`` says more."""

    name: str
    status: Literal["passed", "failed", "skipped"]
    seconds: float
    detail: str


def example_fasta() -> Path:
    """Path of the bundled example FASTA (6KWC chain A, 191 residues)."""
    return Path(str(resources.files("sparkfold").joinpath(EXAMPLE_FASTA)))


# ------------------------------------------------------------------ ideal peptide for relax
# Ideal backbone geometry (Engh & Huber): bond lengths in Å, angles in degrees.
_BONDS = {"N-CA": 1.458, "CA-C": 1.525, "C-N": 1.329, "C-O": 1.231}
_ANGLES = {"N-CA-C": 111.2, "CA-C-N": 116.2, "C-N-CA": 121.7, "CA-C-O": 120.5}


def _nerf(a, b, c, length: float, angle: float, torsion: float):
    """Position of atom d bonded to c: |cd| = length, ∠bcd = angle, dihedral abcd = torsion."""
    import numpy as np

    theta, phi = math.radians(angle), math.radians(torsion)
    u = (c - b) / np.linalg.norm(c - b)
    normal = np.cross(b - a, u)
    normal /= np.linalg.norm(normal)
    in_plane = np.cross(normal, u)
    return c + length * (
        -math.cos(theta) * u
        + math.sin(theta) * math.cos(phi) * in_plane
        + math.sin(theta) * math.sin(phi) * normal
    )


def ideal_peptide_pdb(sequence: str, *, phi: float = -120.0, psi: float = 130.0) -> str:
    """PDB text of a β-strand backbone (N, CA, C, O) of ``sequence``; relax adds side chains."""
    import numpy as np

    from sparkfold import constants as rc
    from sparkfold.io.pdb import to_pdb
    from sparkfold.io.prediction import Prediction, aatype_from_sequence

    n_res = len(sequence)
    positions = np.zeros((n_res, 37, 3), dtype=np.float32)
    mask = np.zeros((n_res, 37), dtype=np.float32)
    order = {name: rc.atom_order[name] for name in ("N", "CA", "C", "O")}
    n = np.zeros(3)
    ca = np.array([_BONDS["N-CA"], 0.0, 0.0])
    c = _nerf(np.array([0.0, 1.0, 0.0]), n, ca, _BONDS["CA-C"], _ANGLES["N-CA-C"], 0.0)
    for i in range(n_res):
        next_n = _nerf(n, ca, c, _BONDS["C-N"], _ANGLES["CA-C-N"], psi)
        o = _nerf(next_n, ca, c, _BONDS["C-O"], _ANGLES["CA-C-O"], 180.0)
        for name, xyz in (("N", n), ("CA", ca), ("C", c), ("O", o)):
            positions[i, order[name]] = xyz
            mask[i, order[name]] = 1.0
        next_ca = _nerf(ca, c, next_n, _BONDS["N-CA"], _ANGLES["C-N-CA"], 180.0)
        c = _nerf(c, next_n, next_ca, _BONDS["CA-C"], _ANGLES["N-CA-C"], phi)
        n, ca = next_n, next_ca
    peptide = Prediction(
        aatype=aatype_from_sequence(sequence),
        residue_index=np.arange(n_res),
        atom_positions=positions,
        atom_mask=mask,
        plddt=np.full(n_res, 90.0),
        model_name="ideal_peptide",
    )
    return to_pdb(peptide)


# ------------------------------------------------------------------ stages
def _stage(
    name: str, func: Callable[[], str], report: Callable[[StageResult], None] | None, results: list
) -> None:
    start = time.perf_counter()
    try:
        detail = func()
        status = "skipped" if detail.startswith("skipped") else "passed"
    except Exception as exc:  # noqa: BLE001 - a selftest reports every failure, it does not stop
        status, detail = "failed", f"{type(exc).__name__}: {exc}"
        detail += "\n" + "".join(traceback.format_exception(exc)[-3:]).rstrip()
    result = StageResult(name, status, time.perf_counter() - start, detail)
    results.append(result)
    if report is not None:
        report(result)


def _check_kernels(device: str, precision: str) -> str:
    import torch

    from sparkfold.model import kernels
    from sparkfold.model.alphafold import precision_context

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-4
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    def linear(n_out, n_in):
        return rand(n_out, n_in) / math.sqrt(n_in)

    q, k, v = rand(2, 4, 37, 16), rand(2, 4, 41, 16), rand(2, 4, 41, 16)
    bias, gate = rand(2, 1, 1, 41), rand(2, 4, 37, 16)
    a, b = rand(1, 24, 24, 8), rand(1, 24, 24, 8)
    x, w, beta = rand(3, 24, 32), 1 + 0.1 * rand(32), 0.1 * rand(32)
    # The fused trunk ops at small odd sizes (C_z = 32, C = 16): the triangle update and the
    # outer product mean's output.
    z, pair_mask = rand(1, 21, 21, 32), (rand(1, 21, 21) > -1.0).float()
    tri = [1 + 0.1 * rand(32), 0.1 * rand(32), linear(64, 32), 0.1 * rand(64), linear(32, 32),
           0.1 * rand(32), 1 + 0.1 * rand(16), 0.1 * rand(16), linear(32, 16), 0.1 * rand(32)]
    pa, pb = rand(21, 11, 8), rand(21, 11, 8)
    counts = (pair_mask[0, :, :, None] * 11).float()
    w_out, b_out = linear(32, 64), 0.1 * rand(32)
    cases = {
        "attention": lambda t: kernels.attention(t(q), t(k), t(v), [t(bias)]),
        "gated attention": lambda t: kernels.attention(t(q), t(k), t(v), [t(bias)], gate=t(gate)),
        "triangle_multiplication": lambda t: kernels.triangle_multiplication(
            t(a), t(b), "outgoing"
        ),
        "layer_norm": lambda t: kernels.layer_norm(t(x), w, beta),
        "triangle_update": lambda t: kernels.triangle_update(
            t(z), t(pair_mask), kernels.TriangleWeights(*(t(p) for p in tri)), "incoming"
        ),
        "outer_product_update": lambda t: kernels.outer_product_update(
            t(pa), t(pb), counts, t(w_out), t(b_out), 1e-3
        ),
    }
    lines, failed = [], []
    with precision_context("fp32"):
        with kernels.use_backend("reference"):
            expected = {op: fn(lambda z: z.float()) for op, fn in cases.items()}
        for name, available in kernels.available_backends().items():
            if not available:
                lines.append(f"{name}: not available")
                continue
            worst = 0.0
            with kernels.use_backend(name), torch.no_grad():
                for op, fn in cases.items():
                    got = fn(lambda z: z.to(dtype)).float()
                    scale = expected[op].abs().max().clamp_min(1e-6)
                    worst = max(worst, float((got - expected[op]).abs().max() / scale))
            ok = math.isfinite(worst) and worst <= tolerance
            lines.append(f"{name}: max relative error {worst:.1e} ({'ok' if ok else 'TOO LARGE'})")
            if not ok:
                failed.append(name)
    if failed:
        raise AssertionError(
            f"kernel backend(s) {', '.join(failed)} disagree with the reference "
            f"in {precision}: " + "; ".join(lines)
        )
    return f"{precision}: " + "; ".join(lines)


def run_selftest(
    *,
    device: str = "auto",
    precision: str = "auto",
    size: Literal["auto", "full", "tiny"] = "auto",
    out_dir: str | Path | None = None,
    report: Callable[[StageResult], None] | None = None,
) -> list[StageResult]:
    """Run every stage (see the module docstring) and return their results.

    Args:
        device, precision: As ``sparkfold predict`` (``auto`` picks CUDA and bf16 when present).
        size: ``full`` (model_1_ptm size), ``tiny`` or ``auto`` (full on CUDA, tiny on CPU).
        out_dir: Keep the pipeline's outputs here (default: a temporary folder, removed).
        report: Called with each :class:`StageResult` as soon as it is known.
    """
    import numpy as np
    import torch

    from sparkfold.runner.options import (
        PredictOptions,
        relax_available,
        resolve_device,
        resolve_precision,
    )
    from sparkfold.runner.predict import Predictor, predict
    from sparkfold.runner.targets import discover_targets

    results: list[StageResult] = []
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    if size == "auto":
        size = "full" if device.startswith("cuda") else "tiny"
    target = discover_targets(example_fasta())[0]
    options = PredictOptions(
        msa="single",
        weights="random",
        models=("1",),
        model_config="tiny" if size == "tiny" else None,
        num_recycles=1,
        relax="none",
        device=device,
        precision=precision,
        log_file=False,
    )

    _stage("kernels", lambda: _check_kernels(device, precision), report, results)

    predictor = Predictor(options, device=device)

    def model_stage() -> str:
        spec = predictor.models[0]
        raw = predictor.features(target, ("single", None))
        pred = predictor.run_model(spec, raw)
        if not (np.isfinite(pred.atom_positions).all() and np.isfinite(pred.plddt).all()):
            raise AssertionError("the model produced NaN or inf coordinates or pLDDT")
        if pred.num_residues != target.length or pred.pae is None or pred.ptm is None:
            raise AssertionError(
                f"unexpected output: {pred.num_residues} residues, PAE "
                f"{'present' if pred.pae is not None else 'missing'}"
            )
        mem = ""
        if device.startswith("cuda"):
            mem = f", peak GPU memory {torch.cuda.max_memory_allocated(device) / (1 << 30):.2f} GiB"
        return (
            f"{spec.preset} ({size}) with random weights on {device} in {precision}, "
            f"{target.tag} {target.length} residues, 2 passes{mem}"
        )

    _stage("model", model_stage, report, results)

    def outputs_stage() -> str:
        from sparkfold.io.pdb import read_pdb

        with tempfile.TemporaryDirectory(prefix="sparkfold-selftest-") as tmp:
            folder = Path(out_dir) if out_dir is not None else Path(tmp)
            run = predict(
                [target], folder, dataclasses.replace(options, overwrite=True, log_file=True)
            )
            if run[0].state != "done":
                raise AssertionError(f"target {run[0].tag} {run[0].state}: {run[0].error}")
            files = {p.name for p in run[0].outputs}
            pdbs = sorted(p for p in run[0].outputs if p.suffix == ".pdb")
            scores = sorted(p for p in run[0].outputs if "_scores_rank_001_" in p.name)
            if not pdbs or not scores or not (run[0].out_dir / ".done").is_file():
                raise AssertionError(f"missing outputs; found {sorted(files)}")
            structure = read_pdb(pdbs[0])
            if structure.num_residues != target.length:
                raise AssertionError(
                    f"{pdbs[0].name} has {structure.num_residues} residues, "
                    f"expected {target.length}"
                )
            keys = set(json.loads(scores[0].read_text()))
            if not {"plddt", "pae", "max_pae", "ptm"} <= keys:
                raise AssertionError(f"{scores[0].name} lacks keys: {sorted(keys)}")
            where = run[0].out_dir if out_dir is not None else "a temporary folder"
            return f"{len(files)} files in {where}"

    _stage("outputs", outputs_stage, report, results)

    def relax_stage() -> str:
        if not relax_available():
            return "skipped: the relax extra is not installed (pip install 'sparkfold[relax]')"
        from sparkfold.relax import relax_pdb

        index = torch.device(device).index if device.startswith("cuda") else None
        result = relax_pdb(
            ideal_peptide_pdb(target.sequence[:12]),
            platform="CPU" if device == "cpu" else "auto",
            device_index=index,
        )
        return (
            f"12-residue peptide on OpenMM {result.platform}: energy {result.initial_energy:.0f} → "
            f"{result.final_energy:.0f} kcal/mol, {result.violations_after.total} "
            "violations left"
        )

    _stage("relax", relax_stage, report, results)
    predictor.release()
    return results
