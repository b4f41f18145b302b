"""Weights: the AF2 npz table against the spec, round trips of full-size models, clear errors."""

import argparse
import csv
import math

import numpy as np
import pytest
import torch
from testutil import FIXTURES, load_npz, shared_path

from sparkfold.config import ModelConfig, RuntimeConfig
from sparkfold.weights import (
    UnsupportedPresetError,
    WeightsError,
    af2_npz,
    build_model,
    expected_state_dict_shapes,
    load_model,
    randomize_parameters,
    read_weights,
)
from sparkfold.weights.openfold_pt import rename_v1_keys

TSV_PRESETS = ["model_1_ptm", "model_3", "model_1_multimer_v3", "model_1_multimer_v2"]


def _read_tsv(path):
    with open(path) as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return rows[0], rows[1:]


def _shape(text):
    return tuple(int(x) for x in text.split("x")) if text else ()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The round trips are memory-bound copies; one thread avoids oversubscription on busy CI."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ the table vs the spec
@pytest.mark.parametrize("preset", TSV_PRESETS)
def test_npz_table_reproduces_spec_tsv(preset):
    header, rows = _read_tsv(shared_path("spec", "af2_npz_map", f"af2_npz_map_{preset}.tsv"))
    assert header == ["npz_key", "npz_shape", "openfold_key", "openfold_shape_per_block",
                      "transform", "stacked_blocks", "half_swap"]
    table = af2_npz.build_npz_table(ModelConfig.from_preset(preset))
    ours = [(e.npz_key, "x".join(map(str, e.full_npz_shape)), e.openfold_key,
             "x".join(map(str, e.torch_shape)), e.transform,
             str(e.stacked_blocks) if e.stacked_blocks else "-", "yes" if e.half_swap else "-")
            for e in table]
    assert len(ours) == len(set(ours)) == len(rows)
    assert set(ours) == set(map(tuple, rows))


def test_npz_table_matches_manifest_shapes():
    _, rows = _read_tsv(shared_path("spec", "af2_params_manifest.tsv"))
    for preset in ("model_1_ptm", "model_3_ptm", "model_1_multimer_v3"):
        expected = {r[0]: _shape(r[1]) for r in rows if preset in r[4].split(",")}
        table = af2_npz.build_npz_table(ModelConfig.from_preset(preset))
        assert {e.npz_key: e.full_npz_shape for e in table} == expected, preset


@pytest.mark.parametrize("tsv,presets", [
    ("openfold_state_dict.tsv", ["model_1", "model_1_ptm", "model_3", "model_5_ptm", "finetuning"]),
    ("openfold_multimer_state_dict.tsv", ["model_1_multimer_v3", "model_2_multimer_v2"]),
])
def test_table_covers_openfold_state_dict(tsv, presets):
    _, rows = _read_tsv(shared_path("spec", tsv))
    for preset in presets:
        expected = {r[0]: _shape(r[1]) for r in rows if r[3] == "ALL" or preset in r[3].split(",")}
        assert expected_state_dict_shapes(ModelConfig.from_preset(preset)) == expected, preset


# Reference values: shared/spec/model_config.md, "Parameter counts" table.
PARAM_COUNTS = {"model_1": (5044, 93_229_082), "model_1_ptm": (5046, 93_237_338),
                "model_3": (4915, 92_899_674), "model_3_ptm": (4917, 92_907_930)}


@pytest.mark.parametrize("preset", sorted(PARAM_COUNTS))
def test_model_parameter_counts(preset):
    config = ModelConfig.from_preset(preset)
    model = build_model(config, initialize=False)
    sd = model.state_dict()
    keys, params = PARAM_COUNTS[preset]
    assert len(sd) == keys
    assert sum(v.numel() for v in sd.values()) == params
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected_state_dict_shapes(config)


def test_transforms_invert():
    config = ModelConfig.tiny(templates=True)
    table = af2_npz.build_npz_table(config)
    gen = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=gen) for k, s in expected_state_dict_shapes(config).items()}
    arrays = af2_npz.state_dict_to_npz(sd, table)
    back = af2_npz.npz_to_state_dict(arrays, table)
    assert back.keys() == sd.keys()
    for k, v in sd.items():
        torch.testing.assert_close(back[k], v, rtol=0, atol=0)


