"""The common, model-agnostic trainer.

One loop trains every model family through the :class:`~tensorfield.fields.base.Field` contract::

    for step in range(start, config.steps):
        react(model.before_step(step))
        batch = source.sample(config.batch_size, sampler_generator)   # rays, images or coordinates
        set each group's lr = lr * decay_ratio ** ((step - base_step) / decay_steps)
        out = model.training_step(batch, step); out.loss.backward(); adam.step()
        react(model.after_step(step))       # rebuild optimiser / refilter rays / move optimiser state (surgery)
        log, evaluate, checkpoint

Run directory layout::

    run_dir/
      config.yaml                     resolved config (loadable with load_config)
      scene_transform.json            input -> model similarity of the data (tensorfield.engine.scene_frame)
      checkpoints/step_NNNNNN.ckpt    see tensorfield.engine.checkpoint for the format
      metrics.jsonl                   one JSON object per log line (see tensorfield.engine.logger)
      renders/<split>/NNN.png         evaluation renders, NNN_depth.png colour-mapped depth
      eval.json                       test-split metrics (eval_<split>.json for other splits)

Reproducibility: the global RNGs are seeded from ``config.seed``, batches are drawn from a
dedicated CPU ``torch.Generator``, and evaluation runs inside :func:`torch.random.fork_rng` so it
never perturbs training. Checkpoints store every RNG state (torch, CUDA, numpy, Python, the
sampler generator and ``model.generator`` if the model draws from its own ``torch.Generator``),
the optimiser, the schedule's base step and the active-ray mask, so on the CPU training N steps
straight equals training k steps, resuming and training N - k more, bit for bit.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensorfield.engine.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    open_checkpoint,
    save_checkpoint,
    set_aside,
)
from tensorfield.engine.config import ConfigError, config_from_dict, save_config, validate_config
from tensorfield.engine.logger import MetricsLogger
from tensorfield.engine.data import load_scene_for  # noqa: F401 - re-exported
from tensorfield.engine.metrics import mse_to_psnr
from tensorfield.engine.optim import apply_lr_schedule, apply_param_surgery, build_optimizer
from tensorfield.engine.scene_frame import record_scene_transform
from tensorfield.fields.base import Field, HookResult, TrainingData

EVAL_FILE = "eval.json"


class DeviceError(ValueError):
    """A device that was asked for but cannot be used (one line)."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN), described in one line."""


# ------------------------------------------------------------------------------------ helpers
def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The device to train on.

    Args:
        name: ``None``/``"auto"`` picks ``cuda`` when available, else ``cpu``; anything else
            (``"cpu"``, ``"cuda"``, ``"cuda:1"``) is honoured.

    Raises:
        DeviceError: unknown name, or CUDA requested but not available.
    """
    if name is None or str(name) in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device '{name}' (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise DeviceError(f"device '{name}' requested but CUDA is not available ({why}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device '{name}' requested but only {torch.cuda.device_count()} GPU(s) are visible")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _spec(config):
    from tensorfield.fields import registry

    try:
        return registry.get_method(config.method)
    except registry.RegistryError as err:
        raise ConfigError(str(err)) from None


def build_model(config, scene_info) -> Field:
    """Instantiate the registered model of ``config.method`` as ``model(config, scene_info)``."""
    return _spec(config).model_class()(config, scene_info)


def build_data(config, path: str | os.PathLike | None = None, scene=None) -> TrainingData:
    """The training data ``config.method`` names (its ``MethodSpec.data`` factory).

    Args:
        config: the method's config (image methods read ``data``, ``downscale``, ``background``...).
        path: the data path, if not ``config.data`` (``None`` for data named by the config alone).
        scene: an already loaded scene the factory may wrap instead of loading (tests, scripts).
    """
    path = path if path is not None else (config.data or None)
    return _spec(config).data_factory()(config, None if path is None else str(path), scene=scene)


class TrainingCallback:
    """Hooks into :meth:`Trainer.train` (subclass and override what you need; all optional).

    ``before_step(trainer, step)`` runs before each step (it may block, e.g. to pause, or call
    :meth:`Trainer.request_stop`); ``after_step(trainer, step, output)`` runs after the optimiser
    step, the model's hooks and the step counter update (``trainer.step == step + 1``) with the
    step's :class:`~tensorfield.fields.base.StepOutput`. Both run in the training thread, between
    steps, so the model is consistent there (e.g. to copy it for a viewer).
    """

    def before_step(self, trainer: "Trainer", step: int) -> None:
        """Called before ``step``; the default does nothing."""

    def after_step(self, trainer: "Trainer", step: int, output) -> None:
        """Called after ``step`` with its output; the default does nothing."""


def _capture_rng() -> dict:
    numpy_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Window:
    """Per-step values accumulated between two log lines (synchronised only when logged)."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.metrics: dict[str, list[float]] = {}
        self.lrs: dict[str, float] = {}
        self.seconds = 0.0

    def add(self, loss: torch.Tensor, metrics: dict, lrs: dict[str, float], seconds: float) -> None:
        self.losses.append(loss.detach())
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append(value)
        self.lrs = lrs
        self.seconds += seconds

    def __len__(self) -> int:
        return len(self.losses)


