"""Frames per second of the viewer's render path (no window needed).

Renders through exactly what the viewer's render thread runs
(:func:`tensorfield.app.viewer.worker.render_request`, i.e. the engine's render service) on an
orbit of viewpoints, at the preview and full resolutions, for each model family present:

* TensoRF-VM on lego_100 at 160x160 (preview 0.5x = 80x80 and the viewer's default 0.25x =
  40x40), from a short run (trained here unless ``--run`` names one; cached in
  ``runs/viewer_bench_lego``), and the same frames marched round by round (``round_march``,
  with the fused march's speed-up over it);
* Strivec on lego_100 at the same resolutions and orbit, right after TensoRF (from
  ``--strivec-run`` or a ``strivec_small.yaml`` run trained here, cached in
  ``runs/viewer_bench_strivec``), with its frame-time ratio to TensoRF;
* 4D Gaussians (``gaussians4d``) at 320x240 and 640x480 with ``--gaussians`` Gaussians, when the
  rasteriser (``tensorfield.cuda.rasterize``) is present; the Gaussians are the model's random
  initialisation in the scene box (no training): a volumetric cloud of overlapping, mostly
  transparent Gaussians, a worst case for compositing;
* trained Gaussian runs named by ``--gaussian-run`` (3D or 4D; 4D at t = 0.5) at 320x240 and
  640x480, viewed on an orbit around their scene;
* with ``--device cuda`` (the default where CUDA is present), the Gaussians run on the GPU
  (gsplat) and the issue's GPU case is added: ``--gpu-gaussians`` (1M) random 4D Gaussians at
  1280x720. TensoRF stays on the CPU there unless its run was trained for CUDA.

Prints one JSON line.

    python benchmarks/viewer.py
    python benchmarks/viewer.py --run runs/lego --frames 20
    python benchmarks/viewer.py --gaussian-run runs/lego_3dgs --gaussian-run runs/dnerf_4d
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "lego_100"


def fps(model, camera_views, width: int, height: int, time_value, frames: int) -> dict:
    from tensorfield.app.viewer.worker import FrameRequest, render_request

    def request(i):
        return FrameRequest(camera_views[i % len(camera_views)], width, height, time_value, None, "rgb", (1.0, 1.0, 1.0))

    render_request(model, request(0))  # warm-up (kernel compilation, allocations)
    times = []
    for i in range(frames):
        tick = time.perf_counter()
        render_request(model, request(i))
        times.append(time.perf_counter() - tick)
    median = float(np.median(times))
    return {"width": width, "height": height, "fps": round(1.0 / median, 2), "ms_median": round(1000 * median, 2)}


def orbit_views(session, n: int = 12):
    views = []
    base = session.default_view()
    for i in range(n):
        views.append(base.orbit(2 * math.pi * i / n, 0.0))
    return views


def tensorf_entry(args) -> dict:
    from tensorfield.app.viewer.session import load_session
    from tensorfield.engine.checkpoint import latest_checkpoint
    from tensorfield.engine.config import load_config
    from tensorfield.engine.trainer import Trainer

    run = Path(args.run) if args.run else ROOT / "runs" / "viewer_bench_lego"
    if latest_checkpoint(run) is None:
        config = load_config(ROOT / "configs" / "tensorf_vm_small.yaml", [f"steps={args.steps}", "eval_every=0"])
        trainer = Trainer.from_config(config, run, data_path=args.data)
        trainer.train(progress=False, final_eval=False)
        trainer.close()
    session = load_session(run)
    views = orbit_views(session)
    model = session.model
    full = fps(model, views, 160, 160, None, args.frames)
    preview = fps(model, views, 80, 80, None, args.frames)
    default_preview = fps(model, views, 40, 40, None, args.frames)
    entry = {"family": "tensorf_vm", "scene": f"lego_100 ({session.trainer.step} steps)", "full": full, "preview_0.5": preview, "preview_0.25": default_preview}
    # A/B in the same process: the same frames marched round by round (no DenseDensity handed
    # to the marcher), against the fused inference march used above
    model._dense_density = lambda: None
    try:
        rounds = {"full": fps(model, views, 160, 160, None, args.frames), "preview_0.5": fps(model, views, 80, 80, None, args.frames)}
    finally:
        del model._dense_density
    entry["round_march"] = {
        **rounds,
        "fused_speedup_full": round(rounds["full"]["ms_median"] / full["ms_median"], 2),
        "fused_speedup_preview_0.5": round(rounds["preview_0.5"]["ms_median"] / preview["ms_median"], 2),
    }
    return entry


def strivec_entry(args, tensorf: dict) -> dict:
    """Strivec on lego_100 at the TensoRF entry's resolutions and orbit, right after it (same
    host, same load), with the ratio of its full-resolution frame time to TensoRF's."""
    from tensorfield.app.viewer.session import load_session
    from tensorfield.engine.checkpoint import latest_checkpoint
    from tensorfield.engine.config import load_config
    from tensorfield.engine.trainer import Trainer

    run = Path(args.strivec_run) if args.strivec_run else ROOT / "runs" / "viewer_bench_strivec"
    if latest_checkpoint(run) is None:
        config = load_config(ROOT / "configs" / "strivec_small.yaml", ["eval_every=0"])
        trainer = Trainer.from_config(config, run, data_path=args.data)
        trainer.train(progress=False, final_eval=False)
        trainer.close()
    session = load_session(run)
    views = orbit_views(session)
    full = fps(session.model, views, 160, 160, None, args.frames)
    return {
        "family": "strivec",
        "scene": f"lego_100 ({session.trainer.step} steps, {sum(session.model.num_tensors)} local tensors)",
        "full": full,
        "preview_0.5": fps(session.model, views, 80, 80, None, args.frames),
        "frame_time_vs_tensorf_full": round(full["ms_median"] / tensorf["full"]["ms_median"], 2),
    }


