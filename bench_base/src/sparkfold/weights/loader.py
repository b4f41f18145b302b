"""Build a model and load weights into it, strictly.

Strict both ways: every model parameter is set, every file entry is used and every shape is
checked. Failures raise :class:`WeightsError` naming the offending keys and the preset the file
fits best. Truncated or corrupt files raise :class:`WeightsError` too (never a deep traceback).
"""

import contextlib
import math
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparkfold.config import ConfigError, ModelConfig, RuntimeConfig, canonical_preset
from sparkfold.errors import SparkfoldError
from sparkfold.model import primitives
from sparkfold.weights import af2_npz, openfold_pt

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

#: Architecturally distinct presets a file is matched against (model_2 = model_1, 4/5 = 3, …).
CANDIDATE_PRESETS = ("model_1", "model_1_ptm", "model_3", "model_3_ptm",
                     "model_1_multimer_v2", "model_1_multimer_v3")


class WeightsError(SparkfoldError):
    """A weights file cannot be read or does not fit the model."""


class UnsupportedPresetError(SparkfoldError, NotImplementedError):
    """The preset is known but sparkfold's model does not implement it (AF-Multimer)."""


def _reject_multimer(config: ModelConfig) -> None:
    if config.is_multimer:
        raise UnsupportedPresetError(
            f"preset {config.name!r} is an AlphaFold-Multimer preset, which sparkfold's model does "
            "not implement yet",
            fix="use a monomer preset (model_1 … model_5, optionally _ptm) and monomer weights",
        )


