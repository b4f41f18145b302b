"""Output heads and confidence functions against the OpenFold golden fixtures."""

import pytest
import torch
from testutil import load_module_fixture
from tolerances import MODULE, assert_close_scaled

from sparkfold.model import heads
from sparkfold.model.confidence import compute_plddt, compute_predicted_aligned_error, compute_tm


def _params(arrays):
    return {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("param/")}


SINGLE_HEADS = {
    "lddt_head": lambda c: heads.PerResidueLDDTCaPredictor(c["c_in"], c["c_hidden"], c["no_bins"]),
    "distogram_head": lambda c: heads.DistogramHead(c["c_z"], c["no_bins"]),
    "masked_msa_head": lambda c: heads.MaskedMSAHead(c["c_m"], c["c_out"]),
    "experimentally_resolved_head": lambda c: heads.ExperimentallyResolvedHead(c["c_s"], c["c_out"]),
    "tm_head": lambda c: heads.TMScoreHead(c["c_z"], c["no_bins"]),
}


@pytest.mark.parametrize("name", sorted(SINGLE_HEADS))
def test_single_head(name):
    arrays, meta = load_module_fixture(name)
    module = SINGLE_HEADS[name](meta["ctor"]).eval()
    module.load_state_dict(_params(arrays), strict=True)
    with torch.no_grad():
        out = module(torch.tensor(arrays["input/x"]))
    assert_close_scaled(out, arrays["output/out"], MODULE, name=name)


def test_distogram_symmetric_tm_not():
    arrays, _ = load_module_fixture("distogram_head")
    z = torch.tensor(arrays["input/x"])
    dist = heads.DistogramHead(12, 64)
    dist.load_state_dict(_params(arrays))
    out = dist(z)
    torch.testing.assert_close(out, out.transpose(0, 1))
    tm = heads.TMScoreHead(12, 64)
    tm.load_state_dict(_params(arrays))
    assert not torch.allclose(tm(z), tm(z).transpose(0, 1))


def test_auxiliary_heads():
    arrays, meta = load_module_fixture("auxiliary_heads")
    c = meta["ctor"]
    module = heads.AuxiliaryHeads(
        c["lddt"]["c_in"], c["distogram"]["c_z"], c["masked_msa"]["c_m"],
        lddt_c_hidden=c["lddt"]["c_hidden"], lddt_num_bins=c["lddt"]["no_bins"],
        distogram_num_bins=c["distogram"]["no_bins"], masked_msa_c_out=c["masked_msa"]["c_out"],
        experimentally_resolved_c_out=c["experimentally_resolved"]["c_out"],
        tm_enabled=c["tm"]["enabled"], tm_num_bins=c["tm"]["no_bins"],
    ).eval()
    module.load_state_dict(_params(arrays), strict=True)
    t = {k[6:]: torch.tensor(v) for k, v in arrays.items() if k.startswith("input/")}
    with torch.no_grad():
        out = module({"sm": {"single": t["sm_single"]}, "pair": t["pair"], "msa": t["msa"],
                      "single": t["single"]})
    expected = {k[7:]: v for k, v in arrays.items() if k.startswith("output/")}
    assert set(out) == set(expected)
    for k, v in expected.items():
        assert_close_scaled(out[k], v, MODULE, name=k)


def test_auxiliary_heads_without_tm_has_no_tm_keys():
    module = heads.AuxiliaryHeads(20, 12, 16, lddt_c_hidden=8)
    assert not any(k.startswith("tm.") for k in module.state_dict())
    out = module({"sm": {"single": torch.randn(5, 20)}, "pair": torch.randn(5, 5, 12),
                  "msa": torch.randn(3, 5, 16), "single": torch.randn(5, 20)})
    assert "ptm_score" not in out and "predicted_aligned_error" not in out
    assert out["plddt"].shape == (5,)


