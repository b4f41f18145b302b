"""The whole model against OpenFold's tiny-model fixtures (templ = model_1_ptm, notempl = model_3_ptm).

Intermediates are captured per recycling pass with forward hooks and compared pass by pass, so
a failure points at the first module and pass that differ (see golden/README.md "Recycling
discontinuity").
"""

import functools

import pytest
import torch
from testutil import FIXTURES, load_npz
from tolerances import MODEL, MODEL_ANGLES, assert_close_scaled

from sparkfold.config import ModelConfig, RuntimeConfig
from sparkfold.weights import load_model

CASES = {"templ": True, "notempl": False}


@functools.cache
def _run(name):
    arrays, _ = load_npz(FIXTURES / f"model_tiny_{name}.npz")
    config = ModelConfig.tiny(templates=CASES[name])
    params = {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("param/")}
    batch = {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("input/")}
    model = load_model(params, preset=config)  # strict loading through the loader
    captured, handles = _capture(model)
    try:
        with torch.no_grad():
            out = model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return name, arrays, model, batch, out, captured


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    return _run(request.param)


def _clone(x):
    return x.detach().clone() if isinstance(x, torch.Tensor) else x


def _capture(model):
    """Forward hooks recording each pass's intermediates under the fixture's names."""
    captured: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def record(name, pieces):
        k = counts.get(name, 0)
        counts[name] = k + 1
        for suffix, value in pieces:
            if value is not None:
                captured[f"inter/{name}/iter{k}{suffix}"] = _clone(value)

    def hook(name, unpack):
        def fn(module, args, output):
            record(name, unpack(output))
        return fn

    def tuple_parts(out):
        return [(f"/{i}", t) for i, t in enumerate(out)]

    hooks = {
        "input_embedder": tuple_parts,
        "recycling_embedder": tuple_parts,
        "template_embedder": lambda o: [("/template_pair_embedding", o.pair),
                                        ("/template_single_embedding", o.single)],
        "extra_msa_embedder": lambda o: [("", o)],
        "extra_msa_stack": lambda o: [("", o)],
        "evoformer": tuple_parts,
        "structure_module": lambda o: [("/positions", o["positions"])],
    }
    handles = []
    # Without autograd the model has the recycling embedder add its pair update into z
    # (``add_into``): the update is the output less z as it was before the call.
    before: dict[str, torch.Tensor | None] = {}

    def recycling_pre(module, args, kwargs):
        target = kwargs.get("add_into")
        before["z"] = None if target is None else target.detach().clone()

    def recycling_post(module, args, kwargs, output):
        m_update, z = output
        record("recycling_embedder", tuple_parts((m_update, z if before["z"] is None else z - before["z"])))

    handles.append(model.recycling_embedder.register_forward_pre_hook(recycling_pre, with_kwargs=True))
    handles.append(model.recycling_embedder.register_forward_hook(recycling_post, with_kwargs=True))
    del hooks["recycling_embedder"]
    for name, unpack in hooks.items():
        module = getattr(model, name, None)
        if module is not None:
            fixture_name = "structure_module_positions" if name == "structure_module" else name
            handles.append(module.register_forward_hook(hook(fixture_name, unpack)))
    return captured, handles


def _lookup(out, name):
    for part in name.split("/"):
        out = out[part]
    return out


def test_outputs(case):
    _, arrays, _, _, out, _ = case
    expected = {k[7:]: v for k, v in arrays.items() if k.startswith("output/")}
    missing = [k for k in expected if k.split("/")[0] not in out]
    assert not missing, f"outputs missing: {missing}"
    assert set(out["sm"]) == {k[3:] for k in expected if k.startswith("sm/")}
    for name, value in expected.items():
        level = MODEL_ANGLES if name in ("sm/angles", "sm/unnormalized_angles") else MODEL
        assert_close_scaled(_lookup(out, name), value, level, name=name)
    assert int(out["num_recycles"]) == 4


def test_intermediates_per_pass(case):
    _, arrays, _, _, _, captured = case
    expected = {k: v for k, v in arrays.items() if k.startswith("inter/")}
    assert set(expected) <= set(captured), sorted(set(expected) - set(captured))
    # Pass by pass, module by module, so the first difference is reported.
    order = ["input_embedder", "recycling_embedder", "template_embedder", "extra_msa_embedder",
             "extra_msa_stack", "evoformer", "structure_module_positions"]
    for k in range(4):
        for module in order:
            for key in sorted(x for x in expected if x.startswith(f"inter/{module}/iter{k}")):
                assert_close_scaled(captured[key], expected[key], MODEL, name=key)


def test_msa_output_cut_back_to_clusters(case):
    name, arrays, _, batch, out, _ = case
    n_seq = batch["msa_feat"].shape[-4]
    assert out["msa"].shape[-3] == n_seq
    if name == "templ":  # template rows were appended inside the model
        assert arrays["inter/evoformer/iter0/0"].shape[0] == n_seq + batch["template_aatype"].shape[0]


