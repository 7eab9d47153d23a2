"""Decode, undistort, resize and cache images: the pixel pipeline shared by every format.

Each file goes through ``decode -> float in [0, 1] -> premultiply alpha -> undistort (OpenCV
lenses only) -> resize by 1/downscale``; the result (:class:`PreparedImage`, colour premultiplied
by alpha so that resampling never bleeds the colour of transparent pixels) is what the caches hold.
Compositing on a background happens after the caches (it is cheap, and the background is not part
of the cache key).

Two caches avoid decoding twice:

* an in-process LRU (:class:`ImageCache`, bounded in bytes) keyed by
  ``(resolved path, mtime, file size, downscale, lens)``, shared by every load in the process;
* an optional on-disk ``.npz`` per split under ``$TENSORFIELD_CACHE`` (default
  ``~/.cache/tensorfield``), keyed by a hash of the same fields for every image of the split.
  It stores exactly the float32 arrays the pipeline produces (so a cached load is bit-identical to
  an uncached one), is written atomically (temporary file + ``os.replace``), and a corrupt or
  mismatched file is deleted and rebuilt. Nothing evicts it; delete the folder to reclaim space.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat as stat_module
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F

from .distortion import undistort_image
from .errors import DatasetError, one_line
from .parsing import pinhole_intrinsics

#: bump when the pipeline's output changes, so stale disk caches are ignored
PIPELINE_VERSION = 1


@dataclass(frozen=True)
class ImageRequest:
    """One image to prepare.

    Attributes:
        path: image file.
        distortion: OpenCV coefficients ``(k1, k2, k3, k4, p1, p2)`` to remove, or ``None``.
        camera: ``(fov_x, fx, fy, cx, cy)`` as written in the metadata (``None`` = not given),
            needed only to undistort (the full-resolution ``K`` depends on the image size).
    """

    path: Path
    distortion: tuple[float, ...] | None = None
    camera: tuple[float | None, ...] = (None, None, None, None, None)


@dataclass
class PreparedImage:
    """A decoded image after undistortion and resizing.

    Attributes:
        pixels: ``[h, w, 3]`` (no alpha) or ``[h, w, 4]`` float32; colour premultiplied by alpha.
        full_width, full_height: size of the image file.
    """

    pixels: np.ndarray
    full_width: int
    full_height: int

    @property
    def nbytes(self) -> int:
        return self.pixels.nbytes


# ---------------------------------------------------------------------------------- in-process cache
class ImageCache:
    """Thread-safe LRU of :class:`PreparedImage`, bounded by total bytes.

    Args:
        max_bytes: evict least-recently-used entries above this many bytes of pixels.
    """

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, PreparedImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> PreparedImage | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple, entry: PreparedImage) -> None:
        with self._lock:
            if key in self._entries:
                self._bytes -= self._entries.pop(key).nbytes
            if entry.nbytes > self.max_bytes:
                return
            self._entries[key] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)


#: the process-wide cache used by :func:`load_images` unless another one is passed
DEFAULT_CACHE = ImageCache()


def clear_image_cache() -> None:
    """Empty the process-wide in-memory image cache."""
    DEFAULT_CACHE.clear()


def cache_dir() -> Path:
    """Folder of the on-disk cache: ``$TENSORFIELD_CACHE`` or ``~/.cache/tensorfield``."""
    return Path(os.environ.get("TENSORFIELD_CACHE") or Path.home() / ".cache" / "tensorfield")


# ---------------------------------------------------------------------------------- pipeline
def resized_size(width: int, height: int, downscale: float) -> tuple[int, int]:
    """``(w, h)`` after dividing the resolution by ``downscale``, rounded as ``Cameras.scaled``."""
    factor = 1.0 / downscale
    return round(width * factor), round(height * factor)


def resize(pixels: np.ndarray, width: int, height: int, clamp: bool = True) -> np.ndarray:
    """Resize ``[H, W, C]`` float32 to ``[height, width, C]`` with an anti-aliasing filter.

    Integer factors that divide the size use exact box averaging (``mode="area"``); others use
    bilinear with ``antialias=True`` (a triangle filter widened to the scale factor), whose
    overshoot is clamped back to [0, 1] when ``clamp``.
    """
    in_height, in_width = pixels.shape[:2]
    if (in_width, in_height) == (width, height):
        return pixels
    factor = in_width // width
    if in_width == factor * width and in_height == factor * height:
        # box filter over factor x factor blocks (what F.interpolate's "area" mode computes;
        # numpy's reshape-mean avoids torch's thread pool on a busy CPU)
        blocks = pixels.reshape(height, factor, width, factor, pixels.shape[2])
        return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).unsqueeze(0)
    out = F.interpolate(
        tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )
    out = out[0].permute(1, 2, 0)
    if clamp:
        out = out.clamp(0.0, 1.0)
    return out.contiguous().numpy()


def decode(path: Path, root: Path | None = None) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` or ``[H, W, 4]`` float32 in [0, 1] (straight alpha).

    Grey images are expanded to RGB; 8- and 16-bit integers are scaled by their maximum.

    Raises:
        DatasetError: ``<file>: missing image`` / ``unreadable image (...)`` / unsupported layout.
    """
    if not path.is_file():
        raise DatasetError(path, "missing image", root=root)
    try:
        array = np.asarray(iio.imread(path))
    except Exception as error:  # noqa: BLE001 - imageio raises many types (OSError, ValueError, RuntimeError...)
        reason = one_line(error).split(". ")[0]  # imageio appends long plugin advice
        reason = f"{type(error).__name__}: {reason[:120]}{'...' if len(reason) > 120 else ''}"
        raise DatasetError(path, f"unreadable image ({reason})", root=root) from None
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4) or min(array.shape[:2]) == 0:
        raise DatasetError(
            path,
            f"unsupported image layout {tuple(array.shape)} (need HxW, HxWx3 or HxWx4)",
            root=root,
        )
    if array.dtype == np.uint8:
        pixels = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        pixels = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        pixels = np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0)
    else:
        raise DatasetError(path, f"unsupported pixel type {array.dtype}", root=root)
    if pixels.shape[2] in (1, 2):  # grey (+ alpha)
        grey = np.repeat(pixels[..., :1], 3, axis=2)
        pixels = np.concatenate([grey, pixels[..., 1:]], axis=2)
    return np.ascontiguousarray(pixels)


