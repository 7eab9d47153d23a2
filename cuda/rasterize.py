"""The shared Gaussian rasteriser: one typed batch of 3D Gaussians + cameras -> images.

Every Gaussian model (3DGS, 4DGS, avatars) renders through :func:`rasterize`. Backends:

* ``"gsplat"``: ``gsplat.rasterization`` on CUDA tensors (packed=False, the same conventions);
* ``"torch"``: a vectorised pure-torch implementation of the same algorithm (projection, tile
  rectangles, depth order, tile-by-tile front-to-back compositing with gsplat's thresholds);
  autograd gives every gradient. It runs anywhere and is exact, but it evaluates every
  Gaussian of a tile at every pixel of the tile (no early exit) and loops over tiles in Python:
  for small images and tests;
* ``"reference"``: :mod:`tensorfield.cuda.rasterize_reference`, the same in float64 (tests);
* ``"auto"``: gsplat for CUDA tensors when it imports, else ``"cpu"``.

Conventions (gsplat 1.5, ``ProjectionEWA3DGSFused.cu`` / ``RasterizeToPixels3DGSFwd.cu``), so a
model trained on one device renders the same on the other:

* cameras: ``viewmats [C, 4, 4]`` world-to-camera in the OpenCV frame (x right, y down, z
  forward), ``Ks [C, 3, 3]`` in pixels, pixel centres at ``+0.5``;
* covariance :math:`\\Sigma = R S S^T R^T` from scales and a normalised ``(w, x, y, z)``
  quaternion; EWA projection with the Jacobian evaluated at the mean clamped to 1.3x the
  field of view; ``eps2d`` (0.3 px^2) added to the 2D covariance; with ``antialiased`` the
  opacity is multiplied by :math:`\\sqrt{\\det \\Sigma_{2D} / \\det(\\Sigma_{2D} + \\epsilon I)}`;
* culling: depth outside ``(near_plane, far_plane)``, ``det <= 0``, opacity below 1/255,
  boxes outside the image; the pixel box is opacity-aware: ``extend = min(3.33,
  sqrt(2 log(opacity * 255)))`` standard deviations per axis (``radii [C, N, 2]``); a Gaussian
  is evaluated in the 16x16 tiles its box touches;
* compositing front to back in camera-z order: :math:`\\sigma = \\tfrac12 (a d_x^2 + c d_y^2)
  + b d_x d_y` with the conic ``(a, b, c)``, :math:`\\alpha = \\min(0.999, o e^{-\\sigma})`,
  skipped if :math:`\\sigma < 0` or :math:`\\alpha < 1/255`; a pixel stops *before* the Gaussian
  that would bring its transmittance to :math:`\\le 10^{-4}`; colour :math:`\\sum_i c_i \\alpha_i
  T_i + T \\cdot` background;
* SH colours (``sh_degree``): real SH of the unit direction camera centre -> mean (gsplat's
  basis order and constants), then ``+0.5`` and ``clamp_min(0)``;
* depth: expected camera z, :math:`\\sum_i z_i \\alpha_i T_i / \\max(1 - T, 10^{-10})` (gsplat
  ``"ED"``), no background term.

* ``"cpu"``: the native C/OpenMP kernels of :mod:`tensorfield.cuda.raster_native` (projection
  with SH, tile lists, compositing, each with its backward pass), equal to ``"torch"`` to float32
  rounding; on the CPU ``"auto"`` means ``"cpu"``. Without a C compiler it runs ``"torch"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
TRANSMITTANCE_THRESHOLD = 1e-4
EXTEND = 3.33


@dataclass
class GaussianBatch:
    """Gaussians to rasterise (see the module docstring for the conventions).

    Attributes:
        means: ``[N, 3]`` world positions.
        opacities: ``[N]`` activated, in (0, 1).
        colors: ``[N, D]`` activated colours / features, or SH coefficients ``[N, K, 3]`` when
            ``sh_degree`` is set (``K >= (sh_degree + 1)^2``).
        scales: ``[N, 3]`` activated standard deviations (with ``quats``), or ``None``.
        quats: ``[N, 4]`` ``(w, x, y, z)`` rotations (normalised here), or ``None``.
        covars: ``[N, 3, 3]`` world covariances instead of ``scales`` + ``quats``.
        sh_degree: SH degree of ``colors`` or ``None`` for plain colours.
    """

    means: Tensor
    opacities: Tensor
    colors: Tensor
    scales: Tensor | None = None
    quats: Tensor | None = None
    covars: Tensor | None = None
    sh_degree: int | None = None

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def covariances(self) -> Tensor:
        """``[N, 3, 3]`` world covariances."""
        if self.covars is not None:
            return self.covars
        if self.scales is None or self.quats is None:
            raise ValueError("GaussianBatch needs covars or both scales and quats")
        return covariance_from_scales_quats(self.scales, self.quats)


@dataclass
class RasterOutput:
    """What :func:`rasterize` returns for ``C`` cameras of ``H x W`` pixels.

    Attributes:
        rgb: ``[C, H, W, D]`` colour (composited on the background when one is given).
        alpha: ``[C, H, W]`` accumulated opacity ``1 - T``.
        depth: ``[C, H, W]`` expected camera z (0 where ``alpha`` is 0).
        means2d: ``[C, N, 2]`` projected means, part of the graph (``retain_grad()`` it for the
            view-space gradient of densification).
        radii: ``[C, N, 2]`` int pixel half-extents of each Gaussian's box (0 = culled).
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    means2d: Tensor
    radii: Tensor


