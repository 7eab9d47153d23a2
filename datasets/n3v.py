"""Neural 3D Video (N3V / DyNeRF) layout: ``poses_bounds.npy`` plus one video per camera.

A folder with ``poses_bounds.npy`` and ``cam00.mp4``, ``cam01.mp4``, ... (Li et al., "Neural 3D
Video Synthesis", CVPR 2022; the layout 4DGS trains on). Row ``i`` of ``poses_bounds.npy`` belongs
to the ``i``-th video in camera-number order (LLFF writes the rows sorted by image name).

**poses_bounds.npy** (LLFF, ``[N, 17]`` float): per camera the first 15 values are a ``3x5``
matrix, row-major, ``[R | c | hwf]``: the camera-to-world rotation columns in LLFF's
**(down, right, back)** axis order, the camera centre ``c``, and ``(H, W, focal)`` in pixels of the
images COLMAP saw; the last two values are the near and far bounds, the 0.1 / 99.9 percentiles of
the z-depths of the SfM points that camera sees.

**Pose conversion.** LLFF keeps COLMAP's world frame and only reorders the camera axes
(COLMAP/OpenCV camera: x right, y down, z forward), so with
``P = [[0, 1, 0], [1, 0, 0], [0, 0, -1]]`` (which is its own inverse)::

    R_opencv = R_llff @ P      i.e. (right, down, forward) = (col 1, col 0, -col 2)
    R_llff   = R_opencv @ P

and the centre is unchanged (:func:`llff_to_opencv`, :func:`opencv_to_llff`). Intrinsics:
``fx = fy = focal * video_width / W`` (the videos may be stored at another resolution than the
one COLMAP saw; the aspect ratio must agree within 1%), principal point at the image centre.

**Frames and times.** Videos are decoded with imageio's ffmpeg plugin (imageio-ffmpeg). All videos
must have the same size and frame count. Frames are selected by ``time_range`` (seconds, both
ends included, frame ``k`` at ``k / fps``), then every ``frame_stride``-th, then at most
``max_frames``; the selected frames' times are normalised to [0, 1] (the first selected frame is
0, the last 1, a single frame 0), so seconds = ``(first + t (last - first)) / fps``.

**Splits.** ``test``: the held-out cameras (``cam00`` by default, the N3V convention); ``train``:
every other camera; no ``val``. Each split holds all selected frames of its cameras, camera-major
(camera 1 frames 0..F-1, then camera 2, ...). ``SceneSplit.image_paths`` are virtual paths
``<root>/camXX.mp4/camXX_<frame>`` (frame = index in the video).

**Bounds.** ``aabb`` is the axis-aligned box of every camera's view frustum cut at its near and far
bounds (the 8 corners per camera). Since LLFF's bounds are percentiles of the depths of the SfM
points each camera sees, the box holds all but the outlying SfM points (forward-facing captures
with a distant background get a deep box). ``near`` is the smallest near bound (a point at
z-depth ``z`` is at ray distance >= ``z``); ``far`` is the largest far bound times the ray length
through the image corner at unit z-depth, ``sqrt(1 + (W / 2f)^2 + (H / 2f)^2)``, so that rays
reach the far plane everywhere in the image.

**Caching.** Decoded (and downscaled) frames go into the shared in-process image cache, one entry
per frame keyed by the video's path, mtime and size, the downscale and the frame index, so loading
a scene twice decodes it once; ``disk_cache=True`` also keeps one ``.npz`` per video and selection
under ``$TENSORFIELD_CACHE`` (see :mod:`.images`). Memory: a split holds float32 frames, e.g. 19
cameras x 300 frames at 1352x1014 is 94 GB; use ``downscale``, ``frame_stride`` and
``max_frames``.

Bad input raises a one-line :class:`~.errors.DatasetError` naming the file: ``poses_bounds.npy``
that is unreadable, not ``N x 17``, holds NaN/inf, a non-rotation or bad bounds; a pose row without
its video (or videos without rows); a video that cannot be decoded, or whose size or frame count
differs from ``cam00``'s.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .cameras import Cameras
from .errors import DatasetError, one_line
from .images import (
    DEFAULT_CACHE,
    PreparedImage,
    _disk_cache_file,
    _read_disk_cache,
    _write_disk_cache,
    resize,
    resized_size,
)

POSES_FILE = "poses_bounds.npy"
DEFAULT_TEST_CAMERAS = ("cam00",)
#: camera-axis permutation between LLFF (down, right, back) and OpenCV (right, down, forward)
LLFF_TO_OPENCV = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
_VIDEO_NAME = re.compile(r"^cam(\d+)\.mp4$")


# ---------------------------------------------------------------------------------- conventions
def llff_to_opencv(poses: np.ndarray) -> np.ndarray:
    """LLFF ``[..., 3, 4+]`` poses (rotation columns down, right, back) -> OpenCV ``[..., 3, 4]``.

    ``R_cv = R_llff @ P`` with ``P = [[0, 1, 0], [1, 0, 0], [0, 0, -1]]``; centre unchanged.
    """
    poses = np.asarray(poses, dtype=np.float64)
    out = np.empty(poses.shape[:-1] + (4,), dtype=np.float64)
    out[..., :3] = poses[..., :3] @ LLFF_TO_OPENCV
    out[..., 3] = poses[..., 3]
    return out


def opencv_to_llff(c2w: np.ndarray, hwf: np.ndarray | None = None) -> np.ndarray:
    """OpenCV ``[..., 3, 4]`` camera-to-world -> LLFF ``[..., 3, 4]`` (or ``[..., 3, 5]`` with
    ``hwf [..., 3]`` = ``(H, W, focal)`` appended as the fifth column)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    out = np.empty(c2w.shape[:-1] + (4,), dtype=np.float64)
    out[..., :3] = c2w[..., :3] @ LLFF_TO_OPENCV  # P is its own inverse
    out[..., 3] = c2w[..., 3]
    if hwf is None:
        return out
    hwf = np.broadcast_to(np.asarray(hwf, dtype=np.float64), c2w.shape[:-2] + (3,))
    return np.concatenate([out, hwf[..., None]], axis=-1)


