"""Golden tests for sparkfold.geometry and sparkfold.allatom against the OpenFold fixtures."""

import torch
from testutil import FIXTURES, load_module_fixture, load_npz
from tolerances import GEOMETRY_FROM_COORDS, MODULE, assert_close_scaled

from sparkfold.allatom import (
    atom14_to_atom37,
    atom37_to_torsion_angles,
    frames_and_literature_positions_to_atom14_pos,
    make_atom14_masks,
    pseudo_beta,
    residue_constant_tensors,
    torsion_angles_to_frames,
)
from sparkfold.geometry import Rigid, Rotation, quat_to_rot


def _tensors(arrays):
    return {k: torch.tensor(v) for k, v in arrays.items()}


def _assert_exact(actual, expected, name):
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.equal(actual, expected), f"{name}: {int((actual != expected).sum())} elements differ"


def test_rigid_ops():
    t = _tensors(load_module_fixture("rigid_ops")[0])
    quat, trans, pts = t["input/quat"], t["input/trans"], t["input/points"]
    assert_close_scaled(quat_to_rot(quat), t["output/quat_to_rot"], MODULE, "quat_to_rot")

    updated = Rigid(Rotation(quats=quat), trans).compose_q_update_vec(t["input/q_update_vec"])
    assert_close_scaled(updated.to_tensor_7(), t["output/compose_q_update_vec_tensor_7"], MODULE, "compose_q_update_vec")

    r = Rigid(Rotation(rot_mats=quat_to_rot(quat)), trans)[..., None]  # broadcast over the 5 points
    assert_close_scaled(r.apply(pts), t["output/apply"], MODULE, "apply")
    assert_close_scaled(r.invert_apply(pts), t["output/invert_apply"], MODULE, "invert_apply")
    # The quaternion form gives the same action.
    rq = Rigid(Rotation(quats=quat), trans)[..., None]
    assert_close_scaled(rq.apply(pts), t["output/apply"], MODULE, "apply (quat form)")

    ref = Rigid.make_transform_from_reference(t["input/n_xyz"], t["input/ca_xyz"], t["input/c_xyz"], eps=1e-8)
    assert_close_scaled(ref.to_tensor_4x4(), t["output/make_transform_from_reference_4x4"], MODULE,
                        "make_transform_from_reference")


def test_residue_tables_match_fixture_constants():
    tables = residue_constant_tensors()
    t = _tensors(load_module_fixture("frames_and_literature_positions_to_atom14_pos")[0])
    for name in ("default_frames", "group_idx", "atom_mask", "lit_positions"):
        _assert_exact(tables[name], t[f"const/{name}"], name)


def test_torsion_angles_to_frames():
    t = _tensors(load_module_fixture("torsion_angles_to_frames")[0])
    r = Rigid(Rotation(rot_mats=quat_to_rot(t["input/r_quat"])), t["input/r_trans"])
    frames = torsion_angles_to_frames(r, t["input/alpha"], t["input/aatype"], t["const/default_frames"])
    assert frames.shape == (9, 8)
    assert_close_scaled(frames.to_tensor_4x4(), t["output/frames_4x4"], MODULE, "frames_4x4")
    # Default tables give the same.
    frames_default = torsion_angles_to_frames(r, t["input/alpha"], t["input/aatype"])
    assert torch.equal(frames_default.to_tensor_4x4(), frames.to_tensor_4x4())


def test_frames_and_literature_positions_to_atom14_pos():
    t = _tensors(load_module_fixture("frames_and_literature_positions_to_atom14_pos")[0])
    frames = Rigid.from_tensor_4x4(t["input/frames_4x4"])
    pos = frames_and_literature_positions_to_atom14_pos(
        frames, t["input/aatype"], t["const/default_frames"], t["const/group_idx"], t["const/atom_mask"],
        t["const/lit_positions"],
    )
    assert_close_scaled(pos, t["output/atom14_pos"], MODULE, "atom14_pos")


