"""Build-on-first-use C kernels: the one place that compiles and loads them.

The native CPU kernels of tensorfield (Gaussian projection and compositing in
:mod:`tensorfield.cuda.raster_native`, factor-grid features in
:mod:`tensorfield.fields.grid_kernels`) are C99 sources kept in Python strings. On first use
:class:`NativeLibrary` compiles one with the system C compiler (``$CC``, ``cc``, ``gcc`` or
``clang``) into a shared library cached under ``$TENSORFIELD_CACHE/kernels`` (default
``~/.cache/tensorfield/kernels``), keyed by the source, compiler, flags and CPU, and loads it
through :mod:`ctypes`: no torch headers, no extension build, about a second per library.

``-march=native`` is tried first and plain flags second; a library that cannot be built or
loaded is ``None`` and callers fall back to their pure-torch paths. ``TENSORFIELD_NATIVE=0``
disables every native kernel. Nothing is compiled at import time.
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
from collections.abc import Callable, Sequence
from pathlib import Path


def cache_dir() -> Path:
    """Where compiled kernels are cached."""
    root = os.environ.get("TENSORFIELD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tensorfield")
    return Path(root) / "kernels"


def host_key() -> str:
    """CPU identity for the cache key: ``-march=native`` binaries only run where they were built."""
    try:
        with open("/proc/cpuinfo") as handle:
            lines = [line for line in handle if line.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    return platform.machine() + "".join(lines)


def enabled() -> bool:
    """False when ``TENSORFIELD_NATIVE=0``."""
    return os.environ.get("TENSORFIELD_NATIVE", "1") != "0"


def compile_library(name: str, source: str, flags: Sequence[str]) -> ctypes.CDLL | None:
    """Compile ``source`` (cached) with ``flags`` + ``-march=native``, else ``flags``; ``None`` on failure."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None
    directory = cache_dir()
    base = ["-O3", "-std=c99", "-fPIC", "-shared", *flags]
    for attempt in (base + ["-march=native"], base):
        digest = hashlib.sha256("\0".join([source, compiler, *attempt, host_key()]).encode()).hexdigest()[:16]
        target = directory / f"{name}_{digest}.so"
        try:
            if not target.exists():
                directory.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=directory) as tmp:
                    path = Path(tmp) / f"{name}.c"
                    path.write_text(source)
                    built = Path(tmp) / f"{name}.so"
                    subprocess.run([compiler, *attempt, str(path), "-o", str(built), "-lm"], check=True, capture_output=True, timeout=180)
                    os.replace(built, target)  # atomic: concurrent builders race harmlessly
            return ctypes.CDLL(str(target))
        except (OSError, subprocess.SubprocessError):
            continue
    return None


class NativeLibrary:
    """A C source compiled and loaded once per process, on first :meth:`get`.

    Args:
        name: file-name stem of the cached library.
        source: the C99 source.
        flags: extra compiler flags (``-fopenmp``, ``-ffast-math``, ...).
        declare: sets ``restype``/``argtypes`` on the loaded library.
    """

    def __init__(self, name: str, source: str, flags: Sequence[str], declare: Callable[[ctypes.CDLL], None]) -> None:
        self.name, self.source, self.flags, self.declare = name, source, list(flags), declare
        self._lock = threading.Lock()
        self._library: ctypes.CDLL | None = None
        self._tried = False

    def get(self) -> ctypes.CDLL | None:
        """The library, or ``None`` (no compiler, failed build, ``TENSORFIELD_NATIVE=0``)."""
        if self._tried:
            return self._library
        with self._lock:
            if not self._tried:
                library = compile_library(self.name, self.source, self.flags) if enabled() else None
                if library is not None:
                    try:
                        self.declare(library)
                    except AttributeError:  # a stale or foreign library without our symbols
                        library = None
                self._library, self._tried = library, True
        return self._library


