"""Runs record their scene transform; exports (splat, point cloud, cameras) return to the input
frame (engine/scene_frame.py, engine/camera_export.py, export.apply_similarity)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tensorfield.app.cli import main
from tensorfield.cuda.rasterize import eval_sh, quat_to_rotmat
from tensorfield.datasets.colmap_model import write_scene_as_colmap
from tensorfield.datasets.normalize import SceneTransform, rotation_between
from tensorfield.datasets.scene import load_scene
from tensorfield.engine.camera_export import write_cameras_json
from tensorfield.engine.export import apply_similarity, read_splat_ply
from tensorfield.engine.scene_frame import TRANSFORM_FILE, rotate_sh


def _similarity(scale, rotation, translation):
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = scale * rotation, translation
    return out


ROTATION = rotation_between(np.array([0.3, -0.5, 0.8]), np.array([0.0, 0.0, 1.0])) @ rotation_between(
    np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.4])
)
WORLD = _similarity(2.5, ROTATION, (6.0, -3.0, 4.0))


@pytest.fixture(scope="module")
def sf_colmap_scene(tmp_path_factory):
    """A small synthetic scene written as COLMAP in the off-centre, turned, scaled frame WORLD,
    with 300 SfM points on the synthetic object's surface region."""
    from tensorfield.datasets.synthetic import make_scene

    root = tmp_path_factory.mktemp("sf")
    blender = make_scene(root / "blender", resolution=24, n_train=8, n_test=2, n_val=0, seed=0)
    scene = load_scene(blender)
    points = np.random.default_rng(0).uniform(-0.6, 0.6, size=(300, 3)).astype(np.float32)
    scene.points, scene.points_rgb = torch.from_numpy(points), torch.full((300, 3), 0.5)
    out = write_scene_as_colmap(scene, root / "colmap", WORLD)
    return out, points @ WORLD[:3, :3].T.astype(np.float32) + WORLD[:3, 3].astype(np.float32)


def test_apply_similarity_moves_points_scales_and_rotations():
    rng = np.random.default_rng(0)
    points, log_scales = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    quats = rng.normal(size=(10, 4))
    moved, scales, turned = apply_similarity(WORLD, points, log_scales, quats)
    assert np.allclose(moved, points @ (2.5 * ROTATION).T + WORLD[:3, 3], atol=1e-5)
    assert np.allclose(scales, log_scales + math.log(2.5), atol=1e-6)
    before = quat_to_rotmat(torch.from_numpy(quats))
    after = quat_to_rotmat(torch.from_numpy(turned).double())
    assert torch.allclose(after, torch.from_numpy(ROTATION) @ before, atol=1e-6)


def test_rotated_sh_shows_the_same_colour_from_the_turned_direction():
    rng = np.random.default_rng(1)
    for degree in (1, 2, 3):
        rest = rng.normal(size=(6, (degree + 1) ** 2 - 1, 3))
        coefficients = np.concatenate([rng.normal(size=(6, 1, 3)), rest], 1)
        turned = np.concatenate([coefficients[:, :1], rotate_sh(rest, ROTATION)], 1)
        directions = torch.nn.functional.normalize(torch.randn(6, 3, dtype=torch.float64), dim=-1)
        before = eval_sh(degree, directions, torch.from_numpy(coefficients))
        after = eval_sh(degree, directions @ torch.from_numpy(ROTATION).T, torch.from_numpy(turned).double())
        assert torch.allclose(before, after, atol=1e-5)


