"""Geometry and colour of 3D and 4D Gaussians, in plain differentiable torch.

Everything the Gaussian models (:mod:`tensorfield.fields.gaussians`) compute before handing a
:class:`~tensorfield.cuda.rasterize.GaussianBatch` to the rasteriser lives here, so that tests can
check each formula on its own:

* **3D rotations** from unit quaternions ``(w, x, y, z)`` (gsplat's order), and back. The 3D
  rasterisation math, :func:`quat_to_rotmat`, :func:`covariance_3d` (``R S S^T R^T``) and
  :func:`sh_basis`, is the rasteriser's own (:mod:`tensorfield.cuda.rasterize`), imported here
  so that the models and the kernels share one copy.
* **4D rotations** (Yang et al., ICLR 2024, Sec. 3.2): a rotation of R^4 factors into a
  left-isoclinic and a right-isoclinic rotation, :math:`R = L(q_l) R(q_r)`, each given by a unit
  quaternion. :func:`left_isoclinic` is left multiplication by :math:`q_l`,
  :func:`right_isoclinic` is right multiplication by the conjugate of :math:`q_r` (so that
  :math:`q_l = q_r = q` gives the 3D rotation of :math:`q` on the imaginary part and leaves the
  real part alone), both acting on quaternion coordinates ``(w, i, j, k)``. The official code then
  reverses the coordinate order, mapping ``(x, y, z, t) = (k, j, i, w)``: time is the real part.
  We keep that order (:func:`rotation_4d`), so parameters of the official code mean the same here
  and a pair :math:`q_l = q_r` never mixes space and time.
* **Slicing a 4D Gaussian at time t** (Sec. 3.2, Eq. 6-7): with :math:`\\Sigma = R S S^T R^T`
  (:math:`S` the diagonal of scales) split into the spatial block :math:`\\Sigma_{1:3,1:3}`, the
  space-time column :math:`\\Sigma_{1:3,4}` and the temporal variance :math:`\\Sigma_{44}`, the
  conditional distribution of space given time is the 3D Gaussian

  .. math::

      \\mu_{xyz|t} = \\mu_{1:3} + \\Sigma_{1:3,4} \\Sigma_{44}^{-1} (t - \\mu_t), \\qquad
      \\Sigma_{xyz|t} = \\Sigma_{1:3,1:3} - \\Sigma_{1:3,4} \\Sigma_{44}^{-1} \\Sigma_{4,1:3}

  and the Gaussian's opacity is scaled by the (unnormalised) temporal marginal
  :math:`p(t) = \\exp(-\\tfrac12 (t - \\mu_t)^2 / \\Sigma_{44})`.
* **Spherical harmonics** up to degree 3 with the basis, ordering and constants of the original
  3DGS / gsplat (real SH, coefficient 0 is the DC term; colour = value + 0.5, clamped at 0).
* **4D spherindrical harmonics** (Sec. 3.3, official ``eval_shfs_4d``): the product of the SH
  basis of the view direction with a Fourier cosine series in time,

  .. math::

      c(d, t) = \\sum_{n=0}^{N_t} \\cos\\Big(\\frac{2 \\pi n (\\mu_t - t)}{T}\\Big)
                \\sum_{l \\le L} \\sum_m c_{n l m} Y_l^m(d)

  where :math:`T` is the duration of the sequence (the period), :math:`N_t \\le 2` the temporal
  degree; coefficient ``n * (L_max + 1)^2 + lm`` of a Gaussian's table holds :math:`c_{nlm}`
  (the official layout: the SH block of every temporal order in turn, including the
  :math:`n = 0` block, whose cosine is 1). With :math:`N_t = 0`, or at :math:`t = \\mu_t` after
  summing the blocks, this is ordinary SH; :func:`collapse_spherindrical` does that sum for any
  ``t``, which is how a 4D slice is exported as a standard 3DGS splat.

Shapes follow the conventions of the models: ``N`` Gaussians, quaternions ``[N, 4]``, SH tables
``[N, K, 3]`` (``K`` coefficients per colour channel).
"""

from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F
from tensorfield.cuda.rasterize import covariance_from_scales_quats as covariance_3d
from tensorfield.cuda.rasterize import quat_to_rotmat, sh_basis
from torch import Tensor

# The degree-0 real SH constant (the DC term) of the colour <-> DC conversions.
SH_C0 = 0.28209479177387814
MAX_SH_DEGREE = 3
MAX_TIME_DEGREE = 2


