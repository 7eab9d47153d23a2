"""tensorfield.engine.metrics: PSNR and SSIM against hand-worked values and a float64 reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tensorfield.engine.metrics import load_lpips, lpips, mse_to_psnr, psnr, ssim


def test_psnr_known_values():
    target = torch.full((4, 5, 3), 0.6, dtype=torch.float64)
    assert psnr(torch.full((4, 5, 3), 0.5, dtype=torch.float64), target) == pytest.approx(20.0, abs=1e-9)  # mse 0.01
    assert psnr(torch.full((4, 5, 3), 0.5), target.float()) == pytest.approx(20.0, abs=1e-5)  # float32 inputs
    assert psnr(np.full((2, 2, 3), 0.0), np.full((2, 2, 3), 0.001)) == pytest.approx(60.0, abs=1e-9)
    assert psnr(target, target) == math.inf
    assert mse_to_psnr(1e-3) == pytest.approx(30.0)


def test_ssim_of_constant_images_is_the_closed_form():
    # For constant images a, b the variances vanish: SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.5, 0.25, 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    value = ssim(torch.full((32, 32, 3), a), torch.full((32, 32, 3), b))
    assert value == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(0.8000640, abs=1e-6)


def _reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """The NeRF-papers SSIM written out: 11-tap Gaussian (sigma 1.5), 'valid' filtering."""
    radius = 5
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / 1.5) ** 2)
    taps /= taps.sum()

    def blur(image):  # separable valid convolution over both axes, per channel
        rows = np.stack([np.convolve(line, taps, mode="valid") for line in image])
        return np.stack([np.convolve(line, taps, mode="valid") for line in rows.T]).T

    scores = []
    for channel in range(x.shape[-1]):
        a, b = x[..., channel], y[..., channel]
        mu_a, mu_b = blur(a), blur(b)
        var_a = blur(a * a) - mu_a**2
        var_b = blur(b * b) - mu_b**2
        cov = blur(a * b) - mu_a * mu_b
        c1, c2 = 0.01**2, 0.03**2
        ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        scores.append(ssim_map.mean())
    return float(np.mean(scores))


@pytest.mark.parametrize("shape", [(24, 24, 3), (17, 30, 3)])
def test_ssim_matches_reference_on_random_images(shape):
    rng = np.random.default_rng(0)
    x = rng.random(shape)
    y = np.clip(x + 0.1 * rng.standard_normal(shape), 0, 1)
    assert ssim(x, y) == pytest.approx(_reference_ssim(x, y), abs=1e-7)
    assert ssim(torch.from_numpy(x).float(), torch.from_numpy(x).float()) == pytest.approx(1.0)


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError):
        psnr(np.zeros((2, 2, 3)), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError):
        ssim(np.zeros((12, 12, 3)), np.zeros((12, 13, 3)))


def test_lpips_is_none_without_local_weights():
    pytest.importorskip("skimage")
    if load_lpips() is None:
        assert lpips(torch.zeros(8, 8, 3), torch.zeros(8, 8, 3)) is None
