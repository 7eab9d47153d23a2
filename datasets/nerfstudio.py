"""nerfstudio / instant-ngp layout: one ``transforms.json`` for all images.

Keys read (each intrinsic may be global or per frame; per-frame wins):

* ``fl_x, fl_y, cx, cy, w, h`` in pixels (``fl_y`` defaults to ``fl_x``, the principal point to the
  image centre; ``camera_angle_x`` is accepted instead of ``fl_x``);
* ``camera_model``: ``PINHOLE``, ``SIMPLE_PINHOLE``, ``OPENCV`` (and COLMAP's ``SIMPLE_RADIAL``,
  ``RADIAL``). Non-zero ``k1, k2, k3, k4, p1, p2`` are removed from the images at load time
  (:func:`.distortion.undistort_image`; ``k4`` is a radial ``r^8`` term, as in nerfstudio).
  ``OPENCV_FISHEYE``, ``EQUIRECTANGULAR`` and the other non-pinhole models are refused;
* ``frames[i].transform_matrix``: OpenGL camera-to-world, converted to OpenCV;
* ``applied_transform``: the transform ns-process-data already applied to both the poses and the
  PLY (original -> saved coordinates). Poses and points are therefore used as saved; the key is
  only validated;
* ``scale`` (instant-ngp): camera translations and points are multiplied by it (``offset`` is not
  applied: the scene stays centred where the file puts it);
* ``aabb_scale`` (instant-ngp), ``ply_file_path``, ``train_filenames`` / ``val_filenames`` /
  ``test_filenames``, per-frame ``time``.

Splits: with any ``*_filenames`` key, the listed frames form those splits and frames listed by no
key fill the first of train, test that has no key. Otherwise frames are sorted by ``file_path``
(as nerfstudio does) and every 8th one (indices 0, 8, 16, ...) is the test split, the rest train;
there is no val split then.

Bounds: with ``aabb_scale`` the box is instant-ngp's: a cube of side ``aabb_scale`` centred on
0.5 in ngp coordinates ``p_ngp = P(p * scale) + offset`` (defaults ``scale = 0.33``,
``offset = 0.5``, ``P`` cycling axes x, y, z -> y, z, x), mapped back to this package's frame.
Without it the box is centred on the point closest (least squares) to all optical axes (the mean
camera centre if the cameras do not look towards a common point) with half-side equal to half the
median camera distance to that centre. ``near`` is the smallest camera-to-box distance (at least 1%
of the box diagonal) and ``far`` the largest camera-to-farthest-corner distance.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from .errors import DatasetError, display_path
from .normalize import camera_box, near_far_for_box
from .parsing import (
    FrameRecord,
    ParsedScene,
    frame_camera,
    frame_times,
    frames_of,
    normalise_times,
    number,
    pose_matrix,
    read_json,
    resolve_image,
)
from .ply import read_ply_points

TEST_EVERY = 8
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
_SPLIT_KEYS = {"train": "train_filenames", "val": "val_filenames", "test": "test_filenames"}


def is_nerfstudio(root: Path) -> bool:
    return (root / "transforms.json").is_file()


def parse_nerfstudio(root: Path, splits: tuple[str, ...]) -> ParsedScene:
    """Read the metadata of a nerfstudio scene (no image is decoded).

    Args:
        root: folder with ``transforms.json``.
        splits: splits to return; missing ones are skipped except ``train``.

    Raises:
        DatasetError: naming the file for every malformed entry or unsupported camera model.
    """
    path = root / "transforms.json"
    meta = read_json(path, root)
    frames = frames_of(meta, path, root)
    scale = number(meta["scale"], "scale", path, root, positive=True) if "scale" in meta else 1.0
    if "applied_transform" in meta:
        try:
            applied = np.asarray(meta["applied_transform"], dtype=np.float64)
        except (TypeError, ValueError):
            applied = np.zeros(0)
        if applied.shape not in ((3, 4), (4, 4)) or not np.isfinite(applied).all():
            raise DatasetError(
                path, "applied_transform must be a finite 3x4 or 4x4 matrix", root=root
            )

    raw_times = frame_times(frames, path, root)
    offset, time_scale = normalise_times(raw_times)
    records = []
    for i, frame in enumerate(frames):
        c2w = (pose_matrix(frame, i, path, root) @ _GL_TO_CV)[:3]
        c2w[:, 3] *= scale
        time = raw_times[i]
        records.append(
            FrameRecord(
                image_path=resolve_image(root, frame.get("file_path"), i, path),
                c2w=c2w,
                source=path.name,
                index=i,
                time=(time - offset) * time_scale if math.isfinite(time) else math.nan,
                **frame_camera(meta, frame, i, path, root),
            )
        )
    file_paths = [frame["file_path"] for frame in frames]
    assignment = _assign_splits(meta, file_paths, records, root, path)
    if "train" in splits and not assignment.get("train"):
        raise DatasetError(path, "train split is empty", root=root)
    chosen = {name: assignment[name] for name in splits if assignment.get(name)}

    centres = np.stack([r.c2w[:, 3] for r in records])
    forwards = np.stack([r.c2w[:, 2] for r in records])
    if "aabb_scale" in meta:
        aabb = _ngp_box(meta, scale, path, root)
    else:
        aabb = camera_box(centres, forwards)
    near, far = near_far_for_box(aabb, centres)

    points = colors = None
    if "ply_file_path" in meta:
        ply = root / str(meta["ply_file_path"])
        if ply.is_file():
            points, colors = read_ply_points(ply, root)
            points = points * np.float32(scale)
        else:
            warnings.warn(
                f"{display_path(ply, root)}: point cloud not found, continuing without points",
                stacklevel=3,
            )
    all_c2w = np.stack([r.c2w for r in records])
    return ParsedScene(root, "nerfstudio", chosen, aabb, near, far, points, colors, all_c2w=all_c2w)


def _assign_splits(
    meta: dict, file_paths: list[str], records: list[FrameRecord], root: Path, path: Path
) -> dict[str, list[FrameRecord]]:
    """Split frames by the ``*_filenames`` keys, else every 8th sorted frame is test."""
    present = [name for name, key in _SPLIT_KEYS.items() if key in meta]
    if not present:
        order = sorted(range(len(records)), key=lambda i: file_paths[i])
        if len(order) < 2:
            return {"train": [records[i] for i in order]}
        return {
            "train": [records[i] for k, i in enumerate(order) if k % TEST_EVERY != 0],
            "test": [records[i] for k, i in enumerate(order) if k % TEST_EVERY == 0],
        }
    by_name: dict[str, int] = {}
    for i, (file_path, record) in enumerate(zip(file_paths, records)):
        by_name[os.path.normpath(root / file_path)] = i
        by_name[os.path.normpath(record.image_path)] = i
    assigned: dict[str, list[FrameRecord]] = {}
    used: set[int] = set()
    for name in present:
        key = _SPLIT_KEYS[name]
        entries = meta[key]
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise DatasetError(path, f"{key} must be a list of file paths", root=root)
        indices = []
        for entry in entries:
            index = by_name.get(os.path.normpath(root / entry))
            if index is None:
                raise DatasetError(path, f"{key} entry '{entry}' matches no frame", root=root)
            indices.append(index)
        assigned[name] = [records[i] for i in indices]
        used.update(indices)
    rest = [records[i] for i in range(len(records)) if i not in used]
    for name in ("train", "test"):
        if name not in present:
            assigned[name] = rest
            break
    return assigned


def _ngp_box(meta: dict, scale: float, path: Path, root: Path) -> np.ndarray:
    """instant-ngp's box: side ``aabb_scale`` around 0.5 in ngp coordinates, in this frame."""
    side = number(meta["aabb_scale"], "aabb_scale", path, root, positive=True)
    ngp_scale = scale if "scale" in meta else 0.33
    try:
        ngp_offset = np.asarray(meta.get("offset", [0.5, 0.5, 0.5]), dtype=np.float64).reshape(3)
    except (TypeError, ValueError):
        raise DatasetError(path, "offset must be three numbers", root=root) from None
    centre_ngp = 0.5 - ngp_offset  # relative to the offset, still in ngp axis order (y, z, x)
    centre = centre_ngp[[2, 0, 1]] / ngp_scale * scale
    half = 0.5 * side / ngp_scale * scale
    return np.stack([centre - half, centre + half])
