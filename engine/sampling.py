"""Batch sources: where each training step's batch comes from, one per :class:`BatchKind`.

* :class:`RaySource` (``BatchKind.RAYS``) precomputes the unit directions of every training
  pixel once; origins, colours and times are gathered per batch from the per-camera origins, the
  image tensor and the camera times (the same values as precomputing them, at a quarter of the
  memory). The model's :meth:`~tensorfield.fields.base.Field.ray_filter` shrinks the set of
  active rays; filtering is cumulative (a refilter only tests the rays still active), as in the
  official TensoRF. Batches walk through a random permutation of the active rays (every ray
  once per epoch, a new permutation each epoch, as the official ``SimpleSampler``); a filter
  starts a new epoch. Only the generator state that drew the permutation and the cursor are
  checkpointed: the permutation is drawn again on resume.
* :class:`ImageSource` (``BatchKind.IMAGES``) draws ``batch_size`` distinct training images.
* :class:`CoordinateSource` (``BatchKind.COORDINATES``) delegates to a
  :class:`CoordinateSampler` — any object with ``sample(batch_size, generator)``; for Einstein
  fields that is the "scene" handed to the trainer (an analytic metric or a sampled grid).

All randomness comes from the ``torch.Generator`` passed to ``sample`` (the trainer's sampler
generator, whose state is checkpointed), so resumed runs draw exactly the same batches.

With ``background="random"`` every batch gets a new uniform random background colour and the
targets are recomposited with the alpha masks:
``rgb' = rgb + (1 - alpha) * (background' - background)``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from tensorfield.fields.base import CoordinateBatch, ImageBatch, RayBatch, StatelessSource
from torch import Tensor


@runtime_checkable
class CoordinateSampler(Protocol):
    """Source of training samples for coordinate-batch models (Einstein fields)."""

    def sample(self, batch_size: int, generator: torch.Generator) -> CoordinateBatch:
        """``batch_size`` samples drawn with ``generator`` (a CPU generator)."""


def _random_background(
    images: Tensor,
    alphas: Tensor | None,
    background: Tensor,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Recomposite ``images`` (``[..., 3]`` on ``background``) on one new random colour."""
    new_background = torch.rand(3, generator=generator)
    if alphas is None:
        raise ValueError("background=random needs images with an alpha channel")
    delta = (new_background - background).to(images.dtype)
    recomposited = images + (1.0 - alphas.to(images.dtype))[..., None] * delta
    return recomposited.clamp_(0.0, 1.0), new_background


