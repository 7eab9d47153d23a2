"""Strivec: sparse multi-scale local CP tri-vector radiance fields (Gao et al., ICCV 2023).

The scene is a sparse cloud of small axis-aligned cubes ("local tensors") at several scales
(the paper: three, half-extents 0.3 / 0.15 / 0.075 in NeRF-Synthetic units). Each cube holds,
per component, three 1D vectors along its local axes (a CP "tri-vector"), for density and for
appearance. With :math:`f^l_\\sigma, f^l_c` the features of scale :math:`l` aggregated over the
``K`` nearest cubes that contain the point, by inverse-distance weights
(:mod:`tensorfield.cuda.local_tensors`, paper Sec. 3.2),

.. math::

    \\sigma(x) = \\mathrm{softplus}\\Big(\\sum_l \\textstyle\\sum_r f^l_{\\sigma,r}(x) + s\\Big),
    \\qquad c(x, d) = S\\Big(\\sum_l B_l\\, f^l_c(x),\\, d\\Big)

with :math:`B_l` a per-scale bias-free linear basis to ``app_dim`` features, :math:`s` the density
shift and :math:`S` TensoRF's shader (:class:`~tensorfield.fields.encoding.FeatureShader`). The
official code's ``radiance_add = 1`` (per-scale bases summed) and ``den_lvl_norm = 0`` (densities
summed, not averaged) are what the lego config uses.

Shared with TensoRF, not copied: the ray marcher (:func:`~tensorfield.cuda.raymarch.march_rays`),
the shader, the schedule (:class:`~tensorfield.fields.grid_schedule.GridSchedule`: alpha masks,
first-mask box shrink, L1 weights, learning-rate resets) and TensoRF's alpha-mask, ray-filter and
rendering methods, which need only the attributes both models have (``aabb``, ``step_size``,
``density``, ``alpha_mask``...) and are bound to this class as they are.

Training runs in one ``train`` command:

1. **placement**: from the data's point cloud (``SceneInfo.points``, e.g. COLMAP / nerfstudio
   SfM points) when present, voxelised per scale (:mod:`tensorfield.fields.strivec_placement`);
   otherwise a **coarse phase** first trains a dense density + RGB grid (DVGO's coarse stage,
   which the official code runs separately) for ``coarse_steps`` steps through the same marcher;
   its vertices with alpha above ``coarse_alpha_threshold`` are the point cloud. The tensors are
   created after that step, the coarse grids dropped, the optimiser rebuilt and the rays
   refiltered against the tensors' coverage;
2. **fine phase**: the schedules (``upsample_steps``, ``alpha_mask_steps``) count from its first
   step; vector lengths grow from ``vector_lengths_init`` to ``vector_lengths_final`` cells
   (official formula: odd lengths log-spaced), each time resampling every vector (linear,
   ``align_corners=True``) and rebuilding the optimiser. The marching step follows the coarsest
   scale's cell (official ``update_stepSize``).

Empty space is skipped by an :class:`~tensorfield.cuda.raymarch.OccupancyGrid`: the cells the
cubes cover (at every scale, ``coverage: all``, the official ``filterall = 1``; or at any scale),
intersected with the alpha mask once there is one.

Differences from the official code, deliberate: neighbours are chosen per sample among the cubes
that contain it (see :mod:`tensorfield.cuda.local_tensors`); the coarse stage is a plain dense grid
trained with the MSE only (DVGO adds a progressive grid and entropy / TV terms); the vector lengths
follow the official log-spaced formula, not lego's hand-written ``local_dims_trend``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensorfield.cuda.local_tensors import LocalTensorIndex, box_coverage, query_features
from tensorfield.cuda.raymarch import DenseDensity, OccupancyGrid, march_rays
from tensorfield.fields.base import BatchKind, Field, HookResult, ParamGroup, RayBatch, SceneInfo, StepOutput
from tensorfield.fields.config import option
from tensorfield.fields.radiance_config import RadianceFieldConfig
from tensorfield.fields.encoding import FeatureShader
from tensorfield.fields.factor_grids import sample_dense
from tensorfield.fields.grid_schedule import GridSchedule, voxels_to_resolution
from tensorfield.fields.strivec_placement import occupied_vertices, place_tensors, scene_scale
from tensorfield.fields.tensorf import TensoRF
from torch import Tensor, nn


#: Placement is "dense" (a warning) above this share of the scene box's voxels at a scale.
DENSE_PLACEMENT = 0.5


@dataclass
class StrivecRenderCache:
    """Strivec's baked inference density (see :meth:`Strivec.render_cache`)."""

    key: tuple
    density: Tensor  # [Z, Y, X] density feature on the vertices of box (0 where no sample reads it)
    box: Tensor  # [2, 3] the occupancy grid's box
    subdivision: int  # grid cells per occupancy cell and axis


