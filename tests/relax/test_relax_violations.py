"""Structural violation checks (bonds, angles, clashes) against AF2's definitions."""

import numpy as np
import pytest

from sparkfold import constants as rc
from sparkfold.relax.pdb_utils import parse_pdb
from sparkfold.relax.violations import _tables, find_violations, to_atom14


def _structure(peptide, pdb_text, sequence, **kw):
    return list(parse_pdb(pdb_text(peptide(sequence, **kw))).residues)


def _moved(res, name, new_xyz):
    positions = res.positions.copy()
    positions[res.atom_names.index(name)] = new_xyz
    return type(res)(**{**res.__dict__, "positions": positions})


def test_ideal_peptide_has_no_violations(peptide, pdb_text):
    # The peptide C-N pair (1.33 Å < 1.7 + 1.55 - 1.5) is within clash range: it must be excluded.
    residues = _structure(peptide, pdb_text, "GSAKPEALCYW")
    v = find_violations(residues)
    assert (v.bonds, v.angles, v.clashes, v.residues) == (0, 0, 0, ())
    assert v.num_residues == 11 and v.total == 0


def test_within_residue_bounds_are_the_stereo_chemical_table():
    tables = _tables()
    bonds = rc.tables()["stereo_chemical_props.residue_bonds"]
    checked = 0
    for r, name in enumerate(tables["names"][:20]):
        slots = tables["atom14_names"][r]
        for bond in bonds[name]:
            s, t = slots.index(bond["atom1_name"]), slots.index(bond["atom2_name"])
            assert tables["category"][r, s, t] == 1
            width = 12.0 * bond["stddev"]
            assert tables["lower"][r, s, t] == pytest.approx(bond["length"] - width, abs=1e-5)
            assert tables["upper"][r, s, t] == pytest.approx(bond["length"] + width, abs=1e-5)
            checked += 1
    assert checked > 100


def test_stretched_side_chain_bond(peptide, pdb_text):
    residues = _structure(peptide, pdb_text, "GSAKA")
    res = residues[2]
    ca, cb = res.atom("CA"), res.atom("CB")
    # CA-CB 1.527 -> 1.527 + 0.4 Å (tolerance 12 * 0.021 = 0.25 Å); the 1-3 distances N-CB and
    # C-CB change less than their tolerance.
    residues[2] = _moved(res, "CB", cb + 0.4 * (cb - ca) / np.linalg.norm(cb - ca))
    v = find_violations(residues)
    assert v.bonds == 1 and v.clashes == 0
    assert v.residues == (2,) and v.labels == ("A 3 ALA",)


def test_bent_side_chain_angle(peptide, pdb_text):
    residues = _structure(peptide, pdb_text, "GSAKA")
    res = residues[2]
    n, ca, cb = (res.atom(a) for a in ("N", "CA", "CB"))
    # Rotate CB about CA towards N by 35 degrees, keeping the CA-CB length.
    axis = np.cross(cb - ca, n - ca)
    axis /= np.linalg.norm(axis)
    theta = np.radians(35.0)
    v0 = cb - ca
    rotated = (
        v0 * np.cos(theta)
        + np.cross(axis, v0) * np.sin(theta)
        + axis * (axis @ v0) * (1 - np.cos(theta))
    )
    residues[2] = _moved(res, "CB", ca + rotated)
    v = find_violations(residues)
    assert v.bonds == 0 and v.angles >= 1
    assert 2 in v.residues


def test_peptide_bond_violation_respects_chain_breaks(peptide, pdb_text):
    residues = _structure(peptide, pdb_text, "GSAKAG")
    shift = np.array([0.7, 0.7, 0.0])
    for i in range(3, 6):
        residues[i] = type(residues[i])(
            **{**residues[i].__dict__, "positions": residues[i].positions + shift}
        )
    v = find_violations(residues)
    assert v.bonds == 1  # the C(3)-N(4) bond, ~2.3 Å
    assert v.residues == (2, 3)
    connected = np.array([True, True, False, True, True])
    assert find_violations(residues, connected).total == 0


