"""Each OpenFold data transform, one at a time, against tests/fixtures/pipeline/transforms/*.npz."""

import functools
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from testutil import FIXTURES, load_npz
from tolerances import GEOMETRY_FROM_COORDS, PIPELINE_FLOAT, assert_close_scaled

from sparkfold.config import DataConfig
from sparkfold.data import transforms as T
from sparkfold.data.batch import ReplaySampler, TorchSampler

TRANSFORMS = FIXTURES / "pipeline" / "transforms"
MANIFEST = json.loads((FIXTURES / "pipeline" / "manifest.json").read_text())["files"]

#: Keys computed from coordinates (GEOM's allatom), compared at the README's 1e-5.
GEOMETRY_KEYS = {"template_torsion_angles_sin_cos", "template_alt_torsion_angles_sin_cos",
                 "template_pseudo_beta"}


@functools.cache
def _fixture(name):
    arrays, _ = load_npz(TRANSFORMS / f"{name}.npz")
    meta = MANIFEST[f"transforms/{name}.npz"]["meta"]
    return arrays, meta


def _group(arrays, prefix):
    return {k[len(prefix):]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(prefix)}


def _assert_feature(name, actual, expected):
    expected = torch.as_tensor(expected)
    key = name.split(":")[-1]
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    assert tuple(actual.shape) == tuple(expected.shape), f"{name}: shape {tuple(actual.shape)}"
    if torch.equal(actual, expected):
        return
    if key in GEOMETRY_KEYS:
        assert_close_scaled(actual, expected, level=GEOMETRY_FROM_COORDS, name=name, scaled=False)
    elif actual.is_floating_point():
        assert_close_scaled(actual, expected, level=PIPELINE_FLOAT, name=name, scaled=False)
    else:
        assert torch.equal(actual, expected), f"{name}: values differ"


def _check_step(arrays, step, before, after):
    """``after`` changes exactly the keys the fixture lists for ``step`` (values as stored)."""
    prefix = f"step{step['step']:02d}/"
    expected = _group(arrays, prefix)
    changed = {k for k in after if k not in before or after[k] is not before[k]}
    listed = set(step["changed_or_added"])
    assert changed <= listed, f"{step['transform']}: unexpected keys {changed - listed}"
    assert set(before) - set(after) == set(step["removed"])
    for key in listed:
        _assert_feature(f"{step['transform']}:{key}", after[key], expected[key])


def _state_before(arrays, meta, index):
    """Fixture state entering step ``index``: the input with every earlier step's stored output."""
    state = _group(arrays, "input/")
    for step in meta["steps"][:index]:
        state.update(_group(arrays, f"step{step['step']:02d}/"))
        for key in step["removed"]:
            state.pop(key)
    return state


# ------------------------------------------------------------------------------ non-ensembled

NONENSEMBLED = {
    "cast_to_64bit_ints": T.cast_to_64bit_ints,
    "correct_msa_restypes": T.correct_msa_restypes,
    "squeeze_features": T.squeeze_features,
    "randomly_replace_msa_with_unknown(0.0)": lambda f: dict(f),
    "make_seq_mask": T.make_seq_mask,
    "make_msa_mask": T.make_msa_mask,
    "make_hhblits_profile": T.make_hhblits_profile,
    "fix_templates_aatype": T.fix_templates_aatype,
    "make_template_mask": T.make_template_mask,
    "make_pseudo_beta('template_')": T.make_template_pseudo_beta,
    "atom37_to_torsion_angles('template_')": T.make_template_torsion_angles,
    "make_atom14_masks": T.make_atom14_masks,
}


@pytest.mark.parametrize("index", range(len(NONENSEMBLED)))
def test_nonensembled_step(index):
    arrays, meta = _fixture("nonensembled_short_with_templates")
    step = meta["steps"][index]
    before = _state_before(arrays, meta, index)
    after = NONENSEMBLED[step["transform"]](before)
    _check_step(arrays, step, before, after)


def test_nonensembled_transforms_composite():
    arrays, meta = _fixture("nonensembled_short_with_templates")
    final = _state_before(arrays, meta, len(meta["steps"]))
    out = T.nonensembled_transforms(_group(arrays, "input/"), use_templates=True)
    assert set(out) == set(final)
    for key in final:
        _assert_feature(key, out[key], final[key])


