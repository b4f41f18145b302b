"""Rigid-body frames: one :class:`Rotation` type (quaternion or matrix form) and :class:`Rigid`.

A :class:`Rotation` holds exactly one representation: unit quaternions ``[*, 4]`` in
``(w, x, y, z)`` order or rotation matrices ``[*, 3, 3]``. Conversions happen on demand.
A :class:`Rigid` is a rotation plus a translation ``[*, 3]`` and acts on points as
``x -> R x + t`` (AF2 Suppl. Sec. 1.1 "Notation"). Monomer and multimer code use the same types.

All 3×3 products are written as broadcast multiply-and-sum rather than ``matmul`` so that
fp32 frames stay true fp32 even where TF32 matmuls are enabled globally.
"""

from collections.abc import Callable, Sequence
from typing import Literal

import torch

__all__ = [
    "Rigid",
    "Rotation",
    "identity_quats",
    "identity_rot_mats",
    "invert_quat",
    "invert_rot_mat",
    "quat_multiply",
    "quat_multiply_by_vec",
    "quat_to_rot",
    "rot_matmul",
    "rot_to_quat",
    "rot_vec_mul",
]


# ---------------------------------------------------------------------------------------------
# Tensor-level helpers
# ---------------------------------------------------------------------------------------------


def rot_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Product of rotation matrices ``a @ b`` for ``[*, 3, 3]`` inputs (broadcasting)."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(dim=-2)  # [*, 3, 3]


def rot_vec_mul(r: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Apply rotation matrices ``r [*, 3, 3]`` to vectors ``v [*, 3]`` (broadcasting)."""
    return (r * v[..., None, :]).sum(dim=-1)  # [*, 3]


def invert_rot_mat(r: torch.Tensor) -> torch.Tensor:
    """Inverse (transpose) of rotation matrices ``[*, 3, 3]``."""
    return r.transpose(-1, -2)


def identity_rot_mats(batch_shape: Sequence[int], dtype=None, device=None, requires_grad=False) -> torch.Tensor:
    """Identity matrices of shape ``[*batch_shape, 3, 3]``."""
    eye = torch.eye(3, dtype=dtype, device=device, requires_grad=requires_grad)
    return eye.expand(*batch_shape, 3, 3).contiguous()


def identity_quats(batch_shape: Sequence[int], dtype=None, device=None, requires_grad=False) -> torch.Tensor:
    """Identity quaternions ``(1, 0, 0, 0)`` of shape ``[*batch_shape, 4]``."""
    q = torch.zeros(*batch_shape, 4, dtype=dtype, device=device)
    q[..., 0] = 1.0
    q.requires_grad_(requires_grad)
    return q


def quat_to_rot(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[*, 3, 3]`` from quaternions ``[*, 4]`` in ``(w, x, y, z)`` order.

    Uses the homogeneous form (diagonal ``w² ± x² ± y² ± z²``), which equals the usual formula
    for unit quaternions. ``q`` and ``-q`` give the same matrix.
    """
    w, x, y, z = q.unbind(dim=-1)
    ww, xx, yy, zz = w * w, x * x, y * y, z * z
    wx, wy, wz = w * x, w * y, w * z
    xy, xz, yz = x * y, x * z, y * z
    rows = [
        ww + xx - yy - zz, 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), ww - xx + yy - zz, 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), ww - xx - yy + zz,
    ]
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))  # [*, 3, 3]


