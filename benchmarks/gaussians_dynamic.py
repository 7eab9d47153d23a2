"""4D Gaussians vs a static 3DGS lower bound on the built-in dynamic synthetic scene.

The scene (``tensorfield.datasets.synthetic.make_scene(kind="dynamic")``: moving, spinning and
appearing/disappearing objects) has training views at random times and test views from other
directions at held-out, evenly spaced times, so the test PSNR measures both novel views and
novel times. Both models train with the same schedule on the same frames; the static model sees
the same images but has no time axis, so it is the lower bound a dynamic model must beat. The
4D run also writes a time-sweep video (``time_sweep.mp4``: test camera 0, time 0 -> 1) into its
run directory.

``--layout n3v`` runs the same comparison on multi-view video instead: the scene filmed by a
forward-facing rig (:func:`tensorfield.datasets.synthetic.make_video_scene`, N3V layout:
``poses_bounds.npy`` + ``camXX.mp4``, decoded by the N3V loader), every frame of cameras 1..n-1
for training and the held-out ``cam00`` (the end of the rig's arc: a novel view, extrapolated)
at every frame for testing. The videos have no alpha, so both models train on white, the
videos' background.

Prints one JSON line per model and a summary line. Usage::

    python benchmarks/gaussians_dynamic.py [--steps 600] [--resolution 48] [--out runs/dynamic_bench]
    python benchmarks/gaussians_dynamic.py --layout n3v --steps 1000 --resolution 64
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from tensorfield.datasets.synthetic import make_scene, make_video_scene
from tensorfield.engine.config import load_config
from tensorfield.engine.render import CameraPath, apply_time, render_path
from tensorfield.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def overrides(steps: int, init_points: int) -> list[str]:
    """One schedule for both models, scaled to ``steps``."""
    return [
        f"steps={steps}", f"init_points={init_points}", "batch_size=2",
        f"sh_increase_interval={max(steps // 6, 1)}",
        f"densify_from={steps // 8}", f"densify_until={steps * 3 // 4}", f"densify_interval={max(steps // 30, 1)}",
        f"opacity_reset_interval={steps * 10}", "max_gaussians=30000",
        f"checkpoint_every={steps}", "keep_checkpoints=1", "log_every=50", "eval_max_images=0",
    ]


def run(method: str, data: Path, out: Path, steps: int, init_points: int, backend: str, extra: list[str]) -> tuple[dict, Trainer]:
    config_file = ROOT / "configs" / ("gaussians4d_small.yaml" if method == "gaussians4d" else "gaussians3d_small.yaml")
    config = load_config(config_file, overrides(steps, init_points) + [f"backend={backend}", *extra])
    trainer = Trainer.from_config(config, out / method, data_path=data, device="cpu")
    start = time.perf_counter()
    summary = trainer.train(progress=False, final_eval=False)
    seconds = time.perf_counter() - start
    evaluation = trainer.evaluate("test", save_renders=True)
    result = {
        "benchmark": "gaussians_dynamic",
        "model": method,
        "steps": summary["steps"],
        "gaussians": int(trainer.model.means.shape[0]),
        "test_psnr": round(evaluation["psnr"], 3),
        "test_ssim": round(evaluation["ssim"], 4),
        "train_seconds": round(seconds, 1),
        "render_seconds_per_view": round(evaluation["render_s"], 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "backend": backend,
    }
    return result, trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--resolution", type=int, default=48)
    parser.add_argument("--init-points", type=int, default=3000)
    parser.add_argument("--backend", default="auto", help="rasteriser backend (auto, torch, gsplat)")
    parser.add_argument("--layout", choices=("blender", "n3v"), default="blender", help="views at random times (D-NeRF layout) or multi-view video (N3V layout)")
    parser.add_argument("--cameras", type=int, default=5, help="n3v: cameras of the rig (cam00 is held out)")
    parser.add_argument("--frames", type=int, default=12, help="n3v: frames per video")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for both models (repeatable), e.g. rigid_weight=1.0")
    parser.add_argument("--out", type=Path, default=None, help="default runs/dynamic_bench (runs/dynamic_bench_n3v)")
    args = parser.parse_args()
    args.out = args.out or ROOT / "runs" / ("dynamic_bench" if args.layout == "blender" else "dynamic_bench_n3v")
    if args.layout == "n3v":
        data = make_video_scene(args.out / "data", n_cameras=args.cameras, n_frames=args.frames, resolution=args.resolution)
        extra = ["background=white"]
    else:
        data = make_scene(args.out / "data", kind="dynamic", resolution=args.resolution, n_train=60, n_test=8, n_val=2)
        extra = []
    results = {}
    for method in ("gaussians4d", "gaussians3d"):
        result, trainer = run(method, data, args.out, args.steps, args.init_points, args.backend, extra + args.set)
        result["layout"] = args.layout
        result["overrides"] = args.set
        results[method] = result
        print(json.dumps(result), flush=True)
        if method == "gaussians4d":
            test = trainer.data.split_cameras()["test"]
            sweep = apply_time(CameraPath(test[[0] * 30]), time_range=(0.0, 1.0))
            render_path(trainer.model, sweep, trainer.data.background_color(), args.out / method / "time_sweep.mp4", fps=15, depth=False, progress=False)
        trainer.close()
    print(json.dumps({
        "benchmark": "gaussians_dynamic",
        "layout": args.layout,
        "psnr_4d_minus_static": round(results["gaussians4d"]["test_psnr"] - results["gaussians3d"]["test_psnr"], 3),
        "time_sweep": str(args.out / "gaussians4d" / "time_sweep.mp4"),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
