"""``tensorfield demo``: every output at the size asked for, both methods, and a step that cannot
run (open3d without its system library) skipped in one line with the summary still written."""

from __future__ import annotations

import json
import sys

import imageio.v3 as iio
import pytest
from tensorfield.app.cli import main


def _run_demo(out, *extra) -> dict:
    code = main(["demo", "--out", str(out), "--no-progress", "--size", "96", "--frames", "4", *extra])
    assert code == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_tensorf_demo_writes_every_output_at_the_requested_size(tmp_path, capsys):
    summary = _run_demo(tmp_path / "demo", "--steps", "150")
    assert summary["method"] == "tensorf_vm" and summary["steps"] == 150
    assert summary["skipped"] == {}
    assert summary["eval_split"] == "test" and summary["test_psnr"] > 18.0
    video = iio.imread(summary["files"]["orbit_video"])
    assert video.shape == (4, 96, 96, 3)
    stills = sorted((tmp_path / "demo" / "stills").glob("?????.png"))
    assert len(stills) == 8 and iio.imread(stills[0]).shape[:2] == (96, 96)
    assert (tmp_path / "demo" / "mesh.ply").stat().st_size > 0
    assert "Traceback" not in capsys.readouterr().err
    # a second demo into the same folder refuses before touching the run
    assert main(["demo", "--out", str(tmp_path / "demo"), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.slow
def test_gaussian_demo_without_open3d_skips_the_mesh_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "open3d", None)  # as on a machine whose libusb is missing
    summary = _run_demo(tmp_path / "gs", "--method", "gaussians3d", "--steps", "30")
    assert summary["method"] == "gaussians3d"
    assert list(summary["skipped"]) == ["extracting a mesh"]
    reason = summary["skipped"]["extracting a mesh"]
    assert "open3d" in reason and "pip install open3d" in reason
    assert "mesh" not in summary["files"] and "orbit_video" in summary["files"]
    out = capsys.readouterr().out
    assert sum(line.startswith("  skipped: ") for line in out.splitlines()) == 1 and "Traceback" not in out
    assert iio.imread(summary["files"]["orbit_video"]).shape == (4, 96, 96, 3)


def test_demo_refuses_an_unknown_method_and_bad_sizes(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--method", "nerf", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'nerf'" in capsys.readouterr().err
    assert main(["demo", "--size", "4", "--out", str(tmp_path / "x")]) == 2
    assert "--size must be at least 16" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written for a refused command
