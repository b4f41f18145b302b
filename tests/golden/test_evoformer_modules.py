"""Golden tests: Evoformer-family modules against the OpenFold fixtures (tests/fixtures/modules).

Each case loads the fixture's ``param/*`` strictly, calls the module as in ``meta.call`` on
``input/*`` and compares every ``output/*`` at the module tolerance, unchunked and with
``chunk_size = meta.chunk_size``; a bf16 copy of the module must stay within ``BF16_MODULE``
(scale-relative) of the fp32 reference outputs.
"""

import pytest
import torch
from testutil import load_module_fixture
from tolerances import BF16_MODULE, MODULE, assert_close_scaled

from sparkfold.model.evoformer import EvoformerBlock
from sparkfold.model.extra_msa import ExtraMSABlock
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


def _block_kwargs(c):
    return {
        "c_m": c["c_m"],
        "c_z": c["c_z"],
        "c_hidden_msa_att": c["c_hidden_msa_att"],
        "c_hidden_opm": c["c_hidden_opm"],
        "c_hidden_mul": c["c_hidden_mul"],
        "c_hidden_pair_att": c["c_hidden_pair_att"],
        "num_heads_msa": c["no_heads_msa"],
        "num_heads_pair": c["no_heads_pair"],
        "transition_n": c["transition_n"],
        "opm_first": c["opm_first"],
        "inf": c["inf"],
    }


def _single(key, *args):
    """A call returning ``{"out": module(input/<args>..., mask=input/mask, chunk_size=cs)}``."""

    def call(mod, x, cs):
        return {"out": mod(*(x[a] for a in args), mask=x["mask"], chunk_size=cs)}

    return call


def _transition(arg):
    def call(mod, x, cs):
        return {
            "masked": mod(x[arg], mask=x["mask"], chunk_size=cs),
            "mask_none": mod(x[arg], mask=None, chunk_size=cs),
        }

    return call


def _block(mod, x, cs):
    m, z = mod(x["m"], x["z"], msa_mask=x["msa_mask"], pair_mask=x["pair_mask"], chunk_size=cs)
    return {"m": m, "z": z}


# fixture name -> (constructor from meta.ctor, call)
CASES = {
    "msa_row_attention_with_pair_bias": (
        lambda c: MSARowAttentionWithPairBias(
            c["c_m"], c["c_z"], c["c_hidden"], c["no_heads"], inf=c["inf"]
        ),
        _single("out", "m", "z"),
    ),
    "msa_column_attention": (
        lambda c: MSAColumnAttention(c["c_m"], c["c_hidden"], c["no_heads"], inf=c["inf"]),
        _single("out", "m"),
    ),
    "msa_column_global_attention": (
        lambda c: MSAColumnGlobalAttention(
            c["c_in"], c["c_hidden"], c["no_heads"], inf=c["inf"], eps=c["eps"]
        ),
        _single("out", "m"),
    ),
    "msa_transition": (lambda c: Transition(c["c_m"], c["n"]), _transition("m")),
    "pair_transition": (lambda c: Transition(c["c_z"], c["n"]), _transition("z")),
    "outer_product_mean": (
        lambda c: OuterProductMean(c["c_m"], c["c_z"], c["c_hidden"], eps=c["eps"]),
        _single("out", "m"),
    ),
    "triangle_multiplication_outgoing": (
        lambda c: TriangleMultiplication(c["c_z"], c["c_hidden"], direction="outgoing"),
        _single("out", "z"),
    ),
    "triangle_multiplication_incoming": (
        lambda c: TriangleMultiplication(c["c_z"], c["c_hidden"], direction="incoming"),
        _single("out", "z"),
    ),
    "triangle_attention_starting_node": (
        lambda c: TriangleAttention(
            c["c_in"], c["c_hidden"], c["no_heads"], node="starting", inf=c["inf"]
        ),
        _single("out", "x"),
    ),
    "triangle_attention_ending_node": (
        lambda c: TriangleAttention(
            c["c_in"], c["c_hidden"], c["no_heads"], node="ending", inf=c["inf"]
        ),
        _single("out", "x"),
    ),
    "evoformer_block": (lambda c: EvoformerBlock(**_block_kwargs(c)), _block),
    "extra_msa_block": (lambda c: ExtraMSABlock(**_block_kwargs(c), eps=c["eps"]), _block),
}


