"""Memory strategies are layout-only: chunked == unchunked, in-place == out-of-place."""

import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tolerances import MODULE, assert_close_scaled

from sparkfold.model.chunking import auto_chunk_size, chunk_layer, residual_add
from sparkfold.model.evoformer import EvoformerBlock, EvoformerStack
from sparkfold.model.extra_msa import ExtraMSABlock, ExtraMSAStack
from sparkfold.model.msa import (
    MSAColumnAttention,
    MSAColumnGlobalAttention,
    MSARowAttentionWithPairBias,
)
from sparkfold.model.pair import (
    OuterProductMean,
    Transition,
    TriangleAttention,
    TriangleMultiplication,
)


def _randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Redraw every parameter (the default init zeroes the final layers, hiding errors)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / max(1, p.shape[-1]) ** 0.5)
    return module.eval()


def _mask(shape, gen):
    return (torch.rand(shape, generator=gen) > 0.2).float()


# ---------------------------------------------------------------------------- chunk_layer itself
@settings(max_examples=40, deadline=None)
@given(
    batch=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    broadcast=st.lists(st.booleans(), min_size=3, max_size=3),
    chunk_size=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_chunk_layer_equals_direct_call_with_broadcasting(batch, broadcast, chunk_size, seed):
    gen = torch.Generator().manual_seed(seed)
    nb = len(batch)
    y_batch = [1 if b else d for b, d in zip(broadcast, batch)]  # partly/fully broadcast batch dims
    x = torch.randn(*batch, 3, 5, generator=gen)
    y = torch.randn(*y_batch, 1, 5, generator=gen)
    w = torch.randn([1] * nb + [5], generator=gen)  # all batch dims 1: passed unsliced

    def fn(x, y, w):
        return {"sum": (x * y).sum(-1) + w.sum(-1, keepdim=True), "prod": x * w[..., None, :]}

    direct = fn(x, y, w)
    chunked = chunk_layer(fn, {"x": x, "y": y, "w": w}, chunk_size, nb)
    assert set(chunked) == {"sum", "prod"}
    for key in direct:
        assert chunked[key].shape == direct[key].shape
        torch.testing.assert_close(chunked[key], direct[key], rtol=0, atol=0)


def test_chunk_layer_tuple_output_and_single_chunk():
    x = torch.randn(5, 4, 3)
    out = chunk_layer(lambda x: (x + 1, x.sum(-1)), {"x": x}, 100, 2)
    assert isinstance(out, tuple) and out[0].shape == (5, 4, 3) and out[1].shape == (5, 4)
    torch.testing.assert_close(out[1], x.sum(-1))


def test_chunk_layer_gradients_equal_unchunked():
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(6, 3, 4, requires_grad=True)
    chunk_layer(lambda x: torch.tanh(lin(x)), {"x": x}, 4, 1).square().sum().backward()
    g_chunked = x.grad.clone()
    x.grad = None
    torch.tanh(lin(x)).square().sum().backward()
    torch.testing.assert_close(g_chunked, x.grad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"chunk_size": 0, "num_batch_dims": 1}, "chunk_size must be a positive integer"),
        ({"chunk_size": 2, "num_batch_dims": 4}, "needs at least the batch dims"),
    ],
)
def test_chunk_layer_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        chunk_layer(lambda x: x, {"x": torch.zeros(3, 2)}, **kwargs)


def test_chunk_layer_rejects_incompatible_batch_dims_and_bad_outputs():
    with pytest.raises(ValueError, match="incompatible batch dims"):
        chunk_layer(lambda x, y: x, {"x": torch.zeros(3, 2), "y": torch.zeros(4, 2)}, 2, 1)
    with pytest.raises(ValueError, match="keep the flattened batch dim"):
        chunk_layer(lambda x: x.sum(0, keepdim=True), {"x": torch.zeros(4, 2)}, 2, 1)


# ---------------------------------------------------------------------------- modules, random shapes
S, N, C_M, C_Z = 5, 7, 8, 6


