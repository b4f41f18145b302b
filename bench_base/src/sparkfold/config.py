"""Frozen configuration dataclasses.

Two kinds of configuration exist and never mix:

* :class:`ModelConfig` is fixed by the weights: the architecture plus, in a nested
  :class:`DataConfig`, the feature settings the preset was trained with.  Presets are
  small named functions (``model_1`` … ``model_5``, their ``_ptm`` variants, the OpenFold
  training presets that map onto them, and ``tiny()`` for the golden fixtures).
* :class:`RuntimeConfig` is chosen by the user at run time: device, precision, kernel
  backend, chunking, number of recycles and seed.

The facts come from ``shared/spec/model_config.md``; ``tests/unit/test_config.py`` checks
every preset field against it.  Monomer and multimer differ only through named fields here
(relative-position form, template embedder form, OPM position, masked-MSA classes, …), read
once when the model is built.
"""

from dataclasses import dataclass, field, replace
from typing import Literal

from sparkfold.errors import ConfigError

__all__ = [
    "DataConfig",
    "InputEmbedderConfig",
    "RecyclingEmbedderConfig",
    "TemplateConfig",
    "MSAStackConfig",
    "StructureModuleConfig",
    "HeadsConfig",
    "ModelConfig",
    "RuntimeConfig",
    "ConfigError",
    "MONOMER_PRESETS",
    "MULTIMER_PRESETS",
    "PRESET_ALIASES",
    "canonical_preset",
]




