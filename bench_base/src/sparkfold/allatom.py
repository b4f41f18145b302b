"""All-atom geometry: torsion angles <-> frames, atom14/atom37 layouts, pseudo-β.

Used by the structure module (frames → atom14 positions), by the model output (atom14 →
atom37) and by the data pipeline (masks, pseudo-β and torsion angles of template/target
structures). Every function is batched over arbitrary leading dimensions and matches
OpenFold's ``utils.feats`` / ``data.data_transforms`` outputs.

Residue tables come from :mod:`sparkfold.constants`; functions that need them take them as
optional tensor arguments (the structure module passes its buffers) and otherwise build them
on the input's device.
"""

import functools

import numpy as np
import torch

from sparkfold import constants as rc
from sparkfold.geometry import Rigid, Rotation

__all__ = [
    "atom14_to_atom37",
    "atom37_to_torsion_angles",
    "frames_and_literature_positions_to_atom14_pos",
    "make_atom14_masks",
    "pseudo_beta",
    "residue_constant_tensors",
    "torsion_angles_to_frames",
]


@functools.lru_cache(maxsize=1)
def _numpy_tables() -> dict[str, np.ndarray]:
    chi_mask = np.asarray(rc.chi_angles_mask, dtype=np.float32)
    chi_mask = np.concatenate([chi_mask, np.zeros((1, 4), np.float32)], axis=0)  # UNK row
    return {
        "default_frames": np.asarray(rc.restype_rigid_group_default_frame, np.float32),  # [21, 8, 4, 4]
        "group_idx": np.asarray(rc.restype_atom14_to_rigid_group, np.int64),  # [21, 14]
        "atom_mask": np.asarray(rc.restype_atom14_mask, np.float32),  # [21, 14]
        "lit_positions": np.asarray(rc.restype_atom14_rigid_group_positions, np.float32),  # [21, 14, 3]
        "atom14_to_atom37": np.asarray(rc.RESTYPE_ATOM14_TO_ATOM37, np.int64),  # [21, 14]
        "atom37_to_atom14": np.asarray(rc.RESTYPE_ATOM37_TO_ATOM14, np.int64),  # [21, 37]
        "atom37_mask": np.asarray(rc.RESTYPE_ATOM37_MASK, np.float32),  # [21, 37]
        "chi_atom_indices": np.asarray(rc.CHI_ATOM_INDICES, np.int64),  # [21, 4, 4]
        "chi_angles_mask": chi_mask,  # [21, 4]
        "chi_pi_periodic": np.asarray(rc.chi_pi_periodic, np.float32),  # [21, 4]
    }