def test_atom14_to_atom37():
    t = _tensors(load_module_fixture("atom14_to_atom37")[0])
    out = atom14_to_atom37(t["input/atom14"], t["input/residx_atom37_to_atom14"], t["input/atom37_atom_exists"])
    assert_close_scaled(out, t["output/atom37"], MODULE, "atom37")


def test_make_atom14_masks_module_fixture():
    t = _tensors(load_module_fixture("make_atom14_masks")[0])
    out = make_atom14_masks(t["input/aatype"])
    for key, value in out.items():
        _assert_exact(value, t[f"output/{key}"], key)


def test_make_atom14_masks_all_restypes():
    t = _tensors(load_npz(FIXTURES / "pipeline" / "transforms" / "make_atom14_masks_all_restypes.npz")[0])
    out = make_atom14_masks(t["input/aatype"])
    assert set(out) == {k[len("output/"):] for k in t if k.startswith("output/")}
    for key, value in out.items():
        _assert_exact(value, t[f"output/{key}"], key)


def test_pseudo_beta():
    t = _tensors(load_module_fixture("pseudo_beta")[0])
    pb, pb_mask = pseudo_beta(t["input/aatype"], t["input/all_atom_positions"], t["input/all_atom_mask"])
    _assert_exact(pb, t["output/pseudo_beta"], "pseudo_beta")
    _assert_exact(pb_mask, t["output/pseudo_beta_mask"], "pseudo_beta_mask")
    assert torch.equal(pseudo_beta(t["input/aatype"], t["input/all_atom_positions"]), pb)


def test_structure_2q2k_transforms():
    """make_pseudo_beta, atom37_to_torsion_angles, make_atom14_masks on a real chain (2q2k A)."""
    t = _tensors(load_npz(FIXTURES / "pipeline" / "transforms" / "structure_2q2k_A.npz")[0])
    aatype, pos, mask = t["input/aatype"], t["input/all_atom_positions"], t["input/all_atom_mask"]
    pb, pb_mask = pseudo_beta(aatype, pos, mask)
    _assert_exact(pb, t["output/pseudo_beta"], "pseudo_beta")
    _assert_exact(pb_mask, t["output/pseudo_beta_mask"], "pseudo_beta_mask")

    tors = atom37_to_torsion_angles(aatype, pos, mask)
    _assert_exact(tors["torsion_angles_mask"], t["output/torsion_angles_mask"], "torsion_angles_mask")
    for key in ("torsion_angles_sin_cos", "alt_torsion_angles_sin_cos"):
        assert tors[key].dtype == torch.float32
        assert_close_scaled(tors[key], t[f"output/{key}"], GEOMETRY_FROM_COORDS, key, scaled=False)
    # Non-trivial: alt differs from the main torsions for the pi-periodic chis present.
    assert not torch.equal(tors["alt_torsion_angles_sin_cos"], tors["torsion_angles_sin_cos"])

    for key, value in make_atom14_masks(aatype).items():
        _assert_exact(value, t[f"output/{key}"], key)


def test_atom37_to_torsion_angles_batched():
    """Leading (template) dims: two stacked copies give the per-chain result twice."""
    t = _tensors(load_npz(FIXTURES / "pipeline" / "transforms" / "structure_2q2k_A.npz")[0])
    aatype, pos, mask = t["input/aatype"], t["input/all_atom_positions"], t["input/all_atom_mask"]
    single = atom37_to_torsion_angles(aatype, pos, mask)
    batched = atom37_to_torsion_angles(torch.stack([aatype, aatype]), torch.stack([pos, pos]),
                                       torch.stack([mask, mask]))
    for key, value in single.items():
        assert batched[key].shape == (2, *value.shape)
        for i in range(2):
            assert_close_scaled(batched[key][i], value, GEOMETRY_FROM_COORDS, key, scaled=False)
