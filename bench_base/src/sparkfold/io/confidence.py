"""Confidence JSON files, ranking and the names of every result file (ColabFold / AFDB layout).

Formats follow ``shared/spec/outputs.md``:

* ``{job}_scores_rank_{RRR}_{tag}.json`` (§1.2): one flat object with keys in the order
  ``plddt`` (2 decimals), ``max_pae`` (largest value of the PAE matrix, unrounded), ``pae``
  (2 decimals), ``ptm`` (2 decimals); models without a PAE head write only ``plddt``;
  ``json.dumps`` default separators.
* ``{job}_predicted_aligned_error_v1.json`` (§1.3): ColabFold's bare object
  ``{"predicted_aligned_error": [[..]], "max_predicted_aligned_error": x}`` of the rank-1 model.
  ``style="afdb"`` gives the current AlphaFold DB form instead (§2): a one-element list, integer
  PAE, ``max_predicted_aligned_error`` = the model's ceiling (31.75), compact separators.
* AF2 ``confidence_{model}.json`` (§2): ``residueNumber``, ``confidenceScore``,
  ``confidenceCategory``.
"""

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from sparkfold.io.atomic import atomic_write
from sparkfold.io.prediction import Prediction

__all__ = [
    "OutputNames",
    "RankBy",
    "confidence_json",
    "model_tag",
    "pae_dict",
    "pae_json",
    "rank_predictions",
    "ranking_confidence",
    "ranking_dict",
    "safe_filename",
    "scores_dict",
    "scores_json",
    "write_json",
    "write_pae_json",
    "write_scores_json",
]

RankBy = Literal["auto", "plddt", "ptm"]


# --------------------------------------------------------------------------- names
def safe_filename(name: str) -> str:
    """ColabFold's job name rule: every character that is not alphanumeric or ``_ . -`` → ``_``."""
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)


def model_tag(model_type: str, model_number: int, seed: int = 0) -> str:
    """``{model_type}_model_{N}_seed_{SSS}``, e.g. ``alphafold2_ptm_model_1_seed_000``."""
    if not 1 <= int(model_number) <= 5:
        raise ValueError(f"model number must be 1..5, got {model_number}")
    return f"{model_type}_model_{int(model_number)}_seed_{int(seed):03d}"


_RANK_RE = re.compile(r"^[1-9][0-9]*$")


@dataclasses.dataclass(frozen=True)
class OutputNames:
    """File names of one job's results (ColabFold ``colabfold_batch`` layout, outputs.md §1.1).

    Per-model files are ``{job}_{kind}_rank_{RRR}_{tag}.{ext}`` with ``RRR`` the 1-based rank
    zero-padded to 3 digits. Job-level files carry the job name as a prefix so that several
    jobs can share one result directory; ``config.json``, ``log.txt`` and ``cite.bibtex`` are
    per run.

    Attributes:
        jobname: The job name, already passed through :func:`safe_filename`.
    """

    jobname: str

    CONFIG_JSON = "config.json"
    LOG_TXT = "log.txt"
    CITE_BIBTEX = "cite.bibtex"

    def __post_init__(self) -> None:
        if not self.jobname or safe_filename(self.jobname) != self.jobname:
            raise ValueError(
                f"job name {self.jobname!r} has characters not allowed in file names; "
                f"use safe_filename() first (→ {safe_filename(self.jobname)!r})")

    @classmethod
    def from_header(cls, header: str) -> "OutputNames":
        """Names for a FASTA/CSV header (made safe with :func:`safe_filename`)."""
        return cls(safe_filename(header.strip()) or "job")

    def ranked(self, kind: str, rank: int, tag: str, ext: str) -> str:
        """``{job}_{kind}_rank_{RRR}_{tag}.{ext}``."""
        if not _RANK_RE.match(str(rank)):
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        return f"{self.jobname}_{kind}_rank_{int(rank):03d}_{tag}.{ext}"

    def unranked(self, kind: str, tag: str, ext: str) -> str:
        """``{job}_{kind}_{tag}.{ext}``: the name before ranking (ColabFold renames afterwards)."""
        return f"{self.jobname}_{kind}_{tag}.{ext}"

    def unrelaxed_pdb(self, rank: int, tag: str) -> str:
        return self.ranked("unrelaxed", rank, tag, "pdb")

    def relaxed_pdb(self, rank: int, tag: str) -> str:
        return self.ranked("relaxed", rank, tag, "pdb")

    def unrelaxed_cif(self, rank: int, tag: str) -> str:
        return self.ranked("unrelaxed", rank, tag, "cif")

    def relaxed_cif(self, rank: int, tag: str) -> str:
        return self.ranked("relaxed", rank, tag, "cif")

    def scores_json(self, rank: int, tag: str) -> str:
        return self.ranked("scores", rank, tag, "json")

    @property
    def pae_json(self) -> str:
        return f"{self.jobname}_predicted_aligned_error_v1.json"

    @property
    def coverage_png(self) -> str:
        return f"{self.jobname}_coverage.png"

    @property
    def pae_png(self) -> str:
        return f"{self.jobname}_pae.png"

    @property
    def plddt_png(self) -> str:
        return f"{self.jobname}_plddt.png"

    @property
    def a3m(self) -> str:
        return f"{self.jobname}.a3m"

    @property
    def done_marker(self) -> str:
        return f"{self.jobname}.done.txt"

    # Per-target files that the predict issue names plainly (one target per folder).
    @property
    def ranking_json(self) -> str:
        return "ranking.json"

    @property
    def timings_json(self) -> str:
        return "timings.json"

    @property
    def report_html(self) -> str:
        return "report.html"


