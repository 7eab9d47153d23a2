"""Frames for structure from motion: decode videos, drop blurry frames, import image folders.

Video (one camera): the video is split into ``ceil(frames / blur_keep)`` equal windows of
consecutive frames and the sharpest frame of each window is kept (sharpness = variance of the
Laplacian of the grey image, the usual blur measure); of those, the ``frames`` whose sharpness is
highest *relative to the median of their neighbours* are kept, so a uniformly soft stretch of
video is not emptied, only its worst frames go. Frames are decoded in one sequential pass and only
the current window's best frame is held in memory.

Several videos (a rig of fixed, synchronised cameras): every video is sampled at the same
``frames`` evenly spaced timestamps (no blur selection, which would break the synchrony).

Image folders: the images (sorted by name; ``frames`` of them evenly spaced when given) are copied.

Every path writes ``frame_XXXXX.png`` (downscaled by an integer ``downscale`` and then to at most
``max_size`` pixels on the long side) and returns :class:`FrameInfo` records.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError, one_line
from .parsing import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mts")


class CaptureError(DatasetError):
    """A capture that cannot be processed (unreadable video, no features, SfM failure)."""


@dataclass
class FrameInfo:
    """One written frame.

    Attributes:
        name: file name relative to the images folder (``cam00/frame_00003.png`` for rigs).
        camera: camera index (the video it came from; 0 for single videos and image folders).
        source: the video or image file it came from.
        index: frame index in the video (position in the folder for images).
        seconds: video timestamp in seconds (``nan`` for images).
        sharpness: variance of the Laplacian of the grey image at decode size (``nan`` if unknown).
    """

    name: str
    camera: int
    source: str
    index: int
    seconds: float = math.nan
    sharpness: float = math.nan

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def sharpness(image: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image ``[H, W, 3]`` uint8 (in [0, 1])."""
    grey = image[..., :3].astype(np.float32).mean(-1) / 255.0
    laplacian = (
        grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * grey[1:-1, 1:-1]
    )
    return float(laplacian.var())


def relative_sharpness(values: np.ndarray, neighbours: int = 3) -> np.ndarray:
    """``values[i] / median(values[i - n : i + n + 1])``: sharpness compared with nearby frames."""
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    for i in range(len(values)):
        local = np.median(values[max(0, i - neighbours) : i + neighbours + 1])
        out[i] = values[i] / local if local > 0 else 1.0
    return out


def keep_sharpest(values: np.ndarray, count: int, neighbours: int = 3) -> np.ndarray:
    """Indices (sorted) of the ``count`` frames with the highest :func:`relative_sharpness`."""
    if count >= len(values):
        return np.arange(len(values))
    order = np.argsort(-relative_sharpness(values, neighbours), kind="stable")
    return np.sort(order[:count])


def _iter_video(path: Path, root: Path | None) -> tuple[dict, Iterator[np.ndarray]]:
    """The metadata and a frame iterator of a video (imageio's ffmpeg plugin), errors as one line."""
    import imageio.v3 as iio

    if not path.is_file():
        raise CaptureError(path, "no such video file", root=root)
    try:
        meta = iio.immeta(path, plugin="FFMPEG")
        frames = iio.imiter(path, plugin="FFMPEG")
    except Exception as error:  # imageio/ffmpeg raise OSError, RuntimeError, IndexError, ...
        raise CaptureError(path, f"unreadable video ({one_line(error)[:200]})", root=root) from None
    return meta, _guarded(frames, path, root)


def _guarded(frames: Iterator[np.ndarray], path: Path, root: Path | None) -> Iterator[np.ndarray]:
    try:
        yield from frames
    except Exception as error:  # a truncated or corrupt stream fails mid-decode
        raise CaptureError(path, f"video is corrupt ({one_line(error)[:200]})", root=root) from None


def count_video_frames(path: Path, root: Path | None = None) -> tuple[int, float]:
    """``(frames, fps)`` of a video, counting frames exactly (ffmpeg's container count can lie).

    Raises:
        CaptureError: unreadable video or a video without frames.
    """
    import imageio_ffmpeg

    meta, _ = _iter_video(path, root)
    try:
        count, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except Exception as error:
        raise CaptureError(path, f"unreadable video ({one_line(error)[:200]})", root=root) from None
    if count <= 0:
        raise CaptureError(path, "video has no frames", root=root)
    return int(count), float(meta.get("fps") or 30.0)


