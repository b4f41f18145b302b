"""Raw-feature benchmarks (CPU, one core).

1. Featurise 6KWC (191 residues, 3057 MSA rows: bfd_uniref_hits.a3m + a 6-block mgnify
   Stockholm) from ``../shared/data/openfold_examples`` with ``raw_features``; goal < 2 s.
2. Stream a synthetic 100k-sequence Stockholm file with ``read_stockholm`` and report the peak
   RSS of a fresh process: reading everything (memory ~ the output arrays) and with
   ``max_sequences`` (memory bounded, independent of the file size).

Usage: ``python benchmarks/bench_featurize.py [--repeats 5] [--num-seqs 100000] [--length 150]``.
Prints a table and one JSON line (``RESULT {...}``).
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPARKFOLD_SHARED", ROOT.parent / "shared"))


def _pin_one_core():
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def bench_6kwc(repeats: int) -> dict:
    examples = SHARED / "data" / "openfold_examples" / "examples" / "monomer"
    if not examples.exists():
        return {"skipped": f"{examples} is absent"}
    from sparkfold.data.features import raw_features
    from sparkfold.data.parsers import read_fasta

    (record,) = read_fasta(examples / "fasta_dir" / "6kwc.fasta")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        features = raw_features(
            record.sequence, examples / "alignments" / "6KWC_1", description=record.description
        )
        times.append(time.perf_counter() - start)
    return {
        "msa_shape": list(features["msa"].shape),
        "first_s": round(times[0], 3),
        "best_s": round(min(times), 3),
        "median_s": round(sorted(times)[len(times) // 2], 3),
    }


def write_stockholm(path: Path, num_seqs: int, length: int, block: int = 0, seed: int = 0) -> None:
    """A jackhmmer-like Stockholm: query + num_seqs-1 hits, ~10 % insert columns."""
    rnd = random.Random(seed)
    aa = "ACDEFGHIKLMNPQRSTVWY"
    columns = [rnd.random() < 0.1 for _ in range(length + length // 9)]  # True = insert column
    query = "".join("-" if ins else rnd.choice(aa) for ins in columns)
    width = len(columns)
    block = block or width
    with open(path, "w") as f:
        f.write("# STOCKHOLM 1.0\n#=GF ID query-i1\n\n")
        rows = [("query", query)]
        for i in range(1, num_seqs):
            row = "".join(
                (rnd.choice(aa).lower() if rnd.random() < 0.2 else "-")
                if ins
                else (rnd.choice(aa) if rnd.random() < 0.8 else "-")
                for ins in columns
            )
            rows.append((f"UniRef90_X{i:07d}/1-{length}", row))
        for start in range(0, width, block):
            for name, row in rows:
                f.write(f"{name:<32} {row[start : start + block]}\n")
            f.write("\n")
        f.write("#=GC RF " + "".join("." if ins else "x" for ins in columns) + "\n//\n")


_CHILD = """
import resource, sys, time
from sparkfold.data.parsers import read_stockholm
mode, path = sys.argv[1], sys.argv[2]
start = time.perf_counter()
rows = 0
if mode != "baseline":
    msa = read_stockholm(path, max_sequences=None if mode == "all" else int(mode))
    rows = len(msa)
print(rows, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_stream(num_seqs: int, length: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.sto"
        start = time.perf_counter()
        write_stockholm(path, num_seqs, length)
        out["file_mb"] = round(path.stat().st_size / 2**20, 1)
        out["write_s"] = round(time.perf_counter() - start, 1)
        for mode in ("baseline", "10000", "all"):
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, mode, str(path)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            )
            rows, seconds, rss_kb = proc.stdout.split()
            out[mode] = {
                "rows": int(rows),
                "seconds": round(float(seconds), 2),
                "peak_rss_mb": round(int(rss_kb) / 1024, 1),
            }
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-seqs", type=int, default=100_000)
    parser.add_argument("--length", type=int, default=150)
    args = parser.parse_args()
    _pin_one_core()
    sys.path.insert(0, str(ROOT / "src"))
    result = {
        "6kwc_raw_features": bench_6kwc(args.repeats),
        "stockholm_stream": bench_stream(args.num_seqs, args.length),
    }
    six = result["6kwc_raw_features"]
    print(f"6KWC raw_features (1 core): {six}")
    stream = result["stockholm_stream"]
    print(
        f"Synthetic Stockholm: {args.num_seqs} sequences, query length {args.length}, {stream['file_mb']} MB"
    )
    for mode in ("baseline", "10000", "all"):
        label = {"baseline": "import only", "10000": "max_sequences=10000", "all": "all rows"}[mode]
        s = stream[mode]
        print(
            f"  {label:<22} rows={s['rows']:>7}  {s['seconds']:>6.2f} s  peak RSS {s['peak_rss_mb']:>7.1f} MB"
        )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