def num_sh_bases(degree: int) -> int:
    """Coefficients per channel of SH up to ``degree``: :math:`(L + 1)^2`."""
    return (degree + 1) ** 2


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """DC coefficient giving colour ``rgb`` (the inverse of ``SH_C0 * c + 0.5``)."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(dc: Tensor) -> Tensor:
    """Colour of a DC coefficient alone: ``SH_C0 * dc + 0.5``."""
    return dc * SH_C0 + 0.5


# ------------------------------------------------------------------------------------ rotations
def rotmat_to_quat(rotations: Tensor) -> Tensor:
    """``[..., 3, 3]`` proper rotations -> ``[..., 4]`` unit quaternions ``(w, x, y, z)``, ``w >= 0``.

    Shepperd's method: take the largest of the four squared components as the pivot, so no branch
    divides by a small number.
    """
    m = rotations
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    candidates = torch.stack(
        [
            torch.stack([1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22, m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m00 - m11 + m22], -1),
        ],
        dim=-2,
    )  # [..., 4 pivots, 4]; row p is 4 q_p q, so its p-th entry is 4 q_p^2
    pivot = torch.stack([candidates[..., p, p] for p in range(4)], -1).argmax(-1)
    chosen = torch.gather(candidates, -2, pivot[..., None, None].expand(*pivot.shape, 1, 4)).squeeze(-2)
    quats = F.normalize(chosen, dim=-1)
    return torch.where(quats[..., :1] < 0, -quats, quats)


def left_isoclinic(quats: Tensor) -> Tensor:
    """``[..., 4, 4]`` matrix of :math:`v \\mapsto q v` on quaternion coordinates ``(w, i, j, k)``."""
    a, b, c, d = F.normalize(quats, dim=-1).unbind(-1)
    rows = (
        a, -b, -c, -d,
        b, a, -d, c,
        c, d, a, -b,
        d, -c, b, a,
    )  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 4, 4)


def right_isoclinic(quats: Tensor) -> Tensor:
    """``[..., 4, 4]`` matrix of :math:`v \\mapsto v \\bar q` on quaternion coordinates ``(w, i, j, k)``."""
    p, q, r, s = F.normalize(quats, dim=-1).unbind(-1)
    rows = (
        p, q, r, s,
        -q, p, -s, r,
        -r, s, p, -q,
        -s, -r, q, p,
    )  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 4, 4)


def rotation_4d(quats_left: Tensor, quats_right: Tensor) -> Tensor:
    """``[..., 4, 4]`` rotation :math:`L(q_l) R(q_r)` in ``(x, y, z, t)`` coordinates.

    The isoclinic factors act on ``(w, i, j, k)``; reversing both axes maps them to
    ``(x, y, z, t) = (k, j, i, w)`` as in the official code (see module docstring).
    """
    return (left_isoclinic(quats_left) @ right_isoclinic(quats_right)).flip(-1, -2)


# ------------------------------------------------------------------------------------ covariances
def covariance_4d(scales: Tensor, quats_left: Tensor, quats_right: Tensor) -> Tensor:
    """``[N, 4, 4]`` :math:`\\Sigma = R S S^T R^T` from activated ``scales [N, 4]`` (x, y, z, t)."""
    m = rotation_4d(quats_left, quats_right) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def slice_4d(means: Tensor, covariances: Tensor, time: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Condition 4D Gaussians on ``t = time`` (see module docstring).

    Args:
        means: ``[N, 4]`` (x, y, z, t).
        covariances: ``[N, 4, 4]``.
        time: scalar time (same units as ``means[:, 3]``).

    Returns:
        ``means3d [N, 3]``, ``covariances3d [N, 3, 3]`` of space given time, and the temporal
        marginal ``[N]`` :math:`\\exp(-\\tfrac12 (t - \\mu_t)^2 / \\Sigma_{44})` (1 at the
        Gaussian's own time).
    """
    cross = covariances[:, :3, 3]  # [N, 3]
    var_t = covariances[:, 3, 3]  # [N]
    dt = time - means[:, 3]
    means3d = means[:, :3] + cross * (dt / var_t)[:, None]
    covariances3d = covariances[:, :3, :3] - cross[:, :, None] * cross[:, None, :] / var_t[:, None, None]
    marginal = torch.exp(-0.5 * dt * dt / var_t)
    return means3d, covariances3d, marginal


