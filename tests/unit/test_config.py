"""Every preset field against shared/spec/model_config.md, plus config validation."""

import re
from dataclasses import FrozenInstanceError

import pytest

from sparkfold.config import (
    MONOMER_PRESETS,
    MULTIMER_PRESETS,
    PRESET_ALIASES,
    ConfigError,
    DataConfig,
    ModelConfig,
    RuntimeConfig,
    canonical_preset,
)
from testutil import SHARED

# The spec's preset table, transcribed (checked against the markdown below when ../shared exists).
SPEC_PRESETS = {
    # preset: (template stack, pTM head, extra-MSA rows in predict)
    **{f"model_{i}": (i in (1, 2), False, 5120 if i in (1, 3, 4) else 1024) for i in range(1, 6)},
    **{f"model_{i}_ptm": (i in (1, 2), True, 5120 if i in (1, 3, 4) else 1024) for i in range(1, 6)},
    "initial_training": (True, False, 1024),
    "finetuning": (True, False, 1024),
    "finetuning_ptm": (True, True, 1024),
    "finetuning_no_templ": (False, False, 1024),
    "finetuning_no_templ_ptm": (False, True, 1024),
}


def _spec_table():
    path = SHARED / "spec" / "model_config.md"
    if not path.exists():
        pytest.skip(f"{path} absent (../shared not laid out beside the checkout)")
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.fullmatch(r"[a-z_0-9]+", cells[0]):
            continue
        rows[cells[0]] = cells
    return rows


def test_transcription_matches_spec_markdown():
    rows = _spec_table()
    for i in range(1, 6):
        name = f"model_{i}"
        templ, _, extra = SPEC_PRESETS[name]
        cells = rows[name]
        assert cells[1] == ("on" if templ else "off"), name
        assert int(cells[3].replace("*", "")) == extra, name
    for name in ("initial_training", "finetuning", "finetuning_ptm", "finetuning_no_templ",
                 "finetuning_no_templ_ptm"):
        cells = rows[name]
        templ, ptm, extra = SPEC_PRESETS[name]
        assert cells[1] == ("on" if templ else "off"), name
        assert cells[2] == ("on" if ptm else "off"), name
        assert int(cells[3]) == extra, name


@pytest.mark.parametrize("name", sorted(SPEC_PRESETS))
def test_preset_fields(name):
    cfg = ModelConfig.from_preset(name)
    templ, ptm, extra = SPEC_PRESETS[name]
    assert cfg.template.enabled is templ
    assert cfg.data.use_templates is templ
    assert cfg.heads.tm_enabled is ptm
    assert cfg.data.max_extra_msa == extra
    # Common monomer architecture (model_config.md §2).
    assert (cfg.c_m, cfg.c_z, cfg.c_s, cfg.c_t, cfg.c_e) == (256, 128, 384, 64, 64)
    evo = cfg.evoformer
    assert (evo.num_blocks, evo.num_heads_msa, evo.c_hidden_msa_att) == (48, 8, 32)
    assert (evo.c_hidden_opm, evo.c_hidden_mul, evo.num_heads_pair, evo.c_hidden_pair_att) == (32, 128, 4, 32)
    assert evo.transition_n == 4 and not evo.opm_first and not evo.global_column_attention
    ex = cfg.extra_msa_stack
    assert (ex.num_blocks, ex.c_m, ex.num_heads_msa, ex.c_hidden_msa_att) == (4, 64, 8, 8)
    assert ex.global_column_attention and (ex.c_hidden_opm, ex.c_hidden_mul) == (32, 128)
    assert (ex.num_heads_pair, ex.c_hidden_pair_att) == (4, 32)
    t = cfg.template
    assert (t.num_blocks, t.c_hidden_tri_att, t.num_heads_tri_att, t.c_hidden_tri_mul) == (2, 16, 4, 64)
    assert (t.c_hidden_pointwise, t.num_heads_pointwise, t.pair_c_in, t.single_c_in) == (16, 4, 88, 57)
    assert (t.distogram_num_bins, t.distogram_min_bin, t.distogram_max_bin) == (39, 3.25, 50.75)
    assert t.use_unit_vector is False and t.inf == 1e5
    sm = cfg.structure_module
    assert (sm.num_heads_ipa, sm.c_ipa, sm.num_qk_points, sm.num_v_points) == (12, 16, 4, 8)
    assert (sm.num_blocks, sm.c_resnet, sm.num_resnet_blocks, sm.num_angles) == (8, 128, 2, 7)
    assert sm.trans_scale_factor == 10
    h = cfg.heads
    assert (h.lddt_c_hidden, h.lddt_num_bins, h.distogram_num_bins, h.masked_msa_c_out) == (128, 50, 64, 23)
    assert (h.experimentally_resolved_c_out, h.tm_num_bins, h.tm_max_bin) == (37, 64, 31)
    assert cfg.input_embedder.num_relpos_bins == 65
    assert cfg.recycling_embedder.num_bins == 15
    # Data (§4, predict): 512 clusters (OpenFold quirk: not reduced by templates), 4 templates.
    assert cfg.data.max_msa_clusters == 512 and cfg.data.num_msa_clusters == 512
    assert cfg.data.max_templates == 4 and cfg.data.masked_msa_replace_fraction == 0.15
    assert cfg.recycle_early_stop_tolerance < 0