# ------------------------------------------------------------------------------ geometry
def quat_to_rotmat(quats: Tensor) -> Tensor:
    """``[..., 4]`` ``(w, x, y, z)`` (normalised here) -> ``[..., 3, 3]`` rotation matrices."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def covariance_from_scales_quats(scales: Tensor, quats: Tensor) -> Tensor:
    """:math:`\\Sigma = (R S)(R S)^T` ``[..., 3, 3]`` from scales ``[..., 3]`` and quaternions."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def camera_matrices(cameras) -> tuple[Tensor, Tensor]:
    """``(viewmats [C, 4, 4], Ks [C, 3, 3])`` of a :class:`~tensorfield.datasets.cameras.Cameras` batch."""
    c2w = cameras.c2w.float()
    count = c2w.shape[0]
    rotation, centre = c2w[:, :, :3], c2w[:, :, 3]
    viewmats = torch.zeros(count, 4, 4, dtype=c2w.dtype, device=c2w.device)
    viewmats[:, :3, :3] = rotation.transpose(1, 2)
    viewmats[:, :3, 3] = -(rotation.transpose(1, 2) @ centre[:, :, None])[:, :, 0]
    viewmats[:, 3, 3] = 1.0
    Ks = torch.zeros(count, 3, 3, dtype=c2w.dtype, device=c2w.device)
    Ks[:, 0, 0], Ks[:, 1, 1] = cameras.fx.float(), cameras.fy.float()
    Ks[:, 0, 2], Ks[:, 1, 2] = cameras.cx.float(), cameras.cy.float()
    Ks[:, 2, 2] = 1.0
    return viewmats, Ks


