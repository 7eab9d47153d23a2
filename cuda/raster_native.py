"""Native CPU compositing for the Gaussian rasteriser (forward / inference only, for now).

The projection, culling, tile rectangles and the per-tile depth order are computed in torch
(vectorised, ``O(N + intersections)``); the compositing loop — for each 16x16 tile, its Gaussians
front to back against all its pixels, with gsplat's thresholds and early termination — is a small
C kernel, parallel over tiles with OpenMP, compiled on first use with the system compiler and
called through :mod:`ctypes` (like :mod:`tensorfield.fields.grid_kernels`). It matches the
``torch`` backend of :func:`tensorfield.cuda.rasterize.rasterize` to float32 rounding.

The backward pass is not native yet: while gradients are needed, ``rasterize`` uses the
``torch`` backend. ``TENSORFIELD_NATIVE=0`` (or no C compiler) disables this kernel.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>

#define MAX_TILE_PIXELS 1024
#define MAX_CHANNELS 32

/* For each tile (parallel), composite its Gaussians (ids[offsets[t] .. offsets[t+1]), already in
   front-to-back order) into its pixels, gsplat's rules:
   sigma = 0.5 (a dx^2 + c dy^2) + b dx dy, alpha = min(0.999, o exp(-sigma)),
   skip sigma < 0 or alpha < 1/255, stop before next T <= 1e-4.
   The per-pixel loop is branch-free (masks as floats) so the compiler vectorises it; a tile
   stops early once all its pixels are saturated (checked every 16 Gaussians). */
int tf_composite(int64_t width, int64_t height, int64_t tile, int64_t tiles_x, int64_t tiles_y,
                 const int64_t *offsets, const int64_t *ids, const int32_t *radii,
                 const float *means2d, const float *conics, const float *opacities,
                 const float *colors, int64_t channels, const float *depths,
                 const float *background, float *out_rgb, float *out_alpha, float *out_depth, int64_t *out_last) {
    if (tile * tile > MAX_TILE_PIXELS || channels > MAX_CHANNELS || channels < 1) return -1;
    int64_t ntiles = tiles_x * tiles_y;
    #pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < ntiles; ++t) {
        const int64_t ty = t / tiles_x, tx = t % tiles_x;
        const int64_t x0 = tx * tile, y0 = ty * tile;
        const int64_t x1 = x0 + tile < width ? x0 + tile : width;
        const int64_t y1 = y0 + tile < height ? y0 + tile : height;
        const int64_t w = x1 - x0, h = y1 - y0, n = w * h;
        float T[MAX_TILE_PIXELS], live[MAX_TILE_PIXELS], px[MAX_TILE_PIXELS], py[MAX_TILE_PIXELS];
        float dep[MAX_TILE_PIXELS], wgt[MAX_TILE_PIXELS];
        int64_t last[MAX_TILE_PIXELS];
        float rgb[MAX_CHANNELS][MAX_TILE_PIXELS];
        for (int64_t i = 0; i < n; ++i) {
            T[i] = 1.0f; live[i] = 1.0f; dep[i] = 0.0f; last[i] = offsets[t + 1];
            px[i] = (float)(x0 + i % w) + 0.5f; py[i] = (float)(y0 + i / w) + 0.5f;
        }
        for (int64_t ch = 0; ch < channels; ++ch)
            for (int64_t i = 0; i < n; ++i) rgb[ch][i] = 0.0f;
        const int64_t begin = offsets[t], end = offsets[t + 1];
        for (int64_t k = begin; k < end; ++k) {
            const int64_t g = ids[k];
            const float mx = means2d[2 * g], my = means2d[2 * g + 1];
            const float a = conics[3 * g], b = conics[3 * g + 1], c = conics[3 * g + 2];
            const float o = opacities[g], z = depths[g];
            const float *col = colors + g * channels;
            /* pixels outside the Gaussian's box (radii, one pixel of margin) have alpha < 1/255 */
            const float rx = (float)radii[2 * g] + 1.0f, ry = (float)radii[2 * g + 1] + 1.0f;
            int64_t bx0 = (int64_t)floorf(mx - rx) - x0, bx1 = (int64_t)ceilf(mx + rx) - x0;
            int64_t by0 = (int64_t)floorf(my - ry) - y0, by1 = (int64_t)ceilf(my + ry) - y0;
            if (bx0 < 0) bx0 = 0;
            if (by0 < 0) by0 = 0;
            if (bx1 > w) bx1 = w;
            if (by1 > h) by1 = h;
            for (int64_t yy = by0; yy < by1; ++yy) {
                const int64_t row = yy * w;
                #pragma omp simd
                for (int64_t xx = bx0; xx < bx1; ++xx) {
                    const int64_t i = row + xx;
                    const float dx = mx - px[i], dy = my - py[i];
                    const float sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
                    float alpha = o * expf(-sigma);
                    alpha = alpha < 0.999f ? alpha : 0.999f;
                    const float ok = (sigma >= 0.0f && alpha >= (1.0f / 255.0f)) ? live[i] : 0.0f;
                    const float next = T[i] * (1.0f - alpha);
                    const float stop = (next <= 1e-4f) ? ok : 0.0f;
                    const float use = ok - stop;
                    live[i] -= stop;
                    last[i] = stop > 0.0f ? k : last[i];
                    wgt[i] = use * alpha * T[i];
                    dep[i] += wgt[i] * z;
                    T[i] = use > 0.0f ? next : T[i];
                }
                for (int64_t ch = 0; ch < channels; ++ch) {
                    const float cv = col[ch];
                    float *restrict dst = rgb[ch] + row;
                    const float *restrict ww = wgt + row;
                    for (int64_t xx = bx0; xx < bx1; ++xx) dst[xx] += ww[xx] * cv;
                }
            }
            if (((k - begin) & 15) == 15) {
                float any = 0.0f;
                for (int64_t i = 0; i < n; ++i) any += live[i];
                if (any == 0.0f) break;
            }
        }
        for (int64_t i = 0; i < n; ++i) {
            const int64_t x = x0 + i % w, y = y0 + i / w, p = y * width + x;
            const float accum = 1.0f - T[i];
            for (int64_t ch = 0; ch < channels; ++ch)
                out_rgb[p * channels + ch] = rgb[ch][i] + (background ? T[i] * background[ch] : 0.0f);
            out_alpha[p] = accum;
            out_depth[p] = dep[i] / (accum > 1e-10f ? accum : 1e-10f);
            if (out_last) out_last[p] = last[i];
        }
    }
    return 0;
}

/* Per-tile Gaussian lists: walk the Gaussians in depth order (``order``) and append each to the
   tiles of its rectangle [lo, hi), so every list comes out front to back without sorting. */
int tf_tile_lists(int64_t count, const int64_t *order, const int64_t *lo, const int64_t *hi,
                  int64_t tiles_x, int64_t tiles_y, int64_t *offsets, int64_t *ids) {
    const int64_t ntiles = tiles_x * tiles_y;
    for (int64_t t = 0; t <= ntiles; ++t) offsets[t] = 0;
    for (int64_t g = 0; g < count; ++g)
        for (int64_t y = lo[2 * g + 1]; y < hi[2 * g + 1]; ++y)
            for (int64_t x = lo[2 * g]; x < hi[2 * g]; ++x) offsets[y * tiles_x + x + 1] += 1;
    for (int64_t t = 0; t < ntiles; ++t) offsets[t + 1] += offsets[t];
    int64_t *cursor = (int64_t *)malloc(sizeof(int64_t) * (ntiles > 0 ? ntiles : 1));
    if (!cursor) return -1;
    for (int64_t t = 0; t < ntiles; ++t) cursor[t] = offsets[t];
    for (int64_t r = 0; r < count; ++r) {
        const int64_t g = order[r];
        for (int64_t y = lo[2 * g + 1]; y < hi[2 * g + 1]; ++y)
            for (int64_t x = lo[2 * g]; x < hi[2 * g]; ++x) ids[cursor[y * tiles_x + x]++] = g;
    }
    free(cursor);
    return 0;
}

/* Backward of tf_composite (gsplat's back-to-front replay). Per pixel: T_final = 1 - alpha, the
   stop index ``last`` (Gaussians k >= last were not composited), and the upstream gradients of
   the colour (v_rgb), of alpha (v_alpha, including what flows through the depth normalisation)
   and of the un-normalised depth sum (v_dnum). Gradients are accumulated into this thread's
   slice of ``grads`` [threads, N, 7 + D]: (mean x, mean y, conic a, b, c, opacity, depth, colour).
   Tiles are split statically over threads, so the sums do not depend on scheduling. */
int tf_composite_backward(int64_t width, int64_t height, int64_t tile, int64_t tiles_x, int64_t tiles_y,
                          const int64_t *offsets, const int64_t *ids, const int32_t *radii,
                          const float *means2d, const float *conics, const float *opacities,
                          const float *colors, int64_t channels, const float *depths,
                          const float *background, const float *t_final, const int64_t *last_index,
                          const float *v_rgb, const float *v_alpha, const float *v_dnum,
                          int64_t nthreads, int64_t count, float *grads) {
    if (tile * tile > MAX_TILE_PIXELS || channels > MAX_CHANNELS || channels < 1) return -1;
    const int64_t ntiles = tiles_x * tiles_y, stride = 7 + channels;
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t t = 0; t < ntiles; ++t) {
        float *mine = grads + (int64_t)omp_get_thread_num() * count * stride;
        const int64_t ty = t / tiles_x, tx = t % tiles_x;
        const int64_t x0 = tx * tile, y0 = ty * tile;
        const int64_t x1 = x0 + tile < width ? x0 + tile : width;
        const int64_t y1 = y0 + tile < height ? y0 + tile : height;
        const int64_t w = x1 - x0, h = y1 - y0, n = w * h;
        float T[MAX_TILE_PIXELS], tf[MAX_TILE_PIXELS], px[MAX_TILE_PIXELS], py[MAX_TILE_PIXELS];
        float va[MAX_TILE_PIXELS], vd[MAX_TILE_PIXELS], bufz[MAX_TILE_PIXELS], vbg[MAX_TILE_PIXELS];
        int64_t last[MAX_TILE_PIXELS];
        float vr[MAX_CHANNELS][MAX_TILE_PIXELS], buf[MAX_CHANNELS][MAX_TILE_PIXELS];
        for (int64_t i = 0; i < n; ++i) {
            const int64_t p = (y0 + i / w) * width + (x0 + i % w);
            px[i] = (float)(x0 + i % w) + 0.5f; py[i] = (float)(y0 + i / w) + 0.5f;
            tf[i] = t_final[p]; T[i] = t_final[p]; last[i] = last_index[p];
            va[i] = v_alpha[p]; vd[i] = v_dnum[p]; bufz[i] = 0.0f; vbg[i] = 0.0f;
            for (int64_t ch = 0; ch < channels; ++ch) {
                vr[ch][i] = v_rgb[p * channels + ch];
                buf[ch][i] = 0.0f;
                if (background) vbg[i] += background[ch] * vr[ch][i];
            }
        }
        for (int64_t k = offsets[t + 1] - 1; k >= offsets[t]; --k) {
            const int64_t g = ids[k];
            const float mx = means2d[2 * g], my = means2d[2 * g + 1];
            const float a = conics[3 * g], b = conics[3 * g + 1], c = conics[3 * g + 2];
            const float o = opacities[g], z = depths[g];
            const float *col = colors + g * channels;
            const float rx = (float)radii[2 * g] + 1.0f, ry = (float)radii[2 * g + 1] + 1.0f;
            int64_t bx0 = (int64_t)floorf(mx - rx) - x0, bx1 = (int64_t)ceilf(mx + rx) - x0;
            int64_t by0 = (int64_t)floorf(my - ry) - y0, by1 = (int64_t)ceilf(my + ry) - y0;
            if (bx0 < 0) bx0 = 0;
            if (by0 < 0) by0 = 0;
            if (bx1 > w) bx1 = w;
            if (by1 > h) by1 = h;
            float gmx = 0, gmy = 0, ga = 0, gb = 0, gc = 0, go = 0, gz = 0;
            float gcol[MAX_CHANNELS];
            for (int64_t ch = 0; ch < channels; ++ch) gcol[ch] = 0.0f;
            for (int64_t yy = by0; yy < by1; ++yy) {
                for (int64_t xx = bx0; xx < bx1; ++xx) {
                    const int64_t i = yy * w + xx;
                    if (k >= last[i]) continue;
                    const float dx = mx - px[i], dy = my - py[i];
                    const float sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
                    if (sigma < 0.0f) continue;
                    const float e = expf(-sigma);
                    const float raw = o * e;
                    const float alpha = raw < 0.999f ? raw : 0.999f;
                    if (alpha < 1.0f / 255.0f) continue;
                    const float ra = 1.0f / (1.0f - alpha);
                    T[i] *= ra;
                    const float wgt = alpha * T[i];
                    float v = 0.0f;
                    for (int64_t ch = 0; ch < channels; ++ch) {
                        gcol[ch] += wgt * vr[ch][i];
                        v += (col[ch] * T[i] - buf[ch][i] * ra) * vr[ch][i];
                        buf[ch][i] += wgt * col[ch];
                    }
                    gz += wgt * vd[i];
                    v += (z * T[i] - bufz[i] * ra) * vd[i];
                    bufz[i] += wgt * z;
                    v += tf[i] * ra * (va[i] - vbg[i]);
                    if (raw < 0.999f) {
                        const float vs = -alpha * v;
                        go += e * v;
                        ga += 0.5f * dx * dx * vs;
                        gb += dx * dy * vs;
                        gc += 0.5f * dy * dy * vs;
                        gmx += (a * dx + b * dy) * vs;
                        gmy += (c * dy + b * dx) * vs;
                    }
                }
            }
            float *dst = mine + g * stride;
            dst[0] += gmx; dst[1] += gmy; dst[2] += ga; dst[3] += gb; dst[4] += gc; dst[5] += go; dst[6] += gz;
            for (int64_t ch = 0; ch < channels; ++ch) dst[7 + ch] += gcol[ch];
        }
    }
    return 0;
}
"""

