"""Native CPU rasteriser kernels: EWA projection + SH, tile lists and compositing, with backward.

The ``"cpu"`` backend of :func:`tensorfield.cuda.rasterize.rasterize`. Small C99 kernels,
parallel with OpenMP, compiled on first use and called through :mod:`ctypes` (see
:mod:`tensorfield.cuda.native`); each matches the pure-torch ``"torch"`` backend to float32
rounding, values and gradients (``tests/cuda/test_rasterize.py``):

* :func:`project_native` (``tf_project`` / ``tf_project_backward``): per Gaussian, the
  covariance from scales + quaternion (or a given covariance), the EWA projection with gsplat's
  clamps, eps2d and antialiasing compensation, the opacity-aware radii and the SH colour, in
  one pass; the backward pass writes the gradients of means, scales, quaternions (or
  covariances), opacities and SH coefficients. Camera parameters get no gradients here (with
  ``requires_grad`` cameras ``rasterize`` uses the torch projection).
* :func:`tile_lists` (``tf_tile_count`` / ``tf_tile_fill``): tile rectangles, a stable radix sort of the depths, then each Gaussian
  appended to the tiles of its rectangle in that order: per tile, ascending depth ranks.
* :func:`composite_native` (``tf_composite`` / ``tf_composite_backward``): per tile, front to
  back (backward: gsplat's back-to-front replay), each Gaussian over only the rows of its box and,
  per row, the 8-pixel blocks its ellipse reaches; saturated rows and tiles stop early. The
  backward pass accumulates per-thread partials over a fixed tile split, so results do not
  depend on scheduling.

``TENSORFIELD_NATIVE=0`` (or no C compiler) disables these kernels: ``"cpu"`` then runs the
``"torch"`` path.
"""

from __future__ import annotations

import ctypes

import torch
from tensorfield.cuda.native import NativeLibrary
from torch import Tensor

def _declare(library: ctypes.CDLL) -> None:
    i64, ptr, f64 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double
    library.tf_composite.restype = ctypes.c_int
    lists = [ptr, ptr, ptr, i64]  # offsets, ranks, order, visible
    library.tf_composite.argtypes = [i64] * 5 + lists + [ptr] * 5 + [i64] + [ptr] * 6
    library.tf_tile_count.restype = i64
    library.tf_tile_count.argtypes = [i64, ptr, ptr, i64, i64, i64, ptr, ptr]
    library.tf_tile_fill.restype = ctypes.c_int
    library.tf_tile_fill.argtypes = [i64, ptr, ptr, i64, i64, ptr, ptr, ptr, ptr]
    library.tf_composite_backward.restype = ctypes.c_int
    library.tf_composite_backward.argtypes = [i64] * 5 + lists + [ptr] * 5 + [i64] + [ptr] * 7 + [i64, ptr]
    camera = [ptr, ptr, i64, i64]
    library.tf_project.restype = ctypes.c_int
    library.tf_project.argtypes = [i64] + [ptr] * 6 + [i64] * 3 + camera + [f64, f64, f64, i64] + [ptr] * 6
    library.tf_project_backward.restype = ctypes.c_int
    library.tf_project_backward.argtypes = [i64] + [ptr] * 6 + [i64] * 3 + camera + [f64, i64] + [ptr] * 11


_LIBRARY = NativeLibrary("raster", "raster.c", ["-fopenmp", "-ffast-math"], _declare)


def native_library() -> ctypes.CDLL | None:
    """The compiled rasteriser kernels, or ``None`` (no compiler, ``TENSORFIELD_NATIVE=0``)."""
    return _LIBRARY.get()


def _ptr(tensor: Tensor | None):
    return tensor.data_ptr() if tensor is not None else None


