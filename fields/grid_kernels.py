"""Native CPU kernels for factor-grid features: fused interpolation, products and their adjoints.

TensoRF spends its CPU time interpolating factor planes and lines at ~10^5 samples per step and
scattering the gradients back. In pure torch that is a chain of ``grid_sample``, ``mul``, ``cat``
and ``index_add_`` calls, each a full pass over memory, and the scatter costs 40-70 ns per row.
The C kernels below fuse one VM mode (plane x line, per component) or one CP product (three lines)
into a single pass, forward and backward:

* forward, threads split the samples: ``out[s, off + k] = P_k(s) L_k(s)`` (or, with ``reduce``,
  ``out[s] += sum_k P_k(s) L_k(s)``, the density feature);
* backward, threads split the components ``k`` (so no two threads write the same float and the
  result does not depend on the thread count): with ``g = grad[s, off + k]`` (or ``grad[s]``),
  ``dP_k[corner] += w_corner g L_k(s)`` and ``dL_k[corner] += w_corner g P_k(s)``, re-interpolating
  ``P`` and ``L`` instead of storing them.

Convention: ``align_corners=True``, zero padding, as :mod:`tensorfield.fields.factor_grids`
(whose pure-torch path is the fallback and the reference these kernels are tested against).

The source is compiled on first use with the system C compiler into a small shared library
(cached under ``$TENSORFIELD_CACHE/kernels``, default ``~/.cache/tensorfield/kernels``) and called
through :mod:`ctypes`: no torch headers, no extension build, about a second to compile. Every
entry point returns ``None``/``False`` when the kernels cannot be used (no compiler, failed
build, ``TENSORFIELD_NATIVE=0``, tensors that are not contiguous float32 on the CPU); nothing is
compiled or probed at import time.
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
from typing import Sequence

import torch
from torch import Tensor

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>

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

typedef struct {
    const float *xyz; int64_t samples;
    int kind;                 /* 0: VM mode (plane + line), 1: CP (three lines) */
    int axis[3];              /* VM: plane u (width), plane v (height), line; CP: line axes */
    const float *table[3];    /* VM: plane, line; CP: three lines */
    int64_t size[4];          /* VM: H, W, L; CP: L0, L1, L2 */
    int64_t channels;
    float *out; int64_t ld, off; int reduce;
    const float *grad; float *dtable[3];
    int64_t begin, end;       /* samples (forward) or channels (backward) */
} job_t;

typedef struct { int64_t row[6]; float w[6]; } corners_t;

/* VM: rows 0-3 plane corners, 4-5 line corners. CP: rows (2m, 2m+1) for line m. */
static inline void corners(const job_t *j, int64_t s, corners_t *c) {
    const float *x = j->xyz + 3 * s;
    if (j->kind == 0) {
        int64_t u0, u1, v0, v1; float wu0, wu1, wv0, wv1;
        axis_corners(x[j->axis[0]], j->size[1], &u0, &u1, &wu0, &wu1);
        axis_corners(x[j->axis[1]], j->size[0], &v0, &v1, &wv0, &wv1);
        const int64_t W = j->size[1];
        c->row[0] = v0 * W + u0; c->w[0] = wv0 * wu0;
        c->row[1] = v0 * W + u1; c->w[1] = wv0 * wu1;
        c->row[2] = v1 * W + u0; c->w[2] = wv1 * wu0;
        c->row[3] = v1 * W + u1; c->w[3] = wv1 * wu1;
        axis_corners(x[j->axis[2]], j->size[2], &c->row[4], &c->row[5], &c->w[4], &c->w[5]);
    } else {
        for (int m = 0; m < 3; ++m)
            axis_corners(x[j->axis[m]], j->size[m], &c->row[2 * m], &c->row[2 * m + 1], &c->w[2 * m], &c->w[2 * m + 1]);
    }
}

/* Prefetch the table rows of sample s (and, for the backward pass, the gradient rows): the
   samples of a ray are close but rows still miss the cache, and the loops are latency-bound. */
#define AHEAD 4
static inline void prefetch_rows(const job_t *j, int64_t s, int backward, int64_t k0, int64_t k1) {
    if (s >= j->samples) return;
    corners_t c;
    corners(j, s, &c);
    const int64_t C = j->channels;
    const int rows = 6;
    for (int r = 0; r < rows; ++r) {
        const int t = j->kind == 0 ? (r < 4 ? 0 : 1) : r / 2;
        const float *row = j->table[t] + c.row[r] * C;
        for (int64_t k = k0; k < k1; k += 16) {
            __builtin_prefetch(row + k, 0, 1);
            if (backward) __builtin_prefetch(j->dtable[t] + c.row[r] * C + k, 1, 1);
        }
    }
}

#define BLOCK 64  /* components per block: local buffers stay in L1, loops vectorise */

static void *forward_job(void *arg) {
    const job_t *j = (const job_t *)arg;
    const int64_t C = j->channels;
    corners_t c;
    float buf[BLOCK];
    for (int64_t s = j->begin; s < j->end; ++s) {
        if (s + AHEAD < j->end) prefetch_rows(j, s + AHEAD, 0, 0, C);
        corners(j, s, &c);
        float acc = 0.0f;
        for (int64_t kb = 0; kb < C; kb += BLOCK) {
            const int64_t n = C - kb < BLOCK ? C - kb : BLOCK;
            float *restrict v = buf;
            if (j->kind == 0) {
                const float *restrict p0 = j->table[0] + c.row[0] * C + kb, *restrict p1 = j->table[0] + c.row[1] * C + kb;
                const float *restrict p2 = j->table[0] + c.row[2] * C + kb, *restrict p3 = j->table[0] + c.row[3] * C + kb;
                const float *restrict l0 = j->table[1] + c.row[4] * C + kb, *restrict l1 = j->table[1] + c.row[5] * C + kb;
                for (int64_t k = 0; k < n; ++k)
                    v[k] = (c.w[0] * p0[k] + c.w[1] * p1[k] + c.w[2] * p2[k] + c.w[3] * p3[k]) * (c.w[4] * l0[k] + c.w[5] * l1[k]);
            } else {
                const float *restrict a0 = j->table[0] + c.row[0] * C + kb, *restrict a1 = j->table[0] + c.row[1] * C + kb;
                const float *restrict b0 = j->table[1] + c.row[2] * C + kb, *restrict b1 = j->table[1] + c.row[3] * C + kb;
                const float *restrict d0 = j->table[2] + c.row[4] * C + kb, *restrict d1 = j->table[2] + c.row[5] * C + kb;
                for (int64_t k = 0; k < n; ++k)
                    v[k] = (c.w[0] * a0[k] + c.w[1] * a1[k]) * (c.w[2] * b0[k] + c.w[3] * b1[k]) * (c.w[4] * d0[k] + c.w[5] * d1[k]);
            }
            if (j->reduce) {
                for (int64_t k = 0; k < n; ++k) acc += v[k];
            } else {
                float *restrict o = j->out + s * j->ld + j->off + kb;
                for (int64_t k = 0; k < n; ++k) o[k] = v[k];
            }
        }
        if (j->reduce) j->out[s] += acc;
    }
    return 0;
}

/* dst[k] += w * src[k] for one corner row (skipped when the corner has no weight, which also
   keeps clamped duplicate rows from being touched). */
static inline void axpy(float *restrict dst, const float *restrict src, float w, int64_t n) {
    if (w == 0.0f) return;
    for (int64_t k = 0; k < n; ++k) dst[k] += w * src[k];
}

static void *backward_job(void *arg) {
    const job_t *j = (const job_t *)arg;
    const int64_t C = j->channels;
    corners_t c;
    float ga[BLOCK], gb[BLOCK], gc[BLOCK];
    for (int64_t s = 0; s < j->samples; ++s) {
        const float *g = j->reduce ? j->grad + s : j->grad + s * j->ld + j->off;
        prefetch_rows(j, s + AHEAD, 1, j->begin, j->end);
        if (j->reduce && *g == 0.0f) continue;
        corners(j, s, &c);
        for (int64_t kb = j->begin; kb < j->end; kb += BLOCK) {
            const int64_t n = j->end - kb < BLOCK ? j->end - kb : BLOCK;
            const float g0 = *g;
            const float *restrict gk = g + kb;
            if (j->kind == 0) {
                const float *restrict p0 = j->table[0] + c.row[0] * C + kb, *restrict p1 = j->table[0] + c.row[1] * C + kb;
                const float *restrict p2 = j->table[0] + c.row[2] * C + kb, *restrict p3 = j->table[0] + c.row[3] * C + kb;
                const float *restrict l0 = j->table[1] + c.row[4] * C + kb, *restrict l1 = j->table[1] + c.row[5] * C + kb;
                float *restrict gp = ga, *restrict gl = gb;
                for (int64_t k = 0; k < n; ++k) {
                    const float gg = j->reduce ? g0 : gk[k];
                    gp[k] = gg * (c.w[4] * l0[k] + c.w[5] * l1[k]);
                    gl[k] = gg * (c.w[0] * p0[k] + c.w[1] * p1[k] + c.w[2] * p2[k] + c.w[3] * p3[k]);
                }
                for (int r = 0; r < 4; ++r) axpy(j->dtable[0] + c.row[r] * C + kb, gp, c.w[r], n);
                axpy(j->dtable[1] + c.row[4] * C + kb, gl, c.w[4], n);
                axpy(j->dtable[1] + c.row[5] * C + kb, gl, c.w[5], n);
            } else {
                const float *restrict a0 = j->table[0] + c.row[0] * C + kb, *restrict a1 = j->table[0] + c.row[1] * C + kb;
                const float *restrict b0 = j->table[1] + c.row[2] * C + kb, *restrict b1 = j->table[1] + c.row[3] * C + kb;
                const float *restrict d0 = j->table[2] + c.row[4] * C + kb, *restrict d1 = j->table[2] + c.row[5] * C + kb;
                float *restrict x = ga, *restrict y = gb, *restrict z = gc;
                for (int64_t k = 0; k < n; ++k) {
                    const float gg = j->reduce ? g0 : gk[k];
                    const float va = c.w[0] * a0[k] + c.w[1] * a1[k];
                    const float vb = c.w[2] * b0[k] + c.w[3] * b1[k];
                    const float vd = c.w[4] * d0[k] + c.w[5] * d1[k];
                    x[k] = gg * vb * vd;
                    y[k] = gg * va * vd;
                    z[k] = gg * va * vb;
                }
                const float *bufs[3] = {x, y, z};
                for (int m = 0; m < 3; ++m) {
                    axpy(j->dtable[m] + c.row[2 * m] * C + kb, bufs[m], c.w[2 * m], n);
                    axpy(j->dtable[m] + c.row[2 * m + 1] * C + kb, bufs[m], c.w[2 * m + 1], n);
                }
            }
        }
    }
    return 0;
}

/* Runs `job` on `threads` threads, splitting [0, total) into contiguous ranges. */
static int run(job_t *job, int64_t total, int threads, int backward) {
    if (threads < 1) threads = 1;
    if (threads > 32) threads = 32;
    if (threads > total) threads = total > 0 ? (int)total : 1;
    job_t jobs[32];
    pthread_t ids[32];
    void *(*fn)(void *) = backward ? backward_job : forward_job;
    for (int t = 0; t < threads; ++t) {
        jobs[t] = *job;
        jobs[t].begin = total * t / threads;
        jobs[t].end = total * (t + 1) / threads;
    }
    int started = 1;
    for (int t = 1; t < threads; ++t, ++started)
        if (pthread_create(&ids[t], 0, fn, &jobs[t]) != 0) break;
    fn(&jobs[0]);
    for (int t = 1; t < started; ++t) pthread_join(ids[t], 0);
    for (int t = started; t < threads; ++t) fn(&jobs[t]);  /* thread creation failed: run inline */
    return 0;
}

int tf_features(int kind, const float *xyz, int64_t samples, const int *axis, const float **tables,
                const int64_t *sizes, int64_t channels, float *out, int64_t ld, int64_t off, int reduce,
                int threads) {
    job_t job;
    memset(&job, 0, sizeof job);
    job.xyz = xyz; job.samples = samples; job.kind = kind; job.channels = channels;
    for (int m = 0; m < 3; ++m) { job.axis[m] = axis[m]; job.table[m] = tables[m]; job.size[m] = sizes[m]; }
    job.out = out; job.ld = ld; job.off = off; job.reduce = reduce;
    return run(&job, samples, threads, 0);
}

int tf_features_backward(int kind, const float *xyz, int64_t samples, const int *axis, const float **tables,
                         const int64_t *sizes, int64_t channels, const float *grad, int64_t ld, int64_t off,
                         int reduce, float **dtables, int threads) {
    job_t job;
    memset(&job, 0, sizeof job);
    job.xyz = xyz; job.samples = samples; job.kind = kind; job.channels = channels;
    for (int m = 0; m < 3; ++m) {
        job.axis[m] = axis[m]; job.table[m] = tables[m]; job.size[m] = sizes[m]; job.dtable[m] = dtables[m];
    }
    job.grad = grad; job.ld = ld; job.off = off; job.reduce = reduce;
    return run(&job, channels, threads, 1);
}
"""

