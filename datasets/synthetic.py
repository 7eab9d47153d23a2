"""Procedural test scenes, rendered analytically and written in the Blender / D-NeRF layout.

:func:`make_scene` places a handful of coloured spheres and oriented boxes (on a ground slab, with
a transparent background so alpha is exact) inside [-1, 1]^3, renders them with exact ray casting
(:mod:`.primitives`; Lambert + ambient + a mild highlight), 2x2 supersampled for anti-aliased colour
and alpha, and writes::

    out_dir/
      transforms_{train,val,test}.json   camera_angle_x + Blender/OpenGL transform_matrix (+ time)
      {train,val,test}/r_<i>.png         RGBA, straight alpha; alpha = fraction of the 2x2 samples
                                         that hit something (exactly 0 where nothing is)
      depth/{split}/r_<i>.npy            float32 [H, W] distance along the unit ray through the
                                         pixel centre, 0 where that ray hits nothing
      scene.json                         primitives, light, aabb, near, far, generator settings

Static scenes: the layout is fixed (slightly jittered by ``seed``); cameras lie on a sphere of
``radius`` (mostly the upper hemisphere, some below the ground) looking at the origin, z up.
Training and validation views are random; test views lie on a held-out orbit at 25 degrees of
elevation. Dynamic scenes (``kind="dynamic"``, D-NeRF layout): a sphere moves along a path, a box
spins, a sphere bobs up and down and another exists only for t in [0.35, 0.75]; training and
validation views get random times, test views evenly spaced held-out times ``(k + 0.5) / n``.

Fast-motion scenes (:data:`FAST_KINDS`, D-NeRF layout, textured objects on a checkered ground)
are filmed as a monocular video is: training frame ``k`` of ``n`` at time ``k / (n - 1)``, each
from its own random camera in the upper hemisphere; validation at random times, test views on the
held-out orbit at the held-out times ``(k + 0.5) / n``. ``"orbit"``: a sphere circles the centre
once over the clip, a cube turns once, a sphere drifts; ``"cross"``: a sphere crosses the whole
scene between t = 0.4 and 0.6 (a fifth of the clip) beside two static objects; ``"spin"``: a box
and a sphere each turn a full revolution in place; ``"appear"``: a cube appears at t = 0.5, a
sphere vanishes after t = 0.3, another moves across; ``"still"``: nothing moves (a static scene
filmed the same way, the control: there a dynamic model should generalise as a static one does).

:func:`make_video_scene` renders the dynamic scene as multi-view video in the N3V layout
(``poses_bounds.npy`` + ``camXX.mp4``, :mod:`.n3v`) from a fixed forward-facing rig.

:func:`load_primitives`, :func:`scene_density` and :func:`render_rays` give the same geometry
analytically for tests.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from .cameras import look_at
from .primitives import (
    Light,
    Primitive,
    RayHits,
    load_light,
    load_primitives,
    render_rays,
    scene_density,
)

__all__ = [
    "Light",
    "Primitive",
    "RayHits",
    "camera_poses",
    "load_light",
    "load_primitives",
    "make_scene",
    "make_video_scene",
    "render_rays",
    "render_view",
    "scene_density",
    "scene_primitives",
    "video_rig_poses",
]

#: fast-motion monocular scenes (textured objects; D-NeRF-style capture: one random
#: upper-hemisphere camera per frame, frames evenly spaced in time)
FAST_KINDS = ("orbit", "cross", "spin", "appear", "still")
KINDS = ("static", "dynamic", *FAST_KINDS)
#: the scene fits in this box (written to scene.json, used by the Blender loader)
SCENE_AABB = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
TEST_ELEVATION_DEG = 25.0
_SUBSAMPLES = ((0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75))
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def scene_primitives(kind: str = "static", seed: int = 0) -> list[Primitive]:
    """The primitives of a generated scene (all inside [-0.9, 0.9]^3 at all times).

    Args:
        kind: one of :data:`KINDS` (module docstring).
        seed: jitters the horizontal placement of the objects by up to 0.04.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    rng = np.random.default_rng([seed, 1])
    jitter = lambda: tuple(rng.uniform(-0.04, 0.04, size=2)) + (0.0,)
    shift = lambda point, d: tuple(float(p + q) for p, q in zip(point, d))
    ground = Primitive(
        "box", (0.80, 0.78, 0.74), [(0.0, 0.0, -0.72)], half_size=(0.85, 0.85, 0.06), name="ground"
    )
    if kind in FAST_KINDS:
        ground = dataclasses.replace(ground, texture="checker", color2=(0.66, 0.64, 0.60), texture_scale=0.25)
        return [ground, *_fast_primitives(kind, jitter, shift)]
    if kind == "static":
        return [
            ground,
            Primitive("sphere", (0.90, 0.20, 0.15), [shift((-0.35, -0.30, -0.26), jitter())], radius=0.40, name="red sphere"),
            Primitive("box", (0.20, 0.75, 0.25), [shift((0.40, 0.25, -0.41), jitter())], half_size=(0.25, 0.25, 0.25),
                      yaw=math.radians(30.0), name="green cube"),
            Primitive("sphere", (0.15, 0.35, 0.95), [shift((0.35, -0.45, -0.46), jitter())], radius=0.20, name="blue sphere"),
            Primitive("box", (0.95, 0.80, 0.15), [shift((-0.35, 0.45, -0.21), jitter())], half_size=(0.15, 0.15, 0.45),
                      yaw=math.radians(15.0), name="yellow pillar"),
            Primitive("sphere", (0.85, 0.25, 0.80), [shift((0.05, 0.05, 0.45), jitter())], radius=0.25, name="magenta sphere"),
        ]  # fmt: skip
    d = [jitter() for _ in range(4)]
    return [
        ground,
        Primitive("sphere", (0.90, 0.20, 0.15), [shift(p, d[0]) for p in ((-0.45, -0.45, -0.36), (0.0, -0.55, -0.36), (0.45, -0.35, -0.36))],
                  radius=0.30, name="red sphere (moves)"),
        Primitive("box", (0.20, 0.75, 0.25), [shift((0.35, 0.42, -0.44), d[1])], half_size=(0.30, 0.16, 0.22),
                  spin=math.pi / 2, name="green block (spins a quarter turn)"),
        Primitive("sphere", (0.15, 0.35, 0.95), [shift(p, d[2]) for p in ((-0.40, 0.35, -0.50), (-0.40, 0.35, 0.30), (-0.40, 0.35, -0.50))],
                  radius=0.16, name="blue sphere (bobs)"),
        Primitive("sphere", (0.85, 0.25, 0.80), [shift((0.10, 0.0, 0.35), d[3])], radius=0.22, visible=(0.35, 0.75),
                  name="magenta sphere (appears at t=0.35, vanishes after t=0.75)"),
    ]  # fmt: skip