def write_poses_bounds(
    path: Path, c2w: np.ndarray, hwf: np.ndarray, bounds: np.ndarray
) -> None:
    """Write ``poses_bounds.npy`` from OpenCV ``c2w [N, 3, 4]``, ``hwf [N, 3]`` or ``[3]`` and
    ``bounds [N, 2]`` (near, far z-depths)."""
    poses = opencv_to_llff(c2w, hwf)
    rows = np.concatenate([poses.reshape(len(poses), 15), np.asarray(bounds, np.float64)], axis=1)
    np.save(path, rows)


# ---------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class VideoOptions:
    """Which frames and cameras of a video scene to load.

    Attributes:
        frame_stride: keep every ``frame_stride``-th frame (>= 1).
        max_frames: keep at most this many frames (after the stride); ``None`` = all.
        time_range: ``(start, end)`` in seconds, both included; ``None`` = the whole video.
        test_cameras: held-out cameras, by video name (``"cam00"``) or pose row (``0``).
    """

    frame_stride: int = 1
    max_frames: int | None = None
    time_range: tuple[float, float] | None = None
    test_cameras: tuple[str | int, ...] = DEFAULT_TEST_CAMERAS

    def __post_init__(self) -> None:
        if int(self.frame_stride) != self.frame_stride or self.frame_stride < 1:
            raise ValueError(f"frame_stride must be a whole number >= 1, got {self.frame_stride}")
        if self.max_frames is not None and (
            int(self.max_frames) != self.max_frames or self.max_frames < 1
        ):
            raise ValueError(f"max_frames must be a whole number >= 1, got {self.max_frames}")
        if self.time_range is not None:
            start, end = (float(v) for v in self.time_range)
            if not (math.isfinite(start) and math.isfinite(end) and start <= end):
                raise ValueError(f"time_range must be (start, end) with start <= end, got {self.time_range}")
        if isinstance(self.test_cameras, (str, int)):
            object.__setattr__(self, "test_cameras", (self.test_cameras,))

    def select(self, count: int, fps: float) -> np.ndarray:
        """Indices of the frames to load out of ``count`` frames at ``fps``."""
        indices = np.arange(count)
        if self.time_range is not None:
            seconds = indices / fps
            start, end = self.time_range
            indices = indices[(seconds >= start - 1e-9) & (seconds <= end + 1e-9)]
        indices = indices[:: int(self.frame_stride)]
        if self.max_frames is not None:
            indices = indices[: int(self.max_frames)]
        return indices


