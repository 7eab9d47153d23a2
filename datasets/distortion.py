"""OpenCV radial-tangential lens distortion: the model, its inverse, and image undistortion.

Coordinates here are *normalised* camera coordinates ``x = (u + 0.5 - cx) / fx`` (pixel centres
at +0.5, as in :mod:`.cameras`). With ``r = x^2 + y^2`` and coefficients
``(k1, k2, k3, k4, p1, p2)`` (nerfstudio's order; ``k4`` is a fourth radial term, as in nerfstudio,
not OpenCV's rational-model denominator)::

    d   = 1 + k1 r + k2 r^2 + k3 r^3 + k4 r^4
    x_d = d x + 2 p1 x y + p2 (r + 2 x^2)
    y_d = d y + 2 p2 x y + p1 (r + 2 y^2)

:func:`distort` is this forward model; :func:`undistort_points` inverts it with Newton
iterations; :func:`undistort_image` remaps a distorted photo onto the ideal pinhole camera with the
same ``K``. The remap only needs the forward model: output pixel ``p`` takes the colour found at
``K distort(K^-1 p)`` in the distorted photo (bilinear), which is exact up to interpolation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _as_coefficients(params, like: Tensor) -> tuple[Tensor, ...]:
    params = torch.as_tensor(params, dtype=like.dtype, device=like.device).reshape(-1)
    if params.numel() != 6:
        raise ValueError(
            f"expected 6 distortion coefficients (k1, k2, k3, k4, p1, p2), got {params.numel()}"
        )
    return tuple(params)


def distort(xy: Tensor, params) -> Tensor:
    """Apply the distortion model to normalised coordinates.

    Args:
        xy: ``[..., 2]`` ideal (undistorted) normalised coordinates.
        params: 6 coefficients ``(k1, k2, k3, k4, p1, p2)``.

    Returns:
        ``[..., 2]`` distorted normalised coordinates.
    """
    k1, k2, k3, k4, p1, p2 = _as_coefficients(params, xy)
    x, y = xy[..., 0], xy[..., 1]
    r = x * x + y * y
    d = 1.0 + r * (k1 + r * (k2 + r * (k3 + r * k4)))
    xd = d * x + 2.0 * p1 * x * y + p2 * (r + 2.0 * x * x)
    yd = d * y + 2.0 * p2 * x * y + p1 * (r + 2.0 * y * y)
    return torch.stack([xd, yd], dim=-1)


def undistort_points(xy_distorted: Tensor, params, iterations: int = 20) -> Tensor:
    """Invert :func:`distort` by Newton's method (2x2 Jacobian per point).

    Args:
        xy_distorted: ``[..., 2]`` distorted normalised coordinates.
        params: 6 coefficients ``(k1, k2, k3, k4, p1, p2)``.
        iterations: Newton steps; converges to float precision in a handful for real lenses.

    Returns:
        ``[..., 2]`` ideal normalised coordinates ``xy`` with ``distort(xy) ~= xy_distorted``.
    """
    k1, k2, k3, k4, p1, p2 = _as_coefficients(params, xy_distorted)
    xd, yd = xy_distorted[..., 0], xy_distorted[..., 1]
    x, y = xd.clone(), yd.clone()
    for _ in range(iterations):
        r = x * x + y * y
        d = 1.0 + r * (k1 + r * (k2 + r * (k3 + r * k4)))
        d_r = k1 + r * (2.0 * k2 + r * (3.0 * k3 + r * 4.0 * k4))
        fx = d * x + 2.0 * p1 * x * y + p2 * (r + 2.0 * x * x) - xd
        fy = d * y + 2.0 * p2 * x * y + p1 * (r + 2.0 * y * y) - yd
        j_xx = d + 2.0 * x * x * d_r + 2.0 * p1 * y + 6.0 * p2 * x
        j_xy = 2.0 * x * y * d_r + 2.0 * p1 * x + 2.0 * p2 * y
        j_yx = 2.0 * x * y * d_r + 2.0 * p2 * y + 2.0 * p1 * x
        j_yy = d + 2.0 * y * y * d_r + 2.0 * p2 * x + 6.0 * p1 * y
        det = j_xx * j_yy - j_xy * j_yx
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        x = x - (fx * j_yy - fy * j_xy) / det
        y = y - (fy * j_xx - fx * j_yx) / det
    return torch.stack([x, y], dim=-1)


def undistort_image(
    image: Tensor, fx: float, fy: float, cx: float, cy: float, params
) -> tuple[Tensor, Tensor]:
    """Resample a distorted photo onto the distortion-free pinhole camera with the same ``K``.

    Args:
        image: ``[H, W, C]`` float image taken through the distorted lens (premultiply alpha first
            so edges resample correctly).
        fx, fy, cx, cy: intrinsics in pixels, shared by the input and the output camera.
        params: 6 coefficients ``(k1, k2, k3, k4, p1, p2)``.

    Returns:
        ``(undistorted, inside)``: ``[H, W, C]`` image (bilinear, edge pixels replicated where the
        source lies outside the photo) and ``[H, W]`` bool, True where the source lies inside it.
    """
    height, width = image.shape[:2]
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    ideal = torch.stack([(u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy], dim=-1)
    distorted = distort(ideal, params)
    px = distorted[..., 0] * fx + cx  # continuous pixel coordinates, centres at +0.5
    py = distorted[..., 1] * fy + cy
    # grid_sample(align_corners=False): -1 is the left edge of pixel 0, +1 the right edge of W-1.
    grid = torch.stack([2.0 * px / width - 1.0, 2.0 * py / height - 1.0], dim=-1)
    source = image.permute(2, 0, 1).unsqueeze(0)
    out = F.grid_sample(
        source,
        grid.to(source.dtype).unsqueeze(0),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    inside = (px >= 0) & (px <= width) & (py >= 0) & (py <= height)
    return out[0].permute(1, 2, 0).contiguous(), inside
