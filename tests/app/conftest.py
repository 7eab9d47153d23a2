"""Viewer tests run headless (Qt's offscreen platform, set before any QApplication exists);
a tiny dynamic field and cameras for them."""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"

import math
import time as clock

import torch
from tensorfield.datasets.cameras import Cameras, orbit_poses
from tensorfield.fields.base import BatchKind, Field, ParamGroup, RenderOutput, StepOutput
from torch import nn


class ToyDynamicField(Field):
    """``rgb = 0.5 + 0.5 sin(3 d + 6 t)`` for unit ray direction ``d`` and time ``t``; ``delay``
    seconds of sleep per render imitate a slow model."""

    batch_kind = BatchKind.IMAGES

    def __init__(self, delay: float = 0.0):
        super().__init__()
        self.phase = nn.Parameter(torch.zeros(3))
        self.delay = delay
        self.rendered_times: list[float | None] = []

    def param_groups(self):
        return [ParamGroup("phase", [self.phase], 1e-2)]

    def training_step(self, batch, step):
        return StepOutput(self.phase.sum() * 0)

    def time_span(self):
        return (0.0, 1.0)

    def render_view(self, request):
        cameras, index, time = request.cameras, request.index, request.time
        if self.delay:
            clock.sleep(self.delay)
        self.rendered_times.append(time)
        t = float(cameras.times[index]) if time is None else float(time)
        t = 0.0 if not math.isfinite(t) else t
        _, directions = cameras.generate_rays(index)
        rgb = 0.5 + 0.5 * torch.sin(3.0 * directions + 6.0 * t + self.phase)
        alpha = torch.ones(cameras.height, cameras.width)
        return RenderOutput(rgb=rgb, depth=alpha * 2.0, alpha=alpha)


def toy_cameras(n: int = 4, size: int = 16, dynamic: bool = True) -> Cameras:
    times = torch.linspace(0, 1, n) if dynamic else None
    return Cameras.from_fov(orbit_poses(n, 4.0), size, size, math.radians(45), times=times)
