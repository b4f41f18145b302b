"""Shared helpers of the batch-runner tests: tiny-model options, inputs, a counting hook."""

import dataclasses
import json
import time
from pathlib import Path

from sparkfold.runner.options import PredictOptions

ALPHABET = "ACDEFGHIKLMNPQRSTVWY"


def tiny_options(**changes) -> PredictOptions:
    """Tiny random model 3 (no templates), no recycling, PDB only, no plots: fast on a CPU."""
    base = {"msa": "single", "models": ("3",), "weights": "random", "model_config": "tiny",
            "num_recycles": 0, "relax": "none", "device": "cpu", "output_format": "pdb",
            "plots": False, "report": False}
    return PredictOptions(**(base | changes))


def sequence(length: int, seed: int) -> str:
    return "".join(ALPHABET[(seed * 7 + i * 3 + i * i) % 20] for i in range(length))


def write_fasta(path: Path, lengths: dict[str, int]) -> Path:
    path.write_text("".join(f">{tag}\n{sequence(n, k)}\n" for k, (tag, n) in
                            enumerate(lengths.items())))
    return path


def read_json(path: Path):
    return json.loads(path.read_text())


def hidden_or_temporary(out: Path) -> list[str]:
    """Paths under ``out`` that a complete batch must not leave (temporary, hidden folders)."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if p.name.startswith(".") and p.name != ".done" or ".tmp-" in p.name
                  or ".old-" in p.name)


@dataclasses.dataclass(frozen=True)
class CountingHook:
    """Target hook run in the workers: one line per call in ``<folder>/<tag>.<stage>``.

    ``kill_on``: at the first start of that tag, leave a half-written temporary folder in
    ``out`` (as a worker killed while writing would) and kill the worker's own Ray actor.
    ``fail_on``: raise at the start of that tag (a target that fails).
    """

    folder: str
    out: str = ""
    kill_on: str | None = None
    fail_on: str | None = None

    def count(self, tag: str, stage: str) -> list[str]:
        path = Path(self.folder) / f"{tag}.{stage}"
        return path.read_text().split() if path.exists() else []

    def __call__(self, stage: str, tag: str, worker: str) -> None:
        path = Path(self.folder) / f"{tag}.{stage}"
        with open(path, "a", encoding="utf-8") as f:
            f.write(worker + "\n")
        if stage != "start":
            return
        if tag == self.fail_on:
            raise RuntimeError(f"hook refuses {tag}")
        if tag == self.kill_on and len(self.count(tag, "start")) == 1:
            partial = Path(self.out) / f".{tag}.tmp-killed"
            partial.mkdir(parents=True, exist_ok=True)
            (partial / f"{tag}_unrelaxed_rank_001_half.pdb").write_text("ATOM  ")
            import ray

            ray.kill(ray.get_runtime_context().current_actor)
            time.sleep(60)  # killed during this
