"""Helpers shared by the tests: fixture paths, the ../shared lookup, golden .npz loading."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
#: ../shared beside the checkout (third-party-derived fixtures and data; never committed).
SHARED = Path(os.environ.get("SPARKFOLD_SHARED", ROOT.parent / "shared"))


def load_npz(path):
    """Load a golden .npz as (arrays dict, meta dict)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
    return arrays, meta


def load_module_fixture(name):
    """tests/fixtures/modules/<name>.npz as (arrays, meta)."""
    return load_npz(FIXTURES / "modules" / f"{name}.npz")


def shared_path(*parts) -> Path:
    """A path under ../shared, skipping the test with a reason if it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: third-party-derived data lives in ../shared and is never committed")
    return path


def has_cuda() -> bool:
    """Whether torch sees a CUDA device."""
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def shape_checker(fn):
    """The type checker behind jaxtyping's import hook (tests/conftest.py): beartype, with ints
    accepted where floats are annotated (PEP 484's numeric tower)."""
    from beartype import BeartypeConf, beartype

    return beartype(conf=BeartypeConf(is_pep484_tower=True))(fn)


def isolate_user_dirs(tmp_path, monkeypatch):
    """Point the cache and sparkfold.toml into ``tmp_path`` and unset SPARKFOLD_DB_* (no databases)."""
    import os

    config = tmp_path / "sparkfold.toml"
    config.write_text("")
    monkeypatch.setenv("SPARKFOLD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPARKFOLD_CONFIG", str(config))
    for var in list(os.environ):
        if var.startswith("SPARKFOLD_DB_"):
            monkeypatch.delenv(var)
