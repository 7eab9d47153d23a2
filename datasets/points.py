"""SfM points for Gaussian initialisation: where a scene keeps them and which frame they are in.

:func:`find_scene_points` fills :attr:`Scene.points` / :attr:`Scene.points_rgb` for formats whose
parser found none itself. It looks, in this order, for

1. a PLY beside the metadata: ``points3d.ply`` (3DGS's name for the Blender scenes' initial
   cloud; also ``points3D.ply``), read with :func:`.ply.read_ply_points`;
2. a COLMAP sparse model: ``points3D.bin`` or ``points3D.txt`` (binary first) in ``sparse/0``,
   ``colmap/sparse/0`` (where ``ns-process-data`` puts it) or ``sparse``, read with
   :func:`.colmap.read_points3d`.

The first hit wins. nerfstudio's ``ply_file_path`` key is read by the nerfstudio parser itself
(:mod:`.nerfstudio`) and takes precedence over both.

**World frames.** Our poses keep the world frame of the file they come from (only camera axes are
converted), so points need converting only where the format moved the world:

* Blender / D-NeRF and N3V (LLFF keeps COLMAP's world, it only permutes camera axes): used as read.
* nerfstudio ``transforms.json``: ``ns-process-data`` writes the poses *after* applying
  ``applied_transform`` ``A`` (``[3, 4]`` or ``[4, 4]``) to COLMAP's world, and writes its
  ``ply_file_path`` cloud already transformed. A COLMAP model found beside it is still in
  COLMAP's world, so it is mapped with ``p' = A[:3, :3] p + A[:3, 3]`` (identity when the key is
  absent), as nerfstudio does when it builds the cloud from COLMAP. A ``points3d.ply`` beside it is
  taken to be in the poses' frame already. In both cases instant-ngp's ``scale`` key then
  multiplies the points, as it multiplies the camera positions.

An empty cloud counts as no cloud (with a warning). Malformed files raise a one-line
:class:`~.errors.DatasetError` naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .colmap import read_points3d
from .errors import DatasetError, display_path
from .parsing import number, read_json
from .ply import read_ply_points

PLY_NAMES = ("points3d.ply", "points3D.ply")
COLMAP_FOLDERS = ("sparse/0", "colmap/sparse/0", "sparse")
COLMAP_NAMES = ("points3D.bin", "points3D.txt")


def locate_points(root: Path) -> tuple[Path, str] | None:
    """The point file a scene folder provides and its kind (``"ply"`` or ``"colmap"``), or None."""
    for name in PLY_NAMES:
        if (root / name).is_file():
            return root / name, "ply"
    for folder in COLMAP_FOLDERS:
        for name in COLMAP_NAMES:
            if (root / folder / name).is_file():
                return root / folder / name, "colmap"
    return None


def find_scene_points(root: Path, format: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Points (and colours) of the scene at ``root``, in the frame of its poses, or ``None``.

    Args:
        root: scene folder.
        format: the loader's format name (``"nerfstudio"`` maps COLMAP points with
            ``applied_transform`` and ``scale``; every other format uses them as read).

    Returns:
        ``points [P, 3]`` float32 and ``colors [P, 3]`` float32 in [0, 1] (or ``None`` for a PLY
        without colour), or ``None`` when the folder has no point file.

    Raises:
        DatasetError: a malformed point file, or a malformed ``applied_transform`` / ``scale``.
    """
    found = locate_points(root)
    if found is None:
        return None
    path, kind = found
    points, colors = read_ply_points(path, root) if kind == "ply" else read_points3d(path, root)
    if len(points) == 0:
        warnings.warn(
            f"{display_path(path, root)}: no points, continuing without points", stacklevel=3
        )
        return None
    if format == "nerfstudio":
        points = _to_nerfstudio_frame(points, root, from_colmap=kind == "colmap")
    return points.astype(np.float32), colors


def _to_nerfstudio_frame(points: np.ndarray, root: Path, from_colmap: bool) -> np.ndarray:
    """Apply ``applied_transform`` (COLMAP points only) and ``scale`` of ``transforms.json``."""
    path = root / "transforms.json"
    meta = read_json(path, root)
    points = points.astype(np.float64)
    if from_colmap and "applied_transform" in meta:
        try:
            applied = np.asarray(meta["applied_transform"], dtype=np.float64)
        except (TypeError, ValueError):
            applied = np.zeros(0)
        if applied.shape not in ((3, 4), (4, 4)) or not np.isfinite(applied).all():
            raise DatasetError(
                path, "applied_transform must be a finite 3x4 or 4x4 matrix", root=root
            )
        points = points @ applied[:3, :3].T + applied[:3, 3]
    if "scale" in meta:
        points = points * number(meta["scale"], "scale", path, root, positive=True)
    return points