def test_half_swap_and_mha_layouts():
    """Spot-check the layout rules on hand-made arrays (mapping.md "Transforms")."""
    table = {e.openfold_key: e for e in af2_npz.build_npz_table(ModelConfig.from_preset("model_1_multimer_v3"))}
    e = table["evoformer.blocks.{i}.pair_stack.tri_mul_in.linear_ab_p.bias"]
    npz = np.arange(256, dtype=np.float32)
    torch.testing.assert_close(e.to_torch(npz)[:128], torch.arange(128, 256, dtype=torch.float32))
    e = table["evoformer.blocks.{i}.msa_att_row.mha.linear_q.weight"]  # [in, H, c] -> [H*c, in]
    npz = np.random.default_rng(0).standard_normal((256, 8, 32)).astype(np.float32)
    t = e.to_torch(npz)
    assert t[3 * 32 + 5, 7] == npz[7, 3, 5]
    e = table["evoformer.blocks.{i}.outer_product_mean.linear_out.weight"]  # [c1, c2, out]
    npz = np.random.default_rng(1).standard_normal((32, 32, 128)).astype(np.float32)
    assert e.to_torch(npz)[9, 4 * 32 + 6] == npz[4, 6, 9]


# ------------------------------------------------------------------ full-size round trips
@pytest.fixture(scope="module")
def full_sd():
    """A seeded random full-size model_1_ptm state dict (every parameter redrawn)."""
    model = build_model(ModelConfig.from_preset("model_1_ptm"), initialize=False)
    randomize_parameters(model, seed=7)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _no_templ_no_tm(sd):
    return {k: v for k, v in sd.items() if not k.startswith(("template_embedder.", "aux_heads.tm."))}


def _assert_same(loaded: dict, expected: dict):
    assert loaded.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(loaded[k].float(), v.float()), k


def test_openfold_pt_round_trip_plain(full_sd, tmp_path):
    path = tmp_path / "finetuning_ptm_1.pt"
    torch.save(full_sd, path)
    model = load_model(path)  # preset inferred: keys say templates + pTM, the name says model_2_ptm
    assert model.config.name == "model_2_ptm" and not model.training
    _assert_same(model.state_dict(), full_sd)


def test_openfold_pt_ema_nested_and_prefixed(full_sd, tmp_path):
    ema = tmp_path / "ema.pt"
    decoy = {"model.input_embedder.linear_tf_m.weight": torch.zeros(1)}
    torch.save({"ema": {"params": full_sd, "decay": 0.999}, "state_dict": decoy, "epoch": 3}, ema)
    kind, sd, _ = read_weights(ema)
    assert kind == "openfold"
    _assert_same(sd, full_sd)
    prefixed = tmp_path / "prefixed.pt"
    torch.save({f"model.{k}": v for k, v in full_sd.items()}, prefixed)
    _, sd, _ = read_weights(prefixed)
    _assert_same(sd, full_sd)


def test_af2_npz_round_trip_model_1_ptm(full_sd, tmp_path):
    config = ModelConfig.from_preset("model_1_ptm")
    arrays = af2_npz.state_dict_to_npz(full_sd, af2_npz.build_npz_table(config))
    assert len(arrays) == 338
    path = tmp_path / "params_model_1_ptm.npz"
    np.savez(path, **arrays)
    model = load_model(path)
    assert model.config.name == "model_1_ptm"
    _assert_same(model.state_dict(), full_sd)


def test_af2_npz_round_trip_no_templates(full_sd, tmp_path):
    sd = _no_templ_no_tm(full_sd)
    config = ModelConfig.from_preset("model_3")
    arrays = af2_npz.state_dict_to_npz(sd, af2_npz.build_npz_table(config))
    assert len(arrays) == 265
    path = tmp_path / "weights.npz"  # no preset in the name: inferred from the keys
    np.savez(path, **arrays)
    model = load_model(path)
    assert model.config.name == "model_3" and model.template_embedder is None
    _assert_same(model.state_dict(), sd)


def test_wrong_preset_names_keys_and_best_fit(full_sd):
    with pytest.raises(WeightsError) as err:
        load_model(_no_templ_no_tm(full_sd), preset="model_1_ptm")
    msg = str(err.value)
    assert "missing" in msg and "template_embedder." in msg and "aux_heads.tm.linear" in msg
    assert "fits preset 'model_3' best" in msg


# ------------------------------------------------------------------ errors (tiny model: fast)
@pytest.fixture(scope="module")
def tiny():
    arrays, _ = load_npz(FIXTURES / "model_tiny_templ.npz")
    sd = {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("param/")}
    return ModelConfig.tiny(templates=True), sd


def test_tiny_fixture_through_npz_mapping(tiny):
    config, sd = tiny
    arrays = af2_npz.state_dict_to_npz(sd, af2_npz.build_npz_table(config))
    model = load_model(arrays, preset=config)
    _assert_same(model.state_dict(), sd)


def test_extra_missing_and_misshaped_keys(tiny):
    config, sd = tiny
    extra = dict(sd, **{"foo.bar": torch.zeros(3)})
    with pytest.raises(WeightsError, match=r"1 unexpected: foo\.bar"):
        load_model(extra, preset=config)
    missing = {k: v for k, v in sd.items() if k != "aux_heads.tm.linear.bias"}
    with pytest.raises(WeightsError, match=r"1 missing: aux_heads\.tm\.linear\.bias"):
        load_model(missing, preset=config)
    shaped = dict(sd, **{"evoformer.linear.bias": torch.zeros(7)})
    with pytest.raises(WeightsError, match=r"evoformer\.linear\.bias: file \(7,\), model \(20,\)"):
        load_model(shaped, preset=config)


