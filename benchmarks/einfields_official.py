"""The official EinFields code (JAX) beside ours: same data, same held-out points, same error code.

Issue 15 asks for the official code's row next to ``benchmarks/einfields.py``'s, run back to back
on the same data. This script drives an exported work tree of AndreiB137/EinFields with a Python
that has JAX (``--python``), without changing a file of it:

1. **Data**: their ``data_generation/generate_data.py`` with a config in their format for
   Schwarzschild in ``kerr_schild_cartesian`` on our packaged grid
   (``configs/einfield_schwarzschild_ks.yaml``: 32^3 points, x, y in [-3, 3], z in [0.1, 3],
   t = 0). Their script reads the relative path ``configs/schwarzschild_spherical.yml``, so it
   runs in a temporary folder holding that config. Their training arrays are compared with ours
   (coordinates, the 10 distortion components, their Jacobian): ``data_max_abs_diff``.
2. **Training**: their ``einstein_fields/main.py --config_file`` (MLP, SiLU, Adam with their
   default b1/b2/eps, learning rate 1e-3 and cosine decay to 1e-3 of it, MSE on the metric and
   the Jacobian, ``distortion_sym`` targets). Their loop saves a checkpoint only at its end, so
   a short probe run times an epoch and ``epochs`` is set to what fits in ``--budget-s`` (the
   cosine decay spans exactly those epochs); a wrapper around the epoch iterator of their
   ``train.py`` also ends the loop at 1.1x the budget, after which their code saves the
   checkpoint as usual. ``train_s`` is the epoch loop's time (their first epoch includes XLA's
   compilation, reported as ``compile_s``).
3. **Evaluation**: their checkpoint is read by their ``get_model_and_params_checkpoint``, the
   flax parameters become a torch MLP of the same structure (:class:`OfficialMLP`), which is
   checked against the JAX forward and its input Jacobian on held-out points
   (``conversion_max_rel_diff``, must be below 1e-5), and then scored with our
   ``curvature_errors`` on our 4096 held-out points, as ``einfields.py`` scores ours.

Their ``num_layers`` counts the hidden layers *after* the first one: ``--layers 4`` is
Dense(4->128), SiLU, 4 x [Dense(128->128), SiLU], Dense(128->10) -- five SiLU layers and 67,978
parameters, against ours' four (51,466) for ``layers: 4``. The input is the raw chart
coordinates (no normalisation), the output the 10 upper-triangle components
``g00 g01 g02 g03 g11 g12 g13 g22 g23 g33`` of ``g - eta`` (``distortion_sym``; ``eta`` the
Minkowski metric, also our Kerr-Schild flat metric), without output scaling.

Their imports need ``soap_jax`` and ``kfac_jax`` (GitHub-only packages); when the JAX Python
lacks them, small stand-ins that only define the imported names (and fail if used) are written
into the temporary folder, which is enough for an Adam run. JAX runs on the CPU with one thread
(XLA flags, ``OMP_NUM_THREADS=1``); ``cpu_s / wall_s`` of each child process is reported.

Prints ONE JSON line: ``{"benchmark": "einfields_official", "row": {...}, "conversion": {...},
"data_max_abs_diff": {...}, "timing": {...}}``. Not imported by the tests; it needs neither JAX
in this Python nor torch in the JAX one.

Usage::

    python benchmarks/einfields_official.py --official PATH/EinFields --python PATH/bin/python --budget-s 900
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "einfield_schwarzschild_ks.yaml"
PROBLEM = "schwarzschild_ks"
CHART = "kerr_schild_cartesian"
CONVERSION_TOLERANCE = 1e-5
SAFETY_FACTOR = 1.1  # the epoch loop is ended at this multiple of the budget

STAND_INS = {
    "soap_jax": (
        '"""Stand-in for the GitHub-only soap_jax: the imported name only (Adam runs)."""\n'
        "def soap(*args, **kwargs):\n"
        '    raise NotImplementedError("soap_jax is a stand-in here: use optimizer adam")\n'
    ),
    "kfac_jax": (
        '"""Stand-in for the GitHub-only kfac_jax: the used names only (Adam runs)."""\n'
        "class Optimizer:\n"
        "    def __init__(self, *args, **kwargs):\n"
        '        raise NotImplementedError("kfac_jax is a stand-in here: use optimizer adam")\n'
        "def register_squared_error_loss(*args, **kwargs):\n"
        '    raise NotImplementedError("kfac_jax is a stand-in here: use optimizer adam")\n'
    ),
}


# --------------------------------------------------------------------------- JAX side (workers)
class _BudgetEpochs:
    """Replaces ``trange`` in their ``train.py``: the same epochs, timed, ended at ``limit_s``.

    Each epoch's end time is appended to ``timing_path`` (JSON) as it happens; their loop body
    formats the epoch's loss, which waits for the device, so the times are real.
    """

    def __init__(self, limit_s: float, timing_path: str) -> None:
        self.limit_s = limit_s
        self.timing_path = timing_path

    def __call__(self, start: int, stop: int, **_):
        self.start, self.stop = start, stop
        return self

    def __iter__(self):
        began = time.perf_counter()
        ends: list[float] = []
        for epoch in range(self.start, self.stop):
            yield epoch
            ends.append(time.perf_counter() - began)
            Path(self.timing_path).write_text(json.dumps({"epoch_end_s": ends}))
            if ends[-1] >= self.limit_s:
                break

    def set_description(self, text: str) -> None:
        self.description = text


def _worker_train(official: str, config_file: str, limit_s: float, timing_path: str) -> None:
    """Their ``einstein_fields/main.py --config_file CONFIG`` with the timed epoch iterator."""
    import einstein_fields.train as official_train

    official_train.trange = _BudgetEpochs(limit_s, timing_path)
    main = os.path.join(official, "einstein_fields", "main.py")
    sys.argv = [main, "--config_file", config_file]
    runpy.run_path(main, run_name="__main__")


def _worker_forward(run_dir: str, points_path: str, out_path: str) -> None:
    """Their checkpoint through their loader: the parameters, and the JAX forward and input
    Jacobian at ``points`` (float32, as trained)."""
    import jax
    import numpy as np
    from einstein_fields.utils.utils_train import get_model_and_params_checkpoint
    from flax.traverse_util import flatten_dict

    jax.config.update("jax_default_matmul_precision", "highest")
    model, params = get_model_and_params_checkpoint(run_dir)
    points = np.load(points_path).astype(np.float32)

    def apply(x):
        return model.apply(params, x)

    values = jax.vmap(apply)(points)
    jacobians = jax.vmap(jax.jacfwd(apply))(points)  # [N, out, 4]
    weights = {"/".join(k): np.asarray(v) for k, v in flatten_dict(params).items()}
    np.savez(out_path, values=np.asarray(values), jacobians=np.asarray(jacobians), **weights)


# --------------------------------------------------------------------------- torch side
class OfficialMLP:
    """Their flax ``MLP`` in torch, from its parameters: ``Dense_0 .. Dense_L`` (kernels
    ``[in, out]``), SiLU after every Dense but the last, raw coordinates in.

    Args:
        weights: ``{"params/Dense_i/kernel": [in, out], "params/Dense_i/bias": [out]}``.
        metric_type: their ``training.metric_type`` (what the output means).
        spacetime: ours (its flat metric is added back for ``distortion*``).
    """

    def __init__(self, weights: dict, metric_type: str, spacetime) -> None:
        import torch

        count = len([k for k in weights if k.endswith("/kernel")])
        self.layers = []
        for index in range(count):
            kernel = torch.from_numpy(weights[f"params/Dense_{index}/kernel"]).float()
            bias = torch.from_numpy(weights[f"params/Dense_{index}/bias"]).float()
            self.layers.append((kernel.T.contiguous(), bias))
        self.metric_type = metric_type
        self.spacetime = spacetime
        self.outputs = self.layers[-1][1].shape[0]
        if metric_type.endswith("_sym") != (self.outputs == 10):
            raise ValueError(f"metric_type {metric_type} with {self.outputs} network outputs")

    def parameter_count(self) -> int:
        return sum(w.numel() + b.numel() for w, b in self.layers)

    def __call__(self, coords):
        """``[..., 4]`` chart coordinates -> ``[..., outputs]``."""
        import torch.nn.functional as F

        x = coords.float()
        for index, (weight, bias) in enumerate(self.layers):
            x = F.linear(x, weight, bias)
            if index < len(self.layers) - 1:
                x = F.silu(x)
        return x

    def metric(self, coords):
        """``g [..., 4, 4]`` as their code reads the output (``reconstruct_full_metric`` for 10
        components, a row-major reshape for 16), plus ``eta`` for a distortion target."""
        from tensorfield.datasets.einfield_data import components_to_matrix

        out = self(coords)
        if self.outputs == 10:
            g = components_to_matrix(out)
        else:
            g = out.reshape(*out.shape[:-1], 4, 4)
        if self.metric_type.startswith("distortion"):
            g = g + self.spacetime.flat_metric(coords.double()).float()
        return g


def conversion_check(model: OfficialMLP, points, jax_values, jax_jacobians) -> dict:
    """Largest difference of the torch forward (and its input Jacobian) from JAX's, relative
    to the largest JAX value of each."""
    import torch
    from torch.func import jacfwd, vmap

    values = model(points.float()).detach()
    jacobians = vmap(jacfwd(model))(points.float()).detach()
    jax_values, jax_jacobians = torch.from_numpy(jax_values), torch.from_numpy(jax_jacobians)
    value_diff = float((values - jax_values).abs().max() / jax_values.abs().max())
    jacobian_diff = float((jacobians - jax_jacobians).abs().max() / jax_jacobians.abs().max())
    return {
        "points": int(points.shape[0]),
        "forward_max_rel_diff": value_diff,
        "jacobian_max_rel_diff": jacobian_diff,
        "conversion_max_rel_diff": max(value_diff, jacobian_diff),
        "tolerance": CONVERSION_TOLERANCE,
        "ok": max(value_diff, jacobian_diff) < CONVERSION_TOLERANCE,
    }


def held_out_errors(model: OfficialMLP, data) -> dict:
    """Our held-out evaluation (``EinFieldData.evaluate``) with their network as the metric."""
    import torch
    from tensorfield.fields.einfield_targets import CHUNK, curvature_errors
    from tensorfield.fields.relativity import curvature

    coords = data.held_out_points()
    predicted, true = [], []
    for chunk in coords.split(CHUNK):
        predicted.append(curvature(model.metric, chunk.to(torch.float32)))
        true.append(curvature(data.spacetime.metric, chunk))
    return curvature_errors(predicted, true, coords, data.spacetime, data.config.mass, "distortion")


# --------------------------------------------------------------------------- the driver
def _fail(message: str) -> None:
    raise SystemExit(f"einfields_official.py: {message}")


def _child_env(official: Path, extra_path: list[Path]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(official), *map(str, extra_path)])
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        WANDB_MODE="disabled",
        WANDB_SILENT="true",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


def _run(command: list[str], env: dict, cwd: Path, log: Path, what: str) -> dict:
    """Run a child; its output goes to ``log``. Returns wall and CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(log, "w") as sink:
        code = subprocess.call(command, env=env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        _fail(f"{what} failed (exit {code}; log {log}): {tail[0]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cpu_per_wall": round(cpu / wall, 2)}


def data_config(config, data_root: Path) -> dict:
    """Their data-generation config for our packaged Schwarzschild KS grid."""
    low, high = list(config.domain_min), list(config.domain_max)
    shape = [1 if high[0] == low[0] else config.time_samples] + [config.grid_size] * 3
    return {
        "metric": "Schwarzschild",
        "metric_args": {"M": float(config.mass)},
        "coordinate_system": CHART,
        "other_coordinate_systems": [],
        "grid_shape": shape,
        "grid_range": [[float(a), float(b)] for a, b in zip(low, high)],
        "endpoint": [True] * 4,  # torch.linspace's grid
        "store_quantities": {"store_symmetric": True, "store_distortion": True, "store_GR_tensors": False},
        "compute_volume_element": False,
        "problem": PROBLEM,
        "data_dir": str(data_root),
    }


def train_config(args, data_dir: Path, log_dir: Path, epochs: int) -> dict:
    """Their training config (the structure of their ``config_train.yml``, no wandb)."""
    return {
        "log_dir": str(log_dir),
        "run_dir": "",
        "checkpoint": {"load_dir": "", "reset_optimizer": False},
        "data": {"data_dir": str(data_dir), "losses": {"jacobian": True, "hessian": False}},
        "architecture": {
            "model_name": "MLP",
            "hidden_dim": args.hidden,
            "output_dim": 10 if args.metric_type.endswith("_sym") else 16,
            "num_layers": args.layers,
            "activation": "silu",
            "extra_model_args": {},
        },
        "optimizer": {
            "name": "adam",
            "extra_optimizer_args": {"b1": 0.9, "b2": 0.999, "eps": 1.0e-8},
            "learning_rate": float(args.lr),
            "lr_scheduler": "cosine_decay",
            "extra_scheduler_args": {
                "decay_steps": int(epochs * args.num_batches),
                "alpha": 1.0e-3,
                "exponent": 1.0,
            },
        },
        "training": {
            "epochs": int(epochs),
            "num_batches": int(args.num_batches),
            "gradient_conflict": None,
            "rng_seed": 0,
            "norm": "mse",
            "integration": False,
            "metric_type": args.metric_type,
        },
    }


def compare_data(data, problem_dir: Path, metric_type: str) -> dict:
    """Largest differences between their training arrays and ours (same points, same order)."""
    import numpy as np
    import torch

    root = problem_dir / CHART / "no_scale"
    kind = metric_type.split("_sym")[0]
    folder = root / kind / ("symmetric" if metric_type.endswith("_sym") else "") / "training"
    coords = torch.from_numpy(np.load(root / "coords_train.npy"))
    if coords.shape != data.coords.shape:
        _fail(f"{root / 'coords_train.npy'}: {tuple(coords.shape)} points, ours {tuple(data.coords.shape)}")
    result = {"coords": float((coords - data.coords).abs().max())}
    if metric_type == "distortion_sym":  # the same quantity as our `target: distortion`
        values = torch.from_numpy(np.load(folder / "metric.npy"))
        jacobians = torch.from_numpy(np.load(folder / "jacobian.npy")).reshape(-1, 4, 10)
        result["distortion"] = float((values - data.values).abs().max())
        result["jacobian"] = float((jacobians.transpose(1, 2) - data.jacobians).abs().max())
    return result


def _stand_ins(python: str, folder: Path, env: dict) -> list[Path]:
    """A folder of stand-ins for the modules the JAX Python cannot import ([] if none needed)."""
    missing = [
        name
        for name in STAND_INS
        if subprocess.call([python, "-c", f"import {name}"], env=env, stderr=subprocess.DEVNULL) != 0
    ]
    for name in missing:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(STAND_INS[name])
    return [folder] if missing else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="exported work tree of AndreiB137/EinFields")
    parser.add_argument("--python", required=True, help="a Python with jax, flax, optax, orbax, ml-collections, wandb")
    parser.add_argument("--budget-s", type=float, default=900.0, help="training seconds (default 900 = 15 min)")
    parser.add_argument("--probe-epochs", type=int, default=3, help="epochs of the timing probe")
    parser.add_argument("--num-batches", type=int, default=64, help="batches per epoch (64: batches of 512, as ours)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4, help="their num_layers (hidden layers after the first)")
    parser.add_argument("--lr", type=float, default=1e-3, help="their default learning rate")
    parser.add_argument("--metric-type", default="distortion_sym", choices=["distortion_sym", "full_flatten_sym", "distortion", "full_flatten"])
    parser.add_argument("--check-points", type=int, default=64, help="held-out points of the JAX-vs-torch check")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the evaluation")
    parser.add_argument("--keep", default=None, help="keep the data, runs and logs in this folder")
    parser.add_argument("--worker", choices=["train", "forward"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker == "train":
        _worker_train(args.official, args.worker_args[0], float(args.worker_args[1]), args.worker_args[2])
        return 0
    if args.worker == "forward":
        _worker_forward(*args.worker_args)
        return 0

    official = Path(args.official).resolve()
    for part in ("data_generation/generate_data.py", "einstein_fields/main.py"):
        if not (official / part).is_file():
            _fail(f"{official}: not an EinFields work tree (no {part})")
    if not Path(args.python).is_file():
        _fail(f"{args.python}: no such Python")

    import numpy as np
    import torch
    import yaml
    from tensorfield.engine.config import load_config
    from tensorfield.fields.einfield_targets import EinFieldData

    torch.set_num_threads(args.threads)
    config = load_config(str(CONFIG))
    data = EinFieldData(config)
    timing: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.keep).resolve() if args.keep else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        env = _child_env(official, [])
        env = _child_env(official, _stand_ins(args.python, work / "stand_ins", env))
        me = str(Path(__file__).resolve())

        # (a) their data generator on our grid
        generate = work / "generate"
        (generate / "configs").mkdir(parents=True, exist_ok=True)
        data_root = work / "data"
        data_root.mkdir(exist_ok=True)
        with open(generate / "configs" / "schwarzschild_spherical.yml", "w") as f:
            yaml.safe_dump(data_config(config, data_root), f, sort_keys=False)
        timing["data_generation"] = _run(
            [args.python, str(official / "data_generation" / "generate_data.py")],
            env, generate, work / "generate.log", "their data generation",
        )
        problem_dir = data_root / PROBLEM
        data_diff = compare_data(data, problem_dir, args.metric_type)
        data_dir = problem_dir / CHART / "no_scale"

        # (b) their training: a probe times an epoch, then the budgeted run
        def train(name: str, epochs: int, limit_s: float) -> tuple[Path, list[float], dict]:
            run_root = work / name
            (run_root / "logs").mkdir(parents=True, exist_ok=True)
            config_file = run_root / "config.yml"
            with open(config_file, "w") as f:
                yaml.safe_dump(train_config(args, data_dir, run_root / "logs", epochs), f, sort_keys=False)
            timing_file = run_root / "epochs.json"
            command = [args.python, me, "--official", str(official), "--python", args.python,
                       "--worker", "train", "--worker-args", str(config_file), str(limit_s), str(timing_file)]
            usage = _run(command, env, run_root, run_root / "train.log", f"their training ({name})")
            runs = [p for p in (run_root / "logs").iterdir() if (p / "checkpoint").is_dir()]
            if len(runs) != 1:
                _fail(f"{run_root / 'logs'}: expected one run with a checkpoint, found {len(runs)}")
            return runs[0], json.loads(timing_file.read_text())["epoch_end_s"], usage

        _, probe_ends, timing["probe"] = train("probe", args.probe_epochs, math.inf)
        per_epoch = sorted(b - a for a, b in zip(probe_ends, probe_ends[1:]))
        epoch_s = per_epoch[len(per_epoch) // 2] if per_epoch else probe_ends[0]
        compile_s = max(probe_ends[0] - epoch_s, 0.0)
        epochs = max(int((args.budget_s - compile_s) / epoch_s), 1)
        run_dir, ends, timing["train"] = train("run", epochs, SAFETY_FACTOR * args.budget_s)
        loss_lines = [l for l in (run_dir / "train.log").read_text().splitlines() if "Loss final" in l]

        # (c) their parameters -> torch; check against JAX; our held-out errors
        held_out = data.held_out_points()
        check = held_out[: args.check_points]
        np.save(work / "check_points.npy", check.float().numpy())
        forward_file = work / "forward.npz"
        timing["forward"] = _run(
            [args.python, me, "--official", str(official), "--python", args.python, "--worker", "forward",
             "--worker-args", str(run_dir), str(work / "check_points.npy"), str(forward_file)],
            env, work, work / "forward.log", "their checkpoint's forward",
        )
        saved = dict(np.load(forward_file))
        jax_values, jax_jacobians = saved.pop("values"), saved.pop("jacobians")
        model = OfficialMLP(saved, args.metric_type, data.spacetime)
        conversion = conversion_check(model, check, jax_values, jax_jacobians)
        if not conversion["ok"]:
            _fail(f"the torch copy of their network differs from JAX by {conversion['conversion_max_rel_diff']:.2e}")
        tick = time.perf_counter()
        errors = held_out_errors(model, data)
        timing["eval_s"] = round(time.perf_counter() - tick, 1)

    row = {
        "code": "official EinFields (JAX)",
        "spacetime": PROBLEM,
        "architecture": f"MLP num_layers={args.layers} hidden={args.hidden} silu ({len(model.layers) - 1} SiLU layers)",
        "metric_type": args.metric_type,
        "optimizer": f"adam lr {args.lr:g} cosine_decay alpha 1e-3 over {epochs * args.num_batches} steps",
        "epochs": len(ends),
        "planned_epochs": epochs,
        "steps": len(ends) * args.num_batches,
        "batch_size": data.coords.shape[0] // args.num_batches,
        "train_s": round(ends[-1], 1),
        "probe_epoch_s": round(epoch_s, 3),
        "compile_s": round(compile_s, 1),
        "final_loss_line": loss_lines[-1].split("Loss final:")[-1].strip()[:200] if loss_lines else None,
        "params": model.parameter_count(),
        **{k: v for k, v in errors.items() if k.endswith("rel_l2") or k.startswith("num_points")},
    }
    print(json.dumps({
        "benchmark": "einfields_official",
        "budget_s": args.budget_s,
        "row": row,
        "conversion": conversion,
        "data_max_abs_diff": data_diff,
        "timing": timing,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
