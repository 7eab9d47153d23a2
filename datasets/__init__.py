"""Cameras, scene loaders (Blender, D-NeRF, nerfstudio, N3V video) and analytic synthetic scenes.

Importing this package is cheap: the names below are loaded on first use (PEP 562), so
``import tensorfield.datasets`` pulls in neither torch nor imageio.

Main entry points:

* :func:`load_scene` -> :class:`Scene` with :class:`SceneSplit` s of images and :class:`Cameras`;
* :func:`make_scene` writes a procedural scene in the Blender / D-NeRF layout, with exact depth and
  an analytic description (:func:`load_primitives`, :func:`scene_density`);
  :func:`make_video_scene` writes the dynamic one as multi-view video in the N3V layout;
* :func:`read_points3d` reads COLMAP SfM points (``load_scene`` finds them by itself);
* :class:`DatasetError`: the one-line error every loader raises for bad data.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "Cameras": ".cameras",
    "look_at": ".cameras",
    "opengl_to_opencv": ".cameras",
    "orbit_poses": ".cameras",
    "DatasetError": ".errors",
    "Scene": ".scene",
    "SceneSplit": ".scene",
    "load_scene": ".scene",
    "recomposite": ".scene",
    "clear_image_cache": ".images",
    "distort": ".distortion",
    "undistort_points": ".distortion",
    "undistort_image": ".distortion",
    "read_ply_points": ".ply",
    "write_ply_points": ".ply",
    "make_scene": ".synthetic",
    "make_video_scene": ".synthetic",
    "read_points3d": ".colmap",
    "VideoOptions": ".n3v",
    "load_primitives": ".primitives",
    "scene_density": ".primitives",
    "render_rays": ".primitives",
    "Primitive": ".primitives",
}

__all__ = [
    "Cameras",
    "DatasetError",
    "Primitive",
    "Scene",
    "SceneSplit",
    "VideoOptions",
    "clear_image_cache",
    "distort",
    "load_primitives",
    "load_scene",
    "look_at",
    "make_scene",
    "make_video_scene",
    "opengl_to_opencv",
    "orbit_poses",
    "read_ply_points",
    "read_points3d",
    "recomposite",
    "render_rays",
    "scene_density",
    "undistort_image",
    "undistort_points",
    "write_ply_points",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .cameras import Cameras, look_at, opengl_to_opencv, orbit_poses
    from .colmap import read_points3d
    from .distortion import distort, undistort_image, undistort_points
    from .errors import DatasetError
    from .images import clear_image_cache
    from .n3v import VideoOptions
    from .ply import read_ply_points, write_ply_points
    from .primitives import Primitive, load_primitives, render_rays, scene_density
    from .scene import Scene, SceneSplit, load_scene, recomposite
    from .synthetic import make_scene, make_video_scene


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
