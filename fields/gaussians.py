"""Gaussian splatting: static 3DGS and 4D Gaussian splatting, one model with a time axis or not.

* ``gaussians3d``: 3D Gaussian splatting (Kerbl et al., SIGGRAPH 2023).
* ``gaussians4d``: "Real-time Photorealistic Dynamic Scene Representation and Rendering with 4D
  Gaussian Splatting" (Yang et al., ICLR 2024; official code fudan-zvg/4d-gaussian-splatting).

Both are :class:`GaussianSplatting` (``config.gaussian_dim`` 3 or 4, default from the method
name); the static model is the time-free special case of the dynamic one: no time coordinate, no
right quaternion, no temporal SH blocks, every Gaussian always visible.

Parameters (one ``nn.Parameter`` per attribute, rows = Gaussians, each its own optimiser group):

============== =============== ==================================================== =============
name           shape           meaning                                              activation
============== =============== ==================================================== =============
means          ``[N, 3]``      spatial mean :math:`\\mu_{1:3}`                        -
sh_dc          ``[N, 1, 3]``   SH coefficient 0 (DC)                                -
sh_rest        ``[N, K-1, 3]`` the other SH (3D) / spherindrical (4D) coefficients  -
opacity_logits ``[N]``         base opacity                                         sigmoid
log_scales     ``[N, 3]``      spatial scales                                       exp
quats          ``[N, 4]``      3D rotation (3D) / left isoclinic quaternion (4D)    normalise
times          ``[N]``         4D only: temporal mean :math:`\\mu_t`                 -
log_scale_t    ``[N]``         4D only: temporal scale                              exp
quats_right    ``[N, 4]``      4D only: right isoclinic quaternion                  normalise
============== =============== ==================================================== =============

``K = (L + 1)^2`` for SH degree ``L`` (3D) and ``(L + 1)^2 (N_t + 1)`` for 4D (``N_t = 2``
Fourier orders, the official ``sh_degree_t``). The math (4D rotation, slicing, spherindrical
harmonics) is in :mod:`tensorfield.fields.gaussian_math`.

**Rendering** one camera at time ``t`` (4D, Sec. 3.2 of the paper): build the 4x4 covariances,
condition on ``t`` (mean shift and Schur complement), multiply opacities by the temporal marginal,
drop Gaussians whose marginal is at most ``temporal_threshold`` (0.05, as the official renderer),
evaluate colour from the spherindrical harmonics at the view direction (camera to sliced mean,
detached as the official Python path) and ``\\mu_t - t``, and hand means, conditional
covariances, opacities and colours to :func:`tensorfield.cuda.rasterize.rasterize`. 3D: means,
scales, quaternions, opacities and SH colours (view direction not detached, as the original CUDA
code; the SH table goes to the rasteriser, which evaluates it natively or in gsplat). Without
gradients (rendering, the viewer) a 4D model slices natively (:mod:`tensorfield.cuda.gaussian_kernels`) and
hands the rasteriser its spherindrical table collapsed to the frame's time; both are tested equal
to the torch path. Colours follow gsplat: SH value + 0.5, clamped at 0. Scene time: a camera's normalised time
``[0, 1]`` is multiplied by ``time_duration`` (1 for D-NeRF, 10 s for N3V as the official
configs); ``time_duration`` is also the period :math:`T` of the Fourier terms.

**Training** (3DGS Sec. 5-7, official defaults): loss :math:`0.8 L_1 + 0.2 (1 - \\mathrm{SSIM})`
over the batch's images (:mod:`.gaussian_loss`); Adam (betas 0.9 / 0.999, eps 1e-15); mean
learning rate :math:`1.6\\cdot10^{-4} E` decaying exponentially to :math:`1.6\\cdot10^{-6} E`
over the run (``E`` the scene extent, below), SH DC 2.5e-3 and the rest 1/20 of it, opacity 0.05,
scales 5e-3, rotations 1e-3; 4D: time at the initial mean rate (not decayed, as official),
temporal scale 5e-3, right quaternion 1e-3. One SH degree is activated every
``sh_increase_interval`` steps; for 4D, once the spatial degree is full, the temporal degree grows
the same way (official ``oneupSHdegree``).

**Densification** (3DGS Sec. 5.2; :meth:`GaussianSplatting.after_step`): from step
``densify_from`` to ``densify_until`` the trainer's gradient of the loss with respect to each
visible Gaussian's screen-space mean (``means2d`` of the rasteriser, pixels) is scaled to NDC units
(x by ``W / 2``, y by ``H / 2``) and by the batch size (the loss is a batch mean), as gsplat's
default strategy, and its norm accumulated per Gaussian and view. Every ``densify_interval`` steps
Gaussians whose mean norm reaches ``densify_grad_threshold`` are **cloned** (copied unchanged) when
their largest scale is at most ``percent_dense * E``, else **split** into two Gaussians sampled
from the Gaussian itself (4D: sampled in space-time, so splitting also halves in time), with
scales divided by 1.6; then Gaussians with opacity below ``prune_opacity`` are **pruned**, and,
after the first opacity reset, those larger than ``prune_world_scale * E``. Every
``opacity_reset_interval`` steps (and at ``densify_from`` on white backgrounds) opacities are
clamped to at most 0.01. New rows start with zero Adam moments, survivors keep theirs, and the
opacity reset zeroes the opacity moments, as the original: the model replaces its parameters and
returns :class:`~tensorfield.fields.base.ParamSurgery` records that the trainer applies to the
optimiser (:func:`tensorfield.engine.optim.apply_param_surgery`).

The scene extent ``E`` is ``scene_extent`` when set, else 1.1 times the largest distance of a
training camera from their centroid (3DGS's ``getNerfppNorm``) when the scene gives camera
centres, else 1.1 times the half-diagonal of the scene box.

Initialisation: ``SceneInfo.points`` / ``points_rgb`` when present; otherwise ``init_points``
uniform in the scene box with near-grey colours (the original's synthetic-scene init). Scales are
the root mean squared distance to the 3 nearest neighbours, rotations identity, opacity 0.1; 4D
adds times uniform in :math:`[-0.1 T, 1.1 T]`, temporal scale :math:`\\sqrt{T / 5}` and an identity
right quaternion (official ``create_from_pcd``).

Differences from the original code, all deliberate:

* densification runs after the optimiser step of its iteration (the original densifies first, and
  its replaced parameters then skip that step's update);
* screen-space pruning (``prune_screen_size``) is off by default: the original prunes Gaussians
  whose screen radius exceeds 20 px, but resets the radius statistics while densifying just
  before, so the test never fires; gsplat disables it by default too;
* of the official 4DGS regularisers, the rigidity loss (``rigid_weight``, the official D-NeRF
  configs' ``lambda_rigid: 1.0``; :meth:`GaussianSplatting.rigidity_loss`) and the motion loss
  (``motion_weight``) are implemented and added once per step (the official adds them per view
  and divides by the batch size: the same); the opacity-mask loss (it needs sky masks) and
  environment maps are not; the time-gradient statistics the official code accumulates are
  unused there and omitted here;
* the rigidity loss's neighbours may be kept for ``rigid_knn_interval`` steps (official and
  default: found anew every step), the weights always from the current distances.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensorfield.fields.base import (
    BatchKind,
    Field,
    HookResult,
    ImageBatch,
    ParamGroup,
    ParamSurgery,
    RenderOutput,
    SceneInfo,
    StepOutput,
)
from tensorfield.fields.config import MethodConfig, option
from tensorfield.cuda.gaussian_kernels import slice_native
from tensorfield.fields.gaussian_loss import photometric_loss
from tensorfield.fields.gaussian_math import (
    collapse_spherindrical,
    covariance_4d,
    covariance_to_scales_quats,
    mean_neighbour_distance,
    mean_velocity,
    nearest_neighbours,
    num_sh_bases,
    quat_to_rotmat,
    rgb_to_sh,
    rotation_4d,
    slice_4d,
    spherindrical_weights,
    temporal_variance,
    time_basis,
)
from torch import Tensor, nn


# ================================================================================== config
@dataclass
class GaussianConfig(MethodConfig):
    """Gaussian splatting options; defaults are the original 3DGS / official 4DGS settings."""

    steps: int = option(30000, "Number of optimisation steps (paper: 30k).")
    batch_size: int = option(1, "Images per step (3DGS: 1; 4DGS: 2 on D-NeRF, 4 on N3V).")
    gaussian_dim: int = option(0, "3 (static 3DGS) or 4 (4DGS); 0 = from `method` (gaussians4d -> 4).")
    # representation
    sh_degree: int = option(3, "Largest SH degree of the view-dependent colour (0..3).")
    time_degree: int = option(2, "4D: Fourier orders of the spherindrical harmonics in time (0..2; official sh_degree_t 2).")
    sh_increase_interval: int = option(1000, "Activate one more SH degree (then temporal degree) every N steps.")
    time_duration: float = option(1.0, "4D: scene time = normalised camera time x this; also the Fourier period T.")
    temporal_threshold: float = option(0.05, "4D: Gaussians whose temporal marginal is <= this are culled before rasterising.")
    # initialisation
    init_points: int = option(100000, "Random initial Gaussians in the scene box when the scene has no point cloud.")
    init_opacity: float = option(0.1, "Initial opacity.")
    init_time_margin: float = option(0.1, "4D: initial times uniform in [-m T, (1 + m) T].")
    init_time_variance: float = option(0.2, "4D: initial temporal variance as a fraction of T (official T/5).")
    scene_extent: float = option(0.0, "Scene extent E for learning rates and densification (0 = from cameras, else the box).")
    # optimisation
    lr_means: float = option(1.6e-4, "Initial learning rate of the means, times E.")
    lr_means_final: float = option(1.6e-6, "Final learning rate of the means, times E (exponential decay).")
    lr_means_steps: int = option(-1, "Steps over which the mean rate decays to lr_means_final (-1 = steps).")
    lr_times: float = option(-1.0, "4D: learning rate of the temporal means, times E, constant (-1 = lr_means).")
    lr_sh: float = option(2.5e-3, "Learning rate of the DC colour coefficients (the rest: 1/20 of it).")
    lr_opacity: float = option(0.05, "Learning rate of the opacity logits.")
    lr_scales: float = option(5e-3, "Learning rate of the log scales (and 4D temporal log scale).")
    lr_quats: float = option(1e-3, "Learning rate of the quaternions.")
    adam_betas: list[float] = option([0.9, 0.999], "Adam betas (read by the trainer).")
    adam_eps: float = option(1e-15, "Adam epsilon (read by the trainer; 3DGS: 1e-15).")
    ssim_weight: float = option(0.2, "Weight lambda of (1 - SSIM) in the loss (1 - lambda on L1).")
    rigid_weight: float = option(0.0, "4D: weight of the official rigidity loss (lambda_rigid; 1.0 in the official D-NeRF configs): neighbouring Gaussians move alike.")
    rigid_neighbours: int = option(20, "4D rigidity loss: nearest Gaussians by mean (itself included) each one is compared with (official k = 20).")
    rigid_knn_interval: int = option(1, "4D rigidity loss: recompute the neighbours every N steps and after densification (official: every step); weights always use the current distances.")
    motion_weight: float = option(0.0, "4D: weight of the official motion loss (lambda_motion): the mean speed of the Gaussians.")
    # densification
    densify_from: int = option(500, "First step whose statistics can trigger densification.")
    densify_until: int = option(15000, "Densify / reset opacity only before this step.")
    densify_interval: int = option(100, "Densify and prune every N steps.")
    densify_grad_threshold: float = option(2e-4, "Mean NDC screen-space gradient norm that triggers clone / split.")
    percent_dense: float = option(0.01, "Clone when the largest scale is <= this x E, else split.")
    split_samples: int = option(2, "Gaussians a split one becomes (scales / (0.8 x this)).")
    prune_opacity: float = option(0.005, "Prune Gaussians whose opacity is below this.")
    prune_world_scale: float = option(0.1, "After the first opacity reset, prune Gaussians larger than this x E.")
    prune_screen_size: float = option(0.0, "After the first opacity reset, prune Gaussians with a screen radius above this many pixels (0 = off; see module docstring).")
    opacity_reset_interval: int = option(3000, "Clamp opacities to <= opacity_reset_value every N steps.")
    opacity_reset_value: float = option(0.01, "Opacity ceiling after a reset.")
    max_gaussians: int = option(-1, "Stop densifying once there are this many Gaussians (-1 = no limit; official densify_until_num_points).")
    # rasteriser
    backend: str = option("auto", "Rasteriser backend: auto (gsplat on CUDA, else cpu), gsplat, cpu (native kernel when no gradient is needed), torch or reference.")
    near_plane: float = option(0.01, "Gaussians nearer than this (camera z) are culled.")
    far_plane: float = option(1e10, "Gaussians farther than this are culled.")
    eps2d: float = option(0.3, "Screen-space blur added to every projected covariance (pixels^2).")
    antialiased: bool = option(False, "gsplat's antialiased mode (opacity compensation for the blur).")
    tile_size: int = option(16, "Rasteriser tile size in pixels.")


def resolve_dim(config: GaussianConfig) -> int:
    """3 or 4 from ``config.gaussian_dim``, else from ``config.method``."""
    dim = config.gaussian_dim or (4 if config.method == "gaussians4d" else 3)
    if dim not in (3, 4):
        raise ValueError(f"gaussian_dim must be 3 or 4, got {config.gaussian_dim}")
    return dim


def scene_extent(config: GaussianConfig, scene: SceneInfo) -> float:
    """The extent ``E`` (see module docstring)."""
    if config.scene_extent > 0:
        return float(config.scene_extent)
    centers = getattr(scene, "camera_centers", None)
    if centers is not None and len(centers) > 1:
        centers = torch.as_tensor(centers, dtype=torch.float64).reshape(-1, 3)
        return 1.1 * float((centers - centers.mean(0)).norm(dim=1).max())
    aabb = scene.aabb.double().reshape(2, 3)
    return 1.1 * 0.5 * float((aabb[1] - aabb[0]).norm())


def _without_neighbours_is_empty(module, state_dict, prefix, *args) -> None:
    """Checkpoints written before the rigidity loss existed hold no ``rigid_neighbours``: load
    them with an empty ``[N, 0]`` table (found when first needed)."""
    key, means = prefix + "rigid_neighbours", prefix + "means"
    if key not in state_dict and means in state_dict:
        state_dict[key] = torch.zeros(state_dict[means].shape[0], 0, dtype=torch.long)


def _logit(p: Tensor | float) -> Tensor:
    p = torch.as_tensor(p)
    return torch.log(p / (1 - p))


@dataclass
class SplatAttributes:
    """Gaussians in the standard 3DGS PLY layout (what splat viewers read).

    Attributes:
        names: the ``F`` vertex property names in file order: ``x y z nx ny nz f_dc_0..2
            f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3`` (``f_rest`` channel-major: all
            red coefficients, then green, then blue; opacity a logit, scales logs, rotation
            ``(w, x, y, z)``).
        values: ``[N, F]`` float32.
    """

    names: list[str]
    values: Tensor


@dataclass
class _Slice:
    """The 3D Gaussians seen at one time, ready for colour evaluation and rasterisation."""

    means: Tensor  # [M, 3]
    opacities: Tensor  # [M]
    sh_dc: Tensor  # [M, 1, 3]
    sh_rest: Tensor  # [M, K - 1, 3]
    scales: Tensor | None  # [M, 3] (3D)
    quats: Tensor | None  # [M, 4] (3D)
    covariances: Tensor | None  # [M, 3, 3] (4D)
    dt: Tensor | None  # [M] mu_t - t (4D)
    index: Tensor | None  # [M] rows in the full set, None = all

    @property
    def coefficients(self) -> Tensor:
        """``[M, K, 3]`` the full colour table (DC first)."""
        return torch.cat([self.sh_dc, self.sh_rest], dim=1)


# ================================================================================== model
class GaussianSplatting(Field):
    """3DGS / 4DGS trained on whole images and rendered by the shared rasteriser.

    Args:
        config: the method config.
        scene: bounds, optional point cloud and camera centres.

    Buffers (in ``state_dict``, ``[N]`` each): ``grad_accum`` and ``grad_count`` (densification
    statistics since the last densification) and ``max_radii`` (largest screen radius seen, px);
    ``rigid_neighbours`` ``[N, k]`` (4D rigidity loss; ``[N, 0]`` until first needed).
    ``generator`` draws split samples; the trainer checkpoints its state.
    """

    batch_kind = BatchKind.IMAGES

    def __init__(self, config: GaussianConfig, scene: SceneInfo) -> None:
        super().__init__()
        self.config = config
        self.dim = resolve_dim(config)
        if not 0 <= config.sh_degree <= 3:
            raise ValueError(f"sh_degree must be in [0, 3], got {config.sh_degree}")
        self.time_degree = int(config.time_degree) if self.dim == 4 else 0
        self.extent = scene_extent(config, scene)
        self.active_sh_degree = 0
        self.active_time_degree = 0
        self.generator = torch.Generator().manual_seed(int(config.seed) + 1)
        self._records: list[tuple[Tensor, Tensor, Tensor | None, int, int, int]] = []

        init = torch.Generator().manual_seed(int(config.seed))
        aabb = scene.aabb.detach().float().cpu().reshape(2, 3)
        if scene.points is not None and len(scene.points) > 0:
            points = torch.as_tensor(scene.points, dtype=torch.float32).reshape(-1, 3)
            rgb = scene.points_rgb
            dc = (
                rgb_to_sh(torch.as_tensor(rgb, dtype=torch.float32).reshape(-1, 3))
                if rgb is not None
                else torch.zeros_like(points)
            )
        else:
            count = int(config.init_points)
            if scene.source_format in ("nerfstudio", "n3v"):  # real captures: 3DGS starts from SfM points
                warnings.warn(
                    f"no SfM points in this {scene.source_format} scene: {count} Gaussians start uniformly in the "
                    "scene box, a slow and poor start for a real capture; put COLMAP's points3D.bin/.txt (or a "
                    "points3d.ply) beside the data (README: SfM points)",
                    stacklevel=2,
                )
            points = aabb[0] + torch.rand(count, 3, generator=init) * (aabb[1] - aabb[0])
            dc = torch.rand(count, 3, generator=init) / 255.0  # grey: colour = 0.5 + C0 * dc
        count = points.shape[0]
        distances = mean_neighbour_distance(points).clamp_min(math.sqrt(1e-7))
        coefficients = num_sh_bases(config.sh_degree) * (self.time_degree + 1)
        self.means = nn.Parameter(points.clone())
        self.sh_dc = nn.Parameter(dc[:, None, :].clone())
        self.sh_rest = nn.Parameter(torch.zeros(count, coefficients - 1, 3))
        self.opacity_logits = nn.Parameter(torch.full((count,), float(_logit(config.init_opacity))))
        self.log_scales = nn.Parameter(distances.log()[:, None].repeat(1, 3))
        identity = torch.tensor([1.0, 0.0, 0.0, 0.0])
        self.quats = nn.Parameter(identity.repeat(count, 1))
        if self.dim == 4:
            duration = float(config.time_duration)
            margin = float(config.init_time_margin)
            times = (torch.rand(count, generator=init) * (1 + 2 * margin) - margin) * duration
            self.times = nn.Parameter(times)
            self.log_scale_t = nn.Parameter(torch.full((count,), 0.5 * math.log(config.init_time_variance * duration)))
            self.quats_right = nn.Parameter(identity.repeat(count, 1))
        self.register_buffer("grad_accum", torch.zeros(count))
        self.register_buffer("grad_count", torch.zeros(count))
        self.register_buffer("max_radii", torch.zeros(count))
        # 4D rigidity loss: each Gaussian's nearest neighbours, [N, k] ([N, 0] = to be computed)
        self.register_buffer("rigid_neighbours", torch.zeros(count, 0, dtype=torch.long))
        # the private spelling: the public register_load_state_dict_pre_hook needs torch >= 2.5
        self._register_load_state_dict_pre_hook(_without_neighbours_is_empty, with_module=True)

    # ------------------------------------------------------------------ structure
    @property
    def per_gaussian_names(self) -> list[str]:
        """Names of the per-Gaussian parameters, in optimiser-group order."""
        names = ["means", "sh_dc", "sh_rest", "opacity_logits", "log_scales", "quats"]
        if self.dim == 4:
            names += ["times", "log_scale_t", "quats_right"]
        return names

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def coefficients(self) -> Tensor:
        """``[N, K, 3]`` SH / spherindrical coefficients (DC first)."""
        return torch.cat([self.sh_dc, self.sh_rest], dim=1)

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def scales(self) -> Tensor:
        """``[N, 3]`` spatial scales (4D: the scales along the rotated axes)."""
        return torch.exp(self.log_scales)

    def _scales_4d(self) -> Tensor:
        return torch.exp(torch.cat([self.log_scales, self.log_scale_t[:, None]], dim=1))

    def _means_4d(self) -> Tensor:
        return torch.cat([self.means, self.times[:, None]], dim=1)

    def scene_time(self, time: float | None) -> float:
        """Model time of a normalised camera time (``None`` / ``nan`` -> 0)."""
        if time is None or not math.isfinite(float(time)):
            return 0.0
        return float(time) * float(self.config.time_duration)

    # ------------------------------------------------------------------ slicing and colour
    def gaussians_at(self, time: float) -> _Slice:
        """The 3D Gaussians seen at model time ``time`` (4D: conditioned and culled).

        Each parameter is indexed once (and not at all when every Gaussian is alive), so the
        backward pass scatters into each parameter's gradient once.
        """
        if self.dim == 3:
            return _Slice(self.means, self.opacities, self.sh_dc, self.sh_rest, self.scales, self.quats, None, None, None)
        if not torch.is_grad_enabled():
            sliced = slice_native(
                self.means, self.times, self.log_scales, self.log_scale_t, self.quats, self.quats_right,
                self.opacity_logits, float(time), float(self.config.temporal_threshold),
            )
            if sliced is not None:  # the same slice, in one native pass (rendering only)
                index, means3, covariances3, opacities, dt = sliced
                whole = index.numel() == self.num_gaussians
                return _Slice(
                    means=means3, opacities=opacities, sh_dc=self.sh_dc if whole else self.sh_dc[index],
                    sh_rest=self.sh_rest if whole else self.sh_rest[index], scales=None, quats=None,
                    covariances=covariances3, dt=dt, index=None if whole else index,
                )
        with torch.no_grad():
            var_t = temporal_variance(self._scales_4d(), self.quats, self.quats_right)
            alive = torch.exp(-0.5 * (time - self.times) ** 2 / var_t) > self.config.temporal_threshold
        index = None if bool(alive.all()) else alive.nonzero().squeeze(1)

        def take(param: Tensor) -> Tensor:
            return param if index is None else param[index]

        times = take(self.times)
        scales = torch.exp(torch.cat([take(self.log_scales), take(self.log_scale_t)[:, None]], dim=1))
        covariances = covariance_4d(scales, take(self.quats), take(self.quats_right))
        means4 = torch.cat([take(self.means), times[:, None]], dim=1)
        means3, covariances3, marginal = slice_4d(means4, covariances, time)
        return _Slice(
            means=means3,
            opacities=torch.sigmoid(take(self.opacity_logits)) * marginal,
            sh_dc=take(self.sh_dc),
            sh_rest=take(self.sh_rest),
            scales=None,
            quats=None,
            covariances=covariances3,
            dt=times - time,
            index=index,
        )

    def colors(self, gaussians: _Slice, camera_center: Tensor) -> Tensor:
        """``[M, 3]`` colours seen from ``camera_center``: SH (4D: spherindrical) + 0.5, clamped at 0."""
        directions = gaussians.means - camera_center
        if self.dim == 4:
            directions = directions.detach()
        directions = F.normalize(directions, dim=-1)
        weights = spherindrical_weights(
            directions,
            gaussians.sh_rest.shape[1] + 1,
            self.active_sh_degree,
            dt=gaussians.dt,
            time_degree=self.active_time_degree,
            period=float(self.config.time_duration),
            max_degree=self.config.sh_degree,
        )
        values = weights[:, :1] * gaussians.sh_dc[:, 0] + torch.einsum("nk,nkc->nc", weights[:, 1:], gaussians.sh_rest)
        return (values + 0.5).clamp_min(0.0)

    def _raster_colors(self, gaussians: _Slice, camera_center: Tensor) -> tuple[Tensor, int | None]:
        """What the rasteriser gets as colours: ``(SH table, active degree)`` or ``(colours, None)``.

        3D models hand their SH table to the rasteriser, whose projection evaluates it (natively
        on the CPU, in gsplat on CUDA): the same basis, directions and ``+0.5, clamp`` as
        :meth:`colors`. 4D models do the same without gradients (rendering): the table collapsed
        to the frame's time. While training, 4D colours come from :meth:`colors`, whose view
        directions are detached as in the official code.
        """
        if self.dim == 3:
            return torch.cat([gaussians.sh_dc, gaussians.sh_rest], dim=1), self.active_sh_degree
        if not torch.is_grad_enabled():
            # collapse_spherindrical on the active part of the table only (no full concatenation)
            block, bases = num_sh_bases(self.config.sh_degree), num_sh_bases(self.active_sh_degree)
            rest = gaussians.sh_rest
            table = torch.cat([gaussians.sh_dc, rest[:, : bases - 1]], dim=1)
            if self.active_time_degree > 0:
                cosines = time_basis(self.active_time_degree, gaussians.dt, float(self.config.time_duration))
                for order in range(1, self.active_time_degree + 1):
                    start = order * block - 1
                    table += cosines[:, order, None, None] * rest[:, start : start + bases]
            return table, self.active_sh_degree
        return self.colors(gaussians, camera_center), None

    # ------------------------------------------------------------------ rendering
    def _rasterize_camera(self, cameras, index: int, time: float, background: Tensor):
        """Rasterise camera ``index`` at model time ``time``; ``(RenderOutput, RasterOutput | None, slice)``."""
        from tensorfield.cuda.rasterize import GaussianBatch, camera_matrices, rasterize

        config = self.config
        camera = cameras[index]
        height, width = int(cameras.height), int(cameras.width)
        gaussians = self.gaussians_at(time)
        device = self.means.device
        if gaussians.means.shape[0] == 0:  # nothing alive at this time: background only
            rgb = background.to(device).expand(height, width, 3) + 0.0 * self.means.sum()
            zeros = torch.zeros(height, width, device=device)
            return RenderOutput(rgb=rgb, depth=zeros, alpha=zeros), None, gaussians
        center = camera.c2w[0, :, 3].to(device)
        colors, sh_degree = self._raster_colors(gaussians, center)
        batch = GaussianBatch(
            means=gaussians.means,
            opacities=gaussians.opacities,
            colors=colors,
            scales=gaussians.scales,
            quats=F.normalize(gaussians.quats, dim=-1) if gaussians.quats is not None else None,
            covars=gaussians.covariances,
            sh_degree=sh_degree,
        )
        viewmats, Ks = camera_matrices(camera)
        raster = rasterize(
            batch,
            viewmats.to(device),
            Ks.to(device),
            width,
            height,
            background=background.to(device),
            near_plane=config.near_plane,
            far_plane=config.far_plane,
            eps2d=config.eps2d,
            antialiased=config.antialiased,
            tile_size=config.tile_size,
            backend=config.backend,
        )
        alpha = raster.alpha[0]
        depth = raster.depth[0] * alpha / self._ray_z(camera, device)  # z-depth -> distance along unit ray
        return RenderOutput(rgb=raster.rgb[0], depth=depth, alpha=alpha), raster, gaussians

    @staticmethod
    def _ray_z(camera, device) -> Tensor:
        """``[H, W]`` camera-frame z of the unit ray through each pixel centre."""
        v, u = torch.meshgrid(
            torch.arange(camera.height, device=device, dtype=torch.float32),
            torch.arange(camera.width, device=device, dtype=torch.float32),
            indexing="ij",
        )
        x = (u + 0.5 - float(camera.cx[0])) / float(camera.fx[0])
        y = (v + 0.5 - float(camera.cy[0])) / float(camera.fy[0])
        return torch.rsqrt(x * x + y * y + 1.0)

    @torch.no_grad()
    def render_view(self, cameras, index: int, time: float | None, background: Tensor) -> RenderOutput:
        """Render camera ``index`` at normalised ``time`` (``None``: the camera's own; static: ignored)."""
        if time is None:
            time = float(cameras.times[index])
        output, _, _ = self._rasterize_camera(cameras, index, self.scene_time(time), background)
        return RenderOutput(rgb=output.rgb.clamp(0.0, 1.0), depth=output.depth, alpha=output.alpha)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: ImageBatch, step: int) -> StepOutput:
        """:math:`(1-\\lambda) L_1 + \\lambda (1 - \\mathrm{SSIM})` over the batch's images.

        Keeps each view's screen-space means (gradient retained) and radii for the densification
        statistics gathered in :meth:`after_step`.
        """
        cameras = batch.cameras
        renders = []
        self._records = []
        for i in range(len(cameras)):
            output, raster, gaussians = self._rasterize_camera(
                cameras, i, self.scene_time(float(cameras.times[i])), batch.background
            )
            renders.append(output.rgb)
            if raster is not None and raster.means2d.requires_grad:
                raster.means2d.retain_grad()
                self._records.append((raster.means2d, raster.radii, gaussians.index, cameras.width, cameras.height, len(cameras)))
        prediction = torch.stack(renders)
        loss, l1, structural = photometric_loss(prediction, batch.images, self.config.ssim_weight)
        mse = F.mse_loss(prediction.detach(), batch.images)
        metrics = {"mse": float(mse), "l1": float(l1.detach()), "ssim": float(structural.detach()), "num_gaussians": float(self.num_gaussians)}
        config = self.config
        if self.dim == 4 and (config.rigid_weight > 0 or config.motion_weight > 0):
            velocity = mean_velocity(self._scales_4d(), self.quats, self.quats_right, 0.1)
            if config.rigid_weight > 0:
                rigid = self.rigidity_loss(velocity, step)
                loss = loss + config.rigid_weight * rigid
                metrics["rigid"] = float(rigid.detach())
            if config.motion_weight > 0:
                motion = velocity.norm(dim=1).mean()
                loss = loss + config.motion_weight * motion
                metrics["motion"] = float(motion.detach())
        return StepOutput(loss, metrics)

    def rigidity_loss(self, velocity: Tensor, step: int) -> Tensor:
        r"""Official 4DGS rigidity loss: neighbouring Gaussians move alike.

        .. math:: L_{rigid} = \frac{1}{kN} \sum_i \sum_{j \in \mathcal{N}_k(i)}
            e^{-100 \|\mu_j - \mu_i\|} \, \|v_j - v_i\|

        with :math:`\mathcal{N}_k(i)` the ``rigid_neighbours`` nearest Gaussians by spatial mean
        (itself included), the weights from the current (detached) distances, and :math:`v` the
        conditional mean's displacement over 0.1 of scene time (:func:`.mean_velocity`). The
        neighbours are recomputed every ``rigid_knn_interval`` steps and after every change of the
        Gaussians (official: every step); they live in the ``rigid_neighbours`` buffer, so a resumed
        run uses the same ones.
        """
        count = self.num_gaussians
        k = min(int(self.config.rigid_neighbours), count)
        interval = max(int(self.config.rigid_knn_interval), 1)
        stale = self.rigid_neighbours.shape != (count, k) or step % interval == 0
        if stale:
            self.rigid_neighbours = nearest_neighbours(self.means.detach(), k).to(self.means.device)
        index = self.rigid_neighbours
        with torch.no_grad():
            weight = torch.exp(-100.0 * (self.means[index] - self.means[:, None]).norm(dim=-1))
        spread = (velocity[index] - velocity[:, None]).norm(dim=-1)
        return (weight * spread).sum() / max(k, 1) / max(count, 1)

    def param_groups(self) -> list[ParamGroup]:
        """One group per attribute with the original rates (see module docstring)."""
        config = self.config
        decay_steps = config.lr_means_steps if config.lr_means_steps > 0 else max(config.steps, 1)
        extent = self.extent
        groups = [
            ParamGroup("means", [self.means], config.lr_means * extent, config.lr_means_final / config.lr_means, decay_steps),
            ParamGroup("sh_dc", [self.sh_dc], config.lr_sh),
            ParamGroup("sh_rest", [self.sh_rest], config.lr_sh / 20.0),
            ParamGroup("opacity", [self.opacity_logits], config.lr_opacity),
            ParamGroup("scales", [self.log_scales], config.lr_scales),
            ParamGroup("quats", [self.quats], config.lr_quats),
        ]
        if self.dim == 4:
            lr_times = config.lr_times if config.lr_times >= 0 else config.lr_means
            groups += [
                ParamGroup("times", [self.times], lr_times * extent),
                ParamGroup("scale_t", [self.log_scale_t], config.lr_scales),
                ParamGroup("quats_right", [self.quats_right], config.lr_quats),
            ]
        return groups

    def before_step(self, step: int) -> HookResult:
        """Set the active SH (then temporal) degree: one more every ``sh_increase_interval`` steps."""
        self._set_active_degrees(step)
        return HookResult()

    def _set_active_degrees(self, step: int) -> None:
        interval = max(int(self.config.sh_increase_interval), 1)
        raised = (step + 1) // interval  # the official loop raises at iterations 1000, 2000, ... (1-based)
        self.active_sh_degree = min(raised, self.config.sh_degree)
        self.active_time_degree = min(max(raised - self.config.sh_degree, 0), self.time_degree)

    def after_step(self, step: int) -> HookResult:
        """Densification statistics, densify / prune, opacity reset (iteration ``step + 1``)."""
        config = self.config
        iteration = step + 1
        result = HookResult()
        growing = config.max_gaussians < 0 or self.num_gaussians < config.max_gaussians
        if iteration < config.densify_until and growing:
            self.accumulate_statistics()
            if iteration > config.densify_from and iteration % config.densify_interval == 0:
                result = result | self.densify_and_prune(prune_large=iteration > config.opacity_reset_interval)
            white = config.background == "white"
            if iteration % config.opacity_reset_interval == 0 or (white and iteration == config.densify_from):
                result = result | self.reset_opacity()
        self._records = []
        return result

    # ------------------------------------------------------------------ densification
    @torch.no_grad()
    def accumulate_statistics(self) -> None:
        """Add this step's screen-space gradient norms (NDC units) and radii of visible Gaussians."""
        for means2d, radii, index, width, height, views in self._records:
            if means2d.grad is None:
                continue
            grad = means2d.grad[0] * torch.tensor([width / 2.0 * views, height / 2.0 * views], device=means2d.device)
            radius = radii[0].to(self.max_radii.dtype)
            if radius.ndim > 1:  # per-axis radii
                radius = radius.amax(-1)
            visible = radius > 0
            rows = visible.nonzero().squeeze(1) if index is None else index[visible]
            self.grad_accum.index_add_(0, rows, grad[visible].norm(dim=-1))
            self.grad_count.index_add_(0, rows, torch.ones_like(rows, dtype=self.grad_count.dtype))
            self.max_radii[rows] = torch.maximum(self.max_radii[rows], radius[visible])

    @torch.no_grad()
    def densify_and_prune(self, prune_large: bool) -> HookResult:
        """Clone small and split large high-gradient Gaussians, then prune (see module docstring)."""
        config = self.config
        count = self.num_gaussians
        grads = torch.where(self.grad_count > 0, self.grad_accum / self.grad_count.clamp_min(1), torch.zeros_like(self.grad_accum))
        largest = self.scales.amax(1)
        selected = grads >= config.densify_grad_threshold
        small = largest <= config.percent_dense * self.extent
        clone = (selected & small).nonzero().squeeze(1)
        split = (selected & ~small).nonzero().squeeze(1)
        samples = int(config.split_samples)

        values = {name: getattr(self, name).detach() for name in self.per_gaussian_names}
        survivors = torch.ones(count, dtype=torch.bool, device=self.means.device)
        survivors[split] = False
        keep_rows = survivors.nonzero().squeeze(1)
        split_values = self._split_values(values, split, samples)
        new_values = {
            name: torch.cat([value[keep_rows], value[clone], split_values[name]]) for name, value in values.items()
        }
        rows = torch.cat(
            [keep_rows, torch.full((clone.numel() + split.numel() * samples,), -1, dtype=torch.long, device=keep_rows.device)]
        )
        prune = torch.sigmoid(new_values["opacity_logits"]) < config.prune_opacity
        if prune_large:
            prune |= torch.exp(new_values["log_scales"]).amax(1) > config.prune_world_scale * self.extent
            if config.prune_screen_size > 0:
                radii = torch.cat([self.max_radii[keep_rows], self.max_radii[clone], self.max_radii[split].repeat(samples)])
                prune |= radii > config.prune_screen_size
        keep = ~prune
        surgery = self._replace_rows({name: value[keep] for name, value in new_values.items()}, rows[keep])
        return HookResult(surgery=surgery)

    def _split_values(self, values: dict[str, Tensor], split: Tensor, samples: int) -> dict[str, Tensor]:
        """Attributes of the ``samples`` Gaussians drawn from each Gaussian of ``split`` (4D: in space-time)."""
        shrink = math.log(0.8 * samples)
        out = {name: value[split].repeat(samples, *([1] * (value.ndim - 1))) for name, value in values.items()}
        if self.dim == 3:
            stds = torch.exp(values["log_scales"][split]).repeat(samples, 1)
            rotations = quat_to_rotmat(values["quats"][split]).repeat(samples, 1, 1)
            noise = torch.randn(stds.shape, generator=self.generator).to(stds) * stds
            out["means"] = out["means"] + (rotations @ noise[..., None])[..., 0]
        else:
            scales = torch.exp(torch.cat([values["log_scales"][split], values["log_scale_t"][split, None]], 1))
            stds = scales.repeat(samples, 1)
            rotations = rotation_4d(values["quats"][split], values["quats_right"][split]).repeat(samples, 1, 1)
            noise = torch.randn(stds.shape, generator=self.generator).to(stds) * stds
            offsets = (rotations @ noise[..., None])[..., 0]
            out["means"] = out["means"] + offsets[:, :3]
            out["times"] = out["times"] + offsets[:, 3]
            out["log_scale_t"] = out["log_scale_t"] - shrink
        out["log_scales"] = out["log_scales"] - shrink
        return out

    @torch.no_grad()
    def reset_opacity(self) -> HookResult:
        """Clamp opacities to ``opacity_reset_value``; their Adam moments restart from zero."""
        ceiling = float(_logit(self.config.opacity_reset_value))
        logits = self.opacity_logits.detach().clamp(max=ceiling)
        old = self.opacity_logits
        self.opacity_logits = nn.Parameter(logits)
        rows = torch.full((logits.shape[0],), -1, dtype=torch.long, device=logits.device)
        return HookResult(surgery=(ParamSurgery(old, self.opacity_logits, rows),))

    def _replace_rows(self, values: dict[str, Tensor], rows: Tensor) -> tuple[ParamSurgery, ...]:
        """Install new per-Gaussian parameters; reset the statistics; the surgery records."""
        surgery = []
        for name in self.per_gaussian_names:
            old = getattr(self, name)
            new = nn.Parameter(values[name].contiguous())
            setattr(self, name, new)
            surgery.append(ParamSurgery(old, new, rows))
        count = rows.shape[0]
        device = self.means.device
        self.grad_accum = torch.zeros(count, device=device)
        self.grad_count = torch.zeros(count, device=device)
        self.max_radii = torch.zeros(count, device=device)
        self.rigid_neighbours = torch.zeros(count, 0, dtype=torch.long, device=device)
        return tuple(surgery)

    # ------------------------------------------------------------------ export
    @torch.no_grad()
    def splat_attributes(self, time: float | None = None) -> SplatAttributes:
        """The Gaussians in the standard 3DGS PLY layout; 4D: the slice at normalised ``time``.

        4D slices are exact: the conditional mean and covariance (factored into scales and a
        rotation), opacity times the temporal marginal (Gaussians at or below
        ``temporal_threshold`` dropped) and the spherindrical table collapsed to plain SH at that
        time (:func:`~tensorfield.fields.gaussian_math.collapse_spherindrical`), so a splat viewer
        shows what :meth:`render_view` renders (up to the view direction, which viewers take from
        the exported mean, as here).
        """
        if self.dim == 3:
            means, opacity_logits = self.means, self.opacity_logits
            log_scales, quats = self.log_scales, F.normalize(self.quats, dim=-1)
            table = self.coefficients
        else:
            gaussians = self.gaussians_at(self.scene_time(time))
            means = gaussians.means
            opacity_logits = _logit(gaussians.opacities.clamp(1e-7, 1 - 1e-7))
            scales, quats = covariance_to_scales_quats(gaussians.covariances)
            log_scales = scales.log()
            table = collapse_spherindrical(
                gaussians.coefficients, gaussians.dt, self.time_degree, float(self.config.time_duration), self.config.sh_degree
            )
        count = means.shape[0]
        rest = table[:, 1:].transpose(1, 2).reshape(count, -1)  # channel-major, as 3DGS's save_ply
        columns = [means, torch.zeros_like(means), table[:, 0], rest, opacity_logits[:, None], log_scales, quats]
        names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        names += [f"f_rest_{i}" for i in range(rest.shape[1])]
        names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
        return SplatAttributes(names, torch.cat(columns, dim=1).float().cpu())

    # ------------------------------------------------------------------ checkpoints
    def shape_state(self) -> dict:
        """Number of Gaussians, dimension, table size, active degrees and extent."""
        return {
            "gaussian_dim": self.dim,
            "num_gaussians": self.num_gaussians,
            "coefficients": int(self.sh_rest.shape[1]) + 1,
            "active_sh_degree": self.active_sh_degree,
            "active_time_degree": self.active_time_degree,
            "extent": self.extent,
            "rigid_columns": int(self.rigid_neighbours.shape[1]),
        }

    def prepare_for_state(self, shape_state: dict) -> None:
        """Resize every per-Gaussian tensor to the checkpoint's count so ``load_state_dict`` fits."""
        dim = int(shape_state.get("gaussian_dim", self.dim))
        if dim != self.dim:
            raise ValueError(f"checkpoint holds {dim}D Gaussians, this model is {self.dim}D")
        coefficients = int(shape_state.get("coefficients", self.sh_rest.shape[1] + 1))
        if coefficients != self.sh_rest.shape[1] + 1:
            raise ValueError(f"checkpoint has {coefficients} colour coefficients per channel, this model {self.sh_rest.shape[1] + 1}")
        count = int(shape_state["num_gaussians"])
        device = self.means.device
        for name in self.per_gaussian_names:
            old = getattr(self, name)
            setattr(self, name, nn.Parameter(torch.zeros(count, *old.shape[1:], dtype=old.dtype, device=device)))
        for name in ("grad_accum", "grad_count", "max_radii"):
            setattr(self, name, torch.zeros(count, device=device))
        self.rigid_neighbours = torch.zeros(count, int(shape_state.get("rigid_columns", 0)), dtype=torch.long, device=device)
        self.active_sh_degree = int(shape_state.get("active_sh_degree", 0))
        self.active_time_degree = int(shape_state.get("active_time_degree", 0))
        self.extent = float(shape_state.get("extent", self.extent))
