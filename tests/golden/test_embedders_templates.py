"""Golden tests: embedders and template modules against the OpenFold fixtures.

Module fixtures (tests/fixtures/modules): each case loads ``param/*`` strictly, calls the module
as in ``meta.call`` on ``input/*`` and compares every ``output/*`` at the module tolerance
(unchunked and, where the fixture records a ``chunk_size``, chunked); a bf16 copy must stay
within ``BF16_MODULE`` of the fp32 reference. Whole-model fixture (model_tiny_templ): the
embedders and the TemplateEmbedder are fed each recycling pass's batch slice and the captured
intermediates, and compared with the captured outputs of that pass.
"""

import copy

import pytest
import torch
from testutil import FIXTURES, load_module_fixture, load_npz
from tolerances import BF16_MODULE, MODULE, assert_close_scaled

from sparkfold.config import InputEmbedderConfig, ModelConfig
from sparkfold.model.embedders import (
    ExtraMSAEmbedder,
    InputEmbedder,
    RecyclingEmbedder,
    build_extra_msa_feat,
    relpos_chain_features,
    relpos_monomer_features,
)
from sparkfold.model.template import (
    TemplateEmbedder,
    TemplatePairEmbedder,
    TemplatePairStack,
    TemplatePairStackBlock,
    TemplatePointwiseAttention,
    TemplateSingleEmbedder,
    build_template_angle_feat,
    build_template_pair_feat,
)


def _params(arrays, prefix="param/"):
    return {k[len(prefix):]: torch.tensor(v) for k, v in arrays.items() if k.startswith(prefix)}


def _inputs(arrays):
    return {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("input/")}


def _stack_kwargs(c):
    return {
        "c_t": c["c_t"], "c_hidden_tri_att": c["c_hidden_tri_att"], "c_hidden_tri_mul": c["c_hidden_tri_mul"],
        "num_heads": c["no_heads"], "transition_n": c["pair_transition_n"], "inf": c["inf"],
        "tri_mul_first": c["tri_mul_first"],
    }


def _recycling_ctor(c):
    return RecyclingEmbedder(c["c_m"], c["c_z"], min_bin=c["min_bin"], max_bin=c["max_bin"],
                             num_bins=c["no_bins"], inf=c["inf"])


# fixture name -> (constructor from meta.ctor, call(module, inputs, chunk_size) -> {output name: tensor})
CASES = {
    "input_embedder": (
        lambda c: InputEmbedder(c["tf_dim"], c["msa_dim"], c["c_z"], c["c_m"], c["relpos_k"]),
        lambda mod, x, cs: dict(zip(("msa_emb", "pair_emb"), mod(x["tf"], x["ri"], x["msa"]))),
    ),
    "recycling_embedder": (
        _recycling_ctor,
        lambda mod, x, cs: dict(zip(("m_update", "z_update"), mod(x["m"], x["z"], x["x"]))),
    ),
    "extra_msa_embedder": (
        lambda c: ExtraMSAEmbedder(c["c_in"], c["c_out"]),
        lambda mod, x, cs: {"out": mod(x["x"])},
    ),
    "template_pair_embedder": (
        lambda c: TemplatePairEmbedder(c["c_in"], c["c_out"]),
        lambda mod, x, cs: {"out": mod(x["x"])},
    ),
    "template_single_embedder": (
        lambda c: TemplateSingleEmbedder(c["c_in"], c["c_out"]),
        lambda mod, x, cs: {"out": mod(x["x"])},
    ),
    "template_pointwise_attention": (
        lambda c: TemplatePointwiseAttention(c["c_t"], c["c_z"], c["c_hidden"], c["no_heads"], inf=c["inf"]),
        lambda mod, x, cs: {
            "masked": mod(x["t"], x["z"], template_mask=x["template_mask"], chunk_size=cs),
            "all_templates": mod(x["t"], x["z"], template_mask=None, chunk_size=cs),
        },
    ),
    "template_pair_stack_block": (
        lambda c: TemplatePairStackBlock(**_stack_kwargs(c)),
        lambda mod, x, cs: {"out": mod(x["z"], x["mask"], chunk_size=cs)},
    ),
    "template_pair_stack": (
        lambda c: TemplatePairStack(num_blocks=c["no_blocks"], **_stack_kwargs(c)),
        lambda mod, x, cs: {"out": mod(x["z"], x["mask"], chunk_size=cs)},
    ),
}