def tile_lists(means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int, tile_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per tile (row-major) the Gaussians whose tile rectangle covers it, front to back (one camera).

    The rectangles are :func:`~tensorfield.cuda.rasterize.tile_rectangles` of ``means2d [N, 2]``
    and ``radii [N, 2]``. Returns ``(offsets [T + 1] int64, ranks [M] int32, order [V] int64)``:
    tile ``t``'s list is ``ranks[offsets[t]:offsets[t + 1]]``, ascending depth ranks;
    ``order[rank]`` is the Gaussian (so ``order[ranks]`` are the Gaussian indices). Culled
    Gaussians have no rank. Ties in depth keep index order. Native (a radix sort of the depths,
    then one pass in that order) when the kernels are available, else :func:`tile_lists_torch`.
    """
    library = native_library()
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    if library is not None:
        means2d = means2d.detach().float().contiguous()
        radii = radii.to(torch.int32).contiguous()
        keys = depths.detach().float().contiguous()
        count = means2d.shape[0]
        offsets = torch.empty(tiles_x * tiles_y + 1, dtype=torch.int64)
        rects = torch.empty(count, 4, dtype=torch.int32)
        total = library.tf_tile_count(count, means2d.data_ptr(), radii.data_ptr(), tile_size, tiles_x, tiles_y, rects.data_ptr(), offsets.data_ptr())
        ranks = torch.empty(max(total, 0), dtype=torch.int32)
        order = torch.empty(count, dtype=torch.int64)
        visible = ctypes.c_int64(0)
        status = -1 if total < 0 else library.tf_tile_fill(
            count, keys.data_ptr(), rects.data_ptr(), tiles_x, tiles_y, offsets.data_ptr(), ranks.data_ptr(),
            order.data_ptr(), ctypes.byref(visible),
        )
        if status == 0:
            return offsets, ranks, order[: visible.value]
    from tensorfield.cuda.rasterize import tile_rectangles

    lo, hi = tile_rectangles(means2d, radii, width, height, tile_size)
    return tile_lists_torch(lo, hi, depths, tiles_x, tiles_y)


class _Project(torch.autograd.Function):
    """One camera's EWA projection and SH colours: forward and backward in the native kernel."""

    @staticmethod
    def forward(ctx, means, scales, quats, covars, opacities, coeffs, static):
        viewmat, intr, width, height, near_plane, far_plane, eps2d, antialiased, sh_degree = static
        count = means.shape[0]
        channels = coeffs.shape[-1] if coeffs is not None else 0
        coeff_count = coeffs.shape[1] if coeffs is not None else 0
        means2d = torch.empty(count, 2)
        conics = torch.empty(count, 3)
        depths = torch.empty(count)
        opacity_out = torch.empty(count)
        radii = torch.empty(count, 2, dtype=torch.int32)
        colors = torch.empty(count, channels) if coeffs is not None else None
        status = native_library().tf_project(
            count, means.data_ptr(), _ptr(scales), _ptr(quats), _ptr(covars), opacities.data_ptr(), _ptr(coeffs),
            sh_degree if coeffs is not None else -1, coeff_count, channels, viewmat.data_ptr(), intr.data_ptr(), width, height,
            near_plane, far_plane, eps2d, int(antialiased),
            means2d.data_ptr(), conics.data_ptr(), depths.data_ptr(), opacity_out.data_ptr(), radii.data_ptr(), _ptr(colors),
        )
        if status != 0:
            raise RuntimeError("native projection refused its arguments (SH degree > 3 or more than 32 channels)")
        ctx.static = static
        ctx.has = (scales is not None, quats is not None, covars is not None, coeffs is not None)
        ctx.save_for_backward(means, scales, quats, covars, opacities, coeffs)
        ctx.mark_non_differentiable(radii)
        if colors is None:
            return means2d, conics, depths, opacity_out, radii
        return means2d, conics, depths, opacity_out, radii, colors

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, v_opacities, _v_radii, v_colors=None):
        means, scales, quats, covars, opacities, coeffs = ctx.saved_tensors
        viewmat, intr, width, height, _near, _far, eps2d, antialiased, sh_degree = ctx.static
        count = means.shape[0]
        channels = coeffs.shape[-1] if coeffs is not None else 0
        coeff_count = coeffs.shape[1] if coeffs is not None else 0
        v_means2d = _zeros_if_none(v_means2d, torch.empty(count, 2))
        v_conics = _zeros_if_none(v_conics, torch.empty(count, 3))
        v_depths = _zeros_if_none(v_depths, torch.empty(count))
        v_opacities = _zeros_if_none(v_opacities, torch.empty(count))
        if coeffs is not None:
            v_colors = _zeros_if_none(v_colors, torch.empty(count, channels))
        needs = ctx.needs_input_grad
        g_means = torch.empty_like(means) if needs[0] else None
        g_scales = torch.empty_like(scales) if scales is not None and needs[1] else None
        g_quats = torch.empty_like(quats) if quats is not None and needs[2] else None
        g_covars = torch.empty_like(covars) if covars is not None and needs[3] else None
        g_opacities = torch.empty_like(opacities) if needs[4] else None
        g_coeffs = torch.empty_like(coeffs) if coeffs is not None and needs[5] else None
        status = native_library().tf_project_backward(
            count, means.data_ptr(), _ptr(scales), _ptr(quats), _ptr(covars), opacities.data_ptr(), _ptr(coeffs),
            sh_degree if coeffs is not None else -1, coeff_count, channels, viewmat.data_ptr(), intr.data_ptr(), width, height,
            eps2d, int(antialiased), v_means2d.data_ptr(), v_conics.data_ptr(), v_depths.data_ptr(), v_opacities.data_ptr(),
            _ptr(v_colors if coeffs is not None else None), _ptr(g_means), _ptr(g_scales), _ptr(g_quats), _ptr(g_covars),
            _ptr(g_opacities), _ptr(g_coeffs),
        )
        if status != 0:
            raise RuntimeError("native projection backward refused its arguments")
        return g_means, g_scales, g_quats, g_covars, g_opacities, g_coeffs, None