def test_npz_extra_and_missing_keys(tiny):
    config, sd = tiny
    arrays = af2_npz.state_dict_to_npz(sd, af2_npz.build_npz_table(config))
    key = af2_npz.NPZ_PREFIX + "distogram_head/half_logits//bias"
    broken = {k: v for k, v in arrays.items() if k != key}
    broken[af2_npz.NPZ_PREFIX + "made_up//weights"] = np.zeros(2, np.float32)
    with pytest.raises(WeightsError) as err:
        load_model(broken, preset=config)
    assert "distogram_head/half_logits//bias" in str(err.value)
    assert "made_up//weights" in str(err.value)


def test_nan_values_rejected(tiny):
    config, sd = tiny
    bad = dict(sd)
    bad["evoformer.linear.bias"] = torch.full_like(sd["evoformer.linear.bias"], float("nan"))
    with pytest.raises(WeightsError, match=r"NaN or inf.*evoformer\.linear\.bias"):
        load_model(bad, preset=config)


def test_truncated_and_corrupt_files(tiny, tmp_path):
    config, sd = tiny
    good = tmp_path / "w.pt"
    torch.save(sd, good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_model(truncated, preset=config)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        load_model(garbage, preset=config)

    npz = tmp_path / "params_model_1_ptm.npz"
    np.savez(npz, **af2_npz.state_dict_to_npz(sd, af2_npz.build_npz_table(config)))
    raw = npz.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_model(cut, preset=config)
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(tmp_path / "nope.npz")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "objects.pt"
    torch.save({"weights": torch.zeros(2), "args": argparse.Namespace(x=1)}, path)
    with pytest.raises(WeightsError, match="refuses to unpickle"):
        load_model(path, preset="model_1")


def test_v1_key_names_are_renamed(tiny):
    config, sd = tiny

    def to_v1(key):
        key = key.replace("pair_stack.tri_", "core.tri_").replace("pair_stack.pair_transition",
                                                                   "core.pair_transition")
        key = key.replace("linear_q_points.linear.", "linear_q_points.").replace(
            "linear_kv_points.linear.", "linear_kv_points.")
        key = key.replace("template_embedder.template_single_embedder", "template_angle_embedder")
        return key.replace("template_embedder.", "")

    v1 = {to_v1(k): v for k, v in sd.items()}
    assert rename_v1_keys(v1).keys() == sd.keys()
    model = load_model(v1, preset=config)
    _assert_same(model.state_dict(), sd)


def test_deepspeed_directory(tiny, tmp_path):
    config, sd = tiny
    ckpt = tmp_path / "ds" / "global_step10"
    ckpt.mkdir(parents=True)
    torch.save({"module": {f"model.{k}": v for k, v in sd.items()}}, ckpt / "mp_rank_00_model_states.pt")
    (tmp_path / "ds" / "latest").write_text("global_step10")
    model = load_model(tmp_path / "ds", preset=config)
    _assert_same(model.state_dict(), sd)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="not a DeepSpeed checkpoint"):
        load_model(empty, preset=config)


def test_random_weights_are_seeded_and_live():
    config = ModelConfig.tiny(templates=False)
    a = load_model("random", preset=config, runtime=RuntimeConfig(seed=3)).state_dict()
    b = load_model("random", preset=config, runtime=RuntimeConfig(seed=3)).state_dict()
    c = load_model("random", preset=config, runtime=RuntimeConfig(seed=4)).state_dict()
    _assert_same(a, b)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert all(bool((v != 0).all()) for v in a.values())
    with pytest.raises(WeightsError, match="needs a preset"):
        load_model("random")


def test_multimer_is_not_implemented():
    with pytest.raises(UnsupportedPresetError, match="Multimer") as err:
        load_model("random", preset="model_1_multimer_v3")
    assert isinstance(err.value, NotImplementedError)


def test_precision_and_device_arguments(tiny):
    config, sd = tiny
    model = load_model(sd, preset=config, precision="bf16", runtime=RuntimeConfig(chunk_size=4))
    assert model.runtime.precision == "bf16" and model.runtime.chunk_size == 4
    assert model.evoformer.linear.weight.dtype == torch.bfloat16
    assert model.aux_heads.plddt.linear_1.weight.dtype == torch.float32
    assert math.isclose(float(model.evoformer.linear.bias.detach()[0]), float(sd["evoformer.linear.bias"][0]),
                        rel_tol=1e-2)
