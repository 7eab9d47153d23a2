"""Viewer camera math, free of Qt: orbit / pan / zoom, fly keys, field of view, snapping to
dataset cameras, and camera paths from keyframes.

Conventions are the package's (:mod:`tensorfield.datasets.cameras`): camera-to-world in the
OpenCV frame, columns of the rotation = camera ``right, down, forward`` in world coordinates.
The viewer's pinhole has square pixels, the principal point at the image centre and a vertical
field of view, so that ``fy = 0.5 * H / tan(fov / 2)`` is computed exactly as
:func:`tensorfield.engine.render.load_camera_path` does; a view saved as a camera-path JSON and
rendered by ``tensorfield render`` is therefore the same camera, bit for bit.

Orbiting is turntable style: yaw about the world ``up`` axis through the pivot, pitch about the
camera's right axis, never past the poles (so the horizon stays level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tensorfield.datasets.cameras import Cameras
from tensorfield.engine.render import CameraPath

MIN_PIVOT_DISTANCE = 1e-3
MAX_PITCH = math.radians(89.0)  # angle between forward and the horizontal plane


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """``[3, 3]`` rotation by ``angle`` (radians, right-handed) about unit ``axis`` (Rodrigues)."""
    x, y, z = _normalize(np.asarray(axis, dtype=np.float64))
    c, s = math.cos(angle), math.sin(angle)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) * c + s * k + (1 - c) * np.outer([x, y, z], [x, y, z])


def look_at_rotation(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world rotation (columns right, down, forward) looking from eye to target."""
    forward = _normalize(np.asarray(target, float) - np.asarray(eye, float))
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight along up: any right will do
        right = np.cross(forward, np.array([1.0, 0.0, 0.0]) if abs(forward[0]) < 0.9 else np.array([0.0, 1.0, 0.0]))
    right = _normalize(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward], axis=1)


def focal_from_fov(fov_y_deg: float, height: int) -> float:
    """``fy`` of a vertical field of view, the expression ``load_camera_path`` uses."""
    return 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)


def fov_from_focal(fy: float, height: int) -> float:
    """Vertical field of view in degrees (the expression ``save_camera_path`` uses)."""
    return math.degrees(2 * math.atan(0.5 * height / float(fy)))