# SH basis (gsplat's order and constants; Sloan, "Efficient Spherical Harmonic Evaluation")
def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """``[..., (degree + 1)^2]`` real SH basis at unit directions ``[..., 3]`` (degree 0 to 3)."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be in [0, 3], got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, 0.2820947917738781)]
    if degree >= 1:
        out += [-0.48860251190292 * y, 0.48860251190292 * z, -0.48860251190292 * x]
    if degree >= 2:
        z2, c1, s1 = z * z, x * x - y * y, 2 * x * y
        b = -1.092548430592079 * z
        out += [0.5462742152960395 * s1, b * y, 0.9461746957575601 * z2 - 0.3153915652525201, b * x, 0.5462742152960395 * c1]
    if degree >= 3:
        c2, s2 = x * c1 - y * s1, x * s1 + y * c1
        tc = -2.285228997322329 * z2 + 0.4570457994644658
        tb = 1.445305721320277 * z
        out += [
            -0.5900435899266435 * s2, tb * s1, tc * y, z * (1.865881662950577 * z2 - 1.119528997770346),
            tc * x, tb * c1, -0.5900435899266435 * c2,
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """``[..., 3]`` colour ``clamp_min(sum_k Y_k(d) c_k + 0.5, 0)`` (gsplat convention)."""
    dirs = F.normalize(dirs, dim=-1)
    bases = sh_basis(degree, dirs)
    values = (bases[..., None] * coeffs[..., : bases.shape[-1], :]).sum(-2)
    return torch.clamp_min(values + 0.5, 0.0)


@dataclass
class Projected:
    """Per-camera screen-space Gaussians (``[C, N, ...]``)."""

    means2d: Tensor
    conics: Tensor  # (a, b, c) of the inverse 2D covariance
    depths: Tensor
    opacities: Tensor  # times the antialiasing compensation
    radii: Tensor  # [C, N, 2] int, 0 = culled
    colors: Tensor  # [C, N, D]


def project(
    gaussians: GaussianBatch,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    antialiased: bool = False,
) -> Projected:
    """EWA projection of every Gaussian into every camera (differentiable; see the module docstring)."""
    means = gaussians.means
    covars = gaussians.covariances()
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C, N, 3]
    covars_c = torch.einsum("cij,njk,clk->cnil", R, covars, R)  # [C, N, 3, 3]
    tx, ty, tz = means_c.unbind(-1)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    safe_z = torch.where(tz.abs() > 1e-12, tz, torch.full_like(tz, 1e-12))
    u = torch.clamp(tx / safe_z, min=-(cx / fx + 0.3 * tan_x), max=(width - cx) / fx + 0.3 * tan_x)
    v = torch.clamp(ty / safe_z, min=-(cy / fy + 0.3 * tan_y), max=(height - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(tz)
    J = torch.stack([fx / safe_z, zero, -fx * u / safe_z, zero, fy / safe_z, -fy * v / safe_z], -1).reshape(*tz.shape, 2, 3)
    cov2d = J @ covars_c @ J.transpose(-1, -2)
    means2d = torch.stack([fx * tx / safe_z + cx, fy * ty / safe_z + cy], dim=-1)
    a, b, c = cov2d[..., 0, 0], 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1]
    det_orig = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    safe_det = det.clamp(min=1e-10)
    conics = torch.stack([c / safe_det, -b / safe_det, a / safe_det], dim=-1)
    opacities = gaussians.opacities[None, :].expand_as(tz)
    if antialiased:
        opacities = opacities * torch.sqrt(torch.clamp(det_orig / safe_det, min=0.0))

    with torch.no_grad():
        op = opacities.detach()
        extend = torch.sqrt(2.0 * torch.log(torch.clamp(op / ALPHA_THRESHOLD, min=1.0))).clamp(max=EXTEND)
        radius = torch.stack([torch.ceil(extend * a.detach().clamp(min=0).sqrt()), torch.ceil(extend * c.detach().clamp(min=0).sqrt())], -1)
        valid = (det.detach() > 0) & (tz.detach() > near_plane) & (tz.detach() < far_plane) & (op >= ALPHA_THRESHOLD)
        valid &= (radius > 0).any(-1)
        m2 = means2d.detach()
        inside = (m2[..., 0] + radius[..., 0] > 0) & (m2[..., 0] - radius[..., 0] < width)
        inside &= (m2[..., 1] + radius[..., 1] > 0) & (m2[..., 1] - radius[..., 1] < height)
        radii = torch.where((valid & inside)[..., None], radius, torch.zeros_like(radius)).to(torch.int32)

    if gaussians.sh_degree is not None:
        campos = -(R.transpose(1, 2) @ t[:, :, None])[:, :, 0]  # [C, 3]
        dirs = means[None, :, :] - campos[:, None, :]
        colors = eval_sh(int(gaussians.sh_degree), dirs, gaussians.colors[None].expand(len(viewmats), *gaussians.colors.shape))
    else:
        colors = gaussians.colors[None].expand(len(viewmats), *gaussians.colors.shape)
    return Projected(means2d, conics, tz, opacities, radii, colors)


def tile_rectangles(means2d: Tensor, radii: Tensor, width: int, height: int, tile_size: int) -> tuple[Tensor, Tensor]:
    """``(lo, hi)`` ``[..., 2]`` int tile ranges ``[lo, hi)`` each Gaussian is evaluated in (gsplat ``isect_tiles``)."""
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    centre = means2d.detach() / tile_size
    extent = radii.to(means2d.dtype) / tile_size
    lo = torch.floor(centre - extent).long()
    hi = torch.ceil(centre + extent).long()
    limit = torch.tensor([tiles_x, tiles_y], device=means2d.device)
    lo = torch.minimum(lo.clamp(min=0), limit)
    hi = torch.minimum(hi.clamp(min=0), limit)
    culled = (radii <= 0).any(-1, keepdim=True)
    return torch.where(culled, torch.zeros_like(lo), lo), torch.where(culled, torch.zeros_like(hi), hi)


def _composite_pixels(dx, dy, con, op, col, z, channels, dtype, device):
    """Front-to-back compositing of ``P`` pixels against ``n`` depth-sorted Gaussians (``[P, n]`` offsets)."""
    if dx.shape[1] == 0:
        zeros = torch.zeros(dx.shape[0], dtype=dtype, device=device)
        return torch.zeros(dx.shape[0], channels, dtype=dtype, device=device), zeros, zeros
    sigma = 0.5 * (con[None, :, 0] * dx * dx + con[None, :, 2] * dy * dy) + con[None, :, 1] * dx * dy
    alpha = torch.clamp(op[None, :] * torch.exp(-sigma), max=MAX_ALPHA)
    used = (sigma.detach() >= 0) & (alpha.detach() >= ALPHA_THRESHOLD)
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))
    log_keep = torch.log1p(-alpha)
    T_before = torch.exp(torch.cumsum(log_keep, dim=1) - log_keep)  # exclusive product
    stops = used & (T_before.detach() * (1 - alpha.detach()) <= TRANSMITTANCE_THRESHOLD)
    stopped_before = (torch.cumsum(stops.int(), dim=1) - stops.int()) > 0
    active = used & ~stops & ~stopped_before
    weight = torch.where(active, alpha * T_before, torch.zeros_like(alpha))
    acc = weight.sum(1)
    return weight @ col, acc, (weight * z[None, :]).sum(1) / torch.clamp(acc, min=1e-10)


def composite_dense(
    projected: Projected,
    width: int,
    height: int,
    tile_size: int,
    background: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Tile-by-tile front-to-back compositing (the ``"torch"`` backend).

    For each 16x16 tile, the Gaussians whose tile rectangle covers it (in camera-z order) are
    composited into its pixels at once as ``[pixels, Gaussians]`` matrices; the sequential early
    stop is exact: a pixel composites the Gaussians before the first one whose next
    transmittance would be ``<= 1e-4``. Differentiable by autograd.

    Returns:
        ``rgb [C, H, W, D]``, ``alpha [C, H, W]``, ``depth [C, H, W]``.
    """
    cams = projected.means2d.shape[0]
    dtype, device = projected.means2d.dtype, projected.means2d.device
    channels = projected.colors.shape[-1]
    lo, hi = tile_rectangles(projected.means2d, projected.radii, width, height, tile_size)
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    rgbs, alphas, depths = [], [], []
    for cam in range(cams):
        order = torch.argsort(projected.depths[cam].detach(), stable=True)
        keep = order[(projected.radii[cam, order] > 0).all(-1)]
        m2, con = projected.means2d[cam, keep], projected.conics[cam, keep]
        op, col, z = projected.opacities[cam, keep], projected.colors[cam, keep], projected.depths[cam, keep]
        glo, ghi = lo[cam, keep], hi[cam, keep]
        rows_rgb, rows_alpha, rows_depth = [], [], []
        for ty in range(tiles_y):
            y0, y1 = ty * tile_size, min((ty + 1) * tile_size, height)
            in_row = (glo[:, 1] <= ty) & (ghi[:, 1] > ty)
            parts_rgb, parts_alpha, parts_depth = [], [], []
            for tx in range(tiles_x):
                x0, x1 = tx * tile_size, min((tx + 1) * tile_size, width)
                idx = torch.nonzero(in_row & (glo[:, 0] <= tx) & (ghi[:, 0] > tx)).flatten()
                ys, xs = torch.meshgrid(
                    torch.arange(y0, y1, device=device, dtype=dtype) + 0.5,
                    torch.arange(x0, x1, device=device, dtype=dtype) + 0.5,
                    indexing="ij",
                )
                mean = m2.index_select(0, idx)
                dx = mean[None, :, 0] - xs.reshape(-1, 1)
                dy = mean[None, :, 1] - ys.reshape(-1, 1)
                rgb, acc, depth = _composite_pixels(
                    dx, dy, con.index_select(0, idx), op.index_select(0, idx), col.index_select(0, idx),
                    z.index_select(0, idx), channels, dtype, device,
                )
                if background is not None:
                    rgb = rgb + (1 - acc)[:, None] * background[cam].to(dtype)
                parts_rgb.append(rgb.reshape(y1 - y0, x1 - x0, channels))
                parts_alpha.append(acc.reshape(y1 - y0, x1 - x0))
                parts_depth.append(depth.reshape(y1 - y0, x1 - x0))
            rows_rgb.append(torch.cat(parts_rgb, dim=1))
            rows_alpha.append(torch.cat(parts_alpha, dim=1))
            rows_depth.append(torch.cat(parts_depth, dim=1))
        rgbs.append(torch.cat(rows_rgb, dim=0))
        alphas.append(torch.cat(rows_alpha, dim=0))
        depths.append(torch.cat(rows_depth, dim=0))
    return torch.stack(rgbs), torch.stack(alphas), torch.stack(depths)


