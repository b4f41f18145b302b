"""The data pipeline: parsers, raw features and the processed model batch.

* :func:`raw_features` — sequence + alignment folder (+ mmCIF dir) → OpenFold's raw feature
  dict (numpy), see ``shared/spec/features.md`` §1.
* :func:`make_batch` — raw features → the processed model batch (torch, recycling axis last)
  that ``sparkfold.load_model(...)`` consumes as it is.
"""

__all__ = ["make_batch", "raw_features"]


def __getattr__(name):
    if name == "raw_features":
        from sparkfold.data.features import raw_features

        return raw_features
    if name == "make_batch":
        from sparkfold.data.batch import make_batch

        return make_batch
    raise AttributeError(f"module 'sparkfold.data' has no attribute {name!r}")
