"""Densification strategies of Gaussian splatting: when and how Gaussians are added and removed.

:class:`DefaultStrategy` is the original 3DGS adaptive density control (Sec. 5.2), in the style
of gsplat's ``DefaultStrategy``; it works on a dict ``name -> [N, ...]`` of per-Gaussian values
plus the statistics buffers, and returns the new values and, per new row, the old row it comes
from (``-1`` = new), from which the model builds
:class:`~tensorfield.fields.base.ParamSurgery` records. The producer
(:mod:`.gaussian_producers`) supplies the split sampler, so the strategy is the same for 3D and
4D Gaussians.

Schedule (``iteration = step + 1``), while ``iteration < densify_until`` and the model has fewer
than ``max_gaussians`` (-1: no limit):

1. **statistics** (:meth:`DefaultStrategy.accumulate`): each view's gradient of the loss with
   respect to the screen-space means (``[1, M, 2]``, pixels) is scaled to NDC units (x by
   ``W / 2``, y by ``H / 2``) and by the batch size, and its norm added per visible Gaussian; the
   largest screen radius is kept;
2. every ``densify_interval`` iterations after ``densify_from``, **densify**
   (:meth:`DefaultStrategy.densify`): Gaussians whose mean gradient norm reaches
   ``grad_threshold`` are cloned (largest scale at most ``percent_dense * E``) or split into
   ``split_samples``; then Gaussians with opacity below ``prune_opacity`` are pruned, and, once
   past the first opacity reset, those larger than ``prune_world_scale * E`` (and, when
   ``prune_screen_size > 0``, wider than that many pixels);
3. every ``opacity_reset_interval`` iterations (and at ``densify_from`` when
   ``reset_at_densify_from``, the original's choice on white backgrounds) **opacity reset**
   (:meth:`DefaultStrategy.reset_opacity`): logits clamped to ``logit(opacity_reset_value)``.

Another strategy (e.g. MCMC) offers the same :meth:`plan` / value-level methods, or its own, to
the model's ``after_step``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Params = dict[str, Tensor]
SplitSampler = Callable[[Params, Tensor, int], Params]


@dataclass
class ScreenRecord:
    """One rasterised view of a training step, for the densification statistics.

    Attributes:
        means2d: ``[1, M, 2]`` screen-space means (gradient retained), pixels.
        radii: ``[1, M]`` or ``[1, M, 2]`` screen radii (0 = not visible).
        index: ``[M]`` rows of the rasterised Gaussians in the full set, ``None`` = all.
        width: image width, pixels.
        height: image height, pixels.
        views: views in the batch (the loss is their mean).
    """

    means2d: Tensor
    radii: Tensor
    index: Tensor | None
    width: int
    height: int
    views: int


@dataclass(frozen=True)
class StepPlan:
    """What the strategy does after one step (see the module docstring)."""

    accumulate: bool = False
    densify: bool = False
    prune_large: bool = False
    reset_opacity: bool = False


@dataclass(frozen=True)
class DefaultStrategy:
    """3DGS adaptive density control (defaults: the original settings; see the module docstring)."""

    densify_from: int = 500
    densify_until: int = 15000
    densify_interval: int = 100
    grad_threshold: float = 2e-4
    percent_dense: float = 0.01
    split_samples: int = 2
    prune_opacity: float = 0.005
    prune_world_scale: float = 0.1
    prune_screen_size: float = 0.0
    opacity_reset_interval: int = 3000
    opacity_reset_value: float = 0.01
    max_gaussians: int = -1
    reset_at_densify_from: bool = False

    @classmethod
    def from_config(cls, config, reset_at_densify_from: bool) -> DefaultStrategy:
        """From a :class:`~tensorfield.fields.gaussians.GaussianConfig`."""
        return cls(
            densify_from=config.densify_from,
            densify_until=config.densify_until,
            densify_interval=config.densify_interval,
            grad_threshold=config.densify_grad_threshold,
            percent_dense=config.percent_dense,
            split_samples=int(config.split_samples),
            prune_opacity=config.prune_opacity,
            prune_world_scale=config.prune_world_scale,
            prune_screen_size=config.prune_screen_size,
            opacity_reset_interval=config.opacity_reset_interval,
            opacity_reset_value=config.opacity_reset_value,
            max_gaussians=config.max_gaussians,
            reset_at_densify_from=bool(reset_at_densify_from),
        )

    def plan(self, step: int, count: int) -> StepPlan:
        """What happens after 0-based ``step`` with ``count`` Gaussians (before densifying)."""
        iteration = step + 1
        growing = self.max_gaussians < 0 or count < self.max_gaussians
        if not (iteration < self.densify_until and growing):
            return StepPlan()
        densify = iteration > self.densify_from and iteration % self.densify_interval == 0
        reset = iteration % self.opacity_reset_interval == 0 or (self.reset_at_densify_from and iteration == self.densify_from)
        return StepPlan(
            accumulate=True, densify=densify, prune_large=densify and iteration > self.opacity_reset_interval, reset_opacity=reset
        )

    @torch.no_grad()
    def accumulate(self, records: list[ScreenRecord], grad_accum: Tensor, grad_count: Tensor, max_radii: Tensor) -> None:
        """Add the views' NDC gradient norms, counts and radii to the ``[N]`` buffers in place."""
        for record in records:
            means2d, radii, index = record.means2d, record.radii, record.index
            if means2d.grad is None:
                continue
            width, height, views = record.width, record.height, record.views
            grad = means2d.grad[0] * torch.tensor([width / 2.0 * views, height / 2.0 * views], device=means2d.device)
            radius = radii[0].to(max_radii.dtype)
            if radius.ndim > 1:  # per-axis radii
                radius = radius.amax(-1)
            visible = radius > 0
            rows = visible.nonzero().squeeze(1) if index is None else index[visible]
            grad_accum.index_add_(0, rows, grad[visible].norm(dim=-1))
            grad_count.index_add_(0, rows, torch.ones_like(rows, dtype=grad_count.dtype))
            max_radii[rows] = torch.maximum(max_radii[rows], radius[visible])

    @torch.no_grad()
    def densify(
        self,
        values: Params,
        grad_accum: Tensor,
        grad_count: Tensor,
        max_radii: Tensor,
        extent: float,
        prune_large: bool,
        split_sampler: SplitSampler,
    ) -> tuple[Params, Tensor]:
        """Clone, split, then prune.

        Args:
            values: ``name -> [N, ...]`` per-Gaussian values (detached); needs ``opacity_logits``
                ``[N]`` and ``log_scales`` ``[N, 3]``.
            grad_accum: ``[N]`` summed NDC gradient norms.
            grad_count: ``[N]`` views that saw each Gaussian.
            max_radii: ``[N]`` largest screen radius (pixels).
            extent: the scene extent ``E``.
            prune_large: also prune by world (and screen) size.
            split_sampler: ``(values, split rows, samples) -> [S * samples, ...]`` per name.

        Returns:
            ``(new values [N', ...] per name, rows [N'])``: survivors (in order), clones, split
            samples (block-wise), less the pruned; ``rows`` the old row of each (``-1`` = new).
        """
        count = grad_accum.shape[0]
        grads = torch.where(grad_count > 0, grad_accum / grad_count.clamp_min(1), torch.zeros_like(grad_accum))
        largest = torch.exp(values["log_scales"]).amax(1)
        selected = grads >= self.grad_threshold
        small = largest <= self.percent_dense * extent
        clone = (selected & small).nonzero().squeeze(1)
        split = (selected & ~small).nonzero().squeeze(1)
        samples = int(self.split_samples)

        survivors = torch.ones(count, dtype=torch.bool, device=values["means"].device)
        survivors[split] = False
        keep_rows = survivors.nonzero().squeeze(1)
        split_values = split_sampler(values, split, samples)
        new_values = {name: torch.cat([value[keep_rows], value[clone], split_values[name]]) for name, value in values.items()}
        rows = torch.cat(
            [keep_rows, torch.full((clone.numel() + split.numel() * samples,), -1, dtype=torch.long, device=keep_rows.device)]
        )
        prune = torch.sigmoid(new_values["opacity_logits"]) < self.prune_opacity
        if prune_large:
            prune |= torch.exp(new_values["log_scales"]).amax(1) > self.prune_world_scale * extent
            if self.prune_screen_size > 0:
                radii = torch.cat([max_radii[keep_rows], max_radii[clone], max_radii[split].repeat(samples)])
                prune |= radii > self.prune_screen_size
        keep = ~prune
        return {name: value[keep] for name, value in new_values.items()}, rows[keep]

    @torch.no_grad()
    def reset_opacity(self, opacity_logits: Tensor) -> Tensor:
        """``[N]`` logits clamped to at most ``logit(opacity_reset_value)``."""
        p = torch.as_tensor(self.opacity_reset_value)
        ceiling = float(torch.log(p / (1 - p)))
        return opacity_logits.detach().clamp(max=ceiling)