VM, CP = 0, 1

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failed = False


def _cache_dir() -> Path:
    root = os.environ.get("TENSORFIELD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tensorfield")
    return Path(root) / "kernels"


def _host_key() -> str:
    """CPU identity for the cache key: ``-march=native`` binaries only run where they were built."""
    try:
        with open("/proc/cpuinfo") as handle:
            lines = [line for line in handle if line.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    return platform.machine() + "".join(lines)


def _compile() -> ctypes.CDLL | None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None
    directory = _cache_dir()
    # -O3 vectorises the per-component loops; no -ffast-math, so results stay IEEE.
    base = ["-O3", "-std=c99", "-fPIC", "-shared", "-pthread"]
    for flags in (base + ["-march=native"], base):
        digest = hashlib.sha256("\0".join([_SOURCE, compiler, *flags, _host_key()]).encode()).hexdigest()[:16]
        target = directory / f"factor_features_{digest}.so"
        try:
            if not target.exists():
                directory.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=directory) as tmp:
                    source = Path(tmp) / "features.c"
                    source.write_text(_SOURCE)
                    built = Path(tmp) / "features.so"
                    command = [compiler, *flags, str(source), "-o", str(built), "-lm"]
                    subprocess.run(command, check=True, capture_output=True, timeout=120)
                    os.replace(built, target)  # atomic: concurrent builders race harmlessly
            library = ctypes.CDLL(str(target))
            break
        except (OSError, subprocess.SubprocessError):
            continue
    else:
        return None
    pointers = ctypes.POINTER(ctypes.c_void_p)
    library.tf_features.restype = ctypes.c_int
    library.tf_features.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.POINTER(ctypes.c_int), pointers,
        ctypes.POINTER(ctypes.c_int64), ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
        ctypes.c_int, ctypes.c_int,
    ]
    library.tf_features_backward.restype = ctypes.c_int
    library.tf_features_backward.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.POINTER(ctypes.c_int), pointers,
        ctypes.POINTER(ctypes.c_int64), ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
        ctypes.c_int, pointers, ctypes.c_int,
    ]
    return library


