"""OpenFold ``.pt`` checkpoints → canonical state dict.

Accepted layouts (``shared/spec/af2_params_mapping.md``, "OpenFold's own checkpoints"):

* a plain ``state_dict`` (OpenFold's released ``finetuning_*.pt``);
* a training checkpoint holding ``{"ema": {"params": state_dict}, ...}`` — the EMA weights are
  used, as OpenFold's inference script does; otherwise ``state_dict``/``module`` is used;
* keys with a ``model.`` or ``module.`` prefix (Lightning / DeepSpeed wrappers);
* OpenFold v1 key names (``core.tri_…``, ``template_angle_embedder`` …), renamed to v2;
* a DeepSpeed checkpoint directory whose ``mp_rank_00_model_states.pt`` holds the EMA or
  module weights.

Files are always read with ``torch.load(..., weights_only=True)``: no arbitrary objects are
unpickled.
"""

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["PtReadError", "read_openfold_checkpoint", "rename_v1_keys", "unwrap_checkpoint"]


class PtReadError(ValueError):
    """The checkpoint cannot be read or holds no recognisable state dict."""


_WRAPPER_PREFIXES = ("module.", "model.")

#: OpenFold v1 → v2 key fragments (OpenFold ``convert_deprecated_v1_keys``).
_V1_RENAMES: tuple[tuple[str, str], ...] = (
    ("template_angle_embedder", "template_single_embedder"),
    ("core.msa_transition", "msa_transition"),
    ("core.outer_product_mean", "outer_product_mean"),
    ("core.tri_", "pair_stack.tri_"),
    ("core.pair_transition", "pair_stack.pair_transition"),
)
_V1_POINT_PROJ = re.compile(r"ipa\.linear_(q|kv)_points\.(weight|bias)$")
_V1_TEMPLATE_TOP = re.compile(r"^(template_(?!embedder)[a-z_]+)\.")


def _torch_load(path: Path) -> object:
    # Memory-map zip-format checkpoints (no second in-memory copy); legacy files cannot be.
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc) and "legacy" not in str(exc):
            raise
    return torch.load(path, map_location="cpu", weights_only=True)


def _load(path: Path) -> object:
    try:
        return _torch_load(path)
    except FileNotFoundError:
        raise PtReadError(f"weights file {path} does not exist") from None
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "can still be loaded" in text:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise PtReadError(
                f"{path} contains Python objects other than tensors{what}, which sparkfold "
                "refuses to unpickle (torch.load weights_only=True). Save just the state dict "
                "(torch.save(model.state_dict(), path)) and load that file"
            ) from None
        raise PtReadError(
            f"{path} is not a readable PyTorch checkpoint (corrupt or not a checkpoint: unreadable "
            "pickle data); download it again and check its size"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        if "PytorchStreamReader" in str(exc):
            exc = "incomplete zip archive"
        raise PtReadError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt: "
            f"{(str(exc).splitlines() or [type(exc).__name__])[0][:200]}); download it again "
            "and check its size"
        ) from None


def _deepspeed_states_file(directory: Path) -> Path:
    """``mp_rank_00_model_states.pt`` inside a DeepSpeed checkpoint directory (any depth ≤ 2)."""
    candidates = sorted(directory.glob("mp_rank_00_model_states.pt"))
    candidates += sorted(directory.glob("*/mp_rank_00_model_states.pt"))
    latest = directory / "latest"
    if latest.is_file():
        tag = latest.read_text().strip()
        preferred = directory / tag / "mp_rank_00_model_states.pt"
        if preferred.is_file():
            return preferred
    if candidates:
        return candidates[0]
    raise PtReadError(
        f"{directory} is a directory but not a DeepSpeed checkpoint (no mp_rank_00_model_states.pt "
        "found). Pass the .pt file itself, or convert the checkpoint with DeepSpeed's "
        "zero_to_fp32.py and pass the resulting file"
    )


def unwrap_checkpoint(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the state dict inside a loaded checkpoint object and strip wrapper prefixes."""
    if not isinstance(obj, Mapping):
        raise PtReadError(f"{source} holds a {type(obj).__name__}, not a state dict")
    sd: object = obj
    if "ema" in obj:
        ema = obj["ema"]
        if not (isinstance(ema, Mapping) and "params" in ema):
            raise PtReadError(f"{source} has an 'ema' entry without 'params'; cannot find the weights")
        sd = ema["params"]
    elif "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        sd = obj["state_dict"]
    elif "module" in obj and isinstance(obj["module"], Mapping):
        sd = obj["module"]
    if not isinstance(sd, Mapping) or not sd:
        raise PtReadError(f"{source} holds no parameters")
    non_tensors = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise PtReadError(
            f"{source}: entries are not tensors: {', '.join(map(str, non_tensors[:8]))}"
            + (" …" if len(non_tensors) > 8 else "")
        )
    out = dict(sd)
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def rename_v1_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rewrite OpenFold v1 key names to the current (v2) names; other keys are unchanged."""
    out = {}
    for key, value in state_dict.items():
        new = key
        for old, repl in _V1_RENAMES:
            new = new.replace(old, repl)
        new = _V1_POINT_PROJ.sub(lambda m: f"ipa.linear_{m.group(1)}_points.linear.{m.group(2)}", new)
        new = _V1_TEMPLATE_TOP.sub(lambda m: f"template_embedder.{m.group(1)}.", new)
        out[new] = value
    return out


def read_openfold_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an OpenFold ``.pt`` file or DeepSpeed checkpoint directory into a state dict.

    Keys are returned as stored (after unwrapping and prefix stripping); v1 names are renamed
    by the caller only if the file does not fit as is (see :func:`rename_v1_keys`).

    Raises:
        PtReadError: missing, truncated or corrupt file; objects other than tensors; no weights.
    """
    p = Path(path)
    if p.is_dir():
        p = _deepspeed_states_file(p)
    obj = _load(p)
    return unwrap_checkpoint(obj, str(p))