def _load_case(name):
    arrays, meta = load_module_fixture(name)
    ctor, call = CASES[name]
    mod = ctor(meta["ctor"]).eval()
    mod.load_state_dict(_params(arrays), strict=True)
    expected = {k[7:]: v for k, v in arrays.items() if k.startswith("output/")}
    return mod, call, _inputs(arrays), expected, meta


@pytest.mark.parametrize("name", sorted(CASES))
def test_module_fixture(name):
    mod, call, x, expected, meta = _load_case(name)
    chunk_sizes = [None] + ([meta["chunk_size"]] if meta.get("chunk_size") else [])
    if name == "template_pointwise_attention":
        chunk_sizes.append(256)  # the forward default the template embedder relies on
    with torch.no_grad():
        for cs in chunk_sizes:
            out = call(mod, x, cs)
            assert set(out) == set(expected)
            for key, ref in expected.items():
                assert_close_scaled(out[key], ref, MODULE, name=f"{name}/{key} chunk={cs}")


#: Stacks whose fp32 output moves by more than BF16_MODULE when only their weights and inputs
#: are rounded to bf16 (2 random-weight blocks + LayerNorm: ~5% of the max); they are compared
#: with that rounded fp32 run instead of the fixture.
BF16_INPUT_SENSITIVE = {"template_pair_stack"}


def _round_to_bf16(mod, x):
    """An fp32 copy of ``mod`` and ``x`` whose values are rounded to bf16 (the best a bf16 run can see)."""
    ref = copy.deepcopy(mod)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return ref, {k: v.to(torch.bfloat16).float() if v.is_floating_point() else v for k, v in x.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_module_bf16(name):
    mod, call, x, expected, meta = _load_case(name)
    ref_mod, ref_x = _round_to_bf16(mod, x)
    mod16 = copy.deepcopy(mod).to(torch.bfloat16)
    x16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in x.items()}
    with torch.no_grad():
        out = call(mod16, x16, meta.get("chunk_size"))
        rounded = call(ref_mod, ref_x, None)
    for key, ref in expected.items():
        assert out[key].dtype == torch.bfloat16, f"{name}/{key} left bf16"
        assert torch.isfinite(out[key].float()).all()
        assert_close_scaled(out[key].float(), rounded[key], BF16_MODULE, name=f"{name}/{key} bf16 vs rounded fp32")
        if name not in BF16_INPUT_SENSITIVE:
            assert_close_scaled(out[key].float(), ref, BF16_MODULE, name=f"{name}/{key} bf16")


# ------------------------------------------------------------------------------ features
def test_build_extra_msa_feat():
    arrays, _ = load_module_fixture("build_extra_msa_feat")
    out = build_extra_msa_feat(_inputs(arrays))
    torch.testing.assert_close(out, torch.tensor(arrays["output/extra_msa_feat"]), rtol=0, atol=0)


def test_build_template_angle_feat():
    arrays, _ = load_module_fixture("build_template_angle_feat")
    out = build_template_angle_feat(_inputs(arrays))
    torch.testing.assert_close(out, torch.tensor(arrays["output/template_angle_feat"]), rtol=0, atol=0)


@pytest.mark.parametrize("use_unit_vector", [False, True])
def test_build_template_pair_feat(use_unit_vector):
    arrays, _meta = load_module_fixture("build_template_pair_feat")
    out = build_template_pair_feat(
        _inputs(arrays), min_bin=3.25, max_bin=50.75, num_bins=39,
        use_unit_vector=use_unit_vector, eps=1e-8, inf=1e5,
    )
    ref = torch.tensor(arrays[f"output/template_pair_feat_unit_vector_{use_unit_vector}"])
    assert_close_scaled(out, ref, MODULE, name=f"template_pair_feat uv={use_unit_vector}")
    # Bins are one-hot on the distogram channels; both variants differ only in channels 84-86.
    unit = out[..., 84:87]
    if use_unit_vector:
        norms = unit.norm(dim=-1)
        live = norms > 0
        assert live.any()
        torch.testing.assert_close(norms[live], torch.ones_like(norms[live]), rtol=0, atol=1e-5)
    else:
        assert torch.count_nonzero(unit) == 0


# --------------------------------------------------------------------------- relpos forms
def test_relpos_monomer_clips_both_ends():
    ri = torch.tensor([0, 1, 2, 50, 51])
    feats = relpos_monomer_features(ri, relpos_k=4)
    idx = feats.argmax(-1)
    assert feats.shape == (5, 5, 9) and torch.all(feats.sum(-1) == 1)
    assert idx[0, 3] == 0 and idx[3, 0] == 8 and idx[1, 2] == 3 and idx[2, 2] == 4