def _setup(name, dtype=torch.float32):
    arrays, meta = load_module_fixture(name)
    make, call = CASES[name]
    mod = make(meta["ctor"])
    mod.load_state_dict(
        {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("param/")}, strict=True
    )
    mod = mod.eval().to(dtype)
    inputs = {k[6:]: torch.tensor(v).to(dtype) for k, v in arrays.items() if k.startswith("input/")}
    expected = {k[7:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("output/")}
    return mod, call, inputs, expected, meta


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("chunked", [False, True], ids=["unchunked", "chunked"])
def test_module_matches_openfold(name, chunked):
    mod, call, inputs, expected, meta = _setup(name)
    chunk_size = meta["chunk_size"] if chunked else None
    assert not chunked or chunk_size, f"{name}: fixture has no meta.chunk_size"
    with torch.no_grad():
        out = call(mod, inputs, chunk_size)
    assert set(out) == set(expected), f"{name}: outputs {sorted(out)} != fixture {sorted(expected)}"
    for key, value in out.items():
        assert value.dtype == torch.float32
        assert_close_scaled(
            value, expected[key], level=MODULE, name=f"{name}/{key} chunk={chunk_size}"
        )


@pytest.mark.parametrize("name", sorted(CASES))
def test_chunked_equals_unchunked(name):
    """Chunking changes only the layout: chunked within the module tolerance of unchunked."""
    mod, call, inputs, _, meta = _setup(name)
    with torch.no_grad():
        ref = call(mod, inputs, None)
        for chunk_size in (1, meta["chunk_size"], 4):
            out = call(mod, inputs, chunk_size)
            for key in ref:
                assert_close_scaled(
                    out[key], ref[key], level=MODULE, name=f"{name}/{key} chunk={chunk_size}"
                )


@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16_close_to_fp32_reference(name):
    """bf16 weights and inputs (LN statistics and softmax in fp32 via the kernels) vs the fp32 fixture."""
    mod, call, inputs, expected, _ = _setup(name, dtype=torch.bfloat16)
    with torch.no_grad():
        out = call(mod, inputs, None)
    for key, value in out.items():
        assert value.dtype == torch.bfloat16, (
            f"{name}/{key}: bf16 in must give bf16 out, got {value.dtype}"
        )
        assert torch.isfinite(value.float()).all()
        assert_close_scaled(
            value.float(), expected[key], level=BF16_MODULE, name=f"{name}/{key} bf16"
        )


# ------------------------------------------------------------------ whole stacks (model fixtures)
def _model_stack_inputs(arrays, templates, it):
    """Inputs of the extra-MSA stack and the Evoformer at trunk pass ``it``, rebuilt from ``inter/*``."""

    def t(key):
        return torch.tensor(arrays[key])

    def inter(module, *rest):
        return t("/".join(["inter", module, f"iter{it}", *rest]))

    seq = t("input/seq_mask")[..., it]
    pair_mask = seq[:, None] * seq[None, :]  # [N, N]
    z = inter("input_embedder", "1") + inter("recycling_embedder", "1")
    m = inter("input_embedder", "0").clone()
    m[0] += inter("recycling_embedder", "0")
    msa_mask = t("input/msa_mask")[..., it]
    if templates:
        z = z + inter("template_embedder", "template_pair_embedding")
        m = torch.cat([m, inter("template_embedder", "template_single_embedding")], dim=0)
        msa_mask = torch.cat(
            [msa_mask, t("input/template_torsion_angles_mask")[:, :, 2, it]], dim=0
        )
    extra = {
        "m": inter("extra_msa_embedder"),
        "z": z,
        "msa_mask": t("input/extra_msa_mask")[..., it],
        "pair_mask": pair_mask,
    }
    evo = {"m": m, "z": inter("extra_msa_stack"), "msa_mask": msa_mask, "pair_mask": pair_mask}
    expected = {
        "extra_z": inter("extra_msa_stack"),
        "m": inter("evoformer", "0"),
        "z": inter("evoformer", "1"),
        "s": inter("evoformer", "2"),
    }
    return extra, evo, expected


@pytest.mark.parametrize("templates", [True, False], ids=["templ", "notempl"])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_stacks_match_model_intermediates(templates, chunk_size):
    """ExtraMSAStack and EvoformerStack (from_config, tiny preset) vs the whole-model fixtures' hooks."""
    from testutil import FIXTURES, load_npz

    from sparkfold.config import ModelConfig
    from sparkfold.model.evoformer import EvoformerStack
    from sparkfold.model.extra_msa import ExtraMSAStack

    arrays, _ = load_npz(FIXTURES / f"model_tiny_{'templ' if templates else 'notempl'}.npz")
    cfg = ModelConfig.tiny(templates=templates)
    stacks = {
        "evoformer.": EvoformerStack.from_config(cfg.evoformer, c_s=cfg.c_s),
        "extra_msa_stack.": ExtraMSAStack.from_config(cfg.extra_msa_stack),
    }
    for prefix, stack in stacks.items():
        n = len("param/" + prefix)
        stack.load_state_dict(
            {k[n:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("param/" + prefix)},
            strict=True,
        )
        stack.eval()
    for it in (0, 3):
        extra, evo, expected = _model_stack_inputs(arrays, templates, it)
        with torch.no_grad():
            z = stacks["extra_msa_stack."](**extra, chunk_size=chunk_size)
            m, z2, s = stacks["evoformer."](**evo, chunk_size=chunk_size)
        assert_close_scaled(z, expected["extra_z"], level=MODULE, name=f"extra_msa_stack iter{it}")
        for key, value in (("m", m), ("z", z2), ("s", s)):
            assert_close_scaled(
                value, expected[key], level=MODULE, name=f"evoformer/{key} iter{it}"
            )


# ------------------------------------------------------------------ state-dict layout (full size)
def _tsv_rows(preset, prefix):
    from testutil import shared_path

    rows = {}
    with open(shared_path("spec", "openfold_state_dict.tsv")) as fh:
        next(fh)
        for line in fh:
            key, shape, _, presets = line.rstrip("\n").split("\t")
            if key.startswith(prefix) and (presets == "ALL" or preset in presets.split(",")):
                rows[key[len(prefix) :]] = tuple(int(d) for d in shape.split("x")) if shape else ()
    return rows


@pytest.mark.parametrize("preset", ["model_1_ptm", "model_3"])
def test_full_size_state_dict_equals_openfold(preset):
    """Keys and shapes of the full-size stacks equal OpenFold's (built on the meta device: no memory)."""
    from sparkfold.config import ModelConfig
    from sparkfold.model.evoformer import EvoformerStack
    from sparkfold.model.extra_msa import ExtraMSAStack

    cfg = ModelConfig.from_preset(preset)
    with torch.device("meta"):
        stacks = {
            "evoformer.": EvoformerStack.from_config(cfg.evoformer, c_s=cfg.c_s),
            "extra_msa_stack.": ExtraMSAStack.from_config(cfg.extra_msa_stack),
        }
    for prefix, stack in stacks.items():
        ours = {k: tuple(v.shape) for k, v in stack.state_dict().items()}
        expected = _tsv_rows(preset, prefix)
        assert sorted(set(ours) ^ set(expected)) == [], f"{prefix} key mismatch"
        assert ours == expected
