"""Obviously-right float64 reference of :func:`tensorfield.cuda.raymarch.march_rays`.

One Python loop per ray, one per sample, the textbook product ``T_i = prod_{j<i} (1 - alpha_j)``
and nothing packed. Slow; used by the tests to check values and gradients of the fast path.
The random jitter offsets are drawn exactly as the fast path draws them
(:func:`~tensorfield.cuda.raymarch.sample_offsets`), so a seeded generator gives both the same
samples.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .raymarch import ColorFn, DensityFn, OccupancyGrid, RayMarchOutput, sample_offsets


def ray_aabb_intersect_reference(
    origin: list[float], direction: list[float], aabb: list[list[float]]
):
    """``(t_near, t_far)`` of one line ``o + t d`` with a box, slab by slab, in Python floats."""
    t_near, t_far = -math.inf, math.inf
    for axis in range(3):
        o, d = origin[axis], direction[axis]
        lo, hi = aabb[0][axis], aabb[1][axis]
        if d == 0:
            if lo <= o <= hi:
                continue  # this slab does not restrict the line
            return math.inf, -math.inf
        t_a, t_b = (lo - o) / d, (hi - o) / d
        t_near = max(t_near, min(t_a, t_b))
        t_far = min(t_far, max(t_a, t_b))
    return t_near, t_far


def occupied_reference(grid: OccupancyGrid, point: list[float]) -> bool:
    """Whether one point lies in an occupied voxel (closed box, voxel ``i`` = ``[i, i+1)``)."""
    box = grid.aabb.tolist()
    index = []
    for axis in range(3):
        lo, hi, n = box[0][axis], box[1][axis], grid.mask.shape[axis]
        if not lo <= point[axis] <= hi:
            return False
        i = math.floor((point[axis] - lo) * (n / (hi - lo)))
        index.append(min(max(i, 0), n - 1))
    return bool(grid.mask[index[0], index[1], index[2]])


def march_rays_reference(
    origins: Tensor,
    directions: Tensor,
    density_fn: DensityFn,
    color_fn: ColorFn,
    *,
    aabb: Tensor,
    step_size: float,
    near: float,
    far: float,
    times: Tensor | None = None,
    occupancy: OccupancyGrid | None = None,
    background: Tensor | None = None,
    distance_scale: float = 1.0,
    jitter: bool = False,
    generator: torch.Generator | None = None,
    weight_threshold: float = 1e-4,
    transmittance_threshold: float = 1e-4,
    max_samples_per_ray: int | None = None,
    samples_per_round: int | None = None,  # accepted for signature parity; no effect here
) -> RayMarchOutput:
    """Same signature and semantics as :func:`~tensorfield.cuda.raymarch.march_rays`, float64.

    Per ray: list the samples ``t_k = t_start + (k + u) * step_size`` while ``t_k < t_end``,
    drop those in empty voxels, evaluate ``density_fn`` on the rest, then walk them in order:
    ``alpha = 1 - exp(-sigma * step_size * distance_scale)``, skip the rest once ``T <
    transmittance_threshold``, ``w = T * alpha``, ``T <- T * (1 - alpha)``; finally evaluate
    ``color_fn`` where ``w > weight_threshold`` and composite. ``num_samples`` counts every
    sample passed to ``density_fn`` (no early termination of evaluations here).
    """
    f64 = torch.float64
    origins, directions = origins.to(f64), directions.to(f64)
    num_rays = origins.shape[0]
    if times is None:
        times = torch.full((num_rays,), float("nan"), dtype=f64)
    times = times.to(f64)
    box = aabb.to(f64).tolist()
    delta = step_size * distance_scale
    offsets = sample_offsets(num_rays, jitter=jitter, generator=generator, dtype=f64).tolist()

    rgb_rows, depth_rows, alpha_rows, num_samples = [], [], [], 0
    for r in range(num_rays):
        o, d = origins[r], directions[r]
        o_list, d_list = o.tolist(), d.tolist()
        t_near, t_far = ray_aabb_intersect_reference(o_list, d_list, box)
        t_start, t_end = max(near, t_near), min(far, t_far)

        distances, points = [], []
        k = 0
        while t_start + (k + offsets[r]) * step_size < t_end:
            if max_samples_per_ray is not None and k >= max_samples_per_ray:
                break
            t = t_start + (k + offsets[r]) * step_size
            point = [o_list[a] + t * d_list[a] for a in range(3)]
            if occupancy is None or occupied_reference(occupancy, point):
                distances.append(t)
                points.append(point)
            k += 1

        acc = torch.zeros((), dtype=f64)
        depth = torch.zeros((), dtype=f64)
        rgb = torch.zeros(3, dtype=f64)
        if points:
            ray_points = torch.tensor(points, dtype=f64)
            ray_times = times[r].expand(len(points))
            sigma = density_fn(ray_points, ray_times)
            num_samples += len(points)
            alphas = 1.0 - torch.exp(-sigma * delta)
            transmittance = torch.ones((), dtype=f64)
            weights, coloured = [], []  # coloured: indices of samples with w > threshold
            for i in range(len(distances)):
                if float(transmittance.detach()) < transmittance_threshold:
                    break  # early termination: this and later samples contribute nothing
                weight = transmittance * alphas[i]
                weights.append(weight)
                if float(weight.detach()) > weight_threshold:
                    coloured.append(i)
                transmittance = transmittance * (1.0 - alphas[i])
            if weights:
                weights_t = torch.stack(weights)
                acc = weights_t.sum()
                depth = (weights_t * torch.tensor(distances[: len(weights)], dtype=f64)).sum()
            if coloured:
                colour = color_fn(
                    ray_points[coloured], d.expand(len(coloured), 3), ray_times[coloured]
                )
                rgb = (weights_t[coloured, None] * colour).sum(dim=0)
        if background is not None:
            rgb = rgb + (1.0 - acc) * background.to(f64)
        rgb_rows.append(rgb)
        depth_rows.append(depth)
        alpha_rows.append(acc)

    if num_rays == 0:
        empty = torch.zeros(0, dtype=f64)
        return RayMarchOutput(torch.zeros(0, 3, dtype=f64), empty, empty, 0)
    return RayMarchOutput(
        rgb=torch.stack(rgb_rows),
        depth=torch.stack(depth_rows),
        alpha=torch.stack(alpha_rows),
        num_samples=num_samples,
    )
