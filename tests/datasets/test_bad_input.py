"""Every kind of bad input gives a one-line :class:`DatasetError` that names the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from tensorfield.datasets.errors import DatasetError
from tensorfield.datasets.scene import load_scene


@pytest.fixture
def scene(ds_static_scene, tmp_path) -> Path:
    """A private copy of the small generated Blender scene."""
    return Path(shutil.copytree(ds_static_scene, tmp_path / "scene"))


def edit_json(path: Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))  # json writes NaN / Infinity tokens, as some exporters do


def load_error(root: Path, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        load_scene(root, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message == message.strip()
    assert isinstance(info.value, ValueError)
    return message


def test_transform_not_4x4(scene):
    edit_json(
        scene / "transforms_train.json",
        lambda m: m["frames"][3].update(transform_matrix=m["frames"][3]["transform_matrix"][:3]),
    )
    assert (
        load_error(scene) == "transforms_train.json: frame 3 transform_matrix is not 4x4 (got 3x4)"
    )


def test_transform_not_numbers(scene):
    edit_json(
        scene / "transforms_train.json",
        lambda m: m["frames"][1].update(transform_matrix=[[1, 2], [3]]),
    )
    assert load_error(scene).startswith("transforms_train.json: frame 1 transform_matrix is not")


def test_transform_missing(scene):
    edit_json(scene / "transforms_val.json", lambda m: m["frames"][0].pop("transform_matrix"))
    assert load_error(scene) == "transforms_val.json: frame 0 has no transform_matrix"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_transform_nan_or_inf(scene, bad):
    def change(meta):
        meta["frames"][4]["transform_matrix"][1][2] = bad

    edit_json(scene / "transforms_train.json", change)
    assert load_error(scene) == "transforms_train.json: frame 4 transform_matrix holds NaN/inf"


def test_image_size_differs_within_split(scene):
    image = iio.imread(scene / "train" / "r_5.png")
    iio.imwrite(scene / "train" / "r_5.png", image[:24])
    assert load_error(scene) == "train/r_5.png: image is 32x24 but the split's first image is 32x32"


def test_empty_split(scene):
    edit_json(scene / "transforms_test.json", lambda m: m.update(frames=[]))
    assert load_error(scene) == "transforms_test.json: split is empty"


def test_empty_split_not_requested_is_ignored(scene):
    edit_json(scene / "transforms_test.json", lambda m: m.update(frames=[]))
    assert set(load_scene(scene, splits=("train", "val")).splits) == {"train", "val"}


def test_missing_image(scene):
    (scene / "train" / "r_2.png").unlink()
    assert load_error(scene) == "train/r_2.png: missing image"


def test_unreadable_image(scene):
    (scene / "train" / "r_0.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    message = load_error(scene)
    assert message.startswith("train/r_0.png: unreadable image (")


def test_no_focal_length(scene):
    edit_json(scene / "transforms_train.json", lambda m: m.pop("camera_angle_x"))
    assert load_error(scene).startswith("transforms_train.json: no camera_angle_x and no fl_x")


def test_focal_not_a_number(scene):
    edit_json(scene / "transforms_train.json", lambda m: m.update(camera_angle_x="wide"))
    assert load_error(scene) == 'transforms_train.json: camera_angle_x must be a number, got "wide"'


def test_invalid_json(scene):
    (scene / "transforms_train.json").write_text(
        '{"camera_angle_x": 0.7, "frames": [\n  {"file_path": }\n]}'
    )
    assert load_error(scene).startswith("transforms_train.json: invalid JSON at line 2 column")


def test_no_frames_key(scene):
    edit_json(scene / "transforms_val.json", lambda m: m.pop("frames"))
    assert load_error(scene) == "transforms_val.json: no 'frames' key"


def test_missing_file_path(scene):
    edit_json(scene / "transforms_train.json", lambda m: m["frames"][2].pop("file_path"))
    assert load_error(scene) == "transforms_train.json: frame 2 has no file_path"


def test_time_on_some_frames_only(scene):
    def change(meta):
        for i, frame in enumerate(meta["frames"]):
            if i != 3:
                frame["time"] = i / 10

    edit_json(scene / "transforms_train.json", change)
    assert load_error(scene) == "transforms_train.json: frame 3 has no time but other frames do"


def test_time_not_a_number(scene):
    edit_json(
        scene / "transforms_train.json", lambda m: [f.update(time="late") for f in m["frames"]]
    )
    assert load_error(scene).startswith("transforms_train.json: frame 0 time must be a number")


def test_bad_depth_map(scene):
    np.save(scene / "depth" / "test" / "r_1.npy", np.zeros((8, 8), np.float32))
    assert load_error(scene) == "depth/test/r_1.npy: depth map is 8x8 but the images are 32x32"
    (scene / "depth" / "test" / "r_1.npy").unlink()
    assert load_error(scene).startswith("depth/test/r_1.npy: missing depth map")


def test_bad_scene_json_bounds(scene):
    edit_json(scene / "scene.json", lambda m: m.update(aabb=[[1, 1, 1], [-1, -1, -1]]))
    assert load_error(scene).startswith("scene.json: aabb must be")


def test_not_a_scene(tmp_path):
    message = load_error(tmp_path)
    assert message.startswith(tmp_path.as_posix()) and "transforms_train.json" in message
    assert load_error(tmp_path / "nope").endswith("nope: scene folder not found")


def test_unsupported_camera_model(scene):
    meta = json.loads((scene / "transforms_train.json").read_text())
    frames = [
        {"file_path": f["file_path"] + ".png", "transform_matrix": f["transform_matrix"]}
        for f in meta["frames"]
    ]
    nerfstudio = scene / "ns"
    shutil.copytree(scene / "train", nerfstudio / "train")
    for model in ("OPENCV_FISHEYE", "EQUIRECTANGULAR"):
        (nerfstudio / "transforms.json").write_text(
            json.dumps(
                {
                    "camera_model": model,
                    "fl_x": 30.0,
                    "fl_y": 30.0,
                    "cx": 16,
                    "cy": 16,
                    "w": 32,
                    "h": 32,
                    "frames": frames,
                }
            )
        )
        assert load_error(nerfstudio).startswith(
            f"transforms.json: camera_model {model} is not supported"
        )


def test_image_size_differs_from_metadata(scene):
    meta = json.loads((scene / "transforms_train.json").read_text())
    frames = [
        {
            "file_path": f["file_path"] + ".png",
            "transform_matrix": f["transform_matrix"],
            "w": 32,
            "h": 32,
        }
        for f in meta["frames"]
    ]
    frames[2]["w"] = 40
    shutil.copytree(scene / "train", scene / "ns" / "train")
    (scene / "ns" / "transforms.json").write_text(json.dumps({"fl_x": 30.0, "frames": frames}))
    assert (
        load_error(scene / "ns")
        == "train/r_2.png: image is 32x32 but transforms.json frame 2 says 40x32"
    )


def test_bad_arguments(scene):
    with pytest.raises(ValueError, match="downscale"):
        load_scene(scene, downscale=0.5)
    with pytest.raises(ValueError, match="background"):
        load_scene(scene, background=(1.0, 2.0, 0.0))
