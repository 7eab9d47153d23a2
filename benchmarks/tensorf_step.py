"""Benchmark of one TensoRF training step on CPU (forward + backward + Adam, 1024 rays).

Scene: ``../shared/data/lego_100`` (real NeRF-Synthetic lego at 100x100, white background) if it
exists, else a synthetic stand-in (an opaque coloured ball seen by 64 orbit cameras). The model is
TensoRF-VM-192 (``--mode cp`` for CP-384) with the CPU schedule of ``configs/tensorf_vm_small.yaml``
(64^3 -> 150^3 voxels, upsampling at 40, 60, 80, 110, 140, alpha masks at 40 and 80).

Phases (each timed over ``--steps`` steps after 2 warm-up steps):

* ``grid64_nomask``: steps 10-39 of a fresh run at 64^3 (density is forming; no alpha mask yet);
* ``grid64_mask``: the step-40 model after its first alpha mask (box shrunk, grid cropped);
* ``grid150_mask``: that model upsampled to 150^3 voxels on the shrunk box, mask rebuilt;
* ``grid150_nomask``: the step-40 model upsampled to 150^3 on the full box, no mask.

``--full`` also trains the whole 600-step schedule like the trainer does (ray filtering, learning
rate schedule, optimiser rebuilds) and reports the mean seconds per step and the mean PSNR of the
test views; the official code takes 1.35 s/step on this 2-core machine (30.37 dB on its split).

Prints one JSON line. Usage::

    python benchmarks/tensorf_step.py [--steps 20] [--threads N] [--mode vm|cp] [--full] [--data DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from pathlib import Path

import torch
from tensorfield.datasets.cameras import Cameras, orbit_poses
from tensorfield.engine.optim import apply_lr_schedule, build_optimizer
from tensorfield.fields.base import RayBatch, RenderRequest, SceneInfo
from tensorfield.fields.tensorf import TensoRF, TensoRFConfig, voxels_to_resolution

LEGO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lego_100"


def small_config(mode: str) -> TensoRFConfig:
    """The CPU schedule (configs/tensorf_*_small.yaml)."""
    config = TensoRFConfig(
        method=f"tensorf_{mode}",
        steps=600,
        batch_size=1024,
        voxels_init=262144,
        voxels_final=3375000,
        upsample_steps=[40, 60, 80, 110, 140],
        alpha_mask_steps=[40, 80],
        weight_threshold=1e-3,
    )
    if mode == "cp":
        config.voxels_final = 3375000
        config.l1_weight_initial = config.l1_weight_rest = 1e-5
    return config


class Rays:
    """All training rays of a scene, walked in a random permutation per epoch (like the trainer's RaySource)."""

    def __init__(self, cameras: Cameras, images: torch.Tensor, background: torch.Tensor):
        origins, directions = cameras.generate_all_rays()
        self.origins = origins.reshape(-1, 3)
        self.directions = directions.reshape(-1, 3)
        self.rgb = images.reshape(-1, 3)
        self.background = background
        self.active = torch.arange(self.rgb.shape[0])
        self.order, self.cursor = None, 0

    def filter(self, model: TensoRF) -> None:
        keep = model.ray_filter(self.origins[self.active], self.directions[self.active])
        self.active = self.active[keep]
        self.order = None

    def sample(self, n: int, generator: torch.Generator) -> RayBatch:
        if self.order is None or self.cursor + n > self.order.numel():
            self.order, self.cursor = torch.randperm(self.active.numel(), generator=generator), 0
        ids = self.active[self.order[self.cursor : self.cursor + n]]
        self.cursor += n
        return RayBatch(self.origins[ids], self.directions[ids], self.rgb[ids], torch.full((n,), float("nan")), self.background)


def synthetic_scene():
    """An opaque ball (radius 0.6, colour varying with position) on white, 64 orbit views of 64x64."""
    poses = orbit_poses(64, 4.0, elevation_deg=25.0)
    cameras = Cameras.from_fov(poses, 64, 64, math.radians(40.0))
    origins, directions = cameras.generate_all_rays()
    o, d = origins.reshape(-1, 3), directions.reshape(-1, 3)
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - 0.36)
    t = -b - disc.clamp_min(0).sqrt()
    hit = disc > 0
    point = o + t[:, None] * d
    colour = torch.sigmoid(3 * point)
    rgb = torch.where(hit[:, None], colour, torch.ones(3))
    images = rgb.reshape(len(cameras), 64, 64, 3)
    info = SceneInfo(aabb=torch.tensor([[-1.5] * 3, [1.5] * 3]), near=2.0, far=6.0)
    return info, cameras, images, cameras[:4], images[:4], "synthetic_ball"


def lego_scene(root: Path):
    from tensorfield.datasets.scene import load_scene

    scene = load_scene(root, splits=("train", "test"))
    train, test = scene.split("train"), scene.split("test")
    return scene.scene_info(), train.cameras, train.images, test.cameras, test.images, "lego_100"


def train_steps(model, rays, optimizer, groups, first_step, count, generator, base_step=0, timed=True):
    """Run ``count`` steps; returns (seconds per step, samples per ray) over them."""
    elapsed, samples = 0.0, 0.0
    for step in range(first_step, first_step + count):
        start = time.perf_counter()
        apply_lr_schedule(optimizer, groups, step, base_step)
        batch = rays.sample(model.config.batch_size, generator)
        out = model.training_step(batch, step)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        elapsed += time.perf_counter() - start
        samples += out.metrics["samples_per_ray"]
    return elapsed / max(count, 1), samples / max(count, 1)


