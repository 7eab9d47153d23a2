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
    RenderRequest,
    SceneInfo,
    SplatAttributes,
    StepOutput,
)
from tensorfield.fields.config import ImageMethodConfig, option
from tensorfield.fields.densification import DefaultStrategy, ScreenRecord
from tensorfield.fields.gaussian_loss import photometric_loss
from tensorfield.fields.gaussian_math import mean_neighbour_distance, nearest_neighbours, rgb_to_sh
from tensorfield.fields.gaussian_producers import GaussianProducer, GaussianSlice, logit, make_producer
from torch import Tensor, nn


# ================================================================================== config
@dataclass
class GaussianConfig(ImageMethodConfig):
    """Gaussian splatting options; defaults are the original 3DGS / official 4DGS settings."""

    steps: int = option(30000, "Number of optimisation steps (paper: 30k).")
    batch_size: int = option(1, "Images per step (3DGS: 1; 4DGS: 2 on D-NeRF, 4 on N3V).")
    gaussian_dim: int = option(0, "3 (static 3DGS) or 4 (4DGS); 0 = from `method` (gaussians4d -> 4).", group="model", choices=(0, 3, 4))
    # representation
    sh_degree: int = option(3, "Largest SH degree of the view-dependent colour (0..3).", group="model", minimum=0, maximum=3)
    time_degree: int = option(2, "4D: Fourier orders of the spherindrical harmonics in time (0..2; official sh_degree_t 2).", group="model", minimum=0, maximum=2)
    sh_increase_interval: int = option(1000, "Activate one more SH degree (then temporal degree) every N steps.", group="model", minimum=1)
    time_duration: float = option(1.0, "4D: scene time = normalised camera time x this; also the Fourier period T.", group="model", above=0)
    temporal_threshold: float = option(0.05, "4D: Gaussians whose temporal marginal is <= this are culled before rasterising.", group="model", minimum=0, maximum=1)
    # initialisation
    init_points: int = option(100000, "Random initial Gaussians in the scene box when the scene has no point cloud.", group="initialisation", minimum=1)
    init_opacity: float = option(0.1, "Initial opacity.", group="initialisation", above=0, below=1)
    init_time_margin: float = option(0.1, "4D: initial times uniform in [-m T, (1 + m) T].", group="initialisation", minimum=0)
    init_time_variance: float = option(0.2, "4D: initial temporal variance as a fraction of T (official T/5).", group="initialisation", above=0)
    scene_extent: float = option(0.0, "Scene extent E for learning rates and densification (0 = from cameras, else the box).", group="initialisation", minimum=0)
    # optimisation
    lr_means: float = option(1.6e-4, "Initial learning rate of the means, times E.", group="optimisation", minimum=0)
    lr_means_final: float = option(1.6e-6, "Final learning rate of the means, times E (exponential decay).", group="optimisation", minimum=0)
    lr_means_steps: int = option(-1, "Steps over which the mean rate decays to lr_means_final (-1 = steps).", group="optimisation", minimum=1, special=(-1,))
    lr_times: float = option(-1.0, "4D: learning rate of the temporal means, times E, constant (-1 = lr_means).", group="optimisation", minimum=0, special=(-1,))
    lr_sh: float = option(2.5e-3, "Learning rate of the DC colour coefficients (the rest: 1/20 of it).", group="optimisation", minimum=0)
    lr_opacity: float = option(0.05, "Learning rate of the opacity logits.", group="optimisation", minimum=0)
    lr_scales: float = option(5e-3, "Learning rate of the log scales (and 4D temporal log scale).", group="optimisation", minimum=0)
    lr_quats: float = option(1e-3, "Learning rate of the quaternions.", group="optimisation", minimum=0)
    adam_betas: list[float] = option([0.9, 0.999], "Adam betas (read by the trainer).", group="optimisation", minimum=0, below=1, lengths=(2,))
    adam_eps: float = option(1e-15, "Adam epsilon (read by the trainer; 3DGS: 1e-15).", group="optimisation", above=0)
    ssim_weight: float = option(0.2, "Weight lambda of (1 - SSIM) in the loss (1 - lambda on L1).", group="optimisation", minimum=0, maximum=1)
    rigid_weight: float = option(0.0, "4D: weight of the official rigidity loss (lambda_rigid; 1.0 in the official D-NeRF configs): neighbouring Gaussians move alike.", group="optimisation", minimum=0)
    rigid_neighbours: int = option(20, "4D rigidity loss: nearest Gaussians by mean (itself included) each one is compared with (official k = 20).", group="optimisation", minimum=1)
    rigid_knn_interval: int = option(1, "4D rigidity loss: recompute the neighbours every N steps and after densification (official: every step); weights always use the current distances.", group="optimisation", minimum=1)
    motion_weight: float = option(0.0, "4D: weight of the official motion loss (lambda_motion): the mean speed of the Gaussians.", group="optimisation", minimum=0)
    consistency_weight: float = option(0.0, "4D: weight of the 4D consistency loss (4D-Rotor GS, Duan et al. SIGGRAPH 2024, Sec. 3.4): each Gaussian's velocity against the mean velocity of its nearest Gaussians in space-time (L1).", group="optimisation", minimum=0)
    consistency_neighbours: int = option(8, "4D consistency loss: nearest Gaussians by space-time mean (x, y, z, t), itself excluded.", group="optimisation", minimum=1)
    consistency_knn_interval: int = option(10, "4D consistency loss: recompute the neighbours every N steps and after densification (also after a resume).", group="optimisation", minimum=1)
    entropy_weight: float = option(0.0, "Weight of the opacity entropy loss mean(-o log o) (4D-Rotor GS, Duan et al. SIGGRAPH 2024, Sec. 3.4): opacities go to 0 or 1, so faint floaters fade and are pruned.", group="optimisation", minimum=0)
    lifespan_floor: float = option(0.0, "4D: shortest temporal standard deviation sqrt(Sigma_tt) the lifespan loss tolerates, as a fraction of the clip (0 = off); e.g. 0.05 = 3 frames of 60.", group="optimisation", minimum=0)
    lifespan_speed: float = option(0.0, "4D: the lifespan loss only for Gaussians that stay put: each Gaussian's term weighted by exp(-(d / s)^2), d the distance its conditional mean travels over the whole clip (scene units), s = this (0 = every Gaussian). Moving content keeps short lifespans; static content seen by one camera per instant must span many of them (static content is time-free, as Hybrid 3D-4DGS, Oh et al. 2025, makes it by turning long-lived Gaussians into 3D ones).", group="optimisation", minimum=0)
    lifespan_weight: float = option(1.0, "4D: weight of the lifespan loss mean(relu(log floor - log sigma_t)^2): Gaussians living shorter than lifespan_floor are pushed to live longer, so each is seen by several of a monocular video's cameras.", group="optimisation", minimum=0)
    time_jitter: float = option(0.0, "4D: each training view is rendered at its normalised time plus N(0, s^2) noise, s = this x (1 - step / time_jitter_steps), for monocular video (annealed smooth training, Deformable 3DGS, Yang et al. CVPR 2024, Sec. 3.3; 0 = off).", group="optimisation", minimum=0)
    time_jitter_steps: int = option(-1, "4D: steps over which time_jitter decays linearly to 0 (-1 = steps).", group="optimisation", minimum=1, special=(-1,))
    # densification
    densify_from: int = option(500, "First step whose statistics can trigger densification.", group="densification", minimum=0)
    densify_until: int = option(15000, "Densify / reset opacity only before this step.", group="densification", minimum=0)
    densify_interval: int = option(100, "Densify and prune every N steps.", group="densification", minimum=1)
    densify_grad_threshold: float = option(2e-4, "Mean NDC screen-space gradient norm that triggers clone / split.", group="densification", minimum=0)
    percent_dense: float = option(0.01, "Clone when the largest scale is <= this x E, else split.", group="densification", minimum=0, maximum=1)
    split_samples: int = option(2, "Gaussians a split one becomes (scales / (0.8 x this)).", group="densification", minimum=1)
    prune_opacity: float = option(0.005, "Prune Gaussians whose opacity is below this.", group="densification", minimum=0, maximum=1)
    prune_world_scale: float = option(0.1, "After the first opacity reset, prune Gaussians larger than this x E.", group="densification", minimum=0)
    prune_screen_size: float = option(0.0, "After the first opacity reset, prune Gaussians with a screen radius above this many pixels (0 = off; see module docstring).", group="densification", minimum=0)
    opacity_reset_interval: int = option(3000, "Clamp opacities to <= opacity_reset_value every N steps.", group="densification", minimum=1)
    opacity_reset_value: float = option(0.01, "Opacity ceiling after a reset.", group="densification", minimum=0, maximum=1)
    max_gaussians: int = option(-1, "Stop densifying once there are this many Gaussians (-1 = no limit; official densify_until_num_points).", group="densification", minimum=1, special=(-1,))
    # rasteriser
    backend: str = option("auto", "Rasteriser backend: auto (gsplat on CUDA, else cpu), gsplat, cpu (native kernel when no gradient is needed), torch or reference.", group="rasteriser", choices=("auto", "gsplat", "cpu", "torch", "reference"))
    near_plane: float = option(0.01, "Gaussians nearer than this (camera z) are culled.", group="rasteriser", above=0)
    far_plane: float = option(1e10, "Gaussians farther than this are culled.", group="rasteriser", above=0)
    eps2d: float = option(0.3, "Screen-space blur added to every projected covariance (pixels^2).", group="rasteriser", minimum=0)
    antialiased: bool = option(False, "gsplat's antialiased mode (opacity compensation for the blur).", group="rasteriser")
    tile_size: int = option(16, "Rasteriser tile size in pixels.", group="rasteriser", minimum=1)


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
    centers = scene.camera_centers
    if centers is not None and len(centers) > 1:
        centers = torch.as_tensor(centers, dtype=torch.float64).reshape(-1, 3)
        return 1.1 * float((centers - centers.mean(0)).norm(dim=1).max())
    aabb = scene.aabb.double().reshape(2, 3)
    return 1.1 * 0.5 * float((aabb[1] - aabb[0]).norm())


