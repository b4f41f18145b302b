"""jackhmmer throughput: sparkfold's pyhmmer search vs the ``jackhmmer`` binary (Debian hmmer).

Both run AF2's flags (``-N 1 --F1 0.0005 --F2 0.00005 --F3 0.0000005 --incE 0.0001
-E 0.0001``) on the same synthetic database (protein families + random decoys) and queries,
in one run, and the outputs are compared (identical up to the ``#=GF AU`` line).

    python benchmarks/bench_search.py [--sequences 50000] [--queries 4] [--cpus 2]

Prints one line per variant: wall time, database residues searched per second
(queries x database residues / time) and whether the alignments match the binary's.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AA = "ACDEFGHIKLMNPQRSTVWY"
FLAGS = ["--F1", "0.0005", "--F2", "0.00005", "--F3", "0.0000005", "--incE", "0.0001",
         "-E", "0.0001", "-N", "1"]


def make_database(folder: Path, num_sequences: int, num_queries: int, seed: int = 0):
    """Write a synthetic FASTA database; return (path, queries, total residues)."""
    rng = random.Random(seed)
    ancestors = ["".join(rng.choice(AA) for _ in range(rng.randint(150, 400)))
                 for _ in range(num_queries)]
    residues = 0
    path = folder / "bench_db.fasta"
    with open(path, "w") as f:
        for i in range(num_sequences):
            if i % 20 == 0:  # 5% homologs of the queries
                parent = ancestors[(i // 20) % num_queries]
                seq = "".join(
                    rng.choice(AA) if rng.random() < rng.uniform(0.1, 0.6) else c for c in parent
                )
            else:
                seq = "".join(rng.choice(AA) for _ in range(rng.randint(80, 500)))
            residues += len(seq)
            f.write(f">seq{i} synthetic\n{seq}\n")
    return path, {f"query{i}": a for i, a in enumerate(ancestors)}, residues


def without_author(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#=GF AU"))


def run_binary(folder: Path, queries: dict, db: Path, cpus: int) -> tuple[float, dict]:
    outputs = {}
    start = time.perf_counter()
    for name, seq in queries.items():
        query = folder / f"{name}.fasta"
        query.write_text(f">{name}\n{seq}\n")
        out = folder / f"{name}.binary.sto"
        subprocess.run(["jackhmmer", "-o", os.devnull, "-A", out, "--noali", *FLAGS,
                        "--cpu", str(cpus), query, db], check=True, capture_output=True)
        outputs[name] = out.read_text()
    return time.perf_counter() - start, outputs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=50_000, help="database size")
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)

    from sparkfold.data.search.jackhmmer import jackhmmer

    rows = []
    with tempfile.TemporaryDirectory(prefix="sparkfold-bench-") as tmp:
        folder = Path(tmp)
        db, queries, residues = make_database(folder, args.sequences, args.queries)
        size_mb = db.stat().st_size / 1e6
        print(f"database: {args.sequences} sequences, {residues / 1e6:.1f} M residues "
              f"({size_mb:.1f} MB); {len(queries)} queries; cpus={args.cpus}", file=sys.stderr)
        reference = None
        if shutil.which("jackhmmer"):
            elapsed, reference = run_binary(folder, queries, db, args.cpus)
            rows.append(("jackhmmer binary (one run per query)", elapsed, True))
        start = time.perf_counter()
        batched = jackhmmer(queries, db, max_sequences=None, cpus=args.cpus)
        rows.append(("pyhmmer, all queries in one database pass",
                     time.perf_counter() - start, batched))
        start = time.perf_counter()
        single = {}
        for name, seq in queries.items():
            single.update(jackhmmer({name: seq}, db, max_sequences=None, cpus=args.cpus))
        rows.append(("pyhmmer, one call per query", time.perf_counter() - start, single))

    results = []
    for label, elapsed, outputs in rows:
        if outputs is True or reference is None:
            match = None
        else:
            match = all(without_author(outputs[n]) == without_author(reference[n])
                        for n in queries)
        rate = len(queries) * residues / elapsed
        results.append({"variant": label, "seconds": round(elapsed, 3),
                        "residues_per_second": round(rate), "matches_binary": match})
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            match = "" if r["matches_binary"] is None else f"  matches binary: {r['matches_binary']}"
            print(f"{r['variant']:45s} {r['seconds']:8.2f} s  "
                  f"{r['residues_per_second'] / 1e6:8.1f} M residues/s{match}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
