"""Time Amber relaxation per OpenMM platform (for the lead's GPU runs).

Usage (from the repository root)::

    python benchmarks/bench_relax.py [PDB ...] [--platform CUDA --platform CPU] [--repeats 2]
                                     [--json OUT.json]

Without PDB arguments it relaxes OpenFold's 6KWC sample prediction from
../shared/data/openfold_examples/examples/monomer/sample_predictions/ and compares the result with
OpenFold's relaxed file (heavy-atom RMSD). Platforms default to every one OpenMM offers among
CUDA, OpenCL and CPU. Prints one line per (structure, platform, repeat) and a JSON summary.
The first CUDA run includes kernel compilation; later repeats show the steady state.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared/data/openfold_examples/examples/monomer/sample_predictions"


def _heavy_rmsd(text_a: str, text_b: str) -> float:
    from sparkfold.relax.pdb_utils import parse_pdb

    sq = []
    for ra, rb in zip(parse_pdb(text_a).residues, parse_pdb(text_b).residues):
        for name, element, xyz in zip(ra.atom_names, ra.elements, ra.positions):
            other = rb.atom(name)
            if element != "H" and other is not None:
                sq.append(float(np.sum((xyz - other) ** 2)))
    return float(np.sqrt(np.mean(sq)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdb", nargs="*", type=Path, help="structures (default: 6KWC sample)")
    parser.add_argument("--platform", action="append", help="OpenMM platform (repeatable)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)

    import openmm

    from sparkfold.relax import relax_pdb

    available = [
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    ]
    print(
        f"openmm {openmm.__version__}; platforms {available}; "
        f"plugin failures {len(openmm.Platform.getPluginLoadFailures())}",
        flush=True,
    )
    platforms = args.platform or [p for p in ("CUDA", "OpenCL", "CPU") if p in available]
    inputs = args.pdb or [SAMPLE / "6KWC_1_model_1_ptm_unrelaxed.pdb"]
    results = []
    for path in inputs:
        text = path.read_text()
        reference = path.with_name(path.name.replace("unrelaxed", "relaxed"))
        for platform in platforms:
            for repeat in range(args.repeats):
                result = relax_pdb(text, platform=platform)
                row = {
                    "structure": path.name,
                    "platform": result.platform,
                    "repeat": repeat,
                    "seconds": round(result.seconds, 3),
                    "iterations": result.iterations,
                    "initial_energy_kcal_mol": round(result.initial_energy, 1),
                    "final_energy_kcal_mol": round(result.final_energy, 1),
                    "rmsd_to_input": round(result.rmsd, 4),
                    "violations_after": result.violations_after.total,
                }
                if reference != path and reference.is_file():
                    row["rmsd_to_reference"] = round(
                        _heavy_rmsd(result.pdb, reference.read_text()), 4
                    )
                results.append(row)
                print(json.dumps(row), flush=True)
    summary = json.dumps(results, indent=2)
    if args.json:
        args.json.write_text(summary + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
