"""SfM points: COLMAP points3D readers, discovery beside each layout, and world-frame conversion."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorfield.datasets.colmap import (
    read_points3d,
    write_points3d_binary,
    write_points3d_text,
)
from tensorfield.datasets.errors import DatasetError
from tensorfield.datasets.ply import write_ply_points
from tensorfield.datasets.scene import load_scene

from .test_nerfstudio import as_nerfstudio

POINTS_TXT = """# 3D point list with one line of data per point:
#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)
# Number of points: 3, mean track length: 1.3333

1 0.5 -1.25 2.0 255 0 128 0.7 1 10 2 11
7 -3 4e-1 0 10 20 30 1.5 3 4
12 1.0 1.0 1.0 0 0 0 0.1
"""
EXPECTED_XYZ = np.array([[0.5, -1.25, 2.0], [-3.0, 0.4, 0.0], [1.0, 1.0, 1.0]], dtype=np.float32)
EXPECTED_RGB = np.array([[255, 0, 128], [10, 20, 30], [0, 0, 0]], dtype=np.float32) / 255


def colmap_binary(points: list[tuple]) -> bytes:
    """points3D.bin by hand: (id, xyz, rgb, error, track) per point, COLMAP's byte layout."""
    chunks = [struct.pack("<Q", len(points))]
    for point_id, xyz, rgb, error, track in points:
        chunks.append(struct.pack("<Q3d3BdQ", point_id, *xyz, *rgb, error, len(track)))
        chunks += [struct.pack("<ii", image, index) for image, index in track]
    return b"".join(chunks)


def test_text_reader(tmp_path):
    path = tmp_path / "points3D.txt"
    path.write_text(POINTS_TXT)
    points, colors = read_points3d(path)
    assert np.array_equal(points, EXPECTED_XYZ) and np.allclose(colors, EXPECTED_RGB)


def test_binary_reader(tmp_path):
    path = tmp_path / "points3D.bin"
    path.write_bytes(colmap_binary([
        (1, (0.5, -1.25, 2.0), (255, 0, 128), 0.7, [(1, 10), (2, 11)]),
        (7, (-3.0, 0.4, 0.0), (10, 20, 30), 1.5, [(3, 4)]),
        (12, (1.0, 1.0, 1.0), (0, 0, 0), 0.1, []),
    ]))  # fmt: skip
    points, colors = read_points3d(path)
    assert np.array_equal(points, EXPECTED_XYZ) and np.allclose(colors, EXPECTED_RGB)
    write_points3d_binary(tmp_path / "again.bin", points, colors)
    write_points3d_text(tmp_path / "again.txt", points, colors)
    for name in ("again.bin", "again.txt"):
        again = read_points3d(tmp_path / name)
        assert np.array_equal(again[0], points) and np.allclose(again[1], colors)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("1 0 0 0 1 2 3\n", "line 1: expected POINT3D_ID X Y Z R G B ERROR [track], got 7 values"),
        ("# c\n1 0 zero 0 1 2 3 0.5\n", "line 2: non-numeric value"),
        ("1 0 0 0 1 2 3 0.5 4\n", "line 1: track must be (IMAGE_ID, POINT2D_IDX) pairs"),
        ("1 0 0 0 1 2 300 0.5\n", "line 1: colour outside 0..255"),
        ("1 0 nan 0 1 2 3 0.5\n", "point 0 has NaN/inf coordinates"),
    ],
)
def test_malformed_text(tmp_path, text, problem):
    path = tmp_path / "points3D.txt"
    path.write_text(text)
    with pytest.raises(DatasetError) as info:
        read_points3d(path, root=tmp_path)
    assert str(info.value) == f"points3D.txt: {problem}"


def test_malformed_binary(tmp_path):
    path = tmp_path / "points3D.bin"
    good = colmap_binary([(1, (0.0, 1.0, 2.0), (1, 2, 3), 0.5, [(1, 2), (3, 4)])] * 2)
    cases = {
        good[:5]: "truncated: no point count",
        struct.pack("<Q", 10**12) + good[8:]: "truncated: header says 1000000000000 points but",
        good[:-4]: "truncated in the track of point 1 of 2",
        good + b"\0\0": "2 unexpected bytes after the last of 2 points",
    }
    for data, problem in cases.items():
        path.write_bytes(data)
        with pytest.raises(DatasetError) as info:
            read_points3d(path, root=tmp_path)
        assert str(info.value).startswith(f"points3D.bin: {problem}")
    path.unlink()
    with pytest.raises(DatasetError, match="points3D.bin: missing file"):
        read_points3d(path, root=tmp_path)


