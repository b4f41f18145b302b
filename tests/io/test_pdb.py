"""PDB writer/reader: AF2/OpenFold layout, round trip, atomic writes."""

import os

import numpy as np
import pytest
from testutil import shared_path

from sparkfold.io.atomic import atomic_write
from sparkfold.io.pdb import PdbParseError, parse_pdb, read_pdb, to_pdb, write_pdb

OPENFOLD_PDB = ("data", "openfold_examples", "examples", "monomer", "sample_predictions",
                "6KWC_1_model_1_ptm_unrelaxed.pdb")


def test_reproduces_openfold_unrelaxed_pdb_byte_for_byte():
    path = shared_path(*OPENFOLD_PDB)
    text = path.read_text()
    pred = parse_pdb(text)
    assert pred.num_residues == 191 and pred.chain_ids == ("A",)
    lines = text.splitlines()
    remark = lines[0][len("REMARK "):].rstrip()
    parents = lines[1].split()[1:]
    assert to_pdb(pred, remark=remark, parents=parents) == text


def test_round_trip(prediction):
    text = to_pdb(prediction)
    back = parse_pdb(text)
    np.testing.assert_array_equal(back.aatype, prediction.aatype)
    np.testing.assert_array_equal(back.residue_index, prediction.residue_index)
    np.testing.assert_array_equal(back.atom_mask, prediction.atom_mask)
    expected = prediction.atom_positions * prediction.atom_mask[..., None]
    np.testing.assert_allclose(back.atom_positions, expected, atol=5e-4)
    np.testing.assert_allclose(back.plddt, prediction.plddt, atol=5e-3)
    assert back.pae is None and back.ptm is None


def test_layout_occupancy_bfactor_and_numbering(prediction):
    text = to_pdb(prediction.replace(residue_index=prediction.residue_index + 9))
    lines = text.splitlines()
    assert all(len(line) == 80 for line in lines)
    assert lines[0].startswith("MODEL     1") and lines[-2].startswith("ENDMDL") and lines[-1].startswith("END")
    atoms = [line for line in lines if line.startswith("ATOM")]
    assert len(atoms) == int(prediction.atom_mask.sum())
    first = atoms[0]
    assert first[12:16] == " N  " and first[17:20] == "MET" and int(first[22:26]) == 10
    assert first[54:60] == "  1.00"
    assert float(first[60:66]) == pytest.approx(round(float(prediction.plddt[0]), 2))
    # atom37 order within a residue: N, CA, C, CB, O
    assert [a[12:16].strip() for a in atoms[:5]] == ["N", "CA", "C", "CB", "O"]
    assert [int(a[6:11]) for a in atoms] == list(range(1, len(atoms) + 1))


def test_ter_after_each_chain(prediction):
    n = prediction.num_residues
    chain_index = (np.arange(n) >= n // 2).astype(int)
    two = prediction.replace(chain_index=chain_index, chain_ids=("A", "B"))
    text = to_pdb(two)
    ter = [line for line in text.splitlines() if line.startswith("TER")]
    assert len(ter) == 2 and ter[0][21] == "A" and ter[1][21] == "B"
    back = parse_pdb(text)
    assert back.chain_ids == ("A", "B")
    np.testing.assert_array_equal(back.chain_index, chain_index)
    assert parse_pdb(text, chain="B").num_residues == n - n // 2


def test_parse_skips_hydrogens_hetatm_and_alt_locations():
    lines = [
        "ATOM      1  N   ALA A   1       1.000   2.000   3.000  1.00 80.00           N",
        "ATOM      2  CA AALA A   1       2.000   2.000   3.000  0.50 80.00           C",
        "ATOM      3  CA BALA A   1       9.000   9.000   9.000  0.50 10.00           C",
        "ATOM      4  H   ALA A   1       0.000   0.000   0.000  1.00 80.00           H",
        "HETATM    5  O   HOH A 101       0.000   0.000   0.000  1.00  0.00           O",
        "END",
    ]
    pred = parse_pdb("\n".join(lines))
    assert pred.num_residues == 1 and pred.sequence == "A"
    assert pred.atom_mask[0].sum() == 2
    np.testing.assert_allclose(pred.atom_positions[0, 1], [2, 2, 3])
    assert pred.plddt[0] == pytest.approx(80.0)


def test_parse_errors_are_clear(tmp_path):
    with pytest.raises(PdbParseError, match="no ATOM records"):
        parse_pdb("HEADER nothing\nEND\n")
    bad = "ATOM      1  N   ALA A   1       1.0xx   2.000   3.000  1.00 80.00           N"
    with pytest.raises(PdbParseError, match="line 1"):
        parse_pdb(bad)
    with pytest.raises(PdbParseError, match="cannot read"):
        read_pdb(tmp_path / "missing.pdb")


def test_write_pdb_is_atomic(tmp_path, prediction):
    path = write_pdb(tmp_path / "out" / "x.pdb", prediction)
    assert path.read_text() == to_pdb(prediction)
    assert sorted(os.listdir(path.parent)) == ["x.pdb"]  # no temp file left
    assert read_pdb(path).model_name == "x"


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    dest = tmp_path / "f.txt"
    atomic_write(dest, "old")
    with pytest.raises(TypeError):
        atomic_write(dest, 123)
    target_dir = tmp_path / "adir"
    target_dir.mkdir()
    (target_dir / "inner").write_text("x")
    with pytest.raises(OSError):
        atomic_write(target_dir, b"data")  # cannot replace a non-empty directory
    assert dest.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["adir", "f.txt"]
