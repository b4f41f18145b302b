"""Outputs of a prediction: the :class:`Prediction` record and its writers.

* :mod:`~sparkfold.io.prediction` — :class:`Prediction` (from the model's output dict).
* :mod:`~sparkfold.io.pdb`, :mod:`~sparkfold.io.mmcif` — structure files (pLDDT in B-factors;
  ModelCIF QA metrics), with readers for round trips.
* :mod:`~sparkfold.io.confidence` — scores / PAE JSON, ranking, ColabFold file names.
* :mod:`~sparkfold.io.plots`, :mod:`~sparkfold.io.report` — PNG plots and the offline
  ``report.html`` (matplotlib, modelcif: optional, imported on use).
* :mod:`~sparkfold.io.atomic` — :func:`atomic_write`, used for every file written.
* :mod:`~sparkfold.io.fetch` — resumable HTTP downloads and safe tar extraction.
"""

from sparkfold.io.atomic import atomic_write
from sparkfold.io.confidence import (
    OutputNames,
    model_tag,
    rank_predictions,
    ranking_confidence,
    ranking_dict,
    safe_filename,
    write_json,
    write_pae_json,
    write_scores_json,
)
from sparkfold.io.pdb import read_pdb, to_pdb, write_pdb
from sparkfold.io.prediction import Prediction

__all__ = [
    "OutputNames",
    "Prediction",
    "atomic_write",
    "model_tag",
    "rank_predictions",
    "ranking_confidence",
    "ranking_dict",
    "read_pdb",
    "safe_filename",
    "to_pdb",
    "write_json",
    "write_pae_json",
    "write_pdb",
    "write_scores_json",
]
