"""Scores/PAE JSON formats, file names and ranking (ColabFold / AFDB conventions)."""

import json

import numpy as np
import pytest

from sparkfold.io.confidence import (
    OutputNames,
    confidence_json,
    model_tag,
    pae_json,
    rank_predictions,
    ranking_confidence,
    ranking_dict,
    safe_filename,
    scores_dict,
    scores_json,
    write_pae_json,
    write_scores_json,
)


def test_scores_keys_order_and_rounding(prediction):
    data = json.loads(scores_json(prediction))
    assert list(data) == ["plddt", "max_pae", "pae", "ptm"]
    np.testing.assert_allclose(data["plddt"], prediction.plddt, atol=0.005 + 1e-9)
    assert all(round(v, 2) == v for v in data["plddt"])
    assert all(round(v, 2) == v for row in data["pae"] for v in row)
    # max_pae is the largest PAE value of this model, not the 31.75 bin ceiling
    assert data["max_pae"] == float(prediction.pae.max()) != prediction.max_pae
    assert data["ptm"] == round(prediction.ptm, 2)
    assert ", " in scores_json(prediction)  # json.dumps default separators


def test_scores_without_pae_head(make_pred):
    data = scores_dict(make_pred(ptm=False))
    assert list(data) == ["plddt"]


def test_float32_values_print_as_two_decimals(make_pred):
    pred = make_pred("ACD").replace(plddt=np.array([12.34, 56.78, 90.12], dtype=np.float32))
    assert "12.34," in scores_json(pred) and "12.3400001" not in scores_json(pred)


def test_pae_json_styles(tmp_path, prediction):
    colab = json.loads(pae_json(prediction))
    assert isinstance(colab, dict)
    assert list(colab) == ["predicted_aligned_error", "max_predicted_aligned_error"]
    assert colab["max_predicted_aligned_error"] == float(prediction.pae.max())
    afdb_text = pae_json(prediction, style="afdb")
    afdb = json.loads(afdb_text)
    assert isinstance(afdb, list) and len(afdb) == 1 and " " not in afdb_text
    assert afdb[0]["max_predicted_aligned_error"] == 31.75
    assert all(isinstance(v, int) for row in afdb[0]["predicted_aligned_error"] for v in row)
    path = write_pae_json(tmp_path / "p.json", prediction)
    assert json.loads(path.read_text()) == colab
    assert json.loads(write_scores_json(tmp_path / "s.json", prediction).read_text())["ptm"] == 0.61


def test_pae_json_needs_pae(make_pred):
    with pytest.raises(ValueError, match="no PAE"):
        pae_json(make_pred(ptm=False))


def test_confidence_json_categories(make_pred):
    pred = make_pred("ACDE").replace(plddt=np.array([49.99, 50.0, 70.0, 90.0]))
    data = json.loads(confidence_json(pred))
    assert data["residueNumber"] == [1, 2, 3, 4]
    assert data["confidenceCategory"] == ["D", "L", "M", "H"]


def test_names():
    assert safe_filename("sp|P69905|HBA human/1 (x)") == "sp_P69905_HBA_human_1__x_"
    tag = model_tag("alphafold2_ptm", 1, 0)
    assert tag == "alphafold2_ptm_model_1_seed_000"
    names = OutputNames("job")
    assert names.unrelaxed_pdb(1, tag) == "job_unrelaxed_rank_001_alphafold2_ptm_model_1_seed_000.pdb"
    assert names.relaxed_pdb(12, tag) == "job_relaxed_rank_012_alphafold2_ptm_model_1_seed_000.pdb"
    assert names.scores_json(1, tag) == "job_scores_rank_001_alphafold2_ptm_model_1_seed_000.json"
    assert names.pae_json == "job_predicted_aligned_error_v1.json"
    assert (names.coverage_png, names.pae_png, names.plddt_png) == (
        "job_coverage.png", "job_pae.png", "job_plddt.png")
    assert names.unranked("unrelaxed", tag, "pdb") == "job_unrelaxed_alphafold2_ptm_model_1_seed_000.pdb"
    assert OutputNames.CONFIG_JSON == "config.json"
    assert OutputNames.from_header(" a b ").jobname == "a_b"
    with pytest.raises(ValueError, match="safe_filename"):
        OutputNames("a/b")
    with pytest.raises(ValueError):
        names.ranked("x", 0, tag, "pdb")
    with pytest.raises(ValueError):
        model_tag("alphafold2_ptm", 6)


def test_ranking(make_pred):
    a = make_pred("ACDE", name="a").replace(plddt=np.array([80.0] * 4), ptm=0.5)
    b = make_pred("ACDE", name="b").replace(plddt=np.array([70.0] * 4), ptm=0.9)
    c = make_pred("ACDE", name="c").replace(plddt=np.array([80.0] * 4), ptm=0.1)
    assert [p.model_name for p in rank_predictions([b, a, c])] == ["a", "c", "b"]
    assert [p.model_name for p in rank_predictions([a, b, c], "ptm")] == ["b", "a", "c"]
    assert ranking_confidence(b, "ptm") == pytest.approx(90.0)
    no_ptm = make_pred("ACDE", ptm=False, name="n")
    assert ranking_confidence(no_ptm, "ptm") == pytest.approx(no_ptm.mean_plddt)
    data = ranking_dict(rank_predictions([a, b], "ptm"), "ptm")
    assert data["order"] == ["b", "a"] and data["rank_by"] == "ptm"
    assert data["plddts"] == {"b": 70.0, "a": 80.0} and data["ptms"] == {"b": 0.9, "a": 0.5}
    with pytest.raises(ValueError):
        ranking_confidence(a, "iptm")
