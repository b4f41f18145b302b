"""Standardisation before PDBFixer: modified/unknown residues, heterogens, chain breaks."""

import numpy as np
import pytest

from sparkfold.relax import cleanup
from sparkfold.relax.errors import RelaxError
from sparkfold.relax.pdb_utils import parse_pdb


@pytest.fixture(autouse=True)
def _deps(relax_deps):
    """standardize() reads PDBFixer's substitution table."""


def _shifted(residues, first, offset):
    return [
        (name, number, {k: v + offset for k, v in atoms.items()} if i >= first else atoms, chain)
        for i, (name, number, atoms, chain) in enumerate(residues)
    ]


def _with_residue(residues, index, name, extra=None, drop=()):
    res = list(residues)
    _, number, atoms, chain = res[index]
    atoms = {k: v for k, v in atoms.items() if k not in drop}
    atoms.update(extra or {})
    res[index] = (name, number, atoms, chain)
    return res


def test_selenomethionine_becomes_methionine(peptide, pdb_text):
    residues = peptide("GAMAG")
    cb = residues[2][2]["CB"]
    residues = _with_residue(
        residues,
        2,
        "MSE",
        {"CG": cb + [1.0, 0.5, 0.0], "SE": cb + [2.0, 1.5, 0.0], "CE": cb + [3.5, 1.5, 0.0]},
    )
    prepared = cleanup.standardize(parse_pdb(pdb_text(residues, hetero=("MSE",))))
    met = prepared.structure.residues[2]
    assert met.name == "MET" and "SD" in met.atom_names and "SE" not in met.atom_names
    assert met.elements[met.atom_names.index("SD")] == "S"
    np.testing.assert_allclose(met.atom("SD"), cb + [2.0, 1.5, 0.0], atol=1e-3)
    assert prepared.alterations.replaced_residues == ("A 3 MSE->MET",)


def test_water_and_ligands_are_removed(peptide, pdb_text):
    residues = peptide("GAAG") + [
        ("HOH", 100, {"O": np.array([20.0, 0, 0])}, "A"),
        ("ZN", 101, {"ZN": np.array([25.0, 0, 0])}, "A"),
    ]
    prepared = cleanup.standardize(parse_pdb(pdb_text(residues, hetero=("HOH", "ZN"))))
    assert len(prepared.structure.residues) == 4
    assert prepared.alterations.removed_residues == ("A 100 HOH", "A 101 ZN")
    assert prepared.source_index == (0, 1, 2, 3)


@pytest.mark.parametrize("name", ["UNK", "XYZ", "DA"])
def test_unknown_residue_is_named(peptide, pdb_text, name):
    residues = _with_residue(peptide("GAAAG"), 2, name)
    with pytest.raises(
        RelaxError, match=f"residue A 3 {name} is not a standard amino acid"
    ) as info:
        cleanup.standardize(parse_pdb(pdb_text(residues)))
    assert info.value.fix


def test_missing_backbone_atom_is_a_broken_chain(peptide, pdb_text):
    residues = _with_residue(peptide("GAKAG"), 2, "LYS", drop=("CA",))
    with pytest.raises(RelaxError, match="broken chain: residue A 3 LYS lacks backbone atom"):
        cleanup.standardize(parse_pdb(pdb_text(residues)))


def test_hydrogens_and_foreign_atoms_are_dropped(peptide, pdb_text):
    residues = _with_residue(
        peptide("GAAG"), 1, "ALA", {"HA": np.array([9.0, 9, 9]), "CG": np.array([8.0, 8, 8])}
    )
    prepared = cleanup.standardize(parse_pdb(pdb_text(residues)))
    assert prepared.structure.residues[1].atom_names == ("N", "CA", "C", "O", "CB")
    assert prepared.alterations.dropped_atoms == ("A 2 ALA: CG",)


def test_chain_breaks(peptide, pdb_text):
    # A far gap splits the chain; a numbering jump with a real bond (Kabat style) does not.
    residues = peptide("GSAKAEG")
    residues = _shifted(residues, 4, np.array([0.0, 0.0, 12.0]))
    residues = [(n, num + (10 if i >= 2 else 0), a, c) for i, (n, num, a, c) in enumerate(residues)]
    prepared = cleanup.standardize(parse_pdb(pdb_text(residues)))
    assert list(prepared.connected) == [True, True, True, False, True, True]
    assert prepared.segment_starts == (0, 4)
    assert prepared.alterations.chain_breaks == ("A 14 LYS / A 15 ALA",)


def test_numbering_gap_with_distant_residues_is_a_break(peptide, pdb_text):
    residues = peptide("GSAKAG")
    residues = _shifted(residues, 3, np.array([2.5, 0.0, 0.0]))  # C-N about 3-4 Å
    gapped = [(n, num + (1 if i >= 3 else 0), a, c) for i, (n, num, a, c) in enumerate(residues)]
    assert not cleanup.standardize(parse_pdb(pdb_text(gapped))).connected[2]
    # Same geometry, consecutive numbers: a stretched bond, kept (minimisation restores it).
    assert cleanup.standardize(parse_pdb(pdb_text(residues))).connected[2]


def test_different_chains_are_not_connected(peptide, pdb_text):
    residues = peptide("GSA") + peptide("KAG", chain_id="B", start=1)
    residues = _shifted(residues, 3, np.array([0.0, 15.0, 0.0]))
    prepared = cleanup.standardize(parse_pdb(pdb_text(residues)))
    assert list(prepared.connected) == [True, True, False, True, True]
    assert prepared.alterations.chain_breaks == ()  # chain ends are not breaks


def test_isolated_residue_is_an_error(peptide, pdb_text):
    residues = _shifted(peptide("GSAKAG"), 3, np.array([0.0, 0.0, 12.0]))
    residues = _shifted(residues, 4, np.array([0.0, 0.0, 12.0]))
    with pytest.raises(RelaxError, match="residue A 4 LYS is an isolated single residue"):
        cleanup.standardize(parse_pdb(pdb_text(residues)))


def test_segment_text_has_ter_per_segment(peptide, pdb_text):
    residues = _shifted(peptide("GSAKAG"), 3, np.array([0.0, 0.0, 12.0]))
    prepared = cleanup.standardize(parse_pdb(pdb_text(residues)))
    text = cleanup.segment_pdb_text(prepared.structure.residues, prepared.connected)
    assert [line for line in text.splitlines() if line.startswith("TER")] == ["TER", "TER"]
    topology, _, added = cleanup.fix_with_pdbfixer(prepared.structure.residues, prepared.connected)
    assert topology.getNumChains() == 2
    assert [c.id for c in topology.chains()] == ["A", "A"]
    assert [r.id for r in topology.residues()] == ["1", "2", "3", "4", "5", "6"]
    assert "A 2 SER: OG" in added
