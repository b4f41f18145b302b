"""``sparkfold selftest``: run the whole pipeline on the bundled example with random weights."""

import argparse
import sys
import time
from pathlib import Path

__all__ = ["register", "run"]

_SYMBOLS = {"passed": "✓", "failed": "✗", "skipped": "-"}
_ASCII = {"passed": "+", "failed": "x", "skipped": "-"}


def register(subparsers) -> None:
    """Add the ``selftest`` parser."""
    parser = subparsers.add_parser(
        "selftest",
        help="run the whole pipeline on a bundled example with random weights",
        description=(
            "Check kernels, model, outputs and (when installed) relaxation on this machine: the "
            "bundled example (6KWC chain A) goes through the pipeline with seeded random "
            "weights, no MSA and no download. Prints pass/fail and the time of each stage; the "
            "exit status is 1 when a stage fails. Random weights give meaningless structures: "
            "this checks that everything runs, not accuracy."
        ),
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)"
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "tf32", "bf16"),
        default="auto",
        help="default: bf16 on a GPU that supports it, else fp32",
    )
    parser.add_argument(
        "--size",
        choices=("auto", "full", "tiny"),
        default="auto",
        help="model size: full (model_1_ptm) or tiny; auto = full on a GPU, tiny on the CPU",
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="keep the pipeline's outputs in DIR"
    )
    parser.set_defaults(func=run)


def _encoding_ok(stream) -> bool:
    try:
        "✓✗→".encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def run(args: argparse.Namespace) -> int:
    """Run the stages, print one line each, return 1 if any failed."""
    from sparkfold.runner.selftest import run_selftest

    symbols = _SYMBOLS if _encoding_ok(sys.stdout) else _ASCII

    def show(result) -> None:
        first, *rest = result.detail.splitlines() or [""]
        if symbols is _ASCII:
            first = first.replace("→", "->")
        print(
            f"{symbols[result.status]} {result.name:<8} {result.status:<7} "
            f"{result.seconds:7.1f} s  {first}",
            flush=True,
        )
        if result.status == "failed":
            for line in rest:
                print(f"      {line}")

    start = time.perf_counter()
    results = run_selftest(
        device=args.device, precision=args.precision, size=args.size, out_dir=args.out, report=show
    )
    failed = [r.name for r in results if r.status == "failed"]
    total = time.perf_counter() - start
    if failed:
        print(f"selftest FAILED ({', '.join(failed)}) in {total:.1f} s")
        return 1
    print(f"selftest passed in {total:.1f} s")
    return 0
