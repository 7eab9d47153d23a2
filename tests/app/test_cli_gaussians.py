"""CLI end to end with a 4D Gaussian model: train, time-sweep render, splat export at a time
(the TSDF mesh at a time is tested on an exact two-blob model in tests/fields/test_gaussians_training.py)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from tensorfield.app.cli import main
from tensorfield.datasets.synthetic import make_scene
from tensorfield.engine.export import read_splat_ply
from tensorfield.engine.trainer import Trainer

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "gaussians4d_small.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("g4d")
    data = make_scene(root / "data", kind="dynamic", resolution=24, n_train=8, n_test=2, n_val=1)
    run_dir = root / "run"
    code = main([
        "train", str(CONFIG), "--data", str(data), "--out", str(run_dir), "--no-progress",
        "steps=12", "init_points=300", "densify_from=4", "densify_interval=4", "densify_until=10",
        "sh_increase_interval=4", "checkpoint_every=6", "log_every=4", "backend=torch",
    ])
    assert code == 0
    return root, run_dir


def test_time_sweep_video_changes_over_time(run, capsys):
    root, run_dir = run
    out = root / "sweep.mp4"
    assert main(["render", str(run_dir), "--path", "orbit", "--frames", "4", "--time-range", "0", "1", "--out", str(out), "--no-depth"]) == 0
    frames = iio.imread(out)
    assert frames.shape[0] == 4 and frames.shape[1:3] == (24, 24)


def test_splat_export_is_the_slice_at_that_time(run):
    root, run_dir = run
    out = root / "slice.ply"
    assert main(["export", str(run_dir), "splat", "--time", "0.5", "--out", str(out)]) == 0
    splats = read_splat_ply(out)
    model = Trainer.from_checkpoint(run_dir).model
    with torch.no_grad():
        attributes = model.splat_attributes(0.5)
    names = attributes.names
    means = attributes.values[:, [names.index(n) for n in ("x", "y", "z")]].numpy()
    assert splats.means.shape == means.shape and splats.means.shape[0] > 0
    assert np.allclose(splats.means, means, atol=1e-6)
    assert np.allclose(splats.opacity_logits.reshape(-1), attributes.values[:, names.index("opacity")].numpy(), atol=1e-6)


def test_splat_export_refuses_grid_fields_and_wrong_suffix(run, tmp_path, capsys):
    root, run_dir = run
    assert main(["export", str(run_dir), "splat", "--out", str(tmp_path / "x.obj")]) == 2
    assert "x.obj: unsupported output format '.obj' (use one of .ply)" in capsys.readouterr().err  # checked before loading