def rot_to_quat(rot: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``[*, 4]`` (w, x, y, z) from rotation matrices ``[*, 3, 3]``.

    Takes the eigenvector of the largest eigenvalue of the symmetric 4×4 matrix built from
    ``rot`` (Bar-Itzhack's method; robust for any rotation). The sign is arbitrary, as for
    every matrix-to-quaternion map (``q`` and ``-q`` are the same rotation).
    """
    if rot.shape[-2:] != (3, 3):
        raise ValueError(f"rot_to_quat expects [*, 3, 3] matrices, got shape {tuple(rot.shape)}")
    (xx, xy, xz), (yx, yy, yz), (zx, zy, zz) = [row.unbind(-1) for row in rot.unbind(-2)]
    k = [
        [xx + yy + zz, zy - yz, xz - zx, yx - xy],
        [zy - yz, xx - yy - zz, xy + yx, xz + zx],
        [xz - zx, xy + yx, yy - xx - zz, yz + zy],
        [yx - xy, xz + zx, yz + zy, zz - xx - yy],
    ]
    k = torch.stack([torch.stack(r, dim=-1) for r in k], dim=-2) / 3.0  # [*, 4, 4]
    orig_dtype = k.dtype
    if orig_dtype not in (torch.float32, torch.float64):
        k = k.float()
    _, vectors = torch.linalg.eigh(k)
    return vectors[..., -1].to(orig_dtype)  # [*, 4]


def quat_multiply(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``q1 ⊗ q2`` of ``[*, 4]`` quaternions (w, x, y, z)."""
    w1, x1, y1, z1 = q1.unbind(-1)
    w2, x2, y2, z2 = q2.unbind(-1)
    return torch.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        dim=-1,
    )


def quat_multiply_by_vec(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``q ⊗ (0, v)`` for quaternions ``[*, 4]`` and pure-vector parts ``v [*, 3]``."""
    w1, x1, y1, z1 = q.unbind(-1)
    x2, y2, z2 = v.unbind(-1)
    return torch.stack(
        [
            -x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2,
        ],
        dim=-1,
    )


def invert_quat(q: torch.Tensor) -> torch.Tensor:
    """Inverse quaternion ``conj(q) / |q|²``."""
    conj = torch.cat([q[..., :1], -q[..., 1:]], dim=-1)
    return conj / (q * q).sum(dim=-1, keepdim=True)


def _index_tuple(index) -> tuple:
    return index if isinstance(index, tuple) else (index,)


# ---------------------------------------------------------------------------------------------
# Rotation
# ---------------------------------------------------------------------------------------------


class Rotation:
    """A batch of 3D rotations stored as quaternions ``[*, 4]`` or matrices ``[*, 3, 3]``.

    Exactly one of ``rot_mats`` and ``quats`` is given. Quaternions are ``(w, x, y, z)`` and are
    normalised on construction unless ``normalize_quats=False``. Operations keep the
    representation where they can: quaternion composition stays in quaternions, matrix
    composition (:meth:`compose_r`) always returns matrices.
    """

    def __init__(
        self,
        rot_mats: torch.Tensor | None = None,
        quats: torch.Tensor | None = None,
        normalize_quats: bool = True,
    ):
        if (rot_mats is None) == (quats is None):
            raise ValueError("Rotation needs exactly one of rot_mats=[*, 3, 3] or quats=[*, 4]")
        if quats is not None:
            if quats.shape[-1] != 4:
                raise ValueError(f"quats must have shape [*, 4], got {tuple(quats.shape)}")
            if normalize_quats:
                quats = quats / torch.linalg.norm(quats, dim=-1, keepdim=True)
        elif rot_mats.shape[-2:] != (3, 3):
            raise ValueError(f"rot_mats must have shape [*, 3, 3], got {tuple(rot_mats.shape)}")
        self._rot_mats = rot_mats
        self._quats = quats

    # -- construction -------------------------------------------------------------------------
    @staticmethod
    def identity(
        shape: Sequence[int],
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
        requires_grad: bool = False,
        fmt: Literal["quat", "rot_mat"] = "quat",
    ) -> "Rotation":
        """Identity rotations of batch shape ``shape`` in quaternion or matrix form."""
        if fmt == "quat":
            return Rotation(quats=identity_quats(shape, dtype, device, requires_grad), normalize_quats=False)
        if fmt == "rot_mat":
            return Rotation(rot_mats=identity_rot_mats(shape, dtype, device, requires_grad))
        raise ValueError(f"fmt must be 'quat' or 'rot_mat', got {fmt!r}")

    # -- accessors ----------------------------------------------------------------------------
    def get_rot_mats(self) -> torch.Tensor:
        """Rotation matrices ``[*, 3, 3]`` (computed from quaternions if needed)."""
        return self._rot_mats if self._rot_mats is not None else quat_to_rot(self._quats)

    def get_quats(self) -> torch.Tensor:
        """Quaternions ``[*, 4]`` (computed from matrices if needed; sign arbitrary then)."""
        return self._quats if self._quats is not None else rot_to_quat(self._rot_mats)

    def get_cur_rot(self) -> torch.Tensor:
        """The stored tensor, whichever form it is."""
        return self._quats if self._quats is not None else self._rot_mats

    @property
    def is_quat(self) -> bool:
        return self._quats is not None

    @property
    def shape(self) -> torch.Size:
        return self._quats.shape[:-1] if self._quats is not None else self._rot_mats.shape[:-2]

    @property
    def dtype(self) -> torch.dtype:
        return self.get_cur_rot().dtype

    @property
    def device(self) -> torch.device:
        return self.get_cur_rot().device

    @property
    def requires_grad(self) -> bool:
        return self.get_cur_rot().requires_grad

    def __getitem__(self, index) -> "Rotation":
        idx = _index_tuple(index)
        if self._quats is not None:
            return Rotation(quats=self._quats[idx + (slice(None),)], normalize_quats=False)
        return Rotation(rot_mats=self._rot_mats[idx + (slice(None), slice(None))])

    def __mul__(self, right: torch.Tensor) -> "Rotation":
        """Elementwise multiply by a tensor broadcastable to the batch shape (e.g. a mask)."""
        if not isinstance(right, torch.Tensor):
            raise TypeError("Rotation can only be multiplied by a tensor")
        if self._quats is not None:
            return Rotation(quats=self._quats * right[..., None], normalize_quats=False)
        return Rotation(rot_mats=self._rot_mats * right[..., None, None])

    def __rmul__(self, left: torch.Tensor) -> "Rotation":
        return self.__mul__(left)

    # -- algebra ------------------------------------------------------------------------------
    def apply(self, pts: torch.Tensor) -> torch.Tensor:
        """Rotate points ``[*, 3]``."""
        return rot_vec_mul(self.get_rot_mats(), pts)

    def invert_apply(self, pts: torch.Tensor) -> torch.Tensor:
        """Apply the inverse rotation to points ``[*, 3]``."""
        return rot_vec_mul(invert_rot_mat(self.get_rot_mats()), pts)

    def invert(self) -> "Rotation":
        """The inverse rotation, in the same form."""
        if self._quats is not None:
            return Rotation(quats=invert_quat(self._quats), normalize_quats=False)
        return Rotation(rot_mats=invert_rot_mat(self._rot_mats))

    def compose_r(self, r: "Rotation") -> "Rotation":
        """``self ∘ r`` as matrices (the result is in matrix form)."""
        return Rotation(rot_mats=rot_matmul(self.get_rot_mats(), r.get_rot_mats()))

    def compose_q(self, r: "Rotation", normalize_quats: bool = True) -> "Rotation":
        """``self ∘ r`` as quaternions (the result is in quaternion form)."""
        return Rotation(quats=quat_multiply(self.get_quats(), r.get_quats()), normalize_quats=normalize_quats)

    def compose_q_update_vec(self, q_update_vec: torch.Tensor, normalize_quats: bool = True) -> "Rotation":
        """``q ← q + q ⊗ (0, b, c, d)``, i.e. ``q ⊗ (1, b, c, d)``, re-normalised.

        AF2 Suppl. Alg. 23 "BackboneUpdate" lines 2-3 composed onto the current frame.
        """
        quats = self.get_quats()
        new_quats = quats + quat_multiply_by_vec(quats, q_update_vec)
        return Rotation(quats=new_quats, normalize_quats=normalize_quats)

    # -- tensor plumbing ----------------------------------------------------------------------
    def map_tensor_fn(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Rotation":
        """Apply ``fn`` to each batch slice: ``fn`` maps ``[*, X]`` to ``[*', X]``, applied per component."""
        if self._quats is not None:
            q = torch.stack([fn(c) for c in self._quats.unbind(-1)], dim=-1)
            return Rotation(quats=q, normalize_quats=False)
        flat = self._rot_mats.flatten(-2)
        m = torch.stack([fn(c) for c in flat.unbind(-1)], dim=-1).unflatten(-1, (3, 3))
        return Rotation(rot_mats=m)

    def unsqueeze(self, dim: int) -> "Rotation":
        """Insert a batch dimension (``dim`` counts batch dims only; negatives from the end)."""
        if dim >= len(self.shape) + 1 or dim < -(len(self.shape) + 1):
            raise ValueError(f"unsqueeze dim {dim} out of range for batch shape {tuple(self.shape)}")
        if dim < 0:
            dim = len(self.shape) + 1 + dim
        if self._quats is not None:
            return Rotation(quats=self._quats.unsqueeze(dim), normalize_quats=False)
        return Rotation(rot_mats=self._rot_mats.unsqueeze(dim))

    @staticmethod
    def cat(rs: Sequence["Rotation"], dim: int) -> "Rotation":
        """Concatenate along batch dimension ``dim`` (result in matrix form unless all are quats)."""
        nd = len(rs[0].shape)
        dim = dim if dim >= 0 else nd + dim
        if all(r.is_quat for r in rs):
            return Rotation(quats=torch.cat([r._quats for r in rs], dim=dim), normalize_quats=False)
        return Rotation(rot_mats=torch.cat([r.get_rot_mats() for r in rs], dim=dim))

    def to(self, device=None, dtype=None) -> "Rotation":
        if self._quats is not None:
            return Rotation(quats=self._quats.to(device=device, dtype=dtype), normalize_quats=False)
        return Rotation(rot_mats=self._rot_mats.to(device=device, dtype=dtype))

    def detach(self) -> "Rotation":
        if self._quats is not None:
            return Rotation(quats=self._quats.detach(), normalize_quats=False)
        return Rotation(rot_mats=self._rot_mats.detach())

    def __repr__(self) -> str:
        form = "quat" if self.is_quat else "rot_mat"
        return f"Rotation(shape={tuple(self.shape)}, form={form}, dtype={self.dtype})"


# ---------------------------------------------------------------------------------------------
# Rigid
# ---------------------------------------------------------------------------------------------


class Rigid:
    """A batch of rigid transforms ``x -> R x + t``: a :class:`Rotation` and translations ``[*, 3]``.

    AF2 Suppl. Sec. 1.8 "Invariant Point Attention" frame notation ``T = (R, t)``.
    """

    def __init__(self, rots: Rotation | None, trans: torch.Tensor | None):
        if rots is None and trans is None:
            raise ValueError("Rigid needs at least one of rots and trans")
        if rots is None:
            rots = Rotation.identity(trans.shape[:-1], trans.dtype, trans.device, fmt="quat")
        if trans is None:
            trans = torch.zeros(*rots.shape, 3, dtype=rots.dtype, device=rots.device)
        if trans.shape[-1] != 3:
            raise ValueError(f"trans must have shape [*, 3], got {tuple(trans.shape)}")
        if tuple(rots.shape) != tuple(trans.shape[:-1]):
            raise ValueError(
                f"rotation batch shape {tuple(rots.shape)} and translation batch shape "
                f"{tuple(trans.shape[:-1])} differ; broadcast them before building the Rigid"
            )
        self._rots = rots
        self._trans = trans

    # -- construction -------------------------------------------------------------------------
    @staticmethod
    def identity(
        shape: Sequence[int],
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
        requires_grad: bool = False,
        fmt: Literal["quat", "rot_mat"] = "quat",
    ) -> "Rigid":
        """Identity transforms of batch shape ``shape``."""
        rots = Rotation.identity(shape, dtype, device, requires_grad, fmt=fmt)
        trans = torch.zeros(*shape, 3, dtype=dtype, device=device, requires_grad=requires_grad)
        return Rigid(rots, trans)

    @staticmethod
    def from_tensor_4x4(t: torch.Tensor) -> "Rigid":
        """From homogeneous matrices ``[*, 4, 4]`` (matrix-form rotation)."""
        if t.shape[-2:] != (4, 4):
            raise ValueError(f"from_tensor_4x4 expects [*, 4, 4], got {tuple(t.shape)}")
        return Rigid(Rotation(rot_mats=t[..., :3, :3]), t[..., :3, 3])

    @staticmethod
    def from_tensor_7(t: torch.Tensor, normalize_quats: bool = False) -> "Rigid":
        """From ``[*, 7]`` = quaternion (w, x, y, z) followed by translation."""
        if t.shape[-1] != 7:
            raise ValueError(f"from_tensor_7 expects [*, 7], got {tuple(t.shape)}")
        return Rigid(Rotation(quats=t[..., :4], normalize_quats=normalize_quats), t[..., 4:])

    @staticmethod
    def from_3_points(
        p_neg_x_axis: torch.Tensor, origin: torch.Tensor, p_xy_plane: torch.Tensor, eps: float = 1e-8
    ) -> "Rigid":
        """Gram-Schmidt frame at ``origin`` (AF2 Suppl. Alg. 21 "rigidFrom3Points", OpenFold order).

        The x axis points from ``p_neg_x_axis`` to ``origin``; ``p_xy_plane`` lies in the xy plane
        on the +y side; z completes a right-handed frame. ``eps`` is added under each square root.

        Returns:
            A matrix-form :class:`Rigid` whose rotation columns are ``e0, e1, e2`` and whose
            translation is ``origin``.
        """
        e0 = origin - p_neg_x_axis
        e1 = p_xy_plane - origin
        e0 = e0 / torch.sqrt((e0 * e0).sum(dim=-1, keepdim=True) + eps)
        e1 = e1 - e0 * (e0 * e1).sum(dim=-1, keepdim=True)
        e1 = e1 / torch.sqrt((e1 * e1).sum(dim=-1, keepdim=True) + eps)
        e2 = torch.cross(e0, e1, dim=-1)
        rots = torch.stack([e0, e1, e2], dim=-1)  # [*, 3, 3], columns e0, e1, e2
        return Rigid(Rotation(rot_mats=rots), origin)

    @staticmethod
    def make_transform_from_reference(
        n_xyz: torch.Tensor, ca_xyz: torch.Tensor, c_xyz: torch.Tensor, eps: float = 1e-20
    ) -> "Rigid":
        """Backbone frame at CA with x toward C and N in the xy plane (y > 0 side).

        Built, as in AF2's ``all_atom.make_transform_from_reference``, from three elementary
        rotations: about z to bring C into the xz plane, about y to put C on +x, and about x to
        put N in the xy plane. ``eps`` is added under each square root.
        """
        n = n_xyz - ca_xyz
        c = c_xyz - ca_xyz
        cx, cy, cz = c.unbind(-1)
        zero, one = torch.zeros_like(cx), torch.ones_like(cx)

        norm = torch.sqrt(eps + cx**2 + cy**2)
        sin1, cos1 = -cy / norm, cx / norm
        rot_z = torch.stack([cos1, -sin1, zero, sin1, cos1, zero, zero, zero, one], -1).unflatten(-1, (3, 3))

        norm = torch.sqrt(eps + cx**2 + cy**2 + cz**2)
        sin2, cos2 = cz / norm, torch.sqrt(cx**2 + cy**2) / norm
        rot_y = torch.stack([cos2, zero, sin2, zero, one, zero, -sin2, zero, cos2], -1).unflatten(-1, (3, 3))

        c_rots = rot_matmul(rot_y, rot_z)  # [*, 3, 3]
        n = rot_vec_mul(c_rots, n)
        _, ny, nz = n.unbind(-1)
        norm = torch.sqrt(eps + ny**2 + nz**2)
        sin3, cos3 = -nz / norm, ny / norm
        rot_x = torch.stack([one, zero, zero, zero, cos3, -sin3, zero, sin3, cos3], -1).unflatten(-1, (3, 3))

        rots = rot_matmul(rot_x, c_rots).transpose(-1, -2)  # global <- local
        return Rigid(Rotation(rot_mats=rots), ca_xyz)

    # -- accessors ----------------------------------------------------------------------------
    def get_rots(self) -> Rotation:
        return self._rots

    def get_trans(self) -> torch.Tensor:
        return self._trans

    @property
    def shape(self) -> torch.Size:
        return self._trans.shape[:-1]

    @property
    def dtype(self) -> torch.dtype:
        return self._trans.dtype

    @property
    def device(self) -> torch.device:
        return self._trans.device

    def __getitem__(self, index) -> "Rigid":
        idx = _index_tuple(index)
        return Rigid(self._rots[idx], self._trans[idx + (slice(None),)])

    def __mul__(self, right: torch.Tensor) -> "Rigid":
        """Elementwise multiply rotation and translation by a tensor of the batch shape (e.g. a mask)."""
        if not isinstance(right, torch.Tensor):
            raise TypeError("Rigid can only be multiplied by a tensor")
        return Rigid(self._rots * right, self._trans * right[..., None])

    def __rmul__(self, left: torch.Tensor) -> "Rigid":
        return self.__mul__(left)

    # -- algebra ------------------------------------------------------------------------------
    def apply(self, pts: torch.Tensor) -> torch.Tensor:
        """``R x + t`` for points ``[*, 3]``."""
        return self._rots.apply(pts) + self._trans

    def invert_apply(self, pts: torch.Tensor) -> torch.Tensor:
        """``Rᵀ (x - t)`` for points ``[*, 3]``."""
        return self._rots.invert_apply(pts - self._trans)

    def invert(self) -> "Rigid":
        """``(Rᵀ, -Rᵀ t)``."""
        rot_inv = self._rots.invert()
        return Rigid(rot_inv, -rot_inv.apply(self._trans))

    def compose(self, r: "Rigid") -> "Rigid":
        """``self ∘ r``: ``x -> R_self (R_r x + t_r) + t_self`` (matrix-form rotation)."""
        return Rigid(self._rots.compose_r(r._rots), self._rots.apply(r._trans) + self._trans)

    def compose_q(self, r: "Rigid", normalize_quats: bool = True) -> "Rigid":
        """``self ∘ r`` keeping quaternion-form rotations."""
        new_rots = self._rots.compose_q(r._rots, normalize_quats=normalize_quats)
        return Rigid(new_rots, self._rots.apply(r._trans) + self._trans)

    def compose_q_update_vec(self, q_update_vec: torch.Tensor) -> "Rigid":
        """Compose with an update ``[*, 6]`` = (quaternion b, c, d ; translation).

        AF2 Suppl. Alg. 23 "BackboneUpdate" applied as in Alg. 20 "StructureModule" line 10:
        ``q ← normalize(q ⊗ (1, b, c, d))`` and ``t ← t + R_old Δt``.
        """
        q_vec, t_vec = q_update_vec[..., :3], q_update_vec[..., 3:]
        new_rots = self._rots.compose_q_update_vec(q_vec)
        return Rigid(new_rots, self._trans + self._rots.apply(t_vec))

    def scale_translation(self, trans_scale_factor: float) -> "Rigid":
        """Same rotation, translation multiplied by ``trans_scale_factor``."""
        return Rigid(self._rots, self._trans * trans_scale_factor)

    def stop_rot_gradient(self) -> "Rigid":
        """Detach the rotation (AF2 Suppl. Alg. 20 line 20), keep gradients through the translation."""
        return Rigid(self._rots.detach(), self._trans)

    # -- conversions --------------------------------------------------------------------------
    def to_tensor_7(self) -> torch.Tensor:
        """``[*, 7]`` = quaternion (w, x, y, z) then translation."""
        return torch.cat([self._rots.get_quats(), self._trans], dim=-1)

    def to_tensor_4x4(self) -> torch.Tensor:
        """Homogeneous matrices ``[*, 4, 4]``."""
        rot = self._rots.get_rot_mats()
        top = torch.cat([rot, self._trans[..., None]], dim=-1)  # [*, 3, 4]
        bottom = torch.zeros_like(top[..., :1, :])
        bottom[..., 0, 3] = 1.0
        return torch.cat([top, bottom], dim=-2)  # [*, 4, 4]

    # -- tensor plumbing ----------------------------------------------------------------------
    def map_tensor_fn(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Rigid":
        """Apply ``fn`` to each component tensor over the batch dims (see :meth:`Rotation.map_tensor_fn`)."""
        trans = torch.stack([fn(c) for c in self._trans.unbind(-1)], dim=-1)
        return Rigid(self._rots.map_tensor_fn(fn), trans)

    def unsqueeze(self, dim: int) -> "Rigid":
        """Insert a batch dimension (``dim`` counts batch dims only)."""
        if dim >= len(self.shape) + 1 or dim < -(len(self.shape) + 1):
            raise ValueError(f"unsqueeze dim {dim} out of range for batch shape {tuple(self.shape)}")
        if dim < 0:
            dim = len(self.shape) + 1 + dim
        return Rigid(self._rots.unsqueeze(dim), self._trans.unsqueeze(dim))

    @staticmethod
    def cat(rs: Sequence["Rigid"], dim: int) -> "Rigid":
        """Concatenate along batch dimension ``dim``."""
        nd = len(rs[0].shape)
        dim = dim if dim >= 0 else nd + dim
        return Rigid(Rotation.cat([r._rots for r in rs], dim), torch.cat([r._trans for r in rs], dim=dim))

    def to(self, device=None, dtype=None) -> "Rigid":
        return Rigid(self._rots.to(device=device, dtype=dtype), self._trans.to(device=device, dtype=dtype))

    def detach(self) -> "Rigid":
        return Rigid(self._rots.detach(), self._trans.detach())

    def __repr__(self) -> str:
        return f"Rigid(shape={tuple(self.shape)}, rots={self._rots!r})"
