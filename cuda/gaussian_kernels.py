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

def _declare(library: ctypes.CDLL) -> None:
    ptr, i64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    library.tf_slice4d_cull.restype = ctypes.c_int64
    library.tf_slice4d_cull.argtypes = [i64, ptr, ptr, ptr, ptr, ptr, f64, f64, ptr]
    library.tf_slice4d_fill.restype = ctypes.c_int
    library.tf_slice4d_fill.argtypes = [i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, f64, ptr, ptr, ptr, ptr]


_LIBRARY = NativeLibrary("slice4d", "gaussian_slice.c", ["-fopenmp"], _declare)


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