# ---------------------------------------------------------------------------------- metadata
@dataclass
class VideoCamera:
    """One camera of a video scene: its video, OpenCV pose, LLFF intrinsics and bounds."""

    name: str
    video: Path
    c2w: np.ndarray  # [3, 4] float64, OpenCV
    height: float  # H, W, focal as written in poses_bounds.npy
    width: float
    focal: float
    near: float
    far: float


@dataclass
class VideoInfo:
    """What probing a video tells: size, frame rate and exact frame count."""

    width: int
    height: int
    fps: float
    frames: int


@dataclass
class ParsedVideoScene:
    """Metadata of an N3V scene (no frame decoded yet).

    Attributes:
        root: scene folder.
        cameras: one :class:`VideoCamera` per pose row.
        info: the (common) size, fps and frame count of the videos.
        frames: indices of the selected frames; times: their normalised times ``[F]``.
        splits: split name -> camera indices.
        aabb, near, far: bounds (see the module docstring).
    """

    root: Path
    cameras: list[VideoCamera]
    info: VideoInfo
    frames: np.ndarray
    times: np.ndarray
    splits: dict[str, list[int]]
    aabb: np.ndarray
    near: float
    far: float


def is_n3v(root: Path) -> bool:
    """A folder with ``poses_bounds.npy`` and at least one ``cam*.mp4``."""
    return (root / POSES_FILE).is_file() and any(root.glob("cam*.mp4"))


