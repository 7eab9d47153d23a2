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
                 const float *background, float *out_rgb, float *out_alpha, float *out_depth) {
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
        float rgb[MAX_CHANNELS][MAX_TILE_PIXELS];
        for (int64_t i = 0; i < n; ++i) {
            T[i] = 1.0f; live[i] = 1.0f; dep[i] = 0.0f;
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
        library.tf_composite.argtypes = [ctypes.c_int64] * 5 + [ctypes.c_void_p] * 6 + [ctypes.c_void_p, ctypes.c_int64] + [ctypes.c_void_p] * 5
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
    """
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


@torch.no_grad()
def composite_native(projected, width: int, height: int, tile_size: int, background: Tensor | None):
    """Native forward compositing of :class:`~tensorfield.cuda.rasterize.Projected` (CPU float32)."""
    from tensorfield.cuda.rasterize import tile_rectangles

    library = native_library()
    cams = projected.means2d.shape[0]
    channels = projected.colors.shape[-1]
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    lo, hi = tile_rectangles(projected.means2d, projected.radii, width, height, tile_size)
    rgb = torch.empty(cams, height, width, channels)
    alpha = torch.empty(cams, height, width)
    depth = torch.empty(cams, height, width)
    for cam in range(cams):
        offsets, ids = tile_lists(lo[cam], hi[cam], projected.depths[cam].float(), tiles_x, tiles_y)
        means2d = projected.means2d[cam].float().contiguous()
        conics = projected.conics[cam].float().contiguous()
        opacities = projected.opacities[cam].float().contiguous()
        colors = projected.colors[cam].float().contiguous()
        depths = projected.depths[cam].float().contiguous()
        radii = projected.radii[cam].to(torch.int32).contiguous()
        bg = background[cam].float().contiguous() if background is not None else None
        status = library.tf_composite(
            width, height, tile_size, tiles_x, tiles_y, offsets.data_ptr(), ids.data_ptr(), radii.data_ptr(),
            means2d.data_ptr(), conics.data_ptr(), opacities.data_ptr(), colors.data_ptr(), channels,
            depths.data_ptr(), bg.data_ptr() if bg is not None else None,
            rgb[cam].data_ptr(), alpha[cam].data_ptr(), depth[cam].data_ptr(),
        )
        if status != 0:
            raise RuntimeError("native rasteriser refused its arguments (tile larger than 32x32 or more than 32 channels)")
    return rgb, alpha, depth
