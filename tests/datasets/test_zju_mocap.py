"""Tests of datasets/zju_mocap.py on tiny synthetic ZJU-MoCap folders written here (neuralbody's
layout: annots.npy, camera folders, mask_cihp/, new_params/): camera conventions checked by hand
(T in millimetres, OpenCV pixel centres), SMPL fits against smpl_pose, splits of the monocular
protocol, the MIGS data factory's detection, and every bad input as one line naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from tensorfield.datasets.errors import DatasetError
from tensorfield.datasets.smpl import SMPL_ENV, smpl_pose
from tensorfield.datasets.zju_mocap import is_zju_mocap, load_zju_mocap, smpl_index

FRAMES, CAMERAS, SIZE = 5, 3, 16
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def _rotation_about_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def write_subject(folder: Path, seed: int = 0, frames: int = FRAMES) -> dict:
    """A ZJU-style subject: CAMERAS cameras on a circle 3 m away looking at the origin (T in mm),
    SIZE x SIZE images with a masked square, neuralbody-style SMPL fits; returns what it wrote."""
    rng = np.random.default_rng(seed)
    K, R, T, D = [], [], [], []
    for c in range(CAMERAS):
        rotation = _rotation_about_y(2 * np.pi * c / CAMERAS)
        K.append(np.array([[20.0 + c, 0.0, 7.5], [0.0, 21.0, 7.0], [0.0, 0.0, 1.0]]))
        R.append(rotation)
        T.append(np.array([[0.0], [0.0], [3000.0]]))  # millimetres: the origin 3 m in front
        D.append(np.zeros((5, 1)))
    ims = []
    for t in range(frames):
        paths = [f"Camera_B{c + 1}/{t:06d}.png" for c in range(CAMERAS)]
        ims.append({"ims": paths, "kpts2d": None})
        for c, path in enumerate(paths):
            image = rng.uniform(0.2, 1.0, (SIZE, SIZE, 3))
            mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
            mask[4:12, 5:11] = 1  # CIHP part labels: any non-zero is the body
            for sub, pixels in (("", (image * 255).astype(np.uint8)), ("mask_cihp", mask)):
                target = folder / sub / path
                target.parent.mkdir(parents=True, exist_ok=True)
                iio.imwrite(target, pixels)
        params = {"poses": 0.3 * rng.standard_normal((1, 72)), "shapes": np.tile([[0.5, -1.0, 2.0] + [0.0] * 7], (1, 1)),
                  "Rh": 0.2 * rng.standard_normal((1, 3)), "Th": rng.standard_normal((1, 3))}  # fmt: skip
        (folder / "new_params").mkdir(parents=True, exist_ok=True)
        np.save(folder / "new_params" / f"{t}.npy", params, allow_pickle=True)
    annots = {"cams": {"K": K, "R": R, "T": T, "D": D}, "ims": ims}
    np.save(folder / "annots.npy", annots, allow_pickle=True)
    return annots


@pytest.fixture
def zju(tmp_path, ds_fake_smpl) -> tuple[Path, Path]:
    """``(data folder with CoreView_1 and CoreView_2, SMPL model folder)``."""
    root = tmp_path / "zju"
    write_subject(root / "CoreView_1", seed=1)
    write_subject(root / "CoreView_2", seed=2)
    return root, ds_fake_smpl[0]


def test_single_subject_conventions_and_splits(zju):
    root, models = zju
    subject = root / "CoreView_1"
    assert is_zju_mocap(subject) and is_zju_mocap(root) and not is_zju_mocap(root.parent / "elsewhere")
    data = load_zju_mocap(subject, smpl_model_path=models, train_frames=[0, 3, 1], novel_pose_frames=[3, 0, 1],
                          novel_view_cameras=[1, 2], novel_view_frames=[0, 0, 2])  # fmt: skip
    assert data.root == root and data.identities == ["CoreView_1"]
    # 3 train + 2 novel-pose frames of camera 0, then frames 0, 2, 4 of cameras 1 and 2
    assert data.splits == {"train": {"CoreView_1": [0, 1, 2]}, "novel_pose": {"CoreView_1": [3, 4]},
                           "novel_view": {"CoreView_1": list(range(5, 11))}}  # fmt: skip
    sequence = data.sequences["CoreView_1"]
    annots = np.load(subject / "annots.npy", allow_pickle=True).item()
    cameras = sequence.cameras
    # frame 6 is camera 1 at annotated frame 2: project a world point as neuralbody (OpenCV) would
    K, R, T = annots["cams"]["K"][1], annots["cams"]["R"][1], annots["cams"]["T"][1][:, 0] / 1000.0
    point = np.array([0.1, -0.2, 0.3])
    x_cv = K @ (R @ point + T)
    u_cv, v_cv = x_cv[:2] / x_cv[2]  # pixel centres at integers
    w2c = cameras.world_to_camera()[6].double().numpy()
    x_ours = w2c[:3, :3] @ point + w2c[:3, 3]
    u = float(cameras.fx[6]) * x_ours[0] / x_ours[2] + float(cameras.cx[6])
    v = float(cameras.fy[6]) * x_ours[1] / x_ours[2] + float(cameras.cy[6])
    assert (u - 0.5, v - 0.5) == pytest.approx((u_cv, v_cv), abs=1e-5)  # ours: pixel centres at +0.5
    assert np.allclose(cameras.c2w[0, :, 3].numpy(), [0.0, 0.0, -3.0], atol=1e-6)  # 3 m, not 3000
    assert torch.allclose(cameras.times, torch.tensor([0, 1, 2, 3, 4, 0, 2, 4, 0, 2, 4]) / 4.0)
    # poses: the fits of each frame through smpl_pose (Rh, Th)
    fits = [np.load(subject / "new_params" / f"{t}.npy", allow_pickle=True).item() for t in [0, 1, 2, 3, 4, 0, 2, 4, 0, 2, 4]]
    stack = lambda key: torch.from_numpy(np.concatenate([f[key] for f in fits]))
    rotations, transform = smpl_pose(stack("poses"), sequence.skeleton.rest_joints[0], Rh=stack("Rh"), Th=stack("Th"))
    assert torch.equal(sequence.rotations, rotations) and torch.allclose(sequence.root, transform)
    # images: masked onto black, mask from mask_cihp
    image = iio.imread(subject / "Camera_B2" / "000002.png").astype(np.float32) / 255.0
    assert sequence.masks[6].sum() == 48 and sequence.masks[6][4, 5] == 1 and sequence.masks[6][0, 0] == 0
    assert torch.allclose(sequence.images[6][4:12, 5:11], torch.from_numpy(image[4:12, 5:11]), atol=1e-6)
    assert sequence.images[6][0, 0].abs().sum() == 0


def test_downscale_folder_of_subjects_and_held_out(zju):
    root, models = zju
    data = load_zju_mocap(root, smpl_model_path=models, downscale=2, held_out=["CoreView_2"], novel_pose_frames=[4, 0, 1],
                          train_frames=[0, 4, 1])  # fmt: skip
    assert data.identities == ["CoreView_1", "CoreView_2"]
    assert data.splits == {"train": {"CoreView_1": [0, 1, 2, 3]}, "novel_pose": {"CoreView_1": [4]},
                           "novel_identity": {"CoreView_2": [0, 1, 2, 3]}, "novel_identity_pose": {"CoreView_2": [4]}}  # fmt: skip
    sequence = data.sequences["CoreView_1"]
    assert sequence.images.shape == (5, SIZE // 2, SIZE // 2, 3) and sequence.cameras.width == SIZE // 2
    assert float(sequence.cameras.fx[0]) == pytest.approx(10.0) and float(sequence.cameras.cx[0]) == pytest.approx(4.0)
    assert float(sequence.masks[0][2:6, 3:5].mean()) == 1.0 and 0 < float(sequence.masks[0][2, 2]) < 1  # box-averaged edge
    only = load_zju_mocap(root, smpl_model_path=models, identities=["CoreView_2"], train_frames=[0, 2, 1])
    assert only.identities == ["CoreView_2"]


def test_neuralbody_lbs_joints_without_smpl(zju, monkeypatch):
    root, _ = zju
    monkeypatch.delenv(SMPL_ENV, raising=False)
    subject = root / "CoreView_1"
    with pytest.raises(DatasetError) as error:
        load_zju_mocap(subject)
    assert str(error.value).startswith("CoreView_1/new_params/0.npy: needs the SMPL model files: set smpl_model_path=FOLDER")
    joints = np.random.default_rng(0).standard_normal((24, 3))
    (subject / "lbs").mkdir()
    np.save(subject / "lbs" / "joints.npy", joints)
    np.save(subject / "lbs" / "parents.npy", np.array(PARENTS))
    sequence = load_zju_mocap(subject, train_frames=[0, 2, 1]).sequences["CoreView_1"]
    assert torch.allclose(sequence.skeleton.rest_joints, torch.from_numpy(joints))


def test_frame_numbers_of_image_names():
    assert smpl_index("Camera_B1/000123.jpg") == 123
    assert smpl_index("Camera (1)/CoreView_313_Camera_B1_0001_2019-08-23_16-08-50.592.jpg") == 1
    with pytest.raises(ValueError, match="frame number"):
        smpl_index("Camera_B1/frame.jpg")


# ====================================================================== bad input
def _message(root: Path, **kwargs) -> str:
    with pytest.raises(DatasetError) as error:
        load_zju_mocap(root, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_bad_input_is_one_line_naming_the_file(zju, tmp_path):
    root, models = zju
    subject = root / "CoreView_1"
    assert _message(tmp_path / "empty").endswith("empty/annots.npy: missing file (not a ZJU-MoCap subject, nor a folder of them)")
    # a frame without its SMPL fit (params/ has fewer frames than annots.npy lists)
    (subject / "new_params" / "3.npy").unlink()
    assert _message(subject, smpl_model_path=models) == "CoreView_1/new_params/3.npy: missing file (the SMPL fit of an annotated frame)"
    # a NaN pose, named by file and joint
    fit = np.load(root / "CoreView_2" / "new_params" / "1.npy", allow_pickle=True).item()
    fit["poses"][0, 3 * 4 + 2] = np.nan
    np.save(root / "CoreView_2" / "new_params" / "1.npy", fit, allow_pickle=True)
    assert _message(root / "CoreView_2", smpl_model_path=models) == "CoreView_2/new_params/1.npy: poses hold NaN/inf (joint 4, 'left_knee')"
    # frame ranges and cameras that do not fit annots.npy
    subject2 = tmp_path / "fresh" / "CoreView_3"
    write_subject(subject2, seed=3)
    assert _message(subject2, smpl_model_path=models, train_frames=[0, 9, 1]) == "CoreView_3/annots.npy: train frames [0, 9, 1] do not fit the 5 frames it lists"
    assert _message(subject2, smpl_model_path=models, camera=3) == "CoreView_3/annots.npy: camera 3 out of range (cams has 3)"
    annots = np.load(subject2 / "annots.npy", allow_pickle=True).item()
    annots["ims"][2]["ims"] = annots["ims"][2]["ims"][:2]
    np.save(subject2 / "annots.npy", annots, allow_pickle=True)
    assert _message(subject2, smpl_model_path=models) == "CoreView_3/annots.npy: frame 2 lists 2 images but cams has 3 cameras"
    annots["cams"]["R"] = annots["cams"]["R"][:2]
    np.save(subject2 / "annots.npy", annots, allow_pickle=True)
    assert _message(subject2, smpl_model_path=models) == "CoreView_3/annots.npy: cams has 3 K but 2 R"
    (subject2 / "annots.npy").write_bytes(b"not numpy")
    assert _message(subject2, smpl_model_path=models).startswith("CoreView_3/annots.npy: unreadable file")
    np.save(subject2 / "annots.npy", np.arange(3))
    assert _message(subject2, smpl_model_path=models) == "CoreView_3/annots.npy: expected a pickled dict with 'cams' and 'ims' (neuralbody's annots.npy)"


def test_missing_masks_images_and_sizes(zju, tmp_path):
    root, models = zju
    subject = tmp_path / "d" / "CoreView_4"
    write_subject(subject, seed=4, frames=2)
    iio.imwrite(subject / "mask_cihp" / "Camera_B1" / "000001.png", np.zeros((SIZE, SIZE + 2), dtype=np.uint8))
    assert _message(subject, smpl_model_path=models) == f"CoreView_4/mask_cihp/Camera_B1/000001.png: mask is {SIZE + 2}x{SIZE} but the image is {SIZE}x{SIZE}"
    shutil.rmtree(subject / "mask_cihp")
    assert _message(subject, smpl_model_path=models) == "CoreView_4/mask/Camera_B1/000000.png: missing mask (looked in mask_cihp/ and mask/)"
    (subject / "Camera_B1" / "000000.png").unlink()
    assert _message(subject, smpl_model_path=models) == "CoreView_4/Camera_B1/000000.png: missing image"
    shutil.rmtree(subject / "new_params")
    assert _message(subject, smpl_model_path=models) == "CoreView_4/new_params: missing folder (nor params/): the per-frame SMPL fits"


def test_migs_data_factory_detects_zju(zju):
    from tensorfield.fields.migs import MIGSConfig
    from tensorfield.fields.migs_data import migs_data

    root, models = zju
    config = MIGSConfig(method="migs", data=str(root), smpl_model_path=str(models), downscale=2, zju_train_frames=[0, 4, 1],
                        zju_novel_pose_frames=[4, 0, 1], zju_held_out=["CoreView_2"])  # fmt: skip
    data = migs_data(config)
    assert data.identity_names == ["CoreView_1", "CoreView_2"]
    assert data.images[0].shape == (5, SIZE // 2, SIZE // 2, 3)  # downscaled once, while loading
    info = data.scene_info()
    assert info.joint_names[0] == "pelvis" and info.frame_inputs["rotations"].shape == (10, 24, 3)
    assert data.eval_splits()[0] == "novel_pose"
