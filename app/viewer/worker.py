"""The viewer's render thread, free of Qt.

One background thread owns every use of the model the viewer shows: frames, loading runs and
rendering videos. The UI thread only posts requests and receives results through callbacks
(the Qt window turns them into queued signals), so it never waits on a render.

* Frame requests go into a single slot: a newer request replaces one that has not started, so
  a fast-moving camera never builds a backlog.
* Tasks (load a run, render a camera path to MP4) are queued and always run, ahead of frames.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tensorfield.app.viewer.camera import ViewCamera
from tensorfield.engine.render import render_image, render_slice
from tensorfield.fields.base import BodyPose, RenderRequest, SliceRequest


@dataclass(frozen=True)
class SliceView:
    """A frame that shows a field slice instead of a camera view (coordinate models).

    Attributes:
        request: the plane and component; its resolution and time are the frame's.
        log: colour ``log10 |value|``.
    """

    request: SliceRequest
    log: bool = False


@dataclass(frozen=True)
class FrameRequest:
    """One frame to render.

    Attributes:
        camera: the view.
        width, height: render size in pixels (already scaled for previews).
        time: normalised time, ``None`` for static scenes.
        identity: subject of an avatar model (``None`` elsewhere).
        frame: pose / frame of a model with per-frame inputs (``None`` elsewhere).
        mode: ``rgb``, ``depth`` or ``alpha``.
        background: RGB in [0, 1].
        generation: the view's change counter when requested (results of older generations are stale).
        level: refinement level (0 = preview; the last level is full resolution).
        final: whether this is the full-resolution frame.
        slice: show this field slice (``height`` samples per side, at ``time``) as a colour map
            with a colour bar instead of the camera's view; ``None``: the camera's view.
        pose: an explicit :class:`~tensorfield.fields.base.BodyPose` (pose-sequence playback of
            a model driven by poses), replacing the frame's; ``None`` elsewhere.
    """

    camera: ViewCamera
    width: int
    height: int
    time: float | None
    identity: int | None
    mode: str
    background: tuple[float, float, float]
    frame: int | None = None
    generation: int = 0
    level: int = 0
    final: bool = True
    slice: SliceView | None = None
    pose: BodyPose | None = None

    def cameras(self):
        return self.camera.cameras(self.width, self.height, self.time)

    def render_request(self) -> RenderRequest:
        """The engine's request for this frame (what ``tensorfield render`` would be given)."""
        time_value = self.time if self.time is not None and math.isfinite(self.time) else None
        background = torch.tensor(self.background, dtype=torch.float32)
        return RenderRequest(self.cameras(), 0, background, time_value, self.identity, self.frame, self.mode, self.pose)

    def slice_request(self) -> SliceRequest:
        """The engine's slice request of a slice frame: ``height`` samples per side, at the
        frame's time (``None`` for static models)."""
        time_value = self.time if self.time is not None and math.isfinite(self.time) else None
        return dataclasses.replace(self.slice.request, resolution=self.height, time=time_value)


@dataclass
class FrameResult:
    request: FrameRequest
    image: np.ndarray | None  # [H, W, 3] uint8
    seconds: float
    error: str | None = None


def render_request(model, request: FrameRequest) -> np.ndarray:
    """The image of ``request`` through the engine's render service (what the CLI uses): the
    camera's view, or a slice frame's figure (:func:`~tensorfield.engine.render.render_slice`
    with its colour bar)."""
    if request.slice is not None:
        return render_slice(model, request.slice_request(), log=request.slice.log, colorbar=True)
    return render_image(model, request.render_request())


class RenderWorker:
    """A daemon thread rendering the newest frame request and running queued tasks.

    Args:
        on_frame: called (in the worker thread) with each :class:`FrameResult`.
    """

    def __init__(self, on_frame: Callable[[FrameResult], None]):
        self._on_frame = on_frame
        self._condition = threading.Condition()
        self._pending: FrameRequest | None = None
        self._tasks: deque[tuple[Callable[[], Any], Callable[[Any, str | None], None]]] = deque()
        self._stopping = False
        self._model = None
        self.frames_rendered = 0
        self.frames_superseded = 0
        self.busy = False
        self._thread = threading.Thread(target=self._run, name="tensorfield-render", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ UI-thread side
    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def set_model(self, model) -> None:
        """Show ``model`` from the next frame on (the one being rendered keeps its model)."""
        with self._condition:
            self._model = model

    @property
    def model(self):
        return self._model

    def request(self, request: FrameRequest) -> None:
        """Render ``request`` next, replacing any request that has not started."""
        with self._condition:
            if self._pending is not None:
                self.frames_superseded += 1
            self._pending = request
            self._condition.notify()

    def run_task(self, task: Callable[[], Any], on_done: Callable[[Any, str | None], None]) -> None:
        """Run ``task()`` in the worker; ``on_done(result, error_message)`` follows in the worker."""
        with self._condition:
            self._tasks.append((task, on_done))
            self._condition.notify()

    def idle(self) -> bool:
        with self._condition:
            return not self.busy and self._pending is None and not self._tasks

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to end after its current job; returns whether it has ended."""
        with self._condition:
            self._stopping = True
            self._pending = None
            self._tasks.clear()
            self._condition.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ worker side
    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopping and self._pending is None and not self._tasks:
                    self._condition.wait()
                if self._stopping:
                    return
                self.busy = True
                if self._tasks:
                    task, on_done = self._tasks.popleft()
                    request = None
                else:
                    request, self._pending = self._pending, None
                model = self._model
            try:
                if request is None:
                    self._run_task(task, on_done)
                else:
                    self._render(model, request)
            finally:
                with self._condition:
                    self.busy = False

    def _run_task(self, task, on_done) -> None:
        try:
            result, error = task(), None
        except Exception as err:  # reported to the UI, which shows a dialog
            result, error = None, _one_line(err)
        on_done(result, error)

    def _render(self, model, request: FrameRequest) -> None:
        if model is None:
            return
        tick = time.perf_counter()
        try:
            image, error = render_request(model, request), None
        except Exception as err:
            traceback.print_exc()
            image, error = None, _one_line(err)
        self.frames_rendered += 1
        self._on_frame(FrameResult(request, image, time.perf_counter() - tick, error))


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
