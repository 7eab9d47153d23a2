"""Build-on-first-use C kernels: the one place that compiles and loads them.

The native CPU kernels of tensorfield (Gaussian projection and compositing in
:mod:`tensorfield.cuda.raster_native`, factor-grid features in
:mod:`tensorfield.cuda.grid_kernels`, ...) are C99 sources in ``cuda/csrc/`` (package data, read
through :mod:`importlib.resources` by :func:`kernel_source`; a header there, e.g. the trilinear
lookup ``trilinear.h`` shared by the factor-grid and ray-marching libraries, is spliced in where a
``.c`` file includes it). On first use :class:`NativeLibrary` compiles one with the system C compiler (``$CC``, ``cc``, ``gcc`` or
``clang``) into a shared library cached under ``$TENSORFIELD_CACHE/kernels`` (default
``~/.cache/tensorfield/kernels``), keyed by the source, compiler, flags and CPU, and loads it
through :mod:`ctypes`: no torch headers, no extension build, about a second per library.

``-march=native`` is tried first and plain flags second; a library that cannot be built or
loaded is ``None`` and callers fall back to their pure-torch paths. ``TENSORFIELD_NATIVE=0``
disables every native kernel. Nothing is compiled at import time.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from importlib import resources
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


#: The C sources' folder inside the package (``tensorfield/cuda/csrc``).
SOURCE_PACKAGE, SOURCE_FOLDER = "tensorfield.cuda", "csrc"


def kernel_source(filename: str) -> str:
    """The text of ``cuda/csrc/<filename>`` as the compiler gets it.

    Each line ``#include "<header>"`` naming a file of ``csrc`` is replaced by that header's text
    (recursively), so every library compiles from one self-contained file (one copy of each shared
    routine in the tree, no include path to pass) and its cache key covers the headers: editing
    any of them rebuilds. System includes (``#include <...>``) stay as they are.
    """
    text = resources.files(SOURCE_PACKAGE).joinpath(SOURCE_FOLDER, filename).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith('#include "') and stripped.endswith('"'):
            lines[i] = kernel_source(stripped[len('#include "') : -1])
    return "".join(lines)


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
    """A C source of ``cuda/csrc`` compiled and loaded once per process, on first :meth:`get`.

    Args:
        name: file-name stem of the cached library.
        filename: the C99 source in ``cuda/csrc`` (read, with its headers, on first use).
        flags: extra compiler flags (``-fopenmp``, ``-ffast-math``, ...).
        declare: sets ``restype``/``argtypes`` on the loaded library.
    """

    def __init__(self, name: str, filename: str, flags: Sequence[str], declare: Callable[[ctypes.CDLL], None]) -> None:
        self.name, self.filename, self.flags, self.declare = name, filename, list(flags), declare
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

    @functools.cached_property
    def source(self) -> str:
        """The text compiled (:func:`kernel_source` of :attr:`filename`)."""
        return kernel_source(self.filename)


def box_affine(box):
    """``[6]`` float32 ``(lo, 2 / (hi - lo))`` of a ``[2, 3]`` box (computed in float64), the
    normalisation ``x = (p - lo) * 2 / (hi - lo) - 1`` of ``dense_normalise`` in
    ``csrc/trilinear.h``."""
    import torch

    lo, hi = box[0].double().cpu(), box[1].double().cpu()
    return torch.cat([lo, 2.0 / (hi - lo)]).float().contiguous()