def _gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def rasterize(
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
    backend: str = "auto",
) -> RasterOutput:
    """Render ``gaussians`` into ``C`` cameras (see the module docstring for conventions).

    Args:
        gaussians: the Gaussians.
        viewmats: ``[C, 4, 4]`` world-to-camera (OpenCV).
        Ks: ``[C, 3, 3]`` intrinsics in pixels.
        width, height: image size.
        background: ``[D]`` or ``[C, D]`` colour behind the Gaussians, or ``None`` (black).
        near_plane, far_plane: camera-z culling range.
        eps2d: screen-space blur added to every 2D covariance (px^2).
        antialiased: scale opacities by the blur's compensation (gsplat "antialiased").
        tile_size: tile edge in pixels.
        backend: ``"auto"``, ``"gsplat"``, ``"cpu"``, ``"torch"`` or ``"reference"``.

    Returns:
        :class:`RasterOutput`, differentiable in every input.
    """
    if backend not in ("auto", "gsplat", "torch", "reference", "cpu"):
        raise ValueError(f"unknown rasteriser backend {backend!r} (auto, gsplat, cpu, torch, reference)")
    if backend == "auto":
        backend = "gsplat" if gaussians.means.is_cuda and _gsplat_available() else "cpu"
    use_native = False
    if backend == "cpu" and not gaussians.means.is_cuda:
        from tensorfield.cuda.raster_native import native_library

        channels = gaussians.colors.shape[-1]
        # the kernels keep a tile's pixels and channels on the stack: up to 32x32 tiles and 32 channels
        use_native = native_library() is not None and tile_size <= 32 and channels <= 32
    if backend == "cpu":
        backend = "torch"
    cams = viewmats.shape[0]
    if background is not None and background.dim() == 1:
        background = background[None].expand(cams, -1)
    if backend == "gsplat":
        return _rasterize_gsplat(gaussians, viewmats, Ks, width, height, background, near_plane, far_plane, eps2d, antialiased, tile_size)
    if backend == "reference":
        from tensorfield.cuda.rasterize_reference import rasterize_reference

        return rasterize_reference(
            gaussians, viewmats, Ks, width, height, background=background, near_plane=near_plane,
            far_plane=far_plane, eps2d=eps2d, antialiased=antialiased, tile_size=tile_size,
        )
    options = {"near_plane": near_plane, "far_plane": far_plane, "eps2d": eps2d, "antialiased": antialiased}
    projected = None
    if use_native:
        from tensorfield.cuda.raster_native import native_projection_usable, project_native

        if native_projection_usable(gaussians, viewmats, Ks):
            projected = project_native(gaussians, viewmats, Ks, width, height, **options)
    if projected is None:
        projected = project(gaussians, viewmats, Ks, width, height, **options)
    if use_native:
        from tensorfield.cuda.raster_native import composite_native

        rgb, alpha, depth = composite_native(projected, width, height, tile_size, background)
    else:
        rgb, alpha, depth = composite_dense(projected, width, height, tile_size, background)
    return RasterOutput(rgb, alpha, depth, projected.means2d, projected.radii)


