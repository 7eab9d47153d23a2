"""Float64 reference rasteriser: every Gaussian against every pixel, one Gaussian at a time.

The simplest correct statement of :mod:`tensorfield.cuda.rasterize`'s compositing: Gaussians
sorted by camera z are composited one after the other into all pixels at once, with gsplat's
rules written as plainly as possible (evaluate only inside the Gaussian's tile rectangle; skip
:math:`\\sigma < 0` and :math:`\\alpha < 1/255`; stop a pixel before the Gaussian that would bring
its transmittance to :math:`\\le 10^{-4}`). The projection is :func:`~tensorfield.cuda.rasterize.project`
run in float64 (it is itself tested against gsplat's torch reference). Autograd gives the
gradients. Cost ``O(N)`` torch calls on ``H x W`` tensors: small scenes only.
"""

from __future__ import annotations

import torch
from tensorfield.cuda.rasterize import (
    ALPHA_THRESHOLD,
    MAX_ALPHA,
    TRANSMITTANCE_THRESHOLD,
    GaussianBatch,
    RasterOutput,
    project,
    tile_rectangles,
)
from torch import Tensor


def _to64(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.double()


def rasterize_reference(
    gaussians: GaussianBatch,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    background: Tensor | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    antialiased: bool = False,
    tile_size: int = 16,
) -> RasterOutput:
    """Same arguments and outputs as :func:`~tensorfield.cuda.rasterize.rasterize`, in float64."""
    g64 = GaussianBatch(
        means=gaussians.means.double(), opacities=gaussians.opacities.double(), colors=gaussians.colors.double(),
        scales=_to64(gaussians.scales), quats=_to64(gaussians.quats), covars=_to64(gaussians.covars),
        sh_degree=gaussians.sh_degree,
    )
    p = project(g64, viewmats.double(), Ks.double(), width, height, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, antialiased=antialiased)
    lo, hi = tile_rectangles(p.means2d, p.radii, width, height, tile_size)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    px, py = xs.double() + 0.5, ys.double() + 0.5
    tile_x, tile_y = xs // tile_size, ys // tile_size
    channels = p.colors.shape[-1]
    rgbs, alphas, depths = [], [], []
    for cam in range(viewmats.shape[0]):
        T = torch.ones(height, width, dtype=torch.float64)
        done = torch.zeros(height, width, dtype=torch.bool)
        rgb = torch.zeros(height, width, channels, dtype=torch.float64)
        depth = torch.zeros(height, width, dtype=torch.float64)
        for i in torch.argsort(p.depths[cam].detach(), stable=True).tolist():
            if bool((p.radii[cam, i] <= 0).any()):
                continue
            inside = (tile_x >= lo[cam, i, 0]) & (tile_x < hi[cam, i, 0]) & (tile_y >= lo[cam, i, 1]) & (tile_y < hi[cam, i, 1])
            a, b, c = p.conics[cam, i]
            dx, dy = p.means2d[cam, i, 0] - px, p.means2d[cam, i, 1] - py
            sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
            alpha = torch.clamp(p.opacities[cam, i] * torch.exp(-sigma), max=MAX_ALPHA)
            use = inside & ~done & (sigma.detach() >= 0) & (alpha.detach() >= ALPHA_THRESHOLD)
            next_T = T * (1 - alpha)
            stop = use & (next_T.detach() <= TRANSMITTANCE_THRESHOLD)
            done = done | stop
            use = use & ~stop
            weight = torch.where(use, alpha * T, torch.zeros_like(T))
            rgb = rgb + weight[..., None] * p.colors[cam, i]
            depth = depth + weight * p.depths[cam, i]
            T = torch.where(use, next_T, T)
        acc = 1 - T
        depth = depth / torch.clamp(acc, min=1e-10)
        if background is not None:
            rgb = rgb + T[..., None] * background[cam].double()
        rgbs.append(rgb)
        alphas.append(acc)
        depths.append(depth)
    return RasterOutput(torch.stack(rgbs), torch.stack(alphas), torch.stack(depths), p.means2d, p.radii)
