"""One scene normalisation for every loader: a similarity from the input frame into the model's box.

:func:`.scene.load_scene` calls :func:`scene_transform` once per scene, whatever the format.
``normalize`` selects it:

* ``"none"``: the identity; the loader's own bounds are kept.
* ``"poses"`` (nerfstudio's dataparser defaults: ``orientation_method="up"``,
  ``center_method="poses"``, ``auto_scale_poses``): rotate so that the mean camera up vector
  (``-y`` of the OpenCV camera) becomes ``+z``, move the mean camera centre to the origin, and
  scale so that every camera coordinate lies in ``[-1, 1]``.
* ``"focus"``: as ``"poses"`` but centred on the point closest (least squares) to every optical
  axis, nerfstudio's ``"focus"`` idea (the mean camera centre when the cameras do not look
  towards a common point).
* ``"auto"`` (default): ``"none"`` for the formats that are normalised by convention (Blender,
  D-NeRF, N3V, whose results stay bit-identical), ``"poses"`` for COLMAP and nerfstudio data.

The transform is ``x_model = s R x_input + t`` (:class:`SceneTransform`, a ``[4, 4]`` matrix
``[[s R, t], [0, 1]]``); camera-to-world matrices become ``[R R_c | s R c + t]`` (rotation stays a
rotation, intrinsics are unchanged) and points and depths scale by ``s``.

**Bounds after normalisation** (:func:`normalized_bounds`): the cube ``[-1, 1]^3`` (nerfstudio's
scene box, which holds every camera), tightened to the SfM points when the scene has at least
:data:`MIN_POINTS`: the per-axis 1st-99th percentile box of the normalised points (robust to
outliers), padded by 5% of its size on each side, clipped to ``[-1, 1]^3``. ``near`` / ``far``
cover the box from every camera (:func:`near_far_for_box`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NORMALIZE_MODES = ("auto", "none", "poses", "focus")
#: formats already in a canonical frame (kept as they are under ``normalize=auto``)
CANONICAL_FORMATS = ("blender", "dnerf", "n3v")
MIN_POINTS = 8
POINT_QUANTILES = (0.01, 0.99)
BOX_PADDING = 0.05


@dataclass(frozen=True)
class SceneTransform:
    """A similarity from the input (file) frame to the model frame: ``x' = s R x + t``.

    Attributes:
        matrix: ``[4, 4]`` float64 ``[[s R, t], [0, 0, 0, 1]]``.
        mode: the normalisation that produced it (``"none"``, ``"poses"``, ``"focus"``).
    """

    matrix: np.ndarray
    mode: str = "none"

    @classmethod
    def identity(cls) -> SceneTransform:
        return cls(np.eye(4), "none")

    @property
    def is_identity(self) -> bool:
        return bool(np.array_equal(self.matrix, np.eye(4)))

    @property
    def scale(self) -> float:
        """``s`` (the cube root of the determinant of ``s R``)."""
        return float(np.cbrt(np.linalg.det(self.matrix[:3, :3])))

    @property
    def rotation(self) -> np.ndarray:
        """``[3, 3]`` rotation ``R``."""
        return self.matrix[:3, :3] / self.scale

    def inverse(self) -> np.ndarray:
        """``[4, 4]`` model frame -> input frame: ``x = R^T (x' - t) / s``."""
        s, rotation, t = self.scale, self.rotation, self.matrix[:3, 3]
        out = np.eye(4)
        out[:3, :3] = rotation.T / s
        out[:3, 3] = -rotation.T @ t / s
        return out

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """``[P, 3]`` points in the model frame (float64)."""
        return np.asarray(points, dtype=np.float64) @ self.matrix[:3, :3].T + self.matrix[:3, 3]

    def apply_c2w(self, c2w: np.ndarray) -> np.ndarray:
        """``[N, 3, 4]`` camera-to-world in the model frame (float64; rotations stay rotations)."""
        c2w = np.asarray(c2w, dtype=np.float64)
        out = np.empty(c2w.shape[:-2] + (3, 4))
        out[..., :3] = self.rotation @ c2w[..., :3]
        out[..., 3] = self.apply_points(c2w[..., 3])
        return out

    def to_dict(self) -> dict:
        return {"matrix": self.matrix.tolist(), "scale": self.scale, "mode": self.mode}

    @classmethod
    def from_dict(cls, data: dict, source: str = "scene transform") -> SceneTransform:
        """Inverse of :meth:`to_dict`; a ``ValueError`` naming ``source`` if it is malformed."""
        try:
            matrix = np.asarray(data["matrix"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{source}: 'matrix' must be a 4x4 list of numbers") from None
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise ValueError(f"{source}: 'matrix' must be a finite 4x4 matrix")
        if np.abs(matrix[3] - (0, 0, 0, 1)).max() > 1e-9 or np.linalg.det(matrix[:3, :3]) <= 0:
            raise ValueError(f"{source}: 'matrix' is not a similarity [[s R, t], [0, 0, 0, 1]] with s > 0")
        return cls(matrix, str(data.get("mode", "none")))

    def save(self, path: str | Path) -> Path:
        """Write as JSON (``matrix``, ``scale``, ``mode``)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SceneTransform:
        """Read a file written by :meth:`save`; a one-line ``ValueError`` naming it otherwise."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: unreadable scene transform ({' '.join(str(error).split())})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls.from_dict(data, str(path))


def resolve_mode(mode: str, format: str) -> str:
    """The concrete mode (``none`` / ``poses`` / ``focus``) of ``mode`` for a scene of ``format``."""
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {mode!r}")
    if mode == "auto":
        return "none" if format in CANONICAL_FORMATS else "poses"
    return mode


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[3, 3]`` rotation taking unit direction ``a`` to unit direction ``b`` (Rodrigues)."""
    a = np.asarray(a, dtype=np.float64) / np.linalg.norm(a)
    b = np.asarray(b, dtype=np.float64) / np.linalg.norm(b)
    axis = np.cross(a, b)
    sine, cosine = np.linalg.norm(axis), float(a @ b)
    if sine < 1e-12:
        if cosine > 0:
            return np.eye(3)
        # opposite: half a turn about any axis orthogonal to a
        helper = np.eye(3)[np.argmin(np.abs(a))]
        axis = np.cross(a, helper)
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]]) / sine
    return np.eye(3) + sine * k + (1.0 - cosine) * (k @ k)


def focus_point(centres: np.ndarray, forwards: np.ndarray) -> np.ndarray:
    """The point closest (least squares) to every optical axis (``forwards``: ``[N, 3]`` unit
    directions), or the mean camera centre when the axes do not meet in front of the cameras
    (a forward-facing or degenerate capture)."""
    projector = np.eye(3)[None] - forwards[:, :, None] * forwards[:, None, :]  # I - d d^T
    lhs, rhs = projector.sum(0), (projector @ centres[:, :, None]).sum(0)[:, 0]
    focus = centres.mean(0)
    if len(centres) >= 2 and np.linalg.cond(lhs) < 1e6:
        candidate = np.linalg.solve(lhs, rhs)
        if np.mean(np.einsum("ij,ij->i", candidate - centres, forwards)) > 0:  # in front of them
            focus = candidate
    return focus


def scene_transform(c2w: np.ndarray, mode: str) -> SceneTransform:
    """The similarity of ``mode`` (``none``, ``poses`` or ``focus``) for these cameras.

    Args:
        c2w: ``[N, 3, 4]`` (or ``[N, 4, 4]``) OpenCV camera-to-world of every frame of the scene.
        mode: a concrete mode (see :func:`resolve_mode`).

    Returns:
        the :class:`SceneTransform` (identity for ``none``).
    """
    if mode == "none":
        return SceneTransform.identity()
    if mode not in ("poses", "focus"):
        raise ValueError(f"unknown normalisation {mode!r} (use none, poses or focus)")
    c2w = np.asarray(c2w, dtype=np.float64)
    centres, forwards = c2w[:, :3, 3], c2w[:, :3, 2]
    up = -c2w[:, :3, 1].mean(0)  # OpenCV cameras: y points down
    rotation = rotation_between(up, (0.0, 0.0, 1.0)) if np.linalg.norm(up) > 1e-9 else np.eye(3)
    centre = centres.mean(0) if mode == "poses" else focus_point(centres, forwards)
    extent = np.abs((centres - centre) @ rotation.T).max()
    scale = 1.0 / extent if extent > 0 else 1.0
    matrix = np.eye(4)
    matrix[:3, :3] = scale * rotation
    matrix[:3, 3] = -scale * rotation @ centre
    return SceneTransform(matrix, mode)


def normalized_bounds(
    centres: np.ndarray, points: np.ndarray | None = None
) -> tuple[np.ndarray, float, float]:
    """``(aabb [2, 3], near, far)`` of a normalised scene (see the module docstring).

    Args:
        centres: ``[N, 3]`` camera centres in the model frame.
        points: optional ``[P, 3]`` SfM points in the model frame.
    """
    cube = np.array([[-1.0] * 3, [1.0] * 3])
    aabb = cube
    if points is not None:
        points = np.asarray(points, dtype=np.float64)
        points = points[np.isfinite(points).all(axis=1)]
        if len(points) >= MIN_POINTS:
            low, high = np.quantile(points, POINT_QUANTILES, axis=0)
            pad = BOX_PADDING * (high - low)
            tight = np.stack([np.maximum(low - pad, -1.0), np.minimum(high + pad, 1.0)])
            if ((tight[1] - tight[0]) > 1e-3).all():
                aabb = tight
    near, far = near_far_for_box(aabb, np.asarray(centres, dtype=np.float64))
    return aabb, near, far


def camera_box(centres: np.ndarray, forwards: np.ndarray) -> np.ndarray:
    """Cube around the cameras' :func:`focus_point`, half-side = half the median camera distance
    to it (the bounds of un-normalised nerfstudio and COLMAP scenes)."""
    focus = focus_point(centres, forwards)
    distance = np.median(np.linalg.norm(centres - focus, axis=1))
    half = 0.5 * distance if distance > 0 else 1.0
    return np.stack([focus - half, focus + half])


def near_far_for_box(aabb: np.ndarray, centres: np.ndarray) -> tuple[float, float]:
    """Ray range covering the box from every camera: ``near`` the smallest camera-to-box distance
    (at least 1% of the box diagonal), ``far`` the largest camera-to-farthest-corner distance."""
    low, high = aabb
    outside = np.maximum(np.maximum(low - centres, centres - high), 0.0)
    to_box = np.linalg.norm(outside, axis=1)
    farthest = np.linalg.norm(np.maximum(np.abs(centres - low), np.abs(centres - high)), axis=1)
    diagonal = float(np.linalg.norm(high - low))
    near = max(float(to_box.min()), 0.01 * diagonal)
    return near, float(farthest.max())


__all__ = [
    "NORMALIZE_MODES",
    "SceneTransform",
    "camera_box",
    "focus_point",
    "near_far_for_box",
    "normalized_bounds",
    "resolve_mode",
    "rotation_between",
    "scene_transform",
]
