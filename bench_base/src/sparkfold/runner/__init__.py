"""Running predictions: input discovery, the resumable manifest and FASTA → ranked structures.

* :func:`sparkfold.runner.predict.predict` — every target of a FASTA/A3M file or folder,
  shortest first, resumable; :class:`PredictOptions` holds every setting.
* :class:`Predictor` — one target at a time with the models kept loaded (one per GPU worker).
* :func:`discover_targets`, :class:`Target` — inputs → targets with unique tags
  (:mod:`sparkfold.runner.targets`).
* :class:`Manifest` — ``<out>/manifest.json`` (:mod:`sparkfold.runner.manifest`).

Attributes are imported lazily, so ``import sparkfold.runner`` does not import torch. The
function ``predict`` is not re-exported here because its module has the same name; import it as
``from sparkfold.runner.predict import predict``.
"""

__all__ = [
    "Manifest",
    "PredictOptions",
    "Predictor",
    "ProgressEvent",
    "Target",
    "TargetResult",
    "discover_targets",
]

_LAZY = {
    "Manifest": "manifest",
    "PredictOptions": "predict",
    "Predictor": "predict",
    "ProgressEvent": "predict",
    "TargetResult": "predict",
    "Target": "targets",
    "discover_targets": "targets",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"sparkfold.runner.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'sparkfold.runner' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
