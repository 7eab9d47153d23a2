"""A coordinate-batch method in one file (the contract's proof for Einstein fields).

``toy_wave`` learns u(t, x, y) = sin(k x) cos(k y) cos(pi t), k = pi / 2, from samples drawn by its own data
(named by its config; no ``--data``), evaluates its relative L2 error on a fixed grid, and exports
slices. It is registered as a plugin (``TENSORFIELD_METHODS=toy_wave_method:SPEC``) and touches no
file of tensorfield.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tensorfield.datasets.errors import DatasetError
from tensorfield.fields.base import (
    CoordinateBatch,
    Field,
    ParamGroup,
    SceneInfo,
    SliceRequest,
    StatelessSource,
    StepOutput,
)
from tensorfield.fields.config import MethodConfig, option
from tensorfield.fields.registry import MethodSpec
from torch import Tensor, nn


@dataclass
class ToyWaveConfig(MethodConfig):
    steps: int = option(300, "Optimisation steps.")
    batch_size: int = option(256, "Samples per step.")
    frequency: float = option(0.5, "Spatial frequency f of the target sin(f pi x) cos(f pi y) cos(pi t).")
    hidden: int = option(32, "Hidden width of the MLP.")
    lr: float = option(1e-2, "Adam learning rate.")
    eval_grid: int = option(12, "Evaluation grid points per axis.")


def target(config: ToyWaveConfig, coordinates: Tensor) -> Tensor:
    """``[B, 1]`` target at ``[B, 3]`` coordinates ``(t, x, y)``."""
    t, x, y = coordinates.unbind(-1)
    k = config.frequency * math.pi
    return (torch.sin(k * x) * torch.cos(k * y) * torch.cos(math.pi * t))[:, None]


class WaveSource(StatelessSource):
    """Uniform samples of the spacetime box ``t in [0, 1], x, y in [-1, 1]``."""

    def __init__(self, config: ToyWaveConfig, device: torch.device) -> None:
        self.config, self.device = config, device

    def sample(self, batch_size: int, generator: torch.Generator) -> CoordinateBatch:
        unit = torch.rand(batch_size, 3, generator=generator, dtype=torch.float64)
        coordinates = torch.cat([unit[:, :1], unit[:, 1:] * 2 - 1], dim=1).float()
        return CoordinateBatch(coordinates.to(self.device), target(self.config, coordinates).to(self.device))


class WaveData:
    """The toy's :class:`~tensorfield.fields.base.TrainingData`: an analytic spacetime."""

    def __init__(self, config: ToyWaveConfig) -> None:
        self.config = config

    def scene_info(self) -> SceneInfo:
        return SceneInfo(aabb=torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]]), near=0.0, far=1.0, is_dynamic=True)

    def batch_source(self, model: Field, device: torch.device) -> WaveSource:
        return WaveSource(self.config, device)

    def eval_splits(self) -> tuple[str, ...]:
        return ("test",)

    def evaluate(self, model: Field, split: str, out_dir: Path | None, max_items: int = 0) -> dict:
        n = self.config.eval_grid
        axes = torch.meshgrid(torch.linspace(0, 1, n), torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
        coordinates = torch.stack(axes, -1).reshape(-1, 3)
        device = next(iter(model.parameters())).device
        with torch.no_grad():
            prediction = model(coordinates.to(device)).cpu()
        truth = target(self.config, coordinates)
        error = float((prediction - truth).norm() / truth.norm())
        return {"rel_l2": error, "num_points": coordinates.shape[0]}


def wave_data(config: ToyWaveConfig, path: str | None = None, scene=None) -> WaveData:
    if path:
        raise DatasetError(path, "toy_wave samples its spacetime from the config; it takes no --data")
    return WaveData(config)


class ToyWave(Field):
    """An MLP u(t, x, y); has time and slices (no camera views)."""

    def __init__(self, config: ToyWaveConfig, scene: SceneInfo) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Linear(3, config.hidden), nn.SiLU(), nn.Linear(config.hidden, config.hidden), nn.SiLU(), nn.Linear(config.hidden, 1))

    def forward(self, coordinates: Tensor) -> Tensor:
        return self.net(coordinates)

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("net", list(self.net.parameters()), self.config.lr)]

    def training_step(self, batch: CoordinateBatch, step: int) -> StepOutput:
        mse = F.mse_loss(self(batch.coordinates), batch.values)
        return StepOutput(mse, {"mse": float(mse.detach())})

    # HasTime
    def time_span(self) -> tuple[float, float]:
        return (0.0, 1.0)

    # ExportsSlices
    def slice_components(self) -> tuple[str, ...]:
        return ("u", "abs_u")

    def default_slice(self) -> SliceRequest:
        return SliceRequest(origin=(0.0, 0.0, 0.0), axis_u=(0.0, 1.0, 0.0), axis_v=(0.0, 0.0, 1.0), resolution=32)

    def field_slice(self, request: SliceRequest) -> Tensor:
        points = request.points().float().reshape(-1, 3).to(next(self.parameters()).device)
        with torch.no_grad():
            values = self(points).reshape(request.resolution, request.resolution)
        return values.abs() if request.component == "abs_u" else values


SPEC = MethodSpec(
    name="toy_wave",
    config=f"{__name__}:ToyWaveConfig",
    model=f"{__name__}:ToyWave",
    summary="Test plugin: an MLP fitted to an analytic spacetime wave (coordinate batches).",
    data=f"{__name__}:wave_data",
)
