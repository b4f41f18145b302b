"""Synthetic predictions for the output tests: an ideal α-helix built from internal coordinates."""

import numpy as np
import pytest

from sparkfold import constants as rc
from sparkfold.io.prediction import Prediction, aatype_from_sequence

# Ideal backbone geometry (Engh & Huber): bond lengths in Å, angles in degrees.
_N_CA, _CA_C, _C_N, _C_O, _CA_CB = 1.458, 1.525, 1.329, 1.231, 1.530
_N_CA_C, _CA_C_N, _C_N_CA, _CA_C_O, _N_CA_CB = 111.2, 116.2, 121.7, 120.5, 110.5
_HELIX_PHI, _HELIX_PSI, _OMEGA = -57.0, -47.0, 180.0


def _place(a, b, c, bond, angle, torsion):
    """Atom d with |cd| = bond, angle(b, c, d) = angle, dihedral(a, b, c, d) = torsion (NeRF)."""
    angle, torsion = np.radians(angle), np.radians(torsion)
    bc = c - b
    bc /= np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d2 = np.array([-bond * np.cos(angle), bond * np.sin(angle) * np.cos(torsion),
                   bond * np.sin(angle) * np.sin(torsion)])
    return c + d2[0] * bc + d2[1] * m + d2[2] * n


def helix_backbone(num_res: int, phi=_HELIX_PHI, psi=_HELIX_PSI):
    """[N, 37, 3] positions and [N, 37] mask with N, CA, C, O, CB of an ideal helix."""
    o = rc.atom_order
    pos = np.zeros((num_res, 37, 3))
    mask = np.zeros((num_res, 37), dtype=np.float32)
    n_at, ca, c = np.array([0.0, 1.458, 0.0]), np.zeros(3), np.array([1.525, 0.0, 0.0])
    # Fix the first N so that angle N-CA-C is ideal.
    t = np.radians(_N_CA_C)
    n_at = np.array([_N_CA * np.cos(t), _N_CA * np.sin(t), 0.0])
    for i in range(num_res):
        if i > 0:
            prev_n, prev_ca, prev_c = pos[i - 1, o["N"]], pos[i - 1, o["CA"]], pos[i - 1, o["C"]]
            n_at = _place(prev_n, prev_ca, prev_c, _C_N, _CA_C_N, psi)
            ca = _place(prev_ca, prev_c, n_at, _N_CA, _C_N_CA, _OMEGA)
            c = _place(prev_c, n_at, ca, _CA_C, _N_CA_C, phi)
        pos[i, o["N"]], pos[i, o["CA"]], pos[i, o["C"]] = n_at, ca, c
        pos[i, o["O"]] = _place(n_at, ca, c, _C_O, _CA_C_O, psi + 180.0)
        pos[i, o["CB"]] = _place(c, n_at, ca, _CA_CB, _N_CA_CB, -122.6)
        mask[i, [o["N"], o["CA"], o["C"], o["O"], o["CB"]]] = 1.0
    return pos, mask


def make_prediction(sequence: str = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", *, ptm: bool = True,
                    seed: int = 0, name: str = "alphafold2_ptm_model_1_seed_000") -> Prediction:
    """A helix with a pLDDT ramp 30 → 96 (all four colour bands) and a random PAE."""
    rng = np.random.default_rng(seed)
    n = len(sequence)
    aatype = aatype_from_sequence(sequence)
    pos, mask = helix_backbone(n)
    mask = mask * rc.restype_atom37_mask[aatype]  # no CB on glycine
    plddt = np.linspace(30.0, 96.0, n) + rng.normal(0, 0.5, n)
    pae = None
    if ptm:
        pae = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) * 0.7 + rng.uniform(0, 2, (n, n))
        pae = np.clip(pae, 0.25, 31.75).astype(np.float32)
    return Prediction(aatype=aatype, residue_index=np.arange(n), atom_positions=pos,
                      atom_mask=mask, plddt=plddt, pae=pae, ptm=0.61 if ptm else None,
                      max_pae=31.75 if ptm else None, model_name=name)


@pytest.fixture
def prediction() -> Prediction:
    return make_prediction()


@pytest.fixture
def make_pred():
    return make_prediction