def _circle(center, radius: float, z: float, turns: float, start: float = 0.0, keys: int = 49) -> list[tuple[float, float, float]]:
    """Keyframes of a horizontal circle about ``center`` (``turns`` turns over the clip)."""
    angles = start + 2.0 * math.pi * turns * np.linspace(0.0, 1.0, keys)
    return [(center[0] + radius * math.cos(a), center[1] + radius * math.sin(a), z) for a in angles]


def _fast_primitives(kind: str, jitter, shift) -> list[Primitive]:
    """The objects of the fast-motion scenes (:data:`FAST_KINDS`), ground excluded."""
    checker = {"texture": "checker", "texture_scale": 2.0}
    if kind == "orbit":  # issue 17's user scene: an orbit once over the clip, a spinning cube, a slow sphere
        return [
            Primitive("sphere", (0.90, 0.20, 0.15), _circle(jitter(), 0.55, -0.40, 1.0), radius=0.24,
                      color2=(0.98, 0.85, 0.30), name="red sphere (orbits the centre once)", **checker),
            Primitive("box", (0.20, 0.55, 0.85), [shift((0.0, 0.0, -0.42), jitter())], half_size=(0.2, 0.2, 0.24),
                      spin=2.0 * math.pi, color2=(0.92, 0.92, 0.95), texture="checker", texture_scale=0.1,
                      name="blue cube (one full turn)"),
            Primitive("sphere", (0.25, 0.70, 0.30), [shift(p, d) for d in [jitter()] for p in ((-0.55, 0.45, -0.45), (0.45, 0.55, -0.45))],
                      radius=0.2, color2=(0.95, 0.95, 0.80), name="green sphere (slow drift)", texture="stripes", texture_scale=3.0),
        ]  # fmt: skip
    if kind == "cross":  # crosses the scene between t = 0.4 and 0.6
        path, d = [(-0.6, -0.5, -0.38)] * 3 + [(0.6, 0.5, -0.38)] * 3, jitter()
        return [
            Primitive("sphere", (0.90, 0.20, 0.15), [shift(p, d) for p in path], radius=0.26, spin=math.pi,
                      color2=(0.98, 0.85, 0.30), name="red sphere (crosses within a fifth of the clip)", **checker),
            Primitive("box", (0.20, 0.55, 0.85), [shift((0.45, -0.40, -0.44), jitter())], half_size=(0.22, 0.22, 0.22),
                      yaw=0.4, color2=(0.92, 0.92, 0.95), texture="checker", texture_scale=0.11, name="blue cube (static)"),
            Primitive("sphere", (0.25, 0.70, 0.30), [shift((-0.40, 0.45, -0.46), jitter())], radius=0.2,
                      color2=(0.95, 0.95, 0.80), name="green sphere (static)", texture="stripes", texture_scale=3.0),
        ]  # fmt: skip
    if kind == "spin":  # full rotations in place
        return [
            Primitive("box", (0.20, 0.55, 0.85), [shift((0.30, 0.25, -0.38), jitter())], half_size=(0.28, 0.2, 0.28),
                      spin=2.0 * math.pi, color2=(0.92, 0.92, 0.95), texture="checker", texture_scale=0.1,
                      name="blue box (one full turn)"),
            Primitive("sphere", (0.90, 0.20, 0.15), [shift((-0.40, -0.30, -0.38), jitter())], radius=0.28, spin=-2.0 * math.pi,
                      tilt=0.3, color2=(0.98, 0.85, 0.30), name="red sphere (spins once, backwards)", **checker),
        ]  # fmt: skip
    if kind == "still":  # nothing moves: a static scene filmed as a monocular video (the control)
        return [
            Primitive("sphere", (0.90, 0.20, 0.15), [shift((-0.30, -0.35, -0.38), jitter())], radius=0.26,
                      color2=(0.98, 0.85, 0.30), name="red sphere (static)", **checker),
            Primitive("box", (0.20, 0.55, 0.85), [shift((0.45, -0.40, -0.44), jitter())], half_size=(0.22, 0.22, 0.22),
                      yaw=0.4, color2=(0.92, 0.92, 0.95), texture="checker", texture_scale=0.11, name="blue cube (static)"),
            Primitive("sphere", (0.25, 0.70, 0.30), [shift((-0.40, 0.45, -0.46), jitter())], radius=0.2,
                      color2=(0.95, 0.95, 0.80), name="green sphere (static)", texture="stripes", texture_scale=3.0),
        ]  # fmt: skip
    # appear: one object appears half way and stays, one vanishes, one moves across
    return [
        Primitive("box", (0.20, 0.55, 0.85), [shift((0.40, 0.35, -0.44), jitter())], half_size=(0.22, 0.22, 0.22), yaw=0.3,
                  visible=(0.5, 1.0), color2=(0.92, 0.92, 0.95), texture="checker", texture_scale=0.11,
                  name="blue cube (appears at t = 0.5)"),
        Primitive("sphere", (0.25, 0.70, 0.30), [shift((-0.40, 0.40, -0.46), jitter())], radius=0.22, visible=(0.0, 0.3),
                  color2=(0.95, 0.95, 0.80), texture="stripes", texture_scale=3.0, name="green sphere (vanishes after t = 0.3)"),
        Primitive("sphere", (0.90, 0.20, 0.15), [shift(p, d) for d in [jitter()] for p in ((-0.5, -0.45, -0.40), (0.55, -0.35, -0.40))],
                  radius=0.24, spin=math.pi, color2=(0.98, 0.85, 0.30), name="red sphere (moves across)", **checker),
    ]  # fmt: skip


