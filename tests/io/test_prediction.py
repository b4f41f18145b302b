"""Prediction.from_model_output: recycling axis, padding removal, dtypes, errors."""

import dataclasses

import numpy as np
import pytest
import torch
from testutil import FIXTURES, load_npz

from sparkfold.io.prediction import Prediction, aatype_from_sequence, sequence_from_aatype


def _tiny_model_io():
    arrays, meta = load_npz(FIXTURES / "model_tiny_notempl.npz")
    batch = {k[6:]: arrays[k] for k in arrays if k.startswith("input/")}
    outputs = {k[7:]: arrays[k] for k in arrays if k.startswith("output/")}
    return batch, outputs, meta


def test_from_real_model_output_strips_padding_and_uses_last_recycle():
    batch, outputs, meta = _tiny_model_io()
    n_res = meta["dims"]["n_res"]
    assert batch["aatype"].shape[1] > 1 and meta["dims"]["n_pad"] > 0
    pred = Prediction.from_model_output(batch, outputs, "tiny")
    assert pred.num_residues == n_res
    np.testing.assert_array_equal(pred.aatype, batch["aatype"][:n_res, -1])
    np.testing.assert_array_equal(pred.residue_index, batch["residue_index"][:n_res, -1])
    np.testing.assert_array_equal(pred.atom_positions, outputs["final_atom_positions"][:n_res])
    np.testing.assert_array_equal(pred.plddt, outputs["plddt"][:n_res])
    np.testing.assert_array_equal(pred.pae, outputs["predicted_aligned_error"][:n_res, :n_res])
    assert pred.ptm == pytest.approx(float(outputs["ptm_score"]))
    assert pred.max_pae == pytest.approx(float(outputs["max_predicted_aligned_error"]))
    assert pred.chain_ids == ("A",) and set(pred.chain_index.tolist()) == {0}
    assert pred.model_name == "tiny" and len(pred.sequence) == n_res


def test_recycling_axis_last_slice_and_torch_bf16():
    n_pad, n = 6, 4
    aatype = torch.zeros(n_pad, 3, dtype=torch.long)
    aatype[:, -1] = torch.tensor([0, 7, 19, 20, 0, 0])  # earlier recycles hold other values
    residue_index = torch.arange(n_pad)[:, None].repeat(1, 3) * torch.tensor([5, 5, 1])
    seq_mask = torch.zeros(n_pad, 3)
    seq_mask[:n, -1] = 1
    batch = {"aatype": aatype, "residue_index": residue_index, "seq_mask": seq_mask}
    outputs = {
        "final_atom_positions": torch.randn(n_pad, 37, 3).to(torch.bfloat16),
        "final_atom_mask": torch.ones(n_pad, 37),
        "plddt": torch.linspace(10, 90, n_pad),
        "predicted_aligned_error": None,
    }
    pred = Prediction.from_model_output(batch, outputs, "m")
    assert pred.sequence == "AGVX"
    np.testing.assert_array_equal(pred.residue_index, [0, 1, 2, 3])
    assert pred.atom_positions.dtype == np.float32 and pred.atom_positions.shape == (4, 37, 3)
    assert pred.pae is None and pred.ptm is None and pred.max_pae is None


def test_leading_batch_dim_and_chains_from_asym_id():
    n = 5
    batch = {"aatype": np.zeros((1, n, 2), int), "residue_index": np.arange(n)[None, :, None].repeat(2, -1),
             "asym_id": np.array([1, 1, 2, 2, 2])[None, :, None].repeat(2, -1)}
    outputs = {"final_atom_positions": np.zeros((1, n, 37, 3)), "final_atom_mask": np.ones((1, n, 37)),
               "plddt": np.full((1, n), 50.0)}
    pred = Prediction.from_model_output(batch, outputs, "m")
    assert pred.chain_ids == ("A", "B")
    assert pred.residue_chain_ids == ["A", "A", "B", "B", "B"]


def test_missing_keys_and_bad_shapes_are_named():
    batch, outputs, _ = _tiny_model_io()
    with pytest.raises(KeyError, match="plddt"):
        Prediction.from_model_output(batch, {k: v for k, v in outputs.items() if k != "plddt"}, "m")
    with pytest.raises(KeyError, match="aatype"):
        Prediction.from_model_output({"residue_index": batch["residue_index"]}, outputs, "m")
    bad = dict(batch, aatype=batch["aatype"][:-2])
    with pytest.raises(ValueError, match="does not fit"):
        Prediction.from_model_output(bad, outputs, "m")


def test_prediction_is_frozen_and_validated(prediction):
    with pytest.raises(dataclasses.FrozenInstanceError):
        prediction.ptm = 0.1
    with pytest.raises(ValueError):
        prediction.plddt[0] = 1.0  # read-only array
    with pytest.raises(ValueError, match="atom_positions"):
        prediction.replace(atom_positions=np.zeros((3, 37, 3)))
    with pytest.raises(ValueError, match="chain_index"):
        prediction.replace(chain_index=np.full(prediction.num_residues, 1))
    b = prediction.b_factors()
    assert b.shape == (prediction.num_residues, 37)
    np.testing.assert_allclose(b[:, 1], prediction.plddt)  # CA carries the residue's pLDDT
    assert np.all(b[prediction.atom_mask == 0] == 0)


def test_sequence_conversion_round_trip():
    seq = "ARNDCQEGHILKMFPSTWYVX"
    assert sequence_from_aatype(aatype_from_sequence(seq)) == seq
    assert aatype_from_sequence("abz").tolist() == [0, 20, 20]
