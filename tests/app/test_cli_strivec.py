"""Strivec through the CLI on COLMAP and nerfstudio folders with SfM points: placement from the
points, train, eval, render, export mesh / point cloud, and the viewer's render path (colour,
depth, alpha), the same commands and code paths as TensoRF."""

from __future__ import annotations

import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from tensorfield.app.cli import main
from tensorfield.datasets.colmap_model import write_scene_as_colmap
from tensorfield.datasets.ply import write_ply_points
from tensorfield.datasets.primitives import load_primitives
from tensorfield.datasets.scene import load_scene
from tensorfield.datasets.synthetic import make_scene

TINY = [
    "steps=40",
    "batch_size=256",
    "placement=points",
    "half_extents=[0.6,0.3]",
    "voxel_sizes=[0.8,0.4]",
    "density_components=[8,8]",
    "app_components=[8,8]",
    "vector_lengths_init=[4,4]",
    "vector_lengths_final=[8,8]",
    "upsample_steps=[10,20]",
    "alpha_mask_steps=[25]",
    "app_dim=8",
    "mlp_hidden=16",
    "step_ratio=1.0",
    "render_chunk=2048",
    "checkpoint_every=20",
    "log_every=10",
    "eval_every=0",
]
_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


def surface_points(folder, count: int = 400) -> torch.Tensor:
    """Points inside the synthetic scene's primitives (the role of SfM points)."""
    primitives = load_primitives(folder)
    candidates = torch.rand(20000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 - 1.5
    inside = torch.zeros(candidates.shape[0], dtype=torch.bool)
    for primitive in primitives:
        inside |= primitive.contains(candidates).reshape(-1).bool()
    assert int(inside.sum()) >= count
    return candidates[inside][:count].float()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(COLMAP folder, nerfstudio folder, SfM points) of one 24x24 synthetic scene."""
    base = tmp_path_factory.mktemp("strivec_cli")
    blender = make_scene(base / "blender", resolution=24, n_train=10, n_test=2, n_val=0, seed=5)
    scene = load_scene(blender)
    points = surface_points(blender)
    scene.points, scene.points_rgb = points, torch.full_like(points, 0.5)
    colmap = write_scene_as_colmap(scene, base / "colmap")
    nerfstudio = base / "nerfstudio"
    (nerfstudio / "images").mkdir(parents=True)
    split = scene.split("train")
    frames = []
    for i, path in enumerate(split.image_paths):
        shutil.copy(path, nerfstudio / "images" / f"frame_{i:05d}.png")
        c2w = np.eye(4)
        c2w[:3] = split.cameras.c2w[i].double().numpy()
        frames.append({"file_path": f"images/frame_{i:05d}.png", "transform_matrix": (c2w @ _CV_TO_GL).tolist()})
    cameras = split.cameras
    meta = {
        "w": 24, "h": 24, "fl_x": float(cameras.fx[0]), "fl_y": float(cameras.fy[0]), "cx": float(cameras.cx[0]),
        "cy": float(cameras.cy[0]), "camera_model": "PINHOLE", "frames": frames, "ply_file_path": "sparse_pc.ply",
    }  # fmt: skip
    (nerfstudio / "transforms.json").write_text(json.dumps(meta))
    write_ply_points(nerfstudio / "sparse_pc.ply", points.double().numpy(), np.full((points.shape[0], 3), 0.5))
    return colmap, nerfstudio, points


@pytest.mark.parametrize("layout", ["colmap", "nerfstudio"])
def test_strivec_trains_from_sfm_points_and_every_command_runs(folders, layout, tmp_path):
    from tensorfield.app.viewer.session import load_session
    from tensorfield.app.viewer.worker import FrameRequest, render_request
    from tensorfield.engine.trainer import load_run

    torch.set_num_threads(1)
    data = folders[0] if layout == "colmap" else folders[1]
    run = tmp_path / "run"
    assert main(["train", "strivec_small", "--data", str(data), "--out", str(run), "--no-progress", *TINY]) == 0
    model = load_run(run, device="cpu").model
    assert model.fine_start == 0  # placed from the points: no coarse phase
    counts = model.num_tensors
    assert counts[0] >= 1 and counts[1] > counts[0]  # more cubes at the finer scale, none without points
    evaluation = json.loads((run / "eval.json").read_text())
    assert np.isfinite(evaluation["psnr"]) and evaluation["psnr"] > 12.0

    assert main(["eval", str(run)]) == 0
    assert main(["render", str(run), "--path", "orbit", "--frames", "3", "--out", str(tmp_path / "orbit.mp4")]) == 0
    assert (tmp_path / "orbit.mp4").stat().st_size > 0
    assert main(["export", str(run), "mesh", "--out", str(tmp_path / "mesh.ply"), "--level", "0.001"]) == 0
    assert main(["export", str(run), "pointcloud", "--out", str(tmp_path / "points.ply")]) == 0
    for name in ("mesh.ply", "points.ply"):
        assert (tmp_path / name).stat().st_size > 200

    session = load_session(run)
    view = session.default_view()
    images = {mode: render_request(session.model, FrameRequest(view, 20, 16, None, None, mode, (1.0, 1.0, 1.0))) for mode in ("rgb", "depth", "alpha")}
    for mode, image in images.items():
        assert image.shape == (16, 20, 3) and image.dtype == np.uint8, mode
    assert images["alpha"].max() > 50  # the object is in view
    assert not np.array_equal(images["rgb"], images["depth"])


def test_render_writes_the_test_views(folders, tmp_path):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    assert main(["train", "strivec_small", "--data", str(folders[0]), "--out", str(run), "--no-progress", *TINY, "steps=20"]) == 0
    assert main(["render", str(run), "--path", "test", "--no-depth", "--out", str(tmp_path / "renders")]) == 0
    frames = sorted((tmp_path / "renders").glob("*.png"))
    assert len(frames) == 2 and iio.imread(frames[0]).shape[:2] == (24, 24)
