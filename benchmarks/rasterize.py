"""Gaussian rasteriser speed: forward and forward+backward milliseconds, and peak memory.

Scenes of 10k, 100k and 1M Gaussians that look like trained ones (small anisotropic Gaussians on
the surfaces of a few spheres and a ground plane, opacities U(0.1, 1), SH degree 3), seen by one
camera at 256x256 and 512x512. On the CPU the ``cpu`` backend (native kernel) is timed; on a CUDA
machine gsplat is timed on the same scenes as well. Prints one JSON line.

    python benchmarks/rasterize.py            # all sizes
    python benchmarks/rasterize.py --quick    # 10k and 100k only, fewer repeats
    python benchmarks/rasterize.py --run runs/lego_3dgs   # also a trained 3DGS run's Gaussians

With ``--run``, the Gaussians of a trained ``gaussians3d`` run are timed as well ("trained"),
seen by its first test camera re-sized to 256x256 and 512x512 (same field of view).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import time

import torch

from tensorfield.cuda.rasterize import GaussianBatch, camera_matrices, rasterize
from tensorfield.datasets.cameras import Cameras, look_at


def surface_scene(count: int, seed: int = 0, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Gaussians on three spheres and a ground plane (flat, small, mostly opaque)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-0.5, 0.0, 0.0], [0.5, 0.1, 0.2], [0.0, -0.2, -0.5]])
    radii = torch.tensor([0.35, 0.3, 0.25])
    on_plane = count // 4
    which = torch.randint(0, 3, (count - on_plane,), generator=g)
    normals = torch.nn.functional.normalize(torch.randn(count - on_plane, 3, generator=g), dim=-1)
    spheres = centres[which] + radii[which, None] * normals
    plane = torch.stack([(torch.rand(on_plane, generator=g) - 0.5) * 2.0, torch.full((on_plane,), 0.4), (torch.rand(on_plane, generator=g) - 0.5) * 2.0], -1)
    means = torch.cat([spheres, plane])
    spacing = math.sqrt(4.0 / count)  # about one Gaussian per spacing^2 of surface
    scales = spacing * (0.5 + torch.rand(count, 3, generator=g))
    scales[:, 2] *= 0.1
    params = {
        "means": means,
        "scales": scales,
        "quats": torch.randn(count, 4, generator=g),
        "opacities": 0.1 + 0.9 * torch.rand(count, generator=g),
        "colors": 0.3 * torch.randn(count, 16, 3, generator=g),
    }
    return {k: v.to(device).requires_grad_(True) for k, v in params.items()}


def trained_scene(run: str) -> tuple[dict[str, torch.Tensor], int, object]:
    """A trained 3DGS run's Gaussians (activated, SH table) and its first test camera."""
    from tensorfield.engine.trainer import load_run

    trainer = load_run(run, "cpu")
    model = trainer.model
    with torch.no_grad():
        params = {
            "means": model.means.detach().clone(),
            "scales": model.scales.detach().clone(),
            "quats": model.quats.detach().clone(),
            "opacities": model.opacities.detach().clone(),
            "colors": torch.cat([model.sh_dc, model.sh_rest], dim=1).detach().clone(),
        }
    splits = trainer.data.split_cameras()
    cameras = splits["test"] if "test" in splits else splits["train"]
    return {k: v.requires_grad_(True) for k, v in params.items()}, int(model.active_sh_degree), cameras


def time_it(params, viewmats, Ks, size: int, backend: str, repeats: int, sync, sh_degree: int = 3) -> dict:
    def batch():
        return GaussianBatch(params["means"], params["opacities"], params["colors"], params["scales"], params["quats"], sh_degree=sh_degree)

    with torch.no_grad():
        rasterize(batch(), viewmats, Ks, size, size, backend=backend)  # warm-up (and kernel build)
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            rasterize(batch(), viewmats, Ks, size, size, backend=backend)
        sync()
        forward = (time.perf_counter() - start) / repeats
    out = rasterize(batch(), viewmats, Ks, size, size, backend=backend)
    out.rgb.sum().backward()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        out = rasterize(batch(), viewmats, Ks, size, size, backend=backend)
        (out.rgb.sum() + out.alpha.sum()).backward()
    sync()
    both = (time.perf_counter() - start) / repeats
    return {"forward_ms": round(1e3 * forward, 1), "forward_backward_ms": round(1e3 * both, 1), "fps_forward": round(1.0 / forward, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--run", default=None, help="also time a trained gaussians3d run's Gaussians")
    args = parser.parse_args()
    counts = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    repeats = args.repeats or (2 if args.quick else 3)
    pose = look_at(torch.tensor([0.0, -1.2, -2.6]), torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]))
    result = {"benchmark": "rasterize", "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(), "cpu": {}, "gsplat": {}}
    for count in counts:
        params = surface_scene(count)
        for size in (256, 512):
            viewmats, Ks = camera_matrices(Cameras.from_fov(pose[None], size, size, math.radians(50.0)))
            result["cpu"][f"{count}@{size}"] = time_it(params, viewmats, Ks, size, "cpu", repeats, lambda: None)
            if torch.cuda.is_available():
                cuda_params = {k: v.detach().cuda().requires_grad_(True) for k, v in params.items()}
                result["gsplat"][f"{count}@{size}"] = time_it(cuda_params, viewmats.cuda(), Ks.cuda(), size, "gsplat", repeats, torch.cuda.synchronize)
    if args.run:
        params, degree, cameras = trained_scene(args.run)
        result["trained"] = {"run": args.run, "gaussians": int(params["means"].shape[0]), "sh_degree": degree}
        for size in (256, 512):
            fov_x = 2.0 * math.atan(0.5 * float(cameras.width) / float(cameras.fx[0]))
            resized = Cameras.from_fov(cameras.c2w[:1], size, size, fov_x)
            viewmats, Ks = camera_matrices(resized)
            result["trained"][f"{size}"] = time_it(params, viewmats, Ks, size, "cpu", repeats, lambda: None, sh_degree=degree)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if not result["gsplat"]:
        result["gsplat"] = "no CUDA device"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
