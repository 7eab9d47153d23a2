"""Benchmark of :func:`tensorfield.cuda.raymarch.march_rays` on a TensoRF-like setup.

Box ``[-1.5, 1.5]^3``, step 0.01 (TensoRF's Blender step at a 300^3 grid is 0.005-0.01),
cameras on a sphere of radius 4 looking at the centre, random rays as in a training batch.
The field is a cheap analytic soft ball of radius 1 (opaque inside, so early termination
matters) with a learnable density scale and colour, so the timings are the marcher's own
overhead rather than a field's. Variants: without an occupancy grid, and with a 128^3 grid of
~20 % occupancy (a ball of radius 1.09). For contrast, ``dense`` is a TensoRF-style dense
``[R, N]`` sampler + compositor on the same field (no skipping, no early termination).

Prints one JSON line; ``--quick`` runs fewer repetitions.

Usage: ``python benchmarks/raymarch.py [--quick] [--threads N]``
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import time

import torch
from tensorfield.cuda.raymarch import OccupancyGrid, march_rays, ray_aabb_intersect

AABB = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])
STEP = 0.01


class BallField(torch.nn.Module):
    """sigma = 40 * sigmoid(20 (1 - |x|)); colour = sigmoid(x * w + b)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(40.0))
        self.colour_weight = torch.nn.Parameter(torch.tensor([1.0, -1.0, 0.5]))
        self.colour_bias = torch.nn.Parameter(torch.zeros(3))

    def density(self, points, times):
        return self.scale * torch.sigmoid(20.0 * (1.0 - points.norm(dim=-1)))

    def colour(self, points, dirs, times):
        return torch.sigmoid(points * self.colour_weight + self.colour_bias)


def training_rays(num_rays: int, seed: int = 0):
    """Random rays of 100x100 cameras (fov 40 deg) on a sphere of radius 4 looking at 0."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_rays, 3, generator=g)
    centres = 4.0 * centres / centres.norm(dim=-1, keepdim=True)
    forward = -centres / centres.norm(dim=-1, keepdim=True)
    up = torch.tensor([0.0, 0.0, 1.0]).expand_as(forward)
    right = torch.nn.functional.normalize(torch.cross(forward, up, dim=-1), dim=-1)
    down = torch.cross(forward, right, dim=-1)
    half = math.tan(math.radians(20.0))
    uv = (torch.rand(num_rays, 2, generator=g) * 2 - 1) * half
    directions = forward + uv[:, :1] * right + uv[:, 1:] * down
    return centres, directions / directions.norm(dim=-1, keepdim=True)


def dense_baseline(origins, directions, field, background):
    """TensoRF-style: N = diag/step samples for every ray from the box entry, masked outside."""
    n = int((AABB[1] - AABB[0]).norm() / STEP) + 1
    t_near, _ = ray_aabb_intersect(origins, directions, AABB)
    t = t_near.clamp(min=2.0)[:, None] + STEP * (torch.arange(n) + 0.5)
    points = origins[:, None] + t[..., None] * directions[:, None]
    inside = ((points >= AABB[0]) & (points <= AABB[1])).all(-1)
    sigma = torch.zeros(t.shape)
    sigma[inside] = field.density(points[inside], t[inside])
    alpha = 1 - torch.exp(-sigma * STEP)
    transmittance = torch.cumprod(
        torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], -1), -1
    )
    weight = alpha * transmittance[:, :-1]
    coloured = weight > 1e-4
    rgb = torch.zeros(*t.shape, 3)
    rgb[coloured] = field.colour(
        points[coloured], directions[:, None].expand_as(points)[coloured], t[coloured]
    )
    acc = weight.sum(-1)
    return (weight[..., None] * rgb).sum(-2) + (1 - acc)[:, None] * background, n * origins.shape[0]


def march_once(origins, directions, field, kwargs, backward: bool):
    """One marcher call, with ``mean(rgb^2)`` backpropagated when ``backward``."""
    with torch.set_grad_enabled(backward):
        out = march_rays(origins, directions, field.density, field.colour, **kwargs)
    if backward:
        out.rgb.square().mean().backward()
    return out


def dense_once(origins, directions, field, background) -> None:
    out, _ = dense_baseline(origins, directions, field, background)
    out.square().mean().backward()


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median and minimum wall time in ms (the minimum is the robust one on a busy machine)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return round(1e3 * times[len(times) // 2], 2), round(1e3 * times[0], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 5

    field = BallField()
    background = torch.ones(3)
    mask = OccupancyGrid(AABB, torch.ones(128, 128, 128, dtype=torch.bool))
    mask.mask = mask.voxel_centers().norm(dim=-1) < 1.09
    result = {
        "benchmark": "raymarch",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "step_size": STEP,
        "occupancy_fraction": round(mask.occupied_fraction, 3),
        "results": [],
    }
    for num_rays in (1024, 4096):
        origins, directions = training_rays(num_rays)
        for name, occupancy in (("no_mask", None), ("mask20", mask)):
            gen = torch.Generator().manual_seed(0)
            kwargs = {
                "aabb": AABB,
                "step_size": STEP,
                "near": 2.0,
                "far": 6.0,
                "occupancy": occupancy,
                "background": background,
                "jitter": True,
                "generator": gen,
            }

            forward = functools.partial(march_once, origins, directions, field, kwargs, False)
            forward_backward = functools.partial(
                march_once, origins, directions, field, kwargs, True
            )
            evaluated = forward().num_samples
            fwd, fwd_min = timed(forward, repeats)
            fwd_bwd, fwd_bwd_min = timed(forward_backward, repeats)
            result["results"].append(
                {
                    "rays": num_rays,
                    "variant": name,
                    "samples": evaluated,
                    "forward_ms": fwd,
                    "forward_min_ms": fwd_min,
                    "forward_backward_ms": fwd_bwd,
                    "forward_backward_min_ms": fwd_bwd_min,
                    "samples_per_s_forward_backward": round(evaluated / fwd_bwd_min * 1e3),
                }
            )

        dense = functools.partial(dense_once, origins, directions, field, background)
        _, dense_samples = dense_baseline(origins, directions, field, background)
        dense_ms, dense_min = timed(dense, repeats)
        result["results"].append(
            {
                "rays": num_rays,
                "variant": "dense_tensorf_style",
                "samples": dense_samples,
                "forward_backward_ms": dense_ms,
                "forward_backward_min_ms": dense_min,
            }
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
