"""Training in a background thread with the viewer attached, free of Qt.

The common trainer (:meth:`Trainer.train`) runs in its own thread with a
:class:`~tensorfield.engine.trainer.TrainingCallback`:

* ``before_step``: waits while paused; asks the trainer to stop (:meth:`Trainer.request_stop`)
  when the viewer is closed or Stop is pressed;
* ``after_step``: at most every ``snapshot_interval`` seconds, publishes the loss / PSNR and a
  deep copy of the model. The copy is taken between two steps, so it is consistent (after
  upsampling or densification), and the viewer renders from it while training goes on: the two
  threads never share a tensor.

A stopped run writes a checkpoint (the trainer does), so ``tensorfield train --resume``
continues it.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensorfield.engine.metrics import mse_to_psnr
from tensorfield.engine.trainer import TrainingCallback


@dataclass
class TrainingProgress:
    step: int
    total: int
    loss: float | None
    psnr: float | None
    steps_per_s: float | None


def snapshot_model(model):
    """A deep copy of ``model`` for rendering, in eval mode.

    Snapshots are replaced every ``snapshot_interval``, so building an inference cache for each
    (TensoRF's dense grids, ~0.7 s on lego) would cost more than it saves: it is turned off,
    except for models that would build it for every frame without it
    (:attr:`~tensorfield.fields.base.Field.render_cache_required`: the Einstein field's
    Christoffel grid), which then build it once per snapshot.
    """
    clone = copy.deepcopy(model)
    clone.eval()
    clone.allow_render_cache = bool(type(clone).render_cache_required)
    return clone


class _LiveCallback(TrainingCallback):
    def __init__(self, live: "LiveTraining"):
        self.live = live

    def before_step(self, trainer, step):
        live = self.live
        while not live._running.wait(0.1):
            if live._stop.is_set():
                break
        if live._stop.is_set():
            trainer.request_stop()

    def after_step(self, trainer, step, output):
        live = self.live
        live._last_output = output
        live._steps_since += 1
        now = time.perf_counter()
        if now - live._last_publish >= live.snapshot_interval or step + 1 >= trainer.config.steps:
            live._publish(step + 1, now, trainer.model)


class LiveTraining:
    """Runs ``trainer.train()`` in a daemon thread with pause / resume / stop.

    Args:
        trainer: a :class:`~tensorfield.engine.trainer.Trainer` ready to train.
        on_progress: ``(TrainingProgress, model_snapshot)``, called from the training thread.
        on_finished: ``(summary | None, error_message | None, stopped)``, from the training thread.
        snapshot_interval: seconds between two published snapshots.
    """

    def __init__(
        self,
        trainer,
        on_progress: Callable[[TrainingProgress, object], None],
        on_finished: Callable[[dict | None, str | None, bool], None],
        snapshot_interval: float = 0.5,
        progress_bar: bool = False,
    ):
        self.trainer = trainer
        self._on_progress = on_progress
        self._on_finished = on_finished
        self.snapshot_interval = snapshot_interval
        self.progress_bar = progress_bar
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self._last_output = None
        self._last_publish = -math.inf
        self._last_step_time = None
        self._steps_since = 0
        self._thread: threading.Thread | None = None
        self.outcome: str | None = None  # "finished", "stopped" or "failed" once the thread ends

    # ------------------------------------------------------------------ control (any thread)
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tensorfield-train", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop after the current step (a checkpoint is written); returns whether it ended."""
        self._stop.set()
        self._running.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.alive

    # ------------------------------------------------------------------ training thread
    def _publish(self, step: int, now: float, model) -> None:
        output = self._last_output
        loss = psnr = None
        if output is not None:
            loss = float(output.loss.detach())
            mse = output.metrics.get("mse")
            psnr = mse_to_psnr(float(mse)) if mse is not None else None
        rate = None
        if self._last_step_time is not None and now > self._last_step_time:
            rate = self._steps_since / (now - self._last_step_time)
        self._last_step_time, self._steps_since, self._last_publish = now, 0, now
        with torch.no_grad():
            snapshot = snapshot_model(model)
        self._on_progress(TrainingProgress(step, int(self.trainer.config.steps), loss, psnr, rate), snapshot)

    def _run(self) -> None:
        summary, error, stopped = None, None, False
        try:
            summary = self.trainer.train(progress=self.progress_bar, callbacks=[_LiveCallback(self)])
            stopped = bool(summary.get("stopped"))
        except Exception as err:
            lines = str(err).strip().splitlines()
            error = f"{type(err).__name__}: {lines[0] if lines else ''}"
        if not stopped and error is None:
            self._publish(self.trainer.step, time.perf_counter(), self.trainer.model)
        self.outcome = "stopped" if stopped else ("failed" if error else "finished")
        self._on_finished(summary, error, stopped)
