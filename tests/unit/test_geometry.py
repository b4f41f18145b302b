"""Property tests for sparkfold.geometry (rigid algebra), allatom invariances and IPA invariance."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkfold.allatom import atom37_to_torsion_angles, torsion_angles_to_frames
from sparkfold.geometry import (
    Rigid,
    Rotation,
    quat_multiply,
    quat_to_rot,
    rot_matmul,
    rot_to_quat,
)
from sparkfold.model.structure_module import InvariantPointAttention

SEEDS = st.integers(min_value=0, max_value=2**31 - 1)
PROPS = settings(max_examples=25, deadline=None)
ATOL = 1e-9  # float64 throughout the algebraic properties


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _random_rigid(seed, shape=(5,), fmt="quat", scale=10.0, dtype=torch.float64):
    g = _gen(seed)
    q = torch.randn(*shape, 4, generator=g, dtype=dtype)
    t = scale * torch.randn(*shape, 3, generator=g, dtype=dtype)
    rot = Rotation(quats=q) if fmt == "quat" else Rotation(rot_mats=quat_to_rot(q / q.norm(dim=-1, keepdim=True)))
    return Rigid(rot, t)


def _close(a, b, atol=ATOL):
    torch.testing.assert_close(a, b, rtol=0, atol=atol)


@PROPS
@given(seed=SEEDS, fmt=st.sampled_from(["quat", "rot_mat"]))
def test_compose_with_inverse_is_identity(seed, fmt):
    r = _random_rigid(seed, fmt=fmt)
    ident = torch.eye(4, dtype=torch.float64).expand(5, 4, 4)
    _close(r.compose(r.invert()).to_tensor_4x4(), ident)
    _close(r.invert().compose(r).to_tensor_4x4(), ident)


@PROPS
@given(seed=SEEDS, fmt=st.sampled_from(["quat", "rot_mat"]))
def test_apply_then_invert_apply_roundtrip(seed, fmt):
    r = _random_rigid(seed, fmt=fmt)
    pts = torch.randn(5, 3, generator=_gen(seed + 1), dtype=torch.float64)
    _close(r.invert_apply(r.apply(pts)), pts)
    _close(r.invert().apply(pts), r.invert_apply(pts))


@PROPS
@given(seed=SEEDS)
def test_compose_is_function_composition_and_associative(seed):
    a, b, c = (_random_rigid(seed + i) for i in range(3))
    pts = torch.randn(5, 3, generator=_gen(seed + 7), dtype=torch.float64)
    _close(a.compose(b).apply(pts), a.apply(b.apply(pts)), atol=1e-8)
    _close(a.compose(b).compose(c).to_tensor_4x4(), a.compose(b.compose(c)).to_tensor_4x4(), atol=1e-8)
    # Quaternion composition agrees with matrix composition.
    _close(a.compose_q(b).get_rots().get_rot_mats(), a.compose(b).get_rots().get_rot_mats())


@PROPS
@given(seed=SEEDS)
def test_quaternion_double_cover(seed):
    q = torch.randn(6, 4, generator=_gen(seed), dtype=torch.float64)
    _close(quat_to_rot(q), quat_to_rot(-q))
    _close(Rotation(quats=q).get_rot_mats(), Rotation(quats=-q).get_rot_mats())
    # rot_to_quat recovers q up to sign.
    qn = q / q.norm(dim=-1, keepdim=True)
    back = rot_to_quat(quat_to_rot(qn))
    sign = torch.sign((back * qn).sum(-1, keepdim=True))
    _close(back * sign, qn, atol=1e-8)
    # The quaternion product corresponds to the matrix product.
    q2 = torch.randn(6, 4, generator=_gen(seed + 1), dtype=torch.float64)
    q2 = q2 / q2.norm(dim=-1, keepdim=True)
    _close(quat_to_rot(quat_multiply(qn, q2)), rot_matmul(quat_to_rot(qn), quat_to_rot(q2)))


@PROPS
@given(seed=SEEDS)
def test_quat_to_rot_is_proper_rotation(seed):
    q = torch.randn(6, 4, generator=_gen(seed), dtype=torch.float64)
    r = Rotation(quats=q).get_rot_mats()
    _close(r @ r.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(6, 3, 3))
    _close(torch.linalg.det(r), torch.ones(6, dtype=torch.float64))


@PROPS
@given(seed=SEEDS)
def test_compose_q_update_vec_matches_quaternion_product(seed):
    r = _random_rigid(seed)
    vec = torch.randn(5, 6, generator=_gen(seed + 3), dtype=torch.float64)
    upd_q = torch.cat([torch.ones(5, 1, dtype=torch.float64), vec[:, :3]], dim=-1)
    expected = r.compose(Rigid(Rotation(quats=upd_q), vec[:, 3:]))
    got = r.compose_q_update_vec(vec)
    _close(got.to_tensor_4x4(), expected.to_tensor_4x4(), atol=1e-8)
    assert got.get_rots().is_quat
    _close(got.get_rots().get_quats().norm(dim=-1), torch.ones(5, dtype=torch.float64))


@PROPS
@given(seed=SEEDS)
def test_tensor_roundtrips(seed):
    r = _random_rigid(seed)
    _close(Rigid.from_tensor_7(r.to_tensor_7()).to_tensor_4x4(), r.to_tensor_4x4())
    _close(Rigid.from_tensor_4x4(r.to_tensor_4x4()).to_tensor_4x4(), r.to_tensor_4x4())
    # 7-vector from a matrix rigid is the same rotation (quaternion sign arbitrary).
    rm = Rigid.from_tensor_4x4(r.to_tensor_4x4())
    _close(Rigid.from_tensor_7(rm.to_tensor_7()).to_tensor_4x4(), r.to_tensor_4x4(), atol=1e-8)


@PROPS
@given(seed=SEEDS)
def test_from_3_points_orthonormal_frame(seed):
    g = _gen(seed)
    p0, p1, p2 = (5 * torch.randn(7, 3, generator=g, dtype=torch.float64) for _ in range(3))
    r = Rigid.from_3_points(p0, p1, p2, eps=1e-12)
    rot = r.get_rots().get_rot_mats()
    _close(rot.transpose(-1, -2) @ rot, torch.eye(3, dtype=torch.float64).expand(7, 3, 3), atol=1e-8)
    _close(torch.linalg.det(rot), torch.ones(7, dtype=torch.float64), atol=1e-8)
    _close(r.get_trans(), p1)
    local0, local2 = r.invert_apply(p0), r.invert_apply(p2)
    assert (local0[:, 0] < 0).all() and torch.allclose(local0[:, 1:], torch.zeros_like(local0[:, 1:]), atol=1e-8)
    assert (local2[:, 1] > 0).all() and torch.allclose(local2[:, 2], torch.zeros(7, dtype=torch.float64), atol=1e-8)


@PROPS
@given(seed=SEEDS)
def test_make_transform_from_reference_frame(seed):
    g = _gen(seed)
    n, ca, c = (5 * torch.randn(7, 3, generator=g, dtype=torch.float64) for _ in range(3))
    r = Rigid.make_transform_from_reference(n, ca, c, eps=1e-12)
    local_c, local_n = r.invert_apply(c), r.invert_apply(n)
    assert (local_c[:, 0] > 0).all()
    _close(local_c[:, 1:], torch.zeros(7, 2, dtype=torch.float64), atol=1e-8)
    _close(local_n[:, 2], torch.zeros(7, dtype=torch.float64), atol=1e-8)
    _close(torch.linalg.det(r.get_rots().get_rot_mats()), torch.ones(7, dtype=torch.float64), atol=1e-8)


def test_indexing_unsqueeze_cat_shapes():
    r = _random_rigid(0, shape=(2, 5))
    assert r[..., None].shape == (2, 5, 1)
    assert r[0].shape == (5,)
    assert r[:, 1:3].shape == (2, 2)
    assert r.unsqueeze(-1).shape == (2, 5, 1) and r.unsqueeze(0).shape == (1, 2, 5)
    assert Rigid.cat([r, r], dim=-1).shape == (2, 10)
    ident = Rigid.identity((3, 4), torch.float32, fmt="rot_mat")
    assert ident.shape == (3, 4) and not ident.get_rots().is_quat
    pts = torch.randn(3, 4, 3)
    assert torch.equal(ident.apply(pts), pts)
    assert torch.equal(Rigid.identity((3, 4)).scale_translation(10.0).get_trans(), torch.zeros(3, 4, 3))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="exactly one"):
        Rotation()
    with pytest.raises(ValueError, match=r"\[\*, 4\]"):
        Rotation(quats=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="differ"):
        Rigid(Rotation.identity((3,)), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="4, 4"):
        Rigid.from_tensor_4x4(torch.zeros(3, 3, 3))


def test_stop_rot_gradient_keeps_translation_gradient():
    q = torch.randn(4, 4, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    r = Rigid(Rotation(quats=q), t).stop_rot_gradient()
    r.apply(torch.ones(4, 3)).sum().backward()
    assert q.grad is None and t.grad is not None


@PROPS
@given(seed=SEEDS)
def test_torsion_angles_rigid_motion_invariant(seed):
    """Torsion angles from coordinates do not change under a global rotation + translation."""
    g = _gen(seed)
    n_res = 6
    aatype = torch.randint(0, 21, (n_res,), generator=g)
    pos = 3 * torch.randn(n_res, 37, 3, generator=g, dtype=torch.float64)
    mask = (torch.rand(n_res, 37, generator=g) > 0.1).double()
    mask[:, [0, 1, 2, 4]] = 1.0  # backbone N, CA, C, O present: some torsions always defined
    glob = _random_rigid(seed + 11, shape=(), scale=20.0)
    moved = glob.apply(pos)
    a = atom37_to_torsion_angles(aatype, pos, mask)
    b = atom37_to_torsion_angles(aatype, moved, mask)
    assert torch.equal(a["torsion_angles_mask"], b["torsion_angles_mask"])
    # Masked torsions involve the zero padding before residue 0 or absent atoms: not compared.
    valid = a["torsion_angles_mask"][..., None]
    assert valid.sum() > 0
    for key in ("torsion_angles_sin_cos", "alt_torsion_angles_sin_cos"):
        _close(a[key] * valid, b[key] * valid, atol=1e-7)


@PROPS
@given(seed=SEEDS)
def test_torsion_angles_to_frames_equivariant(seed):
    """Global frames move with the backbone: T_glob ∘ frames(r) == frames(T_glob ∘ r)."""
    g = _gen(seed)
    r = _random_rigid(seed, shape=(4,))
    alpha = torch.randn(4, 7, 2, generator=g, dtype=torch.float64)
    alpha = alpha / alpha.norm(dim=-1, keepdim=True)
    aatype = torch.randint(0, 20, (4,), generator=g)
    glob = _random_rigid(seed + 5, shape=(), scale=20.0)
    a = glob[..., None, None].compose(torsion_angles_to_frames(r, alpha, aatype))
    b = torsion_angles_to_frames(glob[..., None].compose(r), alpha, aatype)
    _close(a.to_tensor_4x4(), b.to_tensor_4x4(), atol=1e-8)


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS, ipa_form=st.sampled_from(["monomer", "multimer"]))
def test_ipa_invariant_to_global_rigid_motion(seed, ipa_form):
    """IPA output is unchanged when every frame is composed with one global rigid transform."""
    torch.manual_seed(seed)
    n_res, c_s, c_z = 7, 12, 5
    ipa = InvariantPointAttention(c_s, c_z, c_hidden=4, num_heads=2, num_qk_points=3, num_v_points=4,
                                  ipa_form=ipa_form).double()
    with torch.no_grad():
        for p in ipa.parameters():  # the "final" output init is zero: make every term live
            p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.1)
    g = _gen(seed)
    s = torch.randn(n_res, c_s, generator=g, dtype=torch.float64)
    z = torch.randn(n_res, n_res, c_z, generator=g, dtype=torch.float64)
    mask = torch.ones(n_res, dtype=torch.float64)
    mask[-1] = 0.0
    r = _random_rigid(seed + 1, shape=(n_res,), scale=3.0)
    glob = _random_rigid(seed + 2, shape=(), scale=30.0)
    with torch.no_grad():
        out = ipa(s, z, r, mask)
        out_moved = ipa(s, z, glob[..., None].compose(r), mask)
    _close(out_moved, out, atol=1e-8)
    assert out.abs().max() > 1e-3  # not trivially zero
