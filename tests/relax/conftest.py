"""Fixtures for the relax tests: synthetic peptides built from ideal geometry (no shared data)."""

import numpy as np
import pytest

from sparkfold import constants as rc

# Ideal backbone geometry (Engh & Huber values as used by AF2's tables).
_N_CA, _CA_C, _C_N, _C_O, _CA_CB = 1.458, 1.525, 1.329, 1.231, 1.527
_N_CA_C, _CA_C_N, _C_N_CA, _CA_C_O, _N_CA_CB = 111.2, 116.2, 121.7, 120.5, 110.4
_CB_DIHEDRAL = -122.6  # C-N-CA-CB for L-amino acids


def _place(a, b, c, bond, angle, torsion):
    """Atom d with |cd| = bond, angle(b, c, d) = angle, dihedral(a, b, c, d) = torsion (degrees)."""
    angle, torsion = np.radians(angle), np.radians(torsion)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d = np.array(
        [
            -bond * np.cos(angle),
            bond * np.sin(angle) * np.cos(torsion),
            bond * np.sin(angle) * np.sin(torsion),
        ]
    )
    return c + d[0] * bc + d[1] * m + d[2] * n


def build_peptide(sequence, *, phi=-120.0, psi=130.0, chain_id="A", start=1):
    """Backbone (N, CA, C, O) + CB of an extended peptide as a list of (resname, number, atoms)."""
    residues = []
    n = np.array([0.0, 0.0, 0.0])
    ca = np.array([_N_CA, 0.0, 0.0])
    c = _place(np.array([0.0, 1.0, 0.0]), n, ca, _CA_C, _N_CA_C, 0.0)
    for i, letter in enumerate(sequence):
        atoms = {"N": n, "CA": ca, "C": c}
        next_n = _place(n, ca, c, _C_N, _CA_C_N, psi)
        atoms["O"] = _place(next_n, ca, c, _C_O, _CA_C_O, 180.0)
        if letter != "G":
            atoms["CB"] = _place(c, n, ca, _CA_CB, _N_CA_CB, _CB_DIHEDRAL)
        residues.append((rc.restype_1to3[letter], start + i, atoms))
        next_ca = _place(ca, c, next_n, _N_CA, _C_N_CA, 180.0)
        next_c = _place(c, next_n, next_ca, _CA_C, _N_CA_C, phi)
        n, ca, c = next_n, next_ca, next_c
    return [(name, number, atoms, chain_id) for name, number, atoms in residues]


def to_pdb(residues, *, b_factors=None, hetero=(), header=("REMARK test peptide",)):
    """PDB text for residues from :func:`build_peptide` (b_factors: one value per residue)."""
    lines = list(header)
    serial = 1
    for k, (name, number, atoms, chain) in enumerate(residues):
        record = "HETATM" if name in hetero else "ATOM"
        b = 50.0 + k if b_factors is None else b_factors[k]
        for atom, xyz in atoms.items():
            padded = atom if len(atom) == 4 else f" {atom}"
            element = "SE" if atom == "SE" else atom[0]
            lines.append(
                f"{record:<6}{serial:>5} {padded:<4} {name:>3} {chain}{number:>4}    "
                f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}{1.0:6.2f}{b:6.2f}          {element:>2}"
            )
            serial += 1
    lines.append("END")
    return "\n".join(lines) + "\n"


@pytest.fixture
def peptide():
    """Builder: ``peptide(sequence, **kw)`` -> residue list (see :func:`build_peptide`)."""
    return build_peptide


@pytest.fixture
def place():
    """NeRF placement: ``place(a, b, c, bond, angle_deg, torsion_deg)`` -> atom d."""
    return _place


@pytest.fixture
def pdb_text():
    """Writer: ``pdb_text(residues, **kw)`` -> PDB text (see :func:`to_pdb`)."""
    return to_pdb


def _has_relax_deps():
    try:
        import openmm  # noqa: F401
        import pdbfixer  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def relax_deps():
    """Skip when openmm/pdbfixer are absent (the optional ``relax`` extra)."""
    if not _has_relax_deps():
        pytest.skip("openmm/pdbfixer not installed (pip install 'sparkfold[relax]')")