def temporal_variance(scales: Tensor, quats_left: Tensor, quats_right: Tensor) -> Tensor:
    """``[N]`` :math:`\\Sigma_{44} = \\sum_k R_{4k}^2 s_k^2` without building the 4x4 covariance."""
    row = rotation_4d(quats_left, quats_right)[..., 3, :]
    return (row * row * scales * scales).sum(-1)


def covariance_to_scales_quats(covariances: Tensor, min_scale: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Factor symmetric positive ``[N, 3, 3]`` covariances as :math:`R S S^T R^T`.

    Returns ``scales [N, 3]`` (square roots of the eigenvalues, at least ``min_scale``) and
    ``quats [N, 4]`` ``(w, x, y, z)`` of the eigenvector frame, made a proper rotation by
    flipping the last eigenvector where the determinant is -1. Computed in float64.
    """
    values, vectors = torch.linalg.eigh(covariances.double())
    flip = torch.linalg.det(vectors) < 0
    vectors = torch.where(flip[:, None, None], vectors * torch.tensor([1.0, 1.0, -1.0], dtype=vectors.dtype, device=vectors.device), vectors)
    scales = values.clamp_min(min_scale**2).sqrt()
    return scales.to(covariances.dtype), rotmat_to_quat(vectors).to(covariances.dtype)


# ------------------------------------------------------------------------------------ harmonics
def time_basis(time_degree: int, dt: Tensor, period: float) -> Tensor:
    """``[..., time_degree + 1]`` Fourier terms :math:`\\cos(2 \\pi n\\, dt / T)`, ``n = 0..N_t``."""
    if not 0 <= time_degree <= MAX_TIME_DEGREE:
        raise ValueError(f"temporal degree must be in [0, {MAX_TIME_DEGREE}], got {time_degree}")
    orders = torch.arange(time_degree + 1, dtype=dt.dtype, device=dt.device)
    return torch.cos((2 * math.pi / period) * dt[..., None] * orders)


def spherindrical_weights(
    directions: Tensor,
    num_coefficients: int,
    degree: int,
    dt: Tensor | None = None,
    time_degree: int = 0,
    period: float = 1.0,
    max_degree: int = MAX_SH_DEGREE,
) -> Tensor:
    """``[N, num_coefficients]`` basis values :math:`\\cos(2\\pi n\\, dt / T)\\, Y_{lm}(d)` per table entry.

    Entry ``n * (max_degree + 1)^2 + lm`` of a table multiplies weight ``n, lm``; entries above
    the active ``degree`` / ``time_degree`` get weight 0 (see :func:`eval_spherindrical`).
    """
    block = num_sh_bases(max_degree)
    basis = sh_basis(degree, directions)
    if basis.shape[-1] < block:
        basis = F.pad(basis, (0, block - basis.shape[-1]))
    orders = max(num_coefficients // block, 1)
    if orders == 1:
        return basis[:, :num_coefficients]
    if time_degree > 0:
        if dt is None:
            raise ValueError("spherindrical_weights: time_degree > 0 needs dt")
        cosines = time_basis(min(time_degree, orders - 1), dt, period)
    else:
        cosines = torch.ones_like(basis[:, :1])
    cosines = F.pad(cosines, (0, orders - cosines.shape[-1]))
    return (cosines[:, :, None] * basis[:, None, :]).reshape(basis.shape[0], orders * block)[:, :num_coefficients]


def eval_spherindrical(
    coefficients: Tensor,
    directions: Tensor,
    degree: int,
    dt: Tensor | None = None,
    time_degree: int = 0,
    period: float = 1.0,
    max_degree: int = MAX_SH_DEGREE,
) -> Tensor:
    """Colour values (before the +0.5 offset) of SH / 4D spherindrical harmonics.

    Args:
        coefficients: ``[N, K, C]`` tables laid out in blocks of ``(max_degree + 1)^2`` SH
            coefficients per temporal order; only the first ``degree`` / ``time_degree`` terms are
            used (the active degrees).
        directions: ``[N, 3]`` unit view directions (camera to Gaussian).
        degree: active SH degree (<= ``max_degree``).
        dt: ``[N]`` time offsets :math:`\\mu_t - t` (ignored when ``time_degree`` is 0).
        time_degree: active temporal degree.
        period: the Fourier period :math:`T` (duration of the sequence).
        max_degree: the SH degree the tables were allocated for (block size).

    Returns:
        ``[N, C]`` :math:`\\sum_n \\cos(2\\pi n\\, dt / T) \\sum_{lm} c_{nlm} Y_{lm}(d)`, one
        batched matrix product with :func:`spherindrical_weights`.
    """
    weights = spherindrical_weights(directions, coefficients.shape[1], degree, dt, time_degree, period, max_degree)
    return torch.einsum("nk,nkc->nc", weights.to(coefficients.dtype), coefficients)


def collapse_spherindrical(
    coefficients: Tensor, dt: Tensor, time_degree: int, period: float, max_degree: int = MAX_SH_DEGREE
) -> Tensor:
    """``[N, (max_degree + 1)^2, C]`` SH table equal to the 4D table at time offsets ``dt [N]``.

    Sums the temporal blocks weighted by their cosines; evaluating the result with
    :func:`eval_spherindrical` (no time) gives the same colours as the 4D table at that time.
    """
    block = num_sh_bases(max_degree)
    cosines = time_basis(time_degree, dt, period)
    table = coefficients[:, :block].clone()
    for order in range(1, time_degree + 1):
        table = table + cosines[:, order, None, None] * coefficients[:, order * block : (order + 1) * block]
    return table


# ------------------------------------------------------------------------------------ neighbours
def _knn(points: Tensor, k: int, chunk: int, use_tree: bool) -> tuple[Tensor, Tensor]:
    """``(distances [P, k], indices [P, k])`` of each point's ``k`` nearest points (itself first):
    scipy's KD-tree (float64, on the CPU) when ``use_tree`` and scipy is there, else chunked
    ``torch.cdist`` + ``topk`` on the points' device and dtype."""
    if use_tree and importlib.util.find_spec("scipy") is not None:
        from scipy.spatial import cKDTree

        array = points.detach().double().cpu().numpy()
        distances, index = cKDTree(array).query(array, k=k, workers=-1)
        shape = (points.shape[0], k)
        return torch.from_numpy(distances.reshape(shape)), torch.from_numpy(index.reshape(shape)).long()
    detached = points.detach()
    values, indices = [], []
    for start in range(0, detached.shape[0], chunk):
        nearest = torch.cdist(detached[start : start + chunk], detached).topk(k, dim=1, largest=False)
        values.append(nearest.values)
        indices.append(nearest.indices)
    return torch.cat(values), torch.cat(indices)


def nearest_neighbours(points: Tensor, k: int, chunk: int = 2048, use_tree: bool = True) -> Tensor:
    """``[P, k]`` (long) indices of each point's ``k`` nearest points by Euclidean distance, the
    point itself included (first, at distance 0), nearest first; ``k`` is capped at ``P``.

    scipy's KD-tree for CPU tensors (``use_tree``), else chunked ``torch.cdist`` + ``topk`` on the
    points' device (the GPU path, and the reference the tree is tested against).
    """
    count = points.shape[0]
    k = min(int(k), count)
    if count == 0 or k <= 0:
        return torch.zeros(count, max(k, 0), dtype=torch.long, device=points.device)
    return _knn(points, k, chunk, use_tree and points.device.type == "cpu")[1]


def mean_velocity(scales: Tensor, quats_left: Tensor, quats_right: Tensor, dt: float) -> Tensor:
    r"""``[N, 3]`` how far each 4D Gaussian's conditional mean moves in ``dt`` of scene time:
    :math:`\Sigma_{1:3,4} / \Sigma_{44} \, dt` (the official ``get_current_covariance_and_mean_offset``
    at ``t = \mu_t + dt``), from activated ``scales [N, 4]`` and the two quaternions."""
    covariances = covariance_4d(scales, quats_left, quats_right)
    return covariances[:, :3, 3] / covariances[:, 3, 3, None] * dt


def mean_neighbour_distance(points: Tensor, k: int = 3, chunk: int = 2048) -> Tensor:
    """``[P]`` :math:`\\sqrt{\\tfrac1k \\sum_{j \\le k} d_j^2}` over the ``k`` nearest other points.

    The original 3DGS initial scale (``distCUDA2``: mean squared distance to the 3 nearest
    neighbours). Uses scipy's KD-tree when available, else chunked ``torch.cdist``.
    """
    count = points.shape[0]
    if count <= 1:
        return torch.ones(count, dtype=points.dtype, device=points.device)
    k = min(k, count - 1)
    distances, _ = _knn(points.double(), k + 1, chunk, use_tree=True)
    squared = (distances[:, 1:] ** 2).to(points)
    return squared.mean(1).sqrt()
