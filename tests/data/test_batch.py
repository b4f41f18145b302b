"""make_batch against OpenFold's processed batches (../shared/golden/pipeline/processed)."""

import functools
import hashlib
import json

import numpy as np
import pytest
import torch
from testutil import load_npz, shared_path
from tolerances import GEOMETRY_FROM_COORDS, PIPELINE_FLOAT, assert_close_scaled

from sparkfold.config import DataConfig, ModelConfig
from sparkfold.data.batch import FeatureInputError, ReplaySampler, TorchSampler, make_batch

RAW_FILES = {"6KWC_1": "6KWC_1_no_templates", "short_with_templates": "short_with_templates",
             "short_single_sequence": "short_single_sequence"}
GEOMETRY_KEYS = {"template_torsion_angles_sin_cos", "template_alt_torsion_angles_sin_cos",
                 "template_pseudo_beta"}


@functools.cache
def _raw(case):
    arrays, _ = load_npz(shared_path("golden", "pipeline", "raw", f"{RAW_FILES[case]}.npz"))
    return arrays


@functools.cache
def _processed(name):
    arrays, _ = load_npz(shared_path("golden", "pipeline", "processed", f"{name}.npz"))
    manifest = json.loads(shared_path("golden", "pipeline", "manifest.json").read_text())
    return arrays, manifest["files"][f"processed/{name}.npz"]["meta"]


def _replay(name, preset, num_recycles=3):
    arrays, meta = _processed(name)
    return make_batch(_raw(meta["case"]), preset=preset, num_recycles=num_recycles,
                      sampler=ReplaySampler(arrays, prefix="draws/"),
                      data_config={"masked_msa_replace_fraction":
                                   meta["masked_msa_replace_fraction"]})


def _assert_feature(key, actual, expected):
    expected = torch.as_tensor(np.asarray(expected))
    assert actual.dtype == expected.dtype, f"{key}: dtype {actual.dtype} != {expected.dtype}"
    assert tuple(actual.shape) == tuple(expected.shape), \
        f"{key}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if torch.equal(actual, expected):  # the common case; skips the slower tolerance check
        return
    if key in GEOMETRY_KEYS:
        assert_close_scaled(actual, expected, level=GEOMETRY_FROM_COORDS, name=key, scaled=False)
    elif actual.is_floating_point() and not key.endswith("mask") and key != "target_feat":
        assert_close_scaled(actual, expected, level=PIPELINE_FLOAT, name=key, scaled=False)
    else:  # ints, masks, one-hot features: exact
        assert torch.equal(actual, expected), f"{key}: values differ"


def _assert_batch(batch, arrays, prefix):
    expected = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    assert set(batch) == set(expected), f"keys differ: {set(batch) ^ set(expected)}"
    for key, value in expected.items():
        _assert_feature(key, batch[key], value)


# ------------------------------------------------------------------ replaying OpenFold's draws


@pytest.mark.parametrize("name, preset", [
    ("short_with_templates__model_1_ptm__default", "model_1_ptm"),
    ("short_single_sequence__model_3_ptm__default", "model_3_ptm"),
    ("6KWC_1__model_1_ptm__replace0", "model_1_ptm"),
])
def test_replayed_draws_reproduce_every_key(name, preset):
    arrays, _ = _processed(name)
    _assert_batch(_replay(name, preset), arrays, "batch/")


def test_6kwc_default_all_iterations():
    name = "6KWC_1__model_1_ptm__default"
    arrays, meta = _processed(name)
    batch = _replay(name, "model_1_ptm")
    _assert_batch({k: v[..., 0] for k, v in batch.items()}, arrays, "batch_it0/")
    checksums = meta["per_iteration_checksums"]
    assert set(checksums) == set(batch)
    for key, per_iteration in checksums.items():
        for i, expected in enumerate(per_iteration):
            value = batch[key][..., i].contiguous()
            if value.is_floating_point():
                np.testing.assert_allclose(value.double().sum().item(), expected["sum_f64"],
                                           rtol=1e-6, atol=1e-9, err_msg=f"{key} pass {i}")
            else:
                digest = hashlib.sha256(value.numpy().tobytes()).hexdigest()[:16]
                assert digest == expected["sha256_16"], f"{key} pass {i}: bytes differ"