_lock = threading.Lock()
_library = None
_failed = False


def _compile():
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    root = os.environ.get("TENSORFIELD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tensorfield")
    directory = Path(root) / "kernels"
    try:
        with open("/proc/cpuinfo") as handle:
            host = "".join([line for line in handle if line.startswith(("model name", "flags"))][:2])
    except OSError:
        host = ""
    base = ["-O3", "-std=c99", "-fPIC", "-shared", "-fopenmp", "-ffast-math"]
    for flags in (base + ["-march=native"], base):
        digest = hashlib.sha256("\0".join([_SOURCE, compiler, *flags, platform.machine(), host]).encode()).hexdigest()[:16]
        target = directory / f"raster_{digest}.so"
        try:
            if not target.exists():
                directory.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=directory) as tmp:
                    source = Path(tmp) / "raster.c"
                    source.write_text(_SOURCE)
                    built = Path(tmp) / "raster.so"
                    subprocess.run([compiler, *flags, str(source), "-o", str(built), "-lm"], check=True, capture_output=True, timeout=120)
                    os.replace(built, target)
            library = ctypes.CDLL(str(target))
        except (OSError, subprocess.SubprocessError):
            continue
        library.tf_composite.restype = ctypes.c_int
        library.tf_composite.argtypes = [ctypes.c_int64] * 5 + [ctypes.c_void_p] * 6 + [ctypes.c_void_p, ctypes.c_int64] + [ctypes.c_void_p] * 6
        library.tf_tile_lists.restype = ctypes.c_int
        library.tf_tile_lists.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
        library.tf_composite_backward.restype = ctypes.c_int
        library.tf_composite_backward.argtypes = (
            [ctypes.c_int64] * 5 + [ctypes.c_void_p] * 6 + [ctypes.c_void_p, ctypes.c_int64]
            + [ctypes.c_void_p] * 7 + [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        )
        return library
    return None


def native_library():
    """The compiled compositing kernel, or ``None`` (no compiler, ``TENSORFIELD_NATIVE=0``)."""
    global _library, _failed
    if _library is not None or _failed:
        return _library
    with _lock:
        if _library is None and not _failed:
            library = _compile() if os.environ.get("TENSORFIELD_NATIVE", "1") != "0" else None
            _library, _failed = library, library is None
    return _library


def tile_lists(lo: Tensor, hi: Tensor, depths: Tensor, tiles_x: int, tiles_y: int) -> tuple[Tensor, Tensor]:
    """``(offsets [T + 1], ids [M])``: per tile (row-major) the Gaussians whose rectangle covers it, front to back.

    Gaussians with an empty rectangle (culled) appear nowhere. Ties in depth keep index order.
    Native (one pass in depth order, no sort) when the kernel library is available.
    """
    library = native_library()
    if library is not None:
        lo64, hi64 = lo.to(torch.int64).contiguous(), hi.to(torch.int64).contiguous()
        total = int(((hi64 - lo64).clamp(min=0)).prod(-1).sum())
        order = torch.argsort(depths, stable=True).contiguous()
        offsets = torch.empty(tiles_x * tiles_y + 1, dtype=torch.int64)
        ids = torch.empty(total, dtype=torch.int64)
        if library.tf_tile_lists(lo64.shape[0], order.data_ptr(), lo64.data_ptr(), hi64.data_ptr(), tiles_x, tiles_y, offsets.data_ptr(), ids.data_ptr()) == 0:
            return offsets, ids
    return tile_lists_torch(lo, hi, depths, tiles_x, tiles_y)


def tile_lists_torch(lo: Tensor, hi: Tensor, depths: Tensor, tiles_x: int, tiles_y: int) -> tuple[Tensor, Tensor]:
    """:func:`tile_lists` in vectorised torch (the fallback and the test reference)."""
    counts = ((hi - lo).clamp(min=0)).prod(-1)  # [N]
    gaussians = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    if gaussians.numel() == 0:
        return torch.zeros(tiles_x * tiles_y + 1, dtype=torch.int64), gaussians
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(gaussians.numel()) - first[gaussians]
    width = (hi - lo)[gaussians, 0]
    tx = lo[gaussians, 0] + local % width
    ty = lo[gaussians, 1] + local // width
    tile = ty * tiles_x + tx
    rank = torch.empty_like(counts)
    rank[torch.argsort(depths, stable=True)] = torch.arange(counts.numel())
    order = torch.argsort(tile * counts.numel() + rank[gaussians])
    ids = gaussians[order]
    offsets = torch.zeros(tiles_x * tiles_y + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.bincount(tile, minlength=tiles_x * tiles_y), 0)
    return offsets, ids


def _zeros_if_none(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad.contiguous()


class _Composite(torch.autograd.Function):
    """One camera's compositing: forward and backward in the native kernel."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, depths, background, static):  # noqa: D102
        width, height, tile, tiles_x, tiles_y, offsets, ids, radii = static
        channels = colors.shape[-1]
        rgb = torch.empty(height, width, channels)
        alpha = torch.empty(height, width)
        depth = torch.empty(height, width)
        last = torch.empty(height, width, dtype=torch.int64)
        status = native_library().tf_composite(
            width, height, tile, tiles_x, tiles_y, offsets.data_ptr(), ids.data_ptr(), radii.data_ptr(),
            means2d.data_ptr(), conics.data_ptr(), opacities.data_ptr(), colors.data_ptr(), channels,
            depths.data_ptr(), background.data_ptr() if background is not None else None,
            rgb.data_ptr(), alpha.data_ptr(), depth.data_ptr(), last.data_ptr(),
        )
        if status != 0:
            raise RuntimeError("native rasteriser refused its arguments (tile larger than 32x32 or more than 32 channels)")
        ctx.static = static
        ctx.has_background = background is not None
        ctx.save_for_backward(means2d, conics, opacities, colors, depths, background if background is not None else alpha, alpha, depth, last)
        return rgb, alpha, depth

    @staticmethod
    def backward(ctx, g_rgb, g_alpha, g_depth):  # noqa: D102
        means2d, conics, opacities, colors, depths, background, alpha, depth, last = ctx.saved_tensors
        background = background if ctx.has_background else None
        width, height, tile, tiles_x, tiles_y, offsets, ids, radii = ctx.static
        g_rgb, g_alpha, g_depth = _zeros_if_none(g_rgb, alpha[..., None].expand(-1, -1, colors.shape[-1])), _zeros_if_none(g_alpha, alpha), _zeros_if_none(g_depth, depth)
        denom = alpha.clamp_min(1e-10)
        v_dnum = (g_depth / denom).contiguous()
        v_alpha = (g_alpha - torch.where(alpha > 1e-10, g_depth * depth / denom, torch.zeros_like(alpha))).contiguous()
        t_final = (1.0 - alpha).contiguous()
        threads = max(1, torch.get_num_threads())
        count, channels = means2d.shape[0], colors.shape[-1]
        grads = torch.zeros(threads, count, 7 + channels)
        status = native_library().tf_composite_backward(
            width, height, tile, tiles_x, tiles_y, offsets.data_ptr(), ids.data_ptr(), radii.data_ptr(),
            means2d.data_ptr(), conics.data_ptr(), opacities.data_ptr(), colors.data_ptr(), channels,
            depths.data_ptr(), background.data_ptr() if background is not None else None,
            t_final.data_ptr(), last.data_ptr(), g_rgb.data_ptr(), v_alpha.data_ptr(), v_dnum.data_ptr(),
            threads, count, grads.data_ptr(),
        )
        if status != 0:
            raise RuntimeError("native rasteriser backward refused its arguments")
        g = grads.sum(0)
        g_background = (t_final[..., None] * g_rgb).sum((0, 1)) if background is not None else None
        return g[:, 0:2], g[:, 2:5], g[:, 5], g[:, 7:], g[:, 6], g_background, None


def composite_native(projected, width: int, height: int, tile_size: int, background: Tensor | None):
    """Native compositing of :class:`~tensorfield.cuda.rasterize.Projected` (CPU float32), differentiable."""
    from tensorfield.cuda.rasterize import tile_rectangles

    cams = projected.means2d.shape[0]
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    with torch.no_grad():
        lo, hi = tile_rectangles(projected.means2d, projected.radii, width, height, tile_size)
    rgbs, alphas, depths = [], [], []
    for cam in range(cams):
        with torch.no_grad():
            offsets, ids = tile_lists(lo[cam], hi[cam], projected.depths[cam].detach().float(), tiles_x, tiles_y)
        radii = projected.radii[cam].to(torch.int32).contiguous()
        static = (width, height, tile_size, tiles_x, tiles_y, offsets, ids, radii)
        bg = background[cam].float().contiguous() if background is not None else None
        rgb, alpha, depth = _Composite.apply(
            projected.means2d[cam].float().contiguous(), projected.conics[cam].float().contiguous(),
            projected.opacities[cam].float().contiguous(), projected.colors[cam].float().contiguous(),
            projected.depths[cam].float().contiguous(), bg, static,
        )
        rgbs.append(rgb)
        alphas.append(alpha)
        depths.append(depth)
    return torch.stack(rgbs), torch.stack(alphas), torch.stack(depths)
