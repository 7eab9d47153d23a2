"""Folders laid out as nerfstudio's ``ns-process-data`` writes them load directly.

The layout, built by hand here: ``transforms.json`` (OPENCV intrinsics, ``applied_transform``,
``ply_file_path: sparse_pc.ply``, frames ``images/frame_NNNNN.png`` with ``colmap_im_id``),
``images/`` plus the half-size copies ``images_2/``, ``sparse_pc.ply`` in the transforms' frame
and the COLMAP model in ``colmap/sparse/0`` (COLMAP's own frame).
"""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from tensorfield.datasets.colmap_model import write_scene_as_colmap
from tensorfield.datasets.ply import write_ply_points
from tensorfield.datasets.scene import load_scene

# ns-process-data's COLMAP -> nerfstudio world change (x <-> y, z flipped), as a 3x4
APPLIED = np.array([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0]])
_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def ns_processed(tmp_path_factory):
    """(folder, COLMAP world points): the 32x32 synthetic scene as ns-process-data output."""
    from tensorfield.datasets.synthetic import make_scene

    base = tmp_path_factory.mktemp("ns")
    scene = load_scene(make_scene(base / "blender", resolution=32, n_train=9, n_test=0, n_val=0, seed=3))
    points = np.random.default_rng(0).uniform(-0.5, 0.5, size=(64, 3)).astype(np.float32)
    scene.points, scene.points_rgb = torch.from_numpy(points), torch.full((64, 3), 0.5)
    root = base / "processed"
    write_scene_as_colmap(scene, root, folder="colmap/sparse/0")  # the COLMAP world = Blender's here
    (root / "images_2").mkdir()
    split = scene.split("train")
    frames = []
    for i, path in enumerate(split.image_paths):
        name = f"frame_{i + 1:05d}.png"
        (root / "images" / f"train_{path.name}").rename(root / "images" / name)
        pixels = iio.imread(root / "images" / name).astype(np.float32)
        half = pixels.reshape(16, 2, 16, 2, -1).mean((1, 3))
        iio.imwrite(root / "images_2" / name, np.round(half).astype(np.uint8))
        c2w = np.eye(4)
        c2w[:3] = split.cameras.c2w[i].double().numpy()
        applied = np.eye(4)
        applied[:3] = APPLIED
        frames.append({"file_path": f"images/{name}", "transform_matrix": (applied @ c2w @ _CV_TO_GL).tolist(), "colmap_im_id": i + 1})
    cameras = split.cameras
    meta = {
        "w": 32, "h": 32, "fl_x": float(cameras.fx[0]), "fl_y": float(cameras.fy[0]),
        "cx": float(cameras.cx[0]), "cy": float(cameras.cy[0]), "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "camera_model": "OPENCV", "frames": frames, "applied_transform": APPLIED.tolist(),
        "ply_file_path": "sparse_pc.ply",
    }  # fmt: skip
    (root / "transforms.json").write_text(json.dumps(meta, indent=2))
    write_ply_points(root / "sparse_pc.ply", points @ APPLIED[:, :3].T, np.full((64, 3), 0.5))
    return root, points, scene


def test_ns_process_data_folder_loads(ns_processed):
    root, points, blender = ns_processed
    scene = load_scene(root, normalize="none")
    assert scene.format == "nerfstudio" and set(scene.splits) == {"train", "test"}
    names = sorted(p.name for s in scene.splits.values() for p in s.image_paths)
    assert [p.name for p in scene.split("test").image_paths] == names[::8]
    # sparse_pc.ply is in the transforms' frame already
    assert np.allclose(scene.points.numpy(), points @ APPLIED[:, :3].T, atol=1e-6)
    # poses: the COLMAP (here Blender) world moved by applied_transform
    train = scene.split("train")
    index = [int(p.stem.split("_")[1]) - 1 for p in train.image_paths]
    expected = np.einsum("ij,njk->nik", APPLIED[:, :3], blender.split("train").cameras.c2w.double().numpy()[index])
    assert np.allclose(train.cameras.c2w.double().numpy(), expected, atol=1e-5)


def test_downscale_uses_the_images_n_copies(ns_processed):
    root, _, _ = ns_processed
    full = load_scene(root, normalize="none")
    half = load_scene(root, normalize="none", downscale=2)
    split, full_split = half.split("train"), full.split("train")
    assert all(p.parent.name == "images_2" for p in split.image_paths)
    assert (split.cameras.width, split.cameras.height) == (16, 16)
    assert torch.allclose(split.cameras.fx, full_split.cameras.fx / 2)
    assert torch.allclose(split.cameras.cx, full_split.cameras.cx / 2)
    # the pixels are the copies' (decoded as they are, not resampled from images/)
    copy = iio.imread(split.image_paths[0]).astype(np.float32) / 255.0
    assert np.allclose(split.alphas[0].numpy(), copy[..., 3], atol=1e-6)
    # a downscale without copies (4) resizes the full images
    third = load_scene(root, normalize="none", downscale=4, splits=("train",)).split("train")
    assert all(p.parent.name == "images" for p in third.image_paths) and third.cameras.width == 8


def test_normalised_by_default(ns_processed):
    root, _, _ = ns_processed
    scene = load_scene(root)
    centres = torch.cat([s.cameras.c2w[:, :, 3] for s in scene.splits.values()])
    assert float(centres.abs().max()) == pytest.approx(1.0, abs=1e-5)
    up = -torch.cat([s.cameras.c2w[:, :, 1] for s in scene.splits.values()]).mean(0)
    assert torch.allclose(up / up.norm(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-5)
    assert scene.transform.mode == "poses" and not scene.transform.is_identity
