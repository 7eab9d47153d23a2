"""4D Gaussians vs a static 3DGS lower bound on monocular dynamic scenes: generalisation in time.

Scenes (``--scenes``, :func:`tensorfield.datasets.synthetic.make_scene`): the fast-motion ones
(``orbit``: a sphere circles the centre once over the clip, a cube turns once; ``cross``: a sphere
crosses the scene within a fifth of the clip; ``spin``: full rotations in place; ``appear``: objects
appearing and vanishing), textured, filmed as a monocular video (60 training frames, frame ``k`` at
``k / 59``, each from its own random upper-hemisphere camera), and the project's older ``dynamic``
scene (random training times). Test views lie on a held-out orbit at held-out times
``(k + 0.5) / n``, so test PSNR measures novel views at novel times. Both models train with the
same schedule on the same frames; the static model has no time axis, the lower bound a dynamic
model must beat. Each scene runs at every step count of ``--steps``, so overfitting shows.

Per run (one JSON line): train and test PSNR, the train - test gap, the number of Gaussians, and
for 4D the diagnostics of issue 17: the temporal scales ``sigma_t`` (quantiles, in training-frame
spacings), how many Gaussians are alive (temporal marginal above the render threshold) at each
test time, and each test view's PSNR against its time's distance to the nearest training frame
(``per_view``); the colour ablation (test PSNR with the view-dependent SH bands, then the
temporal Fourier colour terms, switched off: ``test_psnr_sh0``, ``test_psnr_time0``); and, on
the generator's scenes, two probes whose ground truth the generator renders: training cameras at
unseen times (``probe_novel_time_psnr``) and test cameras at the nearest training time
(``probe_novel_view_psnr``), which say whether the gap comes from novel views or novel times. A
summary line per scene and step count gives 4D minus static.

``--layout n3v`` runs the older comparison on multi-view video instead: the dynamic scene filmed by
a forward-facing rig (:func:`tensorfield.datasets.synthetic.make_video_scene`, N3V layout), every
frame of cameras 1..n-1 for training and the held-out ``cam00`` at every frame for testing.

Usage::

    python benchmarks/gaussians_dynamic.py                                  # 4 scenes x (1000, 2000) steps, 64^2
    python benchmarks/gaussians_dynamic.py --scenes orbit --steps 2000 --set rigid_weight=1
    python benchmarks/gaussians_dynamic.py --layout n3v --steps 1000 --resolution 64
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch
from tensorfield.datasets.synthetic import make_scene, make_video_scene
from tensorfield.engine.config import load_config
from tensorfield.engine.render import CameraPath, apply_time, render_path
from tensorfield.engine.trainer import Trainer
from tensorfield.fields.gaussian_math import temporal_variance
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]


def overrides(steps: int, init_points: int, schedule: str = "scaled") -> list[str]:
    """One schedule for both models: ``scaled`` to ``steps`` (the benchmark's), or the ``config``'s
    own (``configs/gaussians*_small.yaml`` with only ``steps`` set: what a CLI user gets)."""
    bookkeeping = [f"checkpoint_every={steps}", "keep_checkpoints=1", "log_every=50", "eval_max_images=0"]
    if schedule == "config":
        return [f"steps={steps}", *bookkeeping]
    return [
        f"steps={steps}", f"init_points={init_points}", "batch_size=2",
        f"sh_increase_interval={max(steps // 6, 1)}",
        f"densify_from={steps // 8}", f"densify_until={steps * 3 // 4}", f"densify_interval={max(steps // 30, 1)}",
        f"opacity_reset_interval={steps * 10}", "max_gaussians=30000", *bookkeeping,
    ]


def run(method: str, data: Path, out: Path, steps: int, init_points: int, backend: str, extra: list[str], schedule: str = "scaled") -> tuple[dict, Trainer]:
    config_file = ROOT / "configs" / ("gaussians4d_small.yaml" if method == "gaussians4d" else "gaussians3d_small.yaml")
    config = load_config(config_file, overrides(steps, init_points, schedule) + [f"backend={backend}", *extra])
    trainer = Trainer.from_config(config, out / method, data_path=data, device="cpu")
    start = time.perf_counter()
    summary = trainer.train(progress=False, final_eval=False)
    seconds = time.perf_counter() - start
    evaluation = trainer.evaluate("test", save_renders=True)
    training = trainer._evaluate("train", save_renders=False, write_json=False)
    result = {
        "benchmark": "gaussians_dynamic",
        "model": method,
        "steps": summary["steps"],
        "gaussians": int(trainer.model.means.shape[0]),
        "train_psnr": round(training["psnr"], 3),
        "test_psnr": round(evaluation["psnr"], 3),
        "gap_db": round(training["psnr"] - evaluation["psnr"], 3),
        "test_ssim": round(evaluation["ssim"], 4),
        "train_seconds": round(seconds, 1),
        "render_seconds_per_view": round(evaluation["render_s"], 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "backend": backend,
    }
    if method == "gaussians4d":
        result.update(temporal_diagnostics(trainer, evaluation))
        result.update(colour_ablation(trainer))
    if (data / "scene.json").exists() and json.loads((data / "scene.json").read_text())["kind"] != "static":
        result.update(probe_views(trainer, data))
    return result, trainer


@torch.no_grad()
def temporal_diagnostics(trainer: Trainer, evaluation: dict) -> dict:
    """Issue 17's evidence: temporal scales, Gaussians alive per test time, PSNR vs time distance."""
    model = trainer.model
    cameras = trainer.data.split_cameras()
    train_times = np.sort(cameras["train"].times.double().numpy())
    test_times = cameras["test"].times.double().numpy()
    spacing = float(np.median(np.diff(train_times))) if len(train_times) > 1 else 1.0
    params = model.params()
    # the marginal temporal spread sqrt(Sigma_tt) of the rotated 4D covariance (not the scale exp(log_scale_t))
    std_t = temporal_variance(model.producer.scales_4d(params), params["quats"], params["quats_right"]).sqrt()
    sigma_t = std_t.double().numpy() / float(model.config.time_duration)
    alive = []
    for t in test_times:
        marginal = torch.exp(-0.5 * ((model.times - model.scene_time(float(t))) / std_t) ** 2)
        alive.append(int((marginal > model.config.temporal_threshold).sum()))
    per_view = [
        {"time": round(float(t), 4), "frames_to_nearest": round(float(np.abs(train_times - t).min() / spacing), 3), "psnr": round(record["psnr"], 2)}
        for t, record in zip(test_times, evaluation["per_image"])
    ]
    quantiles = {f"q{int(q * 100)}": round(float(np.quantile(sigma_t / spacing, q)), 3) for q in (0.1, 0.25, 0.5, 0.75, 0.9)}
    return {
        "frame_spacing": round(spacing, 5),
        "sigma_t_in_frames": quantiles,
        "sigma_t_below_one_frame": round(float((sigma_t < spacing).mean()), 3),
        "alive_per_test_time": {"min": min(alive), "median": int(np.median(alive)), "max": max(alive)},
        "per_view": per_view,
    }


@torch.no_grad()
def colour_ablation(trainer: Trainer) -> dict:
    """Test PSNR with the view-dependent SH bands and the temporal Fourier colour terms switched off.

    If the held-out views get *better* without a colour term, the model used that term to fit
    each training camera rather than the scene (each instant is seen from one camera only).
    """
    model = trainer.model
    sh, td = model.active_sh_degree, model.active_time_degree
    out = {}
    try:
        for name, (degree, time_degree) in {"test_psnr_sh0": (0, td), "test_psnr_time0": (sh, 0)}.items():
            model.active_sh_degree, model.active_time_degree = degree, time_degree
            out[name] = round(trainer._evaluate("test", save_renders=False, write_json=False)["psnr"], 3)
    finally:
        model.active_sh_degree, model.active_time_degree = sh, td
    return out


@torch.no_grad()
def probe_views(trainer: Trainer, data: Path, count: int = 12) -> dict:
    """Separate novel *views* from novel *times*: PSNR of ``count`` extra views, ground truth
    rendered by the scene generator (:func:`tensorfield.datasets.synthetic.render_view`).

    * ``probe_novel_time``: training camera ``k`` at the time half a frame after its own
      (before, for the last frame): a seen viewpoint at an unseen time.
    * ``probe_novel_view``: test camera ``j`` at the training frame's time nearest to its own: an
      unseen viewpoint at a seen time.

    With train PSNR (seen view, seen time) and test PSNR (unseen both), this says which of the two
    the train - test gap comes from. ``{train,test}_psnr_{moving,static}_pixels`` split the error
    of ``count`` views of each split between the pixels of objects that move, turn, appear or
    vanish (their silhouettes at the view's time, grown by one pixel) and the rest.
    """
    from tensorfield.datasets.primitives import Light, Primitive
    from tensorfield.datasets.synthetic import render_view
    from tensorfield.engine.metrics import psnr
    from tensorfield.fields.base import RenderRequest

    description = json.loads((data / "scene.json").read_text())
    primitives = [Primitive.from_json(item) for item in description["primitives"]]
    light = Light.from_json(description["light"])
    resolution = int(description["resolution"])
    focal = 0.5 * resolution / np.tan(0.5 * float(description["camera_angle_x"]))
    background = trainer.data.background_color()
    cameras = trainer.data.split_cameras()
    frames = {split: json.loads((data / f"transforms_{split}.json").read_text())["frames"] for split in ("train", "test")}
    train_times = np.array([frame["time"] for frame in frames["train"]])
    spacing = float(np.median(np.diff(np.sort(train_times))))
    flip = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL <-> OpenCV (its own inverse)

    def truth(split: str, index: int, time: float) -> Tensor:
        pose = torch.as_tensor((np.array(frames[split][index]["transform_matrix"]) @ flip)[:3], dtype=torch.float64)
        rgba, _ = render_view(primitives, pose, resolution, focal, time, light)
        rgba = np.round(np.clip(rgba, 0.0, 1.0) * 255.0) / 255.0  # as the PNGs
        return torch.as_tensor(rgba[..., :3] * rgba[..., 3:] + background.double().numpy() * (1.0 - rgba[..., 3:])).float()

    def score(split: str, index: int, time: float) -> float:
        output = trainer.model.render_view(RenderRequest(cameras[split], index, background, time=time))
        return psnr(output.rgb.float().clamp(0.0, 1.0).cpu(), truth(split, index, time))

    loaded = trainer.data.split("test").images[0].float().cpu()
    mismatch = float((truth("test", 0, float(frames["test"][0]["time"])) - loaded).abs().max())
    if mismatch > 2.0 / 255.0:  # the probes' ground truth must be the data's own rendering
        raise RuntimeError(f"{data}: probe ground truth differs from test image 0 by {mismatch:.3f}")

    def moving(item: Primitive) -> bool:
        return len(item.path) > 1 or item.spin != 0.0 or tuple(item.visible) != (0.0, 1.0)

    movers = [item for item in primitives if moving(item)]

    def region_errors(split: str, index: int, time: float) -> tuple[float, float, int]:
        """Squared-error sums on pixels of moving objects (their silhouette grown by a pixel) and
        on the rest, and the moving pixel count, of camera ``index`` of ``split`` at its own time."""
        pose = torch.as_tensor((np.array(frames[split][index]["transform_matrix"]) @ flip)[:3], dtype=torch.float64)
        alpha = render_view(movers, pose, resolution, focal, time, light)[0][..., 3] if movers else np.zeros((resolution, resolution))
        mask = torch.as_tensor(alpha > 0.0)
        mask = torch.nn.functional.max_pool2d(mask[None, None].float(), 3, 1, 1)[0, 0] > 0
        output = trainer.model.render_view(RenderRequest(cameras[split], index, background, time=time))
        error = ((output.rgb.float().clamp(0.0, 1.0).cpu() - trainer.data.split(split).images[index].float().cpu()) ** 2).mean(-1)
        return float(error[mask].sum()), float(error[~mask].sum()), int(mask.sum())

    regions = {}
    for split in ("train", "test"):
        indices = np.unique(np.round(np.linspace(0, len(frames[split]) - 1, count)).astype(int))
        totals = np.zeros(3)
        for index in indices:
            totals += region_errors(split, int(index), float(frames[split][index]["time"]))
        pixels = len(indices) * resolution * resolution
        if totals[2] > 0:  # (the "still" control has no moving pixels)
            regions[f"{split}_psnr_moving_pixels"] = round(float(-10 * np.log10(totals[0] / totals[2])), 3)
        regions[f"{split}_psnr_static_pixels"] = round(float(-10 * np.log10(totals[1] / max(pixels - totals[2], 1))), 3)
    regions["moving_pixel_fraction"] = round(float(totals[2] / pixels), 4)

    novel_time, novel_view = [], []
    for k in np.unique(np.round(np.linspace(0, len(train_times) - 1, count)).astype(int)):
        shifted = train_times[k] + (0.5 if k + 1 < len(train_times) else -0.5) * spacing
        novel_time.append(score("train", int(k), float(shifted)))
    test_times = np.array([frame["time"] for frame in frames["test"]])
    for j, t in enumerate(test_times[:count]):
        novel_view.append(score("test", j, float(train_times[np.abs(train_times - t).argmin()])))
    return {"probe_novel_time_psnr": round(float(np.mean(novel_time)), 3), "probe_novel_view_psnr": round(float(np.mean(novel_view)), 3), **regions}


SCENES = ("orbit", "cross", "spin", "appear", "still")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="+", default=list(SCENES), help=f"scenes of make_scene ({', '.join(SCENES)}, dynamic)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 2000], help="step counts (each scene runs at each)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--init-points", type=int, default=3000)
    parser.add_argument("--schedule", choices=("scaled", "config"), default="scaled", help="scaled: the benchmark's schedule scaled to --steps (init points, densification window, no opacity reset, 30k Gaussians at most); config: the small configs' own, only steps set")
    parser.add_argument("--models", nargs="+", default=["gaussians4d", "gaussians3d"], choices=("gaussians4d", "gaussians3d"))
    parser.add_argument("--backend", default="auto", help="rasteriser backend (auto, torch, gsplat)")
    parser.add_argument("--layout", choices=("blender", "n3v"), default="blender", help="monocular D-NeRF-layout scenes, or multi-view video (N3V layout)")
    parser.add_argument("--cameras", type=int, default=5, help="n3v: cameras of the rig (cam00 is held out)")
    parser.add_argument("--frames", type=int, default=12, help="n3v: frames per video")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (object jitter, cameras)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for both models (repeatable), e.g. rigid_weight=1.0")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--out", type=Path, default=None, help="default runs/dynamic_bench (runs/dynamic_bench_n3v)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    args.out = args.out or ROOT / "runs" / ("dynamic_bench" if args.layout == "blender" else "dynamic_bench_n3v")
    scenes = ["n3v"] if args.layout == "n3v" else args.scenes
    for scene in scenes:
        if args.layout == "n3v":
            data = make_video_scene(args.out / "data", n_cameras=args.cameras, n_frames=args.frames, resolution=args.resolution)
            extra = ["background=white"]
        else:
            data = make_scene(args.out / scene / "data", kind=scene, resolution=args.resolution, n_train=60, n_test=12, n_val=2, seed=args.seed)
            extra = []
        for steps in args.steps:
            results = {}
            for method in args.models:
                run_dir = args.out / scene / f"{steps}"
                result, trainer = run(method, data, run_dir, steps, args.init_points, args.backend, extra + args.set, args.schedule)
                result.update(scene=scene, layout=args.layout, overrides=args.set, schedule=args.schedule)
                results[method] = result
                print(json.dumps(result), flush=True)
                if method == "gaussians4d":
                    test = trainer.data.split_cameras()["test"]
                    sweep = apply_time(CameraPath(test[[0] * 30]), time_range=(0.0, 1.0))
                    render_path(trainer.model, sweep, trainer.data.background_color(), run_dir / method / "time_sweep.mp4", fps=15, depth=False, progress=False)
                trainer.close()
            summary = {"benchmark": "gaussians_dynamic", "scene": scene, "steps": steps, "torch": torch.__version__, "threads": torch.get_num_threads()}
            for method, result in results.items():
                summary[f"{method}_test_psnr"] = result["test_psnr"]
                summary[f"{method}_gap_db"] = result["gap_db"]
            if len(results) == 2:
                summary["psnr_4d_minus_static"] = round(results["gaussians4d"]["test_psnr"] - results["gaussians3d"]["test_psnr"], 3)
            print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