@dataclass(frozen=True)
class ViewCamera:
    """The viewer's camera: a pose, an orbit pivot in front of it and a vertical field of view.

    Attributes:
        rotation: ``[3, 3]`` float64 camera-to-world rotation (OpenCV: right, down, forward).
        position: ``[3]`` float64 camera centre.
        pivot_distance: distance along ``forward`` to the point orbiting turns around.
        fov_y: vertical field of view in degrees.
        up: ``[3]`` unit world direction that is up on screen (orbit axis, fly up/down).
    """

    rotation: np.ndarray
    position: np.ndarray
    pivot_distance: float = 4.0
    fov_y: float = 50.0
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))

    # ------------------------------------------------------------------ construction
    @classmethod
    def looking_at(cls, eye, target, up=(0.0, 0.0, 1.0), fov_y: float = 50.0) -> ViewCamera:
        eye = np.asarray(eye, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        up = _normalize(np.asarray(up, dtype=np.float64))
        distance = max(float(np.linalg.norm(target - eye)), MIN_PIVOT_DISTANCE)
        return cls(look_at_rotation(eye, target, up), eye, distance, float(fov_y), up)

    @classmethod
    def from_cameras(cls, cameras: Cameras, index: int, pivot=None, up=None) -> ViewCamera:
        """The view of dataset camera ``index`` (exact pose; field of view from its ``fy``).

        Args:
            pivot: the point orbiting should turn around (default: the point in front of the
                camera nearest the world origin); only its distance along ``forward`` is kept.
            up: world up (default: the camera's ``-down`` axis).
        """
        c2w = cameras.c2w[index].detach().cpu().double().numpy()
        rotation, position = c2w[:, :3].copy(), c2w[:, 3].copy()
        forward = rotation[:, 2]
        pivot = np.zeros(3) if pivot is None else np.asarray(pivot, dtype=np.float64)
        distance = max(float(np.dot(pivot - position, forward)), MIN_PIVOT_DISTANCE)
        if distance <= MIN_PIVOT_DISTANCE:
            distance = max(float(np.linalg.norm(pivot - position)), 1.0)
        up = -rotation[:, 1] if up is None else _normalize(np.asarray(up, dtype=np.float64))
        fov = fov_from_focal(float(cameras.fy[index]), cameras.height)
        return cls(rotation, position, distance, fov, up)

    # ------------------------------------------------------------------ accessors
    @property
    def right(self) -> np.ndarray:
        return self.rotation[:, 0]

    @property
    def down(self) -> np.ndarray:
        return self.rotation[:, 1]

    @property
    def forward(self) -> np.ndarray:
        return self.rotation[:, 2]

    @property
    def pivot(self) -> np.ndarray:
        return self.position + self.pivot_distance * self.forward

    def c2w(self) -> torch.Tensor:
        """``[3, 4]`` float32 camera-to-world (OpenCV)."""
        return torch.from_numpy(np.concatenate([self.rotation, self.position[:, None]], axis=1)).float()

    def cameras(self, width: int, height: int, time: float | None = None) -> Cameras:
        """A one-camera batch of this view at ``width`` x ``height`` (time ``None`` = static)."""
        focal = torch.tensor([focal_from_fov(self.fov_y, height)])
        return Cameras(
            c2w=self.c2w()[None],
            fx=focal.clone(),
            fy=focal,
            cx=torch.tensor([width / 2.0]),
            cy=torch.tensor([height / 2.0]),
            width=int(width),
            height=int(height),
            times=torch.tensor([float("nan") if time is None else float(time)]),
        )

    # ------------------------------------------------------------------ motion
    def orbit(self, yaw: float, pitch: float) -> ViewCamera:
        """Turn around the pivot: ``yaw`` radians about world up, ``pitch`` about the camera's
        right axis (positive = camera moves up, looks more downwards); pitch stops short of the poles."""
        current = math.asin(float(np.clip(np.dot(self.forward, self.up), -1.0, 1.0)))  # + = looking up
        target = float(np.clip(current - pitch, -MAX_PITCH, MAX_PITCH))
        pitch = current - target
        turn = axis_angle_matrix(self.up, -yaw)
        rotation = turn @ self.rotation
        tilt = axis_angle_matrix(rotation[:, 0], -pitch)
        rotation = tilt @ rotation
        pivot = self.pivot
        position = pivot - self.pivot_distance * rotation[:, 2]
        return replace(self, rotation=_orthonormalize(rotation), position=position)

    def pan(self, dx: float, dy: float) -> ViewCamera:
        """Slide sideways by ``dx``, ``dy`` fractions of the view height at the pivot's depth
        (dragging right moves the scene right: the camera moves left)."""
        extent = 2.0 * self.pivot_distance * math.tan(math.radians(self.fov_y) / 2)
        shift = -dx * extent * self.right - dy * extent * self.down
        return replace(self, position=self.position + shift)

    def zoom(self, steps: float, factor: float = 0.9) -> ViewCamera:
        """Dolly towards the pivot (``steps`` > 0) or away; the pivot stays put."""
        pivot = self.pivot
        distance = max(self.pivot_distance * factor ** float(steps), MIN_PIVOT_DISTANCE)
        return replace(self, position=pivot - distance * self.forward, pivot_distance=distance)

    def fly(self, forward: float = 0.0, right: float = 0.0, up: float = 0.0) -> ViewCamera:
        """Move camera and pivot together: along the view direction, the camera's right axis and
        world up (WASD / QE), distances in world units."""
        shift = forward * self.forward + right * self.right + up * self.up
        return replace(self, position=self.position + shift)

    def with_fov(self, fov_y: float) -> ViewCamera:
        return replace(self, fov_y=float(np.clip(fov_y, 5.0, 150.0)))


def _orthonormalize(rotation: np.ndarray) -> np.ndarray:
    """Nearest rotation (removes drift accumulated over many small turns)."""
    u, _, vt = np.linalg.svd(rotation)
    result = u @ vt
    if np.linalg.det(result) < 0:
        u[:, -1] *= -1
        result = u @ vt
    return result


# ------------------------------------------------------------------------------- keyframes
@dataclass(frozen=True)
class Keyframe:
    """One recorded view: pose, field of view and time (``None`` = static)."""

    rotation: np.ndarray
    position: np.ndarray
    fov_y: float
    time: float | None = None

    @classmethod
    def of(cls, camera: ViewCamera, time: float | None = None) -> Keyframe:
        return cls(camera.rotation.copy(), camera.position.copy(), camera.fov_y, time)

    def to_json(self) -> dict:
        return {
            "rotation": self.rotation.tolist(),
            "position": self.position.tolist(),
            "fov": self.fov_y,
            "time": self.time,
        }

    @classmethod
    def from_json(cls, data: dict) -> Keyframe:
        time = data.get("time")
        return cls(
            np.asarray(data["rotation"], dtype=np.float64).reshape(3, 3),
            np.asarray(data["position"], dtype=np.float64).reshape(3),
            float(data["fov"]),
            None if time is None else float(time),
        )


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """``(w, x, y, z)`` unit quaternion of a rotation matrix (Shepperd's method)."""
    m = rotation
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    return q / np.linalg.norm(q)


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def slerp(q0: np.ndarray, q1: np.ndarray, u: float) -> np.ndarray:
    """Spherical linear interpolation along the shorter arc."""
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + u * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(dot)
    return (math.sin((1 - u) * theta) * q0 + math.sin(u * theta) * q1) / math.sin(theta)


def interpolate_keyframes(keyframes: list[Keyframe], n_frames: int, width: int, height: int) -> CameraPath:
    """A camera path through ``keyframes``: positions on a Catmull-Rom spline, orientations by
    slerp, field of view and time linear; frames spread evenly over the segments, the first and
    last frame exactly on the first and last keyframe.

    A keyframe without time gives ``nan`` (static) frames.
    """
    if not keyframes:
        raise ValueError("no keyframes")
    if len(keyframes) == 1 or n_frames <= 1:
        samples = [(0, 0.0)] * max(n_frames, 1)
    else:
        segments = len(keyframes) - 1
        samples = []
        for i in range(n_frames):
            s = i * segments / (n_frames - 1)
            k = min(int(s), segments - 1)
            samples.append((k, s - k))
    positions = [k.position for k in keyframes]
    quats = [rotation_to_quaternion(k.rotation) for k in keyframes]
    c2w, fovs, times = [], [], []
    for k, u in samples:
        a, b = keyframes[k], keyframes[min(k + 1, len(keyframes) - 1)]
        p0 = positions[max(k - 1, 0)]
        p1, p2 = positions[k], positions[min(k + 1, len(positions) - 1)]
        p3 = positions[min(k + 2, len(positions) - 1)]
        position = _catmull_rom(p0, p1, p2, p3, u)
        rotation = quaternion_to_rotation(slerp(quats[k], quats[min(k + 1, len(quats) - 1)], u))
        if u == 0.0:  # land exactly on keyframes
            position, rotation = a.position, a.rotation
        c2w.append(np.concatenate([rotation, position[:, None]], axis=1))
        fovs.append((1 - u) * a.fov_y + u * b.fov_y)
        if a.time is None or b.time is None:
            times.append(float("nan"))
        else:
            times.append((1 - u) * a.time + u * b.time)
    if n_frames > 1 and len(keyframes) > 1:
        last = keyframes[-1]
        c2w[-1] = np.concatenate([last.rotation, last.position[:, None]], axis=1)
        fovs[-1] = last.fov_y
        times[-1] = float("nan") if last.time is None else last.time
    n = len(c2w)
    focal = torch.tensor([focal_from_fov(f, height) for f in fovs])
    return CameraPath(
        Cameras(
            c2w=torch.from_numpy(np.stack(c2w)).float(),
            fx=focal.clone(),
            fy=focal,
            cx=torch.full((n,), width / 2.0),
            cy=torch.full((n,), height / 2.0),
            width=int(width),
            height=int(height),
            times=torch.tensor(times, dtype=torch.float32),
        )
    )


def _catmull_rom(p0, p1, p2, p3, u: float) -> np.ndarray:
    """Uniform Catmull-Rom spline between ``p1`` (u = 0) and ``p2`` (u = 1)."""
    u2, u3 = u * u, u * u * u
    return 0.5 * ((2 * p1) + (-p0 + p2) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u2 + (-p0 + 3 * p1 - 3 * p2 + p3) * u3)