def test_compute_plddt():
    arrays, _ = load_module_fixture("compute_plddt")
    out = compute_plddt(torch.tensor(arrays["input/logits"]))
    assert_close_scaled(out, arrays["output/plddt"], MODULE, name="plddt")


def test_compute_predicted_aligned_error():
    arrays, _ = load_module_fixture("compute_predicted_aligned_error")
    out = compute_predicted_aligned_error(torch.tensor(arrays["input/logits"]))
    for k in ("aligned_confidence_probs", "predicted_aligned_error", "max_predicted_aligned_error"):
        assert_close_scaled(out[k], arrays[f"output/{k}"], MODULE, name=k)
    assert float(out["max_predicted_aligned_error"]) == pytest.approx(31.75)


def test_compute_tm():
    arrays, _ = load_module_fixture("compute_tm")
    logits = torch.tensor(arrays["input/logits"])
    weights = torch.tensor(arrays["input/residue_weights"])
    assert_close_scaled(compute_tm(logits), arrays["output/ptm_no_weights"], MODULE, name="ptm")
    assert_close_scaled(compute_tm(logits, residue_weights=weights), arrays["output/ptm_weighted"],
                        MODULE, name="ptm_weighted")


def test_compute_tm_batched_matches_unbatched():
    logits = torch.randn(3, 7, 7, 64)
    weights = (torch.rand(3, 7) > 0.3).float()
    batched = compute_tm(logits, residue_weights=weights)
    single = torch.stack([compute_tm(logits[i], residue_weights=weights[i]) for i in range(3)])
    torch.testing.assert_close(batched, single)


def test_compute_iptm_only_counts_interchain_pairs():
    torch.manual_seed(0)
    logits = torch.randn(6, 6, 64)
    asym = torch.tensor([0, 0, 0, 1, 1, 1])
    iptm = compute_tm(logits, asym_id=asym, interface=True)
    # Changing intra-chain logits must not change ipTM.
    perturbed = logits.clone()
    perturbed[:3, :3] += torch.randn(3, 3, 64)
    perturbed[3:, 3:] += torch.randn(3, 3, 64)
    torch.testing.assert_close(compute_tm(perturbed, asym_id=asym, interface=True), iptm)
    with pytest.raises(ValueError, match="asym_id"):
        compute_tm(logits, interface=True)


def test_confidence_from_bf16_logits_is_float32():
    logits = torch.randn(4, 50).bfloat16()
    assert compute_plddt(logits).dtype == torch.float32


def test_pair_sized_confidence_in_row_blocks_matches_whole(monkeypatch):
    """Blocks of one row (distogram symmetrised in place block pair by block pair; pTM and PAE
    summed per row block) give the whole-tensor formulas' values."""
    from sparkfold.model import confidence

    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 9, 9, 64, generator=gen)
    probs = torch.softmax(logits, dim=-1)
    centres = confidence.aligned_error_bin_centers()
    whole_pae = torch.sum(probs * centres, dim=-1)
    whole_tm = compute_tm(logits)
    monkeypatch.setattr(confidence, "BLOCK_BYTES", 1)  # one row (distogram: 3x3 blocks)
    assert len(confidence.row_blocks(logits)) == 9
    out = compute_predicted_aligned_error(logits)
    torch.testing.assert_close(out["predicted_aligned_error"], whole_pae, rtol=1e-6, atol=1e-6)
    assert torch.equal(out["aligned_confidence_probs"], probs)
    torch.testing.assert_close(compute_tm(logits), whole_tm, rtol=1e-6, atol=1e-6)
    sym = heads.symmetrise_(logits.clone())
    assert torch.equal(sym, logits + logits.transpose(-2, -3))
    monkeypatch.setattr(confidence, "BLOCK_BYTES", 4 * 64 * 4 * 9)  # 4 rows: 6x6 blocks
    assert torch.equal(heads.symmetrise_(logits.clone()), logits + logits.transpose(-2, -3))