def warn_if_no_points(scene: SceneInfo, count: int | None = None, stacklevel: int = 2) -> None:
    """Warn when a real capture (nerfstudio / N3V) has no SfM points, so Gaussians start at random.

    Args:
        scene: the scene (``points``, ``source_format``).
        count: how many random Gaussians start instead (for the message).
        stacklevel: 1 = the line calling this function, 2 = its caller, ...
    """
    if scene.points is not None and len(scene.points) > 0:
        return
    source_format = scene.source_format
    if source_format in ("nerfstudio", "n3v"):  # real captures: 3DGS starts from SfM points
        start = f"{count} Gaussians start" if count is not None else "Gaussians start"
        warnings.warn(
            f"no SfM points in this {source_format} scene: {start} uniformly in the "
            "scene box, a slow and poor start for a real capture; put COLMAP's points3D.bin/.txt (or a "
            "points3d.ply) beside the data (README: SfM points)",
            stacklevel=stacklevel + 1,
        )


def _without_neighbours_is_empty(module, state_dict, prefix, *args) -> None:
    """Checkpoints written before the rigidity loss existed hold no ``rigid_neighbours``: load
    them with an empty ``[N, 0]`` table (found when first needed)."""
    key, means = prefix + "rigid_neighbours", prefix + "means"
    if key not in state_dict and means in state_dict:
        state_dict[key] = torch.zeros(state_dict[means].shape[0], 0, dtype=torch.long)