def test_nonensembled_without_templates_drops_nothing_else():
    arrays, _ = _fixture("nonensembled_short_with_templates")
    features = {k: v for k, v in _group(arrays, "input/").items() if not k.startswith("template")}
    out = T.nonensembled_transforms(features, use_templates=False)
    assert not any(k.startswith("template") for k in out)
    assert {"seq_mask", "msa_mask", "hhblits_profile", "atom14_atom_exists"} <= set(out)


def test_transforms_do_not_mutate_their_input():
    arrays, _ = _fixture("nonensembled_short_with_templates")
    features = _group(arrays, "input/")
    snapshot = {k: v.clone() for k, v in features.items()}
    T.nonensembled_transforms(features, use_templates=True)
    assert set(features) == set(snapshot)
    assert all(torch.equal(features[k], snapshot[k]) for k in snapshot)


def test_correct_msa_restypes_all_codes():
    arrays, _ = _fixture("correct_msa_restypes_all_codes")
    out = T.correct_msa_restypes({"msa": torch.from_numpy(arrays["input/msa"])})
    _assert_feature("msa", out["msa"], arrays["output/msa"])


def test_make_atom14_masks_all_restypes():
    arrays, _ = _fixture("make_atom14_masks_all_restypes")
    out = T.make_atom14_masks({"aatype": torch.from_numpy(arrays["input/aatype"])})
    for key, expected in _group(arrays, "output/").items():
        _assert_feature(key, out[key], expected)


def test_fix_templates_aatype_empty_set():
    out = T.fix_templates_aatype({"template_aatype": torch.zeros(0, 7, 22)})
    assert out["template_aatype"].dtype == torch.int64
    assert tuple(out["template_aatype"].shape) == (0, 7)


# ------------------------------------------------------------------------------ ensembled


def _ensembled_steps(sampler):
    return {
        "sample_msa": lambda f: T.sample_msa(f, 12, sampler=sampler),
        "make_masked_msa": lambda f: T.make_masked_msa(
            f, replace_fraction=0.15, uniform_prob=0.1, profile_prob=0.1, same_prob=0.1,
            sampler=sampler),
        "nearest_neighbor_clusters": T.nearest_neighbor_clusters,
        "summarize_clusters": T.summarize_clusters,
        "crop_extra_msa": lambda f: T.crop_extra_msa(f, 20, sampler=sampler),
        "make_msa_feat": T.make_msa_feat,
        "select_feat": T.select_feat,
        "make_fixed_size": lambda f: T.make_fixed_size(
            f, msa_cluster_size=16, extra_msa_size=24, num_res=80, num_templates=6),
    }


def _injected_sampler(arrays):
    return ReplaySampler({f"it0/{k}": v for k, v in _group(arrays, "injected/").items()})


@pytest.mark.parametrize("index", range(8))
def test_ensembled_step(index):
    arrays, meta = _fixture("ensembled_steps_short_40rows")
    step = meta["steps"][index]
    name = step["transform"].split("(")[0]
    before = _state_before(arrays, meta, index)
    after = _ensembled_steps(_injected_sampler(arrays))[name](before)
    _check_step(arrays, step, before, after)


def test_ensembled_steps_chained_match_the_final_state():
    arrays, meta = _fixture("ensembled_steps_short_40rows")
    features = _group(arrays, "input/")
    for step in _ensembled_steps(_injected_sampler(arrays)).values():
        features = step(features)
    final = _state_before(arrays, meta, len(meta["steps"]))
    assert set(features) == set(final)
    for key in final:
        _assert_feature(key, features[key], final[key])