# Trilinear interpolation of a dense channel-last grid [Z, Y, X, C] in the factor grids'
# convention (align_corners=True, zero padding), shared by the factor-grid library (the render
# cache's lookups, tensorfield.fields.grid_kernels) and the ray marcher's fused inference march
# (tensorfield.cuda.raymarch_native), so both read a density grid with the same arithmetic.
# Needs <math.h> and <stdint.h>.
TRILINEAR_SOURCE = r"""
/* align_corners=True corners of one axis: vertices i0, i1 (clamped into range) with weights
   w0, w1, zero for vertices outside [0, size) and for non-finite coordinates. */
static inline void axis_corners(float coord, int64_t size, int64_t *i0, int64_t *i1, float *w0, float *w1) {
    float p = (coord + 1.0f) * (0.5f * (float)(size - 1));
    if (!(p > -2.0f && p < (float)size + 1.0f)) { *i0 = *i1 = 0; *w0 = *w1 = 0.0f; return; }
    float f0 = floorf(p), frac = p - f0;
    int64_t a = (int64_t)f0, b = a + 1;
    *w0 = (a >= 0 && a < size) ? 1.0f - frac : 0.0f;
    *w1 = (b >= 0 && b < size) ? frac : 0.0f;
    *i0 = a < 0 ? 0 : (a >= size ? size - 1 : a);
    *i1 = b < 0 ? 0 : (b >= size ? size - 1 : b);
}

/* the four (z, y) rows of a sample's cell: row r = (a, b) starts at grid + base[r] * C, and the
   two x corners are at offsets i0 * C and i1 * C from it */
typedef struct { int64_t base[4], i0, i1; float w[4], wi0, wi1; } cell_t;

static inline void dense_cell(const float *x, int64_t X, int64_t Y, int64_t Z, cell_t *cell) {
    int64_t k[2], l[2];
    float wk[2], wl[2];
    axis_corners(x[0], X, &cell->i0, &cell->i1, &cell->wi0, &cell->wi1);
    axis_corners(x[1], Y, &k[0], &k[1], &wk[0], &wk[1]);
    axis_corners(x[2], Z, &l[0], &l[1], &wl[0], &wl[1]);
    for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b) {
            cell->base[2 * a + b] = (l[a] * Y + k[b]) * X;
            cell->w[2 * a + b] = wl[a] * wk[b];
        }
}

/* World point p -> normalised x = (p - box[a]) * box[3 + a] - 1 (box NULL: p is normalised). */
static inline void dense_normalise(const float *p, const float *box, float *x) {
    if (!box) { x[0] = p[0]; x[1] = p[1]; x[2] = p[2]; return; }
    for (int a = 0; a < 3; ++a) x[a] = (p[a] - box[a]) * box[3 + a] - 1.0f;
}

/* One channel (C == 1) at normalised x, optionally softplus(value + shift) (threshold 20, as torch). */
static inline float dense_scalar(const float *grid, int64_t X, int64_t Y, int64_t Z, const float *x,
                                 int softplus, float shift) {
    cell_t cell;
    dense_cell(x, X, Y, Z, &cell);
    float acc = 0.0f;
    for (int r = 0; r < 4; ++r) {
        const float *row = grid + cell.base[r];
        acc += cell.w[r] * (cell.wi0 * row[cell.i0] + cell.wi1 * row[cell.i1]);
    }
    if (softplus) {
        acc += shift;
        acc = acc > 20.0f ? acc : log1pf(expf(acc));
    }
    return acc;
}
"""


def box_affine(box):
    """``[6]`` float32 ``(lo, 2 / (hi - lo))`` of a ``[2, 3]`` box (computed in float64), the
    normalisation ``x = (p - lo) * 2 / (hi - lo) - 1`` of :data:`TRILINEAR_SOURCE`'s
    ``dense_normalise``."""
    import torch

    lo, hi = box[0].double().cpu(), box[1].double().cpu()
    return torch.cat([lo, 2.0 / (hi - lo)]).float().contiguous()
