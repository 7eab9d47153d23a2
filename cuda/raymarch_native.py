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
  round-by-round path (the density by the shared ``TRILINEAR_SOURCE``, the optical depth in
  float64, the per-ray sums in sample order), without its per-round passes over memory.

All are tested against the torch path (``tests/cuda/test_raymarch.py``); ``TENSORFIELD_NATIVE=0``
(or ``TENSORFIELD_NATIVE_MARCH=0``, or no compiler) runs the torch path.
"""

from __future__ import annotations

import ctypes

import torch
from tensorfield.cuda.native import TRILINEAR_SOURCE, NativeLibrary, box_affine
from torch import Tensor

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
""" + TRILINEAR_SOURCE + r"""

static inline int occupied(const double *vo, const double *vs, int64_t k, const uint8_t *mask,
                           int64_t nx, int64_t ny, int64_t nz) {
    if (!mask) return 1; /* no occupancy grid: every sample */
    int64_t idx[3];
    const int64_t res[3] = {nx, ny, nz};
    for (int a = 0; a < 3; ++a) {
        const double v = vo[a] + (double)k * vs[a];
        int64_t i = (int64_t)v; /* truncation == floor for the non-negative coordinates */
        if (i < 0) i = 0;
        if (i > res[a] - 1) i = res[a] - 1;
        idx[a] = i;
    }
    return mask[(idx[0] * ny + idx[1]) * nz + idx[2]] != 0;
}

/* counts[j] = occupied samples of live ray j (rays[j], k in [first_k[j], first_k[j] + take[j])) */
int64_t tf_pack_count(int64_t n, const int64_t *rays, const int64_t *first_k, const int64_t *take,
                      const double *voxel_origin, const double *voxel_step, const uint8_t *mask,
                      int64_t nx, int64_t ny, int64_t nz, int64_t *counts) {
    int64_t total = 0;
    #pragma omp parallel for schedule(dynamic, 64) reduction(+:total)
    for (int64_t j = 0; j < n; ++j) {
        const int64_t r = rays[j];
        int64_t c = 0;
        if (!mask) c = take[j];
        else
            for (int64_t k = first_k[j]; k < first_k[j] + take[j]; ++k)
                c += occupied(voxel_origin + 3 * r, voxel_step + 3 * r, k, mask, nx, ny, nz);
        counts[j] = c;
        total += c;
    }
    return total;
}

/* hit[r] = 1 if any sample k in [first_k[r], first_k[r] + take[r]) of ray r is occupied (early exit) */
int tf_any_occupied(int64_t n, const int64_t *first_k, const int64_t *take, const double *voxel_origin,
                    const double *voxel_step, const uint8_t *mask, int64_t nx, int64_t ny, int64_t nz, uint8_t *hit) {
    #pragma omp parallel for schedule(dynamic, 256)
    for (int64_t r = 0; r < n; ++r) {
        uint8_t any = 0;
        for (int64_t k = first_k[r]; k < first_k[r] + take[r] && !any; ++k)
            any = (uint8_t)occupied(voxel_origin + 3 * r, voxel_step + 3 * r, k, mask, nx, ny, nz);
        hit[r] = any;
    }
    return 0;
}

/* the occupied samples, grouped by live ray in order: ray index, k, t and the point */
int tf_pack_fill(int64_t n, const int64_t *rays, const int64_t *first_k, const int64_t *take, const int64_t *starts,
                 const double *voxel_origin, const double *voxel_step, const uint8_t *mask, int64_t nx, int64_t ny, int64_t nz,
                 const float *t_start, const float *offsets, float step, const float *origins, const float *directions,
                 int64_t *out_rays, int64_t *out_k, float *out_t, float *out_points) {
    #pragma omp parallel for schedule(dynamic, 64)
    for (int64_t j = 0; j < n; ++j) {
        const int64_t r = rays[j];
        int64_t m = starts[j];
        for (int64_t k = first_k[j]; k < first_k[j] + take[j]; ++k) {
            if (mask && !occupied(voxel_origin + 3 * r, voxel_step + 3 * r, k, mask, nx, ny, nz)) continue;
            const float t = t_start[r] + ((float)k + offsets[r]) * step;
            out_rays[m] = r; out_k[m] = k; out_t[m] = t;
            for (int a = 0; a < 3; ++a) out_points[3 * m + a] = origins[3 * r + a] + t * directions[3 * r + a];
            ++m;
        }
    }
    return 0;
}

/* One marching round's transmittance and weights, per segment (the samples of one ray, in order):
   before_i = od[r] + sum_{j<i} tau_j, T_i = exp(-before_i) (float64, then float32),
   w_i = T_i (1 - exp(-tau_i)) (float32), and od[r] += sum tau over the segment. */
int tf_transmittance(int64_t nseg, const int64_t *seg_start, const int64_t *seg_len, const int64_t *seg_ray,
                     const float *tau, double *od, float *weight, float *trans) {
    #pragma omp parallel for schedule(dynamic, 64)
    for (int64_t s = 0; s < nseg; ++s) {
        const int64_t r = seg_ray[s];
        double acc = od[r];
        for (int64_t i = seg_start[s]; i < seg_start[s] + seg_len[s]; ++i) {
            const float T = (float)exp(-acc);
            trans[i] = T;
            weight[i] = T * -expm1f(-tau[i]);
            acc += (double)tau[i];
        }
        od[r] = acc;
    }
    return 0;
}

/* Its backward: g_od holds dL/d od_out on entry and dL/d od_in on exit (for the segments' rays). */
int tf_transmittance_backward(int64_t nseg, const int64_t *seg_start, const int64_t *seg_len, const int64_t *seg_ray,
                              const float *tau, const float *weight, const float *trans, const float *g_w, const float *g_t,
                              double *g_od, float *g_tau) {
    #pragma omp parallel for schedule(dynamic, 64)
    for (int64_t s = 0; s < nseg; ++s) {
        const int64_t r = seg_ray[s];
        double carry = g_od[r];
        for (int64_t i = seg_start[s] + seg_len[s] - 1; i >= seg_start[s]; --i) {
            const double gw = g_w ? g_w[i] : 0.0, gt = g_t ? g_t[i] : 0.0;
            g_tau[i] = (float)(gw * (double)trans[i] * exp(-(double)tau[i]) + carry);
            carry -= gw * (double)weight[i] + gt * (double)trans[i];
        }
        g_od[r] = carry;
    }
    return 0;
}

/* ---- fused inference march over a dense density grid (march_dense) ----
   Rays are marched in fixed blocks of consecutive rays (scheduled dynamically); each block keeps
   its colour samples (weight > weight threshold) in a buffer of its own, and tf_march_collect
   concatenates them in block order, so the output does not depend on scheduling. */
typedef struct { int64_t count, capacity; int64_t *rays; float *points, *weights; } sample_buf_t;
typedef struct { int64_t nblocks, total; sample_buf_t *blocks; } march_result_t;

static int buf_push(sample_buf_t *b, int64_t ray, const float *p, float w) {
    if (b->count == b->capacity) {
        const int64_t cap = b->capacity ? 2 * b->capacity : 256;
        int64_t *r = (int64_t *)realloc(b->rays, (size_t)cap * sizeof(int64_t));
        if (!r) return -1;
        b->rays = r;
        float *pp = (float *)realloc(b->points, (size_t)cap * 3 * sizeof(float));
        if (!pp) return -1;
        b->points = pp;
        float *ww = (float *)realloc(b->weights, (size_t)cap * sizeof(float));
        if (!ww) return -1;
        b->weights = ww;
        b->capacity = cap;
    }
    b->rays[b->count] = ray;
    memcpy(b->points + 3 * b->count, p, 3 * sizeof(float));
    b->weights[b->count] = w;
    ++b->count;
    return 0;
}

/* Copies the colour samples into rays [M], points [M, 3], weights [M] (any may be NULL: free only)
   and frees the result. */
void tf_march_collect(void *handle, int64_t *rays, float *points, float *weights) {
    march_result_t *res = (march_result_t *)handle;
    if (!res) return;
    int64_t at = 0;
    for (int64_t b = 0; b < res->nblocks; ++b) {
        sample_buf_t *buf = res->blocks + b;
        if (buf->count) {
            if (rays) memcpy(rays + at, buf->rays, (size_t)buf->count * sizeof(int64_t));
            if (points) memcpy(points + 3 * at, buf->points, (size_t)buf->count * 3 * sizeof(float));
            if (weights) memcpy(weights + at, buf->weights, (size_t)buf->count * sizeof(float));
        }
        at += buf->count;
        free(buf->rays); free(buf->points); free(buf->weights);
    }
    free(res->blocks);
    free(res);
}

/* Per ray r, samples k in [k_begin[r], k_end[r]) at t = t_start + (k + u) step, in occupied voxels
   only (mask NULL: all); before each, T = exp(-optical depth) (float64 -> float32) and the ray
   stops once T < t_thr; sigma = trilinear(grid at (p - box) * scale - 1) (softplus if asked),
   tau = sigma * delta, w = T (1 - exp(-tau)); alpha = sum w, depth = sum w t (float32, sample
   order); samples with w > w_thr are kept for colour. Returns the handle for tf_march_collect
   (NULL when out of memory), the number of colour samples in *total and of density
   evaluations in *evaluated. */
void *tf_march_dense(int64_t R, int64_t block, int threads, const int64_t *k_begin, const int64_t *k_end,
                     const float *t_start, const float *offsets, float step, const float *origins, const float *dirs,
                     const double *voxel_origin, const double *voxel_step, const uint8_t *mask,
                     int64_t nx, int64_t ny, int64_t nz, const float *grid, int64_t X, int64_t Y, int64_t Z,
                     const float *box, int softplus, float shift, float delta, float w_thr, float t_thr,
                     float *out_alpha, float *out_depth, int64_t *evaluated, int64_t *total) {
    if (block < 1) block = 1;
    march_result_t *res = (march_result_t *)calloc(1, sizeof(march_result_t));
    if (!res) return 0;
    res->nblocks = (R + block - 1) / block;
    res->blocks = (sample_buf_t *)calloc((size_t)(res->nblocks > 0 ? res->nblocks : 1), sizeof(sample_buf_t));
    if (!res->blocks) { free(res); return 0; }
    int64_t count = 0;
    int failed = 0;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(threads) reduction(+:count) reduction(|:failed)
    for (int64_t b = 0; b < res->nblocks; ++b) {
        sample_buf_t *buf = res->blocks + b;
        const int64_t r1 = (b + 1) * block < R ? (b + 1) * block : R;
        for (int64_t r = b * block; r < r1; ++r) {
            double od = 0.0;
            float acc = 0.0f, dep = 0.0f;
            const float *o = origins + 3 * r, *d = dirs + 3 * r;
            for (int64_t k = k_begin[r]; k < k_end[r]; ++k) {
                if (mask && !occupied(voxel_origin + 3 * r, voxel_step + 3 * r, k, mask, nx, ny, nz)) continue;
                const float T = (float)exp(-od);
                if (T < t_thr) break; /* T only falls: no later sample contributes */
                const float t = t_start[r] + ((float)k + offsets[r]) * step;
                float p[3], x[3];
                for (int a = 0; a < 3; ++a) p[a] = o[a] + t * d[a];
                dense_normalise(p, box, x);
                const float sigma = dense_scalar(grid, X, Y, Z, x, softplus, shift);
                ++count;
                const float tau = sigma * delta;
                const float w = T * -expm1f(-tau);
                acc += w;
                dep += w * t;
                if (w > w_thr && buf_push(buf, r, p, w)) failed = 1;
                od += (double)tau;
            }
            out_alpha[r] = acc;
            out_depth[r] = dep;
        }
    }
    int64_t m = 0;
    for (int64_t b = 0; b < res->nblocks; ++b) m += res->blocks[b].count;
    res->total = m;
    *total = m;
    *evaluated = count;
    if (failed) { tf_march_collect(res, 0, 0, 0); return 0; }
    return res;
}
"""


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
_LIBRARY = NativeLibrary("raymarch", _SOURCE, ["-fopenmp", "-ffp-contract=off"], _declare)


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
