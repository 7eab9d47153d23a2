"""Native pieces of the ray marcher (:func:`tensorfield.cuda.raymarch.march_rays`).

* :func:`pack_occupied`: each marching round enumerates, for every live ray, samples ``k`` in
  ``[first_k, first_k + take)`` and keeps those in occupied voxels of the occupancy grid (all of
  them without a grid). In torch that is a dozen passes over every candidate (repeat, cumsum,
  gathers, the voxel arithmetic, a mask gather, nonzero, more gathers); here two parallel passes
  (count per ray, then fill) give the same packed ``(ray, k, t, point)`` arrays in the same order:
  voxel coordinates ``origin + k * step`` in float64 (the torch path uses the same float64
  arithmetic), positions in float32 as :meth:`tensorfield.cuda.raymarch._RaySamples.positions`.
* :func:`round_transmittance`: the round's per-ray scan ``T_i = exp(-(depth so far))``,
  ``w_i = T_i (1 - exp(-tau_i))`` with the optical depth carried in float64 across rounds, and
  its backward (gradients of ``tau`` and of the incoming depth).
* :func:`any_occupied`: whether any sample of a ray is occupied (TensoRF's ray filtering).
* :func:`march_dense`: the whole inference march of a density given as a dense grid (the
  render cache of a factorised field) in one pass per ray: sample placement, occupancy skip,
  trilinear density (+ softplus), transmittance, early termination, ``alpha`` and ``depth``
  sums, and the samples whose weight passes the colour threshold. The same arithmetic as the
  round-by-round path (the density by the shared ``csrc/trilinear.h``, the optical depth in
  float64, the per-ray sums in sample order), without its per-round passes over memory.

All are tested against the torch path (``tests/cuda/test_raymarch.py``); ``TENSORFIELD_NATIVE=0``
(or ``TENSORFIELD_NATIVE_MARCH=0``, or no compiler) runs the torch path.
"""

from __future__ import annotations

import ctypes

import torch
from tensorfield.cuda.native import NativeLibrary, box_affine
from torch import Tensor

def _declare(library: ctypes.CDLL) -> None:
    i64, ptr, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
    library.tf_pack_count.restype = i64
    library.tf_pack_count.argtypes = [i64, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, ptr]
    library.tf_pack_fill.restype = ctypes.c_int
    library.tf_pack_fill.argtypes = [i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, ptr, ptr, f32, ptr, ptr, ptr, ptr, ptr, ptr]
    library.tf_any_occupied.restype = ctypes.c_int
    library.tf_any_occupied.argtypes = [i64, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, ptr]
    library.tf_transmittance.restype = ctypes.c_int
    library.tf_transmittance.argtypes = [i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr]
    library.tf_transmittance_backward.restype = ctypes.c_int
    library.tf_transmittance_backward.argtypes = [i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr]
    library.tf_march_dense.restype = ptr
    library.tf_march_dense.argtypes = [
        i64, i64, ctypes.c_int, ptr, ptr, ptr, ptr, f32, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, ptr, i64, i64, i64,
        ptr, ctypes.c_int, f32, f32, f32, f32, ptr, ptr, ptr, ptr,
    ]
    library.tf_march_collect.restype = None
    library.tf_march_collect.argtypes = [ptr, ptr, ptr, ptr]


# no FMA contraction: the float32 positions round like torch's separate multiply and add
_LIBRARY = NativeLibrary("raymarch", "raymarch.c", ["-fopenmp", "-ffp-contract=off"], _declare)


def native_library() -> ctypes.CDLL | None:
    """The compiled packing kernel, or ``None`` (no compiler, ``TENSORFIELD_NATIVE=0``)."""
    return _LIBRARY.get()


def _ptr(tensor: Tensor | None):
    return tensor.data_ptr() if tensor is not None else None


def _bytes(mask: Tensor) -> Tensor:
    """An occupancy mask as contiguous uint8 (a bool mask is viewed, not copied)."""
    return mask.contiguous().view(torch.uint8) if mask.dtype == torch.bool else mask.to(torch.uint8).contiguous()


