"""The extension contract, proven by two methods that live only in this folder.

``toy_wave_method.py`` (coordinate batches, data named by its config) and
``toy_exposure_method.py`` (image batches with a per-frame input) are registered as plugins through
``TENSORFIELD_METHODS`` and go through the CLI (train, resume, eval, render, export) and the render
service with no change to tensorfield itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from tensorfield.app.cli import main
from tensorfield.engine.checkpoint import load_checkpoint, latest_checkpoint
from tensorfield.engine.render import render_image
from tensorfield.engine.trainer import load_run
from tensorfield.fields import base

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def plugins(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("TENSORFIELD_METHODS", "toy_wave_method:SPEC,toy_exposure_method:SPEC")
    torch.set_num_threads(1)


def _cli(*args: str) -> int:
    return main([str(a) for a in args])


def test_plugins_are_listed(capsys):
    assert _cli("methods") == 0
    out = capsys.readouterr().out
    assert "toy_wave" in out and "toy_exposure" in out and "tensorf_vm" in out


def test_capabilities_are_the_protocols_a_family_implements(tmp_path):
    from toy_exposure_method import ToyExposure, ToyExposureConfig, exposure_data
    from toy_wave_method import ToyWave, ToyWaveConfig, wave_data

    wave = ToyWave(ToyWaveConfig(method="toy_wave"), wave_data(ToyWaveConfig()).scene_info())
    assert base.capabilities(wave) == ("HasTime", "ExportsSlices")
    config = ToyExposureConfig(method="toy_exposure")
    exposure = ToyExposure(config, exposure_data(config).scene_info())
    assert base.capabilities(exposure) == ("RendersViews", "HasIdentities")
    assert isinstance(exposure_data(config), base.TrainingData) and isinstance(exposure_data(config), base.CameraData)
    assert not isinstance(wave_data(ToyWaveConfig()), base.CameraData)


def test_coordinate_method_trains_without_data_resumes_evaluates_and_slices(tmp_path, capsys):
    straight, run = tmp_path / "straight", tmp_path / "run"
    config = HERE / "toy_wave.yaml"
    assert _cli("train", config, "--out", straight, "--no-progress", "steps=200") == 0
    assert _cli("train", config, "--out", run, "--no-progress", "steps=100") == 0
    assert _cli("train", config, "--out", run, "--resume", "--no-progress", "steps=200") == 0
    a = load_checkpoint(latest_checkpoint(straight))["model"]
    b = load_checkpoint(latest_checkpoint(run))["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # resume is exact

    capsys.readouterr()
    assert _cli("eval", run) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["step"] == 200 and result["rel_l2"] < 0.5
    trainer = load_run(run)
    untrained = type(trainer.model)(trainer.config, trainer.data.scene_info())
    assert trainer.data.evaluate(untrained, "test", None)["rel_l2"] > 2 * result["rel_l2"]

    # no camera views: render says what to do instead, in one line
    assert _cli("render", run, "--out", tmp_path / "x.mp4") == 2
    assert "does not render camera views; use: tensorfield export" in capsys.readouterr().err
    assert _cli("export", run, "slice", "--out", tmp_path / "u.npy", "--resolution", 9) == 0
    values = np.load(tmp_path / "u.npy")
    request = base.SliceRequest((0.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), 9)  # t = 0, x right, y up
    assert np.array_equal(values, trainer.model.field_slice(request).numpy())
    points = request.points()
    truth = (torch.sin(torch.pi / 2 * points[..., 1]) * torch.cos(torch.pi / 2 * points[..., 2])).numpy()
    assert values.shape == (9, 9) and np.corrcoef(values.ravel(), truth.ravel())[0, 1] > 0.8
    assert _cli("export", run, "slice", "--out", tmp_path / "u.png", "--component", "abs_u") == 0
    assert imageio.imread(tmp_path / "u.png").shape == (32, 32, 3)
    assert _cli("export", run, "slice", "--out", tmp_path / "u.png", "--component", "nope") == 2
    assert "unknown slice component 'nope'" in capsys.readouterr().err
    assert _cli("export", run, "mesh", "--out", tmp_path / "m.ply") == 2


def test_image_method_with_per_frame_input_trains_resumes_evaluates_and_renders(tmp_path, capsys):
    run = tmp_path / "run"
    config = HERE / "toy_exposure.yaml"
    assert _cli("train", config, "--out", run, "--no-progress", "steps=60") == 0
    assert _cli("train", config, "--out", run, "--resume", "--no-progress", "steps=200") == 0
    straight = tmp_path / "straight"
    assert _cli("train", config, "--out", straight, "--no-progress") == 0
    a = load_checkpoint(latest_checkpoint(straight))["model"]
    b = load_checkpoint(latest_checkpoint(run))["model"]
    assert torch.equal(a["texture"], b["texture"])

    assert _cli("eval", run) == 0
    held_out = json.loads((run / "eval.json").read_text())
    assert held_out["psnr"] > 30  # frames whose exposure was never trained on
    assert _cli("eval", run, "--split", "train") == 0

    # the CLI's render of frame 3 is the render service's image of the same request
    assert _cli("render", run, "--path", "test", "--out", tmp_path / "frames", "--frame", 3, "--no-depth") == 0
    trainer = load_run(run)
    cameras = trainer.data.split_cameras()["test"]
    expected = render_image(trainer.model, base.RenderRequest(cameras, 0, torch.ones(3), frame=3))
    assert np.array_equal(imageio.imread(tmp_path / "frames" / "00000.png"), expected)
    darker = render_image(trainer.model, base.RenderRequest(cameras, 0, torch.ones(3), frame=0))
    assert darker.mean() < expected.mean()
    capsys.readouterr()
    assert _cli("render", run, "--path", "test", "--out", tmp_path / "f2", "--frame", 99) == 2
    assert "frame 99 out of range" in capsys.readouterr().err

    # an optional --data path reaches the method's own factory, with its own one-line errors
    bad = tmp_path / "texture.npy"
    np.save(bad, np.zeros((4, 5, 3), dtype=np.float32))
    assert _cli("train", config, "--data", bad, "--out", tmp_path / "bad", "--no-progress") == 2
    assert "expected a square [S, S, 3] texture" in capsys.readouterr().err


IMAGE_OPTIONS = ("downscale", "background", "frame_stride", "max_frames", "time_range", "test_cameras", "render_chunk")


def test_coordinate_method_config_has_no_image_options(capsys):
    import dataclasses

    from toy_exposure_method import ToyExposureConfig
    from toy_wave_method import ToyWaveConfig

    for config_class in (ToyWaveConfig, ToyExposureConfig):
        names = {item.name for item in dataclasses.fields(config_class)}
        assert not names & set(IMAGE_OPTIONS), config_class
        assert {"steps", "batch_size", "seed", "data", "log_every", "tensorboard"} <= names
    assert _cli("train", "toy_wave", "--help-config") == 0
    out = capsys.readouterr().out
    assert out.startswith("Options of ToyWaveConfig")
    assert "[training]" in out and "  steps: int = 300" in out and "  frequency: float = 0.5" in out
    assert "[rendering]" not in out and "[video data]" not in out
    assert not any(f"  {name}:" in out for name in IMAGE_OPTIONS)
    # the data group holds only the (optional) data path
    data_block = out.split("[data]\n", 1)[1].split("\n[", 1)[0]
    assert data_block.splitlines()[0].startswith("  data: str = ''")
    assert [line for line in data_block.splitlines() if line.startswith("  ") and not line.startswith("      ")] == [
        "  data: str = ''"
    ]
    # image options are not accepted, flat or grouped
    assert _cli("train", "toy_wave", "background=black", "--help-config") != 0
    assert "unknown key 'background'" in capsys.readouterr().err
    assert _cli("train", "toy_wave", "rendering.render_chunk=4096", "--help-config") != 0
    assert "unknown group 'rendering'" in capsys.readouterr().err
