"""Raw features → the processed model batch (OpenFold predict mode, recycling axis last).

:func:`make_batch` tensorises OpenFold's raw feature dict (``shared/spec/features.md`` §1),
runs the non-ensembled transforms once and the ensembled transforms once per recycling pass,
and stacks the passes on a new LAST axis (``features.md`` §2). The random choices come from a
:class:`~sparkfold.data.transforms.Sampler`: :class:`TorchSampler` (default, seeded, private
generator) or :class:`ReplaySampler` (recorded draws, for exact comparisons).
"""

import dataclasses
from collections.abc import Mapping

import numpy as np
import torch

from sparkfold.config import DataConfig, ModelConfig
from sparkfold.data import transforms
from sparkfold.errors import SparkfoldError

__all__ = ["FeatureInputError", "ReplaySampler", "TorchSampler", "make_batch"]

#: Raw keys the pipeline reads (``deletion_matrix`` float32 may replace ``deletion_matrix_int``).
RAW_KEYS = ("aatype", "between_segment_residues", "residue_index", "seq_length", "msa",
            "num_alignments")
TEMPLATE_KEYS = ("template_aatype", "template_all_atom_positions", "template_all_atom_mask",
                 "template_sum_probs")
_FIX_RAW = "build the raw features with sparkfold.data.raw_features (features.md §1 lists them)"


class FeatureInputError(SparkfoldError, ValueError):
    """The raw feature dict handed to :func:`make_batch` is incomplete or inconsistent."""