def native_library() -> ctypes.CDLL | None:
    """The compiled kernel library, or ``None`` if unavailable (built once per process)."""
    global _library, _failed
    if _library is not None or _failed:
        return _library
    with _lock:
        if _library is None and not _failed:
            library = None
            if os.environ.get("TENSORFIELD_NATIVE", "1") != "0":
                try:
                    library = _compile()
                except (OSError, subprocess.SubprocessError):
                    library = None
            _library, _failed = library, library is None
    return _library


def usable(*tensors: Tensor) -> bool:
    """Whether the kernels can take these tensors (contiguous float32 CPU) and are available."""
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors):
        return False
    return native_library() is not None


def _threads(work: int) -> int:
    # below ~16k samples a thread costs more than it saves
    return max(1, min(torch.get_num_threads(), 32, work // 16384 + 1))


def _arrays(axis: Sequence[int], tables: Sequence[Tensor], sizes: Sequence[int]):
    axis_arr = (ctypes.c_int * 3)(*axis)
    table_arr = (ctypes.c_void_p * 3)(*[t.data_ptr() for t in tables], *([0] * (3 - len(tables))))
    size_arr = (ctypes.c_int64 * 4)(*sizes, *([0] * (4 - len(sizes))))
    return axis_arr, table_arr, size_arr


def features_forward(
    kind: int, xyz: Tensor, axis: Sequence[int], tables: Sequence[Tensor], sizes: Sequence[int],
    out: Tensor, offset: int, reduce: bool,
) -> None:
    """Write one VM mode's / the CP products into ``out`` (see module docstring).

    Args:
        kind: :data:`VM` (tables = plane ``[H, W, C]``, line ``[L, C]``; axis = plane u, plane v,
            line; sizes = H, W, L) or :data:`CP` (three lines ``[L_m, C]``, their axes and lengths).
        xyz: ``[S, 3]`` normalised positions.
        out: ``[S, D]`` (written at columns ``offset:offset + C``) or ``[S]`` when ``reduce``
            (accumulated into).
    """
    library = native_library()
    channels = tables[0].shape[-1]
    axis_arr, table_arr, size_arr = _arrays(axis, tables, sizes)
    ld = 1 if reduce else out.shape[-1]
    status = library.tf_features(
        kind, xyz.data_ptr(), xyz.shape[0], axis_arr, table_arr, size_arr, channels,
        out.data_ptr(), ld, offset, int(reduce), _threads(xyz.shape[0]),
    )
    if status != 0:
        raise RuntimeError("native factor-grid kernel failed")


def features_backward(
    kind: int, xyz: Tensor, axis: Sequence[int], tables: Sequence[Tensor], sizes: Sequence[int],
    grad: Tensor, offset: int, reduce: bool,
) -> list[Tensor]:
    """Gradients of :func:`features_forward` w.r.t. ``tables`` for the output gradient ``grad``."""
    library = native_library()
    channels = tables[0].shape[-1]
    grads = [torch.zeros_like(t) for t in tables]
    axis_arr, table_arr, size_arr = _arrays(axis, tables, sizes)
    grad_arr = (ctypes.c_void_p * 3)(*[g.data_ptr() for g in grads], *([0] * (3 - len(grads))))
    ld = 1 if reduce else grad.shape[-1]
    status = library.tf_features_backward(
        kind, xyz.data_ptr(), xyz.shape[0], axis_arr, table_arr, size_arr, channels,
        grad.data_ptr(), ld, offset, int(reduce), grad_arr, max(1, min(torch.get_num_threads(), channels)),
    )
    if status != 0:
        raise RuntimeError("native factor-grid kernel failed")
    return grads
