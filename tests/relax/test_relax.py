"""End-to-end Amber relaxation on the CPU platform (synthetic peptides + OpenFold's 6KWC sample)."""

import json
import sys

import numpy as np
import pytest

from sparkfold import constants as rc
from sparkfold.errors import SparkfoldError
from sparkfold.relax import (
    AF2_TOLERANCE,
    DEFAULT_MAX_OUTER_ITERATIONS,
    DEFAULT_STIFFNESS,
    DEFAULT_TOLERANCE,
    RelaxDependencyError,
    RelaxError,
    amber,
    relax_pdb,
)
from sparkfold.relax.pdb_utils import parse_pdb

SAMPLE = ("data", "openfold_examples", "examples", "monomer", "sample_predictions")


@pytest.fixture(autouse=True)
def _deps(relax_deps):
    pass


def _shifted(residues, first, offset):
    return [
        (name, number, {k: v + offset for k, v in atoms.items()} if i >= first else atoms, chain)
        for i, (name, number, atoms, chain) in enumerate(residues)
    ]


def _heavy(res):
    return {n for n, e in zip(res.atom_names, res.elements) if e != "H"}


def test_defaults_are_openfolds():
    assert (DEFAULT_STIFFNESS, DEFAULT_TOLERANCE, DEFAULT_MAX_OUTER_ITERATIONS) == (10.0, 10.0, 20)
    assert AF2_TOLERANCE == 2.39


def test_missing_side_chains_are_built_and_relaxed(peptide, pdb_text):
    sequence = "GSMKPEWLCYA"
    b_factors = [10.0 + 7 * k for k in range(len(sequence))]
    text = pdb_text(peptide(sequence), b_factors=b_factors, header=("REMARK hello", "PARENT N/A"))
    result = relax_pdb(text, platform="CPU")

    assert result.platform == "CPU" and result.iterations == 1 and result.attempts == 1
    assert result.final_energy < result.initial_energy
    assert result.violations_before.total == 0 and result.violations_after.total == 0
    assert 0.0 < result.rmsd < 1.0
    assert result.seconds > 0
    assert "A 7 TRP: CG CD1 NE1 CE2 CZ2 CH2 CZ3 CE3 CD2" in result.alterations.added_atoms

    out = parse_pdb(result.pdb)
    assert out.header == ("REMARK hello", "PARENT N/A")
    assert [r.name for r in out.residues] == [rc.restype_1to3[a] for a in sequence]
    assert [(r.chain_id, r.number) for r in out.residues] == [
        ("A", k + 1) for k in range(len(sequence))
    ]
    for k, res in enumerate(out.residues):
        expected = set(rc.residue_atoms[res.name]) | ({"OXT"} if k == len(sequence) - 1 else set())
        assert _heavy(res) == expected, res.label
        assert "H" in res.elements
        # pLDDT (B-factor) carried over to every atom, hydrogens included.
        np.testing.assert_allclose(res.b_factors, b_factors[k])
    # Restrained: backbone atoms stay close to the input.
    inp = parse_pdb(text)
    for a, b in zip(inp.residues, out.residues):
        assert np.linalg.norm(a.atom("CA") - b.atom("CA")) < 0.5


def test_chain_break_keeps_segments_and_numbering(peptide, pdb_text):
    residues = _shifted(peptide("GSAKAEGL"), 4, np.array([0.0, 0.0, 12.0]))
    residues = [(n, num + (20 if i >= 4 else 0), a, c) for i, (n, num, a, c) in enumerate(residues)]
    result = relax_pdb(pdb_text(residues), platform="CPU")
    out = parse_pdb(result.pdb)
    assert [r.number for r in out.residues] == [1, 2, 3, 4, 25, 26, 27, 28]
    assert {r.chain_id for r in out.residues} == {"A"}
    assert [r.number for r in out.residues if "OXT" in r.atom_names] == [4, 28]
    assert result.alterations.chain_breaks == ("A 4 LYS / A 25 ALA",)
    assert result.violations_after.total == 0
    # The break is not closed: the segments stay ~12 Å apart.
    assert np.linalg.norm(out.residues[3].atom("C") - out.residues[4].atom("N")) > 8.0