def test_clashes_match_a_brute_force_count(peptide, pdb_text):
    residues = _structure(peptide, pdb_text, "GSAKAGLE")
    # Drop residue 6 onto residue 1 (0.8 Å apart along x).
    target = residues[1].atom("CA") + np.array([0.8, 0.0, 0.0])
    offset = target - residues[6].atom("CA")
    residues[6] = type(residues[6])(
        **{**residues[6].__dict__, "positions": residues[6].positions + offset}
    )
    connected = np.zeros(7, dtype=bool)  # no peptide bonds: only clashes can be found
    v = find_violations(residues, connected)

    expected = _brute_force_clashes(residues)
    flagged = set()
    for i in range(len(residues)):
        for j in range(len(residues)):
            if i != j and _brute_force_clashes([residues[i], residues[j]]):
                flagged |= {i, j}
    assert expected > 3
    assert v.clashes == expected and v.bonds == 0 and v.angles == 0
    assert set(v.residues) == flagged


def _brute_force_clashes(residues, skip=lambda ni, nj: False):
    count = 0
    for i in range(len(residues)):
        for j in range(i + 1, len(residues)):
            for ni, xi in zip(residues[i].atom_names, residues[i].positions):
                for nj, xj in zip(residues[j].atom_names, residues[j].positions):
                    limit = rc.van_der_waals_radius[ni[0]] + rc.van_der_waals_radius[nj[0]] - 1.5
                    if np.linalg.norm(xi - xj) < limit and not skip(ni, nj):
                        count += 1
    return count


def test_disulfide_is_not_a_clash(peptide, pdb_text, place):
    (cys,) = _structure(peptide, pdb_text, "C")
    n, ca, cb = cys.atom("N"), cys.atom("CA"), cys.atom("CB")
    sg = place(n, ca, cb, 1.808, 114.0, 180.0)
    cys = type(cys)(
        **{
            **cys.__dict__,
            "atom_names": cys.atom_names + ("SG",),
            "elements": cys.elements + ("S",),
            "positions": np.vstack([cys.positions, sg]),
            "b_factors": np.append(cys.b_factors, 0.0),
        }
    )
    # Mirror the residue through a plane 1.02 Å beyond SG: the two SG atoms end up 2.04 Å apart,
    # closer than 1.8 + 1.8 - 1.5 Å, everything else further away.
    u = (sg - cb) / np.linalg.norm(sg - cb)
    plane = sg + 1.02 * u
    mirrored = cys.positions - 2.0 * ((cys.positions - plane) @ u)[:, None] * u
    other = type(cys)(**{**cys.__dict__, "number": 2, "positions": mirrored})
    pair = [cys, other]
    assert np.linalg.norm(pair[0].atom("SG") - pair[1].atom("SG")) == pytest.approx(2.04)
    with_sg = _brute_force_clashes(pair)
    without_sg = _brute_force_clashes(pair, skip=lambda a, b: a == b == "SG")
    assert with_sg == without_sg + 1
    assert find_violations(pair, np.array([False])).clashes == without_sg


def test_atom14_layout(peptide, pdb_text):
    residues = _structure(peptide, pdb_text, "GK")
    aatype, positions, mask = to_atom14(residues)
    assert list(aatype) == [rc.restype_order["G"], rc.restype_order["K"]]
    assert mask[0].sum() == 4 and mask[1].sum() == 5  # Gly N CA C O; Lys N CA C O CB
    np.testing.assert_allclose(positions[1, 4], residues[1].atom("CB"))


def test_openfold_sample_predictions_have_no_violations():
    from testutil import shared_path

    folder = shared_path("data", "openfold_examples", "examples", "monomer", "sample_predictions")
    for name in ("6KWC_1_model_1_ptm_unrelaxed.pdb", "6KWC_1_model_1_ptm_relaxed.pdb"):
        structure = parse_pdb((folder / name).read_text())
        v = find_violations(structure.residues)
        assert v.num_residues == 191
        assert v.total == 0, (name, v)
