"""Tests of datasets/smpl.py (SMPL through smplx) and the SMPL parts of datasets/avatars.py: the
rest skeleton from a tiny synthetic SMPL-like model file against hand-regressed joints, SMPL pose
parameters against hand-computed forward kinematics and against smplx's own forward pass, and the
one-line errors when smplx or the model files are missing."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import sys

import numpy as np
import pytest
import torch
from tensorfield.datasets.avatars import load_avatars, read_pose_file, write_avatars
from tensorfield.datasets.errors import DatasetError
from tensorfield.datasets.smpl import SMPL_ENV, SMPL_JOINT_NAMES, find_smpl_model, smpl_pose, smpl_skeleton
from tensorfield.datasets.synthetic_avatars import generate_avatars
from tensorfield.fields.skeleton import linear_blend_skinning

PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
BETAS = [0.5, -1.0, 2.0]

smplx = pytest.importorskip("smplx")


def _shaped(arrays: dict, betas) -> np.ndarray:
    """``v_template + shapedirs . betas`` by hand."""
    coefficients = np.zeros(arrays["shapedirs"].shape[-1])
    coefficients[: len(betas)] = betas
    return arrays["v_template"] + arrays["shapedirs"] @ coefficients


def test_rest_skeleton_is_the_regressed_shaped_template(ds_fake_smpl):
    folder, arrays = ds_fake_smpl
    skeleton = smpl_skeleton(BETAS, model_path=folder)
    expected = arrays["J_regressor"] @ _shaped(arrays, BETAS)
    assert skeleton.names == SMPL_JOINT_NAMES
    assert list(skeleton.parents) == PARENTS
    assert torch.allclose(skeleton.rest_joints, torch.from_numpy(expected), atol=1e-10)
    # the shape matters: another body has other joints
    assert not torch.allclose(smpl_skeleton([], model_path=folder).rest_joints, skeleton.rest_joints, atol=1e-4)


def test_model_file_search_and_environment(ds_fake_smpl, monkeypatch, tmp_path):
    folder, _ = ds_fake_smpl
    nested = tmp_path / "models"
    shutil.copytree(folder, nested / "smpl")  # smplx.create's layout: FOLDER/smpl/SMPL_NEUTRAL.pkl
    assert find_smpl_model(nested) == nested / "smpl" / "SMPL_NEUTRAL.pkl"
    assert find_smpl_model(folder / "SMPL_NEUTRAL.pkl") == folder / "SMPL_NEUTRAL.pkl"
    monkeypatch.setenv(SMPL_ENV, str(folder))
    assert find_smpl_model(None) == folder / "SMPL_NEUTRAL.pkl"
    assert find_smpl_model("") == folder / "SMPL_NEUTRAL.pkl"


def test_npz_model_file(tmp_path, ds_smpl_writer):
    arrays = ds_smpl_writer(tmp_path, name="SMPL_FEMALE.npz")
    skeleton = smpl_skeleton(BETAS, gender="female", model_path=tmp_path)
    assert torch.allclose(skeleton.rest_joints, torch.from_numpy(arrays["J_regressor"] @ _shaped(arrays, BETAS)), atol=1e-10)


def test_global_orientation_and_translation_by_hand():
    """A 90 degree turn about z at the pelvis, transl, then ZJU's Rh (90 degrees about x) and Th."""
    rest = torch.zeros(24, 3, dtype=torch.float64)
    rest[0] = torch.tensor([0.1, 0.9, 0.0])
    rest[1] = torch.tensor([0.2, 0.8, 0.0])  # left hip, child of the pelvis
    from tensorfield.fields.skeleton import Skeleton

    skeleton = Skeleton(PARENTS, rest, SMPL_JOINT_NAMES)
    poses = torch.zeros(1, 72, dtype=torch.float64)
    poses[0, 2] = math.pi / 2
    transl = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    rotations, root = smpl_pose(poses, rest[0], transl=transl)
    assert torch.equal(rotations, torch.zeros(1, 24, 3, dtype=torch.float64))
    joints = skeleton.forward_kinematics(rotations, root).joints[0]
    # hip offset (0.1, -0.1, 0) turned by +90 about z is (0.1, 0.1, 0)
    assert torch.allclose(joints[0], torch.tensor([1.1, 2.9, 3.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(joints[1], torch.tensor([1.2, 3.0, 3.0], dtype=torch.float64), atol=1e-12)
    Rh = torch.tensor([[math.pi / 2, 0.0, 0.0]], dtype=torch.float64)
    Th = torch.tensor([[0.0, 0.0, -5.0]], dtype=torch.float64)
    _, world_root = smpl_pose(poses, rest[0], transl=transl, Rh=Rh, Th=Th)
    world = skeleton.forward_kinematics(rotations, world_root).joints[0]
    # x_w = R_x(90) x + Th: (x, y, z) -> (x, -z, y) + Th
    assert torch.allclose(world[1], torch.tensor([1.2, -3.0, -2.0], dtype=torch.float64), atol=1e-12)


def test_pose_conversion_matches_smplx_forward(ds_fake_smpl):
    """Random SMPL poses: our skeleton's joints and LBS of the shaped template equal smplx's."""
    folder, arrays = ds_fake_smpl
    skeleton = smpl_skeleton(BETAS, model_path=folder)
    generator = torch.Generator().manual_seed(0)
    frames = 3
    poses = 0.5 * torch.randn(frames, 72, generator=generator, dtype=torch.float64)
    transl = torch.randn(frames, 3, generator=generator, dtype=torch.float64)
    rotations, root = smpl_pose(poses, skeleton.rest_joints[0], transl=transl)
    posed = skeleton.forward_kinematics(rotations, root)

    keys = ["nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel"]
    keys += [side + tip for side in "lr" for tip in ("thumb", "index", "middle", "ring", "pinky")]
    model = smplx.SMPL(str(folder / "SMPL_NEUTRAL.pkl"), num_betas=len(BETAS), dtype=torch.float64,
                       vertex_ids=dict.fromkeys(keys, 0), batch_size=frames)  # fmt: skip
    betas = torch.tensor([BETAS] * frames, dtype=torch.float64)
    output = model(betas=betas, global_orient=poses[:, :3], body_pose=poses[:, 3:], transl=transl)
    assert torch.allclose(posed.joints, output.joints[:, :24], atol=1e-10)
    shaped = torch.from_numpy(_shaped(arrays, BETAS))
    weights = torch.from_numpy(arrays["weights"])
    vertices = torch.stack([linear_blend_skinning(shaped, weights, posed.bone_transforms[t]).points for t in range(frames)])
    assert torch.allclose(vertices, output.vertices, atol=1e-10)


def test_smpl_layout_loads_and_drives(ds_fake_smpl, tmp_path):
    """An identity whose skeleton.json names an SMPL body and whose poses.npz holds smpl_poses."""
    folder, arrays = ds_fake_smpl
    generated = generate_avatars(n_identities=1, n_train=2, n_novel_pose=1, n_held_out=0, resolution=16, seed=1)
    root = write_avatars(tmp_path / "data", generated.sequences, generated.splits)
    subject = root / generated.sequences[0].name
    (subject / "skeleton.json").write_text(json.dumps({"smpl": {"betas": BETAS, "gender": "neutral"}}))
    poses = 0.3 * np.random.default_rng(0).standard_normal((3, 72))
    np.savez(subject / "poses.npz", smpl_poses=poses, transl=np.ones((3, 3)))
    with pytest.raises(DatasetError) as missing:
        load_avatars(root)
    assert str(missing.value).startswith("subject_0/skeleton.json: needs the SMPL model files")
    assert "smpl_model_path" in str(missing.value) and SMPL_ENV in str(missing.value)
    sequence = load_avatars(root, smpl_model_path=folder).sequences["subject_0"]
    expected_rest = arrays["J_regressor"] @ _shaped(arrays, BETAS)
    assert torch.allclose(sequence.skeleton.rest_joints, torch.from_numpy(expected_rest), atol=1e-10)
    rotations, transform = smpl_pose(torch.from_numpy(poses), sequence.skeleton.rest_joints[0], transl=torch.ones(3, 3, dtype=torch.float64))
    assert torch.equal(sequence.rotations, rotations) and torch.allclose(sequence.root, transform)
    assert torch.allclose(sequence.rotations[:, 1:], torch.from_numpy(poses).reshape(3, 24, 3)[:, 1:])
    # the same file drives a model (render --poses); a NaN is named by frame and joint
    assert torch.equal(read_pose_file(subject / "poses.npz", sequence.skeleton).rotations, rotations)
    poses[1, 3 * 5 + 1] = np.nan
    np.savez(tmp_path / "bad.npz", smpl_poses=poses)
    with pytest.raises(DatasetError, match=r"bad\.npz: rotation of joint 5 \('right_knee'\) in frame 1 is NaN/inf$"):
        read_pose_file(tmp_path / "bad.npz", sequence.skeleton)
    np.savez(tmp_path / "short.npz", smpl_poses=poses[:, :69])
    with pytest.raises(DatasetError, match=r"short\.npz: smpl_poses must be \[T, 72\]"):
        read_pose_file(tmp_path / "short.npz", sequence.skeleton)


# ====================================================================== what is missing
def test_missing_model_files_name_the_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(SMPL_ENV, raising=False)
    with pytest.raises(DatasetError) as error:
        smpl_skeleton(BETAS, model_path=tmp_path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{tmp_path.as_posix()}: no SMPL model file of gender neutral")
    assert "SMPL_NEUTRAL.pkl" in message and "smpl/SMPL_NEUTRAL.pkl" in message and "not shipped" in message
    monkeypatch.setenv(SMPL_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match=r"nowhere: SMPL model path does not exist \(from smpl_model_path or TENSORFIELD_SMPL"):
        smpl_skeleton(BETAS)


def test_missing_smplx_names_the_model_file(ds_fake_smpl, monkeypatch):
    folder, _ = ds_fake_smpl
    monkeypatch.setitem(sys.modules, "smplx", None)  # import smplx -> ImportError
    with pytest.raises(DatasetError) as error:
        smpl_skeleton(BETAS, model_path=folder)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{(folder / 'SMPL_NEUTRAL.pkl').as_posix()}: the SMPL body model needs the smplx package")
    assert "pip install 'tensorfield[avatars]'" in message


def test_chumpy_pickles_and_broken_files(ds_fake_smpl, tmp_path):
    folder, arrays = ds_fake_smpl
    chumpy = tmp_path / "SMPL_MALE.pkl"
    chumpy.write_bytes(b"\x80\x02cchumpy.ch\nCh\nq\x00.")  # a pickled chumpy.ch.Ch, as the SMPL download holds
    with pytest.raises(DatasetError, match=r"SMPL_MALE\.pkl: the SMPL file pickles chumpy objects and chumpy is not installed.*clean_ch\.py"):
        smpl_skeleton(BETAS, gender="male", model_path=tmp_path)
    incomplete = {key: value for key, value in arrays.items() if key != "J_regressor"}
    with open(tmp_path / "SMPL_FEMALE.pkl", "wb") as handle:
        pickle.dump(incomplete, handle)
    with pytest.raises(DatasetError, match=r"SMPL_FEMALE\.pkl: not an SMPL model file: no 'J_regressor'"):
        smpl_skeleton(BETAS, gender="female", model_path=tmp_path)
    with pytest.raises(DatasetError, match=r"11 betas given but the model has 10 shape components"):
        smpl_skeleton([0.0] * 11, model_path=folder)