def vertices_near_cells(cells: Tensor) -> Tensor:
    """``[X + 1, Y + 1, Z + 1]`` bool: vertices of the occupied ``cells [X, Y, Z]``, grown by one
    vertex along each axis (vertex ``v`` is kept when a cell in ``v - 2 .. v + 1`` is occupied), so
    a sample that rounds across a cell face still finds its eight corners."""
    out = cells.bool()
    for axis in range(3):
        n = out.shape[axis]
        shape = list(out.shape)
        shape[axis] = n + 4
        padded = out.new_zeros(shape)
        padded.narrow(axis, 2, n).copy_(out)
        grown = padded.narrow(axis, 0, n + 1).clone()
        for shift in range(1, 4):
            grown |= padded.narrow(axis, shift, n + 1)
        out = grown
    return out


# ================================================================================== config
@dataclass
class StrivecConfig(RadianceFieldConfig):
    """Strivec options; defaults are the official lego config (``StrivecCP_hier``, "Ours-48")."""

    steps: int = option(35000, "Optimisation steps of the whole run: coarse phase (if any) plus 30k fine steps.")
    batch_size: int = option(4096, "Rays per step (paper: 4096).")
    # local tensors
    half_extents: list[float] = option([0.3, 0.15, 0.075], "Half side of the cubes of each scale, NeRF-Synthetic units (scaled by the box's mean side / 3).", group="model", above=0, lengths=(1, 2, 3, 4))
    voxel_sizes: list[float] = option([0.4, 0.2, 0.1], "Placement voxel side per scale (official vox_range), same units; one tensor per occupied voxel.", group="model", above=0, lengths=(1, 2, 3, 4))
    neighbours: int = option(4, "K: the most tensors (nearest containing ones) a sample aggregates per scale (official max_tensoRF).", group="model", minimum=1)
    density_components: list[int] = option([32, 24, 16], "CP density components per scale (official n_lamb_sigma).", group="model", minimum=1, lengths=(1, 2, 3, 4))
    app_components: list[int] = option([48, 48, 48], "CP appearance components per scale (official n_lamb_sh).", group="model", minimum=1, lengths=(1, 2, 3, 4))
    app_dim: int = option(27, "Appearance features after each scale's basis (summed over scales; the shader's input).", group="model", minimum=1)
    vector_lengths_init: list[int] = option([29, 15, 7], "Cells per vector and scale at the start (official local_dims_init; vertices = cells + 1).", group="model", minimum=1, lengths=(1, 2, 3, 4))
    vector_lengths_final: list[int] = option([121, 61, 31], "Cells per vector and scale after the last upsampling (official local_dims_final).", group="model", minimum=1, lengths=(1, 2, 3, 4))
    upsample_steps: list[int] = option([2000, 3000, 4000, 5500, 7000], "Fine-phase steps after which every vector is upsampled.", group="model", minimum=0, ascending=True)
    init_scale: float = option(0.2, "Vectors start as init_scale * N(0, 1) (official).", group="model", minimum=0)
    coverage: str = option("all", "Empty-space skipping: march only where the cubes of every scale ('all', official filterall=1) or of any scale ('any') cover.", group="model", choices=("all", "any"))
    # placement
    placement: str = option("auto", "Tensor centres from the data's point cloud ('points'), a coarse density phase ('coarse'), or points when the data has some ('auto').", group="placement", choices=("auto", "points", "coarse"))
    coarse_steps: int = option(5000, "Steps of the coarse dense-grid phase (official: DVGO's coarse stage, 5000).", group="placement", minimum=1)
    coarse_voxels: int = option(1024000, "Voxels of the coarse grid (official pre_num_voxels, ~100^3).", group="placement", minimum=8)
    coarse_lr: float = option(0.1, "Adam learning rate of the coarse density and colour grids (DVGO's).", group="placement", minimum=0)
    coarse_alpha_init: float = option(1e-6, "Alpha over one voxel the coarse density grid starts at (DVGO's alpha_init; larger learns faster in a short phase).", group="placement", above=0, below=1)
    coarse_alpha_threshold: float = option(1e-4, "Coarse-grid vertices whose alpha over one voxel exceeds this seed the tensors (official 1e-4).", group="placement", minimum=0, maximum=1)
    coarse_dilation: int = option(0, "Grow the coarse geometry by this many coarse voxels (a max-pool of its alpha) before seeding, so thin or faint surfaces a short coarse phase under-fits still get tensors (official: 0).", group="placement", minimum=0)
    # marching (shader, density and the shared options: RadianceFieldConfig)
    step_ratio: float = option(0.5, "Marching step in cells of the coarsest scale: step = 2 h_0 / cells_0 * step_ratio (official).", group="ray marching", above=0)
    max_samples: int = option(1000000, "Cap on samples per ray; the cap used is min(this, |aabb size| / step + 1).", group="ray marching", minimum=1)
    render_cache_mb: float = option(1024.0, "Inference only: bake the density feature into a dense grid of at most this many MB (the vertices of occupied cells) for the fused native march; an approximation of the exact density (lego_100: 43-45 dB against the exact render at subdivision 2); evaluation always renders exactly; 0 = off.", group="ray marching", minimum=0)
    render_cache_subdivision: int = option(2, "Cells of the baked density grid per occupancy cell and axis (finer: closer to the exact density, a longer bake).", group="ray marching", minimum=1)
    # alpha mask
    alpha_mask_steps: list[int] = option([2000, 4000], "Fine-phase steps after which the alpha mask is rebuilt (first: shrink the box; second: filter rays).", group="alpha mask", minimum=0, ascending=True)
    alpha_mask_max_voxels: int = option(16777216, "The mask (and coverage) grid has the coarsest scale's cell size, capped at this many voxels.", group="alpha mask", minimum=8)
    # optimisation
    lr_grid: float = option(0.02, "Adam learning rate of the vectors (official lr_init).", group="optimisation", minimum=0)
    lr_decay_ratio: float = option(0.1, "Learning rates decay exponentially to this fraction over the fine phase.", group="optimisation", above=0, maximum=1)
    l1_weight_initial: float = option(1e-5, "Weight of the L1 norm of the density vectors before the first alpha mask (official lego 1e-5).", group="optimisation", minimum=0)
    l1_weight_rest: float = option(1e-5, "Weight of the L1 norm of the density vectors after it.", group="optimisation", minimum=0)


