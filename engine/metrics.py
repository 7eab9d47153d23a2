"""Image-quality metrics: PSNR, SSIM and (optionally) LPIPS.

All metrics take ``[H, W, 3]`` images with values in ``[0, 1]`` (tensors or arrays) and return a
Python float. SSIM is the one the NeRF literature reports (TensoRF, mip-NeRF, 3DGS): a Gaussian
window with sigma 1.5 (11 taps), population covariances, ``K1 = 0.01``, ``K2 = 0.03``, data range
1, averaged over the valid region of every channel — scikit-image's ``structural_similarity`` with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from importlib import util as importlib_util
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def _as_float64(image) -> np.ndarray:
    if isinstance(image, Tensor):
        image = image.detach().to("cpu", torch.float64).numpy()
    return np.asarray(image, dtype=np.float64)


def mse_to_psnr(mse: float) -> float:
    """PSNR in dB of a mean squared error for data range 1: ``-10 log10(mse)`` (inf for 0)."""
    mse = float(mse)
    return math.inf if mse <= 0.0 else -10.0 * math.log10(mse)


def psnr(pred, target) -> float:
    """Peak signal-to-noise ratio in dB for images in ``[0, 1]``.

    ``PSNR = -10 log10(mean((pred - target)^2))``, averaged over all pixels and channels (the
    mean is taken before the log, as NeRF papers do per image).
    """
    pred, target = _as_float64(pred), _as_float64(target)
    if pred.shape != target.shape:
        raise ValueError(f"psnr: shapes differ, {pred.shape} vs {target.shape}")
    return mse_to_psnr(float(np.mean((pred - target) ** 2)))


def ssim(pred, target) -> float:
    """Structural similarity (the standard NeRF SSIM, see module docstring) of ``[H, W, C]`` images.

    Images smaller than the 11x11 window are compared with the largest odd window that fits.
    """
    from skimage.metrics import structural_similarity

    pred, target = _as_float64(pred), _as_float64(target)
    if pred.shape != target.shape:
        raise ValueError(f"ssim: shapes differ, {pred.shape} vs {target.shape}")
    channel_axis = -1 if pred.ndim == 3 else None
    kwargs = {}
    smallest = min(pred.shape[:2])
    if smallest < 11:
        kwargs["win_size"] = smallest if smallest % 2 else smallest - 1
    return float(
        structural_similarity(
            pred,
            target,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=channel_axis,
            **kwargs,
        )
    )


# ------------------------------------------------------------------------------------ LPIPS
_ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"  # torchvision's file name in the hub cache


def load_lpips(device: torch.device | str = "cpu") -> Callable[[Tensor, Tensor], float] | None:
    """An LPIPS (AlexNet, v0.1) scorer if the ``lpips`` package *and* its weights are local.

    Nothing is ever downloaded: LPIPS needs torchvision's AlexNet weights, so unless
    ``<torch hub dir>/checkpoints/alexnet-owt-7be5be79.pth`` and the ``lpips`` package's own
    linear-layer weights exist, this returns ``None``.

    Returns:
        ``score(pred, target) -> float`` for ``[H, W, 3]`` images in ``[0, 1]``, or ``None``.
    """
    if importlib_util.find_spec("lpips") is None:
        return None
    try:
        import lpips as lpips_package

        linear_weights = Path(lpips_package.__file__).parent / "weights" / "v0.1" / "alex.pth"
        backbone = Path(torch.hub.get_dir()) / "checkpoints" / _ALEXNET_WEIGHTS
        if not (linear_weights.is_file() and backbone.is_file()):
            return None
        network = lpips_package.LPIPS(net="alex", version="0.1", verbose=False).to(device).eval()
    except Exception:  # noqa: BLE001 - a broken optional install must not break evaluation
        return None

    @torch.no_grad()
    def score(pred: Tensor, target: Tensor) -> float:
        def to_nchw(image) -> Tensor:
            image = torch.as_tensor(_as_float64(image), dtype=torch.float32, device=device)
            return image.permute(2, 0, 1)[None] * 2.0 - 1.0

        return float(network(to_nchw(pred), to_nchw(target)).item())

    return score


def lpips(pred, target, scorer: Callable[[Tensor, Tensor], float] | None = None) -> float | None:
    """LPIPS (AlexNet) of two ``[H, W, 3]`` images, or ``None`` when it is not available locally.

    Pass a ``scorer`` from :func:`load_lpips` to avoid rebuilding the network for every image.
    """
    scorer = scorer if scorer is not None else load_lpips()
    return None if scorer is None else scorer(pred, target)
