"""``sparkfold predict INPUT --out DIR``: FASTA/A3M to ranked structures (resumable)."""

import argparse
import sys
from pathlib import Path

__all__ = ["options_from_args", "register", "run"]

# Choices repeated here so that `sparkfold --help` does not import torch; the tests check they
# equal sparkfold.runner.predict's.
_MSA_MODES = ("auto", "local", "server", "single")
_RELAX_MODES = ("none", "best", "all")
_OUTPUT_FORMATS = ("pdb", "mmcif", "both")
_PRECISIONS = ("auto", "fp32", "tf32", "bf16")
_RANK_BY = ("plddt", "ptm")


def _chunk_size(text: str):
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected auto, none or a positive integer, got {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"chunk size must be positive, got {value}")
    return value


def _models(text: str) -> tuple[str, ...]:
    items = tuple(i.strip() for i in text.split(",") if i.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list such as 1,2,3,4,5")
    return items


def register(subparsers) -> None:
    """Add the ``predict`` parser."""
    parser = subparsers.add_parser(
        "predict",
        help="predict structures from a FASTA file, a folder of FASTA/A3M files or an A3M",
        description=(
            "Predict the structure of every sequence of INPUT with up to five AlphaFold2 models, "
            "rank them and write ColabFold-style outputs to OUT/<tag>/ (PDB/mmCIF with pLDDT in "
            "the B-factors, scores and PAE JSON, plots, report.html). Targets run shortest "
            "first; OUT/manifest.json records their state and a rerun skips finished targets. "
            "Sequences never leave this machine unless you pass --msa server."
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="FASTA file (one target per record), folder of .fasta/.fa/.a3m files, or .a3m file",
    )
    parser.add_argument(
        "--out", "-o", type=Path, required=True, metavar="DIR", help="output folder"
    )
    g = parser.add_argument_group("alignments")
    g.add_argument(
        "--alignments",
        type=Path,
        metavar="DIR",
        help="precomputed alignments in OpenFold's layout: DIR/<tag>/*.a3m|*.sto|*.hhr",
    )
    g.add_argument(
        "--msa",
        choices=_MSA_MODES,
        default="auto",
        help="MSA source. auto: --alignments when given, an A3M input's own MSA, else local "
        "databases when configured, else an error. server: the public ColabFold MSA "
        "server (your sequences are sent to it). single: no MSA (less accurate). "
        "(default: auto)",
    )
    g.add_argument("--msa-server-url", metavar="URL", help="MSA server for --msa server")
    g = parser.add_argument_group("models")
    g.add_argument(
        "--models",
        type=_models,
        metavar="LIST",
        help="model numbers or preset names, comma-separated (default: 1,2,3,4,5 with the "
        "pTM heads; with a weights FILE: that file's preset)",
    )
    g.add_argument(
        "--weights",
        default="openfold",
        metavar="{openfold,alphafold,PATH}",
        help="openfold or alphafold weights (downloaded to the cache on first use), or the "
        "path of a weights file/folder; 'random' gives seeded random weights for "
        "testing (default: openfold)",
    )
    g.add_argument(
        "--model-config",
        choices=("tiny",),
        help="for testing only: tiny models (needs --weights random)",
    )
    g.add_argument("--num-recycles", type=int, default=3, metavar="N", help="recycles (default: 3)")
    g.add_argument(
        "--recycle-early-stop-tolerance",
        type=float,
        metavar="TOL",
        help="stop recycling once Cα distances change by less than TOL Å (default: off)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the feature sampling (default: 0)")
    g.add_argument(
        "--rank-by",
        choices=_RANK_BY,
        default="plddt",
        help="rank models by mean pLDDT or by pTM (default: plddt)",
    )
    g = parser.add_argument_group("templates")
    g.add_argument(
        "--templates",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="use templates when the alignments have hits and an mmCIF folder is known "
        "(default: on)",
    )
    g.add_argument(
        "--template-mmcif-dir",
        type=Path,
        metavar="DIR",
        help="template structures, <pdb_id>.cif (default: the configured pdb_mmcif database)",
    )
    g.add_argument(
        "--max-template-date",
        metavar="YYYY-MM-DD",
        help="ignore templates released after this date (default: today)",
    )
    g = parser.add_argument_group("run")
    g.add_argument(
        "--relax",
        choices=_RELAX_MODES,
        help="Amber-relax no model, the best one or all (default: best when the relax extra "
        "is installed, else none)",
    )
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    g.add_argument(
        "--precision",
        choices=_PRECISIONS,
        default="auto",
        help="auto: bf16 on a GPU that supports it, fp32 on the CPU (default: auto)",
    )
    g.add_argument(
        "--kernels",
        default="auto",
        help="kernel backend: auto, reference, sdpa, triton… (default: auto)",
    )
    g.add_argument(
        "--chunk-size",
        type=_chunk_size,
        default="auto",
        metavar="{auto,none,N}",
        help="slice the trunk to save memory (default: auto, from the sequence length and the "
        "free memory)",
    )
    g.add_argument(
        "--cuda-graphs",
        choices=("auto", "on", "off"),
        default="auto",
        help="record each trunk pass as a CUDA graph and replay it: auto does so up to 512 "
        "residues, where kernel launches, not the GPU, set the speed (default: auto)",
    )
    g = parser.add_argument_group("outputs")
    g.add_argument(
        "--output-format",
        choices=_OUTPUT_FORMATS,
        help="structure files (default: both when modelcif is installed, else pdb)",
    )
    g.add_argument("--overwrite", action="store_true", help="redo targets that are already done")
    g.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    g.add_argument("--no-report", dest="report", action="store_false", help="skip report.html")
    g.add_argument("--quiet", "-q", action="store_true", help="print only the summary")
    g = parser.add_argument_group(
        "batch (many targets, several GPUs or nodes)",
        "With several local GPUs, or with --ray, targets run longest first on one inference "
        "worker per GPU (models kept loaded); a target too long for a worker's GPU goes to one "
        "that holds it. OUT/manifest.json records every target; a rerun finishes what is left. "
        "With Ray, OUT must be on a filesystem every node sees at the same path.",
    )
    g.add_argument(
        "--ray",
        nargs="?",
        const="default",
        metavar="ADDRESS|auto|local",
        help="run on a Ray cluster (pip install 'sparkfold[ray]'): local starts one on this "
        "machine, auto joins the running one, ADDRESS is host:6379 or ray://host:10001; "
        "without a value, RAY_ADDRESS or a new local instance. Put it after INPUT or write "
        "--ray=VALUE",
    )
    g.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        metavar="N",
        help="attempts per target when its worker dies or runs out of memory (default: 3)",
    )
    g.add_argument(
        "--workers-per-gpu",
        type=int,
        default=1,
        metavar="K",
        help="inference workers sharing each GPU, each with 1/K of its memory (default: 1)",
    )
    parser.set_defaults(func=run)


def options_from_args(args: argparse.Namespace):
    """The :class:`~sparkfold.runner.predict.PredictOptions` of parsed arguments."""
    from sparkfold.runner.predict import PredictOptions

    return PredictOptions(
        alignments=args.alignments,
        msa=args.msa,
        models=args.models,
        weights=args.weights,
        model_config=args.model_config,
        num_recycles=args.num_recycles,
        recycle_early_stop_tolerance=args.recycle_early_stop_tolerance,
        templates=args.templates,
        template_mmcif_dir=args.template_mmcif_dir,
        max_template_date=args.max_template_date,
        seed=args.seed,
        relax=args.relax or "auto",
        device=args.device,
        precision=args.precision,
        kernels=args.kernels,
        chunk_size=args.chunk_size,
        cuda_graphs=args.cuda_graphs,
        output_format=args.output_format or "auto",
        rank_by=args.rank_by,
        overwrite=args.overwrite,
        plots=args.plots,
        report=args.report,
        msa_server_url=args.msa_server_url,
    )


def _use_batch(args: argparse.Namespace) -> bool:
    """The batch runner: with --ray, or with several local GPUs and --device auto/cuda."""
    if args.ray is not None:
        return True
    if args.device not in ("auto", "cuda") and args.workers_per_gpu == 1:
        return False
    import torch

    return torch.cuda.is_available() and (
        torch.cuda.device_count() > 1 or args.workers_per_gpu > 1
    )


def run(args: argparse.Namespace) -> int:
    """Predict every target; print progress to stderr and a summary; 1 if any target failed."""
    from sparkfold.errors import SparkfoldError

    if args.num_recycles < 0:
        raise SparkfoldError(f"--num-recycles must be >= 0, got {args.num_recycles}")
    for name in ("max_attempts", "workers_per_gpu"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise SparkfoldError(f"{flag} must be >= 1, got {getattr(args, name)}")
    if args.ray is not None:
        from sparkfold.runner.ray_backend import import_ray

        import_ray()  # fails here, with the extra to install, before any work
    options = options_from_args(args)

    def show(event) -> None:
        if not args.quiet or event.stage in ("note", "failed"):
            print(event.format(), file=sys.stderr, flush=True)

    if _use_batch(args):
        from sparkfold.runner.batch import run_batch

        report = run_batch(
            args.inputs,
            args.out,
            options,
            ray=args.ray,
            max_attempts=args.max_attempts,
            workers_per_gpu=args.workers_per_gpu,
            progress=show,
        )
        results = report.results
    else:
        from sparkfold.runner.predict import predict

        results = predict(args.inputs, args.out, options, progress=show)
    counts = {s: sum(r.state == s for r in results) for s in ("done", "skipped", "failed")}
    print(
        f"{len(results)} target(s): {counts['done']} done, {counts['skipped']} already done, "
        f"{counts['failed']} failed; results in {args.out}"
    )
    for r in results:
        if r.state == "failed":
            print(f"  {r.tag}: failed: {r.error}")
        elif r.state == "done" and r.ranking:
            best = r.scores[r.ranking[0]]
            ptm = f", pTM {best['ptm']:.3f}" if best.get("ptm") is not None else ""
            print(f"  {r.tag}: rank 1 {r.ranking[0]} (mean pLDDT {best['mean_plddt']:.1f}{ptm})")
    return 1 if counts["failed"] else 0