def camera_poses(
    n: int, radius: float, rng: np.random.Generator | None = None, orbit_offset: float = 0.5, below: float = 0.2
) -> Tensor:
    """``[n, 3, 4]`` OpenCV camera-to-world poses on a sphere of ``radius``, looking at the origin.

    Args:
        n: number of cameras.
        radius: distance to the origin.
        rng: random directions when given: a fraction ``1 - below`` at elevation 10-70 degrees,
            ``below`` at -30 to -5; ``None``: an orbit at 25 degrees, azimuths
            ``2 pi (k + orbit_offset) / n``.
        orbit_offset: phase of the orbit, in steps.
        below: the share of random cameras below the ground's plane.
    """
    if rng is None:
        azimuth = 2.0 * np.pi * (np.arange(n) + orbit_offset) / max(n, 1)
        elevation = np.full(n, np.radians(TEST_ELEVATION_DEG))
    else:
        azimuth = rng.uniform(0.0, 2.0 * np.pi, size=n)
        under = rng.uniform(size=n) < below
        elevation = np.radians(
            np.where(under, rng.uniform(-30.0, -5.0, size=n), rng.uniform(10.0, 70.0, size=n))
        )
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    poses = []
    for a, e in zip(azimuth, elevation):
        eye = (
            torch.tensor(
                [np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], dtype=torch.float64
            )
            * radius
        )
        poses.append(look_at(eye, torch.zeros(3, dtype=torch.float64), up))
    return torch.stack(poses) if poses else torch.zeros(0, 3, 4, dtype=torch.float64)