def read_poses_bounds(path: Path, root: Path) -> np.ndarray:
    """The checked ``[N, 17]`` float64 array of a ``poses_bounds.npy``."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(path, "missing file", root=root) from None
    except Exception as error:  # noqa: BLE001 - not an .npy, truncated, pickled object array...
        raise DatasetError(
            path, f"unreadable .npy ({type(error).__name__}: {one_line(error)[:80]})", root=root
        ) from None
    if array.ndim != 2 or array.shape[1] != 17 or array.shape[0] == 0:
        shape = "x".join(str(s) for s in array.shape) or "a scalar"
        raise DatasetError(
            path, f"expected an N x 17 array (LLFF 3x5 pose + near, far), got {shape}", root=root
        )
    if not np.issubdtype(array.dtype, np.number):
        raise DatasetError(path, f"expected numbers, got dtype {array.dtype}", root=root)
    array = array.astype(np.float64)
    for i, row in enumerate(array):
        if not np.isfinite(row).all():
            raise DatasetError(path, f"row {i} holds NaN/inf", root=root)
        rotation = row[:15].reshape(3, 5)[:, :3]
        if np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-3:
            raise DatasetError(path, f"row {i} rotation is not orthonormal", root=root)
        height, width, focal = row[:15].reshape(3, 5)[:, 4]
        if min(height, width, focal) <= 0:
            raise DatasetError(
                path, f"row {i} [H, W, focal] must be positive, got [{height:g}, {width:g}, {focal:g}]", root=root
            )
        near, far = row[15:]
        if not 0 < near < far:
            raise DatasetError(
                path, f"row {i} bounds must satisfy 0 < near < far, got [{near:g}, {far:g}]", root=root
            )
    return array


def match_videos(root: Path, rows: int) -> list[Path]:
    """The video of each pose row: ``cam*.mp4`` files in camera-number order, one per row."""
    path = root / POSES_FILE
    videos = sorted(root.glob("cam*.mp4"))
    numbered = {p: _VIDEO_NAME.match(p.name) for p in videos}
    if all(numbered.values()):
        videos.sort(key=lambda p: (int(numbered[p].group(1)), p.name))
    if len(videos) == rows:
        return videos
    if len(videos) < rows:
        numbers = {int(m.group(1)) for m in numbered.values() if m}
        if all(numbered.values()) and numbers <= set(range(rows)):
            missing = min(set(range(rows)) - numbers)
            width = max(2, len(str(rows - 1)))
            raise DatasetError(
                root / f"cam{missing:0{width}d}.mp4",
                f"missing video for pose row {missing} ({POSES_FILE} has {rows} rows)",
                root=root,
            )
        raise DatasetError(
            path, f"{rows} pose rows but only {len(videos)} videos (cam*.mp4)", root=root
        )
    raise DatasetError(
        path,
        f"{rows} pose rows but {len(videos)} videos (cam*.mp4): {videos[rows].name} has no pose row",
        root=root,
    )


def probe_video(path: Path, root: Path) -> VideoInfo:
    """Size, fps and exact frame count of a video (the count needs a fast demux pass)."""
    import imageio.v2 as iio2

    try:
        reader = iio2.get_reader(path, format="ffmpeg")
        try:
            meta = reader.get_meta_data()
            count = reader.count_frames()
        finally:
            reader.close()
        width, height = (int(v) for v in meta["size"])
        fps = float(meta["fps"])
    except Exception as error:  # noqa: BLE001 - OSError, RuntimeError, KeyError from ffmpeg output
        reason = one_line(error).split("=== stderr ===")[0].strip()[:100]
        raise DatasetError(path, f"unreadable video ({type(error).__name__}: {reason})", root=root) from None
    if count < 1 or width < 1 or height < 1:
        raise DatasetError(path, "unreadable video (no frames)", root=root)
    if not (math.isfinite(fps) and fps > 0):
        raise DatasetError(path, f"unreadable video (frame rate {fps:g})", root=root)
    return VideoInfo(width, height, fps, count)


def parse_n3v(root: Path, splits: tuple[str, ...], options: VideoOptions) -> ParsedVideoScene:
    """Read and check the metadata of an N3V scene; probes every video but decodes none.

    Raises:
        DatasetError: see the module docstring.
        ValueError: a test camera that is not in the scene.
    """
    rows = read_poses_bounds(root / POSES_FILE, root)
    videos = match_videos(root, len(rows))
    cameras = []
    for i, (row, video) in enumerate(zip(rows, videos)):
        pose = row[:15].reshape(3, 5)
        height, width, focal = pose[:, 4]
        cameras.append(
            VideoCamera(
                name=video.stem,
                video=video,
                c2w=llff_to_opencv(pose[:, :4]),
                height=float(height),
                width=float(width),
                focal=float(focal),
                near=float(row[15]),
                far=float(row[16]),
            )
        )

    infos = [probe_video(camera.video, root) for camera in cameras]
    first = infos[0]
    for camera, info in zip(cameras, infos):
        if (info.width, info.height) != (first.width, first.height):
            raise DatasetError(
                camera.video,
                f"video is {info.width}x{info.height} but {cameras[0].video.name} is "
                f"{first.width}x{first.height}",
                root=root,
            )
        if info.frames != first.frames:
            raise DatasetError(
                camera.video,
                f"video has {info.frames} frames but {cameras[0].video.name} has {first.frames}",
                root=root,
            )
        if abs(info.height / info.width - camera.height / camera.width) > 0.01 * camera.height / camera.width:
            raise DatasetError(
                camera.video,
                f"video is {info.width}x{info.height} but {POSES_FILE} row {cameras.index(camera)} "
                f"says {camera.width:g}x{camera.height:g} (a different aspect ratio)",
                root=root,
            )

    frames = options.select(first.frames, first.fps)
    if len(frames) == 0:
        raise DatasetError(
            cameras[0].video,
            f"time_range {list(options.time_range)} s selects no frame of a "
            f"{first.frames / first.fps:g} s video",
            root=root,
        )
    span = frames[-1] - frames[0]
    times = (frames - frames[0]) / span if span > 0 else np.zeros(len(frames))

    test = sorted({_camera_index(c, cameras) for c in options.test_cameras})
    assignment = {
        "train": [i for i in range(len(cameras)) if i not in test],
        "test": test,
    }
    if "train" in splits and not assignment["train"]:
        raise DatasetError(root / POSES_FILE, "train split is empty (every camera is a test camera)", root=root)
    chosen = {name: assignment[name] for name in splits if assignment.get(name)}
    aabb, near, far = video_bounds(cameras)
    return ParsedVideoScene(root, cameras, first, frames, times, chosen, aabb, near, far)


def _camera_index(wanted: str | int, cameras: list[VideoCamera]) -> int:
    names = [camera.name for camera in cameras]
    if isinstance(wanted, (int, np.integer)) and not isinstance(wanted, bool):
        if 0 <= wanted < len(cameras):
            return int(wanted)
    elif str(wanted) in names:
        return names.index(str(wanted))
    raise ValueError(
        f"test camera {wanted!r} is not in the scene (cameras: {', '.join(names)}; or a row 0..{len(names) - 1})"
    )


def video_bounds(cameras: list[VideoCamera]) -> tuple[np.ndarray, float, float]:
    """``(aabb [2, 3], near, far)`` from the cameras' frusta and LLFF bounds (module docstring)."""
    corners = []
    far = 0.0
    for camera in cameras:
        half_x = 0.5 * camera.width / camera.focal
        half_y = 0.5 * camera.height / camera.focal
        for depth in (camera.near, camera.far):
            for sx in (-1.0, 1.0):
                for sy in (-1.0, 1.0):
                    local = np.array([sx * half_x, sy * half_y, 1.0]) * depth
                    corners.append(camera.c2w[:, :3] @ local + camera.c2w[:, 3])
        far = max(far, camera.far * math.sqrt(1.0 + half_x**2 + half_y**2))
    corners = np.stack(corners)
    near = min(camera.near for camera in cameras)
    return np.stack([corners.min(0), corners.max(0)]), float(near), float(far)


