"""The photometric loss of Gaussian splatting: L1 plus a differentiable SSIM term.

3DGS (Kerbl et al., 2023, Sec. 7) and 4DGS (Yang et al., 2024) train with

.. math:: \\mathcal{L} = (1 - \\lambda)\\, \\mathcal{L}_1 + \\lambda\\, (1 - \\mathrm{SSIM}), \\qquad \\lambda = 0.2.

:func:`ssim` is the training SSIM of the original code: an 11x11 Gaussian window with
:math:`\\sigma = 1.5` applied per channel with zero padding (so the map keeps the image size),
:math:`C_1 = 0.01^2`, :math:`C_2 = 0.03^2`, averaged over every pixel. The reported metric
(:func:`tensorfield.engine.metrics.ssim`, scikit-image) averages only the valid region; the two
agree away from the border.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


@functools.lru_cache(maxsize=8)
def _window(size: int, sigma: float, channels: int, dtype: torch.dtype, device: str) -> Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    taps = taps / taps.sum()
    window = (taps[:, None] * taps[None, :]).to(dtype=dtype, device=device)
    return window.expand(channels, 1, size, size).contiguous()


def ssim(prediction: Tensor, target: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM of ``[B, H, W, C]`` (or ``[H, W, C]``) images, differentiable in both.

    Returns:
        Scalar mean of :func:`ssim_map` over batch, channels and pixels.
    """
    return ssim_map(prediction, target, window_size, sigma).mean()


def ssim_map(prediction: Tensor, target: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM ``[B, C, H, W]`` of ``[B, H, W, C]`` (or ``[H, W, C]``) images (zero padding)."""
    if prediction.ndim == 3:
        prediction, target = prediction[None], target[None]
    x = prediction.permute(0, 3, 1, 2)
    y = target.permute(0, 3, 1, 2)
    channels = x.shape[1]
    window = _window(window_size, sigma, channels, x.dtype, str(x.device))
    pad = window_size // 2

    def blur(image: Tensor) -> Tensor:
        return F.conv2d(image, window, padding=pad, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = blur(x * x) - mu_xx
    var_y = blur(y * y) - mu_yy
    cov_xy = blur(x * y) - mu_xy
    numerator = (2 * mu_xy + SSIM_C1) * (2 * cov_xy + SSIM_C2)
    denominator = (mu_xx + mu_yy + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return numerator / denominator


def photometric_loss(prediction: Tensor, target: Tensor, ssim_weight: float = 0.2) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, l1, ssim)`` for ``[B, H, W, C]`` images: :math:`(1-\\lambda) L_1 + \\lambda (1 - \\mathrm{SSIM})`."""
    l1 = (prediction - target).abs().mean()
    if ssim_weight <= 0:
        return l1, l1, torch.ones((), dtype=prediction.dtype, device=prediction.device)
    structural = ssim(prediction, target)
    return (1.0 - ssim_weight) * l1 + ssim_weight * (1.0 - structural), l1, structural
