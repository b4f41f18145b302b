"""``sparkfold doctor``: check this machine and say how to fix what is missing."""

import argparse
import sys

__all__ = ["register", "run"]


def register(subparsers) -> None:
    """Add the ``doctor`` parser."""
    parser = subparsers.add_parser(
        "doctor",
        help="check the GPU, driver, PyTorch, kernels, tools, weights and databases",
        description=(
            "Check that this machine can run sparkfold. Each line starts with ✓ (ok), "
            "! (absent or degraded; optional) or ✗ (broken), followed by the fix. The exit "
            "status is 1 only when something every run needs is missing: torch, a working "
            "compute device (the CPU counts) or a writable cache directory."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the machine-readable report")
    parser.add_argument(
        "--no-launch", dest="launch", action="store_false",
        help="skip the test launches (matmul, attention, Triton kernel) on the device",
    )
    parser.add_argument(
        "--ascii", action="store_true",
        help="ASCII symbols instead of ✓ ! ✗ (chosen automatically when the terminal needs it)",
    )
    parser.set_defaults(func=run)


def _needs_ascii(stream) -> bool:
    try:
        "✓✗≈≤≥×·²".encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return True
    return False


def run(args: argparse.Namespace) -> int:
    """Run the checks, print the report, return its exit status."""
    from sparkfold.doctor import run_checks

    report = run_checks(launch=args.launch)
    if args.json:
        print(report.to_json())
    else:
        sys.stdout.write(report.format_text(ascii_only=args.ascii or _needs_ascii(sys.stdout)))
    return report.exit_code