def pack_occupied(
    rays: Tensor,
    first_k: Tensor,
    take: Tensor,
    voxel_origin: Tensor | None,
    voxel_step: Tensor | None,
    mask: Tensor | None,
    t_start: Tensor,
    offsets: Tensor,
    step_size: float,
    origins: Tensor,
    directions: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """``(ray_indices, k, t, points)`` of the occupied samples of a round (every sample when
    ``mask`` is ``None``), or ``None`` when the native kernel cannot take the inputs (not CPU
    float32 rays, no compiler)."""
    if origins.device.type != "cpu" or origins.dtype != torch.float32:
        return None
    if mask is not None and (voxel_origin is None or voxel_origin.dtype != torch.float64):
        return None
    library = native_library()
    if library is None:
        return None
    rays, first_k, take = rays.contiguous(), first_k.contiguous(), take.contiguous()
    if mask is None:  # every sample
        mask_u8, (nx, ny, nz) = None, (1, 1, 1)
    else:
        mask_u8 = _bytes(mask)
        nx, ny, nz = mask.shape
    counts = torch.empty_like(rays)
    total = library.tf_pack_count(
        rays.numel(), rays.data_ptr(), first_k.data_ptr(), take.data_ptr(), _ptr(voxel_origin), _ptr(voxel_step),
        _ptr(mask_u8), nx, ny, nz, counts.data_ptr(),
    )
    starts = torch.cumsum(counts, 0) - counts
    out_rays = torch.empty(total, dtype=torch.int64)
    out_k = torch.empty(total, dtype=torch.int64)
    out_t = torch.empty(total, dtype=torch.float32)
    out_points = torch.empty(total, 3, dtype=torch.float32)
    library.tf_pack_fill(
        rays.numel(), rays.data_ptr(), first_k.data_ptr(), take.data_ptr(), starts.data_ptr(), _ptr(voxel_origin),
        _ptr(voxel_step), _ptr(mask_u8), nx, ny, nz, t_start.contiguous().data_ptr(), offsets.contiguous().data_ptr(),
        float(step_size), origins.contiguous().data_ptr(), directions.contiguous().data_ptr(),
        out_rays.data_ptr(), out_k.data_ptr(), out_t.data_ptr(), out_points.data_ptr(),
    )
    return out_rays, out_k, out_t, out_points


class _RoundTransmittance(torch.autograd.Function):
    """``(weight, transmittance, optical_depth_out)`` of one round (see ``tf_transmittance``)."""

    @staticmethod
    def forward(ctx, tau: Tensor, optical_depth: Tensor, segments):
        seg_start, seg_len, seg_ray = segments
        tau = tau.contiguous()
        od = optical_depth.detach().clone()
        weight = torch.empty_like(tau)
        trans = torch.empty_like(tau)
        native_library().tf_transmittance(
            seg_ray.numel(), seg_start.data_ptr(), seg_len.data_ptr(), seg_ray.data_ptr(), tau.data_ptr(), od.data_ptr(),
            weight.data_ptr(), trans.data_ptr(),
        )
        ctx.segments = segments
        ctx.num_rays = optical_depth.shape[0]
        ctx.save_for_backward(tau, weight, trans)
        return weight, trans, od

    @staticmethod
    def backward(ctx, g_weight, g_trans, g_od):
        tau, weight, trans = ctx.saved_tensors
        seg_start, seg_len, seg_ray = ctx.segments
        g_od = torch.zeros(ctx.num_rays, dtype=torch.float64) if g_od is None else g_od.to(torch.float64).clone().contiguous()
        g_tau = torch.empty_like(tau)
        g_w = g_weight.contiguous().float() if g_weight is not None else None
        g_t = g_trans.contiguous().float() if g_trans is not None else None
        native_library().tf_transmittance_backward(
            seg_ray.numel(), seg_start.data_ptr(), seg_len.data_ptr(), seg_ray.data_ptr(), tau.data_ptr(), weight.data_ptr(),
            trans.data_ptr(), g_w.data_ptr() if g_w is not None else None, g_t.data_ptr() if g_t is not None else None,
            g_od.data_ptr(), g_tau.data_ptr(),
        )
        return g_tau, g_od, None


def round_transmittance(tau: Tensor, rays: Tensor, optical_depth: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(weight [M], transmittance [M], optical_depth [R])`` of a marching round whose samples are
    grouped by ray (``rays`` [M]), differentiable in ``tau`` and the incoming ``optical_depth``
    (float64); ``None`` when the native kernel cannot take the inputs."""
    if tau.device.type != "cpu" or tau.dtype != torch.float32 or optical_depth.dtype != torch.float64:
        return None
    if native_library() is None:
        return None
    seg_ray, seg_len = torch.unique_consecutive(rays, return_counts=True)
    seg_start = torch.cumsum(seg_len, 0) - seg_len
    return _RoundTransmittance.apply(tau, optical_depth, (seg_start.contiguous(), seg_len.contiguous(), seg_ray.contiguous()))


def any_occupied(first_k: Tensor, take: Tensor, voxel_origin: Tensor, voxel_step: Tensor, mask: Tensor) -> Tensor | None:
    """``[R]`` bool: does ray ``r`` have an occupied sample ``k`` in ``[first_k, first_k + take)``
    (voxel coordinates ``voxel_origin + k voxel_step`` in float64)? ``None`` if not native."""
    library = native_library()
    if library is None or voxel_origin.device.type != "cpu" or voxel_origin.dtype != torch.float64:
        return None
    mask_u8 = _bytes(mask)
    hit = torch.empty(first_k.numel(), dtype=torch.uint8)
    library.tf_any_occupied(
        first_k.numel(), first_k.contiguous().data_ptr(), take.contiguous().data_ptr(), voxel_origin.contiguous().data_ptr(),
        voxel_step.contiguous().data_ptr(), mask_u8.data_ptr(), *mask.shape, hit.data_ptr(),
    )
    return hit.bool()


def march_dense(
    k_begin: Tensor,
    k_end: Tensor,
    t_start: Tensor,
    offsets: Tensor,
    step_size: float,
    origins: Tensor,
    directions: Tensor,
    voxel_origin: Tensor | None,
    voxel_step: Tensor | None,
    mask: Tensor | None,
    grid: Tensor,
    box: Tensor,
    softplus_shift: float | None,
    delta: float,
    weight_threshold: float,
    transmittance_threshold: float,
    block: int = 64,
) -> tuple[Tensor, Tensor, int, Tensor, Tensor, Tensor] | None:
    """The whole inference march of every ray through a dense density grid (see ``tf_march_dense``).

    Args:
        k_begin, k_end: ``[R]`` (long) sample index range of each ray.
        t_start, offsets: ``[R]`` float32; sample ``k`` sits at ``t_start + (k + offset) * step_size``.
        origins, directions: ``[R, 3]`` float32.
        voxel_origin, voxel_step, mask: the occupancy grid in voxel units (float64, as
            :class:`tensorfield.cuda.raymarch._RaySamples`), or all ``None``.
        grid: ``[Z, Y, X]`` or ``[Z, Y, X, 1]`` float32 density (or density feature) grid over ``box``.
        box: ``[2, 3]``.
        softplus_shift: density = ``softplus(value + shift)``; ``None``: the value itself.
        delta: segment length per sample (``step_size * distance_scale``).

    Returns:
        ``(alpha [R], depth [R], evaluated, rays [M], points [M, 3], weights [M])``, the last three
        the samples with ``w > weight_threshold`` grouped by ray in marching order; ``None`` when
        the kernel cannot take the inputs (not CPU float32, no compiler).
    """
    tensors = (t_start, offsets, origins, directions, grid)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return None
    if mask is not None and (voxel_origin is None or voxel_origin.dtype != torch.float64):
        return None
    if grid.dim() == 4 and grid.shape[-1] == 1:
        grid = grid[..., 0]
    if grid.dim() != 3:
        return None
    library = native_library()
    if library is None:
        return None
    num_rays = origins.shape[0]
    if mask is None:
        mask_u8, (nx, ny, nz), voxel_origin, voxel_step = None, (1, 1, 1), None, None
    else:
        mask_u8 = _bytes(mask)
        nx, ny, nz = mask.shape
        voxel_origin, voxel_step = voxel_origin.contiguous(), voxel_step.contiguous()
    k_begin, k_end = k_begin.contiguous(), k_end.contiguous()
    t_start, offsets = t_start.contiguous(), offsets.contiguous()
    origins, directions, grid = origins.contiguous(), directions.contiguous(), grid.contiguous()
    affine = box_affine(box)
    depth_z, height, width = (int(v) for v in grid.shape)
    alpha = torch.empty(num_rays, dtype=torch.float32)
    depth = torch.empty(num_rays, dtype=torch.float32)
    evaluated, total = ctypes.c_int64(0), ctypes.c_int64(0)
    handle = library.tf_march_dense(
        num_rays, int(block), max(1, torch.get_num_threads()), k_begin.data_ptr(), k_end.data_ptr(),
        t_start.data_ptr(), offsets.data_ptr(), float(step_size), origins.data_ptr(), directions.data_ptr(),
        _ptr(voxel_origin), _ptr(voxel_step), _ptr(mask_u8), nx, ny, nz, grid.data_ptr(), width, height, depth_z,
        affine.data_ptr(), int(softplus_shift is not None), float(softplus_shift or 0.0), float(delta),
        float(weight_threshold), float(transmittance_threshold), alpha.data_ptr(), depth.data_ptr(),
        ctypes.byref(evaluated), ctypes.byref(total),
    )
    if not handle:
        raise MemoryError("fused ray march: out of memory for its colour samples")
    try:
        rays = torch.empty(total.value, dtype=torch.int64)
        points = torch.empty(total.value, 3, dtype=torch.float32)
        weights = torch.empty(total.value, dtype=torch.float32)
    except BaseException:
        library.tf_march_collect(handle, None, None, None)
        raise
    library.tf_march_collect(handle, rays.data_ptr(), points.data_ptr(), weights.data_ptr())
    return alpha, depth, int(evaluated.value), rays, points, weights