# --------------------------------------------------------------------------- JSON helpers
def _round_list(array: np.ndarray, decimals: int) -> list:
    # float64 first, so that 2-decimal values print as 12.34, not float32's 12.340000152587891.
    return np.round(np.asarray(array, dtype=np.float64), decimals).tolist()


def write_json(path: str | os.PathLike, data, *, indent: int | None = None,
               compact: bool = False) -> Path:
    """Write ``data`` as JSON atomically (``indent=4`` for config/timings/ranking files)."""
    separators = (",", ":") if compact else None
    return atomic_write(path, json.dumps(data, indent=indent, separators=separators))


def scores_dict(prediction: Prediction) -> dict:
    """ColabFold's scores object of one model (outputs.md §1.2), keys in file order."""
    out: dict = {"plddt": _round_list(prediction.plddt, 2)}
    if prediction.pae is not None:
        out["max_pae"] = float(prediction.pae.max()) if prediction.pae.size else 0.0
        out["pae"] = _round_list(prediction.pae, 2)
    if prediction.ptm is not None:
        out["ptm"] = round(float(prediction.ptm), 2)
    return out


def scores_json(prediction: Prediction) -> str:
    """The text of ``{job}_scores_rank_{RRR}_{tag}.json`` (``json.dumps`` defaults)."""
    return json.dumps(scores_dict(prediction))


def write_scores_json(path: str | os.PathLike, prediction: Prediction) -> Path:
    """Write :func:`scores_json` to ``path`` atomically."""
    return atomic_write(path, scores_json(prediction))


def pae_dict(prediction: Prediction, style: Literal["colabfold", "afdb"] = "colabfold"):
    """The PAE JSON object (see the module docstring for the two styles).

    Raises:
        ValueError: the prediction has no PAE (model without a pTM head).
    """
    if prediction.pae is None:
        raise ValueError(f"model {prediction.model_name!r} has no PAE (not a pTM model)")
    if style == "colabfold":
        return {"predicted_aligned_error": _round_list(prediction.pae, 2),
                "max_predicted_aligned_error": float(prediction.pae.max())}
    if style == "afdb":
        ceiling = prediction.max_pae if prediction.max_pae is not None else float(prediction.pae.max())
        return [{"predicted_aligned_error": np.rint(prediction.pae).astype(int).tolist(),
                 "max_predicted_aligned_error": ceiling}]
    raise ValueError(f"unknown PAE JSON style {style!r}; use 'colabfold' or 'afdb'")


