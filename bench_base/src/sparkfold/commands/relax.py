"""``sparkfold relax IN.pdb --out OUT.pdb``: Amber-relax one structure (AF2/OpenFold procedure)."""

import argparse
import json
from pathlib import Path

__all__ = ["register", "run"]

# Defaults repeated here so that `sparkfold --help` does not import the relax package;
# tests/unit/test_relax_cli.py checks they equal sparkfold.relax's.
_STIFFNESS = 10.0
_TOLERANCE = 10.0
_MAX_OUTER = 20
_PLATFORMS = ("auto", "CUDA", "OpenCL", "CPU", "Reference")


def register(subparsers) -> None:
    """Add the ``relax`` parser."""
    parser = subparsers.add_parser(
        "relax",
        help="Amber-relax a PDB structure with OpenMM (AF2/OpenFold procedure)",
        description=(
            "Restrained Amber99sb minimisation with OpenMM, repeated while structural "
            "violations remain (AF2/OpenFold relax). B-factors (pLDDT) are copied from the "
            "input. Needs `pip install 'sparkfold[relax]'`."
        ),
    )
    parser.add_argument("input", type=Path, metavar="IN.pdb", help="structure to relax")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="OUT.pdb",
        help="relaxed PDB (default: IN with 'unrelaxed' replaced by 'relaxed' in the name, "
        "else IN_relaxed.pdb)",
    )
    parser.add_argument(
        "--platform",
        choices=_PLATFORMS,
        default="auto",
        help="OpenMM platform; auto tries CUDA, then OpenCL, then CPU (default: auto)",
    )
    parser.add_argument(
        "--device-index",
        type=int,
        default=None,
        metavar="N",
        help="GPU index for the CUDA/OpenCL platform",
    )
    parser.add_argument(
        "--stiffness",
        type=float,
        default=_STIFFNESS,
        metavar="K",
        help=f"heavy-atom restraint constant, kcal/mol/Å² (default: {_STIFFNESS})",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=_TOLERANCE,
        metavar="TOL",
        help=(
            f"minimiser force tolerance, kJ/mol/nm (default: {_TOLERANCE}, OpenFold; "
            "AF2 uses 2.39)"
        ),
    )
    parser.add_argument(
        "--max-iterations",
        type=int,
        default=0,
        metavar="N",
        help="L-BFGS iteration limit per minimisation, 0 = until converged (default: 0)",
    )
    parser.add_argument(
        "--max-outer-iterations",
        type=int,
        default=_MAX_OUTER,
        metavar="N",
        help=f"limit on minimise-and-check-violations rounds (default: {_MAX_OUTER})",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="REPORT.json",
        help="write the report (energies, RMSD, violations, platform, time) as JSON",
    )
    parser.set_defaults(func=run)


def default_output(path: Path) -> Path:
    """``x_unrelaxed.pdb`` -> ``x_relaxed.pdb``; other names get ``_relaxed`` appended."""
    stem = path.stem
    if "unrelaxed" in stem:
        return path.with_name(stem.replace("unrelaxed", "relaxed") + path.suffix)
    return path.with_name(f"{stem}_relaxed{path.suffix or '.pdb'}")


def run(args: argparse.Namespace) -> int:
    """Relax ``args.input``, write the relaxed PDB (and report), print a summary."""
    from sparkfold.errors import SparkfoldError
    from sparkfold.relax import relax_pdb, write_text_atomic

    source = Path(args.input)
    if not source.is_file():
        raise SparkfoldError(f"input {str(source)!r} does not exist", fix="pass a PDB file")
    out = Path(args.out) if args.out else default_output(source)
    if out.resolve() == source.resolve():
        raise SparkfoldError(
            f"--out {str(out)!r} is the input file", fix="choose another output path"
        )
    try:
        result = relax_pdb(
            source,
            stiffness=args.stiffness,
            tolerance=args.tolerance,
            max_iterations=args.max_iterations,
            max_outer_iterations=args.max_outer_iterations,
            platform=args.platform,
            device_index=args.device_index,
        )
    except ValueError as err:
        raise SparkfoldError(str(err), fix="check the relax options") from None
    result.write(out)
    report = {"input": str(source), "output": str(out), **result.to_dict()}
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    before, after = result.violations_before, result.violations_after
    print(
        f"relaxed {source} -> {out} on {result.platform} in {result.seconds:.1f} s: "
        f"energy {result.initial_energy:.1f} -> {result.final_energy:.1f} kcal/mol, "
        f"heavy-atom RMSD {result.rmsd:.3f} Å, violations {before.total} -> {after.total} "
        f"(bonds {after.bonds}, angles {after.angles}, clashes {after.clashes} left), "
        f"{result.iterations} iteration(s)"
    )
    if after.residues:
        print(f"residues still violating: {', '.join(after.labels)}")
    return 0