def test_nonstandard_residues_and_heterogens(peptide, pdb_text):
    residues = peptide("GAMAKG")
    cb = residues[2][2]["CB"]
    _, number, atoms, chain = residues[2]
    atoms = dict(atoms, CG=cb + [0.2, 1.45, 0.3], SE=cb + [1.0, 2.9, 0.6], CE=cb + [0.3, 4.4, 1.2])
    residues[2] = ("MSE", number, atoms, chain)
    residues.append(("HOH", 50, {"O": np.array([30.0, 30.0, 30.0])}, "A"))
    text = pdb_text(residues, b_factors=[70.0, 71, 72, 73, 74, 75, 0.0], hetero=("MSE", "HOH"))
    result = relax_pdb(text, platform="CPU")
    out = parse_pdb(result.pdb)
    assert [r.name for r in out.residues] == ["GLY", "ALA", "MET", "ALA", "LYS", "GLY"]
    assert not any(r.hetero for r in out.residues)
    assert result.alterations.replaced_residues == ("A 3 MSE->MET",)
    assert result.alterations.removed_residues == ("A 50 HOH",)
    np.testing.assert_allclose(out.residues[2].b_factors, 72.0)
    assert result.violations_after.total == 0


def test_violation_loop_unrestrains_violating_residues(peptide, pdb_text):
    # A peptide bond stretched by 1.5 Å; with stiff restraints the first minimisation cannot
    # close it, so residues 4/5 (0-based) are excluded and a second round fixes it.
    residues = _shifted(peptide("GSAKPEALAYA"), 5, np.array([1.5, 1.5, 0.0]) / np.sqrt(2))
    text = pdb_text(residues)
    result = relax_pdb(text, platform="CPU", stiffness=100.0)
    assert result.violations_before.labels == ("A 5 PRO", "A 6 GLU")
    assert result.iterations == 2
    assert set(result.excluded_residues) & {4, 5}
    assert result.violations_after.total == 0

    capped = relax_pdb(text, platform="CPU", stiffness=100.0, max_outer_iterations=1)
    assert capped.iterations == 1 and capped.excluded_residues == ()
    assert capped.violations_after.residues  # left for the caller to report


def test_exclude_residues_and_stiffness(peptide, pdb_text):
    text = pdb_text(peptide("GSAKAEG"))
    stiff = relax_pdb(text, platform="CPU", stiffness=1000.0)
    loose = relax_pdb(text, platform="CPU", stiffness=0.0)
    assert stiff.rmsd < loose.rmsd
    excluded = relax_pdb(text, platform="CPU", exclude_residues=[0, 3])
    assert excluded.excluded_residues == (0, 3)
    with pytest.raises(ValueError, match="out of range"):
        relax_pdb(text, platform="CPU", exclude_residues=[7])
    with pytest.raises(ValueError, match="max_outer_iterations"):
        relax_pdb(text, max_outer_iterations=0)


def test_restraints_cover_heavy_atoms_outside_excluded_residues(peptide, pdb_text):
    from sparkfold.relax import cleanup

    prepared = cleanup.standardize(parse_pdb(pdb_text(peptide("GSAK"))))
    topology, positions, _ = cleanup.fix_with_pdbfixer(
        prepared.structure.residues, prepared.connected
    )
    from openmm import unit

    nm = np.asarray(positions.value_in_unit(unit.nanometer))
    system = amber.build_system(topology, prepared.structure.residues, nm, 10.0, excluded={1})
    (force,) = [f for f in system.getForces() if f.__class__.__name__ == "CustomExternalForce"]
    expected = [
        a.index for a in topology.atoms() if a.element.symbol != "H" and a.residue.index != 1
    ]
    assert [force.getParticleParameters(i)[0] for i in range(force.getNumParticles())] == expected
    assert force.getGlobalParameterDefaultValue(0) == pytest.approx(
        10.0 * 4.184 * 100
    )  # kJ/mol/nm²


def test_unknown_residue_error_names_it(peptide, pdb_text):
    residues = peptide("GAAAG")
    residues[2] = ("UNK",) + residues[2][1:]
    with pytest.raises(RelaxError, match="A 3 UNK") as info:
        relax_pdb(pdb_text(residues), platform="CPU")
    assert isinstance(info.value, SparkfoldError)


def test_template_error_names_the_residue(peptide, pdb_text):
    # Without hydrogens Amber99sb matches no template: OpenMM's error becomes a RelaxError that
    # names the residue by chain, number and name.
    import io

    from openmm import app, unit

    from sparkfold.relax import cleanup

    residues = peptide("GSAKG")
    residues = [(n, num + 40, a, c) for n, num, a, c in residues]
    prepared = cleanup.standardize(parse_pdb(pdb_text(residues)))
    pdb = app.PDBFile(
        io.StringIO(cleanup.segment_pdb_text(prepared.structure.residues, prepared.connected))
    )
    nm = np.asarray(pdb.positions.value_in_unit(unit.nanometer))
    with pytest.raises(
        RelaxError,
        match=(
            r"cannot parametrise residue A 41 GLY \(and 4 more\): no template found. "
            r"The set of heavy atoms matches GLY, but the residue is missing 3 H atoms"
        ),
    ):
        amber.build_system(pdb.topology, prepared.structure.residues, nm, 10.0, excluded=())