def test_relpos_chain_form():
    k, c = 4, 2
    # one chain: the residue part equals the monomer one-hot, padded by the unused 2k+1 class
    ri = torch.tensor([0, 1, 2, 9, 10])
    one = torch.zeros(5, dtype=torch.long)
    feats = relpos_chain_features(ri, one, one, one, k, c)
    assert feats.shape[-1] == InputEmbedderConfig(relpos_k=k, relpos_form="chain",
                                                  max_relative_chain=c).num_relpos_bins
    torch.testing.assert_close(feats[..., : 2 * k + 1], relpos_monomer_features(ri, k))
    assert torch.all(feats[..., 2 * k + 1] == 0) and torch.all(feats[..., 2 * k + 2] == 1)
    assert torch.all(feats[..., 2 * k + 3 + c] == 1)  # same copy ⇒ chain offset class c

    # two copies of one entity (A: residues 0-1, B: 0-1) and a second entity C
    ri = torch.tensor([0, 1, 0, 1, 0])
    asym = torch.tensor([0, 0, 1, 1, 2])
    entity = torch.tensor([0, 0, 0, 0, 1])
    sym = torch.tensor([0, 0, 1, 1, 0])
    feats = relpos_chain_features(ri, asym, entity, sym, k, c)
    res_cls = feats[..., : 2 * k + 2].argmax(-1)
    assert res_cls[0, 2] == 2 * k + 1 and res_cls[0, 1] == k - 1  # across chains / within
    assert feats[0, 2, 2 * k + 2] == 1 and feats[0, 4, 2 * k + 2] == 0  # same entity flag
    chain_cls = feats[..., 2 * k + 3:].argmax(-1)
    assert chain_cls[0, 2] == c - 1 and chain_cls[2, 0] == c + 1 and chain_cls[0, 4] == 2 * c + 1


def test_input_embedder_chain_form_shapes_and_errors():
    torch.manual_seed(0)
    mod = InputEmbedder(21, 49, c_z=6, c_m=5, relpos_k=32, relpos_form="chain")
    assert mod.linear_relpos.in_features == 73
    tf, msa = torch.randn(4, 21), torch.randn(3, 4, 49)
    ri = torch.arange(4)
    with pytest.raises(ValueError, match="asym_id"):
        mod(tf, ri, msa)
    ids = torch.zeros(4, dtype=torch.long)
    m, z = mod(tf, ri, msa, asym_id=ids, entity_id=ids, sym_id=ids)
    assert m.shape == (3, 4, 5) and z.shape == (4, 4, 6)
    with pytest.raises(ValueError, match="target_feat"):
        mod(torch.randn(4, 22), ri, msa, asym_id=ids, entity_id=ids, sym_id=ids)


def test_recycling_embedder_zero_positions_set_no_bin():
    emb = RecyclingEmbedder(4, 3)
    d = emb.distogram(torch.zeros(5, 3))
    assert torch.count_nonzero(d) == 0
    # a squared distance exactly on an inner edge belongs to no bin (strict inequalities)
    x = torch.tensor([[0.0, 0.0, 0.0], [3.25, 0.0, 0.0], [3.25 + 1.25, 0.0, 0.0]])
    d = emb.distogram(x)
    assert d[0, 1].sum() == 0 and d[0, 2].sum() == 0 and d[1, 2].sum() == 0


@pytest.mark.parametrize("form", ["monomer", "chain"])
def test_pair_embeddings_in_row_blocks_match_whole(monkeypatch, form):
    """Row blocks (what long sequences get) give the whole-pair embeddings: the input
    embedder's relative positions, and the recycling update added into z in place."""
    from sparkfold.model import embedders

    gen = torch.Generator().manual_seed(3)
    emb = InputEmbedder(21, 49, c_z=6, c_m=5, relpos_k=4, relpos_form=form)
    rec = RecyclingEmbedder(5, 6)
    for module in (emb, rec):
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
    n = 9
    tf, msa = torch.randn(n, 21, generator=gen), torch.randn(3, n, 49, generator=gen)
    ri = torch.tensor([0, 1, 2, 5, 6, 7, 20, 21, 22])
    chains = {} if form == "monomer" else {
        "asym_id": torch.tensor([1, 1, 1, 1, 2, 2, 2, 3, 3]),
        "entity_id": torch.tensor([1, 1, 1, 1, 1, 1, 1, 2, 2]),
        "sym_id": torch.tensor([1, 1, 1, 1, 2, 2, 2, 1, 1])}
    m_prev, z_prev = torch.randn(n, 5, generator=gen), torch.randn(n, n, 6, generator=gen)
    x = torch.randn(n, 3, generator=gen) * 8
    with torch.no_grad():
        m_whole, z_whole = emb(tf, ri, msa, **chains)
        m_upd, z_upd = rec(m_prev, z_prev, x)
        monkeypatch.setattr(embedders, "PAIR_BLOCK_BYTES", 1)  # one row per block
        m_rows, z_rows = emb(tf, ri, msa, **chains)
        z_in = z_whole.clone()
        m_upd2, z_out = rec(m_prev, z_prev, x, add_into=z_in)
    assert torch.equal(m_rows, m_whole)
    torch.testing.assert_close(z_rows, z_whole, rtol=1e-6, atol=1e-6)
    assert z_out is z_in and torch.equal(m_upd2, m_upd)
    torch.testing.assert_close(z_out, z_whole + z_upd, rtol=1e-6, atol=1e-6)
    with pytest.raises(RuntimeError, match="autograd disabled"):
        rec(m_prev, z_prev, x, add_into=z_whole.clone().requires_grad_())