class TorchSampler:
    """Draws every choice from one private ``torch.Generator`` seeded with ``seed``.

    The calls are those OpenFold makes on the global torch RNG, in the same order (including
    the two unused draws of ``randomly_replace_msa_with_unknown(0.0)`` at :meth:`start` and the
    full-size categorical sample), so on CPU ``TorchSampler(s)`` reproduces the draws of an
    OpenFold predict run made after ``torch.manual_seed(s)``. Global RNG state is never touched.

    Args:
        seed: Integer seed.
    """

    def __init__(self, seed: int = 0):
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"TorchSampler seed must be an int, got {seed!r}")
        self.seed = seed
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    def start(self, num_seq: int, num_res: int) -> None:
        # OpenFold's randomly_replace_msa_with_unknown(0.0) draws rand([N, L]) and rand([L]) and
        # changes nothing. Uniform draws consume the stream element by element, so drawing in
        # bounded chunks advances the generator identically without an [N, L] buffer.
        remaining = num_seq * num_res
        while remaining > 0:
            size = min(remaining, 1 << 20)
            torch.rand(size, generator=self.generator)
            remaining -= size
        torch.rand((num_res,), generator=self.generator)

    def msa_permutation(self, iteration: int, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.generator)

    def bert_mask_positions(self, iteration: int, shape: tuple[int, int],
                            replace_fraction: float) -> torch.Tensor:
        return torch.rand(tuple(shape), generator=self.generator) < replace_fraction

    def bert_categorical(self, iteration: int, probs: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
        flat = probs.reshape(-1, probs.shape[-1])  # [S*L, C]
        if flat.shape[0] == 0:
            return torch.zeros(0, dtype=torch.int64)
        sample = torch.multinomial(flat, 1, True, generator=self.generator)  # [S*L, 1]
        return sample.reshape(probs.shape[:-1])[mask]

    def extra_msa_permutation(self, iteration: int, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.generator)


class ReplaySampler:
    """Returns recorded draws, e.g. the ``draws/`` of a processed golden fixture.

    Args:
        draws: Arrays keyed ``it{i}/<name>`` with ``<name>`` one of ``sample_msa_randperm``,
            ``masked_msa_mask_position``, ``masked_msa_categorical_at_mask``,
            ``crop_extra_msa_randperm`` (other keys are ignored).
        prefix: Only keys starting with this are used, with the prefix removed (``"draws/"``
            for a fixture loaded whole).
    """

    def __init__(self, draws: Mapping[str, object], prefix: str = ""):
        self.draws = {k[len(prefix):]: v for k, v in draws.items() if k.startswith(prefix)}
        if not any(k.startswith("it") for k in self.draws):
            raise ValueError(
                f"ReplaySampler found no 'it<i>/<name>' draws under prefix {prefix!r}; pass the "
                "fixture arrays and the prefix their draws are stored under (e.g. 'draws/')"
            )

    def _get(self, iteration: int, name: str) -> torch.Tensor:
        key = f"it{iteration}/{name}"
        if key not in self.draws:
            raise KeyError(
                f"ReplaySampler has no recorded draw {key!r}: the recording covers fewer passes "
                "than requested; lower num_recycles to match it"
            )
        return torch.as_tensor(self.draws[key])

    def start(self, num_seq: int, num_res: int) -> None:
        pass

    def _permutation(self, iteration: int, name: str, n: int) -> torch.Tensor:
        perm = self._get(iteration, name).to(torch.int64)
        if perm.shape != (n,):
            raise ValueError(f"recorded {name} for pass {iteration} has shape "
                             f"{tuple(perm.shape)}, expected ({n},): the draws belong to "
                             "other input")
        return perm

    def msa_permutation(self, iteration: int, n: int) -> torch.Tensor:
        return self._permutation(iteration, "sample_msa_randperm", n)

    def bert_mask_positions(self, iteration: int, shape: tuple[int, int],
                            replace_fraction: float) -> torch.Tensor:
        mask = self._get(iteration, "masked_msa_mask_position").to(torch.bool)
        if tuple(mask.shape) != tuple(shape):
            raise ValueError(f"recorded masked_msa_mask_position for pass {iteration} has shape "
                             f"{tuple(mask.shape)}, expected {tuple(shape)}")
        return mask

    def bert_categorical(self, iteration: int, probs: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
        values = self._get(iteration, "masked_msa_categorical_at_mask").to(torch.int64)
        if values.shape != (int(mask.sum()),):
            raise ValueError(f"recorded masked_msa_categorical_at_mask for pass {iteration} has "
                             f"{values.numel()} values for {int(mask.sum())} masked positions")
        return values

    def extra_msa_permutation(self, iteration: int, n: int) -> torch.Tensor:
        return self._permutation(iteration, "crop_extra_msa_randperm", n)


def _as_tensor(name: str, value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise FeatureInputError(f"raw feature {name!r} has non-numeric dtype {array.dtype}",
                                fix=_FIX_RAW)
    return torch.from_numpy(np.ascontiguousarray(array))


def _check_shape(name: str, tensor: torch.Tensor, expected: tuple) -> None:
    """``expected`` holds ints or ``None`` (any size)."""
    ok = tensor.dim() == len(expected) and all(
        e is None or e == d for e, d in zip(expected, tensor.shape))
    if not ok:
        shown = tuple("*" if e is None else e for e in expected)
        raise FeatureInputError(f"raw feature {name!r} has shape {tuple(tensor.shape)}, "
                                f"expected {shown}", fix=_FIX_RAW)


def _tensorize(raw: Mapping, *, use_templates: bool) -> transforms.Features:
    """Validate the raw dict and keep the keys the pipeline reads, as CPU tensors."""
    if not isinstance(raw, Mapping):
        raise FeatureInputError(f"raw features must be a dict of arrays, got {type(raw).__name__}",
                                fix=_FIX_RAW)
    missing = [k for k in RAW_KEYS if k not in raw]
    if "deletion_matrix_int" not in raw and "deletion_matrix" not in raw:
        missing.append("deletion_matrix_int")
    if missing:
        raise FeatureInputError(f"raw features lack {', '.join(missing)}", fix=_FIX_RAW)

    f = {k: _as_tensor(k, raw[k]) for k in RAW_KEYS}
    deletions = raw.get("deletion_matrix_int", raw.get("deletion_matrix"))
    f["deletion_matrix"] = _as_tensor("deletion_matrix_int", deletions).to(torch.float32)

    aatype = f["aatype"]
    if aatype.dim() != 2 or aatype.shape[-1] != 21:
        raise FeatureInputError(f"raw 'aatype' must be a one-hot [L, 21], got shape "
                                f"{tuple(aatype.shape)}", fix=_FIX_RAW)
    num_res = aatype.shape[0]
    if num_res == 0:
        raise FeatureInputError("the sequence is empty",
                                fix="give a sequence of at least one residue")
    for key in ("between_segment_residues", "residue_index", "seq_length", "num_alignments"):
        _check_shape(key, f[key], (num_res,))
    _check_shape("msa", f["msa"], (None, num_res))
    if f["msa"].shape[0] == 0:
        raise FeatureInputError("raw 'msa' has no rows; row 0 must be the query sequence",
                                fix=_FIX_RAW)
    _check_shape("deletion_matrix_int", f["deletion_matrix"], tuple(f["msa"].shape))
    if f["msa"].is_floating_point() or int(f["msa"].min()) < 0 or int(f["msa"].max()) > 21:
        raise FeatureInputError("raw 'msa' must hold HHblits alphabet ids 0..21", fix=_FIX_RAW)
    if int(f["seq_length"][0]) != num_res:
        raise FeatureInputError(f"raw 'seq_length' says {int(f['seq_length'][0])} residues but "
                                f"'aatype' has {num_res}", fix=_FIX_RAW)

    if not use_templates:
        return f
    raw = dict(raw)
    if "template_all_atom_mask" not in raw and "template_all_atom_masks" in raw:
        raw["template_all_atom_mask"] = raw["template_all_atom_masks"]  # older OpenFold name
    present = [k for k in TEMPLATE_KEYS if k in raw]
    if not present:
        # DEVIATION from OpenFold (which fails on the missing keys): no template search ran, so
        # use the empty set that OpenFold's empty_template_feats gives (padded to all-zero).
        f["template_aatype"] = torch.zeros(0, num_res, 22)
        f["template_all_atom_positions"] = torch.zeros(0, num_res, 37, 3)
        f["template_all_atom_mask"] = torch.zeros(0, num_res, 37)
        f["template_sum_probs"] = torch.zeros(0, 1)
        return f
    if len(present) != len(TEMPLATE_KEYS):
        absent = [k for k in TEMPLATE_KEYS if k not in raw]
        raise FeatureInputError(f"raw template features are incomplete: {', '.join(absent)} "
                                "missing", fix=_FIX_RAW)
    f["template_aatype"] = _as_tensor("template_aatype", raw["template_aatype"])
    num_templ = f["template_aatype"].shape[0]
    _check_shape("template_aatype", f["template_aatype"], (num_templ, num_res, 22))
    for key, shape in (("template_all_atom_positions", (num_templ, num_res, 37, 3)),
                       ("template_all_atom_mask", (num_templ, num_res, 37)),
                       ("template_sum_probs", (num_templ, 1))):
        f[key] = _as_tensor(key, raw[key]).to(torch.float32)
        _check_shape(key, f[key], shape)
    return f


def _resolve_data_config(preset_data: DataConfig, data_config) -> DataConfig:
    if data_config is None:
        return preset_data
    if isinstance(data_config, DataConfig):
        return data_config
    if isinstance(data_config, Mapping):
        fields = {f.name for f in dataclasses.fields(DataConfig)}
        unknown = sorted(set(data_config) - fields)
        if unknown:
            raise FeatureInputError(f"unknown DataConfig field(s) {unknown}",
                                    fix=f"use some of {sorted(fields)}")
        return dataclasses.replace(preset_data, **data_config)
    raise TypeError(f"data_config must be a DataConfig or a dict of field overrides, "
                    f"got {type(data_config).__name__}")


def make_batch(raw: Mapping, *, preset: str | ModelConfig, seed: int = 0, num_recycles: int = 3,
               sampler: transforms.Sampler | None = None,
               data_config: DataConfig | Mapping | None = None) -> dict[str, torch.Tensor]:
    """The processed predict-mode model batch of OpenFold, from a raw feature dict.

    Args:
        raw: OpenFold's raw features (numpy arrays or tensors; ``features.md`` §1). Text
            keys (``sequence``, ``domain_name``, …) are ignored. With templates enabled and no
            ``template_*`` keys, an empty template set is used.
        preset: A preset name (``"model_1_ptm"``) or a :class:`ModelConfig`; its ``data``
            settings apply (clusters, extra rows, templates, masking).
        seed: Seed of the default :class:`TorchSampler`. ``seed=s`` reproduces, on CPU, the
            draws of OpenFold's ``process_features`` after ``torch.manual_seed(s)``.
        num_recycles: Recycles; the batch holds ``num_recycles + 1`` passes.
        sampler: Source of the random choices; overrides ``seed``.
        data_config: A :class:`DataConfig`, or a dict of its fields to override in the preset's.

    Returns:
        ``features.md`` §2 keys (int64 ids, float32 features), each with the recycling axis
        LAST: e.g. ``msa_feat [S, L, 49, R]``, ``seq_length [R]``, ``use_clamped_fape [R]``.
        ``template_*`` keys only when the preset uses templates.
    """
    config = preset if isinstance(preset, ModelConfig) else ModelConfig.from_preset(preset)
    if config.is_multimer:
        raise FeatureInputError(f"make_batch builds monomer batches; preset {config.name!r} is "
                                "multimer", fix="use a monomer preset such as model_1_ptm")
    data = _resolve_data_config(config.data, data_config)
    if not isinstance(num_recycles, int) or isinstance(num_recycles, bool) or num_recycles < 0:
        raise FeatureInputError(f"num_recycles must be an integer >= 0, got {num_recycles!r}")
    if sampler is None:
        sampler = TorchSampler(seed)

    features = _tensorize(raw, use_templates=data.use_templates)
    with torch.no_grad():
        features = transforms.nonensembled_transforms(features, use_templates=data.use_templates)
        sampler.start(*features["msa"].shape)
        passes = []
        for iteration in range(num_recycles + 1):
            if iteration > 0 and not data.resample_msa_in_recycling:
                # OpenFold then reseeds every pass identically: the same features each time.
                passes.append(passes[0])
                continue
            # Predict mode crops to the full length: the crop draws can only be 0.
            crop_generator = torch.Generator().manual_seed(0)
            passes.append(transforms.ensembled_transforms(
                features, data, sampler=sampler, iteration=iteration,
                crop_generator=crop_generator, fixed_size=False))
        batch = transforms.pad_and_stack(
            passes, msa_cluster_size=data.num_msa_clusters, extra_msa_size=data.max_extra_msa,
            num_res=int(features["seq_length"]), num_templates=data.max_templates)
    batch["use_clamped_fape"] = torch.zeros(num_recycles + 1, dtype=torch.float32)
    return batch
