"""The nerfstudio loader: intrinsics, splits, bounds, points and lens undistortion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from tensorfield.datasets.distortion import distort, undistort_image, undistort_points
from tensorfield.datasets.errors import DatasetError
from tensorfield.datasets.ply import read_ply_points, write_ply_points
from tensorfield.datasets.scene import load_scene

SPLITS = ("train", "val", "test")


def as_nerfstudio(blender: Path, out: Path, *, split_keys: bool = True, **extra) -> Path:
    """Rewrite a Blender scene as one transforms.json with per-frame intrinsics."""
    out.mkdir(parents=True, exist_ok=True)
    frames, lists = [], {}
    for split in SPLITS:
        shutil.copytree(blender / split, out / split, dirs_exist_ok=True)
        meta = json.loads((blender / f"transforms_{split}.json").read_text())
        size = iio.imread(blender / split / "r_0.png").shape[1]
        focal = 0.5 * size / np.tan(0.5 * meta["camera_angle_x"])
        lists[f"{split}_filenames"] = []
        for frame in meta["frames"]:
            path = frame["file_path"].removeprefix("./") + ".png"
            lists[f"{split}_filenames"].append(path)
            frames.append(
                {"file_path": path, "transform_matrix": frame["transform_matrix"], "fl_x": focal, "fl_y": focal,
                     "cx": size / 2, "cy": size / 2, "w": size, "h": size}
            )  # fmt: skip
    meta = {"camera_model": "PINHOLE", "frames": frames, **extra}
    if split_keys:
        meta.update(lists)
    (out / "transforms.json").write_text(json.dumps(meta))
    return out


def test_pinhole_matches_blender_loading(ds_static_scene, tmp_path):
    blender = load_scene(ds_static_scene)
    # normalize="none": the nerfstudio frame as written (the default normalises nerfstudio data)
    nerfstudio = load_scene(as_nerfstudio(ds_static_scene, tmp_path / "ns"), normalize="none")
    assert nerfstudio.format == "nerfstudio" and set(nerfstudio.splits) == set(SPLITS)
    for split in SPLITS:
        a, b = blender.split(split), nerfstudio.split(split)
        assert [p.name for p in a.image_paths] == [p.name for p in b.image_paths]
        assert torch.equal(a.images, b.images) and torch.equal(a.alphas, b.alphas)
        for i in range(len(a)):
            origins_a, directions_a = a.cameras.generate_rays(i)
            origins_b, directions_b = b.cameras.generate_rays(i)
            assert torch.allclose(origins_a, origins_b, atol=1e-6)
            assert torch.allclose(directions_a, directions_b, atol=1e-6)
        assert b.depths is None and torch.isnan(b.cameras.times).all()


def test_per_frame_intrinsics_are_used(ds_static_scene, tmp_path):
    root = as_nerfstudio(ds_static_scene, tmp_path / "ns")
    meta = json.loads((root / "transforms.json").read_text())
    first = next(f for f in meta["frames"] if f["file_path"] == "train/r_0.png")
    first.update(fl_x=50.0, fl_y=51.0, cx=15.0, cy=17.0)
    (root / "transforms.json").write_text(json.dumps(meta))
    cameras = load_scene(root, splits=("train",)).split("train").cameras
    assert cameras.fx[0].item() == 50.0 and cameras.fy[0].item() == 51.0
    assert (cameras.cx[0].item(), cameras.cy[0].item()) == (15.0, 17.0)
    assert cameras.fx[1].item() != 50.0


def test_every_eighth_frame_is_test_without_split_keys(ds_static_scene, tmp_path):
    scene = load_scene(as_nerfstudio(ds_static_scene, tmp_path / "ns", split_keys=False))
    # 9 frames sorted by file_path: test/r_0, test/r_1, train/r_0..5, val/r_0 -> indices 0 and 8 are test
    assert set(scene.splits) == {"train", "test"}
    assert [p.parent.name + "/" + p.name for p in scene.split("test").image_paths] == [
        "test/r_0.png",
        "val/r_0.png",
    ]
    assert len(scene.split("train")) == 7


def test_bounds_from_cameras(ds_static_scene, tmp_path):
    scene = load_scene(as_nerfstudio(ds_static_scene, tmp_path / "ns"), splits=("train",), normalize="none")
    # cameras on a sphere of radius 4 looking at the origin: box centred there, half-side 2
    assert torch.allclose(scene.aabb, torch.tensor([[-2.0] * 3, [2.0] * 3]), atol=1e-3)
    assert 0.5 < scene.near < 2.1 and 5.0 < scene.far < 8.0


def test_bounds_from_aabb_scale_and_scale(ds_static_scene, tmp_path):
    plain = load_scene(
        as_nerfstudio(ds_static_scene, tmp_path / "a", aabb_scale=1), splits=("train",), normalize="none"
    )
    assert torch.allclose(plain.aabb, torch.tensor([[-0.5 / 0.33] * 3, [0.5 / 0.33] * 3]))
    scaled = load_scene(
        as_nerfstudio(ds_static_scene, tmp_path / "b", aabb_scale=2, scale=0.5), splits=("train",), normalize="none"
    )
    assert torch.allclose(scaled.aabb, torch.tensor([[-1.0] * 3, [1.0] * 3]))
    translation = scaled.split("train").cameras.c2w[:, :, 3]
    assert torch.allclose(translation, plain.split("train").cameras.c2w[:, :, 3] * 0.5, atol=1e-6)
    rotation = scaled.split("train").cameras.c2w[:, :, :3]
    assert torch.allclose(rotation, plain.split("train").cameras.c2w[:, :, :3])


def test_point_cloud(ds_static_scene, tmp_path):
    rng = np.random.default_rng(0)
    points, colors = rng.normal(size=(50, 3)).astype(np.float32), rng.uniform(size=(50, 3))
    root = as_nerfstudio(ds_static_scene, tmp_path / "ns", ply_file_path="sparse_pc.ply", scale=0.5,
                         applied_transform=[[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0]])  # fmt: skip
    write_ply_points(root / "sparse_pc.ply", points, colors)
    scene = load_scene(root, splits=("train",), normalize="none")
    assert torch.allclose(scene.points, torch.from_numpy(points) * 0.5)
    assert torch.allclose(scene.points_rgb, torch.from_numpy(colors).float(), atol=0.5 / 255 + 1e-6)
    info = scene.scene_info()
    assert info.points is scene.points and info.num_train_images == 6
    (root / "sparse_pc.ply").unlink()
    with pytest.warns(UserWarning, match="sparse_pc.ply"):
        assert load_scene(root, splits=("train",)).points is None


def test_ply_ascii_and_binary(tmp_path):
    points = np.array([[0.0, 1.0, 2.0], [-1.5, 0.25, 3.0]], np.float32)
    for binary in (True, False):
        write_ply_points(
            tmp_path / "p.ply", points, np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]), binary=binary
        )
        read, rgb = read_ply_points(tmp_path / "p.ply")
        assert np.array_equal(read, points)
        assert np.allclose(rgb, [[1.0, 0.0, 128 / 255], [0.0, 1.0, 0.0]])
    (tmp_path / "bad.ply").write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 5\nproperty float x\nproperty float y\nproperty float z\nend_header\n\x00\x00"
    )
    with pytest.raises(DatasetError, match="bad.ply: truncated"):
        read_ply_points(tmp_path / "bad.ply")


# ---------------------------------------------------------------------------------- distortion
PARAMS = (-0.25, 0.06, 0.0, 0.0, 0.002, -0.001)  # k1, k2, k3, k4, p1, p2
WIDTH, HEIGHT, FOCAL, CX, CY = 96, 72, 70.0, 47.3, 36.1


def pattern(xy: torch.Tensor) -> torch.Tensor:
    """A smooth RGB function of ideal normalised coordinates."""
    x, y = xy[..., 0], xy[..., 1]
    return torch.stack(
        [
            0.5 + 0.4 * torch.sin(3 * x + 1) * torch.cos(2 * y),
            0.5 + 0.4 * torch.cos(4 * y - x),
            0.5 + 0.3 * x * y,
        ],
        -1,
    )


def pixel_centres() -> torch.Tensor:
    v, u = torch.meshgrid(
        torch.arange(HEIGHT, dtype=torch.float64),
        torch.arange(WIDTH, dtype=torch.float64),
        indexing="ij",
    )
    return torch.stack([(u + 0.5 - CX) / FOCAL, (v + 0.5 - CY) / FOCAL], -1)


def test_newton_inverts_distortion():
    xy = pixel_centres()
    assert torch.allclose(distort(undistort_points(xy, PARAMS), PARAMS), xy, atol=1e-12)
    assert torch.allclose(undistort_points(distort(xy, PARAMS), PARAMS), xy, atol=1e-12)
    # radial only, on the x axis: x_d = x (1 + k1 x^2), checked by hand at x = 0.5
    k1 = -0.2
    assert (
        abs(
            distort(torch.tensor([[0.5, 0.0]], dtype=torch.float64), (k1, 0, 0, 0, 0, 0))[
                0, 0
            ].item()
            - 0.5 * (1 + k1 * 0.25)
        )
        < 1e-15
    )


def test_undistort_image_recovers_pinhole_view():
    ideal = pattern(pixel_centres())
    distorted = pattern(undistort_points(pixel_centres(), PARAMS))  # what the real lens recorded
    assert (distorted - ideal).abs().max() > 0.1  # the lens matters
    recovered, inside = undistort_image(distorted, FOCAL, FOCAL, CX, CY, PARAMS)
    assert bool(inside.all())  # barrel distortion: every output pixel has a source
    assert (recovered - ideal).abs().max() < 3e-3


def test_opencv_scene_is_undistorted_at_load(tmp_path):
    distorted = pattern(undistort_points(pixel_centres(), PARAMS))
    root = tmp_path / "lens"
    (root / "images").mkdir(parents=True)
    iio.imwrite(root / "images" / "a.png", np.round(distorted.numpy() * 255).astype(np.uint8))
    iio.imwrite(root / "images" / "b.png", np.round(distorted.numpy() * 255).astype(np.uint8))
    k1, k2, _, _, p1, p2 = PARAMS
    pose = np.eye(4).tolist()
    meta = {"camera_model": "OPENCV", "fl_x": FOCAL, "fl_y": FOCAL, "cx": CX, "cy": CY, "w": WIDTH, "h": HEIGHT, "k1": k1, "k2": k2, "p1": p1, "p2": p2,
                "frames": [{"file_path": "images/a.png", "transform_matrix": pose}, {"file_path": "images/b.png", "transform_matrix": pose}],
                "train_filenames": ["images/a.png"], "test_filenames": ["images/b.png"]}  # fmt: skip
    (root / "transforms.json").write_text(json.dumps(meta))
    split = load_scene(root, splits=("train",)).split("train")
    assert split.alphas is None and split.images.shape == (1, HEIGHT, WIDTH, 3)
    error = (split.images[0].double() - pattern(pixel_centres())).abs()
    assert error.max() < 0.012  # 8-bit quantisation (0.002) plus bilinear resampling
    assert split.cameras.cx.item() == pytest.approx(CX)
    half = load_scene(root, splits=("train",), downscale=2).split("train")
    assert half.images.shape == (1, HEIGHT // 2, WIDTH // 2, 3)
    pooled = split.images.reshape(1, HEIGHT // 2, 2, WIDTH // 2, 2, 3).mean(dim=(2, 4))
    assert torch.allclose(half.images, pooled, atol=1e-5)  # undistort first, then downscale
