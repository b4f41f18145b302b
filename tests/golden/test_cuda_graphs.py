"""Trunk passes as recorded CUDA graphs give the eager model's outputs (GPU), and are off on CPU."""

import pytest
import torch
from testutil import FIXTURES, load_npz
from tolerances import MODEL, assert_close_scaled

from sparkfold.config import ConfigError, ModelConfig, RuntimeConfig
from sparkfold.weights import load_model


def _tiny(device: str, precision: str, batch_device: str | None = None, **runtime):
    arrays, _ = load_npz(FIXTURES / "model_tiny_notempl.npz")
    params = {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("param/")}
    batch = {k[6:]: torch.tensor(v).to(batch_device or device)
             for k, v in arrays.items() if k.startswith("input/")}
    rt = RuntimeConfig(device=device, precision=precision, **runtime)
    model = load_model(params, preset=ModelConfig.tiny(templates=False), device=device, runtime=rt)
    return model, batch


def _flat(out, prefix=""):
    for k, v in out.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}/")
        elif isinstance(v, torch.Tensor):
            yield f"{prefix}{k}", v


def test_cuda_graphs_setting_is_validated():
    assert RuntimeConfig(cuda_graphs=False).cuda_graphs is False
    with pytest.raises(ConfigError, match="cuda_graphs"):
        RuntimeConfig(cuda_graphs="always")


def test_cpu_never_records():
    model, batch = _tiny("cpu", "fp32", cuda_graphs=True)
    seen = []
    with torch.no_grad():
        model(batch, on_pass=lambda done, total: seen.append((done, total)))
    assert model._graphs == {}
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_prefuse_projections_keeps_outputs_and_skips_cross_attention():
    """What the model does before recording a graph, on a model with templates (whose
    pointwise attention reads keys of another width and cannot fuse q/k/v)."""
    arrays, _ = load_npz(FIXTURES / "model_tiny_templ.npz")
    params = {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("param/")}
    batch = {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("input/")}
    model = load_model(params, preset=ModelConfig.tiny(templates=True), device="cpu",
                       runtime=RuntimeConfig(device="cpu", precision="fp32"))
    with torch.no_grad():
        before = model(batch)
    model.release_graphs()
    for module in model.modules():
        module.__dict__.pop("_fused_cache", None)
    model.prefuse_projections()
    tri = model.evoformer.blocks[0].pair_stack.tri_mul_out
    assert tri.linear_a_p.weight.untyped_storage().data_ptr() == tri.linear_b_g.weight.untyped_storage().data_ptr()
    with torch.no_grad():
        after = model(batch)
    for name, value in _flat(before):
        assert torch.equal(dict(_flat(after))[name], value), name


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graphed_forward_equals_eager(precision):
    eager, batch = _tiny("cuda", precision, cuda_graphs=False)
    graphed, _ = _tiny("cuda", precision, cuda_graphs=True)
    with torch.inference_mode():
        ref = eager(batch)
        first = graphed(batch)  # pass 0 eager on a side stream + recording, passes 1-3 replayed
        assert len(graphed._graphs) == 1
        seen = []
        second = graphed(batch, on_pass=lambda done, total: seen.append(done))  # all replayed
        assert seen == [1, 2, 3, 4]  # progress reaches the caller on replayed passes too
        third = graphed(batch)
    level = MODEL if precision == "fp32" else (1e-2, 1e-2)
    for out in (first, second):
        for name, value in _flat(ref):
            assert_close_scaled(dict(_flat(out))[name], value, level=level, name=name)
    # The returned tensors are copies: a later forward does not overwrite them.
    for name, value in _flat(second):
        assert torch.equal(value, dict(_flat(third))[name]), name


@pytest.mark.gpu
def test_new_length_records_again_and_release():
    model, batch = _tiny("cuda", "bf16", cuda_graphs=True)
    # Fewer extra-MSA rows: another input shape, so another recording.
    short = {k: v[:3] if k.startswith("extra_") else v for k, v in batch.items()}
    with torch.inference_mode():
        model(batch)
        key = next(iter(model._graphs))
        model(batch)
        assert next(iter(model._graphs)) == key
    model.set_runtime(RuntimeConfig(device="cuda", precision="bf16", cuda_graphs=True))
    assert model._graphs == {}
    with torch.inference_mode():
        out = model(short)
    assert len(model._graphs) == 1 and next(iter(model._graphs)) != key
    assert torch.isfinite(out["final_atom_positions"]).all()
    model.runtime = RuntimeConfig(device="cuda", precision="bf16", cuda_graphs=False)
    with torch.inference_mode():
        model(batch)  # an eager forward frees a graph it does not use
    assert model._graphs == {}
    model.set_runtime(RuntimeConfig(device="cuda", precision="bf16", cuda_graphs=True))
    with torch.inference_mode():
        model(batch)
    model.release_graphs()
    assert model._graphs == {}


@pytest.mark.gpu
def test_early_stop_with_graphs():
    model, batch = _tiny("cuda", "fp32", cuda_graphs=True, recycle_early_stop_tolerance=1e6)
    with torch.inference_mode():
        assert int(model(batch)["num_recycles"]) == 2
        assert int(model(batch)["num_recycles"]) == 2
    model.set_runtime(RuntimeConfig(device="cuda", cuda_graphs=True, recycle_early_stop_tolerance=0.0))
    with torch.inference_mode():
        assert int(model(batch)["num_recycles"]) == 4


@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [False, True])
def test_batch_in_host_memory(graphs):
    """A batch left in host memory (what predict does) gives the on-device batch's outputs:
    the model copies one pass's features at a time, eagerly or into the graph's buffers."""
    model, on_device = _tiny("cuda", "fp32", cuda_graphs=graphs, recycle_early_stop_tolerance=0.0)
    host = {k: v.cpu() for k, v in on_device.items()}
    with torch.inference_mode():
        ref = model(on_device)
        model.release_graphs()
        out = model(host)
        again = model(host)  # replayed from the graph recorded with host inputs
    assert int(out["num_recycles"]) == 4 and out["num_recycles"].device.type == "cuda"
    for result in (out, again):
        flat = dict(_flat(result))
        for name, value in _flat(ref):
            assert flat[name].device == value.device, name
            assert_close_scaled(flat[name], value, level=MODEL, name=name)
