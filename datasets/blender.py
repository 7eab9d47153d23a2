"""Blender (NeRF-Synthetic) and D-NeRF layouts: ``transforms_{train,val,test}.json``.

Each file holds ``camera_angle_x`` (horizontal field of view, radians; ``fl_x``-style intrinsics
are accepted too) and ``frames`` with ``file_path`` (relative, usually without extension) and a
4x4 camera-to-world ``transform_matrix`` in the Blender/OpenGL camera frame, converted here with
:func:`~tensorfield.datasets.cameras.opengl_to_opencv`. D-NeRF adds a per-frame ``time``; times are
normalised over all three files together (see :func:`.parsing.normalise_times`).

Scene bounds are TensoRF's NeRF-Synthetic defaults (aabb ``[-1.5, 1.5]^3``, near 2, far 6) unless
the folder has a ``scene.json`` with ``aabb`` / ``near`` / ``far`` (written by
:func:`tensorfield.datasets.synthetic.make_scene`). Ground-truth depth maps are read from
``depth/<split>/<image stem>.npy`` when that folder exists.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .errors import DatasetError
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

BLENDER_AABB = np.array([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])
BLENDER_NEAR = 2.0
BLENDER_FAR = 6.0
SPLIT_NAMES = ("train", "val", "test")

# Blender camera (looks down -z, +y up) -> OpenCV camera (looks down +z, +y down).
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def is_blender(root: Path) -> bool:
    return (root / "transforms_train.json").is_file()


def parse_blender(root: Path, splits: tuple[str, ...]) -> ParsedScene:
    """Read the metadata of a Blender / D-NeRF scene (no image is decoded).

    Args:
        root: folder with ``transforms_train.json``.
        splits: splits to read; missing ones are skipped except ``train``.

    Raises:
        DatasetError: naming the file for every malformed entry.
    """
    metas: dict[str, tuple[Path, dict]] = {}
    for name in SPLIT_NAMES:
        path = root / f"transforms_{name}.json"
        if name in splits or path.is_file():
            if not path.is_file():
                if name == "train":
                    raise DatasetError(
                        path, "missing file (the train split is required)", root=root
                    )
                continue
            metas[name] = (path, read_json(path, root))

    # Times are normalised over every split, asked for or not (a broken unrequested file is ignored).
    raw_times: dict[str, list[float]] = {}
    for name, (path, meta) in metas.items():
        try:
            raw_times[name] = frame_times(frames_of(meta, path, root), path, root)
        except DatasetError:
            if name in splits:
                raise
    dynamic = {name: any(math.isfinite(t) for t in times) for name, times in raw_times.items()}
    if any(dynamic.values()) and not all(dynamic.values()):
        static = next(n for n, d in dynamic.items() if not d)
        raise DatasetError(
            metas[static][0], "frames have no time but other splits' frames do", root=root
        )
    offset, scale = normalise_times([t for times in raw_times.values() for t in times])

    records: dict[str, list[FrameRecord]] = {}
    for name in splits:
        if name not in metas:
            continue
        path, meta = metas[name]
        frames = frames_of(meta, path, root)
        depth_folder = root / "depth" / name
        split_records = []
        for i, frame in enumerate(frames):
            c2w_gl = pose_matrix(frame, i, path, root)
            image_path = resolve_image(root, frame.get("file_path"), i, path)
            time = raw_times[name][i]
            depth_path = None
            if depth_folder.is_dir():
                depth_path = depth_folder / f"{image_path.stem}.npy"
                if not depth_path.is_file():
                    raise DatasetError(
                        depth_path, "missing depth map (the split has a depth folder)", root=root
                    )
            split_records.append(
                FrameRecord(
                    image_path=image_path,
                    c2w=(c2w_gl @ _GL_TO_CV)[:3],
                    source=path.name,
                    index=i,
                    time=(time - offset) * scale if math.isfinite(time) else math.nan,
                    depth_path=depth_path,
                    **frame_camera(meta, frame, i, path, root),
                )
            )
        records[name] = split_records

    aabb, near, far = _bounds(root)
    return ParsedScene(
        root=root,
        format="dnerf" if any(dynamic.values()) else "blender",
        splits=records,
        aabb=aabb,
        near=near,
        far=far,
    )


def _bounds(root: Path) -> tuple[np.ndarray, float, float]:
    """NeRF-Synthetic defaults, overridden by ``scene.json``'s ``aabb``, ``near``, ``far``."""
    aabb, near, far = BLENDER_AABB.copy(), BLENDER_NEAR, BLENDER_FAR
    path = root / "scene.json"
    if not path.is_file():
        return aabb, near, far
    meta = read_json(path, root)
    if "aabb" in meta:
        try:
            aabb = np.asarray(meta["aabb"], dtype=np.float64)
        except (TypeError, ValueError):
            raise DatasetError(
                path,
                f"aabb must be [[x, y, z], [x, y, z]], got {json.dumps(meta['aabb'])[:60]}",
                root=root,
            ) from None
        if aabb.shape != (2, 3) or not np.isfinite(aabb).all() or not (aabb[0] < aabb[1]).all():
            raise DatasetError(
                path, "aabb must be [[min x, y, z], [max x, y, z]] with min < max", root=root
            )
    if "near" in meta:
        near = number(meta["near"], "near", path, root)
    if "far" in meta:
        far = number(meta["far"], "far", path, root)
    if not 0.0 <= near < far:
        raise DatasetError(path, f"need 0 <= near < far, got near {near:g}, far {far:g}", root=root)
    return aabb, near, far
