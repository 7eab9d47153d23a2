"""Strivec beside TensoRF-VM and -CP on the real lego_100 views, same steps, one run.

Trains ``configs/strivec_small.yaml``, ``tensorf_vm_small.yaml`` and ``tensorf_cp_small.yaml``
back to back (each in its own subprocess, so that its peak memory is its own) and prints ONE
JSON line: per model test PSNR and SSIM, parameter count, training seconds, seconds and CPU
seconds per step, peak resident memory, render FPS of a full test view and the number of local
tensors (Strivec), then Strivec's ratios to TensoRF-VM. Hosts differ and the CPU may be shared:
compare the ratios of one run, not figures of different runs.

    python benchmarks/strivec_lego.py --data PATH/lego_100
    python benchmarks/strivec_lego.py --data PATH/lego_100 --steps 300 --models strivec vm
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"strivec": "strivec_small.yaml", "vm": "tensorf_vm_small.yaml", "cp": "tensorf_cp_small.yaml"}
NAMES = {"strivec": "strivec", "vm": "tensorf_vm", "cp": "tensorf_cp"}


class StepTimer:
    """Wall time of every training step (a trainer callback)."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self._tick = 0.0

    def before_step(self, trainer, step: int) -> None:
        self._tick = time.perf_counter()

    def after_step(self, trainer, step: int, output) -> None:
        self.seconds[step] = time.perf_counter() - self._tick

    def mean_after(self, first: int) -> float:
        values = [v for step, v in self.seconds.items() if step >= first]
        return sum(values) / max(len(values), 1)


def run_one(model: str, data: str, steps: int | None, threads: int | None, overrides: list[str]) -> dict:
    import torch
    from tensorfield.engine.config import load_config
    from tensorfield.engine.trainer import Trainer

    if threads:
        torch.set_num_threads(threads)
    extra = [f"steps={steps}"] if steps else []
    config = load_config(ROOT / "configs" / CONFIGS[model], extra + ["checkpoint_every=100000", "keep_checkpoints=1"] + overrides)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer.from_config(config, Path(tmp) / "run", data_path=data, device="cpu")
        cpu_start = time.process_time()
        summary = trainer.train(progress=False, final_eval=False, callbacks=[timer])
        cpu_seconds = time.process_time() - cpu_start
        evaluation = trainer.evaluate("test", save_renders=False)
        trainer.close()
    net = trainer.model
    result = {
        "model": NAMES[model],
        "steps": summary["steps"],
        "test_psnr": round(evaluation.get("psnr", float("nan")), 3),
        "test_ssim": round(evaluation.get("ssim", float("nan")), 4),
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "train_seconds": round(summary["train_s"], 1),
        "seconds_per_step": round(summary["train_s"] / max(summary["steps"], 1), 4),
        "cpu_seconds_per_step": round(cpu_seconds / max(summary["steps"], 1), 4),
        # the second half of the run: every model at its final size (Strivec: fine phase, vectors upsampled)
        "seconds_per_step_second_half": round(timer.mean_after(summary["steps"] // 2), 4),
        "render_fps": round(1.0 / evaluation["render_s"], 3) if evaluation.get("render_s") else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(),
    }
    if model == "strivec":
        result["local_tensors"] = net.num_tensors
        result["vector_cells"] = net.lengths
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="Blender-layout dataset (lego_100: 80 train / 20 test views at 100x100)")
    parser.add_argument("--models", nargs="+", default=["strivec", "vm", "cp"], choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=None, help="override the configs' steps (600)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for Strivec's config")
    args = parser.parse_args()
    if args.child:
        overrides = args.overrides if args.child == "strivec" else []
        print(json.dumps(run_one(args.child, args.data, args.steps, args.threads, overrides)), flush=True)
        return
    results = {}
    for model in args.models:
        command = [sys.executable, __file__, "--child", model, "--data", args.data]
        if args.steps:
            command += ["--steps", str(args.steps)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        done = subprocess.run(command + args.overrides, capture_output=True, text=True, env=os.environ.copy())
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            results[NAMES[model]] = {"error": tail[0]}
        else:
            results[NAMES[model]] = json.loads(lines[-1])
    record = {"benchmark": "strivec_lego", "data": Path(args.data).name, "device": "cpu", "models": results}
    strivec, vm = results.get("strivec", {}), results.get("tensorf_vm", {})
    if "test_psnr" in strivec and "test_psnr" in vm:
        record["strivec_vs_vm"] = {
            "psnr_difference_db": round(strivec["test_psnr"] - vm["test_psnr"], 3),
            "parameter_ratio": round(strivec["parameters"] / vm["parameters"], 3),
            "seconds_per_step_ratio": round(strivec["seconds_per_step"] / vm["seconds_per_step"], 3),
            "cpu_seconds_per_step_ratio": round(strivec["cpu_seconds_per_step"] / vm["cpu_seconds_per_step"], 3),
            "seconds_per_step_second_half_ratio": round(strivec["seconds_per_step_second_half"] / vm["seconds_per_step_second_half"], 3),
            "render_fps_ratio": round(strivec["render_fps"] / vm["render_fps"], 3) if strivec.get("render_fps") and vm.get("render_fps") else None,
        }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