# ------------------------------------------------------------------------ block variants
def test_template_block_tri_mul_first_order():
    arrays, meta = load_module_fixture("template_pair_stack_block")
    kwargs = _stack_kwargs(meta["ctor"])
    kwargs["tri_mul_first"] = True
    block = TemplatePairStackBlock(**kwargs).eval()
    block.load_state_dict(_params(arrays), strict=True)
    x = _inputs(arrays)
    with torch.no_grad():
        out = block(x["z"], x["mask"])
        ref = []
        for z, mask in zip(x["z"].unbind(0), x["mask"].unbind(0)):
            z = z + block.tri_mul_out(z, mask=mask)
            z = z + block.tri_mul_in(z, mask=mask)
            z = z + block.tri_att_start(z, mask=mask)
            z = z + block.tri_att_end(z, mask=mask)
            ref.append(z + block.pair_transition(z))
    assert_close_scaled(out, torch.stack(ref), MODULE, name="tri_mul_first")
    assert (out - torch.tensor(arrays["output/out"])).abs().max() > 1e-3  # the order matters


# ------------------------------------------------------------------- whole-model fixture
@pytest.fixture(scope="module")
def tiny_templ():
    arrays, meta = load_npz(FIXTURES / "model_tiny_templ.npz")
    cfg = ModelConfig.tiny(templates=True)
    return arrays, meta, cfg


def _sub(arrays, prefix):
    return _params(arrays, "param/" + prefix + ".")


def _pass_batch(arrays, k):
    return {n[6:]: torch.tensor(v[..., k]) for n, v in arrays.items()
            if n.startswith("input/") and v.ndim > 0}


def _inter(arrays, key):
    return torch.tensor(arrays["inter/" + key])


def test_model_embedders_every_pass(tiny_templ):
    arrays, meta, cfg = tiny_templ
    ie = InputEmbedder.from_config(cfg).eval()
    ie.load_state_dict(_sub(arrays, "input_embedder"), strict=True)
    re = RecyclingEmbedder.from_config(cfg).eval()
    re.load_state_dict(_sub(arrays, "recycling_embedder"), strict=True)
    ee = ExtraMSAEmbedder.from_config(cfg).eval()
    ee.load_state_dict(_sub(arrays, "extra_msa_embedder"), strict=True)
    n = arrays["input/aatype"].shape[0]
    with torch.no_grad():
        for k in range(meta["num_iterations"]):
            b = _pass_batch(arrays, k)
            m, z = ie(b["target_feat"], b["residue_index"], b["msa_feat"])
            assert_close_scaled(m, _inter(arrays, f"input_embedder/iter{k}/0"), MODULE, name=f"ie m {k}")
            assert_close_scaled(z, _inter(arrays, f"input_embedder/iter{k}/1"), MODULE, name=f"ie z {k}")
            if k == 0:
                m_prev, z_prev, x_prev = torch.zeros(n, cfg.c_m), torch.zeros(n, n, cfg.c_z), torch.zeros(n, 3)
            else:
                m_prev = _inter(arrays, f"evoformer/iter{k - 1}/0")[0]
                z_prev = _inter(arrays, f"evoformer/iter{k - 1}/1")
                # previous pseudo-β from the final atom14 positions: CB (atom14 index 4), CA
                # (index 1) for Gly; missing atoms (incl. the padding residue) are zero.
                pos = _inter(arrays, f"structure_module_positions/iter{k - 1}/positions")[-1]
                pos = pos * b["atom14_atom_exists"][..., None]
                x_prev = torch.where((b["aatype"] == 7)[:, None], pos[:, 1], pos[:, 4])
            m_up, z_up = re(m_prev, z_prev, x_prev)
            assert_close_scaled(m_up, _inter(arrays, f"recycling_embedder/iter{k}/0"), MODULE, name=f"re m {k}")
            assert_close_scaled(z_up, _inter(arrays, f"recycling_embedder/iter{k}/1"), MODULE, name=f"re z {k}")
            e = ee(build_extra_msa_feat(b))
            assert_close_scaled(e, _inter(arrays, f"extra_msa_embedder/iter{k}"), MODULE, name=f"ee {k}")