def _module_cases():
    return {
        "row_attention": (
            MSARowAttentionWithPairBias(C_M, C_Z, 3, 2),
            lambda mod, m, z, mm, pm, cs, **kw: mod(m, z, mask=mm, chunk_size=cs, **kw),
        ),
        "column_attention": (
            MSAColumnAttention(C_M, 3, 2),
            lambda mod, m, z, mm, pm, cs, **kw: mod(m, mask=mm, chunk_size=cs, **kw),
        ),
        "global_attention": (
            MSAColumnGlobalAttention(C_M, 3, 2),
            lambda mod, m, z, mm, pm, cs, **kw: mod(m, mask=mm, chunk_size=cs, **kw),
        ),
        "msa_transition": (
            Transition(C_M, 2),
            lambda mod, m, z, mm, pm, cs, **kw: mod(m, mask=mm, chunk_size=cs, **kw),
        ),
        "opm": (
            OuterProductMean(C_M, C_Z, 3),
            lambda mod, m, z, mm, pm, cs, **kw: mod(m, mask=mm, chunk_size=cs, **kw),
        ),
        "tri_mul_out": (
            TriangleMultiplication(C_Z, 4, "outgoing"),
            lambda mod, m, z, mm, pm, cs, **kw: mod(z, mask=pm, chunk_size=cs, **kw),
        ),
        "tri_mul_in": (
            TriangleMultiplication(C_Z, 4, "incoming"),
            lambda mod, m, z, mm, pm, cs, **kw: mod(z, mask=pm, chunk_size=cs, **kw),
        ),
        "tri_att_start": (
            TriangleAttention(C_Z, 3, 2, "starting"),
            lambda mod, m, z, mm, pm, cs, **kw: mod(z, mask=pm, chunk_size=cs, **kw),
        ),
        "tri_att_end": (
            TriangleAttention(C_Z, 3, 2, "ending"),
            lambda mod, m, z, mm, pm, cs, **kw: mod(z, mask=pm, chunk_size=cs, **kw),
        ),
        "evoformer_block": (
            EvoformerBlock(C_M, C_Z, 3, 3, 4, 3, 2, 2, 2),
            lambda mod, m, z, mm, pm, cs, **kw: mod(m, z, mm, pm, chunk_size=cs, **kw),
        ),
        "evoformer_block_opm_first": (
            EvoformerBlock(C_M, C_Z, 3, 3, 4, 3, 2, 2, 2, opm_first=True),
            lambda mod, m, z, mm, pm, cs, **kw: mod(m, z, mm, pm, chunk_size=cs, **kw),
        ),
        "extra_msa_block": (
            ExtraMSABlock(C_M, C_Z, 3, 3, 4, 3, 2, 2, 2),
            lambda mod, m, z, mm, pm, cs, **kw: mod(m, z, mm, pm, chunk_size=cs, **kw),
        ),
    }


def _module_case(name, batch, seed):
    """A randomised module of :func:`_module_cases`, its call and inputs ``(m, z, mm, pm)``."""
    mod, call = _module_cases()[name]
    _randomize(mod, seed=zlib.crc32(name.encode()) % 1000)
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(*batch, S, N, C_M, generator=gen)
    z = torch.randn(*batch, N, N, C_Z, generator=gen)
    return mod, call, (m, z, _mask((*batch, S, N), gen), _mask((*batch, N, N), gen))


@pytest.mark.parametrize("batch", [(), (2,)], ids=["nobatch", "batch2"])
@pytest.mark.parametrize("name", sorted(_module_cases()))
def test_module_chunked_equals_unchunked(name, batch):
    mod, call, (m, z, mm, pm) = _module_case(name, batch, seed=1)
    with torch.no_grad():
        ref = call(mod, m, z, mm, pm, None)
        for cs in (1, 3, 64):
            out = call(mod, m, z, mm, pm, cs)
            for r, o in zip(
                ref if isinstance(ref, tuple) else (ref,), out if isinstance(out, tuple) else (out,)
            ):
                assert_close_scaled(o, r, level=MODULE, name=f"{name} chunk={cs}")


#: The residual stream each module's update goes to.
_STREAM = {"row_attention": "m", "column_attention": "m", "global_attention": "m",
           "msa_transition": "m", "opm": "z", "tri_mul_out": "z", "tri_mul_in": "z",
           "tri_att_start": "z", "tri_att_end": "z"}


@pytest.mark.parametrize("batch", [(), (2,)], ids=["nobatch", "batch2"])
@pytest.mark.parametrize("name", sorted(_STREAM))
def test_module_adds_into_its_residual_stream_in_place(name, batch):
    """``add_into=x`` (the input itself, as the blocks pass it) gives ``x + update`` exactly,
    chunked (slice by slice; with a leading batch the transposed targets cannot be viewed
    flat and take the whole-update path) or not, and writes into ``x``'s memory."""
    mod, call, (m, z, mm, pm) = _module_case(name, batch, seed=2)
    with torch.no_grad():
        for cs in (None, 1, 3):
            expected = {"m": m, "z": z}[_STREAM[name]] + call(mod, m, z, mm, pm, cs)
            m2, z2 = m.clone(), z.clone()
            target = {"m": m2, "z": z2}[_STREAM[name]]
            out = call(mod, m2, z2, mm, pm, cs, add_into=target)
            assert out is target, name
            assert torch.equal(out, expected), f"{name} chunk={cs}"
    with pytest.raises(RuntimeError, match="autograd disabled"):
        call(mod, m, z, mm, pm, 2, add_into={"m": m, "z": z}[_STREAM[name]].requires_grad_())


