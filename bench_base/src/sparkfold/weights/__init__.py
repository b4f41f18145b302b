"""Weights: build the model and load OpenFold ``.pt`` / AF2 ``.npz`` parameters into it.

:func:`load_model` is the entry point (also exposed as ``sparkfold.load_model``). Canonical
parameter names are OpenFold's; :mod:`sparkfold.weights.af2_npz` maps AF2 files onto them with a
declarative table and :mod:`sparkfold.weights.openfold_pt` reads OpenFold checkpoints.
"""

from sparkfold.weights.loader import (
    CANDIDATE_PRESETS,
    UnsupportedPresetError,
    WeightsError,
    build_model,
    expected_state_dict_shapes,
    infer_preset,
    load_model,
    load_state_dict_strict,
    randomize_parameters,
    read_weights,
)

__all__ = [
    "CANDIDATE_PRESETS",
    "UnsupportedPresetError",
    "WeightsError",
    "build_model",
    "expected_state_dict_shapes",
    "infer_preset",
    "load_model",
    "load_state_dict_strict",
    "randomize_parameters",
    "read_weights",
]