# ------------------------------------------------------------------------------------ trainer
class Trainer:
    """Trains one :class:`Field` on its :class:`~tensorfield.fields.base.TrainingData`, with
    evaluation, logging and checkpoints.

    Args:
        config: the method's resolved config (a :class:`MethodConfig` subclass).
        data: the training data (from the method's data factory, :func:`build_data`): it builds
            the batch source and evaluates; the trainer never looks inside it.
        model: the field to train (moved to ``device``).
        run_dir: output directory (created on demand).
        device: see :func:`resolve_device`.

    Raises:
        ConfigError: ``tensorboard=true`` without the tensorboard package.
    """

    def __init__(self, config, data: TrainingData, model: Field, run_dir: str | os.PathLike, device: str | torch.device | None = None):
        if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("tensorboard=true but the tensorboard package is not installed (pip install tensorboard)")
        validate_config(config)
        if not isinstance(data, TrainingData):
            raise TypeError(f"{type(data).__name__} is not TrainingData (scene_info, batch_source, eval_splits, evaluate)")
        self.config = config
        self.data = data
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device)
        self.run_dir = Path(run_dir)
        self.step = 0  # optimisation steps done
        self.base_step = 0  # first step of the current optimiser (lr schedule origin)
        self.elapsed_s = 0.0  # wall time spent in train(), over all sessions
        self.train_s = 0.0  # time spent in training steps only
        seed_everything(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)  # batches and random backgrounds
        self.optimizer, self._groups = build_optimizer(self.model, config)
        self._source = None
        self._pending_source_state: dict | None = None
        self._truncate_metrics = False  # a restored run drops metrics lines past its step when it trains
        self.checkpoint_path: Path | None = None  # the checkpoint this trainer was restored from
        self.skipped_checkpoints: list[tuple[Path, str, Path]] = []  # (unreadable, why, renamed to)
        self._logger: MetricsLogger | None = None

    # ----------------------------------------------------------------------- construction
    @classmethod
    def from_config(
        cls,
        config,
        run_dir: str | os.PathLike,
        *,
        data_path: str | os.PathLike | None = None,
        scene=None,
        data: TrainingData | None = None,
        device: str | torch.device | None = None,
    ) -> Trainer:
        """A fresh run: seed, build the method's data (``data_path`` or ``config.data``), build the model.

        Args:
            config: resolved config, e.g. from :func:`tensorfield.engine.config.load_config`.
            run_dir: output directory.
            data_path: dataset path; stored into ``config.data`` so resumes find it again.
            scene: an already loaded scene for the method's data factory to wrap (skips loading).
            data: ready training data (skips the factory).
            device: see :func:`resolve_device`.
        """
        validate_config(config)  # a config built in code: before any data is loaded
        if data_path is not None:
            config = dataclasses.replace(config, data=str(data_path))
        seed_everything(config.seed)
        data = data if data is not None else build_data(config, scene=scene)
        model = build_model(config, data.scene_info())
        return cls(config, data, model, run_dir, device)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        checkpoint: str | os.PathLike | None = None,
        fallback: bool = False,
        overrides: list[str] | tuple[str, ...] = (),
        run_dir: str | os.PathLike | None = None,
        data_path: str | os.PathLike | None = None,
        scene=None,
        data: TrainingData | None = None,
        model: Field | None = None,
        device: str | torch.device | None = None,
    ) -> Trainer:
        """Rebuild a run from a checkpoint file or a run directory (its newest checkpoint).

        The config stored in the checkpoint is used, with ``overrides`` on top (e.g.
        ``["steps=30000"]`` to train longer); the method's data factory rebuilds its data from it.
        The model is built from the registry unless given, reshaped with
        :meth:`Field.prepare_for_state` and loaded, and the optimiser, schedule, RNG and batch
        source states are restored, so :meth:`train` continues exactly where it stopped and
        :meth:`evaluate` evaluates the stored model.

        Args:
            path: ``.../checkpoints/step_NNNNNN.ckpt`` or a run directory.
            checkpoint: which checkpoint of the run (``step_50``, a name or a path; default: the newest),
                see :func:`~tensorfield.engine.checkpoint.resolve_checkpoint`.
            fallback: if that checkpoint is unreadable, continue from the newest readable earlier
                one; the unreadable newer ones are renamed ``<name>.corrupt`` (bytes kept) and listed
                in :attr:`skipped_checkpoints`. Without it the error names the intact earlier ones.
            overrides: ``key=value`` config overrides.
            run_dir: output directory (default: the run the checkpoint belongs to).
            data_path: dataset path if it moved (default: the stored ``config.data``).
            scene, data, model: already built objects (tests, or a caller that loaded them itself).
            device: see :func:`resolve_device`.

        Raises:
            CheckpointError: no checkpoint, or an unreadable one.
            ConfigError: bad overrides.
        """
        path = Path(path)
        checkpoint, stored, skipped = open_checkpoint(path, checkpoint, fallback=fallback)
        config = config_from_dict(stored["config"], overrides, source=str(checkpoint))
        if data_path is not None:
            config = dataclasses.replace(config, data=str(data_path))
        if run_dir is None:
            run_dir = checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent
        seed_everything(config.seed)
        data = data if data is not None else build_data(config, scene=scene)
        model = model if model is not None else build_model(config, data.scene_info())
        trainer = cls(config, data, model, run_dir, device)
        trainer._restore(stored, checkpoint)
        # a resume will write these steps again: keep the unreadable files' bytes, out of the way
        trainer.skipped_checkpoints = [(bad, reason, set_aside(bad, "corrupt")) for bad, reason in skipped]
        trainer.checkpoint_path = checkpoint
        return trainer

    def resume(self, checkpoint: str | os.PathLike | None = None) -> int:
        """Load a checkpoint (default: the newest in ``run_dir``) into this trainer.

        Returns:
            The number of steps already done.

        Raises:
            CheckpointError: none found, unreadable, or not matching the model.
        """
        path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(self.run_dir)
        if path is None:
            raise CheckpointError(f"{self.run_dir}: no checkpoint to resume from")
        self._restore(load_checkpoint(path), path)
        return self.step

    # ----------------------------------------------------------------------- state
    @property
    def batch_source(self):
        """The data's batch source for the model (built on first use; fresh ones get the model's
        filter, e.g. TensoRF's ray filter, restored ones their checkpointed state)."""
        if self._source is None:
            source = self.data.batch_source(self.model, self.device)
            self._source = source
            if self._pending_source_state is not None:
                source.load_state_dict(self._pending_source_state)
                self._pending_source_state = None
            else:
                self._refilter(source)
        return self._source

    def trainer_state(self) -> dict[str, Any]:
        """Everything besides model and optimiser needed to continue bit-exactly."""
        model_generator = self.model.generator
        return {
            "step": self.step,
            "base_step": self.base_step,
            "elapsed_s": self.elapsed_s,
            "train_s": self.train_s,
            "rng": _capture_rng(),
            "sampler_rng": self.generator.get_state(),
            "model_rng": model_generator.get_state() if model_generator is not None else None,
            "batch_source": self.batch_source.state_dict(),
        }

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_NNNNNN.ckpt`` for the current step (and prune old ones)."""
        return save_checkpoint(
            self.run_dir / CHECKPOINT_DIR / checkpoint_name(self.step),
            model=self.model,
            optimizer=self.optimizer,
            trainer_state=self.trainer_state(),
            config=self.config,
        )

    def _restore(self, data: dict, path: Path) -> None:
        try:
            self.model.prepare_for_state(data["shape_state"])
            self.model.load_state_dict(data["model"])
        except (RuntimeError, KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"{path}: does not fit {type(self.model).__name__} ({_one_line(err)})") from None
        self.model.to(self.device)
        self.optimizer, self._groups = build_optimizer(self.model, self.config)
        if data.get("optimizer") is not None:
            try:
                self.optimizer.load_state_dict(data["optimizer"])
            except (ValueError, KeyError) as err:
                raise CheckpointError(f"{path}: optimiser state does not fit ({_one_line(err)})") from None
        state = data["trainer"]
        self.step = int(state["step"])
        self.base_step = int(state["base_step"])
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
        self.train_s = float(state.get("train_s", 0.0))
        self.generator.set_state(state["sampler_rng"])
        model_generator = self.model.generator
        if state.get("model_rng") is not None and model_generator is not None:
            model_generator.set_state(state["model_rng"])
        self._pending_source_state = state.get("batch_source")
        if self._source is not None:
            self._source.load_state_dict(self._pending_source_state)
            self._pending_source_state = None
        _restore_rng(state["rng"])  # last: building the model above may have drawn numbers
        # only when training goes on: evaluating or rendering an earlier checkpoint keeps the log
        self._truncate_metrics = True

    # ----------------------------------------------------------------------- training
    @property
    def schedule_groups(self) -> list:
        """The :class:`~tensorfield.fields.base.ParamGroup` list of the current optimiser, whose
        ``lr`` / ``decay_ratio`` / ``decay_steps`` set each step's learning rate (a callback may
        retune ``decay_steps``, e.g. to end the decay at a wall-clock budget)."""
        return self._groups

    def request_stop(self) -> None:
        """Ask :meth:`train` (from any thread) to stop before its next step, write a checkpoint
        and return (``summary["stopped"]`` is then true and there is no final evaluation)."""
        self._stop_requested = True

    def train(
        self,
        progress: bool = True,
        final_eval: bool = True,
        callbacks: list[TrainingCallback] | tuple[TrainingCallback, ...] = (),
    ) -> dict[str, Any]:
        """Train up to ``config.steps`` (continuing from :attr:`step`), then evaluate.

        Args:
            progress: show a tqdm bar (loss, PSNR, it/s).
            final_eval: evaluate on the test split (or val) at the end.
            callbacks: :class:`TrainingCallback` objects called around every step.

        Returns:
            Summary: ``run_dir, method, steps, elapsed_s, train_s, it_per_s, loss, psnr,
            checkpoint``, ``eval`` (the evaluation's means, or ``None``) and ``stopped``
            (:meth:`request_stop` ended the run early).

        Raises:
            TrainingError: the loss became NaN or infinite.
        """
        from tqdm.auto import tqdm

        config = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, self.run_dir / "config.yaml")
        record_scene_transform(self.run_dir, self.data.scene_info())  # exports map back to the input frame
        if self._truncate_metrics:
            MetricsLogger(self.run_dir).truncate_after(self.step)
            self._truncate_metrics = False
        logger = self._get_logger()
        source = self.batch_source
        start_step = self.step
        start_train_s = self.train_s
        session_start = time.perf_counter()
        elapsed_before = self.elapsed_s
        window = _Window()
        last_record: dict[str, Any] = {}
        checkpoint_path = None
        bar = tqdm(
            total=config.steps, initial=self.step, disable=not progress, desc=config.method or "train",
            dynamic_ncols=True,
        )
        self._stop_requested = False
        stopped = False
        try:
            for step in range(self.step, config.steps):
                for callback in callbacks:
                    callback.before_step(self, step)
                if self._stop_requested:
                    stopped = True
                    break
                tick = time.perf_counter()
                self._react(self.model.before_step(step), next_step=step)
                batch = source.sample(config.batch_size, self.generator)
                lrs = apply_lr_schedule(self.optimizer, self._groups, step, self.base_step)
                output = self.model.training_step(batch, step)
                self.optimizer.zero_grad(set_to_none=True)
                output.loss.backward()
                self.optimizer.step()
                hook = self.model.after_step(step)
                self.step = step + 1
                self._react(hook, next_step=self.step)
                seconds = time.perf_counter() - tick
                self.train_s += seconds
                window.add(output.loss, output.metrics, lrs, seconds)
                bar.update(1)
                self.elapsed_s = elapsed_before + time.perf_counter() - session_start
                if _due(self.step, config.log_every) or self.step == config.steps:
                    last_record = self._log_window(window, logger)
                    window = _Window()
                    bar.set_postfix(loss=f"{last_record['loss']:.4g}", psnr=_fmt(last_record.get("psnr")))
                if _due(self.step, config.eval_every) and self.step < config.steps:
                    self._evaluate_and_log(logger, save_renders=False, write_json=False)
                if _due(self.step, config.checkpoint_every) or self.step == config.steps:
                    checkpoint_path = self.save_checkpoint()
                for callback in callbacks:
                    callback.after_step(self, step, output)
            if stopped:
                if window.losses:
                    last_record = self._log_window(window, logger)
                checkpoint_path = self.save_checkpoint()
        finally:
            bar.close()
            self.elapsed_s = elapsed_before + time.perf_counter() - session_start
        evaluation = self._evaluate_and_log(logger, save_renders=True, write_json=True) if final_eval and not stopped else None
        session_train_s = self.train_s - start_train_s
        return {
            "run_dir": str(self.run_dir),
            "method": config.method,
            "steps": self.step,
            "elapsed_s": self.elapsed_s,
            "train_s": self.train_s,
            "it_per_s": (self.step - start_step) / session_train_s if session_train_s > 0 else None,
            "loss": last_record.get("loss"),
            "psnr": last_record.get("psnr"),
            "checkpoint": str(checkpoint_path) if checkpoint_path is not None else None,
            "eval": {k: v for k, v in evaluation.items() if k != "per_image"} if evaluation else None,
            "stopped": stopped,
        }

    def _react(self, hook: HookResult | None, next_step: int) -> None:
        if hook is None:
            return
        if hook.surgery and not hook.rebuild_optimizer:
            apply_param_surgery(self.optimizer, self._groups, hook.surgery)
        if hook.rebuild_optimizer:
            self.optimizer, self._groups = build_optimizer(self.model, self.config)
            self.base_step = next_step
        if hook.refilter_rays and self._source is not None:
            self._refilter(self._source)

    def _refilter(self, source) -> None:
        counts = source.refilter(self.model)
        if counts is not None:
            before, after = counts
            self._get_logger().write({"step": self.step, "event": "ray_filter", "rays_before": before, "rays_after": after}, tag="data")

    def _log_window(self, window: _Window, logger: MetricsLogger) -> dict[str, Any]:
        loss = float(torch.stack(window.losses).mean())
        if not math.isfinite(loss):
            raise TrainingError(f"loss is {loss} at step {self.step} (try a lower learning rate)")
        record: dict[str, Any] = {"step": self.step, "loss": loss}
        mse = [float(value) for value in window.metrics.get("mse", [])]
        record["psnr"] = float(np.mean([mse_to_psnr(value) for value in mse])) if mse else None
        names = list(window.lrs)
        record["lr"] = window.lrs[names[0]] if names else None
        for name in names:
            record[f"lr/{name}"] = window.lrs[name]
        record["elapsed_s"] = self.elapsed_s
        record["it_per_s"] = len(window) / window.seconds if window.seconds > 0 else None
        for key, values in window.metrics.items():
            if key not in record:
                record[key] = float(np.mean([float(value) for value in values]))
        logger.write(record)
        return record

    # ----------------------------------------------------------------------- evaluation
    def evaluate(self, split: str = "test", save_renders: bool = True) -> dict[str, Any]:
        """Render every image of ``split`` (at most ``config.eval_max_images``) and score it.

        Writes ``renders/<split>/NNN.png`` and ``NNN_depth.png`` (if ``save_renders``) and
        ``eval.json`` (``eval_<split>.json`` for other splits) in the run directory. Runs without
        gradients and inside a forked RNG, so it never changes the course of training.

        Returns:
            ``split, step, num_images, psnr, ssim, lpips`` (mean; ``lpips`` is ``None`` unless
            available locally), ``render_s`` (mean seconds per image) and ``per_image``.
        """
        return self._evaluate(split, save_renders=save_renders, write_json=True)

    def _evaluate_and_log(self, logger: MetricsLogger, save_renders: bool, write_json: bool) -> dict | None:
        split = self._default_eval_split()
        if split is None:
            return None
        result = self._evaluate(split, save_renders=save_renders, write_json=write_json)
        logger.write({k: v for k, v in result.items() if k != "per_image"}, tag=f"eval_{split}")
        return result

    def default_eval_split(self) -> str | None:
        """The split a run is evaluated on: the data's first besides ``train`` (test, else val), or None."""
        splits = [name for name in self.data.eval_splits() if name != "train"]
        return splits[0] if splits else None

    _default_eval_split = default_eval_split

    def _evaluate(self, split: str, save_renders: bool, write_json: bool) -> dict[str, Any]:
        known = self.data.eval_splits()
        if split not in known:
            raise TrainingError(f"the data has no '{split}' split to evaluate (has: {', '.join(known) or 'none'})")
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        out_dir = self.run_dir / "renders" / split if save_renders else None
        was_training, allowed = self.model.training, self.model.allow_render_cache
        self.model.eval()
        if not self.model.render_cache_exact:
            self.model.allow_render_cache = False  # score the model, not an approximation of it
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                metrics = self.data.evaluate(self.model, split, out_dir, max_items=self.config.eval_max_images)
        finally:
            self.model.train(was_training)
            self.model.allow_render_cache = allowed
        result = {"split": split, "step": self.step, **metrics}
        if write_json:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            name = EVAL_FILE if split == "test" else f"eval_{split}.json"
            _write_json(self.run_dir / name, result)
        return result

    # ----------------------------------------------------------------------- scene access
    def _get_logger(self) -> MetricsLogger:
        if self._logger is None:
            self._logger = MetricsLogger(self.run_dir, tensorboard=self.config.tensorboard)
        return self._logger

    def close(self) -> None:
        """Flush and close the TensorBoard writer, if any."""
        if self._logger is not None:
            self._logger.close()
            self._logger = None


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _write_json(path: Path, data: dict) -> None:
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean(data), indent=1))
    os.replace(tmp, path)


def load_run(
    path: str | os.PathLike, device: str | torch.device | None = None, checkpoint: str | os.PathLike | None = None
) -> Trainer:
    """Open a run folder or checkpoint for evaluation, rendering, export or viewing.

    The model, its data and the trainer state come back as :meth:`Trainer.from_checkpoint`
    builds them (the same path as a resume). There is no fallback: an unreadable checkpoint is an
    error naming the intact earlier ones, to pick with ``checkpoint``.

    Args:
        path: run folder or checkpoint file.
        device: see :func:`resolve_device`.
        checkpoint: which checkpoint of the run (``step_50``, a name or a path; default: the newest).

    Raises:
        CheckpointError: no such run or checkpoint, or an unreadable one.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such run folder or checkpoint")
    return Trainer.from_checkpoint(path, checkpoint=checkpoint, device=device)