def test_model_3_is_model_1_without_template_keys():
    """OpenFold's model_3_ptm run drew the same choices; its batch is model_1's minus templates."""
    model_1, _ = _processed("6KWC_1__model_1_ptm__replace0")
    model_3, meta = _processed("6KWC_1__model_3_ptm__replace0")
    assert meta["identical_to"] == "processed/6KWC_1__model_1_ptm__replace0.npz"
    draws_1 = {k: v for k, v in model_1.items() if k.startswith("draws/")}
    assert all(np.array_equal(v, model_3[k]) for k, v in draws_1.items())
    batch = _replay("6KWC_1__model_3_ptm__replace0", "model_3_ptm", num_recycles=0)  # pass 0
    expected = {k: v[..., :1] for k, v in model_1.items()
                if k.startswith("batch/") and not k.startswith("batch/template_")}
    _assert_batch(batch, expected, "batch/")


# ------------------------------------------------------------------ the default sampler


def test_seed_reproduces_an_openfold_run_with_the_same_torch_seed():
    arrays, meta = _processed("short_with_templates__model_1_ptm__default")
    assert meta["seeds"]["torch.manual_seed"] == 1234
    state = torch.get_rng_state()
    batch = make_batch(_raw("short_with_templates"), preset="model_1_ptm", seed=1234)
    assert torch.equal(torch.get_rng_state(), state), "make_batch touched the global torch RNG"
    _assert_batch(batch, arrays, "batch/")