def test_ensembled_transforms_and_pad_and_stack_agree_with_make_fixed_size():
    arrays, meta = _fixture("ensembled_steps_short_40rows")
    features = _group(arrays, "input/")
    data = DataConfig(max_msa_clusters=12, max_extra_msa=20, max_templates=6)
    passes = [T.ensembled_transforms(features, data, sampler=TorchSampler(seed),
                                     iteration=0, crop_generator=torch.Generator(),
                                     fixed_size=False) for seed in (3, 4)]
    stacked = T.pad_and_stack(passes, msa_cluster_size=16, extra_msa_size=24, num_res=80,
                              num_templates=6)
    for key, value in stacked.items():
        padded = [T.make_fixed_size(p, msa_cluster_size=16, extra_msa_size=24, num_res=80,
                                    num_templates=6)[key] for p in passes]
        assert torch.equal(value, torch.stack(padded, dim=-1)), key
    # Same draws as the injected fixture run -> same final state, padded to the preset sizes.
    replayed = T.ensembled_transforms(features, data, sampler=_injected_sampler(arrays),
                                      iteration=0, crop_generator=torch.Generator())
    selected = _state_before(arrays, meta, 7)  # after select_feat, before padding
    for key in ("msa_feat", "true_msa", "bert_mask", "extra_msa", "target_feat"):
        _assert_feature(key, replayed[key], selected[key])
    assert replayed["template_mask"].tolist() == [1.0] * 4 + [0.0] * 2


def test_random_crop_to_size():
    arrays, meta = _fixture("random_crop_to_size")
    generator = torch.Generator().manual_seed(meta["seed"])
    out = T.random_crop_to_size(_group(arrays, "input/"), 40, 2, generator=generator,
                                subsample_templates=True)
    expected = _group(arrays, "output/")
    assert set(out) == set(expected)
    for key, value in expected.items():
        _assert_feature(key, out[key], value)
    # The generator made exactly the four recorded draws, in order.
    replay = torch.Generator().manual_seed(meta["seed"])
    draws = [torch.randint(0, 5, (1,), generator=replay), torch.randperm(4, generator=replay),
             torch.randint(0, 34, (1,), generator=replay)]
    draws.append(torch.randint(0, 33 - int(draws[2][0]) + 1, (1,), generator=replay))
    for draw, name in zip(draws, ("draw0_randint", "draw1_randperm", "draw2_randint",
                                  "draw3_randint")):
        assert draw.tolist() == arrays[f"draws/{name}"].tolist(), name


def test_random_crop_full_length_only_truncates_templates():
    arrays, _ = _fixture("random_crop_to_size")
    features = _group(arrays, "input/")
    out = T.random_crop_to_size(features, 73, 3, generator=torch.Generator())
    assert out["template_aatype"].shape[0] == 3
    assert torch.equal(out["template_aatype"], features["template_aatype"][:3])
    assert torch.equal(out["msa_feat"], features["msa_feat"])
    assert torch.equal(out["aatype"], features["aatype"])


def test_make_fixed_size_rejects_oversized_and_unknown_features():
    with pytest.raises(ValueError, match="exceeds"):
        T.make_fixed_size({"msa_mask": torch.ones(5, 3)}, msa_cluster_size=4, extra_msa_size=1,
                          num_res=3, num_templates=1)
    with pytest.raises(KeyError, match="hhblits_profile"):
        T.make_fixed_size({"hhblits_profile": torch.ones(3, 22)}, msa_cluster_size=4,
                          extra_msa_size=1, num_res=3, num_templates=1)


def test_single_sequence_pass_has_empty_extra_msa():
    arrays, _ = _fixture("ensembled_steps_short_40rows")
    features = _group(arrays, "input/")
    for key in ("msa", "deletion_matrix", "msa_mask", "msa_row_mask"):
        features[key] = features[key][:1]
    out = T.ensembled_transforms(features, DataConfig(max_msa_clusters=8, max_extra_msa=4),
                                 sampler=TorchSampler(0), iteration=0,
                                 crop_generator=torch.Generator())
    assert out["extra_msa_mask"].sum() == 0 and out["msa_row_mask"].tolist() == [1.0] + [0.0] * 7
    # The only cluster is its own profile: one-hot of the (possibly masked) query.
    torch.testing.assert_close(out["msa_feat"][0, :, 25:48], out["msa_feat"][0, :, :23],
                               rtol=0, atol=2e-6)