def prepare(request: ImageRequest, downscale: float, root: Path | None = None) -> PreparedImage:
    """Run the whole pipeline on one file (no caching)."""
    pixels = decode(request.path, root)
    full_height, full_width = pixels.shape[:2]
    if pixels.shape[2] == 4:
        pixels[..., :3] *= pixels[..., 3:]
    if request.distortion is not None:
        fx, fy, cx, cy = pinhole_intrinsics(full_width, full_height, *request.camera)
        undistorted, inside = undistort_image(
            torch.from_numpy(pixels), fx, fy, cx, cy, request.distortion
        )
        pixels = undistorted.numpy()
        if pixels.shape[2] == 4:  # no data outside the photo: transparent there
            pixels[~inside.numpy()] = 0.0
    width, height = resized_size(full_width, full_height, downscale)
    if width < 1 or height < 1:
        raise DatasetError(
            request.path,
            f"downscale {downscale:g} leaves no pixels of a {full_width}x{full_height} image",
            root=root,
        )
    pixels = resize(pixels.astype(np.float32, copy=False), width, height)
    return PreparedImage(np.ascontiguousarray(pixels, dtype=np.float32), full_width, full_height)


def _file_key(
    request: ImageRequest, downscale: float, real_dirs: dict[str, str], root: Path | None
) -> tuple:
    """Cache key of a request; the folder's real path is memoised (resolving costs a stat per
    path component, which adds up on network file systems)."""
    folder, name = os.path.split(os.path.abspath(request.path))
    if folder not in real_dirs:
        real_dirs[folder] = os.path.realpath(folder)
    path = os.path.join(real_dirs[folder], name)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise DatasetError(request.path, "missing image", root=root) from None
    if not stat_module.S_ISREG(stat.st_mode):
        raise DatasetError(request.path, "missing image (not a file)", root=root)
    lens = (request.distortion, request.camera) if request.distortion is not None else None
    return (path, stat.st_mtime_ns, stat.st_size, float(downscale), lens)