# ----------------------------------------------------------------- layouts
def expected_state_dict_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Canonical (OpenFold) key → shape for ``config``, from the AF2 mapping table.

    The table covers every parameter of the model, so this is also the model's state-dict
    layout (checked by the tests against a built model and ``openfold_state_dict.tsv``).
    """
    out = {}
    for entry in af2_npz.build_npz_table(config):
        for key in entry.openfold_keys():
            out[key] = entry.torch_shape
    return out


def _npz_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    return {e.npz_key: e.full_npz_shape for e in af2_npz.build_npz_table(config)}


def _fit(given: Mapping[str, tuple], expected: Mapping[str, tuple]) -> tuple[int, int]:
    matches = sum(1 for k, s in given.items() if expected.get(k) == s)
    return matches, 2 * matches - len(given) - len(expected)


def _best_fit(given: Mapping[str, tuple], kind: str) -> tuple[str, int, int]:
    """(preset, matching entries, expected entries) of the candidate that fits best."""
    best = None
    for name in CANDIDATE_PRESETS:
        cfg = ModelConfig.from_preset(name)
        expected = _npz_shapes(cfg) if kind == "npz" else expected_state_dict_shapes(cfg)
        matches, score = _fit(given, expected)
        if best is None or score > best[0]:
            best = (score, name, matches, len(expected))
    return best[1], best[2], best[3]


def _shapes(entries: Mapping) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in entries.items()}


def _group(key: str) -> str:
    if "//" in key:  # AF2 npz key: first two scopes below alphafold/alphafold_iteration/
        scope = key.split("//")[0].removeprefix(af2_npz.NPZ_PREFIX)
        return "/".join(scope.split("/")[:2]) + "/*"
    return ".".join(key.split(".")[:2]) + ".*"


def _list(keys: list[str], limit: int = 10) -> str:
    """The keys themselves when few, else grouped by their first two name parts with counts."""
    if len(keys) <= limit:
        return ", ".join(keys)
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(_group(key), []).append(key)
    shown = [f"{g} ({len(ks)}, e.g. {ks[0]})" for g, ks in list(groups.items())[:limit]]
    more = len(groups) - limit
    return ", ".join(shown) + (f", … ({more} more groups)" if more > 0 else "")


def _mismatch_error(source: str, preset: str, missing: list[str], unexpected: list[str],
                    wrong: list[str], best: tuple[str, int, int]) -> WeightsError:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {_list(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_list(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} with wrong shape: {_list(wrong, 5)}")
    name, matches, total = best
    if matches < 0.9 * total:
        hint = (f"it fits none of the standard presets (closest: {name!r}, {matches} of its "
                f"{total} entries match)")
        fix = "check that the file is a complete AlphaFold/OpenFold monomer checkpoint"
    else:
        hint = f"the file fits preset {name!r} best ({matches} of its {total} entries match)"
        fix = (f"pass preset='{name}' (or the equivalent model_N preset)" if name != preset
               else "check that the file is complete and belongs to this preset")
    return WeightsError(f"weights in {source} do not fit preset {preset!r}: " + "; ".join(parts)
                        + f"; {hint}", fix=fix)


# ----------------------------------------------------------------- reading
def _detect_kind(path: Path) -> str:
    if path.is_dir():
        return "openfold"
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in (".pt", ".pth", ".ckpt", ".bin"):
        return "openfold"
    try:
        with zipfile.ZipFile(path) as zf:
            return "npz" if any(n.endswith(".npy") for n in zf.namelist()) else "openfold"
    except (zipfile.BadZipFile, OSError):
        return "openfold"


def read_weights(source) -> tuple[str, dict, str | None]:
    """Read a weights source into ``(kind, entries, name_hint)``.

    ``kind`` is ``"npz"`` (AF2 arrays keyed by npz name) or ``"openfold"`` (tensors keyed by
    canonical names); ``name_hint`` is the preset the file name suggests, if any.
    """
    if isinstance(source, Mapping):
        if any(str(k).startswith(af2_npz.NPZ_PREFIX) for k in source):
            arrays = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
                      for k, v in source.items()}
            return "npz", arrays, None
        sd = dict(source)
        if not any(k in sd for k in ("ema", "state_dict", "module")):
            sd = {k: v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
                  for k, v in sd.items()}
        return "openfold", openfold_pt.unwrap_checkpoint(sd, "the given state dict"), None
    path = Path(os.fspath(source)).expanduser()
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist",
                           fix="give the path of an AF2 params_*.npz or an OpenFold .pt file, or 'random'")
    kind = _detect_kind(path)
    try:
        entries = af2_npz.read_npz(path) if kind == "npz" else openfold_pt.read_openfold_checkpoint(path)
    except (af2_npz.NpzReadError, openfold_pt.PtReadError) as exc:
        raise WeightsError(str(exc)) from None
    return kind, entries, _name_hint(path)


def _name_hint(path: Path) -> str | None:
    stem = path.name if path.is_dir() else path.stem
    stem = stem.removeprefix("params_")
    for candidate in (stem, re.sub(r"_\d+$", "", stem)):
        try:
            return canonical_preset(candidate)
        except ConfigError:
            continue
    return None


def infer_preset(kind: str, entries: Mapping, name_hint: str | None = None) -> str:
    """The preset whose layout these entries fit best; the file name's preset when its layout
    is the same (``params_model_2_ptm.npz`` → ``model_2_ptm`` rather than ``model_1_ptm``)."""
    layout = _npz_shapes if kind == "npz" else expected_state_dict_shapes
    best = _best_fit(_shapes(entries), kind)[0]
    if name_hint is not None and layout(ModelConfig.from_preset(name_hint)) == layout(
            ModelConfig.from_preset(best)):
        return name_hint
    return best


# ----------------------------------------------------------------- strict loading
def _npz_to_state_dict(arrays: dict, config: ModelConfig, source: str) -> dict[str, torch.Tensor]:
    table = af2_npz.build_npz_table(config)
    problems = af2_npz.check_npz_arrays(arrays, table)
    if any(problems.values()):
        raise _mismatch_error(source, config.name, problems["missing"], problems["unexpected"],
                              problems["shape"], _best_fit(_shapes(arrays), "npz"))
    return af2_npz.npz_to_state_dict(arrays, table)


def _diff(sd: Mapping, expected: Mapping) -> tuple[list[str], list[str], list[str]]:
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k}: file {tuple(sd[k].shape)}, model {tuple(expected[k])}"
             for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k])]
    return missing, unexpected, wrong


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           preset: str = "?", source: str = "the state dict",
                           kind: str = "openfold") -> None:
    """Copy ``state_dict`` into ``model``: every key used, every parameter set, shapes checked.

    OpenFold v1 key names are renamed when that makes the file fit.

    Raises:
        WeightsError: naming missing / unexpected / mis-shaped keys and the best-fitting preset,
            or entries holding NaN/inf.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected, wrong = _diff(state_dict, expected)
    if (missing or unexpected) and kind == "openfold":
        renamed = openfold_pt.rename_v1_keys(dict(state_dict))
        if renamed.keys() != state_dict.keys():
            r = _diff(renamed, expected)
            if len(r[0]) + len(r[1]) < len(missing) + len(unexpected):
                state_dict, (missing, unexpected, wrong) = renamed, r
    if missing or unexpected or wrong:
        raise _mismatch_error(source, preset, missing, unexpected, wrong,
                              _best_fit(_shapes(state_dict), "openfold"))
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise WeightsError(f"weights in {source} hold NaN or inf values in: {_list(bad)}",
                           fix="the file is corrupt; download it again")
    model.load_state_dict(dict(state_dict), strict=True)


# ----------------------------------------------------------------- random weights
_SOFTPLUS_INV_1 = math.log(math.e - 1.0)


