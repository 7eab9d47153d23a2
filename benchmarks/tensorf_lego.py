"""TensoRF VM and CP on the real lego_100 views at a CPU budget.

Prints one JSON line per model: test PSNR and SSIM, training seconds, iterations per second,
CPU seconds per step (user + system over all threads: steadier than wall time when other jobs
share the machine), peak resident memory, parameter bytes and checkpoint size. Each model trains in its own
subprocess so that its peak memory is its own.

    python benchmarks/tensorf_lego.py                       # VM and CP, the *_small configs
    python benchmarks/tensorf_lego.py --models vm --steps 300 --threads 2

The reference figures (the official TensoRF code on the same data, steps and machine) are in
the README; ``REFERENCES.md`` describes how they were taken.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "lego_100"


def run_one(model: str, data: str, steps: int | None, threads: int | None, overrides: list[str]) -> dict:
    import torch
    from tensorfield.engine.config import load_config
    from tensorfield.engine.trainer import Trainer

    if threads:
        torch.set_num_threads(threads)
    config_file = ROOT / "configs" / f"tensorf_{model}_small.yaml"
    extra = [f"steps={steps}"] if steps else []
    config = load_config(config_file, extra + ["checkpoint_every=100000", "keep_checkpoints=1"] + overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer.from_config(config, Path(tmp) / "run", data_path=data, device="cpu")
        cpu_start = time.process_time()
        summary = trainer.train(progress=False, final_eval=False)
        cpu_seconds = time.process_time() - cpu_start  # includes the final checkpoint write
        summary["eval"] = trainer.evaluate("test", save_renders=False)
        trainer.close()
        checkpoint = Path(summary["checkpoint"]) if summary.get("checkpoint") else None
        checkpoint_mb = checkpoint.stat().st_size / 2**20 if checkpoint and checkpoint.exists() else None
    evaluation = summary.get("eval") or {}
    params = sum(p.numel() * p.element_size() for p in trainer.model.parameters())
    return {
        "benchmark": "tensorf_lego",
        "model": f"tensorf_{model}",
        "data": Path(data).name,
        "steps": summary["steps"],
        "batch_size": config.batch_size,
        "test_psnr": round(evaluation.get("psnr", float("nan")), 3),
        "test_ssim": round(evaluation.get("ssim", float("nan")), 4),
        "train_seconds": round(summary["train_s"], 1),
        "seconds_per_step": round(summary["train_s"] / max(summary["steps"], 1), 4),
        "iterations_per_second": round(summary["it_per_s"], 3),
        "cpu_seconds_per_step": round(cpu_seconds / max(summary["steps"], 1), 4),
        "render_seconds_per_view": round(evaluation.get("render_s", float("nan")), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "param_mb": round(params / 2**20, 2),
        "checkpoint_mb": round(checkpoint_mb, 2) if checkpoint_mb else None,
        "threads": torch.get_num_threads(),
        "device": "cpu",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Blender-layout dataset (default: ../shared/data/lego_100)")
    parser.add_argument("--models", nargs="+", default=["vm", "cp"], choices=["vm", "cp"])
    parser.add_argument("--steps", type=int, default=None, help="override the configs' steps (600)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.data, args.steps, args.threads, args.overrides)), flush=True)
        return
    for model in args.models:
        command = [sys.executable, __file__, "--child", model, "--data", args.data]
        if args.steps:
            command += ["--steps", str(args.steps)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        result = subprocess.run(command + args.overrides, capture_output=True, text=True)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            print(json.dumps({"benchmark": "tensorf_lego", "model": f"tensorf_{model}", "error": result.stderr.strip().splitlines()[-1:]}))
        else:
            print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