def native_projection_usable(gaussians, viewmats: Tensor, Ks: Tensor) -> bool:
    """Whether :func:`project_native` can take these inputs (CPU float32, no camera gradients)."""
    tensors = [gaussians.means, gaussians.opacities, gaussians.colors, gaussians.scales, gaussians.quats, gaussians.covars]
    if any(t is not None and (t.device.type != "cpu" or t.dtype != torch.float32) for t in tensors):
        return False
    if viewmats.requires_grad or Ks.requires_grad:
        return False
    if gaussians.sh_degree is not None and (gaussians.sh_degree > 3 or gaussians.colors.dim() != 3 or gaussians.colors.shape[-1] > 32):
        return False
    if gaussians.covars is None and (gaussians.scales is None or gaussians.quats is None):
        return False
    return native_library() is not None


def project_native(gaussians, viewmats: Tensor, Ks: Tensor, width: int, height: int, *, near_plane: float = 0.01,
                   far_plane: float = 1e10, eps2d: float = 0.3, antialiased: bool = False):
    """:func:`tensorfield.cuda.rasterize.project` in the native kernel (same values and gradients).

    Check :func:`native_projection_usable` first; camera parameters get no gradients here.
    """
    from tensorfield.cuda.rasterize import Projected

    def prepared(tensor: Tensor | None) -> Tensor | None:
        return tensor.contiguous() if tensor is not None else None

    means, opacities = prepared(gaussians.means), prepared(gaussians.opacities)
    covars = prepared(gaussians.covars.reshape(-1, 9)) if gaussians.covars is not None else None
    scales = prepared(gaussians.scales) if covars is None else None
    quats = prepared(gaussians.quats) if covars is None else None
    coeffs = prepared(gaussians.colors) if gaussians.sh_degree is not None else None
    outputs = []
    for cam in range(viewmats.shape[0]):
        viewmat = viewmats[cam].detach().float().contiguous()
        K = Ks[cam].detach().float()
        intr = torch.stack([K[0, 0], K[1, 1], K[0, 2], K[1, 2]]).contiguous()
        static = (viewmat, intr, int(width), int(height), float(near_plane), float(far_plane), float(eps2d), bool(antialiased),
                  int(gaussians.sh_degree) if gaussians.sh_degree is not None else -1)
        outputs.append(_Project.apply(means, scales, quats, covars, opacities, coeffs, static))
    stack = [parts[0].unsqueeze(0) if len(parts) == 1 else torch.stack(parts) for parts in zip(*outputs)]
    means2d, conics, depths, opacity_out, radii = stack[:5]
    colors = stack[5] if coeffs is not None else gaussians.colors[None].expand(viewmats.shape[0], *gaussians.colors.shape)
    return Projected(means2d, conics, depths, opacity_out, radii, colors)


