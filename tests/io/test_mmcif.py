"""ModelCIF writer (modelcif) and gemmi reader."""

import sys

import numpy as np
import pytest

pytest.importorskip("modelcif", reason="modelcif is an optional dependency (sparkfold[report])")
gemmi = pytest.importorskip("gemmi")

from sparkfold.io.deps import MissingDependencyError
from sparkfold.io.mmcif import MmcifParseError, read_mmcif, to_mmcif, write_mmcif


def test_round_trip_with_gemmi(tmp_path, prediction):
    pred = prediction.replace(residue_index=prediction.residue_index + 3)
    path = write_mmcif(tmp_path / "m.cif", pred)
    back = read_mmcif(path)
    np.testing.assert_array_equal(back.aatype, pred.aatype)
    np.testing.assert_array_equal(back.residue_index, pred.residue_index)
    np.testing.assert_array_equal(back.atom_mask, pred.atom_mask)
    expected = pred.atom_positions * pred.atom_mask[..., None]
    np.testing.assert_allclose(back.atom_positions, expected, atol=5e-4)
    np.testing.assert_allclose(back.plddt, pred.plddt, atol=5e-3)
    assert back.ptm == pytest.approx(pred.ptm, abs=1e-3)


def test_plddt_is_local_metric_and_bfactor(prediction):
    text = to_mmcif(prediction)
    block = gemmi.cif.read_string(text).sole_block()
    metrics = {(r[1], r[2]): r[0] for r in block.find("_ma_qa_metric.", ["id", "type", "mode"])}
    assert {("pLDDT", "local"), ("pLDDT", "global"), ("pTM", "global")} <= set(metrics)
    local = block.find("_ma_qa_metric_local.", ["label_seq_id", "metric_id", "metric_value"])
    values = [float(r[2]) for r in local if r[1] == metrics[("pLDDT", "local")]]
    np.testing.assert_allclose(values, prediction.plddt, atol=5e-3)
    structure = gemmi.make_structure_from_block(block)
    ca = [res["CA"][0].b_iso for res in structure[0]["A"]]
    np.testing.assert_allclose(ca, prediction.plddt, atol=5e-3)
    glob = {r[0]: float(r[1]) for r in block.find("_ma_qa_metric_global.", ["metric_id", "metric_value"])}
    assert glob[metrics[("pLDDT", "global")]] == pytest.approx(prediction.mean_plddt, abs=5e-3)


def test_pae_as_local_pairwise(make_pred):
    pred = make_pred("ACDEFG")
    block = gemmi.cif.read_string(to_mmcif(pred, include_pae=True)).sole_block()
    rows = block.find("_ma_qa_metric_local_pairwise.", ["label_seq_id_1", "label_seq_id_2", "metric_value"])
    assert len(rows) == 36
    pae = np.zeros((6, 6))
    for r in rows:
        pae[int(r[0]) - 1, int(r[1]) - 1] = float(r[2])
    np.testing.assert_allclose(pae, pred.pae, atol=5e-3)


def test_two_chains_and_unknown_residue(tmp_path, make_pred):
    pred = make_pred("ACDWGHKL")
    pred = pred.replace(chain_index=np.array([0, 0, 0, 0, 1, 1, 1, 1]), chain_ids=("A", "B"))
    back = read_mmcif(write_mmcif(tmp_path / "ab.cif", pred))
    assert back.chain_ids == ("A", "B") and back.sequence == "ACDWGHKL"
    np.testing.assert_array_equal(back.chain_index, pred.chain_index)
    # X (no atoms in atom37) stays in the entity sequence as UNK
    text = to_mmcif(make_pred("ACXG"))
    block = gemmi.cif.read_string(text).sole_block()
    assert list(block.find_values("_entity_poly_seq.mon_id")) == ["ALA", "CYS", "UNK", "GLY"]


def test_missing_modelcif_is_a_clear_error(monkeypatch, prediction):
    monkeypatch.setitem(sys.modules, "modelcif", None)
    with pytest.raises(MissingDependencyError, match="pip install"):
        to_mmcif(prediction)


def test_unreadable_file(tmp_path):
    bad = tmp_path / "bad.cif"
    bad.write_text("this is not cif")
    with pytest.raises(MmcifParseError):
        read_mmcif(bad)
