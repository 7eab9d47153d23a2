"""What a format parser hands to the shared image pipeline, and the JSON checks they share.

A parser (:mod:`.blender`, :mod:`.nerfstudio`) reads only metadata: for every split it returns a
list of :class:`FrameRecord` (image file, OpenCV pose, intrinsics as written, time, distortion)
inside a :class:`ParsedScene` (bounds, near/far, optional points). Decoding, undistortion,
resizing, caching and compositing are shared (:mod:`.images`, :func:`.scene.load_scene`), so every
format gets the same checks and the same pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError, one_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".exr", ".PNG", ".JPG", ".JPEG")

# Order of the distortion coefficients everywhere in this package (nerfstudio's order).
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


@dataclass
class FrameRecord:
    """One image and its camera, as written in the metadata (before any image is decoded).

    Attributes:
        image_path: absolute image file.
        c2w: ``[3, 4]`` float64 camera-to-world, OpenCV frame (already converted).
        source: metadata file the frame came from (for error messages).
        index: frame index in ``source``.
        time: time normalised to [0, 1] over the data set (``nan`` = static).
        fov_x: horizontal field of view in radians (Blender ``camera_angle_x``), or ``None``.
        fx, fy, cx, cy: pixel intrinsics at full resolution, each ``None`` when not given
            (``fy`` defaults to ``fx``, ``cx, cy`` to the image centre).
        width, height: image size the metadata claims, or ``None``.
        distortion: ``[6]`` OpenCV coefficients ``(k1, k2, k3, k4, p1, p2)``, ``None`` if all zero.
        depth_path: optional ``.npy`` ground-truth distance map (see ``SceneSplit.depths``).
    """

    image_path: Path
    c2w: np.ndarray
    source: str
    index: int
    time: float = math.nan
    fov_x: float | None = None
    fx: float | None = None
    fy: float | None = None
    cx: float | None = None
    cy: float | None = None
    width: int | None = None
    height: int | None = None
    distortion: np.ndarray | None = None
    depth_path: Path | None = None

    def intrinsics(self, width: int, height: int) -> tuple[float, float, float, float]:
        """``(fx, fy, cx, cy)`` in pixels for an image of ``width x height`` at full resolution."""
        return pinhole_intrinsics(width, height, self.fov_x, self.fx, self.fy, self.cx, self.cy)


def pinhole_intrinsics(
    width: int,
    height: int,
    fov_x: float | None,
    fx: float | None,
    fy: float | None,
    cx: float | None,
    cy: float | None,
) -> tuple[float, float, float, float]:
    """Fill in intrinsics as metadata writes them: ``fx = W / (2 tan(fov_x / 2))`` when only the
    field of view is given, ``fy = fx`` and the principal point at the image centre by default."""
    if fx is None:
        fx = 0.5 * width / math.tan(0.5 * float(fov_x))
    fy = fx if fy is None else fy
    cx = width / 2.0 if cx is None else cx
    cy = height / 2.0 if cy is None else cy
    return float(fx), float(fy), float(cx), float(cy)


@dataclass
class ParsedScene:
    """Metadata of a whole scene.

    Attributes:
        root: scene folder.
        format: ``"blender"``, ``"dnerf"``, ``"nerfstudio"`` or ``"colmap"``.
        splits: split name -> frames, only for splits that exist and were asked for.
        aabb: ``[2, 3]`` bounding box; near, far: ray range.
        points, points_rgb: optional ``[P, 3]`` point cloud and colours in [0, 1].
        all_c2w: optional ``[N, 3, 4]`` poses of every frame of the scene, asked-for split or not,
            so that the normalisation (:mod:`.normalize`) does not depend on the splits loaded;
            ``None``: the poses of ``splits``.
    """

    root: Path
    format: str
    splits: dict[str, list[FrameRecord]]
    aabb: np.ndarray
    near: float
    far: float
    points: np.ndarray | None = None
    points_rgb: np.ndarray | None = None
    all_c2w: np.ndarray | None = None


# ---------------------------------------------------------------------------------- JSON helpers
def read_json(path: Path, root: Path) -> dict:
    """Parse a metadata file into a dict, turning every failure into a :class:`DatasetError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(path, "missing file", root=root) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(path, f"unreadable file ({one_line(error)})", root=root) from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetError(
            path,
            f"invalid JSON at line {error.lineno} column {error.colno} ({error.msg})",
            root=root,
        ) from None
    if not isinstance(meta, dict):
        raise DatasetError(path, f"expected a JSON object, got {type(meta).__name__}", root=root)
    return meta


def frames_of(meta: dict, path: Path, root: Path) -> list[dict]:
    """The ``frames`` list of a metadata file; an empty list is an error (``split is empty``)."""
    if "frames" not in meta:
        raise DatasetError(path, "no 'frames' key", root=root)
    frames = meta["frames"]
    if not isinstance(frames, list):
        raise DatasetError(path, f"'frames' must be a list, got {type(frames).__name__}", root=root)
    if not frames:
        raise DatasetError(path, "split is empty", root=root)
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise DatasetError(path, f"frame {i} is not a JSON object", root=root)
    return frames


def _shape_of(value) -> str:
    """Human description of a nested list's shape, e.g. ``3x4``."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return "a ragged or non-numeric array"
    return "x".join(str(s) for s in array.shape) if array.ndim else "a scalar"


def pose_matrix(
    frame: dict, index: int, path: Path, root: Path, key: str = "transform_matrix"
) -> np.ndarray:
    """Frame ``index``'s 4x4 camera-to-world matrix (float64), checked for shape and finiteness."""
    if key not in frame:
        raise DatasetError(path, f"frame {index} has no {key}", root=root)
    value = frame[key]
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(
            path, f"frame {index} {key} is not a 4x4 matrix of numbers", root=root
        ) from None
    if matrix.shape != (4, 4):
        raise DatasetError(
            path, f"frame {index} {key} is not 4x4 (got {_shape_of(value)})", root=root
        )
    if not np.isfinite(matrix).all():
        raise DatasetError(path, f"frame {index} {key} holds NaN/inf", root=root)
    if np.abs(matrix[3] - (0.0, 0.0, 0.0, 1.0)).max() > 1e-6:
        raise DatasetError(path, f"frame {index} {key} last row is not [0, 0, 0, 1]", root=root)
    return matrix


def number(value, what: str, path: Path, root: Path, *, positive: bool = False) -> float:
    """``value`` as a finite float (``positive``: also > 0), else a :class:`DatasetError` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DatasetError(
            path, f"{what} must be a number, got {json.dumps(value)[:40]}", root=root
        )
    value = float(value)
    if not math.isfinite(value):
        raise DatasetError(path, f"{what} is NaN/inf", root=root)
    if positive and value <= 0:
        raise DatasetError(path, f"{what} must be positive, got {value:g}", root=root)
    return value


def resolve_image(root: Path, file_path, index: int, path: Path) -> Path:
    """Image file of a frame; Blender's extension-less ``./train/r_0`` gets ``.png``.

    Raises:
        DatasetError: ``<image>: missing image`` when no candidate exists.
    """
    if not isinstance(file_path, str) or not file_path:
        raise DatasetError(path, f"frame {index} has no file_path", root=root)
    candidate = root / file_path
    if candidate.suffix in IMAGE_SUFFIXES and candidate.is_file():
        return candidate
    for suffix in (".png", ".jpg", ".jpeg", ".exr"):
        extended = candidate.with_name(candidate.name + suffix)
        if extended.is_file():
            return extended
    if candidate.is_file():
        return candidate
    shown = (
        candidate
        if candidate.suffix in IMAGE_SUFFIXES
        else candidate.with_name(candidate.name + ".png")
    )
    raise DatasetError(shown, "missing image", root=root)


def frame_times(frames: list[dict], path: Path, root: Path) -> list[float]:
    """Raw per-frame ``time`` values (``nan`` when no frame has one); all-or-none is enforced."""
    has_time = ["time" in frame for frame in frames]
    if not any(has_time):
        return [math.nan] * len(frames)
    if not all(has_time):
        missing = has_time.index(False)
        raise DatasetError(path, f"frame {missing} has no time but other frames do", root=root)
    return [number(f["time"], f"frame {i} time", path, root) for i, f in enumerate(frames)]


def normalise_times(times: list[float]) -> tuple[float, float]:
    """``(offset, scale)`` with ``(t - offset) * scale`` in [0, 1] for all ``times``.

    Times already in [0, 1] (D-NeRF's convention) are kept as they are; otherwise they are
    min-max normalised over the whole data set (a single distinct time maps to 0).
    """
    finite = [t for t in times if math.isfinite(t)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if low >= 0.0 and high <= 1.0:
        return 0.0, 1.0
    return low, (1.0 / (high - low) if high > low else 0.0)


# ---------------------------------------------------------------------------------- intrinsics
#: nerfstudio ``camera_model`` values this package handles (all pinhole + OpenCV radial/tangential).
SUPPORTED_CAMERA_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")


def frame_camera(meta: dict, frame: dict, index: int, path: Path, root: Path) -> dict:
    """Intrinsics of frame ``index``: per-frame keys override the file's global ones.

    Reads ``fl_x, fl_y, cx, cy, w, h`` (nerfstudio / instant-ngp) or, without ``fl_x``, Blender's
    ``camera_angle_x``; ``camera_model`` and the OpenCV coefficients ``k1, k2, k3, k4, p1, p2``.

    Returns:
        keyword arguments for :class:`FrameRecord` (``fov_x, fx, fy, cx, cy, width, height,
        distortion``).

    Raises:
        DatasetError: unsupported ``camera_model``, no focal length, non-numeric values.
    """

    def get(key: str):
        if key in frame:
            return frame[key], f"frame {index} {key}"
        return meta.get(key), key

    model, _ = get("camera_model")
    if model is not None and model not in SUPPORTED_CAMERA_MODELS:
        raise DatasetError(
            path,
            f"camera_model {model} is not supported (supported: {', '.join(SUPPORTED_CAMERA_MODELS)})",
            root=root,
        )
    out: dict = {}
    fl_x, what = get("fl_x")
    if fl_x is not None:
        out["fx"] = number(fl_x, what, path, root, positive=True)
    else:
        angle, what = get("camera_angle_x")
        if angle is None:
            raise DatasetError(path, f"no camera_angle_x and no fl_x (frame {index})", root=root)
        angle = number(angle, what, path, root, positive=True)
        if angle >= math.pi:
            raise DatasetError(path, f"{what} must be below pi radians, got {angle:g}", root=root)
        out["fov_x"] = angle
    for key, name in (("fl_y", "fy"), ("cx", "cx"), ("cy", "cy")):
        value, what = get(key)
        if value is not None:
            out[name] = number(value, what, path, root, positive=key == "fl_y")
    for key, name in (("w", "width"), ("h", "height")):
        value, what = get(key)
        if value is not None:
            value = number(value, what, path, root, positive=True)
            if value != int(value):
                raise DatasetError(path, f"{what} must be a whole number, got {value:g}", root=root)
            out[name] = int(value)
    coefficients = []
    for key in DISTORTION_KEYS:
        value, what = get(key)
        coefficients.append(0.0 if value is None else number(value, what, path, root))
    out["distortion"] = np.asarray(coefficients) if any(coefficients) else None
    return out
