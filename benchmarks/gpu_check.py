"""One-shot check of the CUDA path, for a session that is lent a GPU (CI never has one).

Everything a GPU session should verify, in one command that fits one device call, each part
recorded even when another fails:

1. ``environment``: torch, the device, gsplat (imported and its CUDA code compiled on first use).
2. ``rasterizer``: the gsplat backend against tensorfield's exact torch backend on the same device
   (random scenes with SH, covariances, antialiasing): max |difference| of colour, alpha and
   depth, and of the gradients of every input.
3. ``viewer_fps``: the render service (what the viewer's render thread runs) on random 4D
   Gaussians: the issue's GPU case, 1M at 1280x720 (target 60 FPS), and 100k at 640x480.
4. ``train_*``: tiny 3DGS, 4DGS, TensoRF-VM and (on the GPU) Strivec runs on the built-in synthetic scenes on that
   device: steps/s and test PSNR.
5. ``einfield``: the Schwarzschild Kerr-Schild Einstein field trained on the device (steps/s,
   held-out relative errors of metric, Christoffels and Kretschmann) and its lensed render at
   256x256 (seconds per frame, the Christoffel grid built once and timed on its own).
6. ``monocular_4d``: a fast-motion monocular scene of the generator (``orbit``, D-NeRF layout;
   64x64 on the CPU dry run, 400x400 on the GPU as issue 17 asks) trained by 4DGS at the
   packaged defaults and with the monocular options (time jitter, consistency loss): train and
   test PSNR and the gap.

Prints one JSON line per part and writes them all to ``--out/gpu_check.json``. ``--device cpu``
runs the same script on the CPU (gsplat parts are skipped; the native rasteriser stands in), so
the script itself is tested where no GPU exists.

On the lent H200 (no network there; its python3 has torch, numpy, imageio, scikit-image, ninja,
rich and jaxtyping, but not gsplat or omegaconf), carry two wheels fetched here into an ignored
``.whl`` folder::

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 -d .whl gsplat==1.5.3 omegaconf==2.4.0

then run (``carry: [".whl"]``, about 8 MB; gsplat compiles its CUDA code on the first call, a few
minutes)::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
    PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT

(``tensorfield`` need not be installed there: the script imports it from the working tree, see
``_import_tree``). Video output (imageio-ffmpeg, 68 MB) and meshes (open3d) are not needed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _import_tree() -> None:
    """Make ``import tensorfield`` work from the working tree even where it is not installed
    (the device machine): register the repository folder as the ``tensorfield`` package."""
    if importlib.util.find_spec("tensorfield") is not None:
        return
    spec = importlib.util.spec_from_file_location("tensorfield", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["tensorfield"] = module
    spec.loader.exec_module(module)


_OUT: Path | None = None  # where main() writes gpu_check.json (rewritten after every part)


_ONLY: set[str] | None = None  # the parts main() runs (None: all)


def _part(name: str, results: list, fn, *args) -> None:
    if _ONLY is not None and name not in _ONLY and name != "environment":
        return
    start = time.perf_counter()
    try:
        record = {"part": name, **fn(*args)}
    except Exception as error:  # noqa: BLE001 - a one-shot check records every failure and goes on
        record = {"part": name, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-2000:]}
    record["seconds"] = round(time.perf_counter() - start, 2)
    results.append(record)
    print(json.dumps(record), flush=True)
    if _OUT is not None:
        (_OUT / "gpu_check.json").write_text(json.dumps(results, indent=1))


def environment(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "device": device, "cuda": torch.cuda.is_available()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        try:
            import gsplat

            info["gsplat"] = gsplat.__version__
        except Exception as error:  # noqa: BLE001
            info["gsplat_error"] = f"{type(error).__name__}: {error}"
    return info


def _random_scene(n: int, seed: int, device: str, *, sh_degree: int | None, covars: bool):
    import torch
    from tensorfield.cuda.rasterize import GaussianBatch, covariance_from_scales_quats

    g = torch.Generator().manual_seed(seed)
    params = {
        "means": (torch.rand(n, 3, generator=g) - 0.5) * 1.6,
        "scales": 0.02 + 0.1 * torch.rand(n, 3, generator=g),
        "quats": torch.randn(n, 4, generator=g),
        "opacities": 0.05 + 0.9 * torch.rand(n, generator=g),
        "colors": 0.3 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g) if sh_degree is not None else torch.rand(n, 3, generator=g),
    }
    params = {k: v.to(device).requires_grad_(True) for k, v in params.items()}
    if covars:
        params["covars"] = covariance_from_scales_quats(params["scales"], params["quats"]).detach().requires_grad_(True)
        batch = GaussianBatch(params["means"], params["opacities"], params["colors"], covars=params["covars"], sh_degree=sh_degree)
        del params["scales"], params["quats"]
    else:
        batch = GaussianBatch(params["means"], params["opacities"], params["colors"], params["scales"], params["quats"], sh_degree=sh_degree)
    return batch, params


def _cameras(count: int, width: int, height: int, device: str):
    import torch
    from tensorfield.cuda.rasterize import camera_matrices
    from tensorfield.datasets.cameras import Cameras, look_at

    poses = []
    for k in range(count):
        angle = 0.7 * k
        eye = torch.tensor([3.0 * math.sin(angle), -0.6, -3.0 * math.cos(angle)])
        poses.append(look_at(eye, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0])))
    viewmats, Ks = camera_matrices(Cameras.from_fov(torch.stack(poses), width, height, math.radians(50.0)))
    return viewmats.to(device), Ks.to(device)


def rasterizer(device: str) -> dict:
    """gsplat (CUDA) or the native kernels (CPU) against the exact torch backend, same inputs."""
    import torch
    from tensorfield.cuda.rasterize import rasterize

    fast = "gsplat" if device == "cuda" else "cpu"
    cases = [
        {"n": 3000, "sh_degree": 3, "covars": False, "antialiased": False},
        {"n": 3000, "sh_degree": None, "covars": True, "antialiased": True},
    ]
    report = []
    for case in cases:
        batch, params = _random_scene(case["n"], 1, device, sh_degree=case["sh_degree"], covars=case["covars"])
        viewmats, Ks = _cameras(2, 160, 120, device)
        background = torch.tensor([0.1, 0.4, 0.8], device=device)
        outputs = {}
        for backend in (fast, "torch"):
            for p in params.values():
                p.grad = None
            grad_enabled = backend != "cpu"  # the native CPU kernels are checked without autograd here
            with torch.set_grad_enabled(grad_enabled):
                out = rasterize(batch, viewmats, Ks, 160, 120, background=background, antialiased=case["antialiased"], backend=backend)
                if grad_enabled:
                    (out.rgb.square().sum() + out.depth.sum() + out.alpha.sum()).backward()
            grads = {k: p.grad.detach().clone() for k, p in params.items() if p.grad is not None}
            outputs[backend] = (out.rgb.detach(), out.alpha.detach(), out.depth.detach(), grads)
        a, b = outputs[fast], outputs["torch"]
        entry = {**case, "backend": fast}
        for i, name in enumerate(("rgb", "alpha", "depth")):
            entry[f"max_abs_{name}"] = float((a[i] - b[i]).abs().max())
        for name, grad in b[3].items():
            if name in a[3]:
                scale = float(grad.abs().max()) or 1.0
                entry[f"max_rel_grad_{name}"] = float((a[3][name] - grad).abs().max()) / scale
        entry["alpha_max"] = float(b[1].max())
        report.append(entry)
    return {"cases": report}


def viewer_fps(device: str, quick: bool) -> dict:
    spec = importlib.util.spec_from_file_location("viewer_benchmark", ROOT / "benchmarks" / "viewer.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from tensorfield.app.viewer.camera import ViewCamera

    base = ViewCamera.looking_at((0.0, -3.5, 1.2), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), fov_y=45.0)
    views = [base.orbit(2 * math.pi * i / 12, 0.0) for i in range(12)]
    cases = [(100_000, 640, 480), (1_000_000, 1280, 720)] if device == "cuda" else [(20_000, 320, 240)]
    frames = 6 if quick else 24
    result = {}
    for count, width, height in cases:
        model = bench.random_gaussians4d(count, device)
        result[f"{count}_{width}x{height}"] = bench.fps(model, views, width, height, 0.5, frames)
        del model
    return result


def _train(device: str, method: str, kind: str, steps: int, out: Path, extra: list[str]) -> dict:
    from tensorfield.datasets.synthetic import make_scene
    from tensorfield.engine.config import load_config
    from tensorfield.engine.trainer import Trainer

    data = out / f"data_{kind}"
    if not (data / "transforms_train.json").exists():
        make_scene(data, kind=kind, resolution=48, n_train=24, n_test=4, n_val=0)
    configs = {"gaussians3d": "gaussians3d_small.yaml", "gaussians4d": "gaussians4d_small.yaml", "tensorf_vm": "tensorf_vm_small.yaml", "strivec": "strivec_small.yaml"}
    config = load_config(ROOT / "configs" / configs[method], [f"steps={steps}", "eval_every=0", f"checkpoint_every={steps}", *extra])
    trainer = Trainer.from_config(config, out / f"run_{method}", data_path=data, device=device)
    start = time.perf_counter()
    trainer.train(progress=False, final_eval=False)
    seconds = time.perf_counter() - start
    evaluation = trainer.evaluate("test", save_renders=False)
    trainer.close()
    return {"method": method, "steps": steps, "it_per_s": round(steps / seconds, 2), "test_psnr": round(evaluation["psnr"], 3), "render_s": round(evaluation["render_s"], 4)}


def einfield(device: str, quick: bool, out: Path) -> dict:
    import torch

    from tensorfield.datasets.cameras import Cameras
    from tensorfield.engine.config import load_config
    from tensorfield.engine.trainer import Trainer
    from tensorfield.fields.base import RenderRequest

    steps = 40 if quick or device == "cpu" else 3000
    config = load_config(ROOT / "configs" / "einfield_schwarzschild_ks.yaml", [f"steps={steps}", "checkpoint_every=0", "log_every=1000"])
    trainer = Trainer.from_config(config, out / "run_einfield", device=device)
    start = time.perf_counter()
    trainer.train(progress=False, final_eval=False)
    seconds = time.perf_counter() - start
    evaluation = trainer.evaluate(save_renders=False)
    model = trainer.model.eval()
    size = 16 if device == "cpu" else 256
    cameras = trainer.data.split_cameras()["train"]
    request = RenderRequest(Cameras.from_fov(cameras.c2w[:1], size, size, math.radians(config.render_fov)), 0)

    def frame():
        with torch.no_grad():
            model.render_view(request.on(torch.device(device)))
        if device == "cuda":
            torch.cuda.synchronize()

    tick = time.perf_counter()
    frame()  # builds the Christoffel grid of the static spacetime
    first_s = time.perf_counter() - tick
    tick = time.perf_counter()
    frame()
    frame_s = time.perf_counter() - tick
    keys = ("metric_rel_l2", "christoffel_rel_l2", "kretschmann_rel_l2", "kretschmann_outside_2m_rel_l2")
    return {"steps": steps, "it_per_s": round(steps / seconds, 2), **{k: evaluation[k] for k in keys if k in evaluation},
            "render_size": size, "first_frame_s": round(first_s, 3), "frame_s": round(frame_s, 3)}


def monocular_4d(device: str, quick: bool, out: Path) -> dict:
    from tensorfield.datasets.synthetic import make_scene
    from tensorfield.engine.config import load_config
    from tensorfield.engine.trainer import Trainer

    cpu = device == "cpu"
    resolution = 32 if cpu else 400
    steps = 40 if quick or cpu else 3000
    data = out / f"data_orbit_{resolution}"
    tick = time.perf_counter()
    if not (data / "transforms_train.json").exists():
        make_scene(data, kind="orbit", resolution=resolution, n_train=12 if cpu else 60, n_test=4 if cpu else 12, n_val=0)
    result = {"resolution": resolution, "steps": steps, "scene_s": round(time.perf_counter() - tick, 1)}
    schedule = [f"steps={steps}", "eval_every=0", f"checkpoint_every={steps}", "keep_checkpoints=1", "eval_max_images=0",
                f"densify_from={steps // 8}", f"densify_until={steps * 3 // 4}", f"densify_interval={max(steps // 30, 1)}",
                f"sh_increase_interval={max(steps // 6, 1)}", f"opacity_reset_interval={steps * 10}",
                *(["init_points=2000", "max_gaussians=20000"] if cpu else [])]
    variants = {"defaults": [], "monocular": ["time_jitter=0.1", "consistency_weight=0.01"]}
    for name, extra in variants.items():
        config = load_config(ROOT / "configs" / "gaussians4d_small.yaml", [*schedule, *extra])
        trainer = Trainer.from_config(config, out / f"run_orbit_{name}", data_path=data, device=device)
        start = time.perf_counter()
        trainer.train(progress=False, final_eval=False)
        seconds = time.perf_counter() - start
        test = trainer.evaluate("test", save_renders=False)
        train = trainer._evaluate("train", save_renders=False, write_json=False)
        result[name] = {"it_per_s": round(steps / seconds, 2), "gaussians": int(trainer.model.means.shape[0]),
                        "train_psnr": round(train["psnr"], 3), "test_psnr": round(test["psnr"], 3),
                        "gap_db": round(train["psnr"] - test["psnr"], 3)}
        trainer.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda (default where present) or cpu (a dry run)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check")
    parser.add_argument("--quick", action="store_true", help="fewer frames and steps")
    parser.add_argument("--only", nargs="+", default=None, metavar="PART", help="run only these parts (environment always runs)")
    args = parser.parse_args()
    _import_tree()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    global _OUT, _ONLY
    _OUT = args.out
    _ONLY = set(args.only) if args.only else None
    steps = 60 if args.quick or device == "cpu" else 400
    small = ["init_points=2000", "max_gaussians=20000", f"densify_from={steps // 8}", f"densify_until={steps // 2}", f"densify_interval={max(steps // 20, 1)}", f"sh_increase_interval={max(steps // 4, 1)}"]
    results: list[dict] = []
    _part("environment", results, environment, device)
    _part("rasterizer", results, rasterizer, device)
    _part("viewer_fps", results, viewer_fps, device, args.quick)
    _part("train_gaussians3d", results, _train, device, "gaussians3d", "static", steps, args.out, small)
    _part("train_gaussians4d", results, _train, device, "gaussians4d", "dynamic", steps, args.out, small)
    _part("train_tensorf_vm", results, _train, device, "tensorf_vm", "static", steps, args.out, [f"upsample_steps=[{steps // 6},{steps // 3}]", f"alpha_mask_steps=[{steps // 4}]"])
    if device != "cpu":  # on the CPU the test suite trains Strivec; a 60-step dry run here would take minutes
        fine = steps - steps // 4  # Strivec's schedule counts from the end of its coarse phase
        _part("train_strivec", results, _train, device, "strivec", "static", steps, args.out, [f"coarse_steps={steps // 4}", f"upsample_steps=[{fine // 6},{fine // 3}]", f"alpha_mask_steps=[{fine // 4},{fine // 2}]"])
    _part("einfield", results, einfield, device, args.quick, args.out)
    _part("monocular_4d", results, monocular_4d, device, args.quick, args.out)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    failed = [r["part"] for r in results if "error" in r]
    print(json.dumps({"benchmark": "gpu_check", "device": device, "failed": failed}))


if __name__ == "__main__":
    main()