# ---------------------------------------------------------------------------------- discovery
def test_blender_scene_gets_colmap_points(ds_static_scene, tmp_path):
    root = Path(shutil.copytree(ds_static_scene, tmp_path / "scene"))
    assert load_scene(root, splits=("train",)).points is None
    (root / "sparse" / "0").mkdir(parents=True)
    (root / "sparse" / "0" / "points3D.txt").write_text(POINTS_TXT)
    scene = load_scene(root, splits=("train",))
    assert torch.equal(scene.points, torch.from_numpy(EXPECTED_XYZ))
    assert torch.allclose(scene.points_rgb, torch.from_numpy(EXPECTED_RGB))
    info = scene.scene_info()
    assert info.points is scene.points and info.points_rgb is scene.points_rgb

    # a points3d.ply beside the metadata (3DGS's Blender convention) wins over COLMAP
    write_ply_points(root / "points3d.ply", EXPECTED_XYZ[:2] * 2, EXPECTED_RGB[:2])
    assert torch.equal(load_scene(root, splits=("train",)).points, torch.from_numpy(EXPECTED_XYZ[:2] * 2))
    (root / "points3d.ply").write_text("not a ply")
    with pytest.raises(DatasetError, match=r"^points3d.ply: not a PLY file"):
        load_scene(root, splits=("train",))


def test_nerfstudio_colmap_points_get_applied_transform_and_scale(ds_static_scene, tmp_path):
    applied = np.array([[0.0, 1.0, 0.0, 0.5], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 2.0]])
    root = as_nerfstudio(ds_static_scene, tmp_path / "ns", applied_transform=applied.tolist(), scale=0.5)
    (root / "colmap" / "sparse" / "0").mkdir(parents=True)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(20, 3)).astype(np.float32)
    write_points3d_binary(root / "colmap" / "sparse" / "0" / "points3D.bin", points, rng.uniform(size=(20, 3)))
    scene = load_scene(root, splits=("train",), normalize="none")
    # hand-applied: (y + 0.5, x, 2 - z), then scaled by 0.5
    expected = np.stack([points[:, 1] + 0.5, points[:, 0], 2.0 - points[:, 2]], axis=1) * 0.5
    assert np.allclose(scene.points.numpy(), expected, atol=1e-6)

    # a points3d.ply beside transforms.json is in the poses' frame already: only scaled
    write_ply_points(root / "points3d.ply", points)
    scene = load_scene(root, splits=("train",), normalize="none")
    assert np.allclose(scene.points.numpy(), points * 0.5) and scene.points_rgb is None

    meta = json.loads((root / "transforms.json").read_text())
    meta["applied_transform"] = [[1, 0], [0, 1]]
    (root / "transforms.json").write_text(json.dumps(meta))
    (root / "points3d.ply").unlink()
    with pytest.raises(DatasetError, match="transforms.json: applied_transform must be"):
        load_scene(root, splits=("train",))


def test_empty_colmap_model_means_no_points(ds_static_scene, tmp_path):
    root = Path(shutil.copytree(ds_static_scene, tmp_path / "scene"))
    (root / "sparse").mkdir()
    (root / "sparse" / "points3D.txt").write_text("# no points\n")
    with pytest.warns(UserWarning, match="sparse/points3D.txt: no points"):
        assert load_scene(root, splits=("train",)).points is None


def test_n3v_scene_gets_colmap_points_as_read(tmp_path):
    """LLFF keeps COLMAP's world frame: the points are used as read."""
    from tensorfield.datasets.synthetic import make_video_scene

    root = make_video_scene(tmp_path / "n3v", n_cameras=2, n_frames=2, resolution=16)
    assert load_scene(root).points is None
    (root / "sparse" / "0").mkdir(parents=True)
    (root / "sparse" / "0" / "points3D.txt").write_text(POINTS_TXT)
    info = load_scene(root, splits=("train",)).scene_info()
    assert info.is_dynamic and torch.equal(info.points, torch.from_numpy(EXPECTED_XYZ))
    assert torch.allclose(info.points_rgb, torch.from_numpy(EXPECTED_RGB))