class RaySource:
    """Random rays of the training images (see module docstring).

    Args:
        split: the training split (``cameras``, ``images [N, H, W, 3]``, ``alphas [N, H, W]``).
        background: ``[3]`` colour the images are composited on.
        random_background: recomposite each batch on a random colour.
        device: where batches are sent.
    """

    def __init__(self, split, background: Tensor, random_background: bool, device: torch.device):
        cameras = split.cameras
        images = split.images
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"training images must be [N, H, W, 3], got {tuple(images.shape)}")
        self.num_images, height, width = images.shape[:3]
        self.pixels_per_image = height * width
        self.num_rays = self.num_images * self.pixels_per_image
        self.device = device
        self.background = background.detach().float().cpu()
        self.random_background = random_background
        if random_background and split.alphas is None:
            raise ValueError("background=random needs training images with an alpha channel")
        self.camera_origins = cameras.c2w[:, :, 3].float().cpu()  # [N, 3]
        self.camera_times = cameras.times.float().cpu()  # [N]
        with torch.no_grad():
            self.directions = torch.cat(
                [cameras.generate_rays(i)[1].reshape(-1, 3).float().cpu() for i in range(self.num_images)]
            )  # [R, 3]
        self.rgb = images.detach().float().cpu().reshape(-1, 3)  # [R, 3]
        self.alphas = split.alphas.detach().float().cpu().reshape(-1) if split.alphas is not None else None
        self.active = torch.arange(self.num_rays)  # indices of the rays that survive the filter
        self._order: Tensor | None = None  # permutation of positions in ``active`` (this epoch)
        self._order_state: Tensor | None = None  # generator state that drew ``_order``
        self._cursor = 0

    @property
    def num_active(self) -> int:
        return int(self.active.numel())

    def rays(self, ray_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``origins, directions`` ``[B, 3]`` of the given ray indices (CPU)."""
        return self.camera_origins[ray_ids // self.pixels_per_image], self.directions[ray_ids]

    @torch.no_grad()
    def apply_filter(self, model, chunk: int = 1 << 18) -> tuple[int, int]:
        """Keep the active rays for which ``model.ray_filter`` is true.

        Returns:
            ``(active before, active after)``.
        """
        before = self.num_active
        keep = []
        for start in range(0, before, chunk):
            ray_ids = self.active[start : start + chunk]
            origins, directions = self.rays(ray_ids)
            mask = model.ray_filter(origins.to(self.device), directions.to(self.device))
            keep.append(mask.to("cpu", torch.bool).reshape(-1))
        if keep:
            self.active = self.active[torch.cat(keep)]
        self._order, self._order_state, self._cursor = None, None, 0
        if self.num_active == 0:
            raise RuntimeError(f"{type(model).__name__}.ray_filter rejected every training ray")
        return before, self.num_active

    def refilter(self, model) -> tuple[int, int]:
        """:meth:`apply_filter` (the batch-source protocol's reaction to ``refilter_rays``)."""
        return self.apply_filter(model)

    def _next_positions(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """The next ``batch_size`` positions of the epoch permutation (a new one when it runs out)."""
        count = self.num_active
        if batch_size > count:  # fewer rays than a batch: with replacement
            return torch.randint(count, (batch_size,), generator=generator)
        if self._order is None or self._cursor + batch_size > count:
            self._order_state = generator.get_state()
            self._order = torch.randperm(count, generator=generator)
            self._cursor = 0
        picks = self._order[self._cursor : self._cursor + batch_size]
        self._cursor += batch_size
        return picks

    def sample(self, batch_size: int, generator: torch.Generator) -> RayBatch:
        """The next ``batch_size`` active rays of the current epoch's permutation."""
        ray_ids = self.active[self._next_positions(batch_size, generator)]
        origins, directions = self.rays(ray_ids)
        rgb = self.rgb[ray_ids]
        background = self.background
        if self.random_background:
            rgb, background = _random_background(rgb, self.alphas[ray_ids], background, generator)
        batch = RayBatch(
            origins=origins,
            directions=directions,
            rgb=rgb,
            times=self.camera_times[ray_ids // self.pixels_per_image],
            background=background,
        )
        return batch.to(self.device)

    def state_dict(self) -> dict:
        """The active-ray mask, bit-packed (1 bit per training ray), and the epoch position."""
        mask = np.zeros(self.num_rays, dtype=bool)
        mask[self.active.numpy()] = True
        state = {"num_rays": self.num_rays, "active_bits": torch.from_numpy(np.packbits(mask))}
        if self._order is not None:
            state["order_rng"] = self._order_state.clone()
            state["cursor"] = torch.tensor(self._cursor, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict) -> None:
        if int(state["num_rays"]) != self.num_rays:
            raise ValueError(
                f"checkpoint was trained on {int(state['num_rays'])} rays but the training split has {self.num_rays}"
            )
        mask = np.unpackbits(state["active_bits"].numpy(), count=self.num_rays).astype(bool)
        self.active = torch.from_numpy(np.flatnonzero(mask)).long()
        self._order, self._order_state, self._cursor = None, None, 0
        if state.get("order_rng") is not None:
            replay = torch.Generator()
            replay.set_state(state["order_rng"])
            self._order_state = state["order_rng"].clone()
            self._order = torch.randperm(self.num_active, generator=replay)
            self._cursor = int(state["cursor"])


class ImageSource(StatelessSource):
    """Random distinct training images with their cameras (see module docstring)."""

    def __init__(self, split, background: Tensor, random_background: bool, device: torch.device):
        self.cameras = split.cameras
        self.images = split.images.detach().float().cpu()
        self.alphas = split.alphas.detach().float().cpu() if split.alphas is not None else None
        self.background = background.detach().float().cpu()
        self.random_background = random_background
        self.device = device
        if random_background and self.alphas is None:
            raise ValueError("background=random needs training images with an alpha channel")

    def sample(self, batch_size: int, generator: torch.Generator) -> ImageBatch:
        count = len(self.images)
        indices = torch.randperm(count, generator=generator)[: min(batch_size, count)]
        images = self.images[indices]
        alphas = self.alphas[indices] if self.alphas is not None else None
        background = self.background
        if self.random_background:
            images, background = _random_background(images, alphas, background, generator)
        return ImageBatch(
            cameras=self.cameras[indices].to(self.device),
            images=images.to(self.device),
            alphas=alphas.to(self.device) if alphas is not None else None,
            background=background.to(self.device),
            indices=indices.to(self.device),
        )



class CoordinateSource(StatelessSource):
    """Adapter from a :class:`CoordinateSampler` to the trainer (moves batches to the device)."""

    def __init__(self, sampler: CoordinateSampler, device: torch.device):
        if not isinstance(sampler, CoordinateSampler):
            raise TypeError(
                f"coordinate-batch models need a scene with sample(batch_size, generator); got {type(sampler).__name__}"
            )
        self.sampler = sampler
        self.device = device

    def sample(self, batch_size: int, generator: torch.Generator) -> CoordinateBatch:
        batch = self.sampler.sample(batch_size, generator)
        return CoordinateBatch(
            coordinates=batch.coordinates.to(self.device),
            values=batch.values.to(self.device),
            jacobians=batch.jacobians.to(self.device) if batch.jacobians is not None else None,
        )

