"""Feature transforms: raw feature tensors → one recycling pass of the model batch.

Pure functions over feature dicts (``dict[str, torch.Tensor]``): each returns a new dict and
never mutates its input. They reproduce OpenFold's predict-mode ``data_transforms`` (facts in
``shared/golden/pipeline/README.md`` and ``shared/spec/features.md`` §2); the composites
:func:`nonensembled_transforms` (once) and :func:`ensembled_transforms` (every recycling pass)
apply them in OpenFold's order.

Randomness never comes from global RNG state. The four random choices of a pass (MSA row
order, BERT mask positions, BERT replacement classes, extra-MSA row order) are asked of a
:class:`Sampler` (implementations in :mod:`sparkfold.data.batch`: ``TorchSampler`` draws from
its own seeded ``torch.Generator``, ``ReplaySampler`` returns recorded choices).
"""

import math
from collections.abc import Collection, Mapping
from typing import Protocol

import torch

from sparkfold import constants as rc
from sparkfold.config import DataConfig

__all__ = [
    "FEATURE_SCHEMA",
    "MSA_FEATURE_NAMES",
    "Sampler",
    "cast_to_64bit_ints",
    "correct_msa_restypes",
    "crop_extra_msa",
    "ensembled_transforms",
    "fix_templates_aatype",
    "make_atom14_masks",
    "make_fixed_size",
    "make_hhblits_profile",
    "make_masked_msa",
    "make_msa_feat",
    "make_msa_mask",
    "make_seq_mask",
    "make_template_mask",
    "make_template_pseudo_beta",
    "make_template_torsion_angles",
    "nearest_neighbor_clusters",
    "nonensembled_transforms",
    "pad_and_stack",
    "random_crop_to_size",
    "sample_msa",
    "select_feat",
    "squeeze_features",
    "summarize_clusters",
]

Features = dict[str, torch.Tensor]

# Axis names of the feature schema.
RES, MSA, EXTRA, TEMPL = "res", "msa", "extra", "templ"

#: Per-pass model batch: every key ``select_feat`` keeps and the axis kind of each dimension
#: (``None`` = fixed size). ``make_fixed_size`` pads the named axes; ``random_crop_to_size``
#: crops ``res`` (and ``templ``). OpenFold ``config.data.common.feat`` restricted to predict mode.
FEATURE_SCHEMA: dict[str, tuple[str | None, ...]] = {
    "aatype": (RES,),
    "residue_index": (RES,),
    "seq_length": (),
    "template_aatype": (TEMPL, RES),
    "template_all_atom_mask": (TEMPL, RES, None),
    "template_all_atom_positions": (TEMPL, RES, None, None),
    "template_sum_probs": (TEMPL, None),
    "seq_mask": (RES,),
    "msa_mask": (MSA, RES),
    "msa_row_mask": (MSA,),
    "template_mask": (TEMPL,),
    "template_pseudo_beta": (TEMPL, RES, None),
    "template_pseudo_beta_mask": (TEMPL, RES),
    "template_torsion_angles_sin_cos": (TEMPL, RES, None, None),
    "template_alt_torsion_angles_sin_cos": (TEMPL, RES, None, None),
    "template_torsion_angles_mask": (TEMPL, RES, None),
    "atom14_atom_exists": (RES, None),
    "residx_atom14_to_atom37": (RES, None),
    "residx_atom37_to_atom14": (RES, None),
    "atom37_atom_exists": (RES, None),
    "extra_msa": (EXTRA, RES),
    "extra_msa_mask": (EXTRA, RES),
    "extra_msa_row_mask": (EXTRA,),
    "bert_mask": (MSA, RES),
    "true_msa": (MSA, RES),
    "extra_has_deletion": (EXTRA, RES),
    "extra_deletion_value": (EXTRA, RES),
    "msa_feat": (MSA, RES, None),
    "target_feat": (RES, None),
}

#: Row-indexed MSA features that follow the cluster/extra split (``extra_<name>`` for the rest).
MSA_FEATURE_NAMES = ("msa", "deletion_matrix", "msa_mask", "msa_row_mask", "bert_mask", "true_msa")