def test_passes_follow_batch_recycle_axis(case):
    _, _, model, batch, _, _ = case
    two = {k: v[..., :2] for k, v in batch.items()}
    with torch.no_grad():
        out = model(two)
    assert int(out["num_recycles"]) == 2


def test_templates_skipped_without_template_features():
    _, _, model, batch, _, _ = _run("templ")
    no_templ = {k: v[..., :1] for k, v in batch.items() if not k.startswith("template_")}
    calls = []
    handle = model.template_embedder.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            out = model(no_templ)
    finally:
        handle.remove()
    assert not calls
    assert torch.isfinite(out["final_atom_positions"]).all()


def test_chunked_equals_unchunked(case):
    _, _, model, batch, _, _ = case
    one = {k: v[..., :1] for k, v in batch.items()}
    with torch.no_grad():
        ref = model(one)
        model.set_runtime(RuntimeConfig(chunk_size=2))
        try:
            chunked = model(one)
        finally:
            model.set_runtime(RuntimeConfig())
    for key in ("pair", "msa", "final_atom_positions", "plddt"):
        assert_close_scaled(chunked[key], ref[key], MODEL, name=key)


def test_fp32_forward_disables_tf32_and_restores_setting(case):
    _, _, model, batch, _, _ = case
    one = {k: v[..., :1] for k, v in batch.items()}
    seen = []
    handle = model.evoformer.register_forward_hook(
        lambda *a: seen.append(torch.get_float32_matmul_precision()))
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        with torch.no_grad():
            model(one)
    finally:
        handle.remove()
        after = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(before)
    assert seen == ["highest"] and after == "high"


def test_bf16_runs_with_fp32_structure_module():
    config = ModelConfig.tiny(templates=False)
    arrays, _ = load_npz(FIXTURES / "model_tiny_notempl.npz")
    params = {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("param/")}
    batch = {k[6:]: torch.tensor(v)[..., :1] for k, v in arrays.items() if k.startswith("input/")}
    model = load_model(params, preset=config, precision="bf16")
    assert model.evoformer.linear.weight.dtype == torch.bfloat16
    assert model.structure_module.linear_in.weight.dtype == torch.float32
    with torch.no_grad():
        out = model(batch)
    assert out["pair"].dtype == torch.bfloat16
    assert out["final_atom_positions"].dtype == torch.float32
    assert out["plddt"].dtype == torch.float32
    assert torch.isfinite(out["final_atom_positions"]).all()


def test_early_stop_tolerance():
    config = ModelConfig.tiny(templates=False)
    arrays, _ = load_npz(FIXTURES / "model_tiny_notempl.npz")
    params = {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("param/")}
    batch = {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("input/")}
    # Pass 0 is compared with all-zero positions; a huge tolerance is met there, so one final
    # pass follows (2 passes). Tolerance 0 is never met (the RMS includes sqrt(eps)).
    model = load_model(params, preset=config, runtime=RuntimeConfig(recycle_early_stop_tolerance=1e6))
    with torch.no_grad():
        assert int(model(batch)["num_recycles"]) == 2
    model.set_runtime(RuntimeConfig(recycle_early_stop_tolerance=0.0))
    with torch.no_grad():
        assert int(model(batch)["num_recycles"]) == 4
    model.set_runtime(RuntimeConfig(recycle_early_stop_tolerance=-1.0))
    with torch.no_grad():
        assert int(model(batch)["num_recycles"]) == 4


def test_multimer_preset_is_rejected_clearly():
    from sparkfold.model.alphafold import AlphaFold

    with pytest.raises(NotImplementedError, match="Multimer"):
        AlphaFold(ModelConfig.from_preset("model_1_multimer_v3"))


def test_tf32_only_inside_forward():
    from sparkfold.model.alphafold import precision_context

    before = torch.get_float32_matmul_precision()
    with precision_context("tf32"):
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.get_float32_matmul_precision() == before


def test_batch_without_recycle_axis_is_rejected():
    _, _, model, batch, _, _ = _run("notempl")
    flat = {k: v[..., 0] for k, v in batch.items()}
    with pytest.raises(ValueError, match="recycling pass as its last axis"):
        model(flat)


def test_openfold_config_dict_builds_the_same_model():
    """``load_model(..., preset=<OpenFold config dict>)`` reproduces the fixture too."""
    arrays, meta = load_npz(FIXTURES / "model_tiny_notempl.npz")
    params = {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("param/")}
    batch = {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("input/")}
    model = load_model(params, preset=meta["config"])
    with torch.no_grad():
        out = model(batch)
    assert_close_scaled(out["final_atom_positions"], arrays["output/final_atom_positions"],
                        level=MODEL, name="final_atom_positions")
    assert_close_scaled(out["plddt"], arrays["output/plddt"], level=MODEL, name="plddt")