def length_schedule(initial: Sequence[int], final: Sequence[int], upsamples: int) -> list[list[int]]:
    """Cells per scale after each upsampling (official ``train_hier.py`` without a trend list).

    Per scale, ``floor(2^linspace(log2(n_0 - 1), log2(n_1 - 1), U + 1) / 2) * 2 + 1`` without its
    first entry: odd lengths, log-spaced (29 -> 121 in 5 steps: 37, 51, 67, 89, 121).
    """
    per_scale = []
    for start, end in zip(initial, final):
        exponents = torch.linspace(math.log2(max(start - 1, 1)), math.log2(max(end - 1, 1)), upsamples + 1, dtype=torch.float64)
        lengths = (torch.floor(torch.exp2(exponents) / 2) * 2 + 1).long().tolist()[1:]
        per_scale.append(lengths)
    return [list(step) for step in zip(*per_scale)] if upsamples else []


def _check_lengths(config: StrivecConfig) -> int:
    lists = {
        "half_extents": config.half_extents, "voxel_sizes": config.voxel_sizes,
        "density_components": config.density_components, "app_components": config.app_components,
        "vector_lengths_init": config.vector_lengths_init, "vector_lengths_final": config.vector_lengths_final,
    }
    counts = {name: len(value) for name, value in lists.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"strivec: the per-scale lists must have one value per scale, got {counts}")
    return counts["half_extents"]


def _after_load_hook(module: Strivec, incompatible_keys) -> None:
    module._after_load()