def test_chunk_layer_add_into_checks_shapes():
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="batch dims"):
        chunk_layer(lambda x: x, {"x": x}, 2, 1, add_into=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="one tensor shaped like"):
        chunk_layer(lambda x: x[:, :2], {"x": x}, 2, 1, add_into=torch.zeros(4, 3))
    target = torch.ones(4, 3)
    assert chunk_layer(lambda x: x + 1, {"x": x}, 3, 1, add_into=target) is target
    assert torch.equal(target, torch.full((4, 3), 2.0))


def test_transition_mask_only_multiplies_when_given():
    mod = _randomize(Transition(C_M, 2))
    m = torch.randn(S, N, C_M)
    mask = _mask((S, N), torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(mod(m, mask=mask), mod(m) * mask[..., None], rtol=0, atol=0)
        assert (mod(m)[mask == 0] != 0).any()


# ---------------------------------------------------------------------------- in-place adds
def _stack_inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(S, N, C_M, generator=gen),
        torch.randn(N, N, C_Z, generator=gen),
        _mask((S, N), gen),
        _mask((N, N), gen),
    )


@pytest.mark.parametrize("block_cls", [EvoformerBlock, ExtraMSABlock])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_block_inplace_is_bit_identical(block_cls, chunk_size):
    block = _randomize(block_cls(C_M, C_Z, 3, 3, 4, 3, 2, 2, 2))
    m, z, mm, pm = _stack_inputs()
    with torch.no_grad():
        m_ref, z_ref = block(m, z, mm, pm, chunk_size=chunk_size, inplace=False)
        m_in, z_in = m.clone(), z.clone()
        m_out, z_out = block(m_in, z_in, mm, pm, chunk_size=chunk_size, inplace=True)
    assert torch.equal(m_out, m_ref) and torch.equal(z_out, z_ref)
    assert m_out.data_ptr() == m_in.data_ptr() and z_out.data_ptr() == z_in.data_ptr()


def test_stacks_inplace_default_identical_and_inputs_untouched():
    evo = _randomize(EvoformerStack(2, C_M, C_Z, 4, 3, 3, 4, 3, 2, 2, 2))
    extra = _randomize(ExtraMSAStack(2, C_M, C_Z, 3, 3, 4, 3, 2, 2, 2))
    m, z, mm, pm = _stack_inputs(1)
    m0, z0 = m.clone(), z.clone()
    with torch.no_grad():
        ref = evo(m, z, mm, pm, inplace=False)
        out = evo(m, z, mm, pm)  # inplace=None: in place, since grad is disabled
        z_ref = extra(m, z, mm, pm, inplace=False)
        z_out = extra(m, z, mm, pm, inplace=True)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    assert torch.equal(z_out, z_ref)
    assert torch.equal(m, m0) and torch.equal(z, z0), (
        "the stacks must not modify the caller's tensors"
    )
    assert ref[2].shape == (N, 4)


def test_inplace_refused_with_grad_enabled():
    evo = _randomize(EvoformerStack(1, C_M, C_Z, 4, 3, 3, 4, 3, 2, 2, 2))
    m, z, mm, pm = _stack_inputs()
    with pytest.raises(RuntimeError, match="autograd disabled"):
        evo(m, z, mm, pm, inplace=True)
    *_, s = evo(m, z, mm, pm)  # default: out of place with grad enabled
    s.sum().backward()
    with pytest.raises(RuntimeError, match="autograd disabled"):
        residual_add(torch.zeros(2, requires_grad=True), torch.ones(2), inplace=True)


# ---------------------------------------------------------------------------- chunk-size heuristic
def test_auto_chunk_size_heuristic():
    gib = 1 << 30
    assert auto_chunk_size(64, 32, "cpu", free_bytes=64 * gib) is None  # everything fits whole
    sizes = [auto_chunk_size(1500, 5120, "cpu", free_bytes=f * gib) for f in (2, 8, 32, 80)]
    assert all(isinstance(c, int) and c > 0 and c & (c - 1) == 0 for c in sizes), sizes
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    # the worst per-entry intermediate (column attention 2·H·S² fp32) times the chunk fits the budget
    c = auto_chunk_size(1500, 5120, "cpu", free_bytes=8 * gib)
    assert c * 4 * 2 * 8 * 5120**2 <= 0.25 * 8 * gib
    assert auto_chunk_size(4000, 5120, "cpu", free_bytes=1 << 20, min_chunk=4) == 4
    with pytest.raises(ValueError, match="positive"):
        auto_chunk_size(0, 1, "cpu")