def render_view(
    primitives: list[Primitive],
    c2w: Tensor,
    resolution: int,
    focal: float,
    time: float | None = None,
    light: Light | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one square pinhole view (principal point at the centre).

    Args:
        primitives: the scene.
        c2w: ``[3, 4]`` OpenCV camera-to-world.
        resolution: image width = height in pixels.
        focal: focal length in pixels.
        time: scene time.
        light: shading.

    Returns:
        ``rgba [H, W, 4]`` float64 (straight alpha = 2x2 sample coverage) and ``depth [H, W]``
        float64 along the unit ray through each pixel centre (0 on a miss).
    """
    c2w = np.asarray(c2w.detach().cpu() if isinstance(c2w, Tensor) else c2w, dtype=np.float64)
    v, u = np.meshgrid(
        np.arange(resolution, dtype=np.float64),
        np.arange(resolution, dtype=np.float64),
        indexing="ij",
    )
    centre = resolution / 2.0
    offsets = list(_SUBSAMPLES) + [(0.5, 0.5)]  # the last one is the pixel-centre ray, for depth
    cam = np.stack(
        [
            np.stack([(u + du - centre) / focal, (v + dv - centre) / focal, np.ones_like(u)], -1)
            for du, dv in offsets
        ]
    )  # [S, H, W, 3]
    directions = cam.reshape(-1, 3) @ c2w[:, :3].T
    origins = np.broadcast_to(c2w[:, 3], directions.shape)
    hits = render_rays(primitives, origins, directions, time, light)
    samples = len(_SUBSAMPLES)
    rgb = hits.rgb.numpy().reshape(len(offsets), resolution, resolution, 3)[:samples]
    covered = (
        hits.hit.numpy().reshape(len(offsets), resolution, resolution)[:samples].astype(np.float64)
    )
    alpha = covered.mean(0)
    premultiplied = (rgb * covered[..., None]).mean(0)
    straight = premultiplied / np.maximum(alpha, 1e-12)[..., None]
    depth = hits.depth.numpy().reshape(len(offsets), resolution, resolution)[samples]
    return np.concatenate([straight, alpha[..., None]], -1), depth


def make_scene(
    out_dir: str | Path,
    *,
    kind: str = "static",
    resolution: int = 64,
    n_train: int = 40,
    n_test: int = 8,
    n_val: int = 4,
    seed: int = 0,
    radius: float = 4.0,
) -> Path:
    """Generate a synthetic scene folder (Blender layout; D-NeRF layout when dynamic).

    Args:
        out_dir: folder to write (created; existing files of the same names are overwritten).
        kind: one of :data:`KINDS` (module docstring).
        resolution: square image size in pixels.
        n_train, n_test, n_val: views per split (``n_train`` >= 1).
        seed: camera directions, times and object jitter; output is identical for equal arguments.
        radius: camera distance from the origin (> 2).

    Returns:
        ``out_dir`` as a :class:`Path`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if n_train < 1 or n_test < 0 or n_val < 0 or resolution < 1:
        raise ValueError("need n_train >= 1, n_test >= 0, n_val >= 0 and resolution >= 1")
    if radius <= 2.0:
        raise ValueError(f"radius must be > 2 (cameras outside the scene), got {radius}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    primitives = scene_primitives(kind, seed)
    light = Light()
    reach = max(p.bounding_radius() for p in primitives)
    camera_angle_x = 2.0 * math.asin(min(1.03 * reach / radius, 0.95))
    focal = 0.5 * resolution / math.tan(0.5 * camera_angle_x)
    dynamic = kind != "static"
    monocular = kind in FAST_KINDS  # one camera per frame, frames evenly spaced, upper hemisphere

    views = {
        "train": (n_train, np.random.default_rng([seed, 2])),
        "val": (n_val, np.random.default_rng([seed, 3])),
        "test": (n_test, None),
    }
    for split, (count, rng) in views.items():
        if count == 0:  # an absent split, not an empty one
            continue
        poses = camera_poses(count, radius, rng, below=0.0 if monocular else 0.2)
        if dynamic:
            if rng is None:  # test: held-out times, between the training frames
                times = (np.arange(count) + 0.5) / max(count, 1)
            elif monocular and split == "train":  # a video: frame k at k / (n - 1)
                times = np.linspace(0.0, 1.0, count) if count > 1 else np.zeros(1)
            else:
                times = rng.uniform(0.0, 1.0, size=count)
        else:
            times = [None] * count
        (out / split).mkdir(exist_ok=True)
        (out / "depth" / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i, (pose, time) in enumerate(zip(poses, times)):
            rgba, depth = render_view(
                primitives, pose, resolution, focal, None if time is None else float(time), light
            )
            iio.imwrite(
                out / split / f"r_{i}.png",
                np.round(np.clip(rgba, 0.0, 1.0) * 255.0).astype(np.uint8),
            )
            np.save(out / "depth" / split / f"r_{i}.npy", depth.astype(np.float32))
            c2w = np.eye(4)
            c2w[:3] = pose.numpy()
            frame = {
                "file_path": f"./{split}/r_{i}",
                "rotation": 0.0,
                "transform_matrix": (c2w @ _GL_TO_CV).tolist(),
            }
            if dynamic:
                frame["time"] = float(time)
            frames.append(frame)
        transforms = {"camera_angle_x": camera_angle_x, "frames": frames}
        (out / f"transforms_{split}.json").write_text(
            json.dumps(transforms, indent=2), encoding="utf-8"
        )

    diagonal = math.sqrt(3.0)
    description = {
        "generator": "tensorfield.datasets.synthetic.make_scene",
        "kind": kind,
        "seed": seed,
        "resolution": resolution,
        "radius": radius,
        "camera_angle_x": camera_angle_x,
        "aabb": [list(SCENE_AABB[0]), list(SCENE_AABB[1])],
        "near": max(0.05, radius - 1.05 * diagonal),
        "far": radius + 1.05 * diagonal,
        "light": light.to_json(),
        "primitives": [p.to_json() for p in primitives],
    }
    (out / "scene.json").write_text(json.dumps(description, indent=2), encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------- N3V video
def video_rig_poses(n: int, radius: float, seed: int = 0) -> Tensor:
    """``[n, 3, 4]`` OpenCV poses of a forward-facing rig (as N3V's): cameras on an arc of
    +-35 degrees of azimuth around -y, at 12 or 28 degrees of elevation (alternating, jittered by
    ``seed`` up to 2 degrees), all looking at the origin from ``radius``."""
    rng = np.random.default_rng([seed, 5])
    azimuth = -0.5 * np.pi + np.radians(np.linspace(-35.0, 35.0, n) if n > 1 else np.zeros(1))
    elevation = np.radians(np.where(np.arange(n) % 2 == 0, 12.0, 28.0) + rng.uniform(-2, 2, n))
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    poses = []
    for a, e in zip(azimuth, elevation):
        eye = torch.tensor(
            [np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], dtype=torch.float64
        )
        poses.append(look_at(eye * radius, torch.zeros(3, dtype=torch.float64), up))
    return torch.stack(poses)


def make_video_scene(
    out_dir: str | Path,
    *,
    n_cameras: int = 5,
    n_frames: int = 12,
    resolution: int = 64,
    fps: float = 10.0,
    seed: int = 0,
    radius: float = 4.0,
    crf: int = 0,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> Path:
    """Render the dynamic synthetic scene as multi-view video in the N3V layout.

    Camera ``k`` (:func:`video_rig_poses`) films frame ``j`` at scene time ``j / (n_frames - 1)``
    (so the loader's normalised times equal the scene times), composited on ``background``, and
    writes::

        out_dir/
          poses_bounds.npy   [n_cameras, 17] LLFF poses (:func:`.n3v.write_poses_bounds`);
                             bounds = radius -+ the scene's bounding radius (exact z-depth
                             bounds of a sphere holding every object at every time)
          camXX.mp4          H.264, yuv444p (no chroma subsampling), constant quality ``crf``
                             (0 = lossless up to RGB<->YUV rounding), ``fps`` frames per second
          scene.json         generator settings, primitives, light, OpenCV poses, frame times

    Args:
        out_dir: folder to write (created; files of the same names are overwritten).
        n_cameras, n_frames: rig size and video length (>= 1 and >= 2).
        resolution: square frame size (even, as H.264 needs).
        fps: frame rate written in the videos.
        seed: rig jitter and object placement.
        radius: camera distance from the origin (> 2).
        crf: x264 constant rate factor (0..51, lower is better).
        background: colour behind the objects.

    Returns:
        ``out_dir`` as a :class:`Path`.
    """
    import imageio.v2 as iio2

    from .n3v import write_poses_bounds

    if n_cameras < 1 or n_frames < 2 or resolution < 2 or resolution % 2:
        raise ValueError("need n_cameras >= 1, n_frames >= 2 and an even resolution >= 2")
    if radius <= 2.0:
        raise ValueError(f"radius must be > 2 (cameras outside the scene), got {radius}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    primitives = scene_primitives("dynamic", seed)
    light = Light()
    reach = max(p.bounding_radius() for p in primitives)
    fov_x = 2.0 * math.asin(min(1.03 * reach / radius, 0.95))
    focal = 0.5 * resolution / math.tan(0.5 * fov_x)
    poses = video_rig_poses(n_cameras, radius, seed)
    times = np.arange(n_frames) / (n_frames - 1)
    colour = np.asarray(background, dtype=np.float64)
    width = max(2, len(str(n_cameras - 1)))
    names = [f"cam{k:0{width}d}" for k in range(n_cameras)]
    for name, pose in zip(names, poses):
        writer = iio2.get_writer(
            out / f"{name}.mp4", format="ffmpeg", fps=fps, codec="libx264", quality=None,
            pixelformat="yuv444p", output_params=["-crf", str(int(crf))], macro_block_size=1,
        )  # fmt: skip
        try:
            for time in times:
                rgba, _ = render_view(primitives, pose, resolution, focal, float(time), light)
                rgb = rgba[..., :3] * rgba[..., 3:] + colour * (1.0 - rgba[..., 3:])
                writer.append_data(np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8))
        finally:
            writer.close()
    bounds = np.tile([radius - reach, radius + reach], (n_cameras, 1))
    write_poses_bounds(out / "poses_bounds.npy", poses.numpy(), [resolution, resolution, focal], bounds)
    description = {
        "generator": "tensorfield.datasets.synthetic.make_video_scene",
        "kind": "dynamic",
        "layout": "n3v",
        "seed": seed,
        "resolution": resolution,
        "radius": radius,
        "focal": focal,
        "fps": fps,
        "crf": crf,
        "background": list(colour),
        "cameras": {name: pose.tolist() for name, pose in zip(names, poses)},
        "times": times.tolist(),
        "light": light.to_json(),
        "primitives": [p.to_json() for p in primitives],
    }
    (out / "scene.json").write_text(json.dumps(description, indent=2), encoding="utf-8")
    return out