# ------------------------------------------------------------------------------ properties


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(0, 7), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_nearest_neighbor_clusters_matches_brute_force(num_seq, num_extra, num_res, seed):
    g = torch.Generator().manual_seed(seed)
    msa = torch.randint(0, 23, (num_seq, num_res), generator=g)
    extra = torch.randint(0, 22, (num_extra, num_res), generator=g)
    msa_mask = (torch.rand(num_seq, num_res, generator=g) < 0.8).float()
    extra_mask = (torch.rand(num_extra, num_res, generator=g) < 0.8).float()
    out = T.nearest_neighbor_clusters(
        {"msa": msa, "extra_msa": extra, "msa_mask": msa_mask, "extra_msa_mask": extra_mask})
    for e in range(num_extra):
        scores = [sum(int(extra[e, r] == msa[s, r] and msa[s, r] <= 20
                          and msa_mask[s, r] > 0 and extra_mask[e, r] > 0)
                      for r in range(num_res)) for s in range(num_seq)]
        assert int(out["extra_cluster_assignment"][e]) == scores.index(max(scores))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 5), st.integers(0, 6), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_summarize_clusters_matches_brute_force(num_seq, num_extra, num_res, seed):
    g = torch.Generator().manual_seed(seed)
    features = {
        "msa": torch.randint(0, 23, (num_seq, num_res), generator=g),
        "msa_mask": torch.ones(num_seq, num_res),
        "deletion_matrix": torch.randint(0, 4, (num_seq, num_res), generator=g).float(),
        "extra_msa": torch.randint(0, 22, (num_extra, num_res), generator=g),
        "extra_msa_mask": (torch.rand(num_extra, num_res, generator=g) < 0.7).float(),
        "extra_deletion_matrix": torch.randint(0, 4, (num_extra, num_res), generator=g).float(),
        "extra_cluster_assignment": torch.randint(0, num_seq, (num_extra,), generator=g),
    }
    out = T.summarize_clusters(features)
    for s in range(num_seq):
        for r in range(num_res):
            members = [e for e in range(num_extra) if features["extra_cluster_assignment"][e] == s]
            count = 1e-6 + 1.0 + sum(float(features["extra_msa_mask"][e, r]) for e in members)
            profile = np.zeros(23)
            profile[int(features["msa"][s, r])] += 1
            deletions = float(features["deletion_matrix"][s, r])
            for e in members:
                weight = float(features["extra_msa_mask"][e, r])
                profile[int(features["extra_msa"][e, r])] += weight
                deletions += weight * float(features["extra_deletion_matrix"][e, r])
            np.testing.assert_allclose(out["cluster_profile"][s, r].numpy(), profile / count,
                                       rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(float(out["cluster_deletion_mean"][s, r]),
                                       deletions / count, rtol=1e-6)


def test_masked_msa_probabilities_and_replacement():
    msa = torch.tensor([[0, 21, 5], [3, 3, 20]])
    profile = torch.full((3, 22), 1.0 / 22)
    seen = {}

    class Recorder(TorchSampler):
        def bert_categorical(self, iteration, probs, mask):
            seen["probs"] = probs
            return super().bert_categorical(iteration, probs, mask)

    out = T.make_masked_msa({"msa": msa, "hhblits_profile": profile}, replace_fraction=1.0,
                            uniform_prob=0.1, profile_prob=0.1, same_prob=0.1,
                            sampler=Recorder(0))
    probs = seen["probs"]
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3))
    torch.testing.assert_close(probs[0, 0, 0], torch.tensor(0.005 + 0.1 / 22 + 0.1))
    torch.testing.assert_close(probs[0, 1, 22], torch.tensor(0.7))
    assert probs[0, 1, 20] < 1e-2 and out["bert_mask"].sum() == 6
    assert torch.equal(out["true_msa"], msa)
    assert out["msa"].min() >= 0 and out["msa"].max() <= 22


def test_torch_sampler_is_reproducible_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = TorchSampler(5), TorchSampler(5), TorchSampler(6)
    for s in (a, b, c):
        s.start(4, 3)
    pa, pb, pc = (s.msa_permutation(0, 50) for s in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert sorted(pa.tolist()) == list(range(50))
    assert torch.equal(torch.get_rng_state(), state)


def test_replay_sampler_reports_missing_and_mismatched_draws():
    sampler = ReplaySampler({"it0/sample_msa_randperm": np.arange(3)})
    assert sampler.msa_permutation(0, 3).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="expected"):
        sampler.msa_permutation(0, 4)
    with pytest.raises(KeyError, match="it1/sample_msa_randperm"):
        sampler.msa_permutation(1, 3)
    with pytest.raises(ValueError, match="prefix"):
        ReplaySampler({"batch/aatype": np.zeros(3)}, prefix="draws/")
