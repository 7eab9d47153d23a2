"""benchmarks/migs.py in a tiny configuration (about 5 s): it runs end to end as a script, prints
one JSON line, and its parameter counts follow the CP and full-rank table formulas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "migs.py"


def test_tiny_benchmark_run():
    args = ["--steps", "6", "--fit-steps", "2", "--gaussians", "60", "--identities", "2", "--resolution", "16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    attributes = result["separate"]["rank"]  # full rank = the number of attributes (SH degree 1: 23)
    assert result["data"]["held_out"] == "subject_1" and result["data"]["frames_per_identity"]["train"] == 24
    # one trained identity: MIGS's CP factors A [1, R], B [F, R], C [N, R]; the separate avatar's rank F
    assert result["migs"]["tensor_params"] == result["migs"]["rank"] * (1 + attributes + 60)
    assert result["separate"]["tensor_params"] == attributes * (1 + attributes + 60)
    assert result["separate"]["dense_table_params"] == attributes * 60
    assert result["separate"]["steps_each"] == 6
    assert result["unseen_identity"]["trainable_params"] == result["migs"]["rank"]  # only its row
    for table in (result["migs"]["novel_pose"], result["separate"]["novel_pose"]):
        assert set(table) == {"subject_0"} and 5.0 < table["subject_0"]["psnr"] < 60.0
