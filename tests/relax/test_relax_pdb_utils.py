"""The minimal PDB reader/writer used by relaxation."""

import numpy as np
import pytest

from sparkfold.relax.errors import RelaxError
from sparkfold.relax.pdb_utils import Residue, Structure, format_pdb, parse_pdb


def test_round_trip_keeps_atoms_ids_b_factors_and_header(peptide, pdb_text):
    text = pdb_text(peptide("GSAK"), header=("REMARK one", "PARENT 1abc_A"))
    structure = parse_pdb(text)
    assert structure.header == ("REMARK one", "PARENT 1abc_A")
    assert [r.name for r in structure.residues] == ["GLY", "SER", "ALA", "LYS"]
    assert [r.number for r in structure.residues] == [1, 2, 3, 4]
    assert structure.residues[1].atom_names == ("N", "CA", "C", "O", "CB")
    np.testing.assert_allclose(structure.residues[2].b_factors, 52.0)

    again = parse_pdb(format_pdb(structure))
    assert again.header == structure.header
    for a, b in zip(structure.residues, again.residues):
        assert (a.key, a.name, a.atom_names, a.elements) == (
            b.key,
            b.name,
            b.atom_names,
            b.elements,
        )
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-3)
        np.testing.assert_allclose(a.b_factors, b.b_factors)


def test_writer_layout_matches_af2():
    res = Residue(
        "A",
        7,
        "",
        "ARG",
        False,
        ("N", "HH11", "OXT"),
        ("N", "H", "O"),
        np.array([[1.0, 2.0, 3.0], [-10.5, 0.0, 100.25], [0, 0, 0]]),
        np.array([90.5, 90.5, 90.5]),
    )
    lines = format_pdb(Structure((res,), ("REMARK x",))).splitlines()
    assert all(len(line) == 80 for line in lines)
    assert lines[0].rstrip() == "REMARK x"
    assert lines[1].rstrip() == "MODEL     1"
    assert (
        lines[2].rstrip()
        == "ATOM      1  N   ARG A   7       1.000   2.000   3.000  1.00 90.50           N"
    )
    assert lines[3][12:16] == "HH11"  # four-character names start in column 13
    assert lines[5].startswith("TER       4      ARG A   7")
    assert [line.rstrip() for line in lines[-2:]] == ["ENDMDL", "END"]


def test_first_model_and_first_alt_loc_only():
    text = "\n".join(
        [
            "MODEL        1",
            "ATOM      1  N  AALA A   1       1.000   0.000   0.000  0.50 10.00           N",
            "ATOM      2  N  BALA A   1       9.000   0.000   0.000  0.50 10.00           N",
            "ATOM      3  CA  ALA A   1       2.000   0.000   0.000  1.00 10.00",
            "ENDMDL",
            "MODEL        2",
            "ATOM      1  N   ALA A   1       5.000   0.000   0.000  1.00 10.00           N",
            "ENDMDL",
        ]
    )
    (res,) = parse_pdb(text).residues
    assert res.atom_names == ("N", "CA")
    assert res.elements == ("N", "C")  # element guessed from the name when the column is empty
    np.testing.assert_allclose(res.positions[:, 0], [1.0, 2.0])


def test_hydrogens_are_recognised_and_dropped():
    text = "\n".join(
        [
            "ATOM      1  N   GLY A   1       1.000   0.000   0.000  1.00 10.00           N",
            "ATOM      2 1H   GLY A   1       1.500   0.000   0.000  1.00 10.00",
            "ATOM      3  HA2 GLY A   1       2.000   0.000   0.000  1.00 10.00           H",
        ]
    )
    (res,) = parse_pdb(text).residues
    assert res.elements == ("N", "H", "H")
    assert res.without_hydrogens().atom_names == ("N",)


def test_duplicate_residue_is_an_error(peptide, pdb_text):
    residues = peptide("GA")
    text = pdb_text(residues + [residues[0]])
    with pytest.raises(RelaxError, match="A 1 GLY appears twice"):
        parse_pdb(text)


def test_unreadable_line_and_empty_input():
    with pytest.raises(RelaxError, match="line 1"):
        parse_pdb("ATOM      1  N   GLY A   1       x.000   0.000   0.000  1.00 10.00           N")
    with pytest.raises(RelaxError, match="no ATOM or HETATM"):
        parse_pdb("REMARK nothing\nEND\n")