def test_seeded_batches_are_reproducible_and_depend_on_the_seed():
    raw = _raw("short_with_templates")
    a = make_batch(raw, preset="model_1_ptm", seed=7, num_recycles=1)
    b = make_batch(raw, preset="model_1_ptm", seed=7, num_recycles=1)
    c = make_batch(raw, preset="model_1_ptm", seed=8, num_recycles=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    for key in ("msa_feat", "bert_mask", "true_msa", "extra_msa"):
        assert not torch.equal(a[key], c[key]), key
    for key in ("aatype", "target_feat", "template_aatype", "template_pseudo_beta"):
        assert torch.equal(a[key], c[key]), key
    # Each pass re-samples the MSA.
    assert not torch.equal(a["true_msa"][..., 0], a["true_msa"][..., 1])
    # An explicit sampler wins over seed.
    d = make_batch(raw, preset="model_1_ptm", seed=8, num_recycles=1, sampler=TorchSampler(7))
    assert torch.equal(a["msa_feat"], d["msa_feat"])


def test_without_resampling_every_pass_is_the_same():
    batch = make_batch(_raw("short_with_templates"), preset="model_3_ptm", num_recycles=2,
                       data_config={"resample_msa_in_recycling": False})
    assert torch.equal(batch["msa_feat"][..., 0], batch["msa_feat"][..., 2])


# ------------------------------------------------------------------ shapes, dtypes, settings


def _features_md_table(n, s, e, t, with_templates):
    """features.md §2, per pass (the recycling axis is appended last)."""
    i64, f32 = torch.int64, torch.float32
    table = {
        "aatype": (i64, (n,)), "residue_index": (i64, (n,)), "seq_length": (i64, ()),
        "seq_mask": (f32, (n,)), "target_feat": (f32, (n, 22)), "msa_feat": (f32, (s, n, 49)),
        "msa_mask": (f32, (s, n)), "msa_row_mask": (f32, (s,)), "bert_mask": (f32, (s, n)),
        "true_msa": (i64, (s, n)), "extra_msa": (i64, (e, n)), "extra_msa_mask": (f32, (e, n)),
        "extra_msa_row_mask": (f32, (e,)), "extra_has_deletion": (f32, (e, n)),
        "extra_deletion_value": (f32, (e, n)), "atom14_atom_exists": (f32, (n, 14)),
        "atom37_atom_exists": (f32, (n, 37)), "residx_atom14_to_atom37": (i64, (n, 14)),
        "residx_atom37_to_atom14": (i64, (n, 37)), "use_clamped_fape": (f32, ()),
    }
    if with_templates:
        table.update({
            "template_aatype": (i64, (t, n)),
            "template_all_atom_positions": (f32, (t, n, 37, 3)),
            "template_all_atom_mask": (f32, (t, n, 37)), "template_mask": (f32, (t,)),
            "template_pseudo_beta": (f32, (t, n, 3)), "template_pseudo_beta_mask": (f32, (t, n)),
            "template_torsion_angles_sin_cos": (f32, (t, n, 7, 2)),
            "template_alt_torsion_angles_sin_cos": (f32, (t, n, 7, 2)),
            "template_torsion_angles_mask": (f32, (t, n, 7)), "template_sum_probs": (f32, (t, 1)),
        })
    return table


@pytest.mark.parametrize("preset, with_templates", [("model_1_ptm", True), ("model_3_ptm", False)])
def test_shapes_and_dtypes_follow_features_md(preset, with_templates):
    num_recycles = 1
    batch = make_batch(_raw("short_with_templates"), preset=preset, num_recycles=num_recycles)
    table = _features_md_table(73, 512, 5120, 4, with_templates)
    assert set(batch) == set(table)
    for key, (dtype, shape) in table.items():
        assert batch[key].dtype == dtype, key
        assert tuple(batch[key].shape) == shape + (num_recycles + 1,), key
    assert batch["seq_length"].tolist() == [73] * 2
    assert batch["use_clamped_fape"].tolist() == [0.0] * 2
    # 512 of the 1136 rows are clusters; the other 624 are all kept as extra rows.
    assert batch["msa_row_mask"].sum(0).tolist() == [512.0] * 2
    assert batch["extra_msa_row_mask"].sum(0).tolist() == [624.0] * 2


def test_data_config_overrides():
    raw = _raw("short_with_templates")
    af2 = make_batch(raw, preset="model_1_ptm", num_recycles=0,
                     data_config={"reduce_msa_clusters_by_max_templates": True})
    assert tuple(af2["msa_feat"].shape) == (508, 73, 49, 1)
    small = make_batch(raw, preset="model_1_ptm", num_recycles=0,
                       data_config=DataConfig(max_msa_clusters=16, max_extra_msa=32,
                                              max_templates=2))
    assert tuple(small["extra_msa"].shape) == (32, 73, 1)
    assert small["template_mask"][:, 0].tolist() == [1.0, 1.0]  # first two of the four hits
    config = ModelConfig.from_preset("model_3_ptm")
    assert not any(k.startswith("template") for k in make_batch(raw, preset=config, num_recycles=0))
    with pytest.raises(FeatureInputError, match="max_clusters"):
        make_batch(raw, preset="model_1_ptm", data_config={"max_clusters": 3})


def test_templates_enabled_but_absent_gives_an_empty_padded_set():
    raw = {k: v for k, v in _raw("short_single_sequence").items() if not k.startswith("template")}
    batch = make_batch(raw, preset="model_1_ptm", num_recycles=0)
    assert tuple(batch["template_aatype"].shape) == (4, 73, 1)
    assert batch["template_mask"].sum() == 0 and batch["template_aatype"].dtype == torch.int64


def test_accepts_torch_tensors():
    raw = _raw("short_single_sequence")
    as_torch = {k: torch.from_numpy(v) for k, v in raw.items() if v.dtype.kind in "biuf"}
    a = make_batch(raw, preset="model_3_ptm", num_recycles=0, seed=3)
    b = make_batch(as_torch, preset="model_3_ptm", num_recycles=0, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("msa"), "msa"),
    (lambda r: r.update(msa=r["msa"][:, :-1]), "msa"),
    (lambda r: r.update(msa=r["msa"] + 30), "0..21"),
    (lambda r: r.update(seq_length=r["seq_length"] + 1), "seq_length"),
    (lambda r: r.pop("template_sum_probs"), "template_sum_probs"),
    (lambda r: r.update(template_aatype=r["template_aatype"][:, :5]), "template_aatype"),
])
def test_bad_raw_features_are_named(change, message):
    raw = dict(_raw("short_with_templates"))
    change(raw)
    with pytest.raises(FeatureInputError, match=message):
        make_batch(raw, preset="model_1_ptm", num_recycles=0)


def test_bad_arguments():
    raw = _raw("short_single_sequence")
    with pytest.raises(FeatureInputError, match="num_recycles"):
        make_batch(raw, preset="model_3_ptm", num_recycles=-1)
    with pytest.raises(FeatureInputError, match="multimer"):
        make_batch(raw, preset="model_1_multimer_v3")