def resize_frame(image: np.ndarray, downscale: int = 1, max_size: int = 0) -> np.ndarray:
    """Box-filter ``image [H, W, 3]`` by ``downscale``, then Lanczos-shrink to ``max_size``."""
    from PIL import Image

    picture = Image.fromarray(image[..., :3])
    if downscale > 1:
        picture = picture.reduce(downscale)
    if max_size and max(picture.size) > max_size:
        factor = max_size / max(picture.size)
        size = (max(1, round(picture.width * factor)), max(1, round(picture.height * factor)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(picture)


def _write(path: Path, image: np.ndarray) -> None:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)


def decode_video(
    video: Path,
    images_dir: Path,
    frames: int,
    blur_keep: float = 0.9,
    downscale: int = 1,
    max_size: int = 0,
    progress: Callable[[int], None] | None = None,
    root: Path | None = None,
) -> list[FrameInfo]:
    """Sample ``frames`` sharp frames of one video into ``images_dir/frame_XXXXX.png``.

    Args:
        video: the video file.
        images_dir: output folder (created).
        frames: frames wanted (fewer when the video is shorter).
        blur_keep: in (0, 1]: ``ceil(frames / blur_keep)`` sharpest-in-window candidates are
            decoded and the ``frames`` relatively sharpest kept (1 = window selection only).
        downscale, max_size: see :func:`resize_frame`.
        progress: called with the number of video frames read since the last call.
        root: shortens paths in messages.

    Raises:
        CaptureError: unreadable or corrupt video, no frames.
    """
    total, fps = count_video_frames(video, root)
    windows = min(total, math.ceil(frames / blur_keep))
    _, stream = _iter_video(video, root)
    best: list[tuple[float, int, np.ndarray]] = []  # per finished window: sharpness, index, frame
    current: tuple[float, int, np.ndarray] | None = None
    window_of = lambda i: i * windows // total  # noqa: E731
    for i, image in enumerate(stream):
        if i >= total:
            break
        if current is not None and window_of(i) != window_of(current[1]):
            best.append(current)
            current = None
        score = sharpness(image)
        if current is None or score > current[0]:
            current = (score, i, image)
        if progress is not None:
            progress(1)
    if current is not None:
        best.append(current)
    if not best:
        raise CaptureError(video, "video has no frames", root=root)
    kept = keep_sharpest(np.array([b[0] for b in best]), min(frames, len(best)))
    infos = []
    for k, position in enumerate(kept):
        score, index, image = best[position]
        name = f"frame_{k:05d}.png"
        _write(images_dir / name, resize_frame(image, downscale, max_size))
        infos.append(FrameInfo(name, 0, video.name, index, index / fps, score))
    return infos


def decode_synchronised(
    videos: list[Path],
    images_dir: Path,
    frames: int,
    downscale: int = 1,
    max_size: int = 0,
    progress: Callable[[int], None] | None = None,
    root: Path | None = None,
) -> list[FrameInfo]:
    """Sample every video at the same ``frames`` timestamps into ``images_dir/<camera>/``.

    Timestamps are evenly spaced over the shortest video's duration; camera ``k``'s folder is
    ``camKK`` (``frame_JJJJJ.png`` for timestamp ``j``).

    Raises:
        CaptureError: any unreadable or corrupt video.
    """
    counts = [count_video_frames(v, root) for v in videos]
    duration = min(count / fps for count, fps in counts)
    steps = min(frames, min(count for count, _ in counts))
    seconds = np.linspace(0.0, duration, steps, endpoint=False) if steps > 1 else np.zeros(1)
    infos = []
    for camera, (video, (count, fps)) in enumerate(zip(videos, counts)):
        wanted = {min(count - 1, int(round(s * fps))): j for j, s in enumerate(seconds)}
        _, stream = _iter_video(video, root)
        for i, image in enumerate(stream):
            if progress is not None:
                progress(1)
            if i in wanted:
                name = f"cam{camera:02d}/frame_{wanted[i]:05d}.png"
                _write(images_dir / name, resize_frame(image, downscale, max_size))
                infos.append(FrameInfo(name, camera, video.name, i, i / fps, sharpness(image)))
            if i >= max(wanted):
                break
        if sum(info.camera == camera for info in infos) < len(wanted):
            raise CaptureError(video, f"decoded fewer than the {len(wanted)} frames asked for", root=root)
    return infos


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_images(folder: Path, root: Path | None = None) -> list[Path]:
    """Image files directly in ``folder``, in natural name order.

    Raises:
        CaptureError: the folder holds no image.
    """
    found = sorted((p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES and p.is_file()), key=_natural_key)
    if not found:
        raise CaptureError(folder, f"no images ({', '.join(sorted({s.lower() for s in IMAGE_SUFFIXES}))}) in this folder", root=root)
    return found


def import_images(
    sources: list[Path],
    images_dir: Path,
    frames: int = 0,
    downscale: int = 1,
    max_size: int = 0,
    progress: Callable[[int], None] | None = None,
    root: Path | None = None,
) -> list[FrameInfo]:
    """Copy (and shrink) ``sources`` into ``images_dir/frame_XXXXX.png``; ``frames > 0`` keeps
    that many evenly spaced ones.

    Raises:
        CaptureError: an unreadable image.
    """
    import imageio.v3 as iio

    chosen = list(range(len(sources)))
    if 0 < frames < len(sources):
        chosen = sorted({int(round(x)) for x in np.linspace(0, len(sources) - 1, frames)})
    infos = []
    for k, position in enumerate(chosen):
        source = sources[position]
        try:
            image = np.asarray(iio.imread(source))
        except Exception as error:
            raise CaptureError(source, f"unreadable image ({one_line(error)[:200]})", root=root) from None
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.dtype != np.uint8:  # 16-bit PNG/TIFF: keep the top 8 bits
            image = (image.astype(np.float64) / np.iinfo(image.dtype).max * 255.0).round().astype(np.uint8)
        name = f"frame_{k:05d}.png"
        _write(images_dir / name, resize_frame(image, downscale, max_size))
        infos.append(FrameInfo(name, 0, source.name, position, math.nan, sharpness(image)))
        if progress is not None:
            progress(1)
    return infos
