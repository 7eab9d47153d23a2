"""Native slicing of 4D Gaussians at a time ``t`` (inference: rendering, the viewer, export).

:meth:`tensorfield.fields.gaussians.GaussianSplatting.gaussians_at` builds, for every Gaussian,
the 4x4 covariance :math:`R S S^T R^T` from its left/right isoclinic quaternions and 4D scales,
culls the ones whose temporal marginal :math:`\\exp(-\\tfrac12 (t - \\mu_t)^2 / \\Sigma_{44})` is
below the threshold, and conditions the rest on ``t``. In torch that is a dozen passes over
memory with 4x4 batched products; without gradients this C kernel does it in one pass per
Gaussian (two: cull, then fill the survivors in index order), parallel with OpenMP. It is the
same arithmetic as :mod:`tensorfield.fields.gaussian_math` (``rotation_4d``, ``covariance_4d``,
``slice_4d``) and is tested equal to it; training keeps the torch path (autograd).
"""

from __future__ import annotations

import ctypes

import torch
from tensorfield.cuda.native import NativeLibrary
from torch import Tensor

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>

/* 4D rotation in (x, y, z, t): (L(ql) R(qr)) with both axes reversed (gaussian_math.rotation_4d) */
static void rotation4(const float *ql, const float *qr, float *R) {
    float la = ql[0], lb = ql[1], lc = ql[2], ld = ql[3];
    float nl = sqrtf(la * la + lb * lb + lc * lc + ld * ld); nl = 1.0f / (nl > 1e-12f ? nl : 1e-12f);
    la *= nl; lb *= nl; lc *= nl; ld *= nl;
    float p = qr[0], q = qr[1], r = qr[2], s = qr[3];
    float nr = sqrtf(p * p + q * q + r * r + s * s); nr = 1.0f / (nr > 1e-12f ? nr : 1e-12f);
    p *= nr; q *= nr; r *= nr; s *= nr;
    const float L[16] = {la, -lb, -lc, -ld, lb, la, -ld, lc, lc, ld, la, -lb, ld, -lc, lb, la};
    const float Q[16] = {p, q, r, s, -q, p, -s, r, -r, s, p, -q, -s, -r, q, p};
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
            float acc = 0.0f;
            for (int k = 0; k < 4; ++k) acc += L[4 * i + k] * Q[4 * k + j];
            R[4 * (3 - i) + (3 - j)] = acc;
        }
}

/* temporal variance Sigma_44 and the full covariance (when cov != NULL) */
static float covariance4(const float *ls, float lst, const float *ql, const float *qr, float *cov) {
    float R[16];
    rotation4(ql, qr, R);
    const float s2[4] = {expf(2.0f * ls[0]), expf(2.0f * ls[1]), expf(2.0f * ls[2]), expf(2.0f * lst)};
    if (cov) {
        for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) {
                float acc = 0.0f;
                for (int k = 0; k < 4; ++k) acc += R[4 * i + k] * s2[k] * R[4 * j + k];
                cov[4 * i + j] = acc;
            }
        return cov[15];
    }
    float v = 0.0f;
    for (int k = 0; k < 4; ++k) v += R[12 + k] * R[12 + k] * s2[k];
    return v;
}

/* Pass 1: alive[g] = marginal > threshold; returns the count. */
int64_t tf_slice4d_cull(int64_t n, const float *times, const float *log_scales, const float *log_scale_t,
                        const float *quats_l, const float *quats_r, double time, double threshold, uint8_t *alive) {
    int64_t count = 0;
    #pragma omp parallel for schedule(static) reduction(+:count)
    for (int64_t g = 0; g < n; ++g) {
        const float var_t = covariance4(log_scales + 3 * g, log_scale_t[g], quats_l + 4 * g, quats_r + 4 * g, NULL);
        const float dt = (float)time - times[g];
        const int ok = expf(-0.5f * dt * dt / var_t) > (float)threshold;
        alive[g] = (uint8_t)ok;
        count += ok;
    }
    return count;
}