def test_af2_cluster_reduction_is_a_documented_switch():
    cfg = ModelConfig.from_preset("model_1")
    from dataclasses import replace

    af2 = replace(cfg, data=replace(cfg.data, reduce_msa_clusters_by_max_templates=True))
    assert af2.data.num_msa_clusters == 508


@pytest.mark.parametrize("name", MULTIMER_PRESETS)
def test_multimer_presets(name):
    cfg = ModelConfig.from_preset(name)
    assert cfg.is_multimer and cfg.evoformer.opm_first and cfg.template.tri_mul_first
    assert cfg.input_embedder.num_relpos_bins == 73 and cfg.input_embedder.tf_dim == 21
    assert cfg.heads.masked_msa_c_out == 22 and cfg.structure_module.trans_scale_factor == 20
    number = int(name.split("_")[1])
    if name.endswith("_v3"):
        assert cfg.data.max_msa_clusters == 508
        assert cfg.data.max_extra_msa == (2048 if number <= 3 else 1152)
    else:
        assert (cfg.data.max_msa_clusters, cfg.data.max_extra_msa) == (252, 1152)


def test_tiny_matches_fixture_meta():
    from testutil import FIXTURES, load_npz

    for templates, fname in ((True, "model_tiny_templ.npz"), (False, "model_tiny_notempl.npz")):
        _, meta = load_npz(FIXTURES / fname)
        ref = meta["config"]
        cfg = ModelConfig.tiny(templates=templates)
        g = ref["globals"]
        assert (cfg.c_m, cfg.c_z, cfg.c_s, cfg.c_t, cfg.c_e) == (g["c_m"], g["c_z"], g["c_s"], g["c_t"], g["c_e"])
        evo = ref["model"]["evoformer_stack"]
        assert cfg.evoformer.num_blocks == evo["no_blocks"]
        assert cfg.evoformer.num_heads_msa == evo["no_heads_msa"]
        assert cfg.evoformer.c_hidden_msa_att == evo["c_hidden_msa_att"]
        assert cfg.evoformer.c_hidden_pair_att == evo["c_hidden_pair_att"]
        assert cfg.evoformer.c_hidden_mul == evo["c_hidden_mul"]
        assert cfg.evoformer.c_hidden_opm == evo["c_hidden_opm"]
        sm = ref["model"]["structure_module"]
        assert (cfg.structure_module.c_ipa, cfg.structure_module.num_heads_ipa) == (sm["c_ipa"], sm["no_heads_ipa"])
        assert cfg.structure_module.c_resnet == sm["c_resnet"]
        assert cfg.template.enabled == ref["model"]["template"]["enabled"]
        tps = ref["model"]["template"]["template_pair_stack"]
        assert (cfg.template.c_hidden_tri_att, cfg.template.num_heads_tri_att) == (tps["c_hidden_tri_att"], tps["no_heads"])
        assert cfg.heads.lddt_c_hidden == ref["model"]["heads"]["lddt"]["c_hidden"]
        assert cfg.data.max_msa_clusters == ref["data_predict"]["max_msa_clusters"]
        assert cfg.data.max_extra_msa == ref["data_predict"]["max_extra_msa"]


def test_aliases_and_errors():
    for alias, target in PRESET_ALIASES.items():
        assert canonical_preset(alias) == target
    assert set(MONOMER_PRESETS) <= {canonical_preset(p) for p in MONOMER_PRESETS}
    with pytest.raises(ConfigError, match="unknown preset"):
        ModelConfig.from_preset("model_9")
    with pytest.raises(ConfigError, match="single-sequence"):
        ModelConfig.from_preset("seq_model_esm1b")


def test_frozen_and_validation():
    cfg = ModelConfig.from_preset("model_1_ptm")
    with pytest.raises(FrozenInstanceError):
        cfg.c_m = 3  # type: ignore[misc]
    with pytest.raises(ConfigError, match="max_msa_clusters"):
        DataConfig(max_msa_clusters=0)
    with pytest.raises(ConfigError, match="replace_fraction"):
        DataConfig(masked_msa_replace_fraction=1.5)
    with pytest.raises(ConfigError, match="precision"):
        RuntimeConfig(precision="fp16")
    with pytest.raises(ConfigError, match="num_recycles"):
        RuntimeConfig(num_recycles=-1)
    with pytest.raises(ConfigError, match="chunk_size"):
        RuntimeConfig(chunk_size=0)
    assert RuntimeConfig(num_recycles=3).num_passes == 4
    assert RuntimeConfig(chunk_size="auto").chunk_size == "auto"


def test_from_openfold_config_dict_equals_the_named_constructors():
    from dataclasses import replace

    from testutil import FIXTURES, load_npz

    for templates, fname in ((True, "model_tiny_templ.npz"), (False, "model_tiny_notempl.npz")):
        _, meta = load_npz(FIXTURES / fname)
        built = ModelConfig.from_openfold(meta["config"])
        tiny = ModelConfig.tiny(templates=templates)
        assert replace(built, name=tiny.name) == tiny


def test_from_openfold_rejects_what_it_cannot_build():
    from testutil import FIXTURES, load_npz

    _, meta = load_npz(FIXTURES / "model_tiny_templ.npz")
    multimer = {**meta["config"], "globals": {**meta["config"]["globals"], "is_multimer": True}}
    with pytest.raises(ConfigError, match="multimer"):
        ModelConfig.from_openfold(multimer)
    with pytest.raises(ConfigError, match="globals"):
        ModelConfig.from_openfold({"model": {}})