# ---------------------------------------------------------------------------------- frames
def _frame_keys(video: Path, frames: np.ndarray, downscale: float, root: Path) -> list[tuple]:
    real = os.path.realpath(video)
    try:
        stat = os.stat(real)
    except FileNotFoundError:
        raise DatasetError(video, "missing video", root=root) from None
    return [
        (real, stat.st_mtime_ns, stat.st_size, float(downscale), "frame", int(index))
        for index in frames
    ]


def decode_video(
    video: Path, frames: np.ndarray, downscale: float, root: Path
) -> list[PreparedImage]:
    """Decode the selected ``frames`` of ``video`` (sorted indices) and downscale them.

    Returns:
        one :class:`PreparedImage` (``[h, w, 3]`` float32 in [0, 1]) per frame.
    """
    import imageio.v2 as iio2

    wanted = {int(index): k for k, index in enumerate(frames)}
    last = int(frames[-1])
    out: list[PreparedImage | None] = [None] * len(frames)
    try:
        reader = iio2.get_reader(video, format="ffmpeg")
    except Exception as error:  # noqa: BLE001
        reason = one_line(error).split("=== stderr ===")[0].strip()[:100]
        raise DatasetError(video, f"unreadable video ({type(error).__name__}: {reason})", root=root) from None
    try:
        index = -1
        for index, frame in enumerate(reader):
            if index in wanted:
                pixels = np.asarray(frame)
                if pixels.ndim != 3 or pixels.shape[2] != 3:
                    raise DatasetError(video, f"unexpected frame layout {pixels.shape}", root=root)
                full_height, full_width = pixels.shape[:2]
                width, height = resized_size(full_width, full_height, downscale)
                if width < 1 or height < 1:
                    raise DatasetError(
                        video,
                        f"downscale {downscale:g} leaves no pixels of a {full_width}x{full_height} video",
                        root=root,
                    )
                pixels = resize(pixels.astype(np.float32) / np.float32(255.0), width, height)
                out[wanted[index]] = PreparedImage(
                    np.ascontiguousarray(pixels, dtype=np.float32), full_width, full_height
                )
            if index >= last:
                break
    except DatasetError:
        raise
    except Exception as error:  # noqa: BLE001 - a stream that breaks while decoding
        reason = one_line(error).split("=== stderr ===")[0].strip()[:100]
        raise DatasetError(
            video, f"decoding failed ({type(error).__name__}: {reason})", root=root
        ) from None
    finally:
        reader.close()
    if index < last:
        raise DatasetError(
            video, f"decoding stopped after {index + 1} frames; frame {last} is needed", root=root
        )
    return out  # type: ignore[return-value]


