"""The coarse-to-fine schedule of grid radiance fields (TensoRF's, official ``train.py``), reusable.

A :class:`GridSchedule` decides *when* a grid model changes during training; the model only
knows *how* (:class:`ScheduledGrid`: ``upsample``, ``rebuild_alpha_mask``, ``shrink_to_mask``).
Another factor-grid method (e.g. Strivec) takes the schedule as it is by giving its model those
methods and calling :meth:`GridSchedule.after_step` from its own ``after_step``.

The schedule, with ``s`` the 0-based step just optimised:

* **upsampling** at each of ``upsample_steps``: the grid goes to the next voxel count of
  :func:`voxel_schedule` (log-linear from ``voxels_init`` to ``voxels_final``), i.e. to
  :func:`voxels_to_resolution` of that count in the current box; the optimiser is rebuilt;
* **alpha mask** at each of ``alpha_mask_steps`` (before an upsampling of the same step): the model
  rebuilds its mask; after the first mask that was actually installed, the box shrinks to the
  mask's occupied vertices (optimiser rebuilt); at the second of ``alpha_mask_steps`` the trainer
  is asked to drop the rays that see only empty space;
* **L1 weight**: ``l1_weight_initial`` until the first installed mask, ``l1_weight_rest`` after;
* **learning rates** after a rebuild: restart at 1 (``lr_upsample_reset``) or continue at
  ``lr_decay_ratio ** (s / steps)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from tensorfield.fields.base import HookResult
from torch import Tensor


def voxels_to_resolution(num_voxels: int, aabb: Tensor) -> list[int]:
    """Grid vertices per axis for about ``num_voxels`` cubic voxels in ``aabb`` (official ``N_to_reso``).

    :math:`v = (\\prod_a \\mathrm{size}_a / N)^{1/3}`, :math:`\\mathrm{reso}_a = \\lfloor
    \\mathrm{size}_a / v \\rfloor`, computed in float32 like the official code (so that
    ``64**3`` gives 64 on the Blender cube, where float64 gives 63).

    Args:
        num_voxels: target number of voxels.
        aabb: ``[2, 3]`` box (min, max).

    Returns:
        ``[X, Y, Z]`` vertices per axis.
    """
    size = aabb[1].float().cpu() - aabb[0].float().cpu()
    voxel = (size.prod() / num_voxels).pow(1 / 3)
    return (size / voxel).long().tolist()


def voxel_schedule(voxels_init: int, voxels_final: int, num_upsamples: int) -> list[int]:
    """Voxel counts after each upsampling: log-linear from init to final (official ``N_voxel_list``)."""
    counts = torch.linspace(math.log(voxels_init), math.log(voxels_final), num_upsamples + 1)
    return torch.round(torch.exp(counts)).long().tolist()[1:]


class ScheduledGrid(Protocol):
    """What a grid model offers the schedule (:class:`~tensorfield.fields.tensorf.TensoRF` does).

    Attributes:
        aabb: ``[2, 3]`` the current box (the upsampled resolution is computed in it).
        alpha_mask_updates: how many masks have been installed so far.
        lr_scale: learning-rate multiplier of the model's next ``param_groups()``; set here.
    """

    aabb: Tensor
    alpha_mask_updates: int
    lr_scale: float

    def upsample(self, resolution: Sequence[int]) -> None:
        """Resample every factor to ``resolution`` vertices per axis."""

    def rebuild_alpha_mask(self, step: int) -> bool:
        """Compute and install a new alpha mask (counting it); ``False`` if none was installed."""

    def shrink_to_mask(self) -> None:
        """Shrink the box (cropping every factor) to the occupied vertices of the current mask."""


@dataclass(frozen=True)
class GridEvents:
    """What the schedule does after one step, before the model's state is consulted.

    Attributes:
        alpha_mask: rebuild the alpha mask.
        refilter_rays: if a mask is installed, ask the trainer to refilter the training rays.
        upsample_voxels: voxel count to upsample to, or ``None``.
    """

    alpha_mask: bool = False
    refilter_rays: bool = False
    upsample_voxels: int | None = None


@dataclass(frozen=True)
class GridSchedule:
    """TensoRF's upsampling / alpha-mask / box-shrink / L1-weight schedule.

    Attributes:
        upsample_steps: 0-based steps after which the grid is upsampled.
        voxel_counts: voxel count after each upsampling (same length as ``upsample_steps``).
        alpha_mask_steps: 0-based steps after which the alpha mask is rebuilt.
        l1_weight_initial: L1 weight before the first installed mask.
        l1_weight_rest: L1 weight after it.
        lr_upsample_reset: learning rates restart after a rebuild (else continue decaying).
        lr_decay_ratio: the decay ratio over ``steps``.
        steps: number of training steps.
    """

    upsample_steps: tuple[int, ...]
    voxel_counts: tuple[int, ...]
    alpha_mask_steps: tuple[int, ...]
    l1_weight_initial: float
    l1_weight_rest: float
    lr_upsample_reset: bool
    lr_decay_ratio: float
    steps: int

    @classmethod
    def from_config(cls, config) -> GridSchedule:
        """From a config with TensoRF's option names (``upsample_steps``, ``voxels_init``, ...)."""
        upsample_steps = tuple(int(s) for s in config.upsample_steps)
        return cls(
            upsample_steps=upsample_steps,
            voxel_counts=tuple(voxel_schedule(config.voxels_init, config.voxels_final, len(upsample_steps))),
            alpha_mask_steps=tuple(int(s) for s in config.alpha_mask_steps),
            l1_weight_initial=config.l1_weight_initial,
            l1_weight_rest=config.l1_weight_rest,
            lr_upsample_reset=bool(config.lr_upsample_reset),
            lr_decay_ratio=config.lr_decay_ratio,
            steps=int(config.steps),
        )

    def events_at(self, step: int) -> GridEvents:
        """The events scheduled after 0-based ``step``."""
        upsample = self.voxel_counts[self.upsample_steps.index(step)] if step in self.upsample_steps else None
        alpha = step in self.alpha_mask_steps
        refilter = alpha and len(self.alpha_mask_steps) > 1 and step == self.alpha_mask_steps[1]
        return GridEvents(alpha_mask=alpha, refilter_rays=refilter, upsample_voxels=upsample)

    @staticmethod
    def shrinks_after(mask_updates: int) -> bool:
        """Whether installing mask number ``mask_updates`` (1-based) shrinks the box: the first only."""
        return mask_updates == 1

    def l1_weight(self, mask_updates: int) -> float:
        """The L1 weight once ``mask_updates`` masks have been installed."""
        return self.l1_weight_initial if mask_updates == 0 else self.l1_weight_rest

    def lr_scale(self, step: int) -> float:
        """Learning-rate multiplier after an optimiser rebuild at 0-based ``step``."""
        return 1.0 if self.lr_upsample_reset else self.lr_decay_ratio ** (step / max(self.steps, 1))

    def alpha_mask_update(self, model: ScheduledGrid, step: int) -> HookResult:
        """Rebuild the mask now; shrink on the first installed one; refilter at the second mask step."""
        if not model.rebuild_alpha_mask(step):
            return HookResult()
        result = HookResult()
        if self.shrinks_after(model.alpha_mask_updates):
            model.shrink_to_mask()
            result = result | HookResult(rebuild_optimizer=True)
        if self.events_at(step).refilter_rays:
            result = result | HookResult(refilter_rays=True)
        return result

    def after_step(self, model: ScheduledGrid, step: int) -> HookResult:
        """Apply the events of 0-based ``step`` to ``model``: alpha mask first, then upsampling."""
        events = self.events_at(step)
        result = HookResult()
        if events.alpha_mask:
            result = result | self.alpha_mask_update(model, step)
        if events.upsample_voxels is not None:
            model.upsample(voxels_to_resolution(events.upsample_voxels, model.aabb))
            result = result | HookResult(rebuild_optimizer=True)
        if result.rebuild_optimizer:
            model.lr_scale = self.lr_scale(step)
        return result
