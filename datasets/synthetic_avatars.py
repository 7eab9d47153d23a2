"""Procedural articulated humanoids filmed by one camera: ground truth for avatar methods (MIGS).

Each identity is a 19-joint humanoid (:data:`HUMANOID_JOINTS`: pelvis, spine, chest, neck, head,
shoulders, elbows, wrists, hips, knees, ankles, toes) with its own proportions (height, shoulder
and hip width, arm and leg length, girth) and clothes (skin and hair colours, a shirt with two-colour
stripes or checks, sleeves, trousers of another colour, shoes). The body is 17 rigid parts,
capsules (neck, limbs) and ellipsoids (pelvis, abdomen, torso, head, hands, feet), each attached to
one joint (:attr:`BodyPart.bone`): a part moves with that joint's LBS bone transform ``G_j``
(:mod:`tensorfield.fields.skeleton`), so the ground-truth skinning weight of every surface point
is one-hot on its part's joint, and ``x_posed = G_j x_rest`` exactly. Capsules end in spheres
centred on the joints, which fill the elbows and knees at any bend.

Motion: every joint angle (the three components of its rotation vector) follows
``mid + half (0.65 sin(2 pi f1 s + p1) + 0.3 sin(2 pi f2 s + p2))`` over the sequence time
``s in [0, 1]``, within per-joint limits (:func:`joint_limits`; elbows and knees are hinges),
with random frequencies and phases per identity; the subject turns about the vertical axis
(``turns`` revolutions over the sequence, with a slight sway) in front of ONE fixed camera, as in
ZJU-MoCap's monocular captures. Frames are rendered by exact ray casting (ray-capsule and
ray-ellipsoid intersections in each part's rest frame, float64 numpy), 2x2 supersampled for
anti-aliased colour and alpha, shaded with :class:`~.primitives.Light` (ambient + Lambert + a mild
highlight). World frame: z up, the subject faces -y at the start and stands on z = 0; the camera
looks along +y.

Splits per training identity: ``train`` (frames at ``s`` in [0, 0.75]) and ``novel_pose``
(frames at ``s`` in [0.85, 1]: later poses, never seen in training, as in the ZJU-MoCap protocol);
the held-out identities (the last ``n_held_out``) appear only in ``novel_identity`` (their first
frames, e.g. for fitting a new identity row) and ``novel_identity_pose`` (their later frames).

:func:`generate_avatars` returns everything in memory (:class:`GeneratedAvatars`);
:func:`make_avatars` writes it in the :mod:`.avatars` layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tensorfield.fields.skeleton import Skeleton

from .avatars import AvatarSequence, write_avatars
from .cameras import Cameras, look_at
from .primitives import Light

HUMANOID_JOINTS: tuple[str, ...] = (
    "pelvis", "spine", "chest", "neck", "head",
    "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
    "l_hip", "l_knee", "l_ankle", "l_toe", "r_hip", "r_knee", "r_ankle", "r_toe",
)  # fmt: skip
HUMANOID_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 3, 2, 5, 6, 2, 8, 9, 0, 11, 12, 13, 0, 15, 16, 17)
MATERIALS = ("skin", "head", "shirt", "sleeve", "trousers", "shoes")
PATTERNS = ("stripes", "checks")
_SUBSAMPLES = ((0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75))
_EPS = 1e-9


# ====================================================================== identities
@dataclass
class BodyShape:
    """Proportions of one identity.

    Attributes:
        height: standing height in metres (top of the head).
        shoulder_width, hip_width, arm_length, leg_length: multipliers of the average proportions.
        girth: multiplier of every limb and trunk radius.
    """

    height: float = 1.75
    shoulder_width: float = 1.0
    hip_width: float = 1.0
    arm_length: float = 1.0
    leg_length: float = 1.0
    girth: float = 1.0


@dataclass
class Appearance:
    """Colours (RGB albedo in [0, 1]) and the shirt's pattern of one identity.

    Attributes:
        skin, hair, shirt, shirt_second, trousers, shoes: albedos.
        pattern: ``"stripes"`` (horizontal bands) or ``"checks"``, in ``shirt`` / ``shirt_second``.
        pattern_size: band / check size in metres.
    """

    skin: tuple[float, float, float] = (0.85, 0.65, 0.52)
    hair: tuple[float, float, float] = (0.20, 0.13, 0.08)
    shirt: tuple[float, float, float] = (0.20, 0.40, 0.80)
    shirt_second: tuple[float, float, float] = (0.95, 0.95, 0.90)
    trousers: tuple[float, float, float] = (0.25, 0.25, 0.30)
    shoes: tuple[float, float, float] = (0.10, 0.10, 0.10)
    pattern: str = "stripes"
    pattern_size: float = 0.06


@dataclass
class BodyPart:
    """A rigid capsule or ellipsoid in the rest pose, moved by the bone transform of ``bone``.

    Attributes:
        name: e.g. ``"l_forearm"``.
        bone: joint index whose ``G_j`` moves the part.
        kind: ``"capsule"`` (segment ``start -> end``, ``radius``) or ``"ellipsoid"``
            (``center``, ``axes`` columns = its principal directions, ``semi_axes``).
        material: one of :data:`MATERIALS` (how :meth:`SyntheticAvatar.albedo` colours it).
    """

    name: str
    bone: int
    kind: str
    material: str
    start: np.ndarray = field(default_factory=lambda: np.zeros(3))
    end: np.ndarray = field(default_factory=lambda: np.zeros(3))
    radius: float = 0.0
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    axes: np.ndarray = field(default_factory=lambda: np.eye(3))
    semi_axes: np.ndarray = field(default_factory=lambda: np.ones(3))

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """``[N]`` distance to the first hit in front of unit rays (rest frame), ``inf`` on a miss.

        Capsule = union of the finite cylinder's side and the two end spheres, so its first hit
        is the nearest of theirs (a ray entering through a cylinder's end disc enters the sphere
        there first). Ellipsoid: the quadratic in ``t`` of ``|S^-1 Q^T (o + t d - c)| = 1``.
        """
        if self.kind == "capsule":
            return self._intersect_capsule(origins, directions)
        local_o = ((origins - self.center) @ self.axes) / self.semi_axes
        local_d = (directions @ self.axes) / self.semi_axes
        return _near_root(
            (local_d * local_d).sum(-1),
            (local_o * local_d).sum(-1),
            (local_o * local_o).sum(-1) - 1.0,
        )

    def _intersect_capsule(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        axis = self.end - self.start
        length2 = float(axis @ axis)
        offset = origins - self.start
        axial_d, axial_o = directions @ axis, offset @ axis
        # side of the infinite cylinder: |(o + t d - a) x axis|^2 = r^2 |axis|^2
        a = length2 - axial_d**2
        b = length2 * (offset * directions).sum(-1) - axial_o * axial_d
        c = length2 * (offset * offset).sum(-1) - axial_o**2 - self.radius**2 * length2
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = _near_root(np.where(a > 1e-12, a, 1.0), b, np.where(a > 1e-12, c, 1.0))
            along = axial_o + t_side * axial_d
            t_side = np.where((a > 1e-12) & (along >= 0.0) & (along <= length2), t_side, np.inf)
        best = t_side
        for centre in (self.start, self.end):
            oc = origins - centre
            t_cap = _near_root(
                np.ones(directions.shape[0]),
                (oc * directions).sum(-1),
                (oc * oc).sum(-1) - self.radius**2,
            )
            best = np.minimum(best, t_cap)
        return best

    def normal(self, points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` outward unit normals at rest-frame surface ``points``."""
        if self.kind == "capsule":
            axis = self.end - self.start
            h = np.clip(((points - self.start) @ axis) / (axis @ axis), 0.0, 1.0)
            out = points - (self.start + h[:, None] * axis)
        else:
            local = ((points - self.center) @ self.axes) / self.semi_axes
            out = (local / self.semi_axes) @ self.axes.T
        return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)

    def surface_residual(self, points: np.ndarray) -> np.ndarray:
        """``[N]`` zero on the part's surface: distance to the axis minus radius (capsule) or
        ``|S^-1 Q^T (x - c)| - 1`` (ellipsoid)."""
        if self.kind == "capsule":
            axis = self.end - self.start
            h = np.clip(((points - self.start) @ axis) / (axis @ axis), 0.0, 1.0)
            return np.linalg.norm(points - (self.start + h[:, None] * axis), axis=-1) - self.radius
        local = ((points - self.center) @ self.axes) / self.semi_axes
        return np.linalg.norm(local, axis=-1) - 1.0

    def sample_surface(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``[count, 3]`` rest-frame points on the part's surface (not uniform in area)."""
        unit = rng.normal(size=(count, 3))
        unit /= np.linalg.norm(unit, axis=-1, keepdims=True)
        if self.kind == "ellipsoid":
            return self.center + (unit * self.semi_axes) @ self.axes.T
        axis = self.end - self.start
        # half the points on the side, the rest on the end spheres' outer halves
        h = rng.uniform(size=count)
        direction = axis / np.linalg.norm(axis)
        radial = unit - (unit @ direction)[:, None] * direction
        radial /= np.maximum(np.linalg.norm(radial, axis=-1, keepdims=True), 1e-12)
        side = self.start + h[:, None] * axis + self.radius * radial
        outward = np.sign(unit @ direction)
        cap_centre = np.where(outward[:, None] > 0, self.end, self.start)
        cap = cap_centre + self.radius * unit
        return np.where((rng.uniform(size=count) < 0.5)[:, None], side, cap)

    def to_json(self) -> dict:
        out = {"name": self.name, "bone": self.bone, "kind": self.kind, "material": self.material}
        if self.kind == "capsule":
            out.update(start=self.start.tolist(), end=self.end.tolist(), radius=self.radius)
        else:
            out.update(
                center=self.center.tolist(),
                axes=self.axes.tolist(),
                semi_axes=self.semi_axes.tolist(),
            )
        return out


def _near_root(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Smallest root ``t > eps`` of ``a t^2 + 2 b t + c = 0`` (``a > 0``), ``inf`` when none."""
    disc = b * b - a * c
    root = np.sqrt(np.maximum(disc, 0.0))
    near, far = (-b - root) / a, (-b + root) / a
    t = np.where(near > _EPS, near, np.where(far > _EPS, far, np.inf))
    return np.where(disc >= 0.0, t, np.inf)


def body_unit(shape: BodyShape) -> float:
    """Length unit ``u`` of the proportions, chosen so that the standing height is ``shape.height``.

    Joints stack up from the ground in multiples of ``u``: ankles at 0.045, two leg segments of
    ``0.245 leg_length`` each, pelvis +0.03, chest +0.19, head joint +0.14; the head's top is
    0.115 above the head joint.
    """
    return shape.height / (0.045 + 0.49 * shape.leg_length + 0.03 + 0.19 + 0.14 + 0.115)


def humanoid_rest_joints(shape: BodyShape) -> np.ndarray:
    """``[19, 3]`` rest joint positions (T-pose: arms along +-x, facing -y, feet on z = 0)."""
    h = body_unit(shape)
    ankle = 0.045 * h
    knee = ankle + 0.245 * h * shape.leg_length
    hip = knee + 0.245 * h * shape.leg_length
    pelvis = hip + 0.03 * h
    spine, chest = pelvis + 0.09 * h, pelvis + 0.19 * h
    neck, head = chest + 0.10 * h, chest + 0.14 * h
    shoulder_x, shoulder_z = 0.10 * h * shape.shoulder_width, chest + 0.075 * h
    elbow_x = shoulder_x + 0.16 * h * shape.arm_length
    wrist_x = elbow_x + 0.14 * h * shape.arm_length
    hip_x = 0.05 * h * shape.hip_width
    toe = (0.0, -0.11 * h, 0.015 * h)
    joints = [
        (0, 0, pelvis), (0, 0, spine), (0, 0, chest), (0, 0, neck), (0, 0, head),
        (shoulder_x, 0, shoulder_z), (elbow_x, 0, shoulder_z), (wrist_x, 0, shoulder_z),
        (-shoulder_x, 0, shoulder_z), (-elbow_x, 0, shoulder_z), (-wrist_x, 0, shoulder_z),
        (hip_x, 0, hip), (hip_x, 0, knee), (hip_x, 0, ankle), (hip_x + toe[0], toe[1], toe[2]),
        (-hip_x, 0, hip), (-hip_x, 0, knee), (-hip_x, 0, ankle), (-hip_x - toe[0], toe[1], toe[2]),
    ]  # fmt: skip
    return np.asarray(joints, dtype=np.float64)


def humanoid_skeleton(shape: BodyShape) -> Skeleton:
    """The :data:`HUMANOID_JOINTS` tree with :func:`humanoid_rest_joints`."""
    return Skeleton(HUMANOID_PARENTS, humanoid_rest_joints(shape), HUMANOID_JOINTS)


def _frame_along(direction: np.ndarray, long_axis: int) -> np.ndarray:
    """Rotation whose column ``long_axis`` is ``direction`` and whose other columns stay
    as close as possible to the world axes (Gram-Schmidt)."""
    columns = np.eye(3)
    columns[:, long_axis] = direction / np.linalg.norm(direction)
    others = [i for i in range(3) if i != long_axis]
    for i in others:
        v = np.eye(3)[:, i]
        for j in [long_axis] + [o for o in others if o < i]:
            v = v - (v @ columns[:, j]) * columns[:, j]
        columns[:, i] = v / np.linalg.norm(v)
    if np.linalg.det(columns) < 0:
        columns[:, others[-1]] *= -1.0
    return columns


def humanoid_parts(skeleton: Skeleton, shape: BodyShape) -> list[BodyPart]:
    """The 17 rigid parts of a humanoid in its rest pose."""
    x = skeleton.rest_joints.numpy()
    j = {name: i for i, name in enumerate(skeleton.names)}
    h, g = body_unit(shape), shape.girth

    def capsule(name, bone, a, b, radius, material):
        return BodyPart(
            name,
            j[bone],
            "capsule",
            material,
            start=x[j[a]].copy(),
            end=x[j[b]].copy(),
            radius=radius,
        )

    def ellipsoid(name, bone, centre, semi, material, axes=None):
        return BodyPart(name, j[bone], "ellipsoid", material, center=np.asarray(centre, dtype=np.float64),
                        axes=np.eye(3) if axes is None else axes, semi_axes=np.asarray(semi, dtype=np.float64))  # fmt: skip

    up = np.array([0.0, 0.0, 1.0])
    parts = [
        ellipsoid("pelvis", "pelvis", x[j["pelvis"]] - 0.005 * h * up, (0.095 * h * shape.hip_width * g, 0.065 * h * g, 0.065 * h), "trousers"),
        ellipsoid("abdomen", "spine", 0.5 * (x[j["spine"]] + x[j["chest"]]), (0.085 * h * g, 0.06 * h * g, 0.07 * h), "shirt"),
        ellipsoid("torso", "chest", x[j["chest"]] + 0.05 * h * up, (0.105 * h * shape.shoulder_width * g, 0.065 * h * g, 0.085 * h), "shirt"),
        capsule("neck", "neck", "neck", "head", 0.028 * h * math.sqrt(g), "skin"),
        ellipsoid("head", "head", x[j["head"]] + 0.05 * h * up, (0.052 * h, 0.058 * h, 0.065 * h), "head"),
    ]  # fmt: skip
    for side, sign in (("l", 1.0), ("r", -1.0)):
        wrist = x[j[f"{side}_wrist"]]
        ankle, toe = x[j[f"{side}_ankle"]], x[j[f"{side}_toe"]]
        parts += [
            capsule(f"{side}_upper_arm", f"{side}_shoulder", f"{side}_shoulder", f"{side}_elbow", 0.03 * h * g, "sleeve"),
            capsule(f"{side}_forearm", f"{side}_elbow", f"{side}_elbow", f"{side}_wrist", 0.024 * h * g, "skin"),
            ellipsoid(f"{side}_hand", f"{side}_wrist", wrist + np.array([sign * 0.035 * h, 0.0, 0.0]), (0.04 * h, 0.018 * h, 0.03 * h), "skin"),
            capsule(f"{side}_thigh", f"{side}_hip", f"{side}_hip", f"{side}_knee", 0.045 * h * g, "trousers"),
            capsule(f"{side}_shin", f"{side}_knee", f"{side}_knee", f"{side}_ankle", 0.034 * h * g, "trousers"),
            ellipsoid(f"{side}_foot", f"{side}_ankle", 0.5 * (ankle + toe) + np.array([0.0, 0.0, 0.012 * h]),
                      (0.03 * h, 0.07 * h, 0.022 * h), "shoes", axes=_frame_along(toe - ankle, 1)),
        ]  # fmt: skip
    return parts


def random_shape(rng: np.random.Generator) -> BodyShape:
    """Plausible random proportions (height 1.55-1.90 m, multipliers within about +-12%)."""
    return BodyShape(
        height=float(rng.uniform(1.55, 1.90)),
        shoulder_width=float(rng.uniform(0.90, 1.12)),
        hip_width=float(rng.uniform(0.90, 1.15)),
        arm_length=float(rng.uniform(0.92, 1.08)),
        leg_length=float(rng.uniform(0.92, 1.08)),
        girth=float(rng.uniform(0.85, 1.25)),
    )


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    i, f = int(h * 6.0) % 6, h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def random_appearance(rng: np.random.Generator) -> Appearance:
    """Random skin tone, hair, a saturated shirt with a contrasting pattern colour, trousers."""
    skin_tones = (
        (0.96, 0.80, 0.69),
        (0.87, 0.68, 0.55),
        (0.71, 0.52, 0.40),
        (0.55, 0.38, 0.28),
        (0.36, 0.25, 0.19),
    )
    hairs = (
        (0.08, 0.07, 0.06),
        (0.30, 0.18, 0.10),
        (0.80, 0.65, 0.35),
        (0.55, 0.22, 0.10),
        (0.60, 0.60, 0.60),
    )
    hue = float(rng.uniform())
    jitter = lambda c: tuple(float(np.clip(v + rng.uniform(-0.03, 0.03), 0.0, 1.0)) for v in c)
    return Appearance(
        skin=jitter(skin_tones[rng.integers(len(skin_tones))]),
        hair=jitter(hairs[rng.integers(len(hairs))]),
        shirt=_hsv(hue, float(rng.uniform(0.55, 0.9)), float(rng.uniform(0.6, 0.95))),
        shirt_second=_hsv((hue + rng.uniform(0.3, 0.7)) % 1.0, float(rng.uniform(0.0, 0.5)), float(rng.uniform(0.85, 1.0))),
        trousers=_hsv(float(rng.uniform()), float(rng.uniform(0.2, 0.7)), float(rng.uniform(0.2, 0.55))),
        shoes=jitter((0.12, 0.10, 0.09)),
        pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        pattern_size=float(rng.uniform(0.04, 0.08)),
    )  # fmt: skip


# ====================================================================== motion
def joint_limits() -> np.ndarray:
    """``[19, 3, 2]`` (low, high) of each rotation-vector component per joint, radians.

    Rest frame: x to the subject's left, y backwards, z up. Hips flex about x (negative = thigh
    forward), knees bend backwards about x (hinge), shoulders lower the arms about y and swing them
    about z, elbows are hinges about z (forearm forwards), the toes are fixed.
    """
    limits = {name: [(0.0, 0.0)] * 3 for name in HUMANOID_JOINTS}
    limits.update(
        pelvis=[(-0.08, 0.08)] * 3,
        spine=[(-0.15, 0.25), (-0.12, 0.12), (-0.2, 0.2)],
        chest=[(-0.1, 0.15), (-0.1, 0.1), (-0.15, 0.15)],
        neck=[(-0.25, 0.3), (-0.15, 0.15), (-0.4, 0.4)],
        head=[(-0.2, 0.25), (-0.12, 0.12), (-0.3, 0.3)],
        l_shoulder=[(-0.3, 0.3), (0.5, 1.35), (-0.9, 0.3)],
        r_shoulder=[(-0.3, 0.3), (-1.35, -0.5), (-0.3, 0.9)],
        l_elbow=[(0.0, 0.0), (0.0, 0.0), (-1.9, -0.05)],
        r_elbow=[(0.0, 0.0), (0.0, 0.0), (0.05, 1.9)],
        l_wrist=[(-0.3, 0.3), (-0.3, 0.3), (-0.3, 0.3)],
        r_wrist=[(-0.3, 0.3), (-0.3, 0.3), (-0.3, 0.3)],
        l_hip=[(-0.9, 0.35), (-0.35, 0.05), (-0.2, 0.2)],
        r_hip=[(-0.9, 0.35), (-0.05, 0.35), (-0.2, 0.2)],
        l_knee=[(0.05, 1.5), (0.0, 0.0), (0.0, 0.0)],
        r_knee=[(0.05, 1.5), (0.0, 0.0), (0.0, 0.0)],
        l_ankle=[(-0.3, 0.3), (-0.1, 0.1), (-0.15, 0.15)],
        r_ankle=[(-0.3, 0.3), (-0.1, 0.1), (-0.15, 0.15)],
    )
    return np.asarray([limits[name] for name in HUMANOID_JOINTS], dtype=np.float64)


@dataclass
class Motion:
    """Smooth random joint trajectories and a turn in place (module docstring).

    Attributes:
        frequencies: ``[J, 3, 2]`` cycles per sequence of the two sinusoids of every component.
        phases: ``[J, 3, 2]`` their phases.
        turns: revolutions about the vertical axis over the sequence.
        start_yaw: heading at ``s = 0`` (0 = facing the camera, -y).
        sway: ``[2]`` amplitude (m) of the horizontal sway of the root.
    """

    frequencies: np.ndarray
    phases: np.ndarray
    turns: float = 1.0
    start_yaw: float = 0.0
    sway: np.ndarray = field(default_factory=lambda: np.zeros(2))

    @classmethod
    def random(cls, rng: np.random.Generator, turns: float = 1.0) -> Motion:
        shape = (len(HUMANOID_JOINTS), 3)
        frequencies = np.stack([rng.uniform(0.7, 1.6, shape), rng.uniform(1.8, 3.2, shape)], -1)
        return cls(frequencies, rng.uniform(0.0, 2.0 * np.pi, shape + (2,)), turns,
                   float(rng.uniform(-0.3, 0.3)), rng.uniform(0.0, 0.05, 2))  # fmt: skip

    def rotations(self, times: np.ndarray) -> np.ndarray:
        """``[T, J, 3]`` axis-angle joint rotations at sequence times ``[T]``, within the limits."""
        limits = joint_limits()
        mid, half = limits.mean(-1), 0.5 * (limits[..., 1] - limits[..., 0])
        s = np.asarray(times, dtype=np.float64)[:, None, None, None]
        waves = np.sin(2.0 * np.pi * self.frequencies * s + self.phases)  # [T, J, 3, 2]
        return mid + half * (0.65 * waves[..., 0] + 0.3 * waves[..., 1])

    def root(self, times: np.ndarray) -> np.ndarray:
        """``[T, 4, 4]`` world-from-body transforms: yaw about z through the origin, plus sway."""
        s = np.asarray(times, dtype=np.float64)
        yaw = self.start_yaw + 2.0 * np.pi * self.turns * s
        out = np.tile(np.eye(4), (s.shape[0], 1, 1))
        out[:, 0, 0], out[:, 0, 1] = np.cos(yaw), -np.sin(yaw)
        out[:, 1, 0], out[:, 1, 1] = np.sin(yaw), np.cos(yaw)
        out[:, 0, 3] = self.sway[0] * np.sin(2.0 * np.pi * 1.3 * s)
        out[:, 1, 3] = self.sway[1] * np.sin(2.0 * np.pi * 0.9 * s + 1.0)
        return out


# ====================================================================== rendering
@dataclass
class AvatarHits:
    """What :meth:`SyntheticAvatar.cast_rays` sees along each ray (numpy).

    Attributes:
        rgb: ``[N, 3]`` shaded colour (0 on a miss).
        hit: ``[N]`` bool.
        depth: ``[N]`` distance along the unit ray (0 on a miss).
        part: ``[N]`` index of the part hit (-1 on a miss).
        rest_points: ``[N, 3]`` the hit in the rest pose, ``G^{-1} x`` (0 on a miss).
        normal: ``[N, 3]`` world outward normal (0 on a miss).
    """

    rgb: np.ndarray
    hit: np.ndarray
    depth: np.ndarray
    part: np.ndarray
    rest_points: np.ndarray
    normal: np.ndarray


@dataclass
class SyntheticAvatar:
    """One identity: skeleton, rigid parts and clothes.

    Attributes:
        name: folder name, e.g. ``"subject_0"``.
        shape: proportions.
        appearance: colours and pattern.
        skeleton: rest skeleton (:func:`humanoid_skeleton`).
        parts: rigid parts (:func:`humanoid_parts`).
    """

    name: str
    shape: BodyShape
    appearance: Appearance
    skeleton: Skeleton
    parts: list[BodyPart]

    @classmethod
    def random(cls, name: str, rng: np.random.Generator) -> SyntheticAvatar:
        shape = random_shape(rng)
        skeleton = humanoid_skeleton(shape)
        return cls(name, shape, random_appearance(rng), skeleton, humanoid_parts(skeleton, shape))

    @property
    def part_bones(self) -> np.ndarray:
        """``[P]`` joint index driving each part."""
        return np.asarray([p.bone for p in self.parts])

    def bone_transforms(self, rotations: np.ndarray, root: np.ndarray) -> np.ndarray:
        """``[..., J, 4, 4]`` float64 LBS transforms (:meth:`Skeleton.bone_transforms`)."""
        out = self.skeleton.bone_transforms(torch.as_tensor(rotations, dtype=torch.float64),
                                            torch.as_tensor(root, dtype=torch.float64))  # fmt: skip
        return out.numpy()

    def albedo(self, part: BodyPart, rest_points: np.ndarray) -> np.ndarray:
        """``[N, 3]`` albedo of rest-frame surface points of ``part`` (textures move with it)."""
        look = self.appearance
        colour = {"skin": look.skin, "head": look.skin, "shirt": look.shirt, "sleeve": look.shirt,
                  "trousers": look.trousers, "shoes": look.shoes}[part.material]  # fmt: skip
        out = np.broadcast_to(np.asarray(colour, dtype=np.float64), rest_points.shape).copy()
        if part.material == "shirt":
            size = look.pattern_size
            index = np.floor(rest_points[:, 2] / size)
            if look.pattern == "checks":
                index = index + np.floor(rest_points[:, 0] / size)
            out[index.astype(np.int64) % 2 == 1] = look.shirt_second
        elif part.material == "head":  # hair on the top and the back (+y) of the head
            local = (rest_points - part.center) / part.semi_axes
            hair = (local[:, 2] > 0.35) | ((local[:, 1] > 0.1) & (local[:, 2] > -0.45))
            out[hair] = look.hair
        return out

    def cast_rays(
        self,
        origins: np.ndarray,
        directions: np.ndarray,
        bone_transforms: np.ndarray,
        light: Light | None = None,
    ) -> AvatarHits:
        """Exact ray casting of the posed body.

        Each part is intersected in its rest frame: with :math:`G = [R \\mid t]` (rigid) of the
        part's bone, the ray :math:`o + t d` becomes :math:`R^T (o - t_G) + t R^T d`, with the same
        distances. Shading: :class:`~.primitives.Light`'s ambient + Lambert + Blinn-Phong.

        Args:
            origins: ``[N, 3]`` or ``[1, 3]`` ray origins (world).
            directions: ``[N, 3]`` directions (normalised here).
            bone_transforms: ``[J, 4, 4]`` of the pose.
            light: shading (default :class:`~.primitives.Light`).
        """
        light = Light() if light is None else light
        origins = np.asarray(origins, dtype=np.float64).reshape(-1, 3)
        directions = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
        directions = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
        n = directions.shape[0]
        best, index = np.full(n, np.inf), np.full(n, -1, dtype=np.int64)
        frames = []
        for k, part in enumerate(self.parts):
            transform = bone_transforms[part.bone]
            rotation, translation = transform[:3, :3], transform[:3, 3]
            local_o, local_d = (origins - translation) @ rotation, directions @ rotation
            frames.append((rotation, local_o, local_d))
            t = part.intersect(local_o, local_d)
            closer = t < best
            best, index[closer] = np.where(closer, t, best), k
        rest_points, normal, albedo = np.zeros((n, 3)), np.zeros((n, 3)), np.zeros((n, 3))
        for k, part in enumerate(self.parts):
            rows = np.flatnonzero(index == k)
            if rows.size:
                rotation, local_o, local_d = frames[k]
                row_o = local_o[rows] if local_o.shape[0] > 1 else local_o
                points = row_o + local_d[rows] * best[rows, None]
                rest_points[rows] = points
                normal[rows] = part.normal(points) @ rotation.T
                albedo[rows] = self.albedo(part, points)
        hit = index >= 0
        to_light = np.asarray(light.direction, dtype=np.float64)
        to_light /= np.linalg.norm(to_light)
        lambert = np.maximum(normal @ to_light, 0.0)
        halfway = to_light - directions
        halfway /= np.maximum(np.linalg.norm(halfway, axis=-1, keepdims=True), 1e-12)
        highlight = np.maximum((normal * halfway).sum(-1), 0.0) ** light.shininess
        rgb = (
            albedo * (light.ambient + light.diffuse * lambert)[:, None]
            + light.specular * highlight[:, None]
        )
        rgb = np.where(hit[:, None], np.clip(rgb, 0.0, 1.0), 0.0)
        return AvatarHits(rgb, hit, np.where(hit, best, 0.0), index, rest_points, normal)

    def render(
        self,
        c2w: np.ndarray,
        intrinsics: tuple[float, float, float, float],
        width: int,
        height: int,
        bone_transforms: np.ndarray,
        light: Light | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render one pinhole view, 2x2 supersampled.

        Args:
            c2w: ``[3, 4]`` or ``[4, 4]`` OpenCV camera-to-world.
            intrinsics: ``(fx, fy, cx, cy)`` in pixels (pixel centres at ``+0.5``).
            width, height: image size.
            bone_transforms: ``[J, 4, 4]`` of the pose.
            light: shading.

        Returns:
            ``rgba [H, W, 4]`` float64 (straight alpha = fraction of the 4 samples that hit),
            ``depth [H, W]`` and ``part [H, W]`` of the ray through each pixel centre (0 / -1 on
            a miss).
        """
        c2w = np.asarray(c2w, dtype=np.float64)[:3]
        fx, fy, cx, cy = intrinsics
        v, u = np.meshgrid(
            np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij"
        )
        offsets = list(_SUBSAMPLES) + [(0.5, 0.5)]  # the last: pixel centres, for depth and part
        cam = np.stack(
            [
                np.stack([(u + du - cx) / fx, (v + dv - cy) / fy, np.ones_like(u)], -1)
                for du, dv in offsets
            ]
        )
        hits = self.cast_rays(
            c2w[:, 3][None], cam.reshape(-1, 3) @ c2w[:, :3].T, bone_transforms, light
        )
        samples = len(_SUBSAMPLES)
        rgb = hits.rgb.reshape(len(offsets), height, width, 3)[:samples]
        covered = hits.hit.reshape(len(offsets), height, width)[:samples].astype(np.float64)
        alpha = covered.mean(0)
        straight = (rgb * covered[..., None]).mean(0) / np.maximum(alpha, 1e-12)[..., None]
        depth = hits.depth.reshape(len(offsets), height, width)[samples]
        part = hits.part.reshape(len(offsets), height, width)[samples]
        return np.concatenate([straight, alpha[..., None]], -1), depth, part

    def sample_surface(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(points [count, 3], part [count])``: rest-pose points on random parts' surfaces
        (some lie inside neighbouring parts, e.g. a capsule's end inside the torso)."""
        part = rng.integers(len(self.parts), size=count)
        points = np.zeros((count, 3))
        for k, p in enumerate(self.parts):
            rows = np.flatnonzero(part == k)
            if rows.size:
                points[rows] = p.sample_surface(rows.size, rng)
        return points, part

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "shape": self.shape.__dict__,
            "appearance": self.appearance.__dict__,
            "parts": [p.to_json() for p in self.parts],
        }


# ====================================================================== data sets
def avatar_camera(
    resolution: int, distance: float = 4.5, look_height: float = 0.9, half_extent: float = 1.1
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The one fixed camera: ``(c2w [4, 4] OpenCV, (fx, fy, cx, cy))``.

    It stands ``distance`` m in front of the subject (at -y) at ``look_height``, looking along
    +y; the focal length fits ``half_extent`` m above and below the look-at point in the image.
    """
    eye = torch.tensor([0.0, -distance, look_height], dtype=torch.float64)
    target = torch.tensor([0.0, 0.0, look_height], dtype=torch.float64)
    c2w = np.eye(4)
    c2w[:3] = look_at(eye, target, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).numpy()
    focal = 0.5 * resolution * distance / half_extent
    return c2w, (focal, focal, resolution / 2.0, resolution / 2.0)


@dataclass
class GeneratedAvatars:
    """In-memory result of :func:`generate_avatars`.

    Attributes:
        avatars: the identities (geometry, clothes), in order.
        sequences: one :class:`~.avatars.AvatarSequence` per identity (images composited on
            ``background``, ``masks`` = the exact alpha coverage, float64 poses).
        splits: split name -> identity -> frame indices.
        depths: identity -> ``[T, H, W]`` distance along the pixel-centre rays (0 on a miss).
        parts: identity -> ``[T, H, W]`` part index seen through each pixel centre (-1 on a miss).
        motions: identity -> its :class:`Motion`.
        times: identity -> ``[T]`` sequence times of the frames.
        background: RGB behind the subjects.
        settings: generator arguments (written to ``avatars.json``).
    """

    avatars: list[SyntheticAvatar]
    sequences: list[AvatarSequence]
    splits: dict[str, dict[str, list[int]]]
    depths: dict[str, np.ndarray]
    parts: dict[str, np.ndarray]
    motions: dict[str, Motion]
    times: dict[str, np.ndarray]
    background: tuple[float, float, float]
    settings: dict


def generate_avatars(
    *,
    n_identities: int = 4,
    n_train: int = 24,
    n_novel_pose: int = 6,
    n_held_out: int = 1,
    resolution: int = 64,
    seed: int = 0,
    turns: float = 1.0,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> GeneratedAvatars:
    """Generate identities, their motions and their rendered frames (module docstring).

    Args:
        n_identities: subjects in total (>= 1), of which the last ``n_held_out`` are held out.
        n_train: frames per subject at sequence times ``s`` evenly in [0, 0.75].
        n_novel_pose: frames per subject at ``s`` evenly in [0.85, 1] (later, unseen poses).
        n_held_out: held-out identities (``0 <= n_held_out < n_identities``).
        resolution: square image size.
        seed: everything random; equal arguments give identical output.
        turns: revolutions of each subject over its sequence.
        background: colour composited behind the subjects.

    Returns:
        :class:`GeneratedAvatars`.
    """
    if n_identities < 1 or not 0 <= n_held_out < n_identities:
        raise ValueError(
            f"need n_identities >= 1 and 0 <= n_held_out < n_identities, got {n_identities}, {n_held_out}"
        )
    if n_train < 1 or n_novel_pose < 0 or resolution < 2:
        raise ValueError("need n_train >= 1, n_novel_pose >= 0 and resolution >= 2")
    train_times = np.linspace(0.0, 0.75, n_train) if n_train > 1 else np.zeros(1)
    novel_times = (
        np.linspace(0.85, 1.0, n_novel_pose) if n_novel_pose > 1 else np.full(n_novel_pose, 0.85)
    )
    times = np.concatenate([train_times, novel_times])
    count = times.shape[0]
    c2w, intrinsics = avatar_camera(resolution)
    colour = np.asarray(background, dtype=np.float64)
    light = Light()
    out = GeneratedAvatars([], [], {}, {}, {}, {}, {}, tuple(float(c) for c in background), {})
    train_frames, novel_frames = list(range(n_train)), list(range(n_train, count))
    held_out_from = n_identities - n_held_out
    split_names = ("train", "novel_pose", "novel_identity", "novel_identity_pose")
    out.splits = {name: {} for name in split_names}
    for i in range(n_identities):
        rng = np.random.default_rng([seed, i])
        name = f"subject_{i}"
        avatar = SyntheticAvatar.random(name, rng)
        motion = Motion.random(rng, turns)
        rotations, root = motion.rotations(times), motion.root(times)
        transforms = avatar.bone_transforms(rotations, root)
        rgba, depth, part = zip(*(
            avatar.render(c2w, intrinsics, resolution, resolution, transforms[t], light) for t in range(count)
        ))  # fmt: skip
        rgba = np.stack(rgba)
        alpha = rgba[..., 3]
        rgb = rgba[..., :3] * alpha[..., None] + colour * (1.0 - alpha[..., None])
        full = lambda v: torch.full((count,), float(v))
        cameras = Cameras(
            c2w=torch.from_numpy(np.tile(c2w[:3], (count, 1, 1))).float(),
            fx=full(intrinsics[0]), fy=full(intrinsics[1]), cx=full(intrinsics[2]), cy=full(intrinsics[3]),
            width=resolution, height=resolution, times=torch.from_numpy(times).float(),
        )  # fmt: skip
        out.sequences.append(AvatarSequence(
            name=name, images=torch.from_numpy(rgb).float(), cameras=cameras,
            root=torch.from_numpy(root), rotations=torch.from_numpy(rotations),
            skeleton=avatar.skeleton, masks=torch.from_numpy(alpha).float(),
        ))  # fmt: skip
        out.avatars.append(avatar)
        out.depths[name], out.parts[name] = np.stack(depth), np.stack(part)
        out.motions[name], out.times[name] = motion, times
        first, second = (
            ("train", "novel_pose")
            if i < held_out_from
            else ("novel_identity", "novel_identity_pose")
        )
        out.splits[first][name] = train_frames
        if novel_frames:
            out.splits[second][name] = novel_frames
    out.splits = {k: v for k, v in out.splits.items() if v}
    out.settings = {
        "generator": "tensorfield.datasets.synthetic_avatars.generate_avatars",
        "n_identities": n_identities, "n_train": n_train, "n_novel_pose": n_novel_pose,
        "n_held_out": n_held_out, "resolution": resolution, "seed": seed, "turns": turns,
    }  # fmt: skip
    return out


def make_avatars(
    out_dir: str | Path,
    *,
    n_identities: int = 4,
    n_train: int = 24,
    n_novel_pose: int = 6,
    n_held_out: int = 1,
    resolution: int = 64,
    seed: int = 0,
    turns: float = 1.0,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    video: bool = False,
) -> Path:
    """Generate (:func:`generate_avatars`) and write a data set in the :mod:`.avatars` layout.

    ``avatars.json`` also records the generator's settings (``"generator"``) and every identity's
    body (``"bodies"``: proportions, colours, parts with their bones) as ground truth.

    Args:
        out_dir: folder to write.
        video: write each sequence as ``video.mp4`` instead of ``images/`` (``resolution`` even).
        others: as :func:`generate_avatars`.

    Returns:
        ``out_dir`` as a :class:`Path`.
    """
    data = generate_avatars(
        n_identities=n_identities, n_train=n_train, n_novel_pose=n_novel_pose, n_held_out=n_held_out,
        resolution=resolution, seed=seed, turns=turns, background=background,
    )  # fmt: skip
    extra = {"generator": data.settings, "bodies": {a.name: a.to_json() for a in data.avatars}}
    return write_avatars(
        out_dir, data.sequences, data.splits, background=data.background, video=video, extra=extra
    )


def rest_surface_residual(
    avatar: SyntheticAvatar, points: np.ndarray, part: Sequence[int] | np.ndarray
) -> np.ndarray:
    """``[N]`` :meth:`BodyPart.surface_residual` of each rest point on its own part (0 = on it)."""
    part = np.asarray(part)
    out = np.zeros(points.shape[0])
    for k, p in enumerate(avatar.parts):
        rows = np.flatnonzero(part == k)
        if rows.size:
            out[rows] = p.surface_residual(points[rows])
    return out