def tile_lists_torch(lo: Tensor, hi: Tensor, depths: Tensor, tiles_x: int, tiles_y: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`tile_lists` in vectorised torch (the fallback and the test reference)."""
    counts = ((hi - lo).clamp(min=0)).prod(-1)  # [N]
    seen = counts > 0
    order = torch.nonzero(seen).squeeze(1)
    order = order[torch.argsort(depths[order], stable=True)]
    rank_of = torch.full_like(counts, -1)
    rank_of[order] = torch.arange(order.numel())
    gaussians = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    if gaussians.numel() == 0:
        return torch.zeros(tiles_x * tiles_y + 1, dtype=torch.int64), gaussians.to(torch.int32), order
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(gaussians.numel()) - first[gaussians]
    width = (hi - lo)[gaussians, 0]
    tx = lo[gaussians, 0] + local % width
    ty = lo[gaussians, 1] + local // width
    tile = ty * tiles_x + tx
    ranks = rank_of[gaussians]
    ranks = ranks[torch.argsort(tile * counts.numel() + ranks)]
    offsets = torch.zeros(tiles_x * tiles_y + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.bincount(tile, minlength=tiles_x * tiles_y), 0)
    return offsets, ranks.to(torch.int32), order


def _zeros_if_none(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad.contiguous()


class _Composite(torch.autograd.Function):
    """One camera's compositing: forward and backward in the native kernel."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, depths, background, static):
        width, height, tile, tiles_x, tiles_y, offsets, ranks, order, radii = static
        channels = colors.shape[-1]
        rgb = torch.empty(height, width, channels)
        alpha = torch.empty(height, width)
        depth = torch.empty(height, width)
        last = torch.empty(height, width, dtype=torch.int64)
        status = native_library().tf_composite(
            width, height, tile, tiles_x, tiles_y, offsets.data_ptr(), ranks.data_ptr(), order.data_ptr(), order.numel(),
            radii.data_ptr(), means2d.data_ptr(), conics.data_ptr(), opacities.data_ptr(), colors.data_ptr(), channels,
            depths.data_ptr(), _ptr(background), rgb.data_ptr(), alpha.data_ptr(), depth.data_ptr(), last.data_ptr(),
        )
        if status != 0:
            raise RuntimeError("native rasteriser refused its arguments (tile larger than 32x32, more than 32 channels, or out of memory)")
        ctx.static = static
        ctx.has_background = background is not None
        ctx.save_for_backward(means2d, conics, opacities, colors, depths, background if background is not None else alpha, alpha, depth, last)
        return rgb, alpha, depth

    @staticmethod
    def backward(ctx, g_rgb, g_alpha, g_depth):
        means2d, conics, opacities, colors, depths, background, alpha, depth, last = ctx.saved_tensors
        background = background if ctx.has_background else None
        width, height, tile, tiles_x, tiles_y, offsets, ranks, order, radii = ctx.static
        g_rgb, g_alpha, g_depth = _zeros_if_none(g_rgb, alpha[..., None].expand(-1, -1, colors.shape[-1])), _zeros_if_none(g_alpha, alpha), _zeros_if_none(g_depth, depth)
        denom = alpha.clamp_min(1e-10)
        v_dnum = (g_depth / denom).contiguous()
        v_alpha = (g_alpha - torch.where(alpha > 1e-10, g_depth * depth / denom, torch.zeros_like(alpha))).contiguous()
        t_final = (1.0 - alpha).contiguous()
        threads = max(1, torch.get_num_threads())
        count, channels = means2d.shape[0], colors.shape[-1]
        grads = torch.zeros(count, 7 + channels)
        status = native_library().tf_composite_backward(
            width, height, tile, tiles_x, tiles_y, offsets.data_ptr(), ranks.data_ptr(), order.data_ptr(), order.numel(),
            radii.data_ptr(), means2d.data_ptr(), conics.data_ptr(), opacities.data_ptr(), colors.data_ptr(), channels,
            depths.data_ptr(), _ptr(background), t_final.data_ptr(), last.data_ptr(), g_rgb.data_ptr(), v_alpha.data_ptr(),
            v_dnum.data_ptr(), threads, grads.data_ptr(),
        )
        if status != 0:
            raise RuntimeError("native rasteriser backward refused its arguments (or ran out of memory)")
        g_background = (t_final[..., None] * g_rgb).sum((0, 1)) if background is not None else None
        return grads[:, 0:2], grads[:, 2:5], grads[:, 5], grads[:, 7:], grads[:, 6], g_background, None


def composite_native(projected, width: int, height: int, tile_size: int, background: Tensor | None):
    """Native compositing of :class:`~tensorfield.cuda.rasterize.Projected` (CPU float32), differentiable."""
    cams = projected.means2d.shape[0]
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    rgbs, alphas, depths = [], [], []
    for cam in range(cams):
        with torch.no_grad():
            offsets, ranks, order = tile_lists(projected.means2d[cam], projected.radii[cam], projected.depths[cam], width, height, tile_size)
        radii = projected.radii[cam].to(torch.int32).contiguous()
        static = (width, height, tile_size, tiles_x, tiles_y, offsets, ranks, order.contiguous(), radii)
        bg = background[cam].float().contiguous() if background is not None else None
        rgb, alpha, depth = _Composite.apply(
            projected.means2d[cam].float().contiguous(), projected.conics[cam].float().contiguous(),
            projected.opacities[cam].float().contiguous(), projected.colors[cam].float().contiguous(),
            projected.depths[cam].float().contiguous(), bg, static,
        )
        rgbs.append(rgb)
        alphas.append(alpha)
        depths.append(depth)
    if cams == 1:
        return rgbs[0][None], alphas[0][None], depths[0][None]
    return torch.stack(rgbs), torch.stack(alphas), torch.stack(depths)