def random_gaussians4d(count: int, device: str):
    """The model's random initialisation: ``count`` 4D Gaussians in the box [-1, 1]^3, eval mode."""
    import torch
    from tensorfield.engine.config import load_config
    from tensorfield.engine.trainer import build_model
    from tensorfield.fields.base import SceneInfo

    info = SceneInfo(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]), near=0.1, far=10.0, is_dynamic=True)
    config = load_config(None, [f"init_points={count}"], method="gaussians4d")
    return build_model(config, info).to(device).eval()


def gaussians_entry(args) -> dict | None:
    if importlib.util.find_spec("tensorfield.cuda.rasterize") is None:
        return None
    from tensorfield.app.viewer.camera import ViewCamera

    model = random_gaussians4d(args.gaussians, args.device)
    base = ViewCamera.looking_at((0.0, -3.5, 1.2), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), fov_y=45.0)
    views = [base.orbit(2 * math.pi * i / 12, 0.0) for i in range(12)]
    entry = {
        "family": "gaussians4d",
        "device": args.device,
        "scene": f"{args.gaussians} random 4D Gaussians at t=0.5",
        "full": fps(model, views, 640, 480, 0.5, args.frames),
        "preview_0.5": fps(model, views, 320, 240, 0.5, args.frames),
    }
    if args.device == "cuda":  # the GPU target: 60 FPS at 1280x720 with 1M Gaussians
        del model
        large = random_gaussians4d(args.gpu_gaussians, args.device)
        entry["gpu_1280x720"] = {"gaussians": args.gpu_gaussians, **fps(large, views, 1280, 720, 0.5, args.frames)}
    return entry


def trained_gaussians_entry(run: str, frames: int, device: str) -> dict:
    """A trained Gaussian run (3D or 4D) through the same render path, mid-sequence for 4D."""
    from tensorfield.app.viewer.session import load_session

    session = load_session(run, device=device)
    views = orbit_views(session)
    time_value = 0.5 if session.is_dynamic else None
    return {
        "family": session.method,
        "device": device,
        "scene": f"{run} ({session.model.num_gaussians} trained Gaussians{', t=0.5' if session.is_dynamic else ''})",
        "full": fps(session.model, views, 640, 480, time_value, frames),
        "preview_0.5": fps(session.model, views, 320, 240, time_value, frames),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--run", default=None, help="an existing TensoRF run to view (default: train one)")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the TensoRF run it trains")
    parser.add_argument("--strivec-run", default=None, help="an existing Strivec run (default: train strivec_small.yaml)")
    parser.add_argument("--no-strivec", action="store_true", help="skip the Strivec entry")
    parser.add_argument("--frames", type=int, default=12, help="timed frames per resolution")
    parser.add_argument("--gaussians", type=int, default=100_000, help="random 4D Gaussians of the untrained scene")
    parser.add_argument("--gaussian-run", action="append", default=[], help="also a trained gaussians3d/4d run (repeatable)")
    parser.add_argument("--gpu-gaussians", type=int, default=1_000_000, help="random 4D Gaussians of the 1280x720 GPU case")
    parser.add_argument("--device", default=None, help="device of the Gaussian models (default: cuda if present, else cpu)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    if args.threads:
        torch.set_num_threads(args.threads)
    entries = [tensorf_entry(args)]
    if not args.no_strivec:
        entries.append(strivec_entry(args, entries[0]))
    gaussians = gaussians_entry(args)
    entries.append(gaussians if gaussians is not None else {"family": "gaussians4d", "skipped": "tensorfield.cuda.rasterize not present yet"})
    entries += [trained_gaussians_entry(run, args.frames, args.device) for run in args.gaussian_run]
    print(json.dumps({"benchmark": "viewer_render_service", "device": args.device, "threads": torch.get_num_threads(), "families": entries}))


if __name__ == "__main__":
    main()