def randomize_parameters(model: nn.Module, seed: int) -> None:
    """Redraw every parameter, none zero (the golden fixtures' scheme).

    Linear ``W ~ N(0, 1/fan_in)``, ``b ~ N(0, 0.1²)``; LayerNorm ``γ ~ 1 + N(0, 0.1²)``,
    ``β ~ N(0, 0.05²)``; IPA ``head_weights ~ softplus⁻¹(1) + N(0, 0.1²)``; anything else
    ``N(0, 0.1²)``. Deterministic for a seed (drawn on the CPU in state-dict order).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod_name, module in model.named_modules():
            for p_name, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
                if isinstance(module, nn.Linear) and p_name == "weight":
                    value = noise / math.sqrt(max(1, p.shape[-1]))
                elif p_name == "weight" and p.dim() == 1:  # LayerNorm scale
                    value = 1.0 + 0.1 * noise
                elif p_name == "bias" and not isinstance(module, nn.Linear):  # LayerNorm offset
                    value = 0.05 * noise
                elif p_name == "head_weights":
                    value = _SOFTPLUS_INV_1 + 0.1 * noise
                else:
                    value = 0.1 * noise
                p.copy_(value)


# ----------------------------------------------------------------- model
def _resolve_config(preset) -> ModelConfig:
    if isinstance(preset, ModelConfig):
        return preset
    try:
        if isinstance(preset, Mapping):  # OpenFold's config as a dict (model_config(...))
            return ModelConfig.from_openfold(dict(preset))
        return ModelConfig.from_preset(preset)
    except ConfigError as exc:
        raise WeightsError(str(exc)) from None


@contextlib.contextmanager
def _no_default_init():
    """Skip the default Linear initialisation while building a model whose every parameter is
    about to be overwritten (saves seconds for the full model). Not thread-safe."""
    original = primitives.Linear.reset_parameters
    primitives.Linear.reset_parameters = lambda self: None
    try:
        yield
    finally:
        primitives.Linear.reset_parameters = original


def build_model(config: ModelConfig, runtime: RuntimeConfig | None = None,
                initialize: bool = True) -> nn.Module:
    """``AlphaFold(config, runtime)``.

    Args:
        initialize: apply the default initialisation; False leaves the Linear weights
            uninitialised (only for models whose parameters are all loaded next).
    """
    _reject_multimer(config)
    from sparkfold.model.alphafold import AlphaFold

    if initialize:
        return AlphaFold(config, runtime)
    with _no_default_init():
        return AlphaFold(config, runtime)


def _runtime(runtime: RuntimeConfig | None, device: str | None, precision: str | None) -> RuntimeConfig:
    rt = runtime if runtime is not None else RuntimeConfig()
    changes = {}
    if device is not None:
        changes["device"] = str(device)
    if precision is not None:
        changes["precision"] = precision
    return replace(rt, **changes) if changes else rt


def load_model(source, *, preset: str | ModelConfig | Mapping | None = None, device: str | None = None,
               precision: str | None = None, runtime: RuntimeConfig | None = None) -> nn.Module:
    """Build the model and load its weights; returns it in eval mode on ``device``.

    Args:
        source: path of an AF2 ``params_*.npz``, an OpenFold ``.pt`` (plain, EMA-nested,
            ``model.``/``module.``-prefixed, v1 names) or DeepSpeed checkpoint directory; a
            state-dict-like mapping (canonical or AF2 npz keys); or ``"random"`` for seeded
            random weights (seed = ``runtime.seed``; needs ``preset``).
        preset: preset name, a :class:`ModelConfig`, or OpenFold's config as a dict
            (:meth:`ModelConfig.from_openfold`). None infers it from the file's keys and
            shapes (and its name: ``params_model_2_ptm.npz`` → ``model_2_ptm``).
        device: torch device; default ``runtime.device`` (``"cpu"``).
        precision: ``"fp32"``, ``"tf32"`` or ``"bf16"``; default ``runtime.precision``
            (``"fp32"``).
        runtime: run-time settings stored on the model (kernels, chunking, precision, seed).

    Raises:
        WeightsError: unreadable file or weights that do not fit the preset.
        UnsupportedPresetError: a multimer preset (also a ``NotImplementedError``).
    """
    rt = _runtime(runtime, device, precision)
    if isinstance(source, str) and source == "random":
        if preset is None:
            raise WeightsError("load_model('random') needs a preset",
                               fix="pass preset='model_1_ptm' (or another preset)")
        config = _resolve_config(preset)
        model = build_model(config, rt, initialize=False)
        randomize_parameters(model, rt.seed)
    else:
        kind, entries, hint = read_weights(source)
        label = "the given state dict" if isinstance(source, Mapping) else str(source)
        config = _resolve_config(preset) if preset is not None else ModelConfig.from_preset(
            infer_preset(kind, entries, hint))
        _reject_multimer(config)
        state_dict = _npz_to_state_dict(entries, config, label) if kind == "npz" else entries
        model = build_model(config, rt, initialize=False)
        load_state_dict_strict(model, state_dict, config.name, label, kind=kind)
    model = model.to(rt.device)
    return model.eval()