# ================================================================================== model
class Strivec(Field):
    """Strivec radiance field (sparse local CP tri-vectors at several scales).

    Args:
        config: the method config.
        scene: scene bounds and, optionally, its point cloud (``points``).

    Buffers (in ``state_dict``): ``centres_<l>`` ``[T_l, 3]`` per scale, ``aabb`` ``[2, 3]``,
    ``alpha_mask`` ``[X, Y, Z]`` bool and ``alpha_mask_aabb``, ``rng_state`` (jitter generator).
    Parameters: ``density_lines`` / ``app_lines`` (``3 L`` tensors ``[T_l, cells_l + 1, R_l]``,
    axis-minor), ``basis.<l>``, ``shader``, and the coarse phase's ``coarse_density``
    ``[Z, Y, X, 1]`` / ``coarse_rgb`` ``[Z, Y, X, 3]`` (empty after placement).
    """

    batch_kind = BatchKind.RAYS

    # TensoRF's implementations, shared as they are (they read aabb, step_size, density, color,
    # occupancy, alpha_mask(_aabb), resolution and the config's marching / mask options).
    density_grid = TensoRF.density_grid
    _vertex_mask_query = TensoRF._vertex_mask_query
    rebuild_alpha_mask = TensoRF.rebuild_alpha_mask
    shrink_to_mask = TensoRF.shrink_to_mask
    ray_filter = TensoRF.ray_filter
    render_rays = TensoRF.render_rays
    render_view = TensoRF.render_view
    radiance = TensoRF.radiance
    adam_settings = TensoRF.adam_settings
    _march_kwargs = TensoRF._march_kwargs
    _render_samples_cap = TensoRF._render_samples_cap
    generator = TensoRF.generator

    render_cache_exact = False  # the baked density approximates the local tensors (see render_cache)

    def __init__(self, config: StrivecConfig, scene: SceneInfo) -> None:
        super().__init__()
        self.config = config
        self.num_scales = _check_lengths(config)
        self.near, self.far = float(scene.near), float(scene.far)
        aabb = scene.aabb.detach().float().cpu().reshape(2, 3)
        scale = scene_scale(aabb)
        self.half_extents = [float(h) * scale for h in config.half_extents]
        self.voxel_sizes = [float(v) * scale for v in config.voxel_sizes]
        self.lengths = [int(n) for n in config.vector_lengths_init]
        self.length_steps = length_schedule(config.vector_lengths_init, config.vector_lengths_final, len(config.upsample_steps))

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(config.seed))
            self.basis = nn.ModuleList(nn.Linear(r, config.app_dim, bias=False) for r in config.app_components)
            self.shader = FeatureShader(config.app_dim, config.view_pe, config.feature_pe, config.mlp_hidden)
        self.density_lines = nn.ParameterList(self._empty_lines(config.density_components, [0] * self.num_scales))
        self.app_lines = nn.ParameterList(self._empty_lines(config.app_components, [0] * self.num_scales))
        for level in range(self.num_scales):
            self.register_buffer(f"centres_{level}", torch.zeros(0, 3))
        self.coarse_density = nn.Parameter(torch.zeros(0, 0, 0, 1))
        self.coarse_rgb = nn.Parameter(torch.zeros(0, 0, 0, 3))

        self.register_buffer("aabb", aabb.clone())
        self.register_buffer("alpha_mask", torch.zeros(0, 0, 0, dtype=torch.bool))
        self.register_buffer("alpha_mask_aabb", aabb.clone())
        self._generator = torch.Generator().manual_seed(int(config.seed) + 1)
        self.register_buffer("rng_state", self._generator.get_state())
        self.alpha_mask_updates = 0
        self.lr_scale = 1.0
        self.fine_start = 0  # first step of the fine phase
        self._indices: list[LocalTensorIndex] | None = None
        self._occupancy: OccupancyGrid | None = None
        self._render_cache: StrivecRenderCache | None = None
        self.register_load_state_dict_post_hook(_after_load_hook)

        points = scene.points
        has_points = points is not None and points.numel() > 0
        if config.placement == "points" and not has_points:
            raise ValueError("strivec: placement=points, but the data has no point cloud (use placement=coarse or auto)")
        if has_points and config.placement != "coarse":
            self.place(points.detach().float().cpu())
        else:
            resolution = voxels_to_resolution(config.coarse_voxels, aabb)
            depth, height, width = resolution[2], resolution[1], resolution[0]
            self.coarse_density = nn.Parameter(torch.zeros(depth, height, width, 1))
            with torch.no_grad():
                self.coarse_density.fill_(self._coarse_density_init())  # needs the coarse unit, hence after
            self.coarse_rgb = nn.Parameter(torch.zeros(depth, height, width, 3))
            self.fine_start = int(config.coarse_steps)

    # ------------------------------------------------------------------ structure
    def _empty_lines(self, components: Sequence[int], counts: Sequence[int]) -> list[nn.Parameter]:
        return [
            nn.Parameter(torch.zeros(int(counts[level]), self.lengths[level] + 1, int(components[level])))
            for level in range(self.num_scales)
            for _axis in range(3)
        ]

    def _coarse_density_init(self) -> float:
        """Grid value ``g`` with ``1 - exp(-softplus(g + shift) * unit * distance_scale) = coarse_alpha_init``."""
        config = self.config
        sigma = -math.log1p(-float(config.coarse_alpha_init)) / (self.unit * float(config.distance_scale))
        return sigma + math.log(-math.expm1(-sigma)) - float(config.density_shift)  # softplus^-1(sigma) - shift

    @property
    def in_coarse_phase(self) -> bool:
        """Whether the coarse dense grids are being trained (no tensors yet)."""
        return self.coarse_density.numel() > 0

    def centres(self, level: int) -> Tensor:
        """``[T_l, 3]`` cube centres of scale ``level``."""
        return getattr(self, f"centres_{level}")

    def lines(self, kind: str, level: int) -> tuple[Tensor, Tensor, Tensor]:
        """The ``(x, y, z)`` vectors ``[T_l, cells_l + 1, R]`` of ``kind`` (``density``/``app``)."""
        table = self.density_lines if kind == "density" else self.app_lines
        return tuple(table[3 * level + axis] for axis in range(3))

    @property
    def num_tensors(self) -> list[int]:
        """Tensors per scale."""
        return [int(self.centres(level).shape[0]) for level in range(self.num_scales)]

    @torch.no_grad()
    def place(self, points: Tensor) -> None:
        """Create the tensors of every scale from ``points [P, 3]`` (voxel centres, random vectors).

        Vectors start as ``init_scale * N(0, 1)`` from a generator seeded by ``seed + 2``, so a
        run placed after its coarse phase is the same whether or not it was resumed in between.
        """
        config = self.config
        device = self.aabb.device
        centres = place_tensors(points.to(device), self.aabb, self.voxel_sizes)
        if sum(c.shape[0] for c in centres) == 0:
            raise ValueError("strivec: no geometry to place tensors on (the point cloud lies outside the scene box)")
        generator = torch.Generator().manual_seed(int(config.seed) + 2)
        counts = [c.shape[0] for c in centres]
        box_voxels = [math.prod(max(1, math.ceil(float(side) / size)) for side in (self.aabb[1] - self.aabb[0]).tolist()) for size in self.voxel_sizes]
        dense = [level for level in range(self.num_scales) if counts[level] > DENSE_PLACEMENT * box_voxels[level] and box_voxels[level] >= 64]
        if dense:
            share = max(counts[level] / box_voxels[level] for level in dense)
            warnings.warn(
                f"strivec: the geometry fills {share:.0%} of the scene box at scale {dense[-1]} ({counts} tensors per scale): "
                "not sparse, so training will be slow; raise coarse_alpha_threshold or coarse_steps, or give the data an SfM point cloud",
                stacklevel=2,
            )
        for level, c in enumerate(centres):
            setattr(self, f"centres_{level}", c.to(device))
        for table, components in ((self.density_lines, config.density_components), (self.app_lines, config.app_components)):
            for level in range(self.num_scales):
                for axis in range(3):
                    shape = (counts[level], self.lengths[level] + 1, int(components[level]))
                    values = config.init_scale * torch.randn(shape, generator=generator)
                    table[3 * level + axis] = nn.Parameter(values.to(device))
        self.coarse_density = nn.Parameter(torch.zeros(0, 0, 0, 1, device=device))
        self.coarse_rgb = nn.Parameter(torch.zeros(0, 0, 0, 3, device=device))
        self._indices = None
        self._occupancy = None

    def indices(self) -> list[LocalTensorIndex]:
        """The neighbour index of every scale (built from the centres on first use)."""
        if self._indices is None:
            self._indices = [LocalTensorIndex.build(self.centres(level), self.half_extents[level]) for level in range(self.num_scales)]
        return self._indices

    # ------------------------------------------------------------------ geometry
    @property
    def unit(self) -> float:
        """The coarsest scale's cell ``2 h_0 / cells_0`` (official ``units``); the coarse grid's voxel before placement."""
        if self.in_coarse_phase:
            depth, height, width, _ = self.coarse_density.shape
            size = (self.aabb[1] - self.aabb[0]).float().cpu() / (torch.tensor([width, height, depth]) - 1)
            return float(size.mean())
        return 2.0 * self.half_extents[0] / self.lengths[0]

    @property
    def step_size(self) -> float:
        """Marching step ``unit * step_ratio`` (official ``stepSize``)."""
        return self.unit * float(self.config.step_ratio)

    @property
    def resolution(self) -> tuple[int, int, int]:
        """``(X, Y, Z)`` vertices of the dense grid of masks and exports: one per ``unit`` (official
        ``gridSize``), coarser where that would exceed ``alpha_mask_max_voxels``."""
        size = (self.aabb[1] - self.aabb[0]).float().cpu()
        resolution = tuple(int(v) for v in torch.ceil(size / self.unit).long().clamp_min(2))
        if math.prod(resolution) > self.config.alpha_mask_max_voxels:
            resolution = tuple(max(2, int(v)) for v in voxels_to_resolution(self.config.alpha_mask_max_voxels, self.aabb))
        return resolution

    @property
    def max_samples_per_ray(self) -> int:
        """``min(max_samples, |aabb size| / step + 1)`` (official ``nSamples``)."""
        return min(int(self.config.max_samples), self._render_samples_cap())

    @property
    def l1_weight(self) -> float:
        return self._schedule().l1_weight(self.alpha_mask_updates)

    def _schedule(self) -> GridSchedule:
        config = self.config
        upsample_steps = tuple(int(s) for s in config.upsample_steps)
        return GridSchedule(
            upsample_steps=upsample_steps,
            # "voxels" of one tensor of the coarsest scale after each upsampling
            voxel_counts=tuple(lengths[0] ** 3 for lengths in self.length_steps),
            alpha_mask_steps=tuple(int(s) for s in config.alpha_mask_steps),
            l1_weight_initial=config.l1_weight_initial,
            l1_weight_rest=config.l1_weight_rest,
            lr_upsample_reset=bool(config.lr_upsample_reset),
            lr_decay_ratio=config.lr_decay_ratio,
            steps=max(int(config.steps) - self.fine_start, 1),
        )

    @property
    def occupancy(self) -> OccupancyGrid | None:
        """Cells the cubes cover (every / any scale), and the alpha mask's cells once there is one."""
        if self.in_coarse_phase or sum(self.num_tensors) == 0:
            return None
        if self._occupancy is None:
            if self.alpha_mask.numel():
                vertices = self.alpha_mask.float()[None, None]
                mask = F.max_pool3d(vertices, kernel_size=2, stride=1)[0, 0] > 0.5
                box, shape = self.alpha_mask_aabb.clone(), tuple(mask.shape)
            else:
                mask, box, shape = None, self.aabb.clone(), self.resolution
            covered = self._coverage(box, shape)
            mask = covered if mask is None else (mask & covered)
            self._occupancy = OccupancyGrid(box, mask)
        return self._occupancy

    def _coverage(self, box: Tensor, shape: tuple[int, int, int]) -> Tensor:
        """``[X, Y, Z]`` cells of the grid over ``box`` that the cubes meet (combined over scales)."""
        cell = (box[1] - box[0]) / torch.tensor(shape, dtype=box.dtype, device=box.device)
        combined = None
        for level in range(self.num_scales):
            centres = self.centres(level)
            if centres.shape[0] == 0:
                continue
            h = self.half_extents[level]
            lower = torch.floor((centres - h - box[0]) / cell).long()
            upper = torch.floor((centres + h - box[0]) / cell).long() + 1
            covered = box_coverage(lower, upper, shape)
            if combined is None:
                combined = covered
            elif self.config.coverage == "all":
                combined = combined & covered
            else:
                combined = combined | covered
        return combined if combined is not None else torch.zeros(shape, dtype=torch.bool, device=box.device)

    def _invalidate_occupancy(self) -> None:
        self._occupancy = None

    def _after_load(self) -> None:
        self._indices = None
        self._occupancy = None
        self._render_cache = None
        self._generator.set_state(self.rng_state.cpu())

    # ------------------------------------------------------------------ render cache
    def _dense_density(self) -> DenseDensity | None:
        """The :meth:`render_cache` density for the marcher's fused inference march (``None`` without one)."""
        cache = self.render_cache()
        if cache is None:
            return None
        return DenseDensity(cache.density, cache.box, float(self.config.density_shift))

    def render_cache(self) -> StrivecRenderCache | None:
        """The baked inference density, (re)built for the current state; ``None`` when unused.

        Used only for inference (eval mode, gradients off, ``allow_render_cache``, after placement,
        ``render_cache_mb > 0``) and only by the fused native march (:class:`DenseDensity`):
        :meth:`density` itself stays exact, so exports and the round-by-round march do not change.
        The density feature :math:`\\sum_l \\sum_r f^l_{\\sigma,r}` is evaluated exactly on the
        vertices of a grid ``render_cache_subdivision`` times finer than the occupancy grid, at the
        vertices of its occupied cells (grown by one vertex) only, and read back by trilinear
        interpolation: 8 taps per sample instead of ``K`` tensors x 3 scales x every component,
        and one native pass per ray with per-sample early termination. Unlike TensoRF's cache this
        is an approximation (the local tensors' grids are not aligned with each other, and
        the inverse-distance weights are not multilinear); the render's error against the exact one
        is measured (lego_100 at 160x160: 43-45 dB at subdivision 2, 47-49 dB at 3), and evaluation
        does not use the cache (:attr:`~tensorfield.fields.base.Field.render_cache_exact`). Keyed
        by every parameter's and buffer's storage and
        version counter (an optimiser step, ``load_state_dict``, an upsampling, a new alpha mask or
        box rebuild it), freed by a training step; the subdivision drops (to 1) when the grid would
        exceed ``render_cache_mb``, and no cache is built when even that does.
        """
        budget = float(self.config.render_cache_mb) * 2**20
        if self.training or torch.is_grad_enabled() or budget <= 0 or not self.allow_render_cache or self.in_coarse_phase:
            return None
        occupancy = self.occupancy
        if occupancy is None:
            return None
        state = (*self.parameters(), *(buffer for name, buffer in self.named_buffers() if name != "rng_state"))
        key = (budget, int(self.config.render_cache_subdivision), *((t.data_ptr(), t._version, tuple(t.shape)) for t in state))
        if self._render_cache is not None and self._render_cache.key == key:
            return self._render_cache
        self._render_cache = None
        subdivision = int(self.config.render_cache_subdivision)
        while subdivision >= 1 and math.prod(n * subdivision + 1 for n in occupancy.resolution) * 4 > budget:
            subdivision -= 1
        if subdivision < 1:
            return None
        self._render_cache = StrivecRenderCache(key, self._bake_density(occupancy, subdivision), occupancy.aabb.float().clone(), subdivision)
        return self._render_cache

    @torch.no_grad()
    def _bake_density(self, occupancy: OccupancyGrid, subdivision: int, chunk: int = 1 << 18) -> Tensor:
        """``[Z, Y, X]`` exact density feature on the vertices of the occupancy grid's cells split
        ``subdivision`` times per axis, where a sample of an occupied cell can read it (0 elsewhere)."""
        cells = occupancy.mask
        for axis in range(3):
            cells = cells.repeat_interleave(subdivision, dim=axis)
        needed = vertices_near_cells(cells)  # [X + 1, Y + 1, Z + 1]
        box = occupancy.aabb.double()
        vertex = (box[1] - box[0]) / torch.tensor(cells.shape, dtype=torch.float64, device=box.device)
        ids = needed.nonzero()
        points = (box[0] + ids.double() * vertex).float()
        values = torch.cat([self.density_feature(part) for part in points.split(chunk)]) if ids.shape[0] else points.new_zeros(0)
        grid = torch.zeros(needed.shape, dtype=torch.float32, device=needed.device)
        grid[needed] = values
        return grid.permute(2, 1, 0).contiguous()

    # ------------------------------------------------------------------ field
    def _coarse_sample(self, grid: Tensor, points: Tensor) -> Tensor:
        if torch.is_grad_enabled() and grid.requires_grad:
            lo, hi = self.aabb[0].to(points), self.aabb[1].to(points)
            xyz = (points - lo) * (2.0 / (hi - lo)) - 1.0
            volume = grid.permute(3, 0, 1, 2).unsqueeze(0)  # [1, C, Z, Y, X]: grid_sample's (x, y, z)
            values = F.grid_sample(volume, xyz.view(1, -1, 1, 1, 3), mode="bilinear", padding_mode="zeros", align_corners=True)
            return values[0, :, :, 0, 0].t()
        return sample_dense(grid.detach().contiguous(), points.contiguous(), box=self.aabb)

    def density_feature(self, points: Tensor) -> Tensor:
        """``[S]`` :math:`\\sum_l \\sum_r f^l_{\\sigma,r}` at world ``points [S, 3]`` (the coarse grid's value before placement)."""
        if self.in_coarse_phase:
            return self._coarse_sample(self.coarse_density, points)[:, 0]
        total = points.new_zeros(points.shape[0])
        for level, index in enumerate(self.indices()):
            total = total + query_features(index, points, self.lines("density", level), int(self.config.neighbours), reduce=True)
        return total

    def density(self, points: Tensor, times: Tensor | None = None) -> Tensor:
        """``[S]`` density ``softplus(feature + density_shift)`` at world ``points [S, 3]``."""
        return F.softplus(self.density_feature(points) + self.config.density_shift)

    def app_features(self, points: Tensor) -> Tensor:
        """``[S, app_dim]`` :math:`\\sum_l B_l f^l_c` at world ``points [S, 3]``."""
        features = points.new_zeros(points.shape[0], self.config.app_dim)
        for level, index in enumerate(self.indices()):
            components = query_features(index, points, self.lines("app", level), int(self.config.neighbours))
            features = features + self.basis[level](components)
        return features

    def color(self, points: Tensor, directions: Tensor, times: Tensor | None = None) -> Tensor:
        """``[S, 3]`` colour: the shader of the summed per-scale appearance (coarse phase: the RGB grid)."""
        if self.in_coarse_phase:
            return torch.sigmoid(self._coarse_sample(self.coarse_rgb, points))
        chunk = int(self.config.color_chunk if torch.is_grad_enabled() else self.config.color_chunk_render)
        if chunk <= 0 or points.shape[0] <= chunk:
            return self.shader(self.app_features(points), directions)
        return torch.cat([self.shader(self.app_features(p), d) for p, d in zip(points.split(chunk), directions.split(chunk))])

    # ------------------------------------------------------------------ training
    def training_step(self, batch: RayBatch, step: int) -> StepOutput:
        """MSE of jittered renders on ``batch.background`` plus (fine phase) the density vectors' L1.

        The L1 term is the official ``density_L1``: the sum over the density vectors of their mean
        absolute value.
        """
        self._render_cache = None  # stale from now on: free it
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
        mse = F.mse_loss(out.rgb.clamp(0.0, 1.0), batch.rgb)
        loss = mse
        metrics = {"mse": float(mse.detach())}
        if not self.in_coarse_phase and self.l1_weight > 0:
            l1 = sum(line.abs().mean() for line in self.density_lines if line.numel())
            loss = loss + self.l1_weight * l1
            metrics["l1"] = float(l1.detach())
        num_rays = max(batch.origins.shape[0], 1)
        metrics["samples_per_ray"] = out.num_samples / num_rays
        return StepOutput(loss, metrics)

    def param_groups(self) -> list[ParamGroup]:
        """Coarse phase: the two dense grids at ``coarse_lr`` (no decay). Fine phase: vectors at
        ``lr_grid`` and bases + shader at ``lr_network``, decaying to ``lr_decay_ratio`` over the fine phase."""
        config = self.config
        if self.in_coarse_phase:
            return [ParamGroup("coarse", [self.coarse_density, self.coarse_rgb], config.coarse_lr)]
        decay_steps = max(int(config.steps) - self.fine_start, 1)
        vectors = list(self.density_lines.parameters()) + list(self.app_lines.parameters())
        network = list(self.basis.parameters()) + list(self.shader.parameters())
        return [
            ParamGroup("vectors", vectors, config.lr_grid * self.lr_scale, config.lr_decay_ratio, decay_steps),
            ParamGroup("network", network, config.lr_network * self.lr_scale, config.lr_decay_ratio, decay_steps),
        ]

    def after_step(self, step: int) -> HookResult:
        """End of the coarse phase: place the tensors. Fine phase: the grid schedule, in fine steps."""
        if self.in_coarse_phase:
            if step + 1 >= self.fine_start:
                self.place_from_coarse()
                return HookResult(rebuild_optimizer=True, refilter_rays=True)
            return HookResult()
        fine_step = step - self.fine_start
        schedule = self._schedule()
        events = schedule.events_at(fine_step)
        result = HookResult()
        if events.alpha_mask:
            result = result | schedule.alpha_mask_update(self, fine_step)
        if events.upsample_voxels is not None:
            self.upsample(self.length_steps[schedule.upsample_steps.index(fine_step)])
            result = result | HookResult(rebuild_optimizer=True)
        if result.rebuild_optimizer:
            self.lr_scale = schedule.lr_scale(fine_step)
        return result

    @torch.no_grad()
    def coarse_points(self) -> Tensor:
        """``[P, 3]`` vertices of the coarse grid whose alpha over one voxel exceeds ``coarse_alpha_threshold``."""
        density = F.softplus(self.coarse_density[..., 0] + self.config.density_shift)  # [Z, Y, X]
        alpha = 1.0 - torch.exp(-density * self.unit * self.config.distance_scale)
        grow = int(self.config.coarse_dilation)
        if grow > 0:
            alpha = F.max_pool3d(alpha[None, None], kernel_size=2 * grow + 1, stride=1, padding=grow)[0, 0]
        return occupied_vertices(alpha.permute(2, 1, 0), self.aabb, float(self.config.coarse_alpha_threshold))

    @torch.no_grad()
    def place_from_coarse(self) -> None:
        """Seed the tensors from the coarse grid (:meth:`coarse_points`), or from every vertex if none passes."""
        points = self.coarse_points()
        if points.shape[0] == 0:
            warnings.warn("strivec: the coarse grid is empty; placing tensors over the whole box", stacklevel=2)
            shape = tuple(self.coarse_density.shape[2::-1][:3])
            points = occupied_vertices(torch.ones(shape), self.aabb, 0.5)
        self.place(points)

    @torch.no_grad()
    def upsample(self, lengths: Sequence[int]) -> None:
        """Resample every vector of scale ``l`` to ``lengths[l]`` cells (linear, ``align_corners=True``)."""
        self.lengths = [int(n) for n in lengths]
        for table in (self.density_lines, self.app_lines):
            for level in range(self.num_scales):
                for axis in range(3):
                    line = table[3 * level + axis]
                    resized = F.interpolate(line.data.permute(0, 2, 1), size=self.lengths[level] + 1, mode="linear", align_corners=True)
                    table[3 * level + axis] = nn.Parameter(resized.permute(0, 2, 1).contiguous())
        self._occupancy = None  # the coverage grid follows the cell size

    @torch.no_grad()
    def shrink(self, new_aabb: Tensor) -> None:
        """Shrink the marching box to ``new_aabb`` (local tensors do not depend on the box)."""
        self.aabb.copy_(new_aabb.to(self.aabb))
        self._occupancy = None

    # ------------------------------------------------------------------ checkpoints
    def shape_state(self) -> dict:
        """JSON structure: phase, tensors and cells per scale, coarse grid shape, box, mask, schedule state."""
        return {
            "fine_start": self.fine_start,
            "num_tensors": self.num_tensors,
            "lengths": list(self.lengths),
            "coarse_shape": list(self.coarse_density.shape[:3]),
            "aabb": self.aabb.tolist(),
            "alpha_mask_shape": list(self.alpha_mask.shape),
            "alpha_mask_aabb": self.alpha_mask_aabb.tolist(),
            "alpha_mask_updates": self.alpha_mask_updates,
            "lr_scale": self.lr_scale,
        }

    def prepare_for_state(self, shape_state: dict) -> None:
        """Reshape tensors, coarse grids and buffers to ``shape_state`` so that ``load_state_dict`` fits."""
        counts = [int(n) for n in shape_state["num_tensors"]]
        if len(counts) != self.num_scales:
            raise ValueError(f"checkpoint holds {len(counts)} Strivec scales, this config has {self.num_scales}")
        device = self.aabb.device
        self.lengths = [int(n) for n in shape_state["lengths"]]
        self.fine_start = int(shape_state["fine_start"])
        for level in range(self.num_scales):
            setattr(self, f"centres_{level}", torch.zeros(counts[level], 3, device=device))
        for table, components in ((self.density_lines, self.config.density_components), (self.app_lines, self.config.app_components)):
            for index, parameter in enumerate(self._empty_lines(components, counts)):
                table[index] = nn.Parameter(parameter.data.to(device))
        depth, height, width = (int(n) for n in shape_state["coarse_shape"])
        self.coarse_density = nn.Parameter(torch.zeros(depth, height, width, 1, device=device))
        self.coarse_rgb = nn.Parameter(torch.zeros(depth, height, width, 3, device=device))
        self.aabb = torch.tensor(shape_state["aabb"], dtype=torch.float32, device=device)
        self.alpha_mask = torch.zeros(tuple(shape_state["alpha_mask_shape"]), dtype=torch.bool, device=device)
        self.alpha_mask_aabb = torch.tensor(shape_state["alpha_mask_aabb"], dtype=torch.float32, device=device)
        self.alpha_mask_updates = int(shape_state["alpha_mask_updates"])
        self.lr_scale = float(shape_state["lr_scale"])
        self._indices = None
        self._occupancy = None