def timed_phase(model, rays, steps, first_step, generator):
    optimizer, groups = build_optimizer(model, model.config)
    train_steps(model, rays, optimizer, groups, first_step, 2, generator)  # warm-up
    seconds, spr = train_steps(model, rays, optimizer, groups, first_step + 2, steps, generator)
    return {"ms_per_step": round(1e3 * seconds, 1), "samples_per_ray": round(spr, 1), "resolution": list(model.resolution)}


def clone(model: TensoRF) -> TensoRF:
    twin = TensoRF(copy.deepcopy(model.config), SceneInfo(aabb=model.aabb.clone(), near=model.near, far=model.far))
    twin.prepare_for_state(model.shape_state())
    twin.load_state_dict(model.state_dict())
    return twin


@torch.no_grad()
def mean_psnr(model, cameras, images, background) -> float:
    values = []
    for i in range(len(cameras)):
        out = model.render_view(RenderRequest(cameras, i, background))
        mse = float(((out.rgb - images[i]) ** 2).mean())
        values.append(-10.0 * math.log10(max(mse, 1e-12)))
    return sum(values) / len(values)


def full_run(info, cameras, images, test_cameras, test_images, background, mode):
    """The whole CPU schedule as the trainer runs it."""
    config = small_config(mode)
    model = TensoRF(config, info)
    rays = Rays(cameras, images, background)
    rays.filter(model)  # bbox-only before training
    optimizer, groups = build_optimizer(model, config)
    generator = torch.Generator().manual_seed(0)
    base_step, start = 0, time.perf_counter()
    windows, window_start, window_samples = [], time.perf_counter(), 0.0
    for step in range(config.steps):
        window_samples += train_steps(model, rays, optimizer, groups, step, 1, generator, base_step)[1]
        if (step + 1) % 100 == 0:
            now = time.perf_counter()
            windows.append({"steps": f"{step - 99}-{step}", "ms_per_step": round(10 * (now - window_start), 1),
                            "samples_per_ray": round(window_samples / 100, 1)})
            window_start, window_samples = now, 0.0
        hook = model.after_step(step)
        if hook.rebuild_optimizer:
            optimizer, groups = build_optimizer(model, config)
            base_step = step + 1
        if hook.refilter_rays:
            rays.filter(model)
    seconds = time.perf_counter() - start
    render_start = time.perf_counter()
    psnr = mean_psnr(model, test_cameras, test_images, background)
    render = (time.perf_counter() - render_start) / len(test_cameras)
    return {
        "s_per_step": round(seconds / config.steps, 4),
        "train_seconds": round(seconds, 1),
        "test_psnr": round(psnr, 2),
        "render_s_per_view": round(render, 2),
        "final_resolution": list(model.resolution),
        "speedup_vs_official_1.35s": round(1.35 / (seconds / config.steps), 2),
        "windows": windows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per phase")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--mode", choices=("vm", "cp"), default="vm")
    parser.add_argument("--data", type=Path, default=LEGO, help="Blender scene folder (default lego_100)")
    parser.add_argument("--full", action="store_true", help="also train the full 600-step schedule")
    parser.add_argument("--full-only", action="store_true", help="only the full 600-step run (no phases)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    if args.data.is_dir():
        info, cameras, images, test_cameras, test_images, scene_name = lego_scene(args.data)
    else:
        info, cameras, images, test_cameras, test_images, scene_name = synthetic_scene()
    background = torch.ones(3)
    generator = torch.Generator().manual_seed(0)
    config = small_config(args.mode)
    config.upsample_steps = []  # phases control the resolution themselves
    result = {"benchmark": "tensorf_step", "scene": scene_name, "mode": args.mode, "rays": config.batch_size,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine()}

    if args.full_only:
        result["full_run"] = full_run(info, cameras, images, test_cameras, test_images, background, args.mode)
        print(json.dumps(result))
        return

    model = TensoRF(config, info)
    rays = Rays(cameras, images, background)
    rays.filter(model)
    optimizer, groups = build_optimizer(model, config)
    train_steps(model, rays, optimizer, groups, 0, 10, generator)  # density starts to form
    seconds, spr = train_steps(model, rays, optimizer, groups, 10, 30, generator)
    result["grid64_nomask"] = {"ms_per_step": round(1e3 * seconds, 1), "samples_per_ray": round(spr, 1), "resolution": list(model.resolution)}
    before_mask = clone(model)

    model.update_alpha_mask(40)
    rays.filter(model)
    result["grid64_mask"] = timed_phase(model, rays, args.steps, 41, generator)
    model.upsample(voxels_to_resolution(3375000, model.aabb))
    model.update_alpha_mask(80)
    result["grid150_mask"] = timed_phase(model, rays, args.steps, 81, generator)

    before_mask.upsample(voxels_to_resolution(3375000, before_mask.aabb))
    rays.active, rays.order = torch.arange(rays.rgb.shape[0]), None
    rays.filter(before_mask)
    result["grid150_nomask"] = timed_phase(before_mask, rays, args.steps, 41, generator)

    if args.full:
        result["full_run"] = full_run(info, cameras, images, test_cameras, test_images, background, args.mode)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