def pae_json(prediction: Prediction, style: Literal["colabfold", "afdb"] = "colabfold") -> str:
    """The text of the PAE JSON (ColabFold: default separators; AFDB: compact)."""
    if style == "afdb":
        return json.dumps(pae_dict(prediction, style), separators=(",", ":"))
    return json.dumps(pae_dict(prediction, style))


def write_pae_json(path: str | os.PathLike, prediction: Prediction,
                   style: Literal["colabfold", "afdb"] = "colabfold") -> Path:
    """Write :func:`pae_json` to ``path`` atomically."""
    return atomic_write(path, pae_json(prediction, style))


def confidence_json(prediction: Prediction) -> str:
    """AF2/AFDB ``confidence_{model}.json``: residue numbers, pLDDT (2 decimals), category.

    Categories: ``D`` (< 50), ``L`` (50–70), ``M`` (70–90), ``H`` (≥ 90).
    """
    plddt = np.asarray(prediction.plddt, dtype=np.float64)
    category = np.where(plddt < 50, "D", np.where(plddt < 70, "L", np.where(plddt < 90, "M", "H")))
    data = {"residueNumber": list(range(1, prediction.num_residues + 1)),
            "confidenceScore": _round_list(plddt, 2),
            "confidenceCategory": category.tolist()}
    return json.dumps(data, separators=(",", ":"))


# --------------------------------------------------------------------------- ranking
def _resolve_rank_by(prediction: Prediction, rank_by: RankBy) -> str:
    if rank_by == "auto":
        # ColabFold: "multimer" for complexes, else pLDDT. sparkfold has no ipTM (monomer
        # model only), so auto is pLDDT.
        return "plddt"
    if rank_by not in ("plddt", "ptm"):
        raise ValueError(f"unknown rank_by {rank_by!r}; use 'auto', 'plddt' or 'ptm'")
    if rank_by == "ptm" and prediction.ptm is None:
        return "plddt"  # ColabFold forces pLDDT for models without a pTM head
    return rank_by


def ranking_confidence(prediction: Prediction, rank_by: RankBy = "auto") -> float:
    """ColabFold's ranking confidence (higher = better): mean pLDDT or 100 × pTM."""
    if _resolve_rank_by(prediction, rank_by) == "ptm":
        return 100.0 * float(prediction.ptm)
    return prediction.mean_plddt


def rank_predictions(predictions: Sequence[Prediction], rank_by: RankBy = "auto") -> list[Prediction]:
    """Predictions sorted best first by :func:`ranking_confidence` (ties keep input order).

    With ``rank_by="ptm"`` every model must have a pTM head; otherwise all are ranked by pLDDT.
    """
    if rank_by == "ptm" and any(p.ptm is None for p in predictions):
        rank_by = "plddt"
    scores = [ranking_confidence(p, rank_by) for p in predictions]
    order = sorted(range(len(predictions)), key=lambda i: -scores[i])
    return [predictions[i] for i in order]


def ranking_dict(ranked: Sequence[Prediction], rank_by: RankBy = "auto") -> dict:
    """Content of ``ranking.json`` for predictions already in rank order.

    AF2's ``ranking_debug.json`` keys (``plddts``: mean pLDDT per model, ``order``: best first)
    plus ``ptms`` (when every model has pTM), ``ranking_confidence`` per model and ``rank_by``.
    """
    effective = "plddt"
    if rank_by == "ptm" and all(p.ptm is not None for p in ranked):
        effective = "ptm"
    out: dict = {"rank_by": effective,
                 "plddts": {p.model_name: round(p.mean_plddt, 4) for p in ranked}}
    if ranked and all(p.ptm is not None for p in ranked):
        out["ptms"] = {p.model_name: round(float(p.ptm), 4) for p in ranked}
    out["ranking_confidence"] = {p.model_name: round(ranking_confidence(p, effective), 4)
                                 for p in ranked}
    out["order"] = [p.model_name for p in ranked]
    return out