def _check_positive(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(
                f"{type(obj).__name__}.{name} must be a positive integer, got {value!r}"
            )


@dataclass(frozen=True)
class DataConfig:
    """Feature settings of a preset in predict mode (OpenFold ``data.predict`` + ``data.common``).

    Attributes:
        max_msa_clusters: MSA cluster rows fed to the Evoformer (S).
        max_extra_msa: extra-MSA rows (E).
        max_templates: templates kept (T); also the padding size.
        max_template_hits: hits considered by the template featuriser.
        use_templates: whether template features are produced at all.
        reduce_msa_clusters_by_max_templates: AF2 reduces the clusters by the template count
            (512 → 508 for model_1/2). DEVIATION from AF2, following OpenFold: OpenFold's presets
            misspell this key, so it stays False and 512 clusters are used. Set it to True to
            reproduce AF2's 508.
        masked_msa_replace_fraction: BERT masking fraction, applied at inference too.
        masked_msa_uniform_prob: share of masked positions resampled uniformly over 20 aa.
        masked_msa_profile_prob: share resampled from the HHblits profile.
        masked_msa_same_prob: share kept as the original residue.
        resample_msa_in_recycling: redraw clustering and masking every trunk pass.
        msa_cluster_features: build cluster profile/deletion-mean features.
    """

    max_msa_clusters: int = 512
    max_extra_msa: int = 1024
    max_templates: int = 4
    max_template_hits: int = 4
    use_templates: bool = True
    reduce_msa_clusters_by_max_templates: bool = False
    masked_msa_replace_fraction: float = 0.15
    masked_msa_uniform_prob: float = 0.1
    masked_msa_profile_prob: float = 0.1
    masked_msa_same_prob: float = 0.1
    resample_msa_in_recycling: bool = True
    msa_cluster_features: bool = True

    def __post_init__(self) -> None:
        _check_positive(self, "max_msa_clusters", "max_extra_msa", "max_templates",
                        "max_template_hits")
        if not 0.0 <= self.masked_msa_replace_fraction <= 1.0:
            raise ConfigError(
                "DataConfig.masked_msa_replace_fraction must lie in [0, 1], got "
                f"{self.masked_msa_replace_fraction!r}"
            )
        total = self.masked_msa_uniform_prob + self.masked_msa_profile_prob + self.masked_msa_same_prob
        if total > 1.0 + 1e-9:
            raise ConfigError(
                "DataConfig masked-MSA probabilities (uniform + profile + same) must sum to at most 1, "
                f"got {total}"
            )

    @property
    def num_msa_clusters(self) -> int:
        """Cluster rows actually used, after the optional AF2 template reduction."""
        if self.reduce_msa_clusters_by_max_templates and self.use_templates:
            return self.max_msa_clusters - self.max_templates
        return self.max_msa_clusters


@dataclass(frozen=True)
class InputEmbedderConfig:
    """AF2 Suppl. Alg. 3 "InputEmbedder" and Alg. 4 "relpos".

    ``relpos_form`` is ``"monomer"`` (65 one-hot bins of the clipped offset) or ``"chain"``
    (AF-Multimer Sec. 2.2.4: 73 bins with chain, entity and symmetry terms).
    """

    tf_dim: int = 22
    msa_dim: int = 49
    relpos_k: int = 32
    relpos_form: Literal["monomer", "chain"] = "monomer"
    max_relative_chain: int = 2

    def __post_init__(self) -> None:
        _check_positive(self, "tf_dim", "msa_dim", "relpos_k")
        if self.relpos_form not in ("monomer", "chain"):
            raise ConfigError(f"relpos_form must be 'monomer' or 'chain', got {self.relpos_form!r}")

    @property
    def num_relpos_bins(self) -> int:
        """Width of the relative-position one-hot."""
        if self.relpos_form == "monomer":
            return 2 * self.relpos_k + 1
        return (2 * self.relpos_k + 2) + 1 + (2 * self.max_relative_chain + 2)


@dataclass(frozen=True)
class RecyclingEmbedderConfig:
    """AF2 Suppl. Alg. 32 "RecyclingEmbedder": squared-distance bins of previous pseudo-β."""

    min_bin: float = 3.25
    max_bin: float = 20.75
    num_bins: int = 15
    inf: float = 1e8


@dataclass(frozen=True)
class TemplateConfig:
    """Template embedding: pair features, pair stack, point-wise attention, single embedder.

    ``embedder_form`` selects the monomer (88-channel concatenated pair feature) or the
    multimer (per-feature linears, AF-Multimer Sec. 7.3) template pair embedder.
    """

    enabled: bool = True
    embedder_form: Literal["monomer", "multimer"] = "monomer"
    embed_angles: bool = True
    use_unit_vector: bool = False
    distogram_min_bin: float = 3.25
    distogram_max_bin: float = 50.75
    distogram_num_bins: int = 39
    pair_c_in: int = 88
    single_c_in: int = 57
    num_blocks: int = 2
    c_hidden_tri_att: int = 16
    num_heads_tri_att: int = 4
    c_hidden_tri_mul: int = 64
    transition_n: int = 2
    tri_mul_first: bool = False
    c_hidden_pointwise: int = 16
    num_heads_pointwise: int = 4
    pointwise_chunk_size: int = 256
    inf: float = 1e5
    tri_inf: float = 1e9
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.embedder_form not in ("monomer", "multimer"):
            raise ConfigError(
                f"embedder_form must be 'monomer' or 'multimer', got {self.embedder_form!r}"
            )


@dataclass(frozen=True)
class MSAStackConfig:
    """One Evoformer-style stack (AF2 Suppl. Alg. 6 "EvoformerStack" or Alg. 18 "ExtraMsaStack").

    ``global_column_attention`` selects MSAColumnGlobalAttention (extra MSA) instead of
    MSAColumnAttention; ``opm_first`` moves the outer product mean to the start of the block
    (AF-Multimer).
    """

    num_blocks: int = 48
    c_m: int = 256
    c_z: int = 128
    c_hidden_msa_att: int = 32
    num_heads_msa: int = 8
    c_hidden_opm: int = 32
    c_hidden_mul: int = 128
    c_hidden_pair_att: int = 32
    num_heads_pair: int = 4
    transition_n: int = 4
    opm_first: bool = False
    global_column_attention: bool = False
    inf: float = 1e9
    eps: float = 1e-8

    def __post_init__(self) -> None:
        _check_positive(self, "num_blocks", "c_m", "c_z", "c_hidden_msa_att", "num_heads_msa",
                        "c_hidden_opm", "c_hidden_mul", "c_hidden_pair_att", "num_heads_pair",
                        "transition_n")


@dataclass(frozen=True)
class StructureModuleConfig:
    """AF2 Suppl. Alg. 20 "StructureModule" with IPA (Alg. 22) and the angle resnet."""

    c_ipa: int = 16
    c_resnet: int = 128
    num_heads_ipa: int = 12
    num_qk_points: int = 4
    num_v_points: int = 8
    num_blocks: int = 8
    num_transition_layers: int = 1
    num_resnet_blocks: int = 2
    num_angles: int = 7
    trans_scale_factor: float = 10.0
    epsilon: float = 1e-8
    inf: float = 1e5
    ipa_form: Literal["monomer", "multimer"] = "monomer"

    def __post_init__(self) -> None:
        _check_positive(self, "c_ipa", "c_resnet", "num_heads_ipa", "num_qk_points",
                        "num_v_points", "num_blocks", "num_transition_layers",
                        "num_resnet_blocks", "num_angles")


@dataclass(frozen=True)
class HeadsConfig:
    """Output heads: pLDDT, distogram, masked MSA, experimentally resolved, pTM/PAE."""

    lddt_c_hidden: int = 128
    lddt_num_bins: int = 50
    distogram_num_bins: int = 64
    masked_msa_c_out: int = 23
    experimentally_resolved_c_out: int = 37
    tm_enabled: bool = False
    tm_num_bins: int = 64
    tm_max_bin: int = 31
    iptm_enabled: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and preset data settings, fixed by the weights.

    Build one with :meth:`from_preset` (``"model_1_ptm"`` …) or :meth:`tiny`.
    """

    name: str = "model_1_ptm"
    c_m: int = 256
    c_z: int = 128
    c_s: int = 384
    c_t: int = 64
    c_e: int = 64
    extra_msa_c_in: int = 25
    input_embedder: InputEmbedderConfig = field(default_factory=InputEmbedderConfig)
    recycling_embedder: RecyclingEmbedderConfig = field(default_factory=RecyclingEmbedderConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    extra_msa_enabled: bool = True
    extra_msa_stack: MSAStackConfig = field(
        default_factory=lambda: MSAStackConfig(
            num_blocks=4, c_m=64, c_hidden_msa_att=8, num_heads_msa=8, c_hidden_pair_att=32,
            global_column_attention=True,
        )
    )
    evoformer: MSAStackConfig = field(default_factory=MSAStackConfig)
    structure_module: StructureModuleConfig = field(default_factory=StructureModuleConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eps: float = 1e-8
    recycle_early_stop_tolerance: float = -1.0
    is_multimer: bool = False

    def __post_init__(self) -> None:
        _check_positive(self, "c_m", "c_z", "c_s", "c_t", "c_e")
        if self.evoformer.c_m != self.c_m or self.evoformer.c_z != self.c_z:
            raise ConfigError("ModelConfig.evoformer c_m/c_z must equal the model's c_m/c_z")
        if self.extra_msa_stack.c_m != self.c_e or self.extra_msa_stack.c_z != self.c_z:
            raise ConfigError("ModelConfig.extra_msa_stack c_m/c_z must equal the model's c_e/c_z")
        if self.template.enabled != self.data.use_templates:
            raise ConfigError(
                "ModelConfig.template.enabled and data.use_templates must agree "
                f"(got {self.template.enabled} and {self.data.use_templates})"
            )

    # ----------------------------------------------------------------- presets
    @classmethod
    def from_preset(cls, name: str) -> "ModelConfig":
        """The configuration of a named preset (AF2 ``model_N[_ptm]`` or an OpenFold alias)."""
        canonical = canonical_preset(name)
        if canonical in MULTIMER_PRESETS:
            return _multimer_preset(canonical)
        return _monomer_preset(canonical)

    @classmethod
    def tiny(cls, templates: bool = True) -> "ModelConfig":
        """The shrunk config of the whole-model golden fixtures.

        ``templates=True`` is ``model_tiny_templ`` (from model_1_ptm), ``False`` is
        ``model_tiny_notempl`` (from model_3_ptm).
        """
        base = cls.from_preset("model_1_ptm" if templates else "model_3_ptm")
        c_m, c_z, c_t, c_e, c_s = 16, 14, 10, 6, 20
        return replace(
            base,
            name="tiny_templ" if templates else "tiny_notempl",
            c_m=c_m, c_z=c_z, c_s=c_s, c_t=c_t, c_e=c_e,
            template=replace(
                base.template, num_blocks=2, c_hidden_tri_att=5, num_heads_tri_att=2,
                c_hidden_tri_mul=7, transition_n=2, c_hidden_pointwise=4, num_heads_pointwise=2,
            ),
            evoformer=MSAStackConfig(
                num_blocks=2, c_m=c_m, c_z=c_z, c_hidden_msa_att=4, num_heads_msa=2,
                c_hidden_opm=3, c_hidden_mul=7, c_hidden_pair_att=5, num_heads_pair=3,
                transition_n=2,
            ),
            extra_msa_stack=MSAStackConfig(
                num_blocks=1, c_m=c_e, c_z=c_z, c_hidden_msa_att=4, num_heads_msa=2,
                c_hidden_opm=3, c_hidden_mul=7, c_hidden_pair_att=5, num_heads_pair=3,
                transition_n=2, global_column_attention=True,
            ),
            structure_module=replace(
                base.structure_module, c_ipa=6, c_resnet=8, num_heads_ipa=3, num_qk_points=4,
                num_v_points=8, num_blocks=8,
            ),
            heads=replace(base.heads, lddt_c_hidden=8, tm_enabled=True),
            data=replace(
                base.data, max_msa_clusters=7 if templates else 5, max_extra_msa=6,
                max_templates=2, max_template_hits=2,
            ),
        )

    @classmethod
    def from_openfold(cls, config: dict, name: str = "openfold") -> "ModelConfig":
        """Build a config from OpenFold's nested config dict (``model_config(...)`` as a dict).

        Reads ``globals``, ``model`` and, when present, ``data_predict`` (or ``data.predict``);
        the shape the golden fixtures store as ``meta.config``. Monomer configs only.

        Raises:
            ConfigError: for a multimer or SoloSeq config, or a missing section.
        """
        try:
            g, mdl = config["globals"], config["model"]
        except KeyError as exc:
            raise ConfigError(f"OpenFold config has no {exc.args[0]!r} section") from None
        if g.get("is_multimer"):
            raise ConfigError("OpenFold multimer configs are not supported yet; use a monomer preset")
        if g.get("seqemb_mode_enabled"):
            raise ConfigError("OpenFold single-sequence (SoloSeq) configs are not supported")

        def stack(d: dict, c_m: int, global_col: bool) -> MSAStackConfig:
            return MSAStackConfig(
                num_blocks=d["no_blocks"], c_m=c_m, c_z=d["c_z"],
                c_hidden_msa_att=d["c_hidden_msa_att"], num_heads_msa=d["no_heads_msa"],
                c_hidden_opm=d["c_hidden_opm"], c_hidden_mul=d["c_hidden_mul"],
                c_hidden_pair_att=d["c_hidden_pair_att"], num_heads_pair=d["no_heads_pair"],
                transition_n=d["transition_n"], opm_first=d.get("opm_first", False),
                global_column_attention=global_col, inf=d.get("inf", 1e9), eps=d.get("eps", 1e-8),
            )

        ie, rc, tp, sm, hd = (mdl["input_embedder"], mdl["recycling_embedder"], mdl["template"],
                              mdl["structure_module"], mdl["heads"])
        tps, tpa = tp["template_pair_stack"], tp["template_pointwise_attention"]
        ex = mdl["extra_msa"]
        data = config.get("data_predict") or config.get("data", {}).get("predict", {})
        base_data = DataConfig(use_templates=tp["enabled"])
        return cls(
            name=name,
            c_m=g["c_m"], c_z=g["c_z"], c_s=g["c_s"], c_t=g["c_t"], c_e=g["c_e"],
            extra_msa_c_in=ex["extra_msa_embedder"]["c_in"],
            input_embedder=InputEmbedderConfig(tf_dim=ie["tf_dim"], msa_dim=ie["msa_dim"],
                                               relpos_k=ie["relpos_k"]),
            recycling_embedder=RecyclingEmbedderConfig(min_bin=rc["min_bin"], max_bin=rc["max_bin"],
                                                       num_bins=rc["no_bins"], inf=rc["inf"]),
            template=TemplateConfig(
                enabled=tp["enabled"], embed_angles=tp["embed_angles"],
                use_unit_vector=tp["use_unit_vector"],
                distogram_min_bin=tp["distogram"]["min_bin"],
                distogram_max_bin=tp["distogram"]["max_bin"],
                distogram_num_bins=tp["distogram"]["no_bins"],
                pair_c_in=tp["template_pair_embedder"]["c_in"],
                single_c_in=tp["template_single_embedder"]["c_in"],
                num_blocks=tps["no_blocks"], c_hidden_tri_att=tps["c_hidden_tri_att"],
                num_heads_tri_att=tps["no_heads"], c_hidden_tri_mul=tps["c_hidden_tri_mul"],
                transition_n=tps["pair_transition_n"], tri_mul_first=tps.get("tri_mul_first", False),
                c_hidden_pointwise=tpa["c_hidden"], num_heads_pointwise=tpa["no_heads"],
                inf=tp["inf"], tri_inf=tps.get("inf", 1e9), eps=tp["eps"],
            ),
            extra_msa_enabled=ex["enabled"],
            extra_msa_stack=stack(ex["extra_msa_stack"], g["c_e"], True),
            evoformer=stack(mdl["evoformer_stack"], g["c_m"], False),
            structure_module=StructureModuleConfig(
                c_ipa=sm["c_ipa"], c_resnet=sm["c_resnet"], num_heads_ipa=sm["no_heads_ipa"],
                num_qk_points=sm["no_qk_points"], num_v_points=sm["no_v_points"],
                num_blocks=sm["no_blocks"], num_transition_layers=sm["no_transition_layers"],
                num_resnet_blocks=sm["no_resnet_blocks"], num_angles=sm["no_angles"],
                trans_scale_factor=float(sm["trans_scale_factor"]), epsilon=sm["epsilon"],
                inf=sm["inf"],
            ),
            heads=HeadsConfig(
                lddt_c_hidden=hd["lddt"]["c_hidden"], lddt_num_bins=hd["lddt"]["no_bins"],
                distogram_num_bins=hd["distogram"]["no_bins"],
                masked_msa_c_out=hd["masked_msa"]["c_out"],
                experimentally_resolved_c_out=hd["experimentally_resolved"]["c_out"],
                tm_enabled=hd["tm"]["enabled"], tm_num_bins=hd["tm"]["no_bins"],
            ),
            data=replace(
                base_data,
                max_msa_clusters=data.get("max_msa_clusters", base_data.max_msa_clusters),
                max_extra_msa=data.get("max_extra_msa", base_data.max_extra_msa),
                max_templates=data.get("max_templates", base_data.max_templates),
                max_template_hits=data.get("max_template_hits", base_data.max_template_hits),
                masked_msa_replace_fraction=data.get("masked_msa_replace_fraction",
                                                     base_data.masked_msa_replace_fraction),
            ),
            eps=g.get("eps", 1e-8),
            recycle_early_stop_tolerance=mdl.get("recycle_early_stop_tolerance", -1.0),
        )

    @property
    def has_templates(self) -> bool:
        """Whether the template embedder exists (and ``template_*`` weights are expected)."""
        return self.template.enabled


# --------------------------------------------------------------------- presets
MONOMER_PRESETS: tuple[str, ...] = tuple(
    f"model_{i}{suffix}" for suffix in ("", "_ptm") for i in range(1, 6)
)
MULTIMER_PRESETS: tuple[str, ...] = tuple(
    f"model_{i}_multimer{v}" for v in ("", "_v2", "_v3") for i in range(1, 6)
)

#: OpenFold training/finetuning presets and their inference-equivalent AF2 preset.
#: The architectures are identical; the predict-mode data settings are those of the target.
PRESET_ALIASES: dict[str, str] = {
    "initial_training": "model_2",
    "finetuning": "model_2",
    "finetuning_ptm": "model_2_ptm",
    "finetuning_no_templ": "model_5",
    "finetuning_no_templ_ptm": "model_5_ptm",
}

_SEQEMB_PRESETS = ("seqemb_initial_training", "seqemb_finetuning", "seq_model_esm1b",
                   "seq_model_esm1b_ptm")


def canonical_preset(name: str) -> str:
    """Map a preset name (AF2 or OpenFold) onto one of :data:`MONOMER_PRESETS`/:data:`MULTIMER_PRESETS`."""
    key = name.strip()
    if key in MONOMER_PRESETS or key in MULTIMER_PRESETS:
        return key
    if key in PRESET_ALIASES:
        return PRESET_ALIASES[key]
    if key in _SEQEMB_PRESETS:
        raise ConfigError(
            f"preset {name!r} is a single-sequence (SoloSeq/ESM) preset, which sparkfold does not "
            "support; use an MSA preset such as model_1_ptm"
        )
    known = ", ".join(MONOMER_PRESETS + tuple(PRESET_ALIASES))
    raise ConfigError(f"unknown preset {name!r}; known presets: {known} (and model_N_multimer[_v2|_v3])")


def _monomer_preset(name: str) -> ModelConfig:
    number = int(name.split("_")[1])
    ptm = name.endswith("_ptm")
    templates = number in (1, 2)
    max_extra = 5120 if number in (1, 3, 4) else 1024
    data = DataConfig(max_msa_clusters=512, max_extra_msa=max_extra, use_templates=templates)
    return ModelConfig(
        name=name,
        template=TemplateConfig(enabled=templates),
        heads=HeadsConfig(tm_enabled=ptm),
        data=data,
    )


def _multimer_preset(name: str) -> ModelConfig:
    number = int(name.split("_")[1])
    version = "v3" if name.endswith("_v3") else ("v2" if name.endswith("_v2") else "v1")
    if version == "v3":
        clusters, extra = 508, (2048 if number <= 3 else 1152)
    else:
        clusters, extra = 252, 1152
    evo = MSAStackConfig(opm_first=True)
    extra_stack = replace(ModelConfig().extra_msa_stack, opm_first=True)
    return ModelConfig(
        name=name,
        input_embedder=InputEmbedderConfig(tf_dim=21, relpos_form="chain"),
        template=TemplateConfig(embedder_form="multimer", tri_mul_first=True, single_c_in=34),
        evoformer=evo,
        extra_msa_stack=extra_stack,
        structure_module=StructureModuleConfig(trans_scale_factor=20.0, ipa_form="multimer"),
        heads=HeadsConfig(masked_msa_c_out=22, tm_enabled=True, iptm_enabled=True),
        data=DataConfig(max_msa_clusters=clusters, max_extra_msa=extra, use_templates=True),
        recycle_early_stop_tolerance=0.5,
        is_multimer=True,
    )


# --------------------------------------------------------------------- runtime
Precision = Literal["fp32", "tf32", "bf16"]


@dataclass(frozen=True)
class RuntimeConfig:
    """Run-time choices that do not change the weights.

    Attributes:
        device: torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        precision: ``"fp32"`` (true fp32: TF32 off), ``"tf32"`` (TF32 matmuls, as OpenFold
            runs) or ``"bf16"``.
        kernels: ``"auto"`` or a kernel backend name (``"reference"``, ``"sdpa"``, ``"triton"``,
            ``"cueq"``); see ``sparkfold.model.kernels``.
        chunk_size: ``"auto"`` (from free memory), an int (fixed slice size), or None (no chunking).
        num_recycles: N recycles ⇒ N+1 passes through the trunk.
        recycle_early_stop_tolerance: stop recycling once the CA distance matrix changes by
            less than this (Å RMS); negative disables.
        seed: seed for feature sampling.
        cuda_graphs: run each trunk pass as a recorded CUDA graph (inference on CUDA only):
            ``"auto"`` for sequences up to ``sparkfold.model.alphafold.GRAPH_MAX_LENGTH``
            residues (where launches, not the GPU, set the speed), ``True`` always, ``False``
            never. The first forward of a new length runs eagerly and records.
    """

    device: str = "cpu"
    precision: Precision = "fp32"
    kernels: str = "auto"
    chunk_size: int | str | None = None
    num_recycles: int = 3
    recycle_early_stop_tolerance: float = -1.0
    seed: int = 0
    cuda_graphs: bool | str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "tf32", "bf16"):
            raise ConfigError(
                f"RuntimeConfig.precision must be 'fp32', 'tf32' or 'bf16', got {self.precision!r}"
            )
        if not isinstance(self.num_recycles, int) or isinstance(self.num_recycles, bool) \
                or self.num_recycles < 0:
            raise ConfigError(
                f"RuntimeConfig.num_recycles must be an integer >= 0, got {self.num_recycles!r}"
            )
        cs = self.chunk_size
        if not (cs is None or cs == "auto" or (isinstance(cs, int) and not isinstance(cs, bool) and cs > 0)):
            raise ConfigError(
                f"RuntimeConfig.chunk_size must be 'auto', a positive integer or None, got {cs!r}"
            )
        if not isinstance(self.kernels, str) or not self.kernels:
            raise ConfigError("RuntimeConfig.kernels must be 'auto' or a backend name")
        if self.cuda_graphs not in (True, False, "auto"):
            raise ConfigError(
                f"RuntimeConfig.cuda_graphs must be True, False or 'auto', got {self.cuda_graphs!r}"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"RuntimeConfig.seed must be an integer, got {self.seed!r}")

    @property
    def num_passes(self) -> int:
        """Trunk passes: recycles + 1."""
        return self.num_recycles + 1
