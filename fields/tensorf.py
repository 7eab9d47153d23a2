"""TensoRF: radiance fields as factorised 4D tensors (Chen et al., ECCV 2022).

Both decompositions of the paper live here, selected by ``config.mode`` (or the method name:
``tensorf_vm`` / ``tensorf_cp``):

* **VM** (vector-matrix, Sec. 3.2, "VM-192"): density planes x lines with 16 components per mode,
  appearance with 48 per mode;
* **CP** (CANDECOMP/PARAFAC, Sec. 3.1, "CP-384"): lines only, 96 density + 288 appearance
  components.

Field (Sec. 4, Eq. 4-7). With :math:`\\hat x \\in [-1, 1]^3` the position normalised to the
current bounding box,

.. math::

    \\sigma(x) = \\mathrm{softplus}\\big(\\textstyle\\sum \\mathcal{G}_\\sigma(\\hat x) + s\\big),
    \\qquad c(x, d) = S\\big(B\\, \\mathcal{G}_c(\\hat x),\\, d\\big)

where :math:`\\mathcal{G}_\\sigma, \\mathcal{G}_c` are the factor grids
(:mod:`tensorfield.fields.factor_grids`), :math:`s` the density shift (-10, so zero factors give
:math:`\\sigma \\approx 4.5 \\cdot 10^{-5}`), :math:`B` a bias-free linear map to 27 appearance
features and :math:`S` the official ``MLP_Fea`` shader (:class:`FeatureShader`).

Rendering goes through the shared ray marcher :func:`tensorfield.cuda.raymarch.march_rays` with
step ``mean(aabb size / (reso - 1)) * step_ratio`` and segment length ``step * distance_scale``
(Sec. 4: "distance scale" 25).

Training schedule (Sec. 4, official ``train.py``): *when* is decided by a
:class:`~tensorfield.fields.grid_schedule.GridSchedule` (``TensoRF.schedule``, built from the
config; reusable by other grid methods), *how* by the model's :meth:`TensoRF.upsample`,
:meth:`TensoRF.rebuild_alpha_mask`, :meth:`TensoRF.shrink_to_mask` / :meth:`TensoRF.shrink`;
:meth:`TensoRF.after_step` hands each step to the schedule:

* **coarse-to-fine**: the grid resolution follows voxel counts spaced log-linearly from
  ``voxels_init`` to ``voxels_final``; at each of ``upsample_steps`` all factors are resampled
  (bilinear/linear, ``align_corners=True``) and the optimiser is rebuilt (learning-rate reset);
* **alpha mask** at ``alpha_mask_steps``: the dense alpha on the current grid, max-pooled
  (kernel 3) and thresholded, becomes an :class:`~tensorfield.cuda.raymarch.OccupancyGrid` that
  lets the marcher skip empty space. The first update also shrinks the box to the occupied
  region (cropping every factor) and lowers the L1 weight; the second asks the trainer to drop
  training rays that only see empty space (:meth:`TensoRF.ray_filter`).

Differences from the official code, all deliberate:

* samples sit at segment midpoints at test time and every sample has length ``step`` (the
  marcher's convention; the official code uses the segment start and gives the last sample
  length 0), and rays stop once the transmittance falls under ``transmittance_threshold``
  (set it to 0 for the official behaviour);
* the bounding-box shrink always snaps the new box to the cropped grid vertices (the official
  code does so only when the mask and factor grids differ; otherwise the boxes agree to float
  rounding);
* a shrink that happens without an upsample in the same step also rebuilds the optimiser (the
  official code would keep optimising the discarded tensors);
* :meth:`TensoRF.ray_filter` tests the marched segment ``[near, far]`` of a ray, not its
  infinite line, and an alpha mask that would be empty is not installed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tensorfield.cuda.raymarch import (
    DenseDensity,
    OccupancyGrid,
    march_rays,
    march_rays_chunked,
    ray_aabb_intersect,
    rays_hit_occupancy,
)
from tensorfield.fields.base import (
    BatchKind,
    Field,
    HookResult,
    ParamGroup,
    RayBatch,
    RenderOutput,
    RenderRequest,
    SceneInfo,
    StepOutput,
)
from tensorfield.fields.config import option
from tensorfield.fields.radiance_config import RadianceFieldConfig
from tensorfield.fields.encoding import FeatureShader, positional_encoding  # noqa: F401 (re-export)
from tensorfield.fields.grid_schedule import GridSchedule, voxel_schedule, voxels_to_resolution  # noqa: F401 (re-export)
from tensorfield.fields.factor_grids import (
    CandecompGrids,
    FactorGrids,
    VectorMatrixGrids,
    accumulate_into_grad,
    sample_dense,
)
from torch import Tensor, nn


# ================================================================================== config
@dataclass
class TensoRFConfig(RadianceFieldConfig):
    """TensoRF options; defaults are the paper's NeRF-Synthetic (lego) VM-192 setting."""

    steps: int = option(30000, "Number of optimisation steps (paper: 30k).")
    batch_size: int = option(4096, "Rays per step (paper: 4096).")
    mode: str = option("", "Decomposition 'vm' or 'cp'; empty = from `method` (tensorf_cp -> cp, else vm).", group="model", choices=("", "vm", "cp"))
    # factor grids
    density_components: list[int] = option([16, 16, 16], "VM density components per mode (xy-plane x z-line, xz x y, yz x x).", group="model", minimum=1, lengths=(3,))
    app_components: list[int] = option([48, 48, 48], "VM appearance components per mode.", group="model", minimum=1, lengths=(3,))
    cp_density_components: int = option(96, "CP density rank (CP-384: 96).", group="model", minimum=1)
    cp_app_components: int = option(288, "CP appearance rank (CP-384: 288).", group="model", minimum=1)
    app_dim: int = option(27, "Appearance features after the linear basis B (input of the shader).", group="model", minimum=1)
    init_scale_vm: float = option(0.1, "VM factors start as init_scale_vm * N(0, 1).", group="model", minimum=0)
    init_scale_cp: float = option(0.2, "CP factors start as init_scale_cp * N(0, 1).", group="model", minimum=0)
    voxels_init: int = option(2097156, "Initial voxel count (official N_voxel_init; 2097156 -> 128^3 on a cube).", group="model", minimum=1)
    voxels_final: int = option(27000000, "Voxel count after the last upsampling (300^3).", group="model", minimum=1)
    upsample_steps: list[int] = option([2000, 3000, 4000, 5500, 7000], "Steps after which the grid is upsampled (log-spaced voxel counts).", group="model", minimum=0, ascending=True)
    # marching (shader, density and the shared options: RadianceFieldConfig)
    step_ratio: float = option(0.5, "Marching step in voxels: step = mean(aabb size / (reso - 1)) * step_ratio.", group="ray marching", above=0)
    max_samples: int = option(1000000, "Cap on samples per ray (official nSamples); the cap used is min(this, |reso| / step_ratio).", group="ray marching", minimum=1)
    render_cache_mb: float = option(1024.0, "Inference only: bake the density (and, if it fits too, the basis-mixed appearance) into dense grids of at most this many MB, interpolated with 8 taps instead of every factor; 0 = off. Same values to float rounding.", group="ray marching", minimum=0)
    # alpha mask
    alpha_mask_steps: list[int] = option([2000, 4000], "Steps after which the alpha mask is rebuilt (first: shrink the box; second: filter rays).", group="alpha mask", minimum=0, ascending=True)
    alpha_mask_max_voxels: int = option(16777216, "Use the current grid for the mask only below this many vertices (official 256^3); else keep the previous mask resolution.", group="alpha mask", minimum=1)
    # optimisation
    lr_grid: float = option(0.02, "Adam learning rate of the factor grids.", group="optimisation", minimum=0)
    lr_decay_ratio: float = option(0.1, "Learning rates decay exponentially to this fraction over lr_decay_steps.", group="optimisation", above=0, maximum=1)
    lr_decay_steps: int = option(-1, "Steps over which the learning rates decay by lr_decay_ratio (-1 = steps).", group="optimisation", minimum=1, special=(-1,))
    l1_weight_initial: float = option(8e-5, "Weight of the L1 norm of the density factors before the first alpha mask.", group="optimisation", minimum=0)
    l1_weight_rest: float = option(4e-5, "Weight of the L1 norm of the density factors after the first alpha mask.", group="optimisation", minimum=0)
    tv_weight_density: float = option(0.0, "Weight of the total variation of the density planes (VM) / lines (CP); decays like the lr.", group="optimisation", minimum=0)
    tv_weight_app: float = option(0.0, "Weight of the total variation of the appearance planes / lines; decays like the lr.", group="optimisation", minimum=0)
    ortho_weight: float = option(0.0, "Weight of the orthogonality penalty between line components (official Ortho_weight).", group="optimisation", minimum=0)