def test_auto_chunk_size_fused_attention_needs_no_logits():
    gib = 1 << 30
    # With a fused attention kernel the logits are never stored: far larger chunks (or none).
    fused = auto_chunk_size(2048, 1024, "cpu", bytes_per_element=2, free_bytes=78 * gib,
                            fused_attention=True)
    plain = auto_chunk_size(2048, 1024, "cpu", bytes_per_element=2, free_bytes=78 * gib,
                            fused_attention=False)
    assert plain is not None and (fused is None or fused > plain), (fused, plain)
    assert auto_chunk_size(1024, 1024, "cpu", bytes_per_element=2, free_bytes=78 * gib,
                           fused_attention=True) is None
    c = auto_chunk_size(6144, 1024, "cpu", bytes_per_element=2, free_bytes=40 * gib,
                        fused_attention=True)
    assert c * 2 * 10 * 256 * 6144 <= 0.25 * 40 * gib < 2 * c * 2 * 10 * 256 * 6144
    # None asks the dispatcher: the reference backend (fp32 on CPU) materialises the logits.
    from sparkfold.model import kernels
    with kernels.use_backend("reference"):
        assert auto_chunk_size(2048, 1024, "cpu", free_bytes=78 * gib) == auto_chunk_size(
            2048, 1024, "cpu", free_bytes=78 * gib, fused_attention=False)
    with kernels.use_backend("sdpa"):
        assert auto_chunk_size(2048, 1024, "cpu", free_bytes=78 * gib) == auto_chunk_size(
            2048, 1024, "cpu", free_bytes=78 * gib, fused_attention=True)


def test_auto_chunk_size_budget_cap():
    """A cap bounds the chunk budget whatever the free memory (the model passes ~2.5× the
    pair representation's size), so a large GPU still chunks long sequences."""
    gib = 1 << 30
    free = 78 * gib
    assert auto_chunk_size(1024, 1024, "cpu", bytes_per_element=2, free_bytes=free,
                           fused_attention=True) is None
    cap = int(2.5 * 1024 * 1024 * 128 * 2)
    c = auto_chunk_size(1024, 1024, "cpu", bytes_per_element=2, free_bytes=free,
                        fused_attention=True, max_budget_bytes=cap)
    per_entry = 2 * 10 * 256 * 1024
    assert c is not None and c * per_entry <= cap < 2 * c * per_entry
    # The cap never raises the budget above the free-memory share.
    assert auto_chunk_size(4000, 5120, "cpu", free_bytes=1 << 20, min_chunk=4,
                           max_budget_bytes=1 << 40) == 4


def test_fp32_linear_slices_match_full_upcast():
    from sparkfold.model.primitives import Linear, fp32_linear

    torch.manual_seed(0)
    lin = Linear(16, 5)
    x = torch.randn(7, 9, 16).bfloat16()
    ref = lin(x.float())
    out = fp32_linear(lin, x, slice_bytes=4 * 16 * 10)  # 10 rows per slice: 7 slices
    assert out.dtype == torch.float32 and out.shape == (7, 9, 5)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    x32 = x.float()
    assert torch.equal(fp32_linear(lin, x32), lin(x32))  # fp32 input: the plain call


def test_model_auto_chunk_policy(monkeypatch):
    """The model's ``chunk_size="auto"`` on a large GPU (issue workload: 512 clusters, 1,024
    extra rows): chunks bounded by the pair-size cap (≥ 256 MiB) rather than by the free
    memory, the Evoformer and the extra MSA sized apart."""
    from types import SimpleNamespace

    from sparkfold.config import ModelConfig, RuntimeConfig
    from sparkfold.model import chunking
    from sparkfold.model.alphafold import AlphaFold

    monkeypatch.setattr(chunking, "_free_bytes", lambda device: 78 << 30)
    stub = SimpleNamespace(runtime=RuntimeConfig(chunk_size="auto"),
                           config=ModelConfig.from_preset("model_3_ptm"),
                           trunk_dtype=torch.bfloat16)
    with kernels_backend("sdpa"):  # a fused attention backend, as bf16 on a GPU uses
        sizes = {n: AlphaFold._chunk_size(stub, n, 512, torch.device("cpu"), n_extra=1024)
                 for n in (128, 256, 512, 1024, 2048, 6144)}
        evoformer_only = AlphaFold._chunk_size(stub, 256, 512, torch.device("cpu"))
    # Short sequences: the floor (256 MiB) binds; the Evoformer's 512 x 256-channel columns
    # (2 MB of intermediates each) bind before the extra MSA's 1,024 x 64.
    assert sizes[128] == sizes[256] == 128 and sizes[512] == 64 and evoformer_only == 128
    assert sizes[1024] == 128 and sizes[2048] == 256  # the cap: 4x the pair representation
    assert sizes[6144] == 512  # a quarter of the usable free memory binds first
    stub.runtime = RuntimeConfig(chunk_size=64)
    assert AlphaFold._chunk_size(stub, 1024, 1024, torch.device("cpu")) == 64


def kernels_backend(name):
    from sparkfold.model import kernels

    return kernels.use_backend(name)
