"""sparkfold: AlphaFold2/OpenFold-compatible structure prediction with nothing to compile.

The public API is imported lazily so that ``import sparkfold`` stays cheap (no torch import):

* :func:`sparkfold.load_model` — build the model and load OpenFold ``.pt`` / AF2 ``.npz`` weights.
* :mod:`sparkfold.config` — :class:`ModelConfig`, :class:`RuntimeConfig`.
* :mod:`sparkfold.data` — parsers, raw features and the model batch.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "ModelConfig", "RuntimeConfig"]


def __getattr__(name):
    if name == "load_model":
        from sparkfold.weights import load_model

        return load_model
    if name in ("ModelConfig", "RuntimeConfig"):
        from sparkfold import config

        return getattr(config, name)
    raise AttributeError(f"module 'sparkfold' has no attribute {name!r}")
