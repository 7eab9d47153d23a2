"""``tensorfield export RUN cameras``: a run's cameras as a nerfstudio ``transforms.json``.

The file follows nerfstudio's layout, so this package's loader (:mod:`tensorfield.datasets.nerfstudio`)
and nerfstudio's dataparser both read it:

* ``camera_model: OPENCV``; per frame ``file_path`` (the original image, relative to the JSON's
  folder when it can be), ``transform_matrix`` (4x4 camera-to-world, **OpenGL** camera axes:
  x right, y up, looking down -z), ``fl_x, fl_y, cx, cy, w, h`` at the image files' resolution
  (a run trained with ``downscale`` gets its intrinsics scaled back exactly, see
  :meth:`~tensorfield.datasets.cameras.Cameras.scaled`), the lens ``k1, k2, k3, k4, p1, p2`` the
  files were undistorted from, and ``time`` for dynamic scenes;
* ``train_filenames`` / ``val_filenames`` / ``test_filenames``: the run's splits.

Poses are in the input's frame (the recorded scene transform undone, see :mod:`.scene_frame`),
or in the model's normalised frame with ``--normalized``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from tensorfield.datasets.normalize import SceneTransform
from tensorfield.datasets.parsing import DISTORTION_KEYS

_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


class CameraExportError(ValueError):
    """Cameras that cannot be written as ``transforms.json`` (one line)."""


def cameras_json(scene, out: str | os.PathLike, to_input: np.ndarray | None = None) -> dict:
    """The nerfstudio ``transforms.json`` content of a loaded scene's cameras.

    Args:
        scene: a :class:`tensorfield.datasets.scene.Scene` (cameras in the model frame).
        out: where the JSON will be written (image paths are made relative to its folder).
        to_input: ``[4, 4]`` model -> input similarity, or ``None`` to keep the model frame.

    Raises:
        CameraExportError: a video scene (its frames are no image files) or a missing image.
    """
    from PIL import Image

    if scene.format == "n3v":
        raise CameraExportError(f"{scene.root}: video scenes (N3V) have no image files to list in a transforms.json")
    folder = Path(out).resolve().parent
    transform = SceneTransform(np.asarray(to_input, dtype=np.float64)) if to_input is not None else None
    frames, names = [], {}
    for name in ("train", "val", "test"):
        split = scene.splits.get(name)
        if split is None:
            continue
        names[name] = []
        cameras = split.cameras
        c2w = cameras.c2w.double().numpy()
        if transform is not None:
            c2w = transform.apply_c2w(c2w)
        full_width = full_height = None
        for i, path in enumerate(split.image_paths):
            path = Path(path)
            if not path.is_file():
                raise CameraExportError(f"{path}: image of the {name} split not found (moved since training?)")
            if full_width is None:
                with Image.open(path) as image:
                    full_width, full_height = image.size
            sx, sy = full_width / cameras.width, full_height / cameras.height
            matrix = np.eye(4)
            matrix[:3] = c2w[i]
            frame = {
                "file_path": _relative(path, folder),
                "transform_matrix": (matrix @ _CV_TO_GL).tolist(),
                "fl_x": float(cameras.fx[i]) * sx,
                "fl_y": float(cameras.fy[i]) * sy,
                "cx": float(cameras.cx[i]) * sx,
                "cy": float(cameras.cy[i]) * sy,
                "w": int(full_width),
                "h": int(full_height),
            }
            if split.distortion is not None:
                frame.update(zip(DISTORTION_KEYS, (float(k) for k in split.distortion[i])))
            time = float(cameras.times[i]) if cameras.times is not None else math.nan
            if math.isfinite(time):
                frame["time"] = time
            frames.append(frame)
            names[name].append(frame["file_path"])
    meta = {"camera_model": "OPENCV", "frames": frames}
    meta.update({f"{name}_filenames": files for name, files in names.items()})
    return meta


def write_cameras_json(scene, out: str | os.PathLike, to_input: np.ndarray | None = None) -> Path:
    """Write :func:`cameras_json` to ``out`` (atomically: temporary file, then rename)."""
    out = Path(out)
    meta = cameras_json(scene, out, to_input)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.partial")
    temporary.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, out)
    return out


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` when both are on one drive, else absolute (POSIX)."""
    try:
        return Path(os.path.relpath(path.resolve(), folder)).as_posix()
    except ValueError:  # another drive (Windows)
        return path.resolve().as_posix()


__all__ = ["CameraExportError", "cameras_json", "write_cameras_json"]
