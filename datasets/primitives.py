"""Analytic primitives (spheres, oriented boxes) that move over time, and exact ray casting.

These are the ground truth of the synthetic scenes (:mod:`.synthetic`): images, depth maps and
occupancy all come from the closed-form ray-sphere and ray-box (slab) intersections below, so tests
can compare a reconstruction or a loader against exact values.

Motion: a primitive's centre follows a piecewise-linear path through ``path`` keyframes spread
evenly over t in [0, 1]; its rotation is ``Rz(yaw + spin t) Rx(tilt)`` (object -> world); it exists
only for ``visible[0] <= t <= visible[1]``. A ``time`` of ``None`` means t = 0.

Texture: ``color`` everywhere, or a two-colour pattern (``color`` / ``color2``) fixed to the object's
own frame (``R^T (p - c)``), so spinning and moving objects show their motion as a real capture does:
``"checker"`` (boxes: 3D checks of side ``texture_scale``; spheres: ``texture_scale`` checks per
quarter turn in longitude and latitude) or ``"stripes"`` (bands along the object's local z, in
latitude on spheres).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

_EPS = 1e-9
TEXTURES = ("", "checker", "stripes")


@dataclass
class Light:
    """Directional light with ambient term and a mild Blinn-Phong highlight.

    ``colour = albedo (ambient + diffuse max(n.l, 0)) + specular max(n.h, 0)^shininess``,
    ``h`` the half vector between ``l`` and the direction to the camera.
    """

    direction: tuple[float, float, float] = (0.45, -0.35, 0.82)  # towards the light, world frame
    ambient: float = 0.35
    diffuse: float = 0.65
    specular: float = 0.12
    shininess: float = 40.0

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, data: dict) -> Light:
        data = dict(data)
        if "direction" in data:
            data["direction"] = tuple(float(v) for v in data["direction"])
        return cls(**data)


@dataclass
class Primitive:
    """A sphere or an oriented box, possibly moving.

    Attributes:
        kind: ``"sphere"`` or ``"box"``.
        color: ``(r, g, b)`` albedo in [0, 1].
        path: ``[K][3]`` centre keyframes at times ``k / (K - 1)`` (one keyframe = static).
        radius: sphere radius.
        half_size: box half extents along its own axes.
        yaw, spin, tilt: rotation ``Rz(yaw + spin t) Rx(tilt)`` in radians (boxes, textured spheres).
        visible: ``(t0, t1)`` time interval during which the primitive exists.
        name: label for humans.
        texture: ``""`` (uniform ``color``), ``"checker"`` or ``"stripes"`` (see module docstring).
        color2: the pattern's second albedo.
        texture_scale: check size (boxes, world units) or checks per quarter turn (spheres).
    """

    kind: str
    color: tuple[float, float, float]
    path: list[tuple[float, float, float]]
    radius: float = 0.0
    half_size: tuple[float, float, float] = (0.0, 0.0, 0.0)
    yaw: float = 0.0
    spin: float = 0.0
    tilt: float = 0.0
    visible: tuple[float, float] = (0.0, 1.0)
    name: str = ""
    texture: str = ""
    color2: tuple[float, float, float] = (1.0, 1.0, 1.0)
    texture_scale: float = 2.0

    def __post_init__(self) -> None:
        if self.texture not in TEXTURES:
            raise ValueError(f"texture must be one of {TEXTURES}, got {self.texture!r}")

    # ------------------------------------------------------------------ motion
    def center(self, time: float | None = None) -> np.ndarray:
        """``[3]`` float64 centre at ``time``."""
        keys = np.asarray(self.path, dtype=np.float64).reshape(-1, 3)
        if keys.shape[0] == 1:
            return keys[0]
        t = min(max(0.0 if time is None else float(time), 0.0), 1.0) * (keys.shape[0] - 1)
        k = min(math.floor(t), keys.shape[0] - 2)
        w = t - k
        return keys[k] * (1.0 - w) + keys[k + 1] * w

    def rotation(self, time: float | None = None) -> np.ndarray:
        """``[3, 3]`` float64 object-to-world rotation at ``time``."""
        angle = self.yaw + self.spin * (0.0 if time is None else float(time))
        c, s = math.cos(angle), math.sin(angle)
        ct, st = math.cos(self.tilt), math.sin(self.tilt)
        rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        rx = np.array([[1.0, 0.0, 0.0], [0.0, ct, -st], [0.0, st, ct]])
        return rz @ rx

    def exists(self, time: float | None = None) -> bool:
        t = 0.0 if time is None else float(time)
        return self.visible[0] <= t <= self.visible[1]

    def bounding_radius(self, samples: int = 65) -> float:
        """Largest distance from the origin the primitive reaches over t in [0, 1].

        Exact for static primitives; moving ones are sampled at ``samples`` times (and every
        keyframe), which can miss a farther point between samples by a hair.
        """
        times = sorted(
            set(np.linspace(0.0, 1.0, samples).tolist())
            | {k / max(len(self.path) - 1, 1) for k in range(len(self.path))}
        )
        if self.kind == "sphere":
            return max(float(np.linalg.norm(self.center(t))) for t in times) + self.radius
        corners = np.array(
            [[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
        ) * np.asarray(self.half_size)
        return max(
            float(np.linalg.norm(self.center(t) + corners @ self.rotation(t).T, axis=1).max())
            for t in times
        )

    # ------------------------------------------------------------------ geometry
    def contains(self, points: Tensor, time: float | None = None) -> Tensor:
        """``[...]`` bool: which of ``points [..., 3]`` lie inside (closed) at ``time``."""
        array = _numpy(points)
        return torch.from_numpy(self._contains(array, time)).to(_device(points))

    def _contains(self, points: np.ndarray, time: float | None) -> np.ndarray:
        if not self.exists(time):
            return np.zeros(points.shape[:-1], dtype=bool)
        local = points - self.center(time)
        if self.kind == "sphere":
            return (local * local).sum(-1) <= self.radius**2
        local = local @ self.rotation(time)  # R^T (p - c) for row vectors
        return (np.abs(local) <= np.asarray(self.half_size)).all(-1)

    def intersect(
        self, origins: np.ndarray, directions: np.ndarray, time: float | None = None
    ) -> np.ndarray:
        """Distance to the nearest hit in front of each ray (numpy, float64).

        Args:
            origins: ``[N, 3]`` or ``[1, 3]`` (one shared origin, the common case of a camera).
            directions: ``[N, 3]`` unit directions.
            time: scene time.

        Returns:
            ``t [N]``: distance along the ray, ``inf`` on a miss.
        """
        n = directions.shape[0]
        if not self.exists(time):
            return np.full(n, np.inf)
        offset = origins - self.center(time)
        if self.kind == "sphere":
            if offset.shape[0] == 1:
                b = directions @ offset[0]
            else:
                b = np.einsum("ij,ij->i", offset, directions)
            c = np.einsum("ij,ij->i", offset, offset) - self.radius**2
            disc = b * b - c
            root = np.sqrt(np.maximum(disc, 0.0))
            near, far = -b - root, -b + root
            t = np.where(near > _EPS, near, np.where(far > _EPS, far, np.inf))
            return np.where(disc >= 0, t, np.inf)
        rotation = self.rotation(time)
        local_o = offset @ rotation  # R^T (o - c) for row vectors
        local_d = directions @ rotation
        inverse = 1.0 / np.where(np.abs(local_d) < 1e-30, 1e-30, local_d)
        half = np.asarray(self.half_size)
        t_low, t_high = (-half - local_o) * inverse, (half - local_o) * inverse
        near, far = np.minimum(t_low, t_high), np.maximum(t_low, t_high)
        # column-wise: numpy reductions over a length-3 last axis are slow
        enter = np.maximum(np.maximum(near[:, 0], near[:, 1]), near[:, 2])
        leave = np.minimum(np.minimum(far[:, 0], far[:, 1]), far[:, 2])
        t = np.where(enter > _EPS, enter, leave)
        return np.where((enter <= leave) & (leave > _EPS), t, np.inf)

    def normal(self, points: np.ndarray, time: float | None = None) -> np.ndarray:
        """``[N, 3]`` outward unit normals at surface ``points [N, 3]`` (numpy, float64).

        For a box, the face is the axis along which the point is relatively farthest out.
        """
        local = points - self.center(time)
        if self.kind == "sphere":
            return local / self.radius
        rotation = self.rotation(time)
        local = local @ rotation
        relative = np.abs(local) / np.asarray(self.half_size)
        axis = relative.argmax(-1)
        normal = np.zeros_like(local)
        rows = np.arange(local.shape[0])
        normal[rows, axis] = np.sign(local[rows, axis])
        return normal @ rotation.T

    def albedo(self, points: np.ndarray, time: float | None = None) -> np.ndarray:
        """``[N, 3]`` albedo at surface ``points [N, 3]`` (numpy, float64), from the texture."""
        base = np.broadcast_to(np.asarray(self.color, dtype=np.float64), points.shape).copy()
        if not self.texture or points.shape[0] == 0:
            return base
        local = (points - self.center(time)) @ self.rotation(time)  # object frame
        scale = float(self.texture_scale)
        if self.kind == "sphere":
            unit = local / np.maximum(np.linalg.norm(local, axis=-1, keepdims=True), 1e-12)
            longitude = np.arctan2(unit[:, 1], unit[:, 0])
            latitude = np.arcsin(np.clip(unit[:, 2], -1.0, 1.0))
            cells = (longitude, latitude) if self.texture == "checker" else (latitude,)
            index = sum(np.floor(c * scale / (0.5 * math.pi)) for c in cells)
        else:
            cells = local.T if self.texture == "checker" else local[:, 2:].T
            index = sum(np.floor(c / scale) for c in cells)
        second = (index.astype(np.int64) % 2) == 1
        base[second] = np.asarray(self.color2, dtype=np.float64)
        return base

    # ------------------------------------------------------------------ serialisation
    def to_json(self) -> dict:
        out = {
            "kind": self.kind,
            "name": self.name,
            "color": list(self.color),
            "path": [list(p) for p in self.path],
        }
        if self.kind == "sphere":
            out["radius"] = self.radius
            if self.texture:  # a textured sphere's rotation shows
                out.update(yaw=self.yaw, spin=self.spin, tilt=self.tilt)
        else:
            out.update(half_size=list(self.half_size), yaw=self.yaw, spin=self.spin, tilt=self.tilt)
        out["visible"] = list(self.visible)
        if self.texture:
            out.update(texture=self.texture, color2=list(self.color2), texture_scale=self.texture_scale)
        return out

    @classmethod
    def from_json(cls, data: dict) -> Primitive:
        return cls(
            kind=data["kind"],
            color=tuple(float(c) for c in data["color"]),
            path=[tuple(float(v) for v in p) for p in data["path"]],
            radius=float(data.get("radius", 0.0)),
            half_size=tuple(float(h) for h in data.get("half_size", (0.0, 0.0, 0.0))),
            yaw=float(data.get("yaw", 0.0)),
            spin=float(data.get("spin", 0.0)),
            tilt=float(data.get("tilt", 0.0)),
            visible=tuple(float(v) for v in data.get("visible", (0.0, 1.0))),
            name=str(data.get("name", "")),
            texture=str(data.get("texture", "")),
            color2=tuple(float(c) for c in data.get("color2", (1.0, 1.0, 1.0))),
            texture_scale=float(data.get("texture_scale", 2.0)),
        )


@dataclass
class RayHits:
    """What :func:`render_rays` sees along each ray.

    Attributes:
        rgb: ``[N, 3]`` shaded colour (0 on a miss).
        hit: ``[N]`` bool.
        depth: ``[N]`` distance to the first surface along the unit ray, 0 on a miss.
        index: ``[N]`` index of the primitive hit, -1 on a miss.
        normal: ``[N, 3]`` outward surface normal (0 on a miss).
    """

    rgb: Tensor
    hit: Tensor
    depth: Tensor
    index: Tensor
    normal: Tensor = field(repr=False)


def render_rays(
    primitives: list[Primitive],
    origins: Tensor,
    directions: Tensor,
    time: float | None = None,
    light: Light | None = None,
) -> RayHits:
    """Cast rays against all primitives and shade the nearest hit.

    The arithmetic runs in float64 numpy: it is single-threaded, which on a small shared CPU is
    faster than torch's OpenMP kernels for these many small element-wise operations.

    Args:
        primitives: the scene.
        origins, directions: ``[N, 3]`` rays (tensors or arrays; directions normalised here).
        time: scene time in [0, 1] (``None`` = 0).
        light: shading (default :class:`Light`).

    Returns:
        :class:`RayHits` of float64 / bool / int64 CPU tensors.
    """
    light = Light() if light is None else light
    origins = _numpy(origins).reshape(-1, 3)
    directions = _numpy(directions).reshape(-1, 3)
    directions = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    if origins.shape[0] > 1 and (origins == origins[:1]).all():
        origins = origins[:1]  # one camera: shared origin, cheaper intersections
    n = directions.shape[0]
    best = np.full(n, np.inf)
    index = np.full(n, -1, dtype=np.int64)
    for k, primitive in enumerate(primitives):
        t = primitive.intersect(origins, directions, time)
        closer = t < best
        best = np.where(closer, t, best)
        index[closer] = k
    normal = np.zeros((n, 3))
    albedo = np.zeros((n, 3))
    for k, primitive in enumerate(primitives):
        rows = np.flatnonzero(index == k)
        if rows.size:
            row_origins = origins[rows] if origins.shape[0] > 1 else origins
            points = row_origins + directions[rows] * best[rows, None]
            normal[rows] = primitive.normal(points, time)
            albedo[rows] = primitive.albedo(points, time)
    hit = index >= 0
    to_light = np.asarray(light.direction, dtype=np.float64)
    to_light = to_light / np.linalg.norm(to_light)
    lambert = np.maximum(normal @ to_light, 0.0)
    halfway = to_light - directions
    halfway /= np.maximum(np.linalg.norm(halfway, axis=-1, keepdims=True), 1e-12)
    highlight = np.maximum(np.einsum("ij,ij->i", normal, halfway), 0.0) ** light.shininess
    rgb = (
        albedo * (light.ambient + light.diffuse * lambert)[:, None]
        + light.specular * highlight[:, None]
    )
    rgb = np.where(hit[:, None], np.clip(rgb, 0.0, 1.0), 0.0)
    depth = np.where(hit, best, 0.0)
    as_tensor = torch.from_numpy
    return RayHits(
        rgb=as_tensor(rgb),
        hit=as_tensor(hit),
        depth=as_tensor(depth),
        index=as_tensor(index),
        normal=as_tensor(normal),
    )


def _numpy(values) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().to(torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def _device(values) -> torch.device:
    return values.device if isinstance(values, Tensor) else torch.device("cpu")


# ---------------------------------------------------------------------------------- scene files
def _scene_file(path: str | Path) -> Path:
    path = Path(path)
    return path / "scene.json" if path.is_dir() else path


def load_primitives(path: str | Path) -> list[Primitive]:
    """The primitives of a synthetic scene (its folder or its ``scene.json``)."""
    data = json.loads(_scene_file(path).read_text(encoding="utf-8"))
    return [Primitive.from_json(p) for p in data["primitives"]]


def load_light(path: str | Path) -> Light:
    """The light of a synthetic scene (its folder or its ``scene.json``)."""
    data = json.loads(_scene_file(path).read_text(encoding="utf-8"))
    return Light.from_json(data.get("light", {}))


def scene_density(
    scene: str | Path | list[Primitive], points: Tensor, time: float | None = None
) -> Tensor:
    """Analytic occupancy: 1 inside any primitive existing at ``time``, else 0.

    Args:
        scene: a synthetic scene folder, its ``scene.json``, or a list of primitives.
        points: ``[..., 3]`` world points.
        time: scene time in [0, 1] (``None`` = 0; ignored by static primitives).

    Returns:
        ``[...]`` float32 occupancy in {0, 1}.
    """
    primitives = scene if isinstance(scene, list) else load_primitives(scene)
    flat = _numpy(points).reshape(-1, 3)
    inside = np.zeros(flat.shape[0], dtype=bool)
    for primitive in primitives:
        inside |= primitive._contains(flat, time)
    return (
        torch.from_numpy(inside.astype(np.float32)).reshape(points.shape[:-1]).to(_device(points))
    )