def _rasterize_gsplat(gaussians, viewmats, Ks, width, height, background, near_plane, far_plane, eps2d, antialiased, tile_size) -> RasterOutput:
    """``gsplat.rasterization`` with the depth as an extra "ED" channel (CUDA only)."""
    from gsplat import rasterization

    kwargs = {}
    if gaussians.covars is not None:
        kwargs["covars"] = gaussians.covars
        scales = quats = None
    else:
        scales, quats = gaussians.scales, gaussians.quats
    render, alphas, info = rasterization(
        means=gaussians.means, quats=quats, scales=scales, opacities=gaussians.opacities,
        colors=gaussians.colors, viewmats=viewmats, Ks=Ks, width=width, height=height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=gaussians.sh_degree,
        tile_size=tile_size, backgrounds=None, render_mode="RGB+ED",
        rasterize_mode="antialiased" if antialiased else "classic", packed=False, **kwargs,
    )
    rgb, depth = render[..., :-1], render[..., -1]
    alpha = alphas[..., 0]
    if background is not None:
        rgb = rgb + (1 - alpha)[..., None] * background[:, None, None, :]
    radii = info["radii"]
    if radii.dim() == 2:
        radii = radii[..., None].expand(*radii.shape, 2)
    return RasterOutput(rgb, alpha, depth, info["means2d"], radii)