def residue_constant_tensors(
    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """The residue tables as tensors (float tables in ``dtype``, index tables int64).

    Keys: ``default_frames [21, 8, 4, 4]``, ``group_idx [21, 14]``, ``atom_mask [21, 14]``,
    ``lit_positions [21, 14, 3]``, ``atom14_to_atom37 [21, 14]``, ``atom37_to_atom14 [21, 37]``,
    ``atom37_mask [21, 37]``, ``chi_atom_indices [21, 4, 4]``, ``chi_angles_mask [21, 4]``,
    ``chi_pi_periodic [21, 4]``. Row 20 is UNK (no atoms, zero default frames).
    """
    out = {}
    for name, arr in _numpy_tables().items():
        t = torch.from_numpy(arr.copy())
        out[name] = t.to(device=device, dtype=dtype if t.is_floating_point() else torch.int64)
    return out


#: Residue tables already on a device, per (name, device, dtype): copying them there once keeps
#: the structure module free of host-to-device copies (a requirement of CUDA-graph recording).
_DEVICE_TABLES: dict[tuple, torch.Tensor] = {}


def _table(name: str, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Table ``name`` on ``like``'s device (float tables in ``dtype`` or ``like``'s dtype).
    Callers must not modify it in place: it is shared."""
    t = torch.from_numpy(_numpy_tables()[name])
    target = (dtype or like.dtype) if t.is_floating_point() else t.dtype
    key = (name, like.device, target)
    cached = _DEVICE_TABLES.get(key)
    if cached is None:
        cached = _DEVICE_TABLES[key] = t.to(device=like.device, dtype=target)
    return cached


def _check_aatype(aatype: torch.Tensor, num_restypes: int = 21) -> None:
    if aatype.is_floating_point():
        raise TypeError("aatype must be an integer tensor of residue indices (0..20), not a float one-hot; "
                        "use aatype.argmax(-1) first")
    if aatype.numel() and (int(aatype.min()) < 0 or int(aatype.max()) >= num_restypes):
        raise ValueError(f"aatype values must lie in [0, {num_restypes - 1}] (20 = UNK); got range "
                         f"[{int(aatype.min())}, {int(aatype.max())}]. Map gaps/masks to 20 first")


def torsion_angles_to_frames(
    r: Rigid,
    alpha: torch.Tensor,
    aatype: torch.Tensor,
    default_frames: torch.Tensor | None = None,
) -> Rigid:
    """Global frames of the 8 rigid groups from backbone frames and torsion angles.

    AF2 Suppl. Alg. 24 "computeAllAtomCoordinates" lines 1-10.

    Args:
        r: backbone frames, batch shape ``[*, N]``.
        alpha: ``[*, N, 7, 2]`` (sin, cos) of (pre-omega, phi, psi, chi1..chi4).
        aatype: ``[*, N]`` residue indices (0..20).
        default_frames: ``[21, 8, 4, 4]`` group frames relative to their parents (default: the
            residue tables).

    Returns:
        A matrix-form :class:`Rigid` of batch shape ``[*, N, 8]``: backbone, pre-omega, phi, psi,
        chi1..chi4 frames in the global frame (chi2..4 chained onto chi1).
    """
    if default_frames is None:
        default_frames = _table("default_frames", alpha)
    default = Rigid.from_tensor_4x4(default_frames[aatype, ...])  # [*, N, 8]

    # The backbone group gets the identity angle (sin 0, cos 1).
    bb = torch.zeros_like(alpha[..., :1, :])
    bb[..., 1] = 1.0
    alpha = torch.cat([bb, alpha], dim=-2)  # [*, N, 8, 2]
    sin, cos = alpha.unbind(-1)
    zero, one = torch.zeros_like(sin), torch.ones_like(sin)
    # Rotation about x by the torsion angle: [[1, 0, 0], [0, c, -s], [0, s, c]].
    rot_x = torch.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], dim=-1).unflatten(-1, (3, 3))
    all_frames = default.compose(Rigid(Rotation(rot_mats=rot_x), torch.zeros_like(default.get_trans())))

    chi1_to_bb = all_frames[..., 4]
    chi2_to_bb = chi1_to_bb.compose(all_frames[..., 5])
    chi3_to_bb = chi2_to_bb.compose(all_frames[..., 6])
    chi4_to_bb = chi3_to_bb.compose(all_frames[..., 7])
    to_bb = Rigid.cat(
        [all_frames[..., :5], chi2_to_bb.unsqueeze(-1), chi3_to_bb.unsqueeze(-1), chi4_to_bb.unsqueeze(-1)],
        dim=-1,
    )  # [*, N, 8]
    return r[..., None].compose(to_bb)


def frames_and_literature_positions_to_atom14_pos(
    r: Rigid,
    aatype: torch.Tensor,
    default_frames: torch.Tensor | None = None,
    group_idx: torch.Tensor | None = None,
    atom_mask: torch.Tensor | None = None,
    lit_positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Atom14 coordinates from the 8 group frames and the literature (idealised) positions.

    AF2 Suppl. Alg. 24 "computeAllAtomCoordinates" line 11.

    Args:
        r: group frames, batch shape ``[*, N, 8]`` (from :func:`torsion_angles_to_frames`).
        aatype: ``[*, N]``.
        default_frames: unused except for the group count (kept for OpenFold's signature).
        group_idx: ``[21, 14]`` rigid group of each atom14 slot.
        atom_mask: ``[21, 14]`` which slots exist.
        lit_positions: ``[21, 14, 3]`` positions in the group frame.

    Returns:
        ``[*, N, 14, 3]`` positions; absent atoms are zero.
    """
    del default_frames  # the group count is implied by r
    frames = r.to_tensor_4x4()  # [*, N, 8, 4, 4]
    if group_idx is None:
        group_idx = _table("group_idx", frames)
    if atom_mask is None:
        atom_mask = _table("atom_mask", frames)
    if lit_positions is None:
        lit_positions = _table("lit_positions", frames)

    idx = group_idx[aatype, ...]  # [*, N, 14]
    idx = idx[..., None, None].expand(*idx.shape, 4, 4)  # [*, N, 14, 4, 4]
    atom_frames = torch.gather(frames, -3, idx)  # [*, N, 14, 4, 4]
    atom_rigid = Rigid.from_tensor_4x4(atom_frames)
    pos = atom_rigid.apply(lit_positions[aatype, ...].to(frames.dtype))  # [*, N, 14, 3]
    return pos * atom_mask[aatype, ...].to(frames.dtype)[..., None]


def atom14_to_atom37(
    atom14: torch.Tensor, residx_atom37_to_atom14: torch.Tensor, atom37_atom_exists: torch.Tensor
) -> torch.Tensor:
    """Scatter atom14 data into the atom37 layout.

    Args:
        atom14: ``[*, N, 14, ...]`` per-atom data (e.g. positions ``[*, N, 14, 3]``).
        residx_atom37_to_atom14: ``[*, N, 37]`` atom14 slot of each atom37 atom
            (from :func:`make_atom14_masks`).
        atom37_atom_exists: ``[*, N, 37]`` mask.

    Returns:
        ``[*, N, 37, ...]``; absent atoms are zero.
    """
    nb = residx_atom37_to_atom14.dim()  # [*, N, 37]
    trailing = atom14.shape[nb:]
    idx = residx_atom37_to_atom14.long().reshape(*residx_atom37_to_atom14.shape, *([1] * len(trailing)))
    idx = idx.expand(*residx_atom37_to_atom14.shape, *trailing)
    out = torch.gather(atom14, nb - 1, idx)  # [*, N, 37, ...]
    exists = atom37_atom_exists.to(out.dtype).reshape(*atom37_atom_exists.shape, *([1] * len(trailing)))
    return out * exists


def make_atom14_masks(aatype: torch.Tensor) -> dict[str, torch.Tensor]:
    """Atom14/atom37 index maps and existence masks per residue (OpenFold ``make_atom14_masks``).

    Args:
        aatype: ``[*, N]`` residue indices 0..20 (20 = UNK, which has no atoms).

    Returns:
        ``atom14_atom_exists [*, N, 14]`` float32, ``residx_atom14_to_atom37 [*, N, 14]`` int64,
        ``residx_atom37_to_atom14 [*, N, 37]`` int64, ``atom37_atom_exists [*, N, 37]`` float32.
    """
    _check_aatype(aatype)
    aatype = aatype.long()
    return {
        "atom14_atom_exists": _table("atom_mask", aatype, torch.float32)[aatype],
        "residx_atom14_to_atom37": _table("atom14_to_atom37", aatype)[aatype],
        "residx_atom37_to_atom14": _table("atom37_to_atom14", aatype)[aatype],
        "atom37_atom_exists": _table("atom37_mask", aatype, torch.float32)[aatype],
    }


def pseudo_beta(
    aatype: torch.Tensor, all_atom_positions: torch.Tensor, all_atom_mask: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-β position: CB, or CA for glycine.

    Args:
        aatype: ``[*, N]``.
        all_atom_positions: ``[*, N, 37, 3]``.
        all_atom_mask: optional ``[*, N, 37]``.

    Returns:
        ``pseudo_beta [*, N, 3]``, and ``pseudo_beta_mask [*, N]`` if ``all_atom_mask`` is given.
    """
    ca, cb = rc.atom_order["CA"], rc.atom_order["CB"]
    is_gly = aatype == rc.restype_order["G"]  # [*, N]
    pos = torch.where(is_gly[..., None], all_atom_positions[..., ca, :], all_atom_positions[..., cb, :])
    if all_atom_mask is None:
        return pos
    mask = torch.where(is_gly, all_atom_mask[..., ca], all_atom_mask[..., cb])
    return pos, mask


def atom37_to_torsion_angles(
    aatype: torch.Tensor, all_atom_positions: torch.Tensor, all_atom_mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The 7 torsion angles (pre-omega, phi, psi, chi1..4) of each residue as (sin, cos).

    AF2 Suppl. Alg. 24 angle convention; OpenFold ``data_transforms.atom37_to_torsion_angles``.
    Residue ``i``'s pre-omega/phi use residue ``i-1`` (index order along the residue axis; the
    first residue's are masked out). Psi is sign-flipped (the angle of O, which is 180° from
    the angle of the next N). Aatype values above 20 (gap) are treated as UNK.

    Args:
        aatype: ``[*, N]``.
        all_atom_positions: ``[*, N, 37, 3]``.
        all_atom_mask: ``[*, N, 37]``.

    Returns:
        ``torsion_angles_sin_cos [*, N, 7, 2]``, ``alt_torsion_angles_sin_cos [*, N, 7, 2]``
        (π-periodic chis mirrored) and ``torsion_angles_mask [*, N, 7]``.
    """
    if aatype.is_floating_point():
        raise TypeError("aatype must be integer residue indices, not a one-hot; use aatype.argmax(-1) first")
    aatype = aatype.long().clamp(max=20)
    pos, mask = all_atom_positions, all_atom_mask.to(all_atom_positions.dtype)

    prev_pos = torch.cat([torch.zeros_like(pos[..., :1, :, :]), pos[..., :-1, :, :]], dim=-3)
    prev_mask = torch.cat([torch.zeros_like(mask[..., :1, :]), mask[..., :-1, :]], dim=-2)

    # Atom37 order starts N, CA, C, CB, O.
    pre_omega_pos = torch.cat([prev_pos[..., 1:3, :], pos[..., 0:2, :]], dim=-2)  # prev CA, prev C, N, CA
    phi_pos = torch.cat([prev_pos[..., 2:3, :], pos[..., 0:3, :]], dim=-2)  # prev C, N, CA, C
    psi_pos = torch.cat([pos[..., 0:3, :], pos[..., 4:5, :]], dim=-2)  # N, CA, C, O
    pre_omega_mask = prev_mask[..., 1] * prev_mask[..., 2] * mask[..., 0] * mask[..., 1]
    phi_mask = prev_mask[..., 2] * mask[..., 0] * mask[..., 1] * mask[..., 2]
    psi_mask = mask[..., 0] * mask[..., 1] * mask[..., 2] * mask[..., 4]

    chi_idx = _table("chi_atom_indices", aatype)[aatype]  # [*, N, 4, 4]
    n_atoms = pos.shape[-2]
    flat_idx = chi_idx.flatten(-2)  # [*, N, 16]
    chi_pos = torch.gather(pos, -2, flat_idx[..., None].expand(*flat_idx.shape, 3))  # [*, N, 16, 3]
    chi_pos = chi_pos.unflatten(-2, (4, 4))  # [*, N, 4, 4, 3]
    chi_atom_mask = torch.gather(mask, -1, flat_idx.clamp(max=n_atoms - 1)).unflatten(-1, (4, 4))
    chi_mask = _table("chi_angles_mask", pos)[aatype] * chi_atom_mask.prod(dim=-1)  # [*, N, 4]

    torsion_pos = torch.cat(
        [pre_omega_pos[..., None, :, :], phi_pos[..., None, :, :], psi_pos[..., None, :, :], chi_pos], dim=-3
    )  # [*, N, 7, 4, 3]
    torsion_mask = torch.cat(
        [pre_omega_mask[..., None], phi_mask[..., None], psi_mask[..., None], chi_mask], dim=-1
    )  # [*, N, 7]

    # Frame with x along atom1->atom2 and atom0 in the xy plane; the 4th atom's (y, z) in it
    # gives (cos, sin) of the dihedral.
    frames = Rigid.from_3_points(torsion_pos[..., 1, :], torsion_pos[..., 2, :], torsion_pos[..., 0, :], eps=1e-8)
    fourth = frames.invert().apply(torsion_pos[..., 3, :])  # [*, N, 7, 3]
    sin_cos = torch.stack([fourth[..., 2], fourth[..., 1]], dim=-1)  # [*, N, 7, 2]
    sin_cos = sin_cos / torch.sqrt((sin_cos * sin_cos).sum(dim=-1, keepdim=True) + 1e-8)
    psi_sign = torch.ones(7, 1, device=sin_cos.device, dtype=sin_cos.dtype)
    psi_sign[2] = -1.0  # the ψ torsion's sign convention
    sin_cos = sin_cos * psi_sign

    periodic = _table("chi_pi_periodic", pos)[aatype]  # [*, N, 4]
    mirror = torch.cat([torch.ones_like(periodic[..., :3]), 1.0 - 2.0 * periodic], dim=-1)  # [*, N, 7]
    return {
        "torsion_angles_sin_cos": sin_cos,
        "alt_torsion_angles_sin_cos": sin_cos * mirror[..., None],
        "torsion_angles_mask": torsion_mask,
    }