/* Pass 2: the survivors (index[m] = g, ascending) conditioned on t: means [M, 3], covariances
   [M, 3, 3], opacities sigmoid(logit) * marginal, dt = mu_t - t. */
int tf_slice4d_fill(int64_t m, const int64_t *index, const float *means, const float *times, const float *log_scales,
                    const float *log_scale_t, const float *quats_l, const float *quats_r, const float *opacity_logits,
                    double time, float *out_means, float *out_covs, float *out_opacities, float *out_dt) {
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m; ++r) {
        const int64_t g = index[r];
        float cov[16];
        const float var_t = covariance4(log_scales + 3 * g, log_scale_t[g], quats_l + 4 * g, quats_r + 4 * g, cov);
        const float dt = (float)time - times[g];
        const float shift = dt / var_t;
        for (int i = 0; i < 3; ++i) out_means[3 * r + i] = means[3 * g + i] + cov[4 * i + 3] * shift;
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) out_covs[9 * r + 3 * i + j] = cov[4 * i + j] - cov[4 * i + 3] * cov[4 * j + 3] / var_t;
        const float marginal = expf(-0.5f * dt * dt / var_t);
        out_opacities[r] = marginal / (1.0f + expf(-opacity_logits[g]));
        out_dt[r] = -dt;
    }
    return 0;
}
"""


def _declare(library: ctypes.CDLL) -> None:
    ptr, i64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    library.tf_slice4d_cull.restype = ctypes.c_int64
    library.tf_slice4d_cull.argtypes = [i64, ptr, ptr, ptr, ptr, ptr, f64, f64, ptr]
    library.tf_slice4d_fill.restype = ctypes.c_int
    library.tf_slice4d_fill.argtypes = [i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, f64, ptr, ptr, ptr, ptr]


_LIBRARY = NativeLibrary("slice4d", _SOURCE, ["-fopenmp"], _declare)


def native_library() -> ctypes.CDLL | None:
    """The compiled slicing kernel, or ``None`` (no compiler, ``TENSORFIELD_NATIVE=0``)."""
    return _LIBRARY.get()


def slice_native(
    means: Tensor,
    times: Tensor,
    log_scales: Tensor,
    log_scale_t: Tensor,
    quats_left: Tensor,
    quats_right: Tensor,
    opacity_logits: Tensor,
    time: float,
    threshold: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None:
    """Cull and condition 4D Gaussians at ``time`` without gradients.

    Returns ``(index [M], means [M, 3], covariances [M, 3, 3], opacities [M], dt [M])`` with
    ``dt = mu_t - time``, or ``None`` when the kernel cannot take the inputs (not CPU float32,
    no compiler): the caller then uses the torch path.
    """
    tensors = [means, times, log_scales, log_scale_t, quats_left, quats_right, opacity_logits]
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return None
    library = native_library()
    if library is None:
        return None
    means, times, log_scales, log_scale_t, quats_left, quats_right, opacity_logits = [t.detach().contiguous() for t in tensors]
    count = means.shape[0]
    alive = torch.empty(count, dtype=torch.uint8)
    survivors = library.tf_slice4d_cull(
        count, times.data_ptr(), log_scales.data_ptr(), log_scale_t.data_ptr(), quats_left.data_ptr(),
        quats_right.data_ptr(), float(time), float(threshold), alive.data_ptr(),
    )
    index = torch.nonzero(alive).squeeze(1) if survivors < count else torch.arange(count)
    out_means = torch.empty(survivors, 3)
    out_covs = torch.empty(survivors, 3, 3)
    out_opacities = torch.empty(survivors)
    out_dt = torch.empty(survivors)
    library.tf_slice4d_fill(
        survivors, index.data_ptr(), means.data_ptr(), times.data_ptr(), log_scales.data_ptr(), log_scale_t.data_ptr(),
        quats_left.data_ptr(), quats_right.data_ptr(), opacity_logits.data_ptr(), float(time),
        out_means.data_ptr(), out_covs.data_ptr(), out_opacities.data_ptr(), out_dt.data_ptr(),
    )
    return index, out_means, out_covs, out_opacities, out_dt
