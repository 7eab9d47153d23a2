"""How one frame's Gaussians are produced from the per-Gaussian parameters of a splatting model.

A :class:`GaussianProducer` owns everything that differs between kinds of Gaussian splatting,
so that :class:`~tensorfield.fields.gaussians.GaussianSplatting` has one rasteriser path, one
training step and one densification for all of them:

* the names, shapes and initial values of its per-Gaussian parameters (:attr:`names`,
  :meth:`initial_values`) and their optimiser groups (:meth:`param_groups`);
* the 3D Gaussians seen at a time (:meth:`gaussians_at` -> :class:`GaussianSlice`), their colours
  (:meth:`colors`) and what the rasteriser gets as colours (:meth:`raster_colors`);
* how a Gaussian splits into samples (:meth:`split_values`, called by the densification strategy);
* the exported splat of a slice (:meth:`export`) and its extra losses (:meth:`extra_losses`).

Producers are plain objects holding config values; the parameters stay ``nn.Parameter``
attributes of the model, handed over as a dict ``name -> tensor`` (rows = Gaussians).

* :class:`StaticProducer`: 3D Gaussian splatting (``means sh_dc sh_rest opacity_logits
  log_scales quats``); every Gaussian always visible.
* :class:`SpacetimeProducer`: 4DGS (adds ``times log_scale_t quats_right``); the 4D Gaussians
  conditioned on ``t`` (mean shift, Schur complement, temporal marginal), culled at
  ``temporal_threshold``, natively without gradients.

A skeleton-skinned producer (MIGS) is a third subclass, not a third mode of the model.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensorfield.fields.base import ParamGroup
from tensorfield.cuda.gaussian_kernels import slice_native
from tensorfield.fields.gaussian_math import (
    collapse_spherindrical,
    covariance_4d,
    covariance_to_scales_quats,
    mean_velocity,
    num_sh_bases,
    quat_to_rotmat,
    rotation_4d,
    slice_4d,
    spherindrical_weights,
    temporal_variance,
    time_basis,
)
from torch import Tensor

Params = dict[str, Tensor]


def logit(p: Tensor | float) -> Tensor:
    """:math:`\\log(p / (1 - p))` as a tensor."""
    p = torch.as_tensor(p)
    return torch.log(p / (1 - p))


@dataclass
class GaussianSlice:
    """The 3D Gaussians seen at one time, ready for colour evaluation and rasterisation."""

    means: Tensor  # [M, 3]
    opacities: Tensor  # [M]
    sh_dc: Tensor  # [M, 1, 3]
    sh_rest: Tensor  # [M, K - 1, 3]
    scales: Tensor | None  # [M, 3] (when the rasteriser gets scales and rotations)
    quats: Tensor | None  # [M, 4] (idem, not normalised)
    covariances: Tensor | None  # [M, 3, 3] (when it gets covariances)
    dt: Tensor | None  # [M] mu_t - t (time-dependent colour)
    index: Tensor | None  # [M] rows in the full set, None = all

    @property
    def coefficients(self) -> Tensor:
        """``[M, K, 3]`` the full colour table (DC first)."""
        return torch.cat([self.sh_dc, self.sh_rest], dim=1)


@dataclass
class SplatExport:
    """A slice in the 3DGS PLY parametrisation (see ``SplatAttributes``).

    Attributes:
        means: ``[M, 3]``.
        opacity_logits: ``[M]``.
        log_scales: ``[M, 3]``.
        quats: ``[M, 4]`` normalised ``(w, x, y, z)``.
        table: ``[M, K, 3]`` plain SH table (DC first).
    """

    means: Tensor
    opacity_logits: Tensor
    log_scales: Tensor
    quats: Tensor
    table: Tensor


# (metric name, weight, value): the model adds weight * value to the loss, in order
ExtraLoss = tuple[str, float, Tensor]


class GaussianProducer(abc.ABC):
    """Base of the producers: the 3D attributes every kind has, and the interface.

    Args:
        config: the method config (:class:`~tensorfield.fields.gaussians.GaussianConfig`).

    Attributes:
        dim: 3 or 4 (the checkpoints' ``gaussian_dim``).
        time_degree: largest temporal degree of the colour (0 for static Gaussians).
        detach_view_directions: colours' view directions carry no gradient (official 4DGS).
    """

    dim = 3
    names: tuple[str, ...] = ("means", "sh_dc", "sh_rest", "opacity_logits", "log_scales", "quats")
    detach_view_directions = False

    def __init__(self, config) -> None:
        self.config = config
        self.time_degree = 0

    # ------------------------------------------------------------------ parameters
    def initial_values(self, points: Tensor, dc: Tensor, distances: Tensor, generator: torch.Generator) -> Params:
        """Initial parameters, in :attr:`names` order.

        Args:
            points: ``[N, 3]`` initial means.
            dc: ``[N, 3]`` initial DC coefficients.
            distances: ``[N]`` initial spatial scale of each Gaussian.
            generator: the initialisation generator (after the points were drawn).
        """
        config = self.config
        count = points.shape[0]
        coefficients = num_sh_bases(config.sh_degree) * (self.time_degree + 1)
        identity = torch.tensor([1.0, 0.0, 0.0, 0.0])
        return {
            "means": points.clone(),
            "sh_dc": dc[:, None, :].clone(),
            "sh_rest": torch.zeros(count, coefficients - 1, 3),
            "opacity_logits": torch.full((count,), float(logit(config.init_opacity))),
            "log_scales": distances.log()[:, None].repeat(1, 3),
            "quats": identity.repeat(count, 1),
        }

    def param_groups(self, params: Params, extent: float) -> list[ParamGroup]:
        """One group per parameter (see the model's docstring for the rates)."""
        config = self.config
        decay_steps = config.lr_means_steps if config.lr_means_steps > 0 else max(config.steps, 1)
        return [
            ParamGroup("means", [params["means"]], config.lr_means * extent, config.lr_means_final / config.lr_means, decay_steps),
            ParamGroup("sh_dc", [params["sh_dc"]], config.lr_sh),
            ParamGroup("sh_rest", [params["sh_rest"]], config.lr_sh / 20.0),
            ParamGroup("opacity", [params["opacity_logits"]], config.lr_opacity),
            ParamGroup("scales", [params["log_scales"]], config.lr_scales),
            ParamGroup("quats", [params["quats"]], config.lr_quats),
        ]

    # ------------------------------------------------------------------ a frame
    @abc.abstractmethod
    def gaussians_at(self, params: Params, time: float) -> GaussianSlice:
        """The 3D Gaussians seen at model time ``time``."""

    def colors(self, gaussians: GaussianSlice, camera_center: Tensor, sh_degree: int, time_degree: int) -> Tensor:
        """``[M, 3]`` colours seen from ``camera_center``: SH (spherindrical) + 0.5, clamped at 0."""
        directions = gaussians.means - camera_center
        if self.detach_view_directions:
            directions = directions.detach()
        directions = F.normalize(directions, dim=-1)
        weights = spherindrical_weights(
            directions,
            gaussians.sh_rest.shape[1] + 1,
            sh_degree,
            dt=gaussians.dt,
            time_degree=time_degree,
            period=float(self.config.time_duration),
            max_degree=self.config.sh_degree,
        )
        values = weights[:, :1] * gaussians.sh_dc[:, 0] + torch.einsum("nk,nkc->nc", weights[:, 1:], gaussians.sh_rest)
        return (values + 0.5).clamp_min(0.0)

    @abc.abstractmethod
    def raster_colors(
        self, gaussians: GaussianSlice, camera_center: Tensor, sh_degree: int, time_degree: int
    ) -> tuple[Tensor, int | None]:
        """What the rasteriser gets as colours: ``(SH table, active degree)`` or ``(colours, None)``."""

    # ------------------------------------------------------------------ densification, export, losses
    @abc.abstractmethod
    def split_values(self, values: Params, split: Tensor, samples: int, generator: torch.Generator) -> Params:
        """Parameters of the ``samples`` Gaussians drawn from each Gaussian of ``split``.

        Args:
            values: every per-Gaussian parameter, ``[N, ...]`` (detached).
            split: ``[S]`` rows to split.
            samples: Gaussians each becomes.
            generator: draws the samples.

        Returns:
            ``[S * samples, ...]`` per name, the split rows repeated block-wise (as the original),
            means sampled from each Gaussian, scales divided by ``0.8 * samples``.
        """

    @abc.abstractmethod
    def export(self, params: Params, time: float) -> SplatExport:
        """The slice at model time ``time`` in the 3DGS PLY parametrisation."""

    def extra_losses(
        self,
        params: Params,
        step: int,
        rigidity_loss: Callable[[Tensor, int], Tensor],
        consistency_loss: Callable[[Tensor, int], Tensor] | None = None,
    ) -> list[ExtraLoss]:
        r"""Regularisers beyond the photometric loss (``rigidity_loss(velocity, step)`` and
        ``consistency_loss(velocity, step)`` from the model): here the opacity entropy
        (``entropy_weight``; 4D-Rotor GS, Duan et al. 2024) :math:`\frac1N \sum_i -o_i \log o_i`."""
        weight = float(getattr(self.config, "entropy_weight", 0.0))
        if weight <= 0:
            return []
        opacity = torch.sigmoid(params["opacity_logits"])
        return [("entropy", weight, -(opacity * torch.log(opacity.clamp_min(1e-10))).mean())]


class StaticProducer(GaussianProducer):
    """3D Gaussian splatting: the parameters are the Gaussians, at every time."""

    def gaussians_at(self, params: Params, time: float) -> GaussianSlice:
        return GaussianSlice(
            params["means"], torch.sigmoid(params["opacity_logits"]), params["sh_dc"], params["sh_rest"],
            torch.exp(params["log_scales"]), params["quats"], None, None, None,
        )

    def raster_colors(self, gaussians, camera_center, sh_degree, time_degree):
        """The SH table: the rasteriser evaluates it (natively on the CPU, in gsplat on CUDA)."""
        return torch.cat([gaussians.sh_dc, gaussians.sh_rest], dim=1), sh_degree

    def split_values(self, values, split, samples, generator):
        shrink = math.log(0.8 * samples)
        out = {name: value[split].repeat(samples, *([1] * (value.ndim - 1))) for name, value in values.items()}
        stds = torch.exp(values["log_scales"][split]).repeat(samples, 1)
        rotations = quat_to_rotmat(values["quats"][split]).repeat(samples, 1, 1)
        noise = torch.randn(stds.shape, generator=generator).to(stds) * stds
        out["means"] = out["means"] + (rotations @ noise[..., None])[..., 0]
        out["log_scales"] = out["log_scales"] - shrink
        return out

    def export(self, params, time):
        return SplatExport(
            params["means"], params["opacity_logits"], params["log_scales"], F.normalize(params["quats"], dim=-1),
            torch.cat([params["sh_dc"], params["sh_rest"]], dim=1),
        )


class SpacetimeProducer(GaussianProducer):
    """4D Gaussian splatting: the 4D Gaussians sliced at ``t`` (Yang et al., ICLR 2024)."""

    dim = 4
    names = GaussianProducer.names + ("times", "log_scale_t", "quats_right")
    detach_view_directions = True

    def __init__(self, config) -> None:
        super().__init__(config)
        self.time_degree = int(config.time_degree)

    def initial_values(self, points, dc, distances, generator):
        """The 3D values, plus times uniform in ``[-m T, (1 + m) T]``, temporal scale
        :math:`\\sqrt{v T}` and an identity right quaternion (official ``create_from_pcd``)."""
        values = super().initial_values(points, dc, distances, generator)
        config = self.config
        count = points.shape[0]
        duration = float(config.time_duration)
        margin = float(config.init_time_margin)
        values["times"] = (torch.rand(count, generator=generator) * (1 + 2 * margin) - margin) * duration
        values["log_scale_t"] = torch.full((count,), 0.5 * math.log(config.init_time_variance * duration))
        values["quats_right"] = torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(count, 1)
        return values

    def param_groups(self, params, extent):
        """The 3D groups; time at the initial mean rate (not decayed), temporal scale, right quaternion."""
        config = self.config
        lr_times = config.lr_times if config.lr_times >= 0 else config.lr_means
        return super().param_groups(params, extent) + [
            ParamGroup("times", [params["times"]], lr_times * extent),
            ParamGroup("scale_t", [params["log_scale_t"]], config.lr_scales),
            ParamGroup("quats_right", [params["quats_right"]], config.lr_quats),
        ]

    @staticmethod
    def scales_4d(params: Params) -> Tensor:
        """``[N, 4]`` space-time scales."""
        return torch.exp(torch.cat([params["log_scales"], params["log_scale_t"][:, None]], dim=1))

    @staticmethod
    def means_4d(params: Params) -> Tensor:
        """``[N, 4]`` space-time means."""
        return torch.cat([params["means"], params["times"][:, None]], dim=1)

    def gaussians_at(self, params, time):
        """Conditioned on ``time`` and culled; each parameter indexed once (none when all alive),
        so the backward pass scatters into each gradient once. Without gradients: native slicing."""
        count = int(params["means"].shape[0])
        if not torch.is_grad_enabled():
            sliced = slice_native(
                params["means"], params["times"], params["log_scales"], params["log_scale_t"], params["quats"],
                params["quats_right"], params["opacity_logits"], float(time), float(self.config.temporal_threshold),
            )
            if sliced is not None:  # the same slice, in one native pass (rendering only)
                index, means3, covariances3, opacities, dt = sliced
                whole = index.numel() == count
                return GaussianSlice(
                    means=means3, opacities=opacities, sh_dc=params["sh_dc"] if whole else params["sh_dc"][index],
                    sh_rest=params["sh_rest"] if whole else params["sh_rest"][index], scales=None, quats=None,
                    covariances=covariances3, dt=dt, index=None if whole else index,
                )
        with torch.no_grad():
            var_t = temporal_variance(self.scales_4d(params), params["quats"], params["quats_right"])
            alive = torch.exp(-0.5 * (time - params["times"]) ** 2 / var_t) > self.config.temporal_threshold
        index = None if bool(alive.all()) else alive.nonzero().squeeze(1)

        def take(name: str) -> Tensor:
            return params[name] if index is None else params[name][index]

        times = take("times")
        scales = torch.exp(torch.cat([take("log_scales"), take("log_scale_t")[:, None]], dim=1))
        covariances = covariance_4d(scales, take("quats"), take("quats_right"))
        means4 = torch.cat([take("means"), times[:, None]], dim=1)
        means3, covariances3, marginal = slice_4d(means4, covariances, time)
        return GaussianSlice(
            means=means3,
            opacities=torch.sigmoid(take("opacity_logits")) * marginal,
            sh_dc=take("sh_dc"),
            sh_rest=take("sh_rest"),
            scales=None,
            quats=None,
            covariances=covariances3,
            dt=times - time,
            index=index,
        )

    def raster_colors(self, gaussians, camera_center, sh_degree, time_degree):
        """Without gradients: the active part of the table collapsed to the frame's time (the
        rasteriser evaluates it); while training: :meth:`colors` (detached view directions)."""
        if not torch.is_grad_enabled():
            block, bases = num_sh_bases(self.config.sh_degree), num_sh_bases(sh_degree)
            rest = gaussians.sh_rest
            table = torch.cat([gaussians.sh_dc, rest[:, : bases - 1]], dim=1)
            if time_degree > 0:
                cosines = time_basis(time_degree, gaussians.dt, float(self.config.time_duration))
                for order in range(1, time_degree + 1):
                    start = order * block - 1
                    table += cosines[:, order, None, None] * rest[:, start : start + bases]
            return table, sh_degree
        return self.colors(gaussians, camera_center, sh_degree, time_degree), None

    def split_values(self, values, split, samples, generator):
        """Sampled in space-time, so splitting also halves in time."""
        shrink = math.log(0.8 * samples)
        out = {name: value[split].repeat(samples, *([1] * (value.ndim - 1))) for name, value in values.items()}
        scales = torch.exp(torch.cat([values["log_scales"][split], values["log_scale_t"][split, None]], 1))
        stds = scales.repeat(samples, 1)
        rotations = rotation_4d(values["quats"][split], values["quats_right"][split]).repeat(samples, 1, 1)
        noise = torch.randn(stds.shape, generator=generator).to(stds) * stds
        offsets = (rotations @ noise[..., None])[..., 0]
        out["means"] = out["means"] + offsets[:, :3]
        out["times"] = out["times"] + offsets[:, 3]
        out["log_scale_t"] = out["log_scale_t"] - shrink
        out["log_scales"] = out["log_scales"] - shrink
        return out

    def export(self, params, time):
        """Exact slice: conditional mean and covariance (factored), opacity times the marginal,
        the spherindrical table collapsed to plain SH at ``time``."""
        gaussians = self.gaussians_at(params, time)
        scales, quats = covariance_to_scales_quats(gaussians.covariances)
        table = collapse_spherindrical(
            gaussians.coefficients, gaussians.dt, self.time_degree, float(self.config.time_duration), self.config.sh_degree
        )
        return SplatExport(gaussians.means, logit(gaussians.opacities.clamp(1e-7, 1 - 1e-7)), scales.log(), quats, table)

    def lifespan_loss(self, params: Params, floor: float) -> Tensor:
        r"""Lifespan loss: :math:`\frac1N \sum_i \max(0, \log f - \log \sigma_{t,i})^2`, with
        :math:`\sigma_{t,i} = \sqrt{\Sigma_{44}} / T` the marginal temporal standard deviation of
        Gaussian :math:`i` as a fraction of the clip and :math:`f` = ``lifespan_floor``.

        In a monocular video every instant is seen by one camera; a Gaussian that lives for a frame
        or two is constrained by one or two views and can fit them without agreeing with the
        others (measured: the 4D model's train - test gap on the *static* pixels, which a static
        3DGS does not show). Zero for Gaussians at or above the floor, so long-lived and static
        Gaussians are untouched; its gradient reaches the temporal scale and the 4D rotation.
        """
        scales = self.scales_4d(params)
        variance = temporal_variance(scales, params["quats"], params["quats_right"])
        duration = float(self.config.time_duration)
        log_sigma = 0.5 * torch.log(variance.clamp_min(1e-30)) - math.log(duration)
        penalty = F.relu(math.log(floor) - log_sigma).square()
        speed_scale = float(getattr(self.config, "lifespan_speed", 0.0))
        if speed_scale > 0:  # only Gaussians that stay put: a gate, not a target (detached)
            with torch.no_grad():
                travel = mean_velocity(scales, params["quats"], params["quats_right"], duration).norm(dim=1)
            penalty = penalty * torch.exp(-((travel / speed_scale) ** 2))
        return penalty.mean()

    def extra_losses(self, params, step, rigidity_loss, consistency_loss=None):
        """Official rigidity (``rigid_weight``) and motion (``motion_weight``) losses, the 4D
        consistency loss (``consistency_weight``), then the base class's opacity entropy."""
        config = self.config
        losses: list[ExtraLoss] = []
        consistency = float(getattr(config, "consistency_weight", 0.0)) if consistency_loss is not None else 0.0
        if config.rigid_weight > 0 or config.motion_weight > 0 or consistency > 0:
            velocity = mean_velocity(self.scales_4d(params), params["quats"], params["quats_right"], 0.1)
            if config.rigid_weight > 0:
                losses.append(("rigid", config.rigid_weight, rigidity_loss(velocity, step)))
            if config.motion_weight > 0:
                losses.append(("motion", config.motion_weight, velocity.norm(dim=1).mean()))
            if consistency > 0:
                losses.append(("consistency", consistency, consistency_loss(velocity, step)))
        floor = float(getattr(config, "lifespan_floor", 0.0))
        if floor > 0 and config.lifespan_weight > 0:
            losses.append(("lifespan", config.lifespan_weight, self.lifespan_loss(params, floor)))
        return losses + super().extra_losses(params, step, rigidity_loss, consistency_loss)


def make_producer(config, dim: int) -> GaussianProducer:
    """The producer of ``dim`` (3 or 4, from :func:`~tensorfield.fields.gaussians.resolve_dim`)."""
    return {3: StaticProducer, 4: SpacetimeProducer}[dim](config)
