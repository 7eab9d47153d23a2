"""Toy scenes and toy fields for the engine tests (tiny, CPU, a few milliseconds per step).

* :func:`make_scene`: a sphere of radius 0.8 coloured by its normal, seen by cameras on an
  orbit, rendered analytically into 8x8 RGBA images (targets composited on white).
* :class:`ToyRays`: a ray-batch field (density + colour voxel grids, a small direction layer)
  whose ``after_step`` upsamples the grids (``rebuild_optimizer``) and shrinks its box
  (``refilter_rays``); it draws from its own generator and from torch's global RNG.
* :class:`ToyImages`: an image-batch field (one learnable RGBA image and per-image gains).
* :class:`ToySampler` / :class:`ToyCoordinates`: a coordinate-batch pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from tensorfield.datasets.cameras import Cameras, orbit_poses
from tensorfield.fields import registry
from tensorfield.fields.base import (
    BatchKind,
    CoordinateBatch,
    Field,
    HookResult,
    ParamGroup,
    RenderOutput,
    SceneInfo,
    StepOutput,
)
from tensorfield.fields.config import ImageMethodConfig, MethodConfig, option
from torch import nn


# ------------------------------------------------------------------------------------ scene
@dataclass
class ToySplit:
    name: str
    cameras: Cameras
    images: torch.Tensor
    alphas: torch.Tensor | None
    image_paths: list[str]
    depths: torch.Tensor | None = None


@dataclass
class ToyScene:
    splits: dict[str, ToySplit]
    aabb: torch.Tensor
    near: float
    far: float
    background: torch.Tensor
    root: str = "toy"
    format: str = "toy"
    points: torch.Tensor | None = None
    points_rgb: torch.Tensor | None = None

    def split(self, name: str) -> ToySplit:
        return self.splits[name]

    @property
    def is_dynamic(self) -> bool:
        return False

    def scene_info(self) -> SceneInfo:
        return SceneInfo(self.aabb, self.near, self.far, False, len(self.splits["train"].images))


def _render_sphere(cameras: Cameras, radius: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    origins, directions = cameras.generate_all_rays()
    b = (origins * directions).sum(-1)
    c = (origins * origins).sum(-1) - radius**2
    disc = b * b - c
    hit = disc > 0
    t = -b - disc.clamp_min(0).sqrt()
    normal = (origins + t[..., None] * directions) / radius
    colour = 0.5 + 0.5 * normal
    alpha = hit.float()
    return colour * alpha[..., None], alpha


def make_scene(n_train: int = 6, n_test: int = 2, size: int = 8, background=(1.0, 1.0, 1.0)) -> ToyScene:
    poses = orbit_poses(n_train + n_test, radius=3.0, elevation_deg=25.0)
    cameras = Cameras.from_fov(poses, size, size, fov_x=0.9)
    premultiplied, alpha = _render_sphere(cameras)
    bg = torch.tensor(background, dtype=torch.float32)
    images = premultiplied + (1 - alpha[..., None]) * bg
    order = torch.arange(n_train + n_test)
    test_ids = order[n_train:]
    train_ids = order[:n_train]

    def split(name, ids):
        return ToySplit(name, cameras[ids], images[ids].contiguous(), alpha[ids].contiguous(), [f"{name}/r_{int(i)}.png" for i in ids])

    return ToyScene(
        splits={"train": split("train", train_ids), "test": split("test", test_ids)},
        aabb=torch.tensor([[-1.2, -1.2, -1.2], [1.2, 1.2, 1.2]]),
        near=1.0,
        far=5.0,
        background=bg,
    )


# ------------------------------------------------------------------------------------ ray field
@dataclass
class ToyRaysConfig(ImageMethodConfig):
    resolution: int = option(4, "Initial grid resolution.")
    upsample_steps: list[int] = option([3, 7], "Steps after which the grids grow by 2 voxels.")  # noqa: RUF009
    refilter_steps: list[int] = option([6], "Steps after which the box shrinks (rays refiltered).")  # noqa: RUF009
    shrink: float = option(0.6, "Box scale at each refilter.")
    lr_grid: float = option(0.05, "Grid learning rate.")
    lr_net: float = option(0.01, "Direction-layer learning rate.")
    decay_ratio: float = option(0.1, "Learning-rate decay ratio.")
    decay_steps: int = option(20, "Steps over which the ratio is reached.")
    samples: int = option(8, "Samples per ray.")
    adam_betas: tuple[float, float] = option((0.9, 0.99), "Adam betas.")


class ToyRays(Field):
    batch_kind = BatchKind.RAYS

    def __init__(self, config: ToyRaysConfig, scene_info: SceneInfo):
        super().__init__()
        self.config = config
        self.near, self.far = scene_info.near, scene_info.far
        self.register_buffer("aabb", scene_info.aabb.clone().float())
        self.register_buffer("box", scene_info.aabb.clone().float())
        self.resolution = config.resolution
        r = self.resolution
        self.density = nn.Parameter(torch.randn(1, 1, r, r, r) * 0.1)
        self.colour = nn.Parameter(torch.randn(1, 3, r, r, r) * 0.1)
        self.view = nn.Linear(3, 3)
        self.generator = torch.Generator().manual_seed(1234)

    def param_groups(self):
        c = self.config
        return [
            ParamGroup("grid", [self.density, self.colour], c.lr_grid, c.decay_ratio, c.decay_steps),
            ParamGroup("net", list(self.view.parameters()), c.lr_net, c.decay_ratio, c.decay_steps),
        ]

    def _render(self, origins, directions, background, jitter=None):
        n = self.config.samples
        t = torch.linspace(self.near, self.far, n + 1, device=origins.device)[:-1].expand(origins.shape[0], n)
        step = (self.far - self.near) / n
        if jitter is not None:
            t = t + jitter * step
        points = origins[:, None] + t[..., None] * directions[:, None]
        lo, hi = self.aabb[0], self.aabb[1]
        normed = (points - lo) / (hi - lo) * 2 - 1
        grid_points = normed.reshape(1, 1, 1, -1, 3)
        sigma = F.softplus(F.grid_sample(self.density, grid_points, align_corners=True).reshape(-1, n) * 5)
        inside = ((normed.abs() <= 1).all(-1)).float()
        sigma = sigma * inside
        colour = torch.sigmoid(
            F.grid_sample(self.colour, grid_points, align_corners=True).reshape(3, -1, n).permute(1, 2, 0)
            + self.view(directions)[:, None]
        )
        alpha = 1 - torch.exp(-sigma * step)
        transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1] + 1e-10], 1), 1)
        weights = alpha * transmittance
        acc = weights.sum(1)
        rgb = (weights[..., None] * colour).sum(1) + (1 - acc[:, None]) * background
        depth = (weights * t).sum(1)
        return rgb, depth, acc

    def training_step(self, batch, step):
        jitter = torch.rand(batch.origins.shape[0], self.config.samples, generator=self.generator)
        jitter = jitter * 0.5 + 0.5 * torch.rand_like(jitter)  # global RNG too
        rgb, _, _ = self._render(batch.origins, batch.directions, batch.background, jitter)
        mse = F.mse_loss(rgb, batch.rgb)
        return StepOutput(mse + 1e-4 * self.density.abs().mean(), {"mse": float(mse.detach()), "grid_res": float(self.resolution)})

    def render_view(self, request):
        origins, directions = request.cameras.generate_rays(request.index)
        h, w = origins.shape[:2]
        rgb, depth, acc = self._render(origins.reshape(-1, 3), directions.reshape(-1, 3), request.background)
        return RenderOutput(rgb.reshape(h, w, 3), depth.reshape(h, w), acc.reshape(h, w))

    def after_step(self, step):
        result = HookResult()
        if step in self.config.upsample_steps:
            self.resolution += 2
            r = self.resolution
            with torch.no_grad():
                self.density = nn.Parameter(F.interpolate(self.density.data, size=(r, r, r), mode="trilinear", align_corners=True))
                self.colour = nn.Parameter(F.interpolate(self.colour.data, size=(r, r, r), mode="trilinear", align_corners=True))
            result = result | HookResult(rebuild_optimizer=True)
        if step in self.config.refilter_steps:
            centre = self.box.mean(0)
            self.box.copy_(centre + (self.box - centre) * self.config.shrink)
            result = result | HookResult(refilter_rays=True)
        return result

    def ray_filter(self, origins, directions):
        return rays_hit_box(origins, directions, self.box)

    def shape_state(self):
        return {"resolution": self.resolution}

    def prepare_for_state(self, shape_state):
        r = int(shape_state["resolution"])
        self.resolution = r
        self.density = nn.Parameter(torch.zeros(1, 1, r, r, r))
        self.colour = nn.Parameter(torch.zeros(1, 3, r, r, r))


def rays_hit_box(origins, directions, box):
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0 = (box[0] - origins) / safe
    t1 = (box[1] - origins) / safe
    t_near = torch.minimum(t0, t1).amax(-1)
    t_far = torch.maximum(t0, t1).amin(-1)
    return (t_far > t_near) & (t_far > 0)


# ------------------------------------------------------------------------------------ image field
@dataclass
class ToyImagesConfig(ImageMethodConfig):
    lr: float = option(0.05, "Learning rate.")
    batch_size: int = option(2, "Images per step.")


class ToyImages(Field):
    batch_kind = BatchKind.IMAGES

    def __init__(self, config: ToyImagesConfig, scene_info: SceneInfo, size: int = 8):
        super().__init__()
        self.config = config
        self.logits = nn.Parameter(torch.zeros(size, size, 4))
        self.gains = nn.Parameter(torch.ones(scene_info.num_train_images))
        self.seen_backgrounds: list[torch.Tensor] = []

    def param_groups(self):
        return [ParamGroup("image", [self.logits, self.gains], self.config.lr, 0.5, 100)]

    def _composite(self, background):
        rgba = torch.sigmoid(self.logits)
        return rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:]) * background, rgba[..., 3]

    def training_step(self, batch, step):
        self.seen_backgrounds.append(batch.background.clone())
        rgb, _ = self._composite(batch.background)
        pred = rgb[None] * self.gains[batch.indices][:, None, None, None]
        mse = F.mse_loss(pred, batch.images)
        return StepOutput(mse, {"mse": float(mse.detach())})

    def render_view(self, request):
        rgb, alpha = self._composite(request.background)
        return RenderOutput(rgb, alpha * 2.0, alpha)


# ------------------------------------------------------------------------------------ coordinates
@dataclass
class ToyCoordinatesConfig(MethodConfig):
    lr: float = option(0.01, "Learning rate.")
    batch_size: int = option(64, "Samples per step.")


class ToySampler:
    """f(x, y) = sin(2x) cos(y) on [-1, 1]^2, with its Jacobian."""

    def sample(self, batch_size, generator):
        xy = torch.rand(batch_size, 2, generator=generator) * 2 - 1
        value = (torch.sin(2 * xy[:, 0]) * torch.cos(xy[:, 1]))[:, None]
        return CoordinateBatch(xy, value, None)

    def evaluate(self, model):
        batch = self.sample(256, torch.Generator().manual_seed(0))
        with torch.no_grad():
            return {"mse": float(((model.net(batch.coordinates) - batch.values) ** 2).mean())}

    def scene_info(self):
        return SceneInfo(torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]]), 0.0, 1.0)


class ToyCoordinates(Field):
    batch_kind = BatchKind.COORDINATES

    def __init__(self, config, scene_info):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Linear(2, 16), nn.SiLU(), nn.Linear(16, 1))

    def param_groups(self):
        return [ParamGroup("net", list(self.net.parameters()), self.config.lr)]

    def training_step(self, batch, step):
        mse = F.mse_loss(self.net(batch.coordinates), batch.values)
        return StepOutput(mse, {"mse": float(mse.detach())})


def sampler_data(config, path=None, scene=None):
    """Coordinate data for the toy: the sampler handed in as ``scene`` (or a fresh one)."""
    from tensorfield.engine.data import SamplerData

    sampler = scene if scene is not None else ToySampler()
    return SamplerData(sampler, sampler.scene_info(), evaluator=sampler.evaluate)


# ------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class DirectSpec(registry.MethodSpec):
    """A registry entry that holds classes instead of import paths (test-local classes)."""

    config_cls: type = field(default=None)
    model_cls: type = field(default=None)
    data_fn: object = field(default=None)

    def config_class(self):
        return self.config_cls

    def model_class(self):
        return self.model_cls

    def data_factory(self):
        return self.data_fn if self.data_fn is not None else super().data_factory()


@pytest.fixture
def toys(monkeypatch):
    """Register the toy methods and hand out the toy classes."""
    for name, config_cls, model_cls, data in (
        ("toy_rays", ToyRaysConfig, ToyRays, "tensorfield.engine.data:ray_data"),
        ("toy_images", ToyImagesConfig, ToyImages, "tensorfield.engine.data:image_data"),
        ("toy_coords", ToyCoordinatesConfig, ToyCoordinates, "tensorfield.engine.data:ray_data"),
    ):
        data_fn = sampler_data if name == "toy_coords" else None
        spec = DirectSpec(name, "", "", "toy", data, config_cls=config_cls, model_cls=model_cls, data_fn=data_fn)
        monkeypatch.setitem(registry.METHODS, name, spec)
    return SimpleNamespace(
        ToyRaysConfig=ToyRaysConfig,
        ToyRays=ToyRays,
        ToyImagesConfig=ToyImagesConfig,
        ToyImages=ToyImages,
        ToyCoordinatesConfig=ToyCoordinatesConfig,
        ToyCoordinates=ToyCoordinates,
        ToySampler=ToySampler,
        make_scene=make_scene,
        rays_hit_box=rays_hit_box,
    )


@pytest.fixture(autouse=True)
def _few_threads():
    """Two shared cores: keep each test on one thread (also makes timings steadier)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def ray_config(**overrides) -> ToyRaysConfig:
    values = dict(  # noqa: C408 - keyword style reads like a config
        method="toy_rays", steps=12, batch_size=64, log_every=1, checkpoint_every=5,
        keep_checkpoints=5, eval_every=0, seed=3,
    )
    values.update(overrides)
    return ToyRaysConfig(**values)


@pytest.fixture
def make_ray_config():
    return ray_config



