"""benchmarks/gpu_check.py, the one-shot check a GPU session runs, dry-run on the CPU so that it
works the first time a GPU is lent (every part runs and reports; the native rasteriser agrees
with the exact torch backend)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == {"benchmark": "gpu_check", "device": "cpu", "failed": []}
    parts = {record["part"]: record for record in json.loads((tmp_path / "gpu_check.json").read_text())}
    assert set(parts) == {"environment", "rasterizer", "viewer_fps", "train_gaussians3d", "train_gaussians4d", "train_tensorf_vm", "einfield", "monocular_4d"}
    for case in parts["rasterizer"]["cases"]:
        assert case["alpha_max"] > 0.5 and case["max_abs_rgb"] < 2e-4 and case["max_abs_alpha"] < 2e-4
    for name in ("train_gaussians3d", "train_gaussians4d", "train_tensorf_vm"):
        assert parts[name]["test_psnr"] > 12.0 and parts[name]["it_per_s"] > 0
    einfield = parts["einfield"]
    assert 0 < einfield["metric_rel_l2"] < 1.0 and einfield["frame_s"] > 0 and einfield["it_per_s"] > 0
    for variant in ("defaults", "monocular"):
        run = parts["monocular_4d"][variant]
        assert run["test_psnr"] > 12.0 and run["gap_db"] == pytest.approx(run["train_psnr"] - run["test_psnr"], abs=2e-3)