def resolve_mode(config: TensoRFConfig) -> str:
    """``'vm'`` or ``'cp'`` from ``config.mode``, else from ``config.method``."""
    mode = (config.mode or ("cp" if config.method == "tensorf_cp" else "vm")).lower()
    if mode not in ("vm", "cp"):
        raise ValueError(f"TensoRF mode must be 'vm' or 'cp', got {config.mode!r}")
    return mode


# ================================================================================== helpers
# ================================================================================== model
def _after_load_hook(module: TensoRF, incompatible_keys) -> None:
    module._after_load()


@dataclass
class RenderCache:
    """Dense inference grids of a :class:`TensoRF` (see :meth:`TensoRF.render_cache`)."""

    key: tuple
    density: Tensor  # [Z, Y, X, 1] density feature sum
    app: Tensor | None  # [Z, Y, X, app_dim] basis-mixed appearance features, if within budget


class TensoRF(Field):
    """TensoRF VM / CP radiance field, trained on random rays and rendered by the ray marcher.

    Args:
        config: the method config.
        scene: scene bounds (``aabb``, ``near``, ``far``).

    Buffers (in ``state_dict``): ``aabb`` ``[2, 3]`` (current, possibly shrunk box),
    ``alpha_mask`` ``[X, Y, Z]`` bool (vertex mask, shape ``(0, 0, 0)`` before the first
    update), ``alpha_mask_aabb`` ``[2, 3]``, and ``rng_state`` (uint8, the state of the
    generator that draws the jitter offsets, so a resumed run continues bit-exactly).
    """

    batch_kind = BatchKind.RAYS

    def __init__(self, config: TensoRFConfig, scene: SceneInfo) -> None:
        super().__init__()
        self.config = config
        self.mode = resolve_mode(config)
        self.near, self.far = float(scene.near), float(scene.far)
        aabb = scene.aabb.detach().float().cpu().reshape(2, 3)
        resolution = voxels_to_resolution(config.voxels_init, aabb)
        self.schedule = GridSchedule.from_config(config)
        self.voxel_counts = list(self.schedule.voxel_counts)

        init = torch.Generator().manual_seed(int(config.seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(config.seed))
            if self.mode == "vm":
                self.density_grids: FactorGrids = VectorMatrixGrids(config.density_components, resolution, config.init_scale_vm, init)
                self.app_grids: FactorGrids = VectorMatrixGrids(config.app_components, resolution, config.init_scale_vm, init)
            else:
                self.density_grids = CandecompGrids(config.cp_density_components, resolution, config.init_scale_cp, init)
                self.app_grids = CandecompGrids(config.cp_app_components, resolution, config.init_scale_cp, init)
            self.basis = nn.Linear(self.app_grids.feature_dim, config.app_dim, bias=False)
            self.shader = FeatureShader(config.app_dim, config.view_pe, config.feature_pe, config.mlp_hidden)

        self.register_buffer("aabb", aabb.clone())
        self.register_buffer("alpha_mask", torch.zeros(0, 0, 0, dtype=torch.bool))
        self.register_buffer("alpha_mask_aabb", aabb.clone())
        self._generator = torch.Generator().manual_seed(int(config.seed) + 1)
        self.register_buffer("rng_state", self._generator.get_state())
        self.alpha_mask_updates = 0  # how many alpha-mask updates have happened
        self.lr_scale = 1.0  # learning-rate multiplier of the next param_groups()
        self._occupancy: OccupancyGrid | None = None
        self._render_cache: RenderCache | None = None
        self.register_load_state_dict_post_hook(_after_load_hook)

    # ------------------------------------------------------------------ geometry
    @property
    def resolution(self) -> tuple[int, int, int]:
        """``(X, Y, Z)`` grid vertices of the factors."""
        return self.density_grids.resolution

    @property
    def step_size(self) -> float:
        """Marching step :math:`\\overline{\\mathrm{size} / (\\mathrm{reso} - 1)} \\cdot` ``step_ratio``."""
        units = (self.aabb[1] - self.aabb[0]).float().cpu() / (torch.tensor(self.resolution, dtype=torch.float32) - 1)
        return float(units.mean() * self.config.step_ratio)

    @property
    def max_samples_per_ray(self) -> int:
        """Training cap: ``min(max_samples, int(|reso| / step_ratio))`` (official ``cal_n_samples``)."""
        return min(int(self.config.max_samples), int(np.linalg.norm(self.resolution) / self.config.step_ratio))

    @property
    def l1_weight(self) -> float:
        """``l1_weight_initial`` until the first alpha mask, ``l1_weight_rest`` after."""
        return self.schedule.l1_weight(self.alpha_mask_updates)

    @property
    def occupancy(self) -> OccupancyGrid | None:
        """The alpha mask as the marcher's cell grid, or ``None`` before the first update.

        The official mask holds binary values on grid *vertices* and counts a point as occupied
        when its trilinear interpolation is > 0, i.e. when any corner of its cell is occupied;
        the cell grid is therefore the 2x2x2 max-pool of the vertex mask, over the same box.
        """
        if self.alpha_mask.numel() == 0:
            return None
        if self._occupancy is None:
            vertices = self.alpha_mask.float()[None, None]
            cells = F.max_pool3d(vertices, kernel_size=2, stride=1)[0, 0] > 0.5
            self._occupancy = OccupancyGrid(self.alpha_mask_aabb.clone(), cells)
        return self._occupancy

    def _invalidate_occupancy(self) -> None:
        self._occupancy = None

    def _after_load(self) -> None:
        self._invalidate_occupancy()
        self._generator.set_state(self.rng_state.cpu())

    @property
    def generator(self) -> torch.Generator:
        """The CPU generator of the jitter offsets; its state is mirrored in the ``rng_state`` buffer."""
        return self._generator

    def normalize(self, points: Tensor) -> Tensor:
        """World ``[S, 3]`` -> ``[-1, 1]^3`` in the current box."""
        lo, hi = self.aabb[0].to(points), self.aabb[1].to(points)
        return (points - lo) * (2.0 / (hi - lo)) - 1.0

    # ------------------------------------------------------------------ field
    def density(self, points: Tensor, times: Tensor | None = None) -> Tensor:
        """``[S]`` density :math:`\\mathrm{softplus}(\\sum \\mathcal{G}_\\sigma(\\hat x) + s)` at world points ``[S, 3]``."""
        cache = self.render_cache()
        if cache is not None:
            return sample_dense(cache.density, points, box=self.aabb, softplus_shift=float(self.config.density_shift))
        feature = self.density_grids.feature_sum(self.normalize(points))
        return F.softplus(feature + self.config.density_shift)

    # ------------------------------------------------------------------ render cache
    def render_cache(self) -> RenderCache | None:
        """The dense render cache, (re)built for the current parameters; ``None`` when unused.

        Used only for inference: in eval mode (``model.eval()``) with gradients off, and when
        ``config.render_cache_mb`` allows. :meth:`.FactorGrids.dense` bakes the density feature
        sum (``[Z, Y, X, 1]``) and, when it fits the budget too, the appearance features already
        mixed by the basis ``B`` (``[Z, Y, X, app_dim]``); interpolating them gives the factorised
        values to float rounding, with 8 taps per sample instead of every component of every factor
        (and no basis product). The cache is keyed by every parameter's storage and version
        counter, so any in-place update (an optimiser step, ``load_state_dict``), upsampling or
        shrinking rebuilds it on the next render; a training step drops it (no memory held while
        training). Off where ``allow_render_cache`` is False.
        """
        budget = float(self.config.render_cache_mb) * 2**20
        if self.training or torch.is_grad_enabled() or budget <= 0 or not self.allow_render_cache:
            return None
        key = (budget, *((t.data_ptr(), t._version, tuple(t.shape)) for t in (*self.parameters(), self.aabb)))
        cached = self._render_cache
        if cached is not None and cached.key == key:
            return cached
        self._render_cache = None
        voxels = math.prod(self.resolution)
        bytes_per = self.basis.weight.element_size()  # the cache has the parameters' dtype
        if voxels * bytes_per > budget:
            return None
        density = self.density_grids.dense()
        app = None
        if voxels * bytes_per * (1 + self.config.app_dim) <= budget:
            app = self.app_grids.dense(self.basis.weight)
        self._render_cache = RenderCache(key, density, app)
        return self._render_cache

    def color(self, points: Tensor, directions: Tensor, times: Tensor | None = None) -> Tensor:
        """``[S, 3]`` colour :math:`S(B \\mathcal{G}_c(\\hat x), d)` at world points and unit directions.

        The grid features and the basis are computed in one pass (or read from the
        :meth:`render_cache` when rendering), the shader MLP in chunks of ``config.color_chunk``
        samples (``color_chunk_render`` without gradients): the same values and gradients, but
        ``[S, 150]`` / ``[S, 128]`` temporaries small enough for the allocator to recycle instead
        of mapping fresh pages at every step.
        """
        cache = self.render_cache()
        if cache is not None and cache.app is not None:
            features = sample_dense(cache.app, points, box=self.aabb)
        else:
            features = self.basis(self.app_grids.features(self.normalize(points)))
        chunk = int(self.config.color_chunk if torch.is_grad_enabled() else self.config.color_chunk_render)
        if chunk <= 0 or points.shape[0] <= chunk:
            return self.shader(features, directions)
        return torch.cat([self.shader(f, d) for f, d in zip(features.split(chunk), directions.split(chunk))])

    @torch.no_grad()
    def radiance(self, points: Tensor, directions: Tensor) -> Tensor:
        """Export helper: ``[S, 3]`` colour at world ``points [S, 3]`` seen along ``directions [S, 3]``."""
        directions = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return self.color(points, directions)

    @torch.no_grad()
    def density_grid(self, resolution: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        """Dense alpha on the vertices of a grid over the current box (official ``getDenseAlpha``).

        :math:`\\alpha = 1 - e^{-\\sigma \\cdot \\mathrm{step}}` with the marching step *without*
        the distance scale (as the official code, whose mesh level 0.005 assumes it), and 0 where
        the current alpha mask is empty.

        Args:
            resolution: ``(X, Y, Z)`` vertices; default the factor grid's.

        Returns:
            ``alpha [X, Y, Z]`` (vertex ``(i, j, k)`` at ``aabb[0] + (i, j, k) / (reso - 1) *
            size``) and the ``aabb [2, 3]``.
        """
        resolution = tuple(int(r) for r in (resolution or self.resolution))
        device = self.aabb.device
        axes = [torch.linspace(0, 1, n, device=device) for n in resolution]
        step = self.step_size
        alpha = torch.zeros(resolution, device=device)
        lo, hi = self.aabb[0], self.aabb[1]
        yz = torch.stack(torch.meshgrid(axes[1], axes[2], indexing="ij"), dim=-1).reshape(-1, 2)
        slab = max(1, (1 << 18) // max(yz.shape[0], 1))
        for start in range(0, resolution[0], slab):
            xs = axes[0][start : start + slab]
            s = torch.cat([xs.repeat_interleave(yz.shape[0])[:, None], yz.repeat(xs.shape[0], 1)], dim=-1)
            points = lo * (1 - s) + hi * s
            keep = self._vertex_mask_query(points)
            sigma = torch.zeros(points.shape[0], device=device)
            if bool(keep.any()):
                sigma[keep] = self.density(points[keep])
            alpha[start : start + xs.shape[0]] = (1 - torch.exp(-sigma * step)).view(xs.shape[0], *resolution[1:])
        return alpha, self.aabb.clone()

    def _vertex_mask_query(self, points: Tensor) -> Tensor:
        """Official ``AlphaGridMask.sample_alpha(x) > 0``: trilinear interpolation of the vertex mask."""
        if self.alpha_mask.numel() == 0:
            return torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
        lo, hi = self.alpha_mask_aabb[0], self.alpha_mask_aabb[1]
        # the volume is [X, Y, Z] = grid_sample's [D, H, W], addressed by (w, h, d) = (z, y, x)
        grid = ((points - lo) * (2.0 / (hi - lo)) - 1.0).flip(-1)
        volume = self.alpha_mask.float()[None, None]
        values = F.grid_sample(volume, grid.view(1, -1, 1, 1, 3), align_corners=True)
        return values.view(-1) > 0

    # ------------------------------------------------------------------ rendering
    def _march_kwargs(self, training: bool) -> dict:
        return dict(
            aabb=self.aabb,
            step_size=self.step_size,
            near=self.near,
            far=self.far,
            occupancy=self.occupancy,
            distance_scale=self.config.distance_scale,
            weight_threshold=self.config.weight_threshold,
            transmittance_threshold=self.config.transmittance_threshold,
            samples_per_round=int(self.config.march_round_samples),
            max_samples_per_ray=self.max_samples_per_ray if training else min(
                int(self.config.max_samples), self._render_samples_cap()
            ),
        )

    def _render_samples_cap(self) -> int:
        """Official test-time ``nSamples = int(|aabb size| / step) + 1``."""
        return int(float((self.aabb[1] - self.aabb[0]).norm()) / self.step_size) + 1

    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        """MSE of jittered renders composited on ``batch.background``, plus L1 (+ TV, orthogonality).

        .. math:: \\mathcal{L} = \\|\\hat C - C\\|^2 + \\lambda_{L1} \\|\\mathcal{G}_\\sigma\\|_1
            + \\lambda_{TV} \\gamma^{(k+1)/K} \\mathrm{TV} + \\lambda_{\\perp} \\Omega

        (Sec. 4 "Loss"; the TV weights decay with the learning-rate ratio :math:`\\gamma` per step
        like the official code). The jitter offsets come from the model's own generator, whose
        state is mirrored in the ``rng_state`` buffer after every step (and restored from it by
        ``load_state_dict``), so checkpoints resume bit-exactly.
        """
        config = self.config
        self._render_cache = None  # stale from now on: free it
        with accumulate_into_grad():  # per-round density gradients go straight into .grad
            out = march_rays(
                batch.origins,
                batch.directions,
                self.density,
                self.color,
                background=batch.background,
                jitter=True,
                generator=self._generator,
                **self._march_kwargs(training=True),
            )
        self.rng_state.copy_(self._generator.get_state())
        rgb = out.rgb.clamp(0.0, 1.0)
        mse = F.mse_loss(rgb, batch.rgb)
        loss = mse
        metrics = {"mse": float(mse.detach())}
        if self.l1_weight > 0:
            with accumulate_into_grad():
                l1 = self.density_grids.l1()
            loss = loss + self.l1_weight * l1
            metrics["l1"] = float(l1.detach())
        decay = config.lr_decay_ratio ** ((step + 1) / self._decay_steps)
        if config.tv_weight_density > 0:
            tv = self.density_grids.tv()
            loss = loss + config.tv_weight_density * decay * tv
            metrics["tv_density"] = float(tv.detach())
        if config.tv_weight_app > 0:
            tv = self.app_grids.tv()
            loss = loss + config.tv_weight_app * decay * tv
            metrics["tv_app"] = float(tv.detach())
        if config.ortho_weight > 0:
            ortho = self.density_grids.orthogonality() + self.app_grids.orthogonality()
            loss = loss + config.ortho_weight * ortho
            metrics["ortho"] = float(ortho.detach())
        num_rays = max(batch.origins.shape[0], 1)
        metrics["num_samples"] = float(out.num_samples)
        metrics["samples_per_ray"] = out.num_samples / num_rays
        if out.weights is not None:  # samples whose colour was evaluated (w > weight_threshold)
            metrics["color_samples_per_ray"] = float((out.weights.detach() > config.weight_threshold).sum()) / num_rays
        return StepOutput(loss, metrics)

    @torch.no_grad()
    def render_rays(
        self,
        origins: Tensor,
        directions: Tensor,
        times: Tensor | None = None,
        background: Tensor | None = None,
    ) -> RenderOutput:
        """Render ``[R, 3]`` rays (chunks of ``config.render_chunk``, no jitter, no gradient).

        Returns:
            :class:`RenderOutput` with ``rgb [R, 3]`` (clamped to [0, 1]), ``depth [R]``,
            ``alpha [R]``.
        """
        out = march_rays_chunked(
            origins,
            directions,
            self.density,
            self.color,
            chunk=int(self.config.render_chunk),
            background=background,
            jitter=False,
            dense_density=self._dense_density(),
            **self._march_kwargs(training=False),
        )
        return RenderOutput(rgb=out.rgb.clamp(0.0, 1.0), depth=out.depth, alpha=out.alpha)

    def _dense_density(self) -> DenseDensity | None:
        """The render cache's density grid for the marcher's fused inference march (``None`` without a cache)."""
        cache = self.render_cache()
        if cache is None:
            return None
        return DenseDensity(cache.density, self.aabb, float(self.config.density_shift))

    @torch.no_grad()
    def render_view(self, request: RenderRequest) -> RenderOutput:
        """Render the request's camera to ``[H, W, 3]`` colour and ``[H, W]`` depth / alpha (static: time is ignored)."""
        background = request.background
        origins, directions = request.cameras.generate_rays(request.index)
        height, width = origins.shape[:2]
        device = self.aabb.device
        out = self.render_rays(
            origins.reshape(-1, 3).to(device), directions.reshape(-1, 3).to(device), background=background
        )
        return RenderOutput(
            rgb=out.rgb.view(height, width, 3),
            depth=out.depth.view(height, width),
            alpha=out.alpha.view(height, width),
        )

    # ------------------------------------------------------------------ optimisation
    @property
    def _decay_steps(self) -> int:
        return self.config.lr_decay_steps if self.config.lr_decay_steps > 0 else max(self.config.steps, 1)

    def adam_settings(self) -> tuple[tuple[float, float], float]:
        """Adam with the config's betas (official: 0.9, 0.99) and eps 1e-8."""
        return tuple(self.config.adam_betas), 1e-8

    def param_groups(self) -> list[ParamGroup]:
        """Factor grids at ``lr_grid``, basis + shader at ``lr_network``, decaying to ``lr_decay_ratio``.

        After an upsampling the learning rates restart at their initial values (``lr_upsample_reset``)
        or at the decayed value ``lr * ratio ** (step / steps)`` of that step.
        """
        config = self.config
        grids = list(self.density_grids.parameters()) + list(self.app_grids.parameters())
        network = list(self.basis.parameters()) + list(self.shader.parameters())
        return [
            ParamGroup("grids", grids, config.lr_grid * self.lr_scale, config.lr_decay_ratio, self._decay_steps),
            ParamGroup("network", network, config.lr_network * self.lr_scale, config.lr_decay_ratio, self._decay_steps),
        ]

    def after_step(self, step: int) -> HookResult:
        """Alpha-mask updates, then upsampling, after the optimiser step of ``step`` (0-based).

        When is decided by :attr:`schedule` (:class:`~tensorfield.fields.grid_schedule.GridSchedule`).
        """
        return self.schedule.after_step(self, step)

    @torch.no_grad()
    def upsample(self, resolution: Sequence[int]) -> None:
        """Resample all factors to ``resolution`` (bilinear / linear, ``align_corners=True``)."""
        self.density_grids.upsample(resolution)
        self.app_grids.upsample(resolution)

    def update_alpha_mask(self, step: int) -> HookResult:
        """Rebuild the alpha mask now (:meth:`rebuild_alpha_mask`), with the schedule's consequences.

        The first installed mask shrinks the box (:meth:`shrink_to_mask`, optimiser rebuilt); at
        the second of ``alpha_mask_steps`` the trainer is asked to refilter the rays.
        """
        return self.schedule.alpha_mask_update(self, step)

    @torch.no_grad()
    def rebuild_alpha_mask(self, step: int) -> bool:
        """Compute and install the alpha mask (official ``updateAlphaMask``); ``True`` if installed.

        The dense alpha (:meth:`density_grid`) on the current grid (or the previous mask's grid
        above ``alpha_mask_max_voxels``) is max-pooled with ``alpha_mask_kernel`` and thresholded
        at ``alpha_mask_threshold``. An empty result leaves everything unchanged (with a warning)
        rather than making the whole scene invisible.
        """
        config = self.config
        resolution = self.resolution
        if math.prod(resolution) >= config.alpha_mask_max_voxels:
            if self.alpha_mask.numel():
                resolution = tuple(self.alpha_mask.shape)
            else:
                resolution = tuple(voxels_to_resolution(config.alpha_mask_max_voxels - 1, self.aabb))
        alpha, aabb = self.density_grid(resolution)
        k = config.alpha_mask_kernel
        pooled = F.max_pool3d(alpha.clamp(0, 1)[None, None], kernel_size=k, padding=k // 2, stride=1)[0, 0]
        mask = pooled >= config.alpha_mask_threshold
        if not bool(mask.any()):
            warnings.warn(f"TensoRF alpha mask at step {step} is empty; keeping the previous state", stacklevel=3)
            return False
        self.alpha_mask = mask
        self.alpha_mask_aabb = aabb.clone()
        self._invalidate_occupancy()
        self.alpha_mask_updates += 1
        return True

    @torch.no_grad()
    def shrink_to_mask(self) -> None:
        """Shrink the box to the occupied vertices of the current alpha mask (:meth:`shrink`)."""
        mask, aabb = self.alpha_mask, self.alpha_mask_aabb
        occupied = mask.nonzero()
        size = (aabb[1] - aabb[0]) / (torch.tensor(tuple(mask.shape), device=aabb.device) - 1)
        lower = aabb[0] + occupied.amin(0) * size
        upper = aabb[0] + occupied.amax(0) * size
        self.shrink(torch.stack([lower, upper]))

    @torch.no_grad()
    def shrink(self, new_aabb: Tensor) -> None:
        """Crop every factor to the vertices covering ``new_aabb`` (official ``shrink``).

        Vertex range per axis: ``round((new_aabb - aabb_0) / unit)`` to ``round(...) + 1`` (at
        least two vertices), ``unit = size / (reso - 1)``; the box becomes the exact span of the
        kept vertices, so the field is unchanged inside it.
        """
        resolution = torch.tensor(self.resolution)
        aabb = self.aabb.cpu()
        units = (aabb[1] - aabb[0]) / (resolution - 1)
        lower = torch.round((new_aabb[0].cpu() - aabb[0]) / units).long().clamp(min=0)
        upper = torch.minimum(torch.round((new_aabb[1].cpu() - aabb[0]) / units).long() + 1, resolution)
        too_thin = upper - lower < 2
        upper = torch.where(too_thin, torch.minimum(lower + 2, resolution), upper)
        lower = torch.where(too_thin, upper - 2, lower)
        self.density_grids.crop(lower.tolist(), upper.tolist())
        self.app_grids.crop(lower.tolist(), upper.tolist())
        t_lower = lower.float() / (resolution - 1)
        t_upper = (upper - 1).float() / (resolution - 1)
        corrected = torch.stack([(1 - t_lower) * aabb[0] + t_lower * aabb[1], (1 - t_upper) * aabb[0] + t_upper * aabb[1]])
        self.aabb.copy_(corrected.to(self.aabb))

    @torch.no_grad()
    def ray_filter(self, origins: Tensor, directions: Tensor) -> Tensor:
        """``[R]`` bool: training rays that can see the scene (official ``filtering_rays``).

        Before the first alpha mask this is the official ``bbox_only`` test: the ray meets the
        current box (the trainer calls it once before training). Unlike the official test, which
        intersects the infinite line, only the marched segment ``[near, far]`` counts. With a
        mask, a ray is kept when a sample placed as the marcher places them (inside the box and
        ``[near, far]``) falls in an occupied voxel. Chunked, no gradient.
        """
        t_near, t_far = ray_aabb_intersect(origins, directions, self.aabb)
        hit = t_far.clamp(max=self.far) > t_near.clamp(min=self.near)
        occupancy = self.occupancy
        if occupancy is None:
            return hit
        occupied = rays_hit_occupancy(
            origins,
            directions,
            occupancy,
            step_size=self.step_size,
            near=self.near,
            far=self.far,
            aabb=self.aabb,
            max_samples_per_ray=self.max_samples_per_ray,
        )
        return hit & occupied

    # ------------------------------------------------------------------ checkpoints
    def shape_state(self) -> dict:
        """JSON structure: mode, grid resolution, factor shapes, box, mask, schedule state."""
        return {
            "mode": self.mode,
            "resolution": list(self.resolution),
            "factor_shapes": {name: list(p.shape) for name, p in self.named_parameters() if "_grids." in name},
            "aabb": self.aabb.tolist(),
            "step_size": self.step_size,
            "alpha_mask_shape": list(self.alpha_mask.shape),
            "alpha_mask_aabb": self.alpha_mask_aabb.tolist(),
            "alpha_mask_updates": self.alpha_mask_updates,
            "lr_scale": self.lr_scale,
        }

    def prepare_for_state(self, shape_state: dict) -> None:
        """Reshape factors and buffers to ``shape_state`` so that ``load_state_dict`` fits."""
        if shape_state.get("mode", self.mode) != self.mode:
            raise ValueError(f"checkpoint holds a TensoRF-{shape_state['mode'].upper()}, this model is {self.mode.upper()}")
        resolution = [int(r) for r in shape_state["resolution"]]
        self.density_grids.resize_empty(resolution)
        self.app_grids.resize_empty(resolution)
        device = self.aabb.device
        self.aabb = torch.tensor(shape_state["aabb"], dtype=torch.float32, device=device)
        self.alpha_mask = torch.zeros(tuple(shape_state["alpha_mask_shape"]), dtype=torch.bool, device=device)
        self.alpha_mask_aabb = torch.tensor(shape_state["alpha_mask_aabb"], dtype=torch.float32, device=device)
        self.alpha_mask_updates = int(shape_state["alpha_mask_updates"])
        self.lr_scale = float(shape_state["lr_scale"])
        self._invalidate_occupancy()
