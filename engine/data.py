"""Training data for the image families: a loaded :class:`~tensorfield.datasets.scene.Scene` as a
:class:`~tensorfield.fields.base.TrainingData`.

A method names its data in the registry (``MethodSpec.data``, a factory ``(config, path,
scene=None) -> TrainingData``). The two factories here serve every family trained on posed
images:

* :func:`ray_data` (TensoRF, Strivec): batches of random rays (:class:`~.sampling.RaySource`,
  filtered by the model's ``ray_filter``);
* :func:`image_data` (Gaussians): batches of whole images (:class:`~.sampling.ImageSource`).

Both evaluate by rendering each camera of a split through the render service and scoring it
against the image (PSNR, SSIM, LPIPS when available), writing ``NNN.png`` / ``NNN_depth.png``.
Families with other data (a sampled spacetime, an avatar capture with per-frame poses) write
their own factory next to their model; the trainer treats them all alike.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensorfield.engine.config import ConfigError
from tensorfield.fields.base import Field, RenderRequest, SceneInfo
from torch import Tensor


class DataError(ValueError):
    """Training data that cannot serve a request (one line)."""


def load_scene_for(config):
    """Load ``config.data`` with the config's downscale, background, normalisation and video options.

    ``background="random"`` loads the images composited on white; batch sources recomposite each
    batch on a random colour using the alpha masks.

    Raises:
        ConfigError: no data path set, or bad video options. ``DatasetError`` from the loader
            propagates unchanged.
    """
    from tensorfield.datasets.scene import load_scene

    _require_image_options(config)
    if not config.data:
        raise ConfigError("no training data: pass --data PATH (or set data=PATH)")
    background = "white" if config.background == "random" else config.background
    video = {}
    if config.frame_stride != 1:
        video["frame_stride"] = int(config.frame_stride)
    if config.max_frames > 0:
        video["max_frames"] = int(config.max_frames)
    if list(config.time_range):
        if len(config.time_range) != 2:
            raise ConfigError(f"time_range must be [start, end] in seconds, got {list(config.time_range)}")
        video["time_range"] = (float(config.time_range[0]), float(config.time_range[1]))
    if list(config.test_cameras):
        video["test_cameras"] = [str(c) for c in config.test_cameras]
    try:
        return load_scene(config.data, downscale=config.downscale, background=background, normalize=config.normalize, **video)
    except ValueError as err:
        if video and "video" in str(err).lower():
            raise ConfigError(f"{config.data}: {err}") from None
        raise


class ImageSceneData:
    """A scene of posed images as training data (see module docstring).

    Args:
        scene: the loaded scene.
        batches: ``"rays"`` or ``"images"``.
        random_background: recomposite every batch on a random colour (``background=random``).
    """

    def __init__(self, scene, batches: str, random_background: bool = False) -> None:
        if batches not in ("rays", "images"):
            raise ValueError(f"batches must be 'rays' or 'images', got {batches!r}")
        self.scene = scene
        self.batches = batches
        self.random_background = random_background
        self._lpips = None
        self._lpips_loaded = False

    # ------------------------------------------------------------------ TrainingData
    def scene_info(self) -> SceneInfo:
        info = self.scene.scene_info()
        if self.random_background:
            info.white_background = False
        return info

    def batch_source(self, model: Field, device: torch.device):
        from tensorfield.engine.sampling import ImageSource, RaySource

        split = self.split("train")
        source_class = RaySource if self.batches == "rays" else ImageSource
        return source_class(split, self.background_color(), self.random_background, device)

    def eval_splits(self) -> tuple[str, ...]:
        return tuple(name for name in ("test", "val", "train") if name in self.scene.splits)

    def evaluate(self, model: Field, split: str, out_dir: Path | None, max_items: int = 0) -> dict[str, Any]:
        import imageio.v2 as imageio
        from tensorfield.engine.metrics import load_lpips, psnr, ssim
        from tensorfield.engine.render import colorize_depth, render_frame, to_uint8

        data = self.split(split)
        cameras = data.cameras
        count = len(cameras) if max_items <= 0 else min(len(cameras), max_items)
        background = self.background_color()
        device = next(iter(model.parameters())).device
        if not self._lpips_loaded:
            self._lpips, self._lpips_loaded = load_lpips(device), True
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        names = list(data.image_paths or [])
        per_image = []
        for index in range(count):
            tick = time.perf_counter()
            output = render_frame(model, RenderRequest(cameras, index, background))
            seconds = time.perf_counter() - tick
            prediction = output.rgb.detach().float().clamp(0.0, 1.0).cpu()
            target = data.images[index].detach().float().cpu()
            per_image.append({
                "index": index,
                "name": Path(str(names[index])).stem if index < len(names) else f"{index:03d}",
                "psnr": psnr(prediction, target),
                "ssim": ssim(prediction, target),
                "lpips": self._lpips(prediction, target) if self._lpips is not None else None,
                "render_s": seconds,
            })
            if out_dir is not None:
                imageio.imwrite(out_dir / f"{index:03d}.png", to_uint8(prediction))
                imageio.imwrite(out_dir / f"{index:03d}_depth.png", colorize_depth(output.depth, output.alpha))

        def mean(key: str) -> float | None:
            values = [record[key] for record in per_image if record[key] is not None]
            return float(np.mean(values)) if values else None

        return {
            "num_images": count,
            "psnr": mean("psnr"),
            "ssim": mean("ssim"),
            "lpips": mean("lpips"),
            "render_s": mean("render_s"),
            "per_image": per_image,
        }

    # ------------------------------------------------------------------ CameraData
    def split_cameras(self) -> dict[str, Any]:
        order = sorted(self.scene.splits, key=lambda s: {"train": 0, "val": 1, "test": 2}.get(s, 3))
        return {name: self.scene.splits[name].cameras for name in order}

    def scene_box(self) -> Tensor:
        return self.scene.aabb.float().reshape(2, 3)

    def background_color(self) -> Tensor:
        return torch.as_tensor(self.scene.background, dtype=torch.float32).reshape(3)

    # ------------------------------------------------------------------ helpers
    def split(self, name: str):
        splits = self.scene.splits
        if name not in splits:
            raise DataError(f"the scene has no '{name}' split (has: {', '.join(splits) or 'none'})")
        return splits[name]


def _require_image_options(config) -> None:
    """Image data needs the image and video options (an :class:`ImageMethodConfig`)."""
    from tensorfield.fields.config import ImageDataConfig, VideoDataConfig

    if not isinstance(config, ImageDataConfig) or not isinstance(config, VideoDataConfig):
        raise ConfigError(
            f"method {config.method or type(config).__name__}: posed-image data needs a config with the image "
            "and video options (extend tensorfield.fields.config.ImageMethodConfig)"
        )


def _image_scene(config, path: str | None, scene, batches: str) -> ImageSceneData:
    _require_image_options(config)
    if config.background not in ("white", "black", "random"):
        raise ConfigError(f"background must be white, black or random, got '{config.background}'")
    if scene is None:
        scene = load_scene_for(dataclasses.replace(config, data=str(path)) if path else config)
    return ImageSceneData(scene, batches, random_background=config.background == "random")


def ray_data(config, path: str | None = None, scene=None) -> ImageSceneData:
    """Posed images served as random rays (``config.data`` or ``path``; ``scene``: already loaded)."""
    return _image_scene(config, path, scene, "rays")


def image_data(config, path: str | None = None, scene=None) -> ImageSceneData:
    """Posed images served as whole images with their cameras."""
    return _image_scene(config, path, scene, "images")


class SamplerData:
    """Training data from any ``sample(batch_size, generator) -> CoordinateBatch`` object.

    For coordinate models built in code (tests, notebooks): ``evaluate`` calls the sampler's own
    ``evaluate(model) -> dict`` when it has one (its ``eval_splits`` is then ``("test",)``).
    """

    def __init__(self, sampler, info: SceneInfo | None = None, evaluator=None) -> None:
        self.sampler = sampler
        self.info = info or SceneInfo(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]), near=0.0, far=1.0)
        self.evaluator = evaluator

    def scene_info(self) -> SceneInfo:
        return self.info

    def batch_source(self, model: Field, device: torch.device):
        from tensorfield.engine.sampling import CoordinateSource

        return CoordinateSource(self.sampler, device)

    def eval_splits(self) -> tuple[str, ...]:
        return ("test",) if self.evaluator is not None else ()

    def evaluate(self, model: Field, split: str, out_dir: Path | None, max_items: int = 0) -> dict:
        if self.evaluator is None:
            raise DataError(f"{type(self.sampler).__name__} has no evaluation")
        return {key: float(value) for key, value in self.evaluator(model).items()}
