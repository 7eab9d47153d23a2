"""The N3V multi-view video loader and the synthetic N3V generator."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import imageio.v2 as iio2
import numpy as np
import pytest
import torch
from tensorfield.datasets import n3v
from tensorfield.datasets.errors import DatasetError
from tensorfield.datasets.images import clear_image_cache
from tensorfield.datasets.primitives import load_light, load_primitives
from tensorfield.datasets.scene import load_scene
from tensorfield.datasets.synthetic import make_video_scene, render_view

N_CAMERAS, N_FRAMES, SIZE = 5, 12, 64


@pytest.fixture(scope="module")
def ds_video_scene(tmp_path_factory) -> Path:
    """The synthetic N3V scene: 5 cameras x 12 frames of 64x64, lossless-ish yuv444p."""
    return make_video_scene(
        tmp_path_factory.mktemp("n3v"), n_cameras=N_CAMERAS, n_frames=N_FRAMES, resolution=SIZE
    )


@pytest.fixture
def scene(ds_video_scene, tmp_path) -> Path:
    """A private copy to break."""
    return Path(shutil.copytree(ds_video_scene, tmp_path / "scene"))


def write_video(path: Path, frames: np.ndarray, fps: float = 10.0) -> None:
    writer = iio2.get_writer(path, format="ffmpeg", fps=fps, codec="libx264", quality=None,
                             pixelformat="yuv444p", output_params=["-crf", "0"], macro_block_size=1)  # fmt: skip
    for frame in frames:
        writer.append_data(frame)
    writer.close()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10.0 * torch.log10(((a.double() - b.double()) ** 2).mean()))


def load_error(root: Path, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        load_scene(root, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message == message.strip()
    return message


# ---------------------------------------------------------------------------------- conventions
def test_llff_pose_converted_to_opencv_by_hand(tmp_path):
    """A camera at (1, 2, 3) looking along world +x with world +z up in the image.

    OpenCV frame: forward = +x, down = -z, right = down x forward = -y. LLFF stores the columns
    (down, right, back) = ((0, 0, -1), (0, -1, 0), (-1, 0, 0)).
    """
    height, width, focal = 8, 16, 10.0
    llff = np.array([[0.0, 0.0, -1.0, 1.0, height],
                     [0.0, -1.0, 0.0, 2.0, width],
                     [-1.0, 0.0, 0.0, 3.0, focal]])  # fmt: skip
    expected = np.array([[0.0, 0.0, 1.0, 1.0], [-1.0, 0.0, 0.0, 2.0], [0.0, -1.0, 0.0, 3.0]])
    assert np.allclose(n3v.llff_to_opencv(llff), expected)
    assert np.allclose(n3v.opencv_to_llff(expected, [height, width, focal]), llff)

    row = np.concatenate([llff.reshape(15), [1.5, 20.0]])
    np.save(tmp_path / "poses_bounds.npy", np.stack([row, row]))
    frames = np.zeros((3, height, width, 3), dtype=np.uint8)
    write_video(tmp_path / "cam00.mp4", frames)
    write_video(tmp_path / "cam01.mp4", frames)
    loaded = load_scene(tmp_path)
    cameras = loaded.split("train").cameras
    assert loaded.format == "n3v" and len(cameras) == 3 and (cameras.width, cameras.height) == (16, 8)
    assert torch.allclose(cameras.c2w[0], torch.tensor(expected, dtype=torch.float32))
    assert float(cameras.fx[0]) == focal and float(cameras.cx[0]) == 8.0 and float(cameras.cy[0]) == 4.0
    _, directions = cameras.generate_rays(0)
    centre = directions[3:5, 7:9].mean(dim=(0, 1))
    assert torch.allclose(centre / centre.norm(), torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    assert directions[4, 15, 1] < -0.5  # right edge of the image looks towards -y
    assert directions[7, 8, 2] < -0.2  # bottom rows look down (-z)
    assert torch.allclose(cameras.times, torch.tensor([0.0, 0.5, 1.0]))
    # bounds: near is the smallest near bound; far reaches the far plane at the image corner
    assert loaded.near == 1.5
    assert math.isclose(loaded.far, 20.0 * math.sqrt(1 + 0.8**2 + 0.4**2), rel_tol=1e-9)
    corner = np.array([1.0, 2.0, 3.0]) + 20.0 * np.array([1.0, -0.8, -0.4])  # far, right, bottom
    assert np.allclose(loaded.aabb.numpy()[0], [1.0 + 1.5, 2.0 - 16.0, 3.0 - 8.0], atol=1e-5)
    assert np.allclose(loaded.aabb.numpy()[1], [21.0, 2.0 + 16.0, 3.0 + 8.0], atol=1e-5)
    assert (loaded.aabb[0].numpy() <= corner + 1e-5).all() and (corner <= loaded.aabb[1].numpy() + 1e-5).all()


# ---------------------------------------------------------------------------------- round trip
def test_generator_round_trip(ds_video_scene):
    meta = json.loads((ds_video_scene / "scene.json").read_text())
    loaded = load_scene(ds_video_scene)
    assert loaded.format == "n3v" and loaded.is_dynamic and set(loaded.splits) == {"train", "test"}
    train, test = loaded.split("train"), loaded.split("test")
    assert train.images.shape == ((N_CAMERAS - 1) * N_FRAMES, SIZE, SIZE, 3) and train.alphas is None
    assert len(test) == N_FRAMES and test.image_paths[0].parent.name == "cam00.mp4"
    times = torch.arange(N_FRAMES) / (N_FRAMES - 1)
    assert torch.allclose(test.cameras.times, times)
    assert torch.allclose(train.cameras.times, times.repeat(N_CAMERAS - 1))

    primitives, light = load_primitives(ds_video_scene), load_light(ds_video_scene)
    for split, names in ((test, ["cam00"]), (train, [f"cam0{k}" for k in range(1, N_CAMERAS)])):
        for slot, name in enumerate(names):
            pose = torch.tensor(meta["cameras"][name], dtype=torch.float32)
            block = slice(slot * N_FRAMES, (slot + 1) * N_FRAMES)
            assert torch.allclose(split.cameras.c2w[block], pose.expand(N_FRAMES, 3, 4), atol=1e-5)
            assert torch.allclose(split.cameras.fx[block], torch.tensor(meta["focal"]), rtol=1e-6)
            for frame in (0, 5, N_FRAMES - 1):  # a few frames, exactly re-rendered
                rgba, _ = render_view(primitives, pose.double(), SIZE, meta["focal"], float(times[frame]), light)
                truth = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
                truth = torch.from_numpy(np.round(np.clip(truth, 0, 1) * 255) / 255)
                assert psnr(split.images[block][frame], truth) > 35.0


def test_motion_is_visible(ds_video_scene):
    """Frames of one camera differ over time (moving, spinning, appearing objects)."""
    frames = load_scene(ds_video_scene, splits=("test",)).split("test").images
    change = (frames[0] - frames[-1]).abs().amax(dim=-1)
    assert float((change > 0.2).float().mean()) > 0.02


def test_bounds_hold_the_scene(ds_video_scene):
    loaded = load_scene(ds_video_scene, splits=("test",))
    meta = json.loads((ds_video_scene / "scene.json").read_text())
    primitives = load_primitives(ds_video_scene)
    reach = max(p.bounding_radius() for p in primitives)
    assert loaded.near <= meta["radius"] - reach + 1e-5 and loaded.far >= meta["radius"] + reach
    for primitive in primitives:
        for t in np.linspace(0, 1, 5):
            centre = torch.as_tensor(primitive.center(t), dtype=torch.float32)
            assert bool(((loaded.aabb[0] <= centre) & (centre <= loaded.aabb[1])).all())


# ---------------------------------------------------------------------------------- options
def test_frame_selection_and_downscale(ds_video_scene):
    fps = 10.0  # the generator's default
    strided = load_scene(ds_video_scene, frame_stride=3, splits=("test",)).split("test")
    assert [p.name for p in strided.image_paths] == ["cam00_0000", "cam00_0003", "cam00_0006", "cam00_0009"]
    assert torch.allclose(strided.cameras.times, torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))
    full = load_scene(ds_video_scene, splits=("test",)).split("test")
    assert torch.equal(strided.images, full.images[::3])

    ranged = load_scene(ds_video_scene, time_range=(0.2, 0.55), max_frames=3, splits=("test",))
    frames = [int(p.name[-4:]) for p in ranged.split("test").image_paths]
    assert frames == [2, 3, 4] and frames[0] / fps >= 0.2
    assert torch.allclose(ranged.split("test").cameras.times, torch.tensor([0.0, 0.5, 1.0]))

    half = load_scene(ds_video_scene, downscale=2, max_frames=2, test_cameras=["cam02", 4])
    test = half.split("test")
    assert test.images.shape == (4, SIZE // 2, SIZE // 2, 3)
    assert [p.parent.name for p in test.image_paths] == ["cam02.mp4"] * 2 + ["cam04.mp4"] * 2
    cam02 = load_scene(ds_video_scene, test_cameras=["cam02"], splits=("test",)).split("test")
    box = cam02.images[0].reshape(SIZE // 2, 2, SIZE // 2, 2, 3).mean(dim=(1, 3))
    assert torch.allclose(test.images[0], box, atol=1e-5)
    assert float(test.cameras.cx[0]) == SIZE / 4 and test.cameras.width == SIZE // 2
    assert len(half.split("train")) == 3 * 2

    with pytest.raises(ValueError, match="cam09"):
        load_scene(ds_video_scene, test_cameras=["cam09"])
    with pytest.raises(ValueError, match="frame_stride"):
        load_scene(ds_video_scene, frame_stride=0)
    assert "selects no frame" in load_error(ds_video_scene, time_range=(5.0, 6.0))


def test_video_options_refused_for_image_scenes(ds_static_scene):
    with pytest.raises(ValueError, match="video scenes"):
        load_scene(ds_static_scene, max_frames=3)


def test_frames_are_decoded_once(ds_video_scene, monkeypatch):
    clear_image_cache()
    calls = []
    decode = n3v.decode_video
    monkeypatch.setattr(n3v, "decode_video", lambda *args: calls.append(args[0].name) or decode(*args))
    first = load_scene(ds_video_scene, max_frames=4)
    assert sorted(calls) == [f"cam0{k}.mp4" for k in range(N_CAMERAS)]
    second = load_scene(ds_video_scene, max_frames=4)
    assert len(calls) == N_CAMERAS and torch.equal(first.split("train").images, second.split("train").images)

    # disk cache: a fresh process (empty memory cache) reads the .npz instead of the videos
    load_scene(ds_video_scene, max_frames=2, disk_cache=True, splits=("test",))
    clear_image_cache()
    calls.clear()
    cached = load_scene(ds_video_scene, max_frames=2, disk_cache=True, splits=("test",))
    assert calls == [] and torch.equal(cached.split("test").images, first.split("test").images[:2])


# ---------------------------------------------------------------------------------- bad input
def test_missing_video_for_a_pose_row(scene):
    (scene / "cam03.mp4").unlink()
    assert load_error(scene) == "cam03.mp4: missing video for pose row 3 (poses_bounds.npy has 5 rows)"


def test_video_without_pose_row(scene):
    shutil.copy(scene / "cam04.mp4", scene / "cam05.mp4")
    assert load_error(scene) == (
        "poses_bounds.npy: 5 pose rows but 6 videos (cam*.mp4): cam05.mp4 has no pose row"
    )


def test_video_with_other_frame_count_or_size(scene):
    write_video(scene / "cam02.mp4", np.zeros((N_FRAMES - 2, SIZE, SIZE, 3), np.uint8))
    assert load_error(scene) == f"cam02.mp4: video has {N_FRAMES - 2} frames but cam00.mp4 has {N_FRAMES}"
    write_video(scene / "cam02.mp4", np.zeros((N_FRAMES, SIZE // 2, SIZE // 2, 3), np.uint8))
    assert load_error(scene) == f"cam02.mp4: video is 32x32 but cam00.mp4 is {SIZE}x{SIZE}"


def test_unreadable_video(scene):
    (scene / "cam01.mp4").write_bytes(b"not a video" * 20)
    assert load_error(scene).startswith("cam01.mp4: unreadable video (")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a[:, :15], "poses_bounds.npy: expected an N x 17 array (LLFF 3x5 pose + near, far), got 5x15"),
        (lambda a: a.reshape(-1), "poses_bounds.npy: expected an N x 17 array (LLFF 3x5 pose + near, far), got 85"),
        (lambda a: np.where(np.arange(17) == 3, np.nan, a), "poses_bounds.npy: row 0 holds NaN/inf"),
        (lambda a: a * np.where(np.arange(17) == 16, -1.0, 1.0), "poses_bounds.npy: row 0 bounds must satisfy 0 < near < far, got"),
        (lambda a: a * np.where(np.arange(17) == 0, 2.0, 1.0), "poses_bounds.npy: row 0 rotation is not orthonormal"),
    ],
)  # fmt: skip
def test_bad_poses_bounds(scene, change, message):
    array = np.load(scene / "poses_bounds.npy")
    np.save(scene / "poses_bounds.npy", change(array))
    assert load_error(scene).startswith(message)


def test_unreadable_poses_bounds(scene):
    (scene / "poses_bounds.npy").write_bytes(b"\x93NUMPY garbage")
    assert load_error(scene).startswith("poses_bounds.npy: unreadable .npy (")
