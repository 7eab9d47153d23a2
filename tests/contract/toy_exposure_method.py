"""An image-batch method with a per-frame input, in one file (the contract's proof for avatars).

``toy_exposure`` sees one fixed camera film a texture under a different, known exposure in every
frame (the per-frame input, as an avatar's skeleton pose). Its data (generated from the config, or
from a ``.npy`` texture given with ``--data``) serves whole images with ``extras["exposure"]``; even
frames train, odd frames test (held-out inputs, as novel poses). The model learns the texture;
renders of frame ``f`` (:attr:`RenderRequest.frame`) apply that frame's exposure, taken from
``SceneInfo.frame_inputs``. Registered as a plugin (``TENSORFIELD_METHODS=toy_exposure_method:SPEC``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tensorfield.datasets.cameras import Cameras, look_at
from tensorfield.engine.metrics import psnr
from tensorfield.engine.render import render_frame, to_uint8
from tensorfield.datasets.errors import DatasetError
from tensorfield.fields.base import (
    Field,
    ImageBatch,
    ParamGroup,
    RenderOutput,
    RenderRequest,
    SceneInfo,
    StatelessSource,
    StepOutput,
)
from tensorfield.fields.config import MethodConfig, option
from tensorfield.fields.registry import MethodSpec
from torch import Tensor, nn


@dataclass
class ToyExposureConfig(MethodConfig):
    steps: int = option(200, "Optimisation steps.")
    batch_size: int = option(2, "Frames per step.")
    size: int = option(16, "Image side in pixels.")
    frames: int = option(8, "Frames filmed (even: train, odd: test).")
    lr: float = option(0.05, "Adam learning rate of the texture.")


def _texture(size: int) -> Tensor:
    v, u = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([0.2 + 0.6 * u, 0.2 + 0.6 * v, 0.5 + 0.3 * torch.sin(6 * u) * torch.cos(4 * v)], -1)


class ExposureSource(StatelessSource):
    def __init__(self, data: ExposureData, device: torch.device) -> None:
        self.data, self.device = data, device
        self.frames = data.train_frames

    def sample(self, batch_size: int, generator: torch.Generator) -> ImageBatch:
        picks = torch.randperm(len(self.frames), generator=generator)[:batch_size]
        frames = self.frames[picks]
        return ImageBatch(
            cameras=self.data.cameras(len(frames)).to(self.device),
            images=self.data.images[frames].to(self.device),
            alphas=None,
            background=torch.ones(3, device=self.device),
            indices=picks.to(self.device),
            extras={"exposure": self.data.exposures[frames].to(self.device), "frame": frames.to(self.device)},
        )


class ExposureData:
    """TrainingData and CameraData: one camera, a texture, a known exposure per frame."""

    def __init__(self, config: ToyExposureConfig, texture: Tensor) -> None:
        self.size = texture.shape[0]
        count = config.frames
        self.exposures = 0.5 + 0.5 * torch.arange(count, dtype=torch.float32) / max(count - 1, 1)
        self.images = (texture[None] * self.exposures[:, None, None, None]).clamp(0, 1)
        self.train_frames = torch.arange(0, count, 2)
        self.test_frames = torch.arange(1, count, 2)

    def cameras(self, count: int) -> Cameras:
        pose = look_at(torch.tensor([0.0, -3.0, 0.0]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
        return Cameras.from_fov(pose[None].expand(count, 3, 4), self.size, self.size, math.radians(40.0))

    # TrainingData
    def scene_info(self) -> SceneInfo:
        return SceneInfo(
            aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]), near=0.1, far=6.0,
            num_train_images=len(self.train_frames), frame_inputs={"exposure": self.exposures.clone()},
        )

    def batch_source(self, model: Field, device: torch.device) -> ExposureSource:
        return ExposureSource(self, device)

    def eval_splits(self) -> tuple[str, ...]:
        return ("test", "train")

    def evaluate(self, model: Field, split: str, out_dir: Path | None, max_items: int = 0) -> dict:
        import imageio.v2 as imageio

        frames = self.test_frames if split == "test" else self.train_frames
        cameras = self.cameras(len(frames))
        scores = []
        for i, frame in enumerate(frames.tolist()):
            output = render_frame(model, RenderRequest(cameras, i, torch.ones(3), frame=frame))
            scores.append(psnr(output.rgb.cpu(), self.images[frame]))
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                imageio.imwrite(out_dir / f"{i:03d}.png", to_uint8(output.rgb))
        return {"psnr": float(np.mean(scores)), "num_images": len(scores)}

    # CameraData
    def split_cameras(self) -> dict[str, Cameras]:
        return {"train": self.cameras(len(self.train_frames)), "test": self.cameras(len(self.test_frames))}

    def scene_box(self) -> Tensor:
        return torch.tensor([[-1.0] * 3, [1.0] * 3])

    def background_color(self) -> Tensor:
        return torch.ones(3)


def exposure_data(config: ToyExposureConfig, path: str | None = None, scene=None) -> ExposureData:
    if path:
        texture = torch.from_numpy(np.load(path)).float()
        if texture.ndim != 3 or texture.shape[0] != texture.shape[1] or texture.shape[2] != 3:
            raise DatasetError(path, f"expected a square [S, S, 3] texture, got {tuple(texture.shape)}")
        return ExposureData(config, texture)
    return ExposureData(config, _texture(config.size))


class ToyExposure(Field):
    """A learnt texture seen under a per-frame exposure; renders views, has frames."""

    def __init__(self, config: ToyExposureConfig, scene: SceneInfo) -> None:
        super().__init__()
        self.config = config
        self.texture = nn.Parameter(torch.full((config.size, config.size, 3), 0.5))
        self.register_buffer("exposures", scene.frame_inputs["exposure"].clone())

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("texture", [self.texture], self.config.lr)]

    def training_step(self, batch: ImageBatch, step: int) -> StepOutput:
        prediction = self.texture[None] * batch.extras["exposure"][:, None, None, None]
        mse = F.mse_loss(prediction, batch.images)
        return StepOutput(mse, {"mse": float(mse.detach())})

    # RendersViews
    def render_view(self, request: RenderRequest) -> RenderOutput:
        exposure = self.exposures[request.frame] if request.frame is not None else torch.ones((), device=self.texture.device)
        rgb = (self.texture * exposure).clamp(0, 1)
        ones = torch.ones(rgb.shape[:2], device=rgb.device)
        return RenderOutput(rgb=rgb, depth=3.0 * ones, alpha=ones)

    # HasIdentities
    def num_identities(self) -> int:
        return 1

    def num_frames(self) -> int:
        return int(self.exposures.shape[0])


SPEC = MethodSpec(
    name="toy_exposure",
    config=f"{__name__}:ToyExposureConfig",
    model=f"{__name__}:ToyExposure",
    summary="Test plugin: a texture under a known per-frame exposure (image batches with a per-frame input).",
    data=f"{__name__}:exposure_data",
)