def test_cameras_json_round_trips_through_our_loader(sf_colmap_scene, tmp_path):
    root, _ = sf_colmap_scene
    scene = load_scene(root, downscale=2)  # normalised, half resolution
    out = write_cameras_json(scene, tmp_path / "export" / "transforms.json", scene.transform.inverse())
    meta = json.loads(out.read_text())
    assert meta["camera_model"] == "OPENCV" and len(meta["train_filenames"]) + len(meta["test_filenames"]) == 10
    assert meta["frames"][0]["w"] == 24  # full-resolution intrinsics, as the image files are
    again = load_scene(out.parent, normalize="none")
    original = load_scene(root, normalize="none")  # the input (COLMAP) frame at full resolution
    for name in ("train", "test"):
        a, b = original.split(name).cameras, again.split(name).cameras
        assert [p.name for p in original.split(name).image_paths] == [p.name for p in again.split(name).image_paths]
        assert torch.allclose(a.c2w, b.c2w, atol=1e-4)
        for key in ("fx", "fy", "cx", "cy"):
            assert torch.allclose(getattr(a, key), getattr(b, key), atol=1e-4)
    # loaded with the default (normalised) frame, the round trip is the training frame again
    assert torch.allclose(load_scene(out.parent).split("train").cameras.c2w, load_scene(root).split("train").cameras.c2w, atol=1e-4)


def test_transform_file_validation(tmp_path):
    path = SceneTransform(WORLD, "poses").save(tmp_path / "t.json")
    loaded = SceneTransform.load(path)
    assert np.allclose(loaded.matrix, WORLD) and math.isclose(loaded.scale, 2.5)
    assert np.allclose(loaded.inverse() @ WORLD, np.eye(4), atol=1e-12)
    path.write_text(json.dumps({"matrix": [[1, 0], [0, 1]]}))
    with pytest.raises(ValueError, match=r"t.json: 'matrix' must be a finite 4x4 matrix"):
        SceneTransform.load(path)


@pytest.mark.slow
def test_exports_come_back_in_the_input_frame(sf_colmap_scene, tmp_path, capsys):
    root, world_points = sf_colmap_scene
    run = tmp_path / "run"
    assert main(["train", "gaussians3d", "--data", str(root), "--out", str(run), "--no-progress",
                 "steps=1", "sh_degree=1", "eval_max_images=1", "log_every=1"]) == 0  # fmt: skip
    recorded = SceneTransform.load(run / TRANSFORM_FILE)
    scene = load_scene(root)
    assert np.allclose(recorded.matrix, scene.transform.matrix) and not recorded.is_identity

    # splats: initialised on the SfM points, one step later still there, in COLMAP's frame
    assert main(["export", str(run), "splat", "--out", str(tmp_path / "s.ply")]) == 0
    splats = read_splat_ply(tmp_path / "s.ply")
    assert splats.means.shape == world_points.shape
    assert np.abs(splats.means - world_points).max() < 0.01 * 2.5
    assert main(["export", str(run), "splat", "--normalized", "--out", str(tmp_path / "n.ply")]) == 0
    normalised = read_splat_ply(tmp_path / "n.ply")
    assert np.allclose(normalised.means, scene.points.numpy(), atol=0.01)
    assert np.allclose(splats.log_scales, normalised.log_scales - math.log(recorded.scale), atol=1e-5)

    # point cloud: rendered depth back-projected, mapped with the same similarity as the splats
    assert main(["export", str(run), "pointcloud", "--out", str(tmp_path / "p.xyz")]) == 0
    assert main(["export", str(run), "pointcloud", "--normalized", "--out", str(tmp_path / "pn.xyz")]) == 0
    cloud = np.loadtxt(tmp_path / "p.xyz", ndmin=2)[:, :3]
    cloud_normalised = np.loadtxt(tmp_path / "pn.xyz", ndmin=2)[:, :3]
    assert len(cloud) > 0
    assert np.allclose(cloud, SceneTransform(recorded.inverse()).apply_points(cloud_normalised), atol=1e-3)

    # cameras: nerfstudio transforms.json in COLMAP's frame
    assert main(["export", str(run), "cameras", "--out", str(tmp_path / "cams" / "transforms.json")]) == 0
    again = load_scene(tmp_path / "cams", normalize="none")
    original = load_scene(root, normalize="none")
    assert torch.allclose(again.split("train").cameras.c2w, original.split("train").cameras.c2w, atol=1e-4)
    assert "cameras (input frame)" in capsys.readouterr().out
