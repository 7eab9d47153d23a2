"""Seconds per lensed frame (fields/lensing.py) for an analytic metric and a network metric.

Renders one ``--size``^2 frame of a Schwarzschild black hole (Kerr-Schild chart, M = 1, camera at
r = 25 slightly above a thin disk from 6M to 14M) with the cached Christoffel grid, for

* ``analytic``: the Kerr-Schild metric of :mod:`tensorfield.datasets.spacetimes`, traced in
  float64 and (``analytic_float32``) in float32 (the grid is built in float64 either way);
* ``network``: the same metric plus a 4x128 SiLU MLP's output (10 symmetric components scaled
  by 1e-3, so the geometry stays that of the hole and the cost is the network's), float32.

Prints one JSON line: grid build seconds, trace+shade seconds and their sum per frame, mean steps
per ray, the shadow fraction and the fraction of unresolved rays, for each metric.

    python benchmarks/lensing.py --size 256
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from tensorfield.datasets.cameras import Cameras, look_at
from tensorfield.datasets.spacetimes import Spacetime, SpacetimeParameters
from tensorfield.fields.base import RenderRequest
from tensorfield.fields.lensing import (
    LensingSettings,
    RayStatus,
    build_christoffel_grid,
    shade,
    trace_camera,
)
from torch import nn


def network_metric(dtype: torch.dtype):
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(4, 128), nn.SiLU()]
    for _ in range(3):
        layers += [nn.Linear(128, 128), nn.SiLU()]
    mlp = nn.Sequential(*layers, nn.Linear(128, 10)).to(dtype)
    analytic = Spacetime("schwarzschild_ks", SpacetimeParameters(mass=1.0))
    rows = ((0, 1, 2, 3), (1, 4, 5, 6), (2, 5, 7, 8), (3, 6, 8, 9))

    def metric(coords: torch.Tensor) -> torch.Tensor:
        v = 1e-3 * mlp(coords.to(dtype)).to(coords.dtype)
        distortion = torch.stack([v[..., list(r)] for r in rows], dim=-2)
        return analytic.metric(coords) + distortion

    return metric


def frame(metric, settings: LensingSettings, size: int) -> dict:
    eye = torch.tensor([25.0, 0.0, 3.0])
    c2w = look_at(eye, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    request = RenderRequest(Cameras.from_fov(c2w[None], size, size, math.radians(50)), 0)
    start = time.perf_counter()
    grid = build_christoffel_grid(metric, settings)
    built = time.perf_counter()
    trace = trace_camera(metric, request, settings, grid)
    shade(metric, trace, settings)
    done = time.perf_counter()
    status = trace.rays.status
    return {
        "grid_build_s": round(built - start, 2),
        "trace_shade_s": round(done - built, 2),
        "frame_s": round(done - start, 2),
        "steps_per_ray": round(float(trace.rays.steps.float().mean()), 1),
        "shadow_fraction": round(float((status == RayStatus.CAPTURED).float().mean()), 4),
        "unresolved_fraction": round(float((status == RayStatus.UNRESOLVED).float().mean()), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    base = {"horizon_radius": 2.0, "escape_radius": 60.0, "disk_inner": 6.0, "disk_outer": 14.0}
    result = {"size": args.size, "threads": torch.get_num_threads()}
    result["analytic"] = frame(
        Spacetime("schwarzschild_ks", SpacetimeParameters(mass=1.0)).metric,
        LensingSettings(**base),
        args.size,
    )
    result["analytic_float32"] = frame(
        Spacetime("schwarzschild_ks", SpacetimeParameters(mass=1.0)).metric,
        LensingSettings(**base, dtype="float32"),
        args.size,
    )
    result["network"] = frame(
        network_metric(torch.float32), LensingSettings(**base, dtype="float32"), args.size
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