def _template_embedder(arrays, cfg, dtype=torch.float32):
    te = TemplateEmbedder.from_config(cfg).eval()
    te.load_state_dict(_sub(arrays, "template_embedder"), strict=True)
    return te.to(dtype)


def test_model_template_embedder_every_pass(tiny_templ):
    # z before template embedding = input-embedder z + recycling z update, both captured per pass.
    arrays, meta, cfg = tiny_templ
    te = _template_embedder(arrays, cfg)
    with torch.no_grad():
        for k in range(meta["num_iterations"]):
            b = _pass_batch(arrays, k)
            z = _inter(arrays, f"input_embedder/iter{k}/1") + _inter(arrays, f"recycling_embedder/iter{k}/1")
            pair_mask = b["seq_mask"][:, None] * b["seq_mask"][None, :]
            for cs in ((None, 2) if k == 0 else (None,)):
                out = te(b, z, pair_mask, chunk_size=cs)
                assert_close_scaled(out.pair, _inter(arrays, f"template_embedder/iter{k}/template_pair_embedding"),
                                    MODULE, name=f"template pair {k} chunk={cs}")
                assert_close_scaled(out.single, _inter(arrays, f"template_embedder/iter{k}/template_single_embedding"),
                                    MODULE, name=f"template single {k}")
            torch.testing.assert_close(out.single_mask, b["template_torsion_angles_mask"][..., 2])


def test_template_embedder_no_templates_and_bf16(tiny_templ):
    arrays, _meta, cfg = tiny_templ
    b = _pass_batch(arrays, 0)
    z = _inter(arrays, "input_embedder/iter0/1") + _inter(arrays, "recycling_embedder/iter0/1")
    pair_mask = b["seq_mask"][:, None] * b["seq_mask"][None, :]
    ref = _inter(arrays, "template_embedder/iter0/template_pair_embedding")
    with torch.no_grad():
        empty = dict(b, template_mask=torch.zeros_like(b["template_mask"]))
        assert torch.count_nonzero(_template_embedder(arrays, cfg)(empty, z, pair_mask).pair) == 0
        none = {k: v[:0] if k.startswith("template_") else v for k, v in b.items()}
        out0 = _template_embedder(arrays, cfg)(none, z, pair_mask)
        assert torch.count_nonzero(out0.pair) == 0 and out0.single.shape == (0, z.shape[0], cfg.c_m)

        # bf16 run vs the fp32 run on bf16-rounded weights and inputs: the fixture itself moves by
        # ~12% of its max under that rounding alone (random weights, 2 blocks, attention).
        te = _template_embedder(arrays, cfg)
        te_rounded, b_rounded = _round_to_bf16(te, b)
        rounded = te_rounded(b_rounded, z.to(torch.bfloat16).float(), pair_mask)
        te16 = copy.deepcopy(te).to(torch.bfloat16)
        b16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in b.items()}
        out = te16(b16, z.to(torch.bfloat16), pair_mask.to(torch.bfloat16))
    assert out.pair.dtype == torch.bfloat16 and out.single.dtype == torch.bfloat16
    assert_close_scaled(out.pair.float(), rounded.pair, BF16_MODULE, name="template pair bf16")
    assert_close_scaled(out.single.float(), rounded.single, BF16_MODULE, name="template single bf16")
    assert_close_scaled(out.single.float(), _inter(arrays, "template_embedder/iter0/template_single_embedding"),
                        BF16_MODULE, name="template single bf16 vs fixture")
    assert (out.pair.float() - ref).abs().max() < 0.25 * ref.abs().max()


def test_template_embedder_missing_feature(tiny_templ):
    arrays, _meta, cfg = tiny_templ
    te = _template_embedder(arrays, cfg)
    b = _pass_batch(arrays, 0)
    del b["template_pseudo_beta"]
    n = b["aatype"].shape[0]
    with pytest.raises(KeyError, match="template_pseudo_beta"):
        te(b, torch.zeros(n, n, cfg.c_z), torch.ones(n, n))
