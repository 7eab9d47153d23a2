"""The CLI end to end on a tiny synthetic scene: train, resume, eval, render, export, errors."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
from tensorfield.app.cli import main
from tensorfield.datasets.synthetic import make_scene

TINY = [
    "steps=100",
    "batch_size=512",
    "voxels_init=4096",
    "voxels_final=32768",
    "upsample_steps=[20,40]",
    "alpha_mask_steps=[50,70]",
    "density_components=[4,4,4]",
    "app_components=[8,8,8]",
    "checkpoint_every=50",
    "log_every=10",
    "render_chunk=2048",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = make_scene(root / "data", resolution=32, n_train=12, n_test=2, n_val=1)
    run = root / "run"
    code = main(["train", "tensorf_vm_small", "--data", str(data), "--out", str(run), "--no-progress", *TINY])
    assert code == 0
    return root, data, run


def test_train_writes_the_run_directory(trained):
    _, _, run = trained
    assert (run / "config.yaml").is_file()
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) == ["step_000050.ckpt", "step_000100.ckpt"]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [line for line in lines if "loss" in line]
    assert train_lines and all(np.isfinite(line["psnr"]) for line in train_lines)
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["num_images"] == 2 and evaluation["psnr"] > 16.0  # ~19 dB after 100 steps
    assert (run / "renders" / "test").is_dir()


def test_existing_run_is_not_overwritten(trained, capsys):
    _, data, run = trained
    before = (run / "checkpoints" / "step_000100.ckpt").read_bytes()
    code = main(["train", "tensorf_vm_small", "--data", str(data), "--out", str(run), "--no-progress", *TINY])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume" in err
    assert (run / "checkpoints" / "step_000100.ckpt").read_bytes() == before


def test_eval_prints_and_stores_metrics(trained, capsys):
    _, _, run = trained
    assert main(["eval", str(run), "--no-renders"]) == 0
    out = capsys.readouterr().out
    assert "psnr" in out and "ssim" in out
    assert json.loads((run / "eval.json").read_text())["step"] == 100


def test_render_test_split_and_orbit_video(trained):
    root, _, run = trained
    assert main(["render", str(run), "--path", "test", "--out", str(root / "frames")]) == 0
    frames = sorted((root / "frames").glob("?????.png"))
    assert len(frames) == 2 and iio.imread(frames[0]).shape == (32, 32, 3)
    assert (root / "frames" / "00000_depth.png").is_file()
    assert main(["render", str(run), "--path", "orbit", "--frames", "4", "--out", str(root / "orbit.mp4")]) == 0
    video = iio.imread(root / "orbit.mp4")
    assert video.shape[0] == 4
    assert (root / "orbit_depth.mp4").is_file()


def test_render_camera_path_json_round_trip(trained):
    from tensorfield.engine.render import CameraPath, load_camera_path, save_camera_path

    root, data, run = trained
    from tensorfield.datasets import load_scene

    cams = load_scene(data).split("test").cameras
    save_camera_path(root / "path.json", CameraPath(cams))
    assert torch_allclose(load_camera_path(root / "path.json").cameras.c2w, cams.c2w)
    assert main(["render", str(run), "--path", str(root / "path.json"), "--out", str(root / "from_json"), "--no-depth"]) == 0
    assert main(["render", str(run), "--path", "test", "--out", str(root / "from_test"), "--no-depth"]) == 0
    # the same cameras give the same pixels whichever way they were given
    a = iio.imread(root / "from_json" / "00000.png").astype(int)
    b = iio.imread(root / "from_test" / "00000.png").astype(int)
    assert np.abs(a - b).max() <= 1


def torch_allclose(a, b):
    return bool((a - b).abs().max() < 1e-5)


def test_export_mesh_and_pointcloud(trained):
    import open3d as o3d

    root, _, run = trained
    assert main(["export", str(run), "mesh", "--out", str(root / "mesh.ply"), "--level", "0.001"]) == 0
    mesh = o3d.io.read_triangle_mesh(str(root / "mesh.ply"))
    assert len(mesh.triangles) > 0 and mesh.has_vertex_colors()
    assert main(["export", str(run), "pointcloud", "--out", str(root / "points.ply")]) == 0
    assert len(o3d.io.read_point_cloud(str(root / "points.ply")).points) > 0


def test_resume_continues_from_the_latest_checkpoint(trained, tmp_path):
    import shutil

    _, _, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main(["train", "tensorf_vm_small", "--out", str(copy), "--resume", "--no-progress", "steps=110"]) == 0
    assert (copy / "checkpoints" / "step_000110.ckpt").is_file()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "tensorf_vm_small", "--data", "/nonexistent/data", "--out", "{tmp}/r"], "/nonexistent/data"),
        (["train", "tensorf_vm_small", "--data", "{data}", "--out", "{tmp}/r", "lr_gird=0.1"], "lr_gird"),
        (["eval", "{tmp}/corrupt"], "step_000001.ckpt"),
        (["render", "{run}", "--path", "{tmp}/missing.json", "--out", "{tmp}/x.mp4"], "missing.json"),
        (["export", "{run}", "mesh", "--out", "{tmp}/mesh.xyz"], "mesh.xyz"),
    ],
)
def test_user_errors_are_one_line(trained, tmp_path, capsys, argv, needle):
    _, data, run = trained
    corrupt = tmp_path / "corrupt" / "checkpoints"
    corrupt.mkdir(parents=True)
    (corrupt / "step_000001.ckpt").write_bytes(b"PK\x03\x04 truncated")
    argv = [a.format(tmp=tmp_path, data=data, run=run) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tensorfield: error:") and needle in err
