"""Einstein fields benchmark: Schwarzschild and Kerr (Kerr-Schild) at a fixed CPU time budget.

For each spacetime the packaged config (``configs/einfield_<name>.yaml``: the official EinFields
data, 32^3 grid of x, y in [-3, 3], z in [0.1, 3], Jacobian loss; a 4 x 64 SiLU MLP with the
radial envelope and features and importance-sampled batches; overrides such as ``hidden=128
layers=5 lr=1e-3 radial_features=false radial_envelope=false importance_sampling=0`` give the
official network and schedule) is trained by the
common trainer for ``--budget-s`` seconds of training: the step time is measured on a few steps
first and ``steps`` set so that the learning-rate decay ends at the budget (a callback also stops
the run at 1.1x the budget). Then the held-out evaluation (4096 uniform points, never the
training grid) gives relative L2 errors of the metric, Christoffels, Riemann and Kretschmann
(all points, and metric, Christoffels and Kretschmann outside r = 2M).

Storage: the network's parameters (float32 bytes) against the float32 training grid of the 10
metric components (``grid_bytes``) and with its Jacobian (``grid_with_jacobian_bytes``, what
Sobolev training consumes).

Prints ONE JSON line: ``{"rows": [{spacetime, steps, train_s, it_per_s, metric_rel_l2,
christoffel_rel_l2, riemann_rel_l2, kretschmann_rel_l2, kretschmann_outside_2m_rel_l2,
params, model_bytes, grid_bytes, compression, ...}], "threads": ..., "budget_s": ...}``.

Usage::

    python benchmarks/einfields.py --budget-s 900                 # the issue's 15 minutes
    python benchmarks/einfields.py --budget-s 60 --only schwarzschild_ks optimizer=soap
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from tensorfield.engine.trainer import TrainingCallback

SPACETIMES = ("schwarzschild_ks", "kerr_ks")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class _Budget(TrainingCallback):
    """Trainer callback: end the learning-rate decay and the run at ``limit_s`` training seconds.

    The models' schedules are per step (``lr * ratio ** (step / decay_steps)``); from the mean
    step time so far this sets every group's ``decay_steps`` to the steps that fit in the budget,
    so the rate at step ``k`` is ``lr * ratio ** (train_s / limit_s)``, and the decay finishes
    when the budget does (a fixed plan from a short probe overshoots when the host gets busier).
    """

    def __init__(self, limit_s: float, warmup_steps: int = 20) -> None:
        self.limit_s = limit_s
        self.warmup_steps = warmup_steps

    def before_step(self, trainer, step: int) -> None:
        if trainer.train_s >= self.limit_s:
            trainer.request_stop()
            return
        if step >= self.warmup_steps and trainer.train_s > 0:
            fit = max(int(step * self.limit_s / trainer.train_s), step + 1)
            for group in trainer.schedule_groups:
                group.decay_steps = fit


def measure_step_s(config, probe_steps: int) -> float:
    """Seconds per training step of ``config`` (median of ``probe_steps`` after one warm-up)."""
    from tensorfield.engine.optim import build_optimizer
    from tensorfield.engine.trainer import build_data, build_model

    data = build_data(config)
    model = build_model(config, data.scene_info())
    optimizer, _ = build_optimizer(model, config)
    source = data.batch_source(model, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(probe_steps + 1):
        tick = time.perf_counter()
        output = model.training_step(source.sample(config.batch_size, generator), 0)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - tick)
    return sorted(times[1:])[len(times[1:]) // 2]


def training_set_error(trainer) -> dict:
    """Relative L2 of the network's components (distortion or full) and their Jacobian on the
    training points themselves: beside the held-out ``distortion_rel_l2`` it separates fitting
    error (both large) from interpolation between training points (held-out much larger)."""
    from tensorfield.fields.einfield_targets import relative_l2

    model, data = trainer.model, trainer.data
    values, jacobians = [], []
    for chunk in data.coords.split(4096):
        value, jacobian, _ = model.jets(chunk, order=1)
        values.append(value.detach())
        jacobians.append(jacobian.detach())
    result = {"train_points_rel_l2": relative_l2(torch.cat(values), data.values)}
    if data.jacobians is not None:
        result["train_points_jacobian_rel_l2"] = relative_l2(torch.cat(jacobians), data.jacobians)
    return result


def run_one(name: str, budget_s: float, overrides: list[str], probe_steps: int, out_root: Path) -> dict:
    from tensorfield.engine.config import load_config
    from tensorfield.engine.trainer import Trainer

    path = CONFIGS / f"einfield_{name}.yaml"
    config = load_config(str(path), ["checkpoint_every=0", "log_every=100", *overrides])
    step_s = measure_step_s(config, probe_steps)
    # planned from the probe; _Budget retunes the decay and stops the run at the budget, so the
    # loop's own end is set well past it
    steps = max(int(budget_s / step_s), 10)
    config = load_config(
        str(path), ["checkpoint_every=0", "log_every=100", f"steps={3 * steps}", *overrides]
    )
    trainer = Trainer.from_config(config, out_root / name, device="cpu")
    started = time.perf_counter()
    summary = trainer.train(progress=False, final_eval=False, callbacks=[_Budget(budget_s)])
    wall_s = time.perf_counter() - started
    tick = time.perf_counter()
    evaluation = trainer.evaluate(save_renders=False)
    eval_s = time.perf_counter() - tick
    model = trainer.model
    train_error = training_set_error(trainer)
    params = sum(p.numel() for p in model.parameters())
    grid_points = trainer.data.coords.shape[0]
    grid_bytes = grid_points * 10 * 4
    row = {
        "spacetime": name,
        "overrides": overrides,
        "steps": trainer.step,
        "planned_steps": steps,
        "probe_step_s": round(step_s, 4),
        "train_s": round(summary["train_s"], 1),
        "wall_s": round(wall_s, 1),
        "it_per_s": round(summary["it_per_s"], 2) if summary["it_per_s"] else None,
        "eval_s": round(eval_s, 1),
        **{k: v for k, v in evaluation.items() if k.endswith("rel_l2") or k.startswith("num_points")},
        **train_error,
        "params": params,
        "model_bytes": params * 4,
        "grid_points": grid_points,
        "grid_bytes": grid_bytes,
        "grid_with_jacobian_bytes": grid_points * 50 * 4,
        "compression": round(grid_bytes / (params * 4), 2),
        "compression_with_jacobian": round(grid_points * 50 * 4 / (params * 4), 2),
    }
    trainer.close()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=900.0, help="training seconds per spacetime (default 900 = 15 min)")
    parser.add_argument("--only", choices=SPACETIMES, action="append", default=None, help="run only this spacetime (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a shared 2-core CPU)")
    parser.add_argument("--probe-steps", type=int, default=5, help="steps timed to plan the step count")
    parser.add_argument("--out", default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="config overrides KEY=VALUE for every spacetime (e.g. optimizer=soap)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        out_root = Path(args.out) if args.out else Path(scratch)
        for name in args.only or SPACETIMES:
            rows.append(run_one(name, args.budget_s, list(args.overrides), args.probe_steps, out_root))
    print(json.dumps({"benchmark": "einfields", "budget_s": args.budget_s, "threads": args.threads, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
