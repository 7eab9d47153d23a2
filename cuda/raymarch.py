"""Packed volume ray marching with the field passed as callbacks (nerfacc style).

TensoRF and Strivec both render through :func:`march_rays`: the field hands the renderer two
functions, ``density_fn(points, times) -> sigma`` and ``color_fn(points, dirs, times) -> rgb``,
and the renderer decides where to evaluate them.

Sampling (the convention of this package; the float64 reference implements the same):

* a ray ``x(t) = o + t d`` (``d`` unit, so ``t`` is a Euclidean distance) is marched on
  ``[t_start, t_end)`` with ``t_start = max(near, t_near)``, ``t_end = min(far, t_far)`` and
  ``t_near, t_far`` from :func:`ray_aabb_intersect`;
* samples sit at ``t_k = t_start + (k + u) * step_size`` for ``k = 0, 1, ...`` while
  ``t_k < t_end`` (and ``k < max_samples_per_ray``). Without jitter ``u = 0.5``: each sample
  is the midpoint of its segment ``[t_start + k*step, t_start + (k+1)*step)``, the midpoint
  quadrature rule (TensoRF uses ``u = 0`` at test time, which biases every depth by half a
  step). With jitter ``u ~ U[0, 1)``, one draw per ray: stratified sampling with one shared
  offset, as TensoRF trains. The draws are ``torch.rand(R, dtype=float64, generator=...)``
  (then cast), so a seeded generator gives the same offsets in every implementation;
* every sample stands for a segment of length ``delta = step_size * distance_scale``
  (TensoRF's ``dists * distance_scale``; TensoRF gives its last sample length 0, we do not);
* with an :class:`OccupancyGrid`, samples in empty voxels are dropped before the field sees
  them (TensoRF's alpha mask): they contribute nothing, exactly as if ``sigma`` were 0.

Compositing (Max 1995, NeRF eq. 3), for the samples ``i`` of one ray in order:

.. math::

    \\alpha_i = 1 - e^{-\\sigma_i \\delta},\\qquad
    T_i = \\prod_{j<i} (1 - \\alpha_j) = e^{-\\sum_{j<i} \\sigma_j \\delta},\\qquad
    w_i = T_i \\alpha_i

    \\text{rgb} = \\sum_{i:\\, w_i > w_{\\min}} w_i c_i + (1 - \\textstyle\\sum_i w_i)\\, b,\\qquad
    \\text{depth} = \\sum_i w_i t_i,\\qquad
    \\text{alpha} = \\sum_i w_i

where the sums run over samples with ``T_i >= transmittance_threshold`` only (early
termination: later samples contribute nothing, not even to ``alpha``), colours ``c_i`` are
evaluated only where ``w_i > weight_threshold`` (TensoRF's ``rayMarch_weight_thres``; other
samples still count in ``alpha`` and ``depth``), and ``b`` is the background (0 when ``None``).
No clamping is applied to the output (TensoRF clamps ``rgb`` to [0, 1]; do it in the field if
wanted).

Implementation (CPU and GPU alike, pure torch):

* **packed** samples: only samples inside the box (and in occupied voxels) exist, as flat
  ``[N]`` tensors with ``ray_indices``; nothing of shape ``[R, max_samples]`` is built;
* transmittance by a segmented exclusive cumulative sum of the optical depth
  ``tau_i = sigma_i delta`` in float64 (a global cumsum minus per-ray offsets, which would lose
  precision in float32), ``T_i = exp(-sum_{j<i} tau_j)``. Because ``log(1 - alpha) = -tau``
  exactly, no ``log(1 - alpha)`` is taken and TensoRF's ``1 - alpha + 1e-10`` guard is not
  needed: ``T`` stays finite with finite gradients for any ``sigma >= 0``;
* samples are generated per ray from ``(t_start, k)`` only when needed; with an occupancy
  grid the ``k`` range is first clipped to the grid's box (so voxel lookups need no bounds
  test), each candidate's voxel is read from its position in voxel units (affine in ``k``:
  one multiply-add, world positions are only computed for occupied samples; this can differ
  from :meth:`OccupancyGrid.query` of the world point only by rounding at a voxel face), and
  samples in empty voxels are compacted away before ``density_fn``;
* **early termination in rounds**: each live ray marches its next ``samples_per_round``
  samples (counted before occupancy skipping; the round size doubles every round), then rays
  whose transmittance fell below the threshold are dropped. The thresholds are hard masks, so
  skipping samples that would get a zero weight changes neither values nor gradients: the
  rounds are used in training and inference alike;
* ``color_fn`` is called once, on the samples whose weight passed ``weight_threshold``;
* backward is plain autograd through ``exp``, a float64 ``cumsum`` and ``index_add`` (all
  linear-time gathers and scatters);
* **fused inference march**: a field whose density is also a dense grid (TensoRF's render
  cache) passes it as a :class:`DenseDensity`; with gradients off on the CPU, each ray is then
  marched in one native pass (:func:`tensorfield.cuda.raymarch_native.march_dense`: placement,
  occupancy skip, trilinear density, transmittance, termination per sample, alpha and depth
  sums), which keeps only the samples to colour. Same values: the same per-ray arithmetic in
  the same order (tested bit for bit against the rounds with the same density lookup).

For whole images, :func:`march_rays_chunked` splits the rays into chunks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

DensityFn = Callable[[Tensor, Tensor], Tensor]
ColorFn = Callable[[Tensor, Tensor, Tensor], Tensor]

__all__ = [
    "DenseDensity",
    "OccupancyGrid",
    "RayMarchOutput",
    "march_rays",
    "march_rays_chunked",
    "ray_aabb_intersect",
    "rays_hit_occupancy",
    "sample_offsets",
]


# ------------------------------------------------------------------------------ occupancy grid
@dataclass
class OccupancyGrid:
    """Binary grid over an axis-aligned box; TensoRF's alpha mask.

    Voxel ``(i, j, k)`` covers ``aabb[0] + [i, i+1) x [j, j+1) x [k, k+1) * voxel_size`` with
    ``voxel_size = (aabb[1] - aabb[0]) / mask.shape`` (cells, not corner-aligned samples:
    TensoRF's ``grid_sample(align_corners=True)`` mask puts its values at the cell corners
    instead). The box is closed: a point on the upper face belongs to the last voxel.

    Attributes:
        aabb: ``[2, 3]`` min and max corners.
        mask: ``[X, Y, Z]`` bool, ``True`` = occupied. ``X`` indexes the world x axis (TensoRF
            stores its alpha volume as ``[Z, Y, X]``; transpose when porting).
    """

    aabb: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        if self.aabb.shape != (2, 3):
            raise ValueError(f"aabb must be [2, 3], got {tuple(self.aabb.shape)}")
        if self.mask.dim() != 3:
            raise ValueError(f"mask must be [X, Y, Z], got {tuple(self.mask.shape)}")
        if self.mask.dtype != torch.bool:
            self.mask = self.mask.bool()

    @classmethod
    def full(cls, aabb: Tensor, resolution: tuple[int, int, int] | int) -> OccupancyGrid:
        """A grid with every voxel occupied (``resolution`` = ``(X, Y, Z)`` or one int)."""
        if isinstance(resolution, int):
            resolution = (resolution,) * 3
        return cls(aabb, torch.ones(tuple(resolution), dtype=torch.bool, device=aabb.device))

    @property
    def resolution(self) -> tuple[int, int, int]:
        """``(X, Y, Z)``."""
        return tuple(self.mask.shape)  # type: ignore[return-value]

    @property
    def voxel_size(self) -> Tensor:
        """``[3]`` edge lengths of one voxel."""
        res = torch.tensor(self.mask.shape, dtype=self.aabb.dtype, device=self.aabb.device)
        return (self.aabb[1] - self.aabb[0]) / res

    @property
    def occupied_fraction(self) -> float:
        """Fraction of occupied voxels (TensoRF prints it as "alpha rest")."""
        return float(self.mask.float().mean()) if self.mask.numel() else 0.0

    def to(self, device: torch.device | str) -> OccupancyGrid:
        return OccupancyGrid(self.aabb.to(device), self.mask.to(device))

    def voxel_centers(self) -> Tensor:
        """``[X, Y, Z, 3]`` voxel centres (evaluate the density there to build a mask)."""
        lo = self.aabb[0]
        axes = [
            lo[a]
            + (torch.arange(n, dtype=self.aabb.dtype, device=self.aabb.device) + 0.5)
            * self.voxel_size[a]
            for a, n in enumerate(self.mask.shape)
        ]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)

    def query(self, points: Tensor) -> Tensor:
        """Occupancy at points by nearest-voxel lookup.

        Args:
            points: ``[S, 3]`` world-space points.

        Returns:
            ``[S]`` bool; ``False`` outside the (closed) box and for non-finite points.
        """
        lo = self.aabb[0].to(points)
        hi = self.aabb[1].to(points)
        res = torch.tensor(self.mask.shape, device=points.device)
        inside = ((points >= lo) & (points <= hi)).all(dim=-1)
        scale = res.to(points.dtype) / (hi - lo)
        # floor then clamp: p == hi maps to the last voxel; NaN (already outside) to anything.
        index = ((points - lo) * scale).floor_().nan_to_num_(0.0).long()
        index = torch.minimum(index.clamp_(min=0), res - 1)
        flat = (index[:, 0] * res[1] + index[:, 1]) * res[2] + index[:, 2]
        return self.mask.reshape(-1)[flat] & inside

    def bounds(self) -> Tensor:
        """``[2, 3]`` tight box around the occupied voxels (for TensoRF's bounding-box shrink).

        The box is the union of the occupied voxels' cells. If no voxel is occupied, a copy of
        ``aabb`` is returned (shrinking to nothing would make every ray miss).
        """
        lo, size = self.aabb[0], self.voxel_size
        first, last = [], []
        for axis in range(3):
            others = tuple(a for a in range(3) if a != axis)
            occupied = self.mask.any(dim=others).nonzero().flatten()
            if occupied.numel() == 0:
                return self.aabb.clone()
            first.append(occupied[0])
            last.append(occupied[-1] + 1)
        first_t = torch.stack(first).to(self.aabb.dtype)
        last_t = torch.stack(last).to(self.aabb.dtype)
        return torch.stack([lo + first_t * size, lo + last_t * size])


@dataclass
class DenseDensity:
    """The density a field hands :func:`march_rays` as well as ``density_fn``: a dense grid.

    When it is given, gradients are off and the rays are float32 on the CPU, the marcher runs its
    fused native inference march (:func:`tensorfield.cuda.raymarch_native.march_dense`): each ray
    is marched in one pass (placement, occupancy skip, trilinear density, transmittance, early
    termination, sums), instead of round by round through ``density_fn``. The grid must be the
    same function as ``density_fn`` (TensoRF's render cache is: its factors baked into a dense
    grid); otherwise ``density_fn`` is used. The grid is static: ray times are not read.

    Attributes:
        grid: ``[Z, Y, X]`` (or ``[Z, Y, X, 1]``) values on the vertices of ``box``
            (``align_corners=True`` trilinear interpolation, zero outside), ``Z`` along world z.
        box: ``[2, 3]`` the grid's box.
        softplus_shift: density = ``softplus(value + shift)`` (``None``: the value itself).
    """

    grid: Tensor
    box: Tensor
    softplus_shift: float | None = None


# ------------------------------------------------------------------------------ output
@dataclass
class RayMarchOutput:
    """What :func:`march_rays` returns.

    Attributes:
        rgb: ``[R, 3]`` colour composited on the background, ``sum_i w_i c_i + (1 - alpha) b``.
        depth: ``[R]`` expected termination distance ``sum_i w_i t_i`` (the background adds 0).
        alpha: ``[R]`` accumulated opacity ``sum_i w_i``.
        num_samples: number of points passed to ``density_fn``.
        ray_indices: ``[N]`` (long) ray of each contributing sample (those passed to
            ``density_fn`` with ``T_i >= transmittance_threshold``); with ``distances`` and
            ``weights`` the packed samples (e.g. for a distortion loss). Each ray's samples
            are in marching order, but with several rounds the rays interleave (round by
            round); a stable sort by ``ray_indices`` groups them.
        distances: ``[N]`` ``t_i`` of those samples.
        weights: ``[N]`` ``w_i`` of those samples (differentiable).

        The fused inference march (:class:`DenseDensity`) keeps no per-sample record:
        ``ray_indices``, ``distances`` and ``weights`` are ``None`` there, and ``num_samples``
        counts only the samples before each ray's termination.
    """

    rgb: Tensor
    depth: Tensor
    alpha: Tensor
    num_samples: int
    ray_indices: Tensor | None = None
    distances: Tensor | None = None
    weights: Tensor | None = None


# ------------------------------------------------------------------------------ geometry
def ray_aabb_intersect(origins: Tensor, directions: Tensor, aabb: Tensor) -> tuple[Tensor, Tensor]:
    """Where the lines ``o + t d`` enter and leave an axis-aligned box (slab method).

    Args:
        origins: ``[R, 3]``.
        directions: ``[R, 3]`` (need not be unit; ``t`` is in units of ``|d|``).
        aabb: ``[2, 3]`` min and max corners.

    Returns:
        ``t_near, t_far``: ``[R]`` each, for the whole line, so ``t_near < 0`` when the origin
        is inside the box (or the box is behind it; :func:`march_rays` clamps to
        ``[near, far]``). ``t_far < t_near`` when the line misses the box. A direction
        component of exactly 0 is handled without NaN: that slab is ``(-inf, inf)`` if the
        origin lies between its planes (boundaries included) and empty otherwise.
    """
    lo = aabb[0].to(origins)
    hi = aabb[1].to(origins)
    t_lo = (lo - origins) / directions
    t_hi = (hi - origins) / directions
    t_enter = torch.minimum(t_lo, t_hi)
    t_exit = torch.maximum(t_lo, t_hi)
    parallel = directions == 0
    if bool(parallel.any()):
        inf = torch.tensor(float("inf"), dtype=origins.dtype, device=origins.device)
        between = (origins >= lo) & (origins <= hi)
        t_enter = torch.where(parallel, torch.where(between, -inf, inf), t_enter)
        t_exit = torch.where(parallel, torch.where(between, inf, -inf), t_exit)
    return t_enter.amax(dim=-1), t_exit.amin(dim=-1)


def sample_offsets(
    num_rays: int,
    *,
    jitter: bool,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """``[R]`` per-ray sample offsets ``u``: 0.5 without jitter, ``U[0, 1)`` with.

    The random draws are taken in float64 on the generator's device and then cast, so a seeded
    generator gives the same offsets whatever the working dtype (the reference relies on it).
    """
    if not jitter:
        return torch.full((num_rays,), 0.5, dtype=dtype, device=device)
    draw_device = generator.device if generator is not None else device
    u = torch.rand(num_rays, dtype=torch.float64, device=draw_device, generator=generator)
    return u.to(dtype=dtype, device=device)


def _samples_before(t_start: Tensor, limit: Tensor, offsets: Tensor, step_size: float) -> Tensor:
    """``[R]`` (long) number of ``k >= 0`` with ``t_start + (k + u) * step_size < limit``."""
    valid = (limit > t_start) & torch.isfinite(limit)  # False for misses and NaN
    span = torch.where(valid, (limit - t_start) / step_size - offsets, torch.zeros_like(t_start))
    counts = span.ceil_().clamp_(min=0).long()
    # ``ceil`` of a rounded quotient can be off by one; fix it with the exact formula that
    # places the samples, so the count agrees with ``t_k < limit`` sample by sample.
    last = t_start + ((counts - 1).to(t_start.dtype) + offsets) * step_size
    counts -= ((counts > 0) & (last >= limit)).long()
    following = t_start + (counts.to(t_start.dtype) + offsets) * step_size
    counts += (valid & (following < limit)).long()
    return counts


def _sample_range(
    origins: Tensor,
    directions: Tensor,
    aabb: Tensor,
    near: float,
    far: float,
    offsets: Tensor,
    step_size: float,
    max_samples: int | None,
    occupancy: OccupancyGrid | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per ray ``t_start`` and the index range ``[k_begin, k_end)`` of the samples to march.

    Samples are ``t_k = t_start + (k + u) * step_size``, ``0 <= k``, ``t_k < t_end``,
    ``k < max_samples``; with an occupancy grid, also restricted to those inside the grid's
    (closed) box, so voxel lookups need no bounds test.
    """
    t_near, t_far = ray_aabb_intersect(origins, directions, aabb)
    t_start = t_near.clamp(min=near)
    t_end = t_far.clamp(max=far)
    k_end = _samples_before(t_start, t_end, offsets, step_size)
    if max_samples is not None:
        k_end = k_end.clamp_(max=max_samples)
    k_begin = torch.zeros_like(k_end)
    if occupancy is not None:
        grid_near, grid_far = ray_aabb_intersect(origins, directions, occupancy.aabb)
        k_begin = _samples_before(t_start, torch.minimum(grid_near, t_end), offsets, step_size)
        # the box is closed: t_k <= grid_far is inside, i.e. t_k < nextafter(grid_far, inf)
        inclusive = torch.nextafter(grid_far, torch.full_like(grid_far, float("inf")))
        k_end = torch.minimum(k_end, _samples_before(t_start, inclusive, offsets, step_size))
    return t_start, k_begin, k_end


def _packed_indices(rays: Tensor, first_k: Tensor, take: Tensor) -> tuple[Tensor, Tensor]:
    """Samples ``k = first_k[j] + 0, 1, ..., take[j] - 1`` of the rays ``rays[j]``, packed.

    Returns ``(ray_indices [M], k [M])``, grouped by ray in the order of ``rays``.
    """
    segment = torch.repeat_interleave(take)
    # k = first_k + (position in the packed array - where the segment starts)
    base = first_k - (torch.cumsum(take, 0) - take)
    k = base.index_select(0, segment) + torch.arange(segment.shape[0], device=take.device)
    return rays.index_select(0, segment), k


@dataclass
class _RaySamples:
    """Per-ray sample placement: ``t_k = t_start + (k + u) * step_size``, ``x_k = o + t_k d``."""

    origins: Tensor
    directions: Tensor
    t_start: Tensor
    offsets: Tensor
    step_size: float
    grid: OccupancyGrid | None = None

    def __post_init__(self) -> None:
        if self.grid is not None:
            # x_k in voxel units, affine in k: (x_0 - lo) * scale + k * (step d * scale). The
            # voxel lookup of every candidate then costs one fused multiply-add, and exact
            # world positions are only computed for the occupied samples.
            # in float64 (whatever the rays' dtype), so that the native packing
            # (cuda/raymarch_native.py) makes the same voxel decisions as this path
            o64, d64 = self.origins.double(), self.directions.double()
            lo = self.grid.aabb[0].to(o64)
            resolution = torch.tensor(self.grid.mask.shape, device=self.origins.device)
            scale = resolution.to(torch.float64) / (self.grid.aabb[1].to(o64) - lo)
            first_t = torch.nan_to_num(self.t_start.double() + self.offsets.double() * self.step_size, posinf=0.0)
            self._voxel_origin = (torch.addcmul(o64, first_t[:, None], d64) - lo) * scale
            self._voxel_step = d64 * (self.step_size * scale)
            self._max_index = resolution - 1
            _, size_y, size_z = self.grid.mask.shape
            self._strides = torch.tensor([size_y * size_z, size_z, 1], device=self.origins.device)

    def occupied(self, ray_indices: Tensor, k: Tensor) -> Tensor:
        """``[M]`` bool: is sample ``k`` of ray ``ray_indices`` in an occupied voxel?

        Only for samples inside the grid's box (indices are clamped, not tested, so rounding just
        outside a face reads the face's voxel).
        """
        voxel = torch.addcmul(
            self._voxel_origin.index_select(0, ray_indices),
            k.to(torch.float64)[:, None],
            self._voxel_step.index_select(0, ray_indices),
        )
        index = voxel.long()  # truncation == floor for the non-negative coordinates
        index = torch.minimum(index.clamp_(min=0), self._max_index)
        return self.grid.mask.reshape(-1).index_select(0, (index * self._strides).sum(-1))

    def pack_native(self, rays: Tensor, first_k: Tensor, take: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """The occupied samples ``k in [first_k, first_k + take)`` of ``rays`` (all of them without
        a grid) as ``(rays, k, t, points)`` in the native kernel (the same as
        :func:`_packed_indices` + :meth:`occupied` + :meth:`positions`), or ``None`` when it
        cannot run (then use those). ``TENSORFIELD_NATIVE_MARCH=0`` forces the torch path."""
        if os.environ.get("TENSORFIELD_NATIVE_MARCH", "1") == "0":
            return None
        from tensorfield.cuda.raymarch_native import pack_occupied

        if self.grid is None:
            return pack_occupied(rays, first_k, take, None, None, None, self.t_start, self.offsets, self.step_size, self.origins, self.directions)
        return pack_occupied(
            rays, first_k, take, self._voxel_origin, self._voxel_step, self.grid.mask, self.t_start, self.offsets,
            self.step_size, self.origins, self.directions,
        )

    def positions(self, ray_indices: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """``(t [M], points [M, 3])`` of samples ``k`` of rays ``ray_indices``."""
        t = (
            self.t_start.index_select(0, ray_indices)
            + (k.to(self.t_start.dtype) + self.offsets.index_select(0, ray_indices))
            * self.step_size
        )
        points = torch.addcmul(
            self.origins.index_select(0, ray_indices),
            t[:, None],
            self.directions.index_select(0, ray_indices),
        )
        return t, points


def _select(tensors: tuple[Tensor, ...], index: Tensor) -> tuple[Tensor, ...]:
    """``index_select`` along dim 0 (faster than advanced indexing on CPU)."""
    return tuple(x.index_select(0, index) for x in tensors)


# ------------------------------------------------------------------------------ marcher
def march_rays(
    origins: Tensor,
    directions: Tensor,
    density_fn: DensityFn,
    color_fn: ColorFn,
    *,
    aabb: Tensor,
    step_size: float,
    near: float,
    far: float,
    times: Tensor | None = None,
    occupancy: OccupancyGrid | None = None,
    background: Tensor | None = None,
    distance_scale: float = 1.0,
    jitter: bool = False,
    generator: torch.Generator | None = None,
    weight_threshold: float = 1e-4,
    transmittance_threshold: float = 1e-4,
    max_samples_per_ray: int | None = None,
    samples_per_round: int | None = 64,
    dense_density: DenseDensity | None = None,
) -> RayMarchOutput:
    """Render rays through a field given as callbacks (see the module docstring for the math).

    Args:
        origins: ``[R, 3]`` ray origins.
        directions: ``[R, 3]`` unit directions.
        density_fn: ``(points [S, 3], times [S]) -> sigma [S]``, ``sigma >= 0``. Only called on
            samples inside ``aabb`` (and in occupied voxels of ``occupancy``); may be called
            several times (once per round) or not at all.
        color_fn: ``(points [S, 3], dirs [S, 3], times [S]) -> rgb [S, 3]``; called at most once,
            on the samples with ``w_i > weight_threshold``.
        aabb: ``[2, 3]`` box outside which space is empty.
        step_size: distance between consecutive samples (> 0).
        near, far: ray distance range; samples lie in ``[max(near, t_near), min(far, t_far))``.
        times: ``[R]`` per-ray time; ``None`` -> NaN (static scene).
        occupancy: samples in its empty voxels (or outside its box) are skipped, never passed to
            ``density_fn``, and contribute nothing.
        background: ``[3]`` colour behind the field; ``None`` -> black (no background term).
        distance_scale: ``alpha_i = 1 - exp(-sigma_i * step_size * distance_scale)``.
        jitter: one ``U[0, 1)`` offset per ray (stratified sampling) instead of 0.5.
        generator: random generator for the jitter offsets.
        weight_threshold: colour is evaluated (and counted) only where ``w_i > weight_threshold``.
        transmittance_threshold: samples with ``T_i < transmittance_threshold`` contribute nothing;
            ``<= 0`` disables early termination.
        max_samples_per_ray: keep at most the first this many samples of each ray (counted
            before occupancy skipping, like TensoRF's ``N_samples``).
        samples_per_round: early-termination granularity: live rays march this many samples
            (counted before occupancy skipping) in the first round, doubling every round;
            ``None`` marches everything in one round. Values and gradients do not depend on it,
            only the number of ``density_fn`` evaluations and calls.
        dense_density: the same density as a dense grid, for the fused native march when
            nothing needs gradients (see :class:`DenseDensity`); same values to float rounding.

    Returns:
        :class:`RayMarchOutput`; differentiable w.r.t. what the callbacks return (and
        ``background``).
    """
    if step_size <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    num_rays = origins.shape[0]
    dtype, device = origins.dtype, origins.device
    if times is None:
        times = torch.full((num_rays,), float("nan"), dtype=dtype, device=device)
    times = times.to(device=device, dtype=dtype)
    delta = float(step_size) * float(distance_scale)

    offsets = sample_offsets(
        num_rays, jitter=jitter, generator=generator, dtype=dtype, device=device
    )
    t_start, k_begin, k_end = _sample_range(
        origins, directions, aabb, near, far, offsets, step_size, max_samples_per_ray, occupancy
    )

    sampler = _RaySamples(origins, directions, t_start, offsets, step_size, occupancy)
    if dense_density is not None and not torch.is_grad_enabled():
        fused = _march_dense(
            sampler, k_begin, k_end, dense_density, color_fn, times, background, delta, weight_threshold,
            transmittance_threshold,
        )
        if fused is not None:
            return fused

    # ---- march in rounds of samples k in [position, position + round_size) of each live ray
    live = torch.nonzero(k_end > k_begin).flatten()
    if transmittance_threshold <= 0 or samples_per_round is None:
        round_size = int((k_end - k_begin).max()) if live.numel() else 0
    else:
        round_size = max(1, int(samples_per_round))
    position = k_begin
    optical_depth = torch.zeros(num_rays, dtype=torch.float64, device=device)  # sum_j tau_j so far
    num_evaluated = 0
    kept_rays, kept_t, kept_w, kept_points, colour_mask = [], [], [], [], []
    while live.numel() > 0:
        # packed samples of this round: ray index, distance, point
        take = (k_end.index_select(0, live) - position.index_select(0, live)).clamp_(max=round_size)
        packed = sampler.pack_native(live, position.index_select(0, live), take)
        if packed is not None:
            rays, k, t, points = packed
        else:
            rays, k = _packed_indices(live, position.index_select(0, live), take)
            if occupancy is not None:
                occupied = torch.nonzero(sampler.occupied(rays, k)).flatten()
                rays, k = _select((rays, k), occupied)
            t, points = sampler.positions(rays, k)
        position = position.index_add(0, live, take)

        if rays.numel() > 0:
            num_evaluated += rays.shape[0]
            sigma = density_fn(points, times.index_select(0, rays))
            if sigma.shape != rays.shape:
                raise ValueError(
                    f"density_fn must return [{rays.shape[0]}], got {tuple(sigma.shape)}"
                )
            tau = sigma * delta
            fused = None
            if os.environ.get("TENSORFIELD_NATIVE_MARCH", "1") != "0":
                from tensorfield.cuda.raymarch_native import round_transmittance

                fused = round_transmittance(tau, rays, optical_depth)
            if fused is not None:  # the same per-ray scan in one native pass (and its backward)
                weight, transmittance, optical_depth = fused
            else:
                # T_i = exp(-(optical depth of earlier rounds + exclusive in-round cumsum of tau)),
                # the segmented cumsum as a global float64 cumsum minus its value at ray starts.
                counts = torch.bincount(rays, minlength=num_rays)
                first = torch.cumsum(counts, 0) - counts
                cumulative = torch.cat(
                    [tau.new_zeros(1, dtype=torch.float64), torch.cumsum(tau.double(), 0)]
                )
                at_first = cumulative.index_select(0, first)
                before = (optical_depth - at_first).index_select(0, rays) + cumulative[:-1]
                transmittance = torch.exp(-before).to(tau.dtype)
                optical_depth = optical_depth + (cumulative.index_select(0, first + counts) - at_first)
                weight = transmittance * -torch.expm1(-tau)
            if transmittance_threshold > 0:
                contributes = transmittance.detach() >= transmittance_threshold
                if not bool(contributes.all()):
                    index = torch.nonzero(contributes).flatten()
                    rays, t, points, weight = _select((rays, t, points, weight), index)
            kept_rays.append(rays)
            kept_t.append(t)
            kept_w.append(weight)
            kept_points.append(points)
            colour_mask.append(weight.detach() > weight_threshold)

        # rays with samples left and transmittance still above the threshold go on
        go_on = position.index_select(0, live) < k_end.index_select(0, live)
        if transmittance_threshold > 0:
            remaining = torch.exp(-optical_depth.detach().index_select(0, live)).to(dtype)
            go_on &= remaining >= transmittance_threshold
        live = live[go_on]
        round_size *= 2

    # ---- composite
    if kept_rays:
        rays_all, t_all, w_all = torch.cat(kept_rays), torch.cat(kept_t), torch.cat(kept_w)
        points_all, colour_all = torch.cat(kept_points), torch.cat(colour_mask)
        out_dtype = w_all.dtype
    else:
        rays_all = torch.zeros(0, dtype=torch.long, device=device)
        t_all = torch.zeros(0, dtype=dtype, device=device)
        w_all, points_all = t_all, torch.zeros(0, 3, dtype=dtype, device=device)
        colour_all = torch.zeros(0, dtype=torch.bool, device=device)
        out_dtype = dtype
    acc = torch.zeros(num_rays, dtype=out_dtype, device=device).index_add(0, rays_all, w_all)
    depth = torch.zeros(num_rays, dtype=out_dtype, device=device).index_add(
        0, rays_all, w_all * t_all.to(out_dtype)
    )
    coloured = torch.nonzero(colour_all).flatten()
    rays_c, points_c, w_c = _select((rays_all, points_all, w_all), coloured)
    rgb = _shade(color_fn, rays_c, points_c, w_c, directions, times, acc, background)
    return RayMarchOutput(
        rgb=rgb,
        depth=depth,
        alpha=acc,
        num_samples=num_evaluated,
        ray_indices=rays_all,
        distances=t_all,
        weights=w_all,
    )


def _shade(
    color_fn: ColorFn,
    rays: Tensor,
    points: Tensor,
    weights: Tensor,
    directions: Tensor,
    times: Tensor,
    alpha: Tensor,
    background: Tensor | None,
) -> Tensor:
    """``[R, 3]`` ``sum_i w_i c_i + (1 - alpha) b`` over the coloured samples ``(rays, points, weights)``."""
    rgb = torch.zeros(alpha.shape[0], 3, dtype=alpha.dtype, device=alpha.device)
    if rays.numel() > 0:
        colour = color_fn(points, directions.index_select(0, rays), times.index_select(0, rays))
        if colour.shape != points.shape:
            raise ValueError(f"color_fn must return [{rays.shape[0]}, 3], got {tuple(colour.shape)}")
        rgb = rgb.index_add(0, rays, weights[:, None] * colour)
    if background is not None:
        rgb = rgb + (1.0 - alpha)[:, None] * background.to(device=alpha.device, dtype=rgb.dtype)
    return rgb


def _march_dense(
    sampler: _RaySamples,
    k_begin: Tensor,
    k_end: Tensor,
    dense: DenseDensity,
    color_fn: ColorFn,
    times: Tensor,
    background: Tensor | None,
    delta: float,
    weight_threshold: float,
    transmittance_threshold: float,
) -> RayMarchOutput | None:
    """The fused native inference march (``None`` when it cannot run: then march in rounds)."""
    if os.environ.get("TENSORFIELD_NATIVE_MARCH", "1") == "0":
        return None
    from tensorfield.cuda.raymarch_native import march_dense

    grid = sampler.grid
    marched = march_dense(
        k_begin, k_end, sampler.t_start, sampler.offsets, sampler.step_size, sampler.origins, sampler.directions,
        sampler._voxel_origin if grid is not None else None, sampler._voxel_step if grid is not None else None,
        grid.mask if grid is not None else None, dense.grid, dense.box, dense.softplus_shift, delta,
        weight_threshold, transmittance_threshold,
    )
    if marched is None:
        return None
    alpha, depth, evaluated, rays, points, weights = marched
    rgb = _shade(color_fn, rays, points, weights, sampler.directions, times, alpha, background)
    return RayMarchOutput(rgb=rgb, depth=depth, alpha=alpha, num_samples=evaluated)


def march_rays_chunked(
    origins: Tensor,
    directions: Tensor,
    density_fn: DensityFn,
    color_fn: ColorFn,
    *,
    chunk: int = 8192,
    times: Tensor | None = None,
    **kwargs,
) -> RayMarchOutput:
    """:func:`march_rays` over chunks of ``chunk`` rays (to bound memory on whole images).

    Takes the same keyword arguments as :func:`march_rays`. Returns ``rgb``, ``depth``,
    ``alpha`` for all rays and the total ``num_samples``; the packed per-sample fields are
    ``None``. Gradients flow as usual (wrap in ``torch.no_grad()`` for inference). With
    ``jitter``, each chunk draws its own offsets from ``generator``.
    """
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    rgb, depth, alpha, total = [], [], [], 0
    for begin in range(0, origins.shape[0], chunk):
        end = begin + chunk
        out = march_rays(
            origins[begin:end],
            directions[begin:end],
            density_fn,
            color_fn,
            times=None if times is None else times[begin:end],
            **kwargs,
        )
        rgb.append(out.rgb)
        depth.append(out.depth)
        alpha.append(out.alpha)
        total += out.num_samples
    if not rgb:  # no rays
        return march_rays(origins, directions, density_fn, color_fn, times=times, **kwargs)
    return RayMarchOutput(torch.cat(rgb), torch.cat(depth), torch.cat(alpha), total)


@torch.no_grad()
def rays_hit_occupancy(
    origins: Tensor,
    directions: Tensor,
    occupancy: OccupancyGrid,
    *,
    step_size: float,
    near: float,
    far: float,
    aabb: Tensor | None = None,
    max_samples_per_ray: int | None = None,
    chunk: int = 65536,
) -> Tensor:
    """``[R]`` bool: whether any sample of a ray (as :func:`march_rays` places them without
    jitter) lies in an occupied voxel. TensoRF's ``filtering_rays`` for dropping training rays
    that can only see the background.

    Args:
        origins, directions: ``[R, 3]``.
        occupancy: the grid.
        step_size, near, far, max_samples_per_ray: as in :func:`march_rays`.
        aabb: marching box (default: the grid's box).
        chunk: rays per chunk (bounds memory).
    """
    box = occupancy.aabb if aabb is None else aabb
    hits = []
    for begin in range(0, origins.shape[0], chunk):
        o, d = origins[begin : begin + chunk], directions[begin : begin + chunk]
        offsets = sample_offsets(o.shape[0], jitter=False, dtype=o.dtype, device=o.device)
        t_start, k_begin, k_end = _sample_range(
            o, d, box, near, far, offsets, step_size, max_samples_per_ray, occupancy
        )
        take = (k_end - k_begin).clamp_(min=0)
        sampler = _RaySamples(o, d, t_start, offsets, step_size, occupancy)
        if os.environ.get("TENSORFIELD_NATIVE_MARCH", "1") != "0":
            from tensorfield.cuda.raymarch_native import any_occupied

            native = any_occupied(k_begin, take, sampler._voxel_origin, sampler._voxel_step, occupancy.mask)
            if native is not None:
                hits.append(native)
                continue
        rays, k = _packed_indices(torch.arange(o.shape[0], device=o.device), k_begin, take)
        occupied = rays[sampler.occupied(rays, k)]
        hits.append(
            torch.zeros(o.shape[0], dtype=torch.bool, device=o.device).index_fill_(
                0, occupied, True
            )
        )
    if not hits:
        return torch.zeros(0, dtype=torch.bool, device=origins.device)
    return torch.cat(hits)