def test_platform_selection(peptide, pdb_text):
    assert amber.select_platforms("auto", None) == ("CUDA", "OpenCL", "CPU")
    assert amber.select_platforms("auto", True) == ("CUDA", "OpenCL")
    assert amber.select_platforms("auto", False) == ("CPU",)
    assert amber.select_platforms("CPU", False) == ("CPU",)
    with pytest.raises(ValueError, match="contradicts"):
        amber.select_platforms("CPU", True)

    import openmm

    names = {
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    }
    text = pdb_text(peptide("GSAG"))
    result = relax_pdb(text)  # auto
    if not names & {"CUDA", "OpenCL"}:
        assert result.platform == "CPU"
        with pytest.raises(RelaxError, match="no usable OpenMM platform .*CUDA: not installed"):
            relax_pdb(text, platform="CUDA")
    else:
        assert result.platform in names


def test_missing_openmm_names_the_extra(peptide, pdb_text, monkeypatch):
    monkeypatch.setitem(sys.modules, "openmm", None)
    with pytest.raises(RelaxDependencyError, match=r"pip install 'sparkfold\[relax\]'") as info:
        relax_pdb(pdb_text(peptide("GAG")))
    assert isinstance(info.value, ImportError)


def test_input_from_path_and_atomic_write(peptide, pdb_text, tmp_path):
    src = tmp_path / "in.pdb"
    src.write_text(pdb_text(peptide("GSAG")))
    result = relax_pdb(src, platform="CPU")
    again = parse_pdb(relax_pdb(str(src), platform="CPU").pdb)  # str path works too
    for a, b in zip(parse_pdb(result.pdb).residues, again.residues):
        assert a.atom_names == b.atom_names
        # Not bitwise: PDBFixer's hydrogen placement and CPU threads vary from run to run.
        heavy = [e != "H" for e in a.elements]
        np.testing.assert_allclose(a.positions[heavy], b.positions[heavy], atol=0.25)
    out = result.write(tmp_path / "sub" / "out.pdb")
    assert out.read_text() == result.pdb
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.pdb"]  # no temp file left
    report = result.to_dict()
    json.dumps(report)
    assert set(report) >= {
        "initial_energy_kcal_mol",
        "final_energy_kcal_mol",
        "rmsd_angstrom",
        "violations_before",
        "violations_after",
        "platform",
        "seconds",
    }
    with pytest.raises(RelaxError, match="neither PDB text nor an existing file"):
        relax_pdb(tmp_path / "missing.pdb")


@pytest.mark.slow
def test_openfold_sample_relaxes_like_openfold():
    """6KWC model_1_ptm: our CPU relax vs OpenFold's relaxed file (25-60 s on 2 cores)."""
    from testutil import shared_path

    folder = shared_path(*SAMPLE)
    unrelaxed = (folder / "6KWC_1_model_1_ptm_unrelaxed.pdb").read_text()
    reference = parse_pdb((folder / "6KWC_1_model_1_ptm_relaxed.pdb").read_text())
    result = relax_pdb(unrelaxed, platform="CPU")
    out = parse_pdb(result.pdb)

    assert result.platform == "CPU"
    assert result.violations_after.total == 0
    assert result.final_energy < result.initial_energy
    assert out.header == parse_pdb(unrelaxed).header
    assert len(out.residues) == len(reference.residues) == 191
    sq, count = 0.0, 0
    for ours, theirs in zip(out.residues, reference.residues):
        assert (ours.number, ours.name) == (theirs.number, theirs.name)
        assert _heavy(ours) == _heavy(theirs)
        assert set(ours.atom_names) == set(theirs.atom_names)  # same hydrogens too
        for name in _heavy(theirs):
            sq += float(np.sum((ours.atom(name) - theirs.atom(name)) ** 2))
            count += 1
        # B-factors = pLDDT of the unrelaxed model, on every atom.
        np.testing.assert_allclose(ours.b_factors, theirs.b_factors[0])
    rmsd_to_openfold = np.sqrt(sq / count)
    assert rmsd_to_openfold < 0.1, rmsd_to_openfold
    assert 0.05 < result.rmsd < 0.5  # moved, but restrained