def load_video_frames(
    video: Path, frames: np.ndarray, downscale: float, root: Path, disk_cache: bool
) -> list[PreparedImage]:
    """Frames of one video through the in-process cache (and the optional disk cache)."""
    keys = _frame_keys(video, frames, downscale, root)
    entries = [DEFAULT_CACHE.get(key) for key in keys]
    disk_file = _disk_cache_file(keys) if disk_cache else None
    if all(entry is not None for entry in entries):
        if disk_file is not None and not disk_file.is_file():
            _write_disk_cache(disk_file, entries)  # type: ignore[arg-type]
        return entries  # type: ignore[return-value]
    if disk_file is not None:
        from_disk = _read_disk_cache(disk_file, len(keys))
        if from_disk is not None:
            for key, entry in zip(keys, from_disk):
                DEFAULT_CACHE.put(key, entry)
            return from_disk
    decoded = decode_video(video, frames, downscale, root)
    for key, entry in zip(keys, decoded):
        DEFAULT_CACHE.put(key, entry)
    if disk_file is not None:
        _write_disk_cache(disk_file, decoded)
    return decoded


def load_video_split(
    parsed: ParsedVideoScene, camera_indices: Sequence[int], downscale: float, disk_cache: bool
) -> tuple[Cameras, Tensor, list[Path]]:
    """Cameras ``[C * F]``, images ``[C * F, h, w, 3]`` float32 and virtual frame paths of the
    given cameras (camera-major), with per-frame times."""
    root, info, frames = parsed.root, parsed.info, parsed.frames
    width, height = resized_size(info.width, info.height, downscale)
    images = np.empty((len(camera_indices) * len(frames), height, width, 3), dtype=np.float32)
    c2w, focal, paths = [], [], []
    for slot, index in enumerate(camera_indices):
        camera = parsed.cameras[index]
        decoded = load_video_frames(camera.video, frames, downscale, root, disk_cache)
        for k, entry in enumerate(decoded):
            images[slot * len(frames) + k] = entry.pixels
        c2w.append(np.broadcast_to(camera.c2w, (len(frames), 3, 4)))
        focal.append(np.full(len(frames), camera.focal * info.width / camera.width))
        paths += [camera.video / f"{camera.name}_{int(f):04d}" for f in frames]
    count = images.shape[0]
    full = lambda value: torch.full((count,), float(value))
    fx = torch.as_tensor(np.concatenate(focal), dtype=torch.float32)
    cameras = Cameras(
        c2w=torch.as_tensor(np.concatenate(c2w), dtype=torch.float32),
        fx=fx,
        fy=fx.clone(),
        cx=full(info.width / 2.0),
        cy=full(info.height / 2.0),
        width=info.width,
        height=info.height,
        times=torch.as_tensor(np.tile(parsed.times, len(camera_indices)), dtype=torch.float32),
    )
    if (width, height) != (info.width, info.height):
        cameras = cameras.scaled(1.0 / downscale)
    return cameras, torch.from_numpy(images), paths