_NUM_MSA_CLASSES = 23  # 20 aa, X, gap, mask token
_NUM_PROFILE_CLASSES = 22
#: OpenFold's shaped_categorical adds this to every class probability before normalising.
_CATEGORICAL_EPS = 1e-10


# ---------------------------------------------------------------------------------------------
# Randomness
# ---------------------------------------------------------------------------------------------


class Sampler(Protocol):
    """The random choices of the pipeline, one method per draw (OpenFold's draw order).

    ``iteration`` is the recycling pass (0-based). Implementations return CPU tensors.
    """

    def start(self, num_seq: int, num_res: int) -> None:
        """Called once, before the first pass, with the raw MSA size."""

    def msa_permutation(self, iteration: int, n: int) -> torch.Tensor:
        """A permutation of ``range(n)`` (int64 ``[n]``) ordering MSA rows 1..n (row 0 stays)."""

    def bert_mask_positions(self, iteration: int, shape: tuple[int, int],
                            replace_fraction: float) -> torch.Tensor:
        """Bool ``[S, L]``: cluster positions chosen for BERT replacement."""

    def bert_categorical(self, iteration: int, probs: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
        """Replacement classes (int64 ``[K]``) at the ``K`` True positions of ``mask``, row-major.

        Args:
            iteration: Recycling pass.
            probs: Normalised class probabilities ``[S, L, 23]`` for every position.
            mask: Bool ``[S, L]`` from :meth:`bert_mask_positions`.
        """

    def extra_msa_permutation(self, iteration: int, n: int) -> torch.Tensor:
        """A permutation of ``range(n)`` (int64 ``[n]``) ordering the extra-MSA rows."""


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _one_hot(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Float32 one-hot of an integer tensor ``[*] -> [*, num_classes]``."""
    out = torch.zeros(*x.shape, num_classes, dtype=torch.float32, device=x.device)
    return out.scatter_(-1, x.unsqueeze(-1), 1.0)


def _deletion_value(deletions: torch.Tensor) -> torch.Tensor:
    """AF2 Suppl. Table 1 deletion_value: ``atan(d / 3) * 2 / pi``."""
    return torch.atan(deletions / 3.0) * (2.0 / math.pi)


def _hhblits_to_model_order(ids: torch.Tensor) -> torch.Tensor:
    """Map HHblits alphabet ids (``ACDEFGHIKLMNPQRSTVWYX-``) to model restype ids (X=20, gap=21)."""
    table = torch.tensor(rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE, dtype=torch.int64, device=ids.device)
    return table[ids.long()]


# ---------------------------------------------------------------------------------------------
# Non-ensembled transforms (once per input)
# ---------------------------------------------------------------------------------------------


def cast_to_64bit_ints(features: Features) -> Features:
    """Every int32 tensor becomes int64."""
    return {k: v.to(torch.int64) if v.dtype == torch.int32 else v for k, v in features.items()}


def correct_msa_restypes(features: Features) -> Features:
    """Raw ``msa`` (HHblits alphabet) → model restype order (X=20, gap=21)."""
    out = dict(features)
    out["msa"] = _hhblits_to_model_order(features["msa"])
    return out


def squeeze_features(features: Features) -> Features:
    """One-hot ``aatype [L, 21]`` → ids ``[L]``; ``seq_length``/``num_alignments`` → scalars.

    DEVIATION from OpenFold: OpenFold also squeezes any trailing size-1 axis of the MSA and
    per-residue keys (left over from TF-style ``[L, 1]`` features), which breaks one-residue
    inputs; raw features here never carry such axes, so only the two scalar keys are reduced.
    """
    out = dict(features)
    if out["aatype"].dim() == 2:
        out["aatype"] = torch.argmax(out["aatype"], dim=-1)
    for key in ("seq_length", "num_alignments"):
        if key in out and out[key].dim() > 0:
            out[key] = out[key][0]
    return out


def make_seq_mask(features: Features) -> Features:
    """``seq_mask`` = ones ``[L]``."""
    out = dict(features)
    out["seq_mask"] = torch.ones(features["aatype"].shape, dtype=torch.float32)
    return out


def make_msa_mask(features: Features) -> Features:
    """``msa_mask`` = ones ``[N, L]`` and ``msa_row_mask`` = ones ``[N]``."""
    out = dict(features)
    msa = features["msa"]
    out["msa_mask"] = torch.ones(msa.shape, dtype=torch.float32)
    out["msa_row_mask"] = torch.ones(msa.shape[0], dtype=torch.float32)
    return out


def make_hhblits_profile(features: Features) -> Features:
    """``hhblits_profile [L, 22]``: class frequencies over all MSA rows (used by BERT masking)."""
    out = dict(features)
    if "hhblits_profile" in features:
        return out
    msa = features["msa"]  # [N, L]
    counts = torch.zeros(msa.shape[1], _NUM_PROFILE_CLASSES, dtype=torch.float32)
    counts.scatter_add_(1, msa.t(), torch.ones(msa.t().shape, dtype=torch.float32))  # [L, 22]
    # Integer counts are exact in fp32; one division equals OpenFold's one-hot mean bit-for-bit.
    out["hhblits_profile"] = counts / msa.shape[0]
    return out


def fix_templates_aatype(features: Features) -> Features:
    """``template_aatype`` one-hot ``[T, L, 22]`` (HHblits order) → model ids ``[T, L]`` int64.

    Works for ``T = 0`` (the float32 empty template features), giving int64 ``[0, L]``.
    """
    out = dict(features)
    aatype = features["template_aatype"]
    if aatype.dim() == 3:
        aatype = torch.argmax(aatype, dim=-1)
    out["template_aatype"] = _hhblits_to_model_order(aatype)
    return out


def make_template_mask(features: Features) -> Features:
    """``template_mask`` = ones ``[T]``."""
    out = dict(features)
    out["template_mask"] = torch.ones(features["template_aatype"].shape[0], dtype=torch.float32)
    return out


def make_template_pseudo_beta(features: Features) -> Features:
    """``template_pseudo_beta [T, L, 3]`` (CB; CA for Gly) and its mask ``[T, L]``."""
    from sparkfold import allatom

    out = dict(features)
    beta, beta_mask = allatom.pseudo_beta(
        features["template_aatype"],
        features["template_all_atom_positions"],
        features["template_all_atom_mask"],
    )
    out["template_pseudo_beta"] = beta
    out["template_pseudo_beta_mask"] = beta_mask
    return out


def make_template_torsion_angles(features: Features) -> Features:
    """Template torsions (sin, cos) ``[T, L, 7, 2]``, π-shifted alternative, mask ``[T, L, 7]``."""
    from sparkfold import allatom

    out = dict(features)
    angles = allatom.atom37_to_torsion_angles(
        features["template_aatype"],
        features["template_all_atom_positions"],
        features["template_all_atom_mask"],
    )
    out["template_torsion_angles_sin_cos"] = angles["torsion_angles_sin_cos"]
    out["template_alt_torsion_angles_sin_cos"] = angles["alt_torsion_angles_sin_cos"]
    out["template_torsion_angles_mask"] = angles["torsion_angles_mask"]
    return out


def make_atom14_masks(features: Features) -> Features:
    """atom14/atom37 existence masks and gather indices from ``aatype`` ``[L]``."""
    from sparkfold import allatom

    out = dict(features)
    out.update(allatom.make_atom14_masks(features["aatype"]))
    return out


def nonensembled_transforms(features: Features, *, use_templates: bool) -> Features:
    """OpenFold's predict-mode non-ensembled steps, in order (run once per input).

    ``randomly_replace_msa_with_unknown(0.0)`` cannot change anything and is omitted (its two
    RNG draws are made by :meth:`Sampler.start`).

    Args:
        features: Tensorised raw features: ``aatype [L, 21]``, ``msa [N, L]`` (HHblits ids),
            ``deletion_matrix [N, L]`` float32, ``residue_index``, ``seq_length``,
            ``between_segment_residues``, ``num_alignments`` and, with templates,
            ``template_aatype``, ``template_all_atom_positions``, ``template_all_atom_mask``,
            ``template_sum_probs``.
        use_templates: Build the template features.
    """
    f = cast_to_64bit_ints(features)
    f = correct_msa_restypes(f)
    f = squeeze_features(f)
    f = make_seq_mask(f)
    f = make_msa_mask(f)
    f = make_hhblits_profile(f)
    if use_templates:
        f = fix_templates_aatype(f)
        f = make_template_mask(f)
        f = make_template_pseudo_beta(f)
        f = make_template_torsion_angles(f)
    f = make_atom14_masks(f)
    return f


# ---------------------------------------------------------------------------------------------
# Ensembled transforms (every recycling pass)
# ---------------------------------------------------------------------------------------------


def sample_msa(features: Features, max_seq: int, *, sampler: Sampler,
               iteration: int = 0) -> Features:
    """AF2 Suppl. Sec. 1.2.7 "MSA clustering": pick cluster centres, the rest become ``extra_*``.

    Row 0 (the query) always comes first; the other rows are shuffled; the first ``max_seq``
    rows are the clusters, the remaining ones (in shuffled order) the extra MSA.
    """
    num_seq = features["msa"].shape[0]
    perm = sampler.msa_permutation(iteration, num_seq - 1)
    order = torch.cat([torch.zeros(1, dtype=torch.int64), perm + 1])  # [N]
    num_sel = min(max_seq, num_seq)
    selected, rest = order[:num_sel], order[num_sel:]
    out = dict(features)
    for key in MSA_FEATURE_NAMES:
        if key in features:
            out["extra_" + key] = features[key].index_select(0, rest)
            out[key] = features[key].index_select(0, selected)
    return out


def make_masked_msa(features: Features, *, replace_fraction: float, uniform_prob: float,
                    profile_prob: float, same_prob: float, sampler: Sampler,
                    iteration: int = 0) -> Features:
    """BERT-style corruption of the cluster rows (AF2 Suppl. Sec. 1.2.7 "MSA clustering").

    A position is replaced with probability ``replace_fraction``; its new class is drawn from
    ``uniform_prob``·uniform(20 aa) + ``profile_prob``·hhblits_profile +
    ``same_prob``·one-hot(msa),
    with the remaining mass on the mask token (22). Adds ``bert_mask`` and ``true_msa``.
    """
    msa = features["msa"]  # [S, L]
    random_aa = torch.tensor([0.05] * 20 + [0.0, 0.0], dtype=torch.float32)
    probs = (
        uniform_prob * random_aa
        + profile_prob * features["hhblits_profile"]
        + same_prob * torch.nn.functional.one_hot(msa, _NUM_PROFILE_CLASSES)
    )  # [S, L, 22]
    mask_prob = 1.0 - profile_prob - same_prob - uniform_prob
    if mask_prob < 0.0:
        raise ValueError(
            "masked-MSA probabilities (uniform + profile + same) must sum to at most 1")
    probs = torch.nn.functional.pad(probs, (0, 1), value=mask_prob)  # [S, L, 23]
    probs = probs + _CATEGORICAL_EPS
    probs = probs / probs.sum(-1, keepdim=True)

    mask_position = sampler.bert_mask_positions(iteration, tuple(msa.shape), replace_fraction)
    values = sampler.bert_categorical(iteration, probs, mask_position)
    bert_msa = msa.clone()
    bert_msa[mask_position] = values.to(msa.dtype)

    out = dict(features)
    out["bert_mask"] = mask_position.to(torch.float32)
    out["true_msa"] = msa
    out["msa"] = bert_msa
    return out


def nearest_neighbor_clusters(features: Features, gap_agreement_weight: float = 0.0) -> Features:
    """Assign each extra row to its most similar cluster (AF2 Suppl. Sec. 1.2.7 "MSA clustering").

    Agreement counts identical classes over the residues, weight 1 for classes 0..20,
    ``gap_agreement_weight`` for gaps and 0 for the mask token, both rows' masks applied;
    ties go to the lowest cluster index. Adds ``extra_cluster_assignment [E]``.
    """
    weights = torch.ones(_NUM_MSA_CLASSES, dtype=torch.float32)
    weights[rc.GAP_INDEX] = gap_agreement_weight
    weights[rc.MASK_INDEX] = 0.0
    sample = features["msa_mask"][:, :, None] * _one_hot(features["msa"], _NUM_MSA_CLASSES)
    extra = (features["extra_msa_mask"][:, :, None]
             * _one_hot(features["extra_msa"], _NUM_MSA_CLASSES))
    num_seq, num_res, _ = sample.shape
    num_extra = extra.shape[0]
    agreement = torch.matmul(
        extra.reshape(num_extra, num_res * _NUM_MSA_CLASSES),
        (sample * weights).reshape(num_seq, num_res * _NUM_MSA_CLASSES).t(),
    )  # [E, S]
    out = dict(features)
    if num_extra == 0:
        out["extra_cluster_assignment"] = torch.zeros(0, dtype=torch.int64)
    else:
        out["extra_cluster_assignment"] = torch.argmax(agreement, dim=1).to(torch.int64)
    return out


def summarize_clusters(features: Features) -> Features:
    """Cluster summaries (AF2 Suppl. Sec. 1.2.7 "MSA clustering"): profile and deletion mean.

    Adds ``cluster_profile [S, L, 23]`` and ``cluster_deletion_mean [S, L]``.

    Each cluster averages its centre (one-hot not masked, count from ``msa_mask``) and its
    assigned extra rows (masked), with 1e-6 added to the count.
    """
    msa = features["msa"]
    num_seq, num_res = msa.shape
    assign = features["extra_cluster_assignment"]  # [E]
    extra_mask = features["extra_msa_mask"]  # [E, L]

    # Segment sums over extra rows by assigned cluster (scatter_add: exact, integer values).
    rows = assign[:, None].expand(-1, num_res)  # [E, L]
    mask_sum = torch.zeros(num_seq, num_res, dtype=torch.float32).scatter_add_(0, rows, extra_mask)
    count = 1e-6 + features["msa_mask"] + mask_sum  # [S, L], OpenFold's order of additions

    flat = (rows * num_res + torch.arange(num_res)) * _NUM_MSA_CLASSES + features["extra_msa"]
    profile = torch.zeros(num_seq * num_res * _NUM_MSA_CLASSES, dtype=torch.float32)
    profile.scatter_add_(0, flat.reshape(-1), extra_mask.reshape(-1))
    profile = profile.reshape(num_seq, num_res, _NUM_MSA_CLASSES) + _one_hot(msa, _NUM_MSA_CLASSES)

    del_sum = torch.zeros(num_seq, num_res, dtype=torch.float32)
    del_sum.scatter_add_(0, rows, extra_mask * features["extra_deletion_matrix"])
    del_sum = del_sum + features["deletion_matrix"]

    out = dict(features)
    out["cluster_profile"] = profile / count[:, :, None]
    out["cluster_deletion_mean"] = del_sum / count
    return out


def crop_extra_msa(features: Features, max_extra_msa: int, *, sampler: Sampler,
                   iteration: int = 0) -> Features:
    """Shuffle the extra rows and keep the first ``max_extra_msa`` (shuffled even when fewer)."""
    num_extra = features["extra_msa"].shape[0]
    keep = sampler.extra_msa_permutation(iteration, num_extra)[:min(max_extra_msa, num_extra)]
    out = dict(features)
    for key in MSA_FEATURE_NAMES:
        name = "extra_" + key
        if name in features:
            out[name] = features[name].index_select(0, keep)
    return out


def make_msa_feat(features: Features) -> Features:
    """Input features of AF2 Suppl. Table 1 "Input features to the model".

    Adds ``msa_feat [S, L, 49]``, ``target_feat [L, 22]`` and, for the extra MSA,
    ``extra_has_deletion``/``extra_deletion_value [E, L]``.
    """
    has_break = torch.clip(features["between_segment_residues"].to(torch.float32), 0, 1)
    target_feat = torch.cat(
        [has_break[:, None], _one_hot(features["aatype"], 21)], dim=-1
    )  # [L, 22]
    deletions = features["deletion_matrix"]
    parts = [
        _one_hot(features["msa"], _NUM_MSA_CLASSES),
        torch.clip(deletions, 0.0, 1.0)[..., None],
        _deletion_value(deletions)[..., None],
    ]
    if "cluster_profile" in features:
        parts += [features["cluster_profile"],
                  _deletion_value(features["cluster_deletion_mean"])[..., None]]
    out = dict(features)
    if "extra_deletion_matrix" in features:
        out["extra_has_deletion"] = torch.clip(features["extra_deletion_matrix"], 0.0, 1.0)
        out["extra_deletion_value"] = _deletion_value(features["extra_deletion_matrix"])
    out["msa_feat"] = torch.cat(parts, dim=-1)  # [S, L, 49]
    out["target_feat"] = target_feat
    return out


def select_feat(features: Features, keys: Collection[str] = FEATURE_SCHEMA) -> Features:
    """Keep only ``keys`` (default: the model batch keys of :data:`FEATURE_SCHEMA`)."""
    return {k: v for k, v in features.items() if k in keys}


def random_crop_to_size(features: Features, crop_size: int, max_templates: int, *,
                        generator: torch.Generator, subsample_templates: bool = False,
                        schema: Mapping[str, tuple] = FEATURE_SCHEMA) -> Features:
    """Crop residues to ``crop_size`` at a random start and templates to ``max_templates``.

    In predict mode ``crop_size`` is the sequence length, so residues are untouched and only
    templates beyond ``max_templates`` are dropped. Draws, from ``generator``, in OpenFold's
    order: [template start, template permutation] (only with ``subsample_templates``), then
    ``x ~ U{0..n}`` and the residue start ``~ U{0..n-x}`` with ``n = L - crop``.
    """
    def randint(low: int, high_inclusive: int) -> int:
        return int(torch.randint(low, high_inclusive + 1, (1,), generator=generator)[0])

    seq_length = int(features["seq_length"])
    num_templates = features["template_mask"].shape[-1] if "template_mask" in features else 0
    subsample = bool(subsample_templates and num_templates)
    num_res_crop = min(seq_length, crop_size)
    perm = None
    if subsample:
        templ_start = randint(0, num_templates)
        perm = torch.randperm(num_templates, generator=generator)
    else:
        templ_start = 0
    num_templ_crop = min(num_templates - templ_start, max_templates)
    n = seq_length - num_res_crop
    x = randint(0, n)
    res_start = randint(0, n - x)

    out = dict(features)
    for key, value in features.items():
        axes = schema.get(key)
        is_template = key.startswith("template")
        if axes is None or (not is_template and RES not in axes):
            continue
        if is_template and perm is not None:
            value = value[perm]
        index = []
        for i, axis in enumerate(axes):
            if i == 0 and is_template:
                index.append(slice(templ_start, templ_start + num_templ_crop))
            elif axis == RES:
                index.append(slice(res_start, res_start + num_res_crop))
            else:
                index.append(slice(None))
        out[key] = value[tuple(index)]
    out["seq_length"] = torch.tensor(num_res_crop, dtype=features["seq_length"].dtype)
    return out


def make_fixed_size(features: Features, *, msa_cluster_size: int, extra_msa_size: int,
                    num_res: int, num_templates: int,
                    schema: Mapping[str, tuple] = FEATURE_SCHEMA) -> Features:
    """Zero-pad every schema axis to its fixed size (cluster rows, extra rows, residues, templates).

    Padded ``true_msa``/``extra_msa`` rows are 0 (Ala): only the masks mark them as padding.
    """
    sizes = {MSA: msa_cluster_size, EXTRA: extra_msa_size, RES: num_res, TEMPL: num_templates}
    out = {}
    for key, value in features.items():
        if key not in schema:
            raise KeyError(f"make_fixed_size: feature {key!r} has no schema entry; "
                           "run select_feat first")
        axes = schema[key]
        if len(axes) != value.dim():
            raise ValueError(f"make_fixed_size: {key} has shape {tuple(value.shape)} but its "
                             f"schema has {len(axes)} axes {axes}")
        target = [sizes.get(axis) or dim for axis, dim in zip(axes, value.shape)]
        if any(t < d for t, d in zip(target, value.shape)):
            raise ValueError(f"make_fixed_size: {key} of shape {tuple(value.shape)} exceeds the "
                             f"fixed size {target}")
        pad = []
        for t, d in zip(reversed(target), reversed(value.shape)):
            pad += [0, t - d]
        out[key] = torch.nn.functional.pad(value, pad) if any(pad) else value
    return out


def pad_and_stack(passes: list[Features], *, msa_cluster_size: int, extra_msa_size: int,
                  num_res: int, num_templates: int,
                  schema: Mapping[str, tuple] = FEATURE_SCHEMA) -> Features:
    """:func:`make_fixed_size` on every pass, stacked on a new LAST axis (OpenFold's layout).

    Equal to ``torch.stack([make_fixed_size(p, ...) for p in passes], dim=-1)`` but writes
    each pass straight into one zero-filled output, so the padding is never copied.
    Keys are ordered as in ``schema``.
    """
    sizes = {MSA: msa_cluster_size, EXTRA: extra_msa_size, RES: num_res, TEMPL: num_templates}
    out = {}
    for key in schema:
        if key not in passes[0]:
            continue
        first = passes[0][key]
        shape = [sizes.get(axis) or dim for axis, dim in zip(schema[key], first.shape)]
        stacked = torch.zeros(*shape, len(passes), dtype=first.dtype)
        for i, features in enumerate(passes):
            value = features[key]
            if value.dim() != len(shape) or any(d > t for d, t in zip(value.shape, shape)):
                raise ValueError(f"pad_and_stack: {key} of shape {tuple(value.shape)} does not "
                                 f"fit the fixed size {shape}")
            stacked[tuple(slice(0, d) for d in value.shape) + (i,)] = value
        out[key] = stacked
    return out


def ensembled_transforms(features: Features, data_config: DataConfig, *, sampler: Sampler,
                         iteration: int, crop_generator: torch.Generator,
                         fixed_size: bool = True) -> Features:
    """One recycling pass of OpenFold's predict-mode ensembled steps, in order.

    sample_msa → make_masked_msa → nearest_neighbor_clusters → summarize_clusters →
    crop_extra_msa → make_msa_feat → select_feat → random_crop_to_size (crop = L) →
    make_fixed_size (clusters to ``data_config.num_msa_clusters``, extra rows to
    ``max_extra_msa``, templates to ``max_templates``, residues unchanged).

    Args:
        features: Output of :func:`nonensembled_transforms`.
        data_config: The preset's data settings.
        sampler: Source of the random choices.
        iteration: Recycling pass, passed to ``sampler``.
        crop_generator: Generator of the crop draws (their ranges are ``{0}`` in predict mode).
        fixed_size: Run the final ``make_fixed_size``; False leaves it to :func:`pad_and_stack`.
    """
    num_clusters = data_config.num_msa_clusters
    f = sample_msa(features, num_clusters, sampler=sampler, iteration=iteration)
    f = make_masked_msa(
        f, replace_fraction=data_config.masked_msa_replace_fraction,
        uniform_prob=data_config.masked_msa_uniform_prob,
        profile_prob=data_config.masked_msa_profile_prob,
        same_prob=data_config.masked_msa_same_prob, sampler=sampler, iteration=iteration,
    )
    if data_config.msa_cluster_features:
        f = nearest_neighbor_clusters(f)
        f = summarize_clusters(f)
    f = crop_extra_msa(f, data_config.max_extra_msa, sampler=sampler, iteration=iteration)
    f = make_msa_feat(f)
    f = select_feat(f)
    num_res = int(f["seq_length"])
    f = random_crop_to_size(f, num_res, data_config.max_templates, generator=crop_generator)
    if not fixed_size:
        return f
    return make_fixed_size(f, msa_cluster_size=num_clusters,
                           extra_msa_size=data_config.max_extra_msa, num_res=num_res,
                           num_templates=data_config.max_templates)