# ---------------------------------------------------------------------------------- disk cache
def _disk_cache_file(keys: list[tuple]) -> Path:
    digest = hashlib.sha256(json.dumps([PIPELINE_VERSION, keys], default=str).encode()).hexdigest()
    return cache_dir() / f"images-{digest[:40]}.npz"


def _read_disk_cache(file: Path, count: int) -> list[PreparedImage] | None:
    """Entries of a cache file, or ``None`` (and the file removed) if it is missing or corrupt."""
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as data:
            sizes = data["full_sizes"]
            if sizes.shape != (count, 2):
                raise ValueError("wrong entry count")
            entries = []
            for i in range(count):
                pixels = data[f"pixels_{i}"]
                if pixels.dtype != np.float32 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
                    raise ValueError("bad entry")
                entries.append(PreparedImage(pixels, int(sizes[i, 0]), int(sizes[i, 1])))
        return entries
    except Exception:  # noqa: BLE001 - truncated zip, bad header, missing keys...: rebuild
        try:
            file.unlink()
        except OSError:
            pass
        return None


def _write_disk_cache(file: Path, entries: list[PreparedImage]) -> None:
    """Write atomically; failures (read-only home, full disk) only lose the cache."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"pixels_{i}": entry.pixels for i, entry in enumerate(entries)}
        arrays["full_sizes"] = np.asarray(
            [[e.full_width, e.full_height] for e in entries], dtype=np.int64
        )
        descriptor, temporary = tempfile.mkstemp(dir=file.parent, prefix=file.stem, suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                np.savez(handle, **arrays)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, file)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:
        pass


# ---------------------------------------------------------------------------------- public entry
def load_images(
    requests: list[ImageRequest],
    *,
    downscale: float = 1.0,
    root: Path | None = None,
    disk_cache: bool = False,
    cache: ImageCache | None = None,
) -> list[PreparedImage]:
    """Prepare a list of images (one split), using the in-process and optional disk caches.

    Args:
        requests: the images, in order.
        downscale: divide the resolution by this (>= 1).
        root: scene root, used to shorten paths in error messages.
        disk_cache: also read/write one ``.npz`` for the whole list under :func:`cache_dir`.
        cache: in-process cache (default: the process-wide one).

    Returns:
        one :class:`PreparedImage` per request.
    """
    cache = DEFAULT_CACHE if cache is None else cache
    real_dirs: dict[str, str] = {}
    keys = [_file_key(request, downscale, real_dirs, root) for request in requests]
    entries: list[PreparedImage | None] = [cache.get(key) for key in keys]
    disk_file = _disk_cache_file(keys) if disk_cache else None
    if all(entry is not None for entry in entries):
        if disk_file is not None and not disk_file.is_file():
            _write_disk_cache(disk_file, entries)  # type: ignore[arg-type]
        return entries  # type: ignore[return-value]
    if disk_file is not None:
        from_disk = _read_disk_cache(disk_file, len(requests))
        if from_disk is not None:
            for key, entry in zip(keys, from_disk):
                cache.put(key, entry)
            return from_disk
    for i, (request, key) in enumerate(zip(requests, keys)):
        if entries[i] is None:
            entries[i] = cache.get(key)  # an earlier request in this list may be the same file
        if entries[i] is None:
            entries[i] = prepare(request, downscale, root)
            cache.put(key, entries[i])
    if disk_file is not None:
        _write_disk_cache(disk_file, entries)  # type: ignore[arg-type]
    return entries  # type: ignore[return-value]