_logit = logit  # the old private name


_Slice = GaussianSlice  # the old private name


# ================================================================================== model
class GaussianSplatting(Field):
    """Gaussian splatting trained on whole images and rendered by the shared rasteriser.

    What differs between 3DGS and 4DGS lives in :attr:`producer` (a
    :class:`~tensorfield.fields.gaussian_producers.GaussianProducer`, chosen once from
    :func:`resolve_dim`); densification in :attr:`strategy` (a
    :class:`~tensorfield.fields.densification.DefaultStrategy`). The model holds the parameters
    (one ``nn.Parameter`` attribute per name of ``producer.names``), the statistics buffers, the
    rasteriser call, the loss and the checkpoint shape.

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
        self.producer: GaussianProducer = make_producer(config, self.dim)
        self.time_degree = self.producer.time_degree
        self.extent = scene_extent(config, scene)
        self.strategy = DefaultStrategy.from_config(config, reset_at_densify_from=scene.white_background)
        self.active_sh_degree = 0
        self.active_time_degree = 0
        self.generator = torch.Generator().manual_seed(int(config.seed) + 1)
        self._records: list[ScreenRecord] = []
        self._consistency_neighbours: Tensor | None = None  # [N, k] space-time neighbours (consistency loss)

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
            warn_if_no_points(scene, count, stacklevel=2)
            points = aabb[0] + torch.rand(count, 3, generator=init) * (aabb[1] - aabb[0])
            dc = torch.rand(count, 3, generator=init) / 255.0  # grey: colour = 0.5 + C0 * dc
        count = points.shape[0]
        distances = mean_neighbour_distance(points).clamp_min(math.sqrt(1e-7))
        for name, value in self.producer.initial_values(points, dc, distances, init).items():
            setattr(self, name, nn.Parameter(value))
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
        return list(self.producer.names)

    def params(self) -> dict[str, Tensor]:
        """The per-Gaussian parameters by name (the producer's view of the model)."""
        return {name: getattr(self, name) for name in self.producer.names}

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
    def gaussians_at(self, time: float) -> GaussianSlice:
        """The 3D Gaussians seen at model time ``time`` (:meth:`GaussianProducer.gaussians_at`)."""
        return self.producer.gaussians_at(self.params(), time)

    def colors(self, gaussians: GaussianSlice, camera_center: Tensor) -> Tensor:
        """``[M, 3]`` colours seen from ``camera_center`` at the active degrees."""
        return self.producer.colors(gaussians, camera_center, self.active_sh_degree, self.active_time_degree)

    def _raster_colors(self, gaussians: GaussianSlice, camera_center: Tensor) -> tuple[Tensor, int | None]:
        """What the rasteriser gets as colours: ``(SH table, active degree)`` or ``(colours, None)``."""
        return self.producer.raster_colors(gaussians, camera_center, self.active_sh_degree, self.active_time_degree)

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
    def render_view(self, request: RenderRequest) -> RenderOutput:
        """Render the request's camera at its normalised time (``None``: the camera's own; static: ignored)."""
        time = self.scene_time(request.camera_time)
        output, _, _ = self._rasterize_camera(request.cameras, request.index, time, request.background)
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
        times = self.training_times(cameras.times, step)
        for i in range(len(cameras)):
            output, raster, gaussians = self._rasterize_camera(cameras, i, self.scene_time(times[i]), batch.background)
            renders.append(output.rgb)
            if raster is not None and raster.means2d.requires_grad:
                raster.means2d.retain_grad()
                self._records.append(
                    ScreenRecord(raster.means2d, raster.radii, gaussians.index, cameras.width, cameras.height, len(cameras))
                )
        prediction = torch.stack(renders)
        loss, l1, structural = photometric_loss(prediction, batch.images, self.config.ssim_weight)
        mse = F.mse_loss(prediction.detach(), batch.images)
        metrics = {"mse": float(mse), "l1": float(l1.detach()), "ssim": float(structural.detach()), "num_gaussians": float(self.num_gaussians)}
        for name, weight, value in self.producer.extra_losses(self.params(), step, self.rigidity_loss, self.consistency_loss):
            loss = loss + weight * value
            metrics[name] = float(value.detach())
        return StepOutput(loss, metrics)

    def training_times(self, times: Tensor, step: int) -> list[float]:
        r"""The normalised times the batch's views are rendered at in training step ``step``.

        Without ``time_jitter`` (and for static models) the cameras' own times. With it, each
        time plus :math:`\epsilon \sim N(0, s^2)`, :math:`s = \text{time\_jitter}
        \cdot \max(0, 1 - \text{step} / \text{time\_jitter\_steps})`: Deformable 3DGS's annealed
        smooth training (Yang et al., CVPR 2024, Sec. 3.3: noise on the time input, decaying
        linearly), here on the 4D slice time. With one camera per instant, a training image must
        then be explained by the Gaussians alive around its time, which other cameras see too.
        The noise comes from a generator seeded by ``seed`` and ``step``, so resumed runs draw the same.
        """
        values = [float(t) for t in times]
        config = self.config
        if self.dim != 4 or config.time_jitter <= 0:
            return values
        horizon = config.time_jitter_steps if config.time_jitter_steps > 0 else max(int(config.steps), 1)
        scale = float(config.time_jitter) * max(0.0, 1.0 - step / horizon)
        if scale <= 0:
            return values
        generator = torch.Generator().manual_seed(int(config.seed) * 1_000_003 + int(step) + 7)
        noise = torch.randn(len(values), generator=generator, dtype=torch.float64) * scale
        return [t + float(e) if math.isfinite(t) else t for t, e in zip(values, noise)]

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

    def consistency_loss(self, velocity: Tensor, step: int) -> Tensor:
        r"""4D consistency loss of 4D-Rotor GS (Duan et al., SIGGRAPH 2024, Sec. 3.4):

        .. math:: L_{c} = \frac{1}{N} \sum_i \Big\| v_i - \frac{1}{K} \sum_{j \in \Omega_i} v_j \Big\|_1

        with :math:`\Omega_i` the ``consistency_neighbours`` nearest other Gaussians by space-time
        mean :math:`(\mu_{xyz}, \mu_t)` and :math:`v` the velocity of :meth:`rigidity_loss`
        (its ``velocity`` argument, ``[N, 3]``). Unlike the rigidity loss the neighbours are found in
        4D, so a Gaussian is tied to those that coexist with it, not to those at the same place at
        another time. Neighbours are kept for ``consistency_knn_interval`` steps (an attribute,
        not checkpointed: a resumed run finds them anew).
        """
        count = self.num_gaussians
        k = min(int(self.config.consistency_neighbours), count - 1)
        if k <= 0:
            return velocity.sum() * 0.0
        interval = max(int(self.config.consistency_knn_interval), 1)
        cached = self._consistency_neighbours
        if cached is None or cached.shape != (count, k) or step % interval == 0:
            space_time = torch.cat([self.means.detach(), self.times.detach()[:, None]], dim=1)
            candidates = nearest_neighbours(space_time, k + 1).to(self.means.device)
            itself = candidates == torch.arange(count, device=candidates.device)[:, None]
            # drop the Gaussian itself (not always first: clones share its mean), else the farthest
            order = torch.argsort(itself.to(torch.int8), dim=1, stable=True)
            cached = candidates.gather(1, order)[:, :k]
            self._consistency_neighbours = cached
        return (velocity - velocity[cached].mean(dim=1)).abs().sum(dim=1).mean()

    def adam_settings(self) -> tuple[tuple[float, float], float]:
        """Adam with the config's betas and eps (3DGS: 0.9 / 0.999, 1e-15)."""
        return tuple(self.config.adam_betas), float(self.config.adam_eps)

    def param_groups(self) -> list[ParamGroup]:
        """One group per attribute with the original rates (see module docstring)."""
        return self.producer.param_groups(self.params(), self.extent)

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
        """Densification statistics, densify / prune, opacity reset, as :attr:`strategy` plans them."""
        plan = self.strategy.plan(step, self.num_gaussians)
        result = HookResult()
        if plan.accumulate:
            self.accumulate_statistics()
        if plan.densify:
            result = result | self.densify_and_prune(prune_large=plan.prune_large)
        if plan.reset_opacity:
            result = result | self.reset_opacity()
        self._records = []
        return result

    # ------------------------------------------------------------------ densification
    @torch.no_grad()
    def accumulate_statistics(self) -> None:
        """Add this step's screen-space gradient norms (NDC units) and radii of visible Gaussians."""
        self.strategy.accumulate(self._records, self.grad_accum, self.grad_count, self.max_radii)

    @torch.no_grad()
    def densify_and_prune(self, prune_large: bool) -> HookResult:
        """Clone small and split large high-gradient Gaussians, then prune (:meth:`DefaultStrategy.densify`)."""
        values = {name: value.detach() for name, value in self.params().items()}
        new_values, rows = self.strategy.densify(
            values, self.grad_accum, self.grad_count, self.max_radii, self.extent, prune_large, self._split_values
        )
        return HookResult(surgery=self._replace_rows(new_values, rows))

    def _split_values(self, values: dict[str, Tensor], split: Tensor, samples: int) -> dict[str, Tensor]:
        """Attributes of the ``samples`` Gaussians drawn from each Gaussian of ``split`` (the producer's sampler)."""
        return self.producer.split_values(values, split, samples, self.generator)

    @torch.no_grad()
    def reset_opacity(self) -> HookResult:
        """Clamp opacities to ``opacity_reset_value``; their Adam moments restart from zero."""
        logits = self.strategy.reset_opacity(self.opacity_logits)
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
        self._consistency_neighbours = None
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
        splat = self.producer.export(self.params(), self.scene_time(time))
        means, opacity_logits, log_scales, quats, table = splat.means, splat.opacity_logits, splat.log_scales, splat.quats, splat.table
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


class SpacetimeGaussians(GaussianSplatting):
    """4D Gaussian splatting: :class:`GaussianSplatting` with time (the
    :class:`~tensorfield.fields.base.HasTime` capability; the producer is the space-time one)."""

    def time_span(self) -> tuple[float, float]:
        """Normalised camera times ``[0, 1]`` (scene time is this times ``time_duration``)."""
        return (0.0, 1.0)


def build_gaussians(config: GaussianConfig, scene: SceneInfo) -> GaussianSplatting:
    """The registry's model factory: :class:`SpacetimeGaussians` for 4D configs, else 3DGS."""
    return SpacetimeGaussians(config, scene) if resolve_dim(config) == 4 else GaussianSplatting(config, scene)
