"""Residue and atom tables (facts from OpenFold's ``residue_constants``), loaded lazily.

The tables ship as package data (``resources/residue_constants.json`` and
``resources/stereo_chemical_props.txt``). Nothing is read at import time: the first
attribute access parses the JSON once and caches it.

Access tables as attributes of this module, e.g. ``constants.restypes`` or
``constants.restype_atom14_mask`` (a numpy array). See ``shared/spec/residue_constants.md``
for the key index.
"""

import functools
import json
from importlib import resources
from typing import Any

import numpy as np

#: The 20 standard residues in model order; X = 20, gap = 21, mask = 22.
RESTYPES = "ARNDCQEGHILKMFPSTWYV"
RESTYPES_WITH_X = RESTYPES + "X"
#: HHblits MSA alphabet order used by raw ``msa`` features.
HHBLITS_ALPHABET = "ACDEFGHIKLMNPQRSTVWYX-"
NUM_RESTYPES = 20
UNK_INDEX = 20
GAP_INDEX = 21
MASK_INDEX = 22
ATOM_TYPE_NUM = 37


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("__ndarray__"):
            return np.asarray(value["data"], dtype=value["dtype"]).reshape(value["shape"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


@functools.lru_cache(maxsize=1)
def tables() -> dict[str, Any]:
    """All residue tables, parsed once (numpy arrays for ``__ndarray__`` entries)."""
    text = resources.files("sparkfold").joinpath("resources/residue_constants.json").read_text()
    return {k: _decode(v) for k, v in json.loads(text).items()}


def stereo_chemical_props_text() -> str:
    """The raw ``stereo_chemical_props.txt`` (bond/angle/non-bonded tables)."""
    return resources.files("sparkfold").joinpath("resources/stereo_chemical_props.txt").read_text()


def __getattr__(name: str) -> Any:
    # PEP 562 lazy module attributes: constants.<table> reads the JSON on first use.
    data = tables()
    if name in data:
        return data[name]
    raise AttributeError(f"module 'sparkfold.constants' has no table {name!r}")
