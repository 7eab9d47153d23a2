"""Textured synthetic captures with known cameras, for testing structure from motion.

The procedural scenes of :mod:`.synthetic` are flat-coloured, so SIFT finds nothing to match on
them. Here the same exact ray casting (:func:`.primitives.render_rays`) is shaded with a *solid*
texture: every surface point ``p`` is tinted by a function of ``p`` alone (sums of random plane waves
per colour channel times a fine 3D checker), so the texture is consistent across views as a real
painted object would be, and dense in corners. Rays that hit nothing are white (the trainers'
``background: white``).

* :func:`make_capture_video`: one hand-held camera orbiting a static scene (a phone video);
* :func:`make_capture_rig`: several fixed cameras filming a scene in which one sphere moves
  (a rig of synchronised phones).

Both write H.264 videos and a ``cameras.json`` with the ground truth: per camera and video frame
the OpenCV camera-to-world ``c2w`` (3x4), pinhole ``fx, fy, cx, cy, width, height`` and the frame
time in seconds. Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from .cameras import look_at
from .primitives import Primitive, render_rays

_SUBSAMPLES = ((0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75))
_WAVES = 8  # plane waves per colour channel of the texture
_CHECKER = 10.0  # checker cells per scene unit


def capture_primitives(seed: int = 0, moving: bool = False) -> list[Primitive]:
    """A ground slab with boxes and spheres inside [-1.6, 1.6]^2 x [-0.6, 0.9].

    Args:
        seed: jitters the placement of the objects by up to 0.05.
        moving: the last sphere travels across the slab over t in [0, 1] (rig captures).
    """
    rng = np.random.default_rng([seed, 13])

    def at(x: float, y: float, z: float) -> tuple[float, float, float]:
        dx, dy = rng.uniform(-0.05, 0.05, size=2)
        return (x + float(dx), y + float(dy), z)

    primitives = [
        Primitive("box", (0.85, 0.80, 0.70), [(0.0, 0.0, -0.6)], half_size=(1.6, 1.6, 0.1), name="ground"),
        Primitive("box", (0.85, 0.35, 0.25), [at(0.45, 0.35, -0.15)], half_size=(0.35, 0.3, 0.35),
                  yaw=math.radians(25.0), name="red box"),
        Primitive("sphere", (0.3, 0.55, 0.9), [at(-0.5, 0.3, -0.1)], radius=0.4, name="blue sphere"),
        Primitive("box", (0.35, 0.8, 0.35), [at(-0.2, -0.6, 0.1)], half_size=(0.2, 0.2, 0.6),
                  yaw=math.radians(-20.0), name="green pillar"),
        Primitive("sphere", (0.95, 0.8, 0.3), [at(0.6, -0.45, -0.25)], radius=0.25, name="yellow sphere"),
    ]  # fmt: skip
    if moving:
        primitives.append(
            Primitive("sphere", (0.9, 0.4, 0.85), [(-0.9, -0.9, -0.25), (0.9, 0.9, -0.25)],
                      radius=0.25, name="magenta sphere (moves)")
        )  # fmt: skip
    return primitives


def solid_texture(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """Procedural colour of surface points: random plane waves times a 3D checker.

    Each channel is ``0.5 + 0.25 sum_k sin(w_k . p + phi_k) / sqrt(K / 2)`` over ``_WAVES`` plane waves with
    random directions and wavelengths from 1/16 to 1/3 scene units: an interference pattern dense
    in blobs and corners (what SIFT detects), and far cheaper than lattice value noise.

    Args:
        points: ``[N, 3]`` world points.
        seed: picks the wave vectors and phases.

    Returns:
        ``[N, 3]`` float64 tint in [0.25, 1].
    """
    rng = np.random.default_rng([seed, 17])
    directions = rng.normal(size=(3, _WAVES, 3))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    frequency = 2.0 * np.pi * np.exp(rng.uniform(np.log(3.0), np.log(16.0), size=(3, _WAVES, 1)))
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(3, _WAVES))
    waves = np.einsum("nd,ckd->nck", points, directions * frequency) + phases  # [N, 3, K]
    noise = 0.5 + 0.25 * np.sin(waves).sum(-1) / math.sqrt(0.5 * _WAVES)  # the sum has std sqrt(K/2)
    checker = np.mod(np.floor(points * _CHECKER).sum(axis=1), 2.0)[:, None]
    return 0.25 + 0.75 * np.clip(noise * (0.6 + 0.4 * checker), 0.0, 1.0)


def render_capture(
    primitives: list[Primitive],
    c2w: np.ndarray,
    width: int,
    height: int,
    focal: float,
    time: float | None = None,
    seed: int = 0,
    supersample: bool = True,
) -> np.ndarray:
    """One textured pinhole view, white where nothing is hit.

    Args:
        primitives: the scene (:func:`capture_primitives`).
        c2w: ``[3, 4]`` OpenCV camera-to-world.
        width, height: image size in pixels; the principal point is the image centre.
        focal: focal length in pixels.
        time: scene time in [0, 1].
        seed: texture seed.
        supersample: average 2x2 rays per pixel (anti-aliased; 4x the cost) instead of one
            through the pixel centre.

    Returns:
        ``rgb [H, W, 3]`` uint8.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    directions = np.concatenate(
        [
            np.stack([(u + du - width / 2.0) / focal, (v + dv - height / 2.0) / focal, np.ones_like(u)], -1).reshape(-1, 3)
            for du, dv in (_SUBSAMPLES if supersample else ((0.5, 0.5),))
        ]
    ) @ c2w[:, :3].T  # fmt: skip
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    hits = render_rays(primitives, c2w[None, :, 3], directions, time)
    hit = hits.hit.numpy()
    rgb = np.ones((directions.shape[0], 3))
    points = c2w[None, :, 3] + directions[hit] * hits.depth.numpy()[hit, None]
    rgb[hit] = hits.rgb.numpy()[hit] * solid_texture(points, seed)
    image = rgb.reshape(-1, height, width, 3).mean(0)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _write_video(path: Path, frames, fps: float, crf: int) -> None:
    import imageio.v2 as iio2

    writer = iio2.get_writer(
        path, format="ffmpeg", fps=fps, codec="libx264", quality=None, pixelformat="yuv420p",
        output_params=["-crf", str(int(crf))], macro_block_size=2,
    )  # fmt: skip
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()


def _focal(width: int, fov_x_deg: float) -> float:
    return 0.5 * width / math.tan(0.5 * math.radians(fov_x_deg))


def orbit_capture_poses(
    frames: int,
    radius: float = 4.0,
    elevation_deg: float = 35.0,
    arc_deg: float = 360.0,
    wobble: float = 1.0,
) -> np.ndarray:
    """``[frames, 3, 4]`` OpenCV poses walking around the origin, looking at it, z up.

    Camera ``k`` is at azimuth ``a = arc_deg k / frames``; with ``wobble`` its elevation swings by
    ``15 wobble`` degrees (``sin 2a``) and its distance by ``12 wobble`` percent (``cos 3a``), as a
    hand-held walk does. A perfect circle about one axis would be a critical motion for
    self-calibration: SfM could not tell the focal length from the scene's shape.
    """
    poses = []
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    target = torch.tensor([0.0, 0.0, -0.2], dtype=torch.float64)
    for k in range(frames):
        azimuth = math.radians(arc_deg) * k / frames
        elevation = math.radians(elevation_deg + 15.0 * wobble * math.sin(2.0 * azimuth))
        distance = radius * (1.0 + 0.12 * wobble * math.cos(3.0 * azimuth))
        eye = distance * torch.tensor(
            [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)],
            dtype=torch.float64,
        )  # fmt: skip
        poses.append(look_at(eye, target, up).numpy())
    return np.stack(poses)


def make_capture_video(
    out_path: str | Path,
    frames: int = 48,
    size: tuple[int, int] = (192, 144),
    seed: int = 0,
    *,
    fps: float = 24.0,
    fov_x_deg: float = 60.0,
    radius: float = 4.0,
    arc_deg: float = 360.0,
    crf: int = 10,
    supersample: bool = True,
    blank: bool = False,
) -> Path:
    """Film a textured static scene along an orbit, like a phone video walked around an object.

    Writes ``out_path`` (H.264 MP4) and, next to it, ``<stem>_cameras.json`` (see the module
    docstring; ``"cameras": [{"name", "frames": [{"index", "time", "c2w"}], intrinsics}]``).

    Args:
        out_path: video file to write (``.mp4``).
        frames: number of video frames, spread evenly over ``arc_deg`` of azimuth.
        size: ``(width, height)`` in pixels, both even.
        seed: object jitter and texture.
        fps: frame rate written in the video (frame ``k`` is at ``k / fps`` seconds).
        fov_x_deg: horizontal field of view.
        radius: camera distance from the origin.
        arc_deg: azimuth covered by the video.
        crf: x264 constant rate factor (lower is better quality).
        supersample: 2x2 rays per pixel (see :func:`render_capture`).
        blank: film a featureless white frame instead (for the "no features" failure).

    Returns:
        the video path.
    """
    width, height = size
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    primitives = capture_primitives(seed)
    focal = _focal(width, fov_x_deg)
    poses = orbit_capture_poses(frames, radius, arc_deg=arc_deg)
    blank_frame = np.full((height, width, 3), 255, dtype=np.uint8)
    images = (blank_frame if blank else render_capture(primitives, pose, width, height, focal, seed=seed, supersample=supersample) for pose in poses)
    _write_video(out, images, fps, crf)
    camera = _camera_entry("cam00", poses, focal, width, height, fps)
    _write_cameras(out.with_name(out.stem + "_cameras.json"), [camera], "make_capture_video", seed)
    return out


def make_capture_rig(
    out_dir: str | Path,
    cameras: int = 8,
    frames: int = 12,
    size: tuple[int, int] = (192, 144),
    seed: int = 0,
    *,
    fps: float = 12.0,
    fov_x_deg: float = 60.0,
    radius: float = 4.0,
    arc_deg: float = 150.0,
    crf: int = 10,
    supersample: bool = True,
) -> Path:
    """Film a scene with one moving sphere from ``cameras`` fixed, synchronised cameras.

    Camera ``k`` stands at azimuth ``arc_deg * k / cameras`` on :func:`orbit_capture_poses`'
    circle; video frame ``j`` shows scene time ``j / (frames - 1)``. Writes ``camXX.mp4`` and
    ``cameras.json`` into ``out_dir``.

    Returns:
        ``out_dir``.
    """
    width, height = size
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    primitives = capture_primitives(seed, moving=True)
    focal = _focal(width, fov_x_deg)
    poses = orbit_capture_poses(cameras, radius, arc_deg=arc_deg * cameras / max(cameras - 1, 1), wobble=0.3)
    entries = []
    for k, pose in enumerate(poses):
        name = f"cam{k:02d}"
        times = np.arange(frames) / max(frames - 1, 1)
        images = (render_capture(primitives, pose, width, height, focal, float(t), seed, supersample) for t in times)
        _write_video(out / f"{name}.mp4", images, fps, crf)
        entries.append(_camera_entry(name, np.repeat(pose[None], frames, 0), focal, width, height, fps))
    _write_cameras(out / "cameras.json", entries, "make_capture_rig", seed)
    return out


def _camera_entry(name: str, poses: np.ndarray, focal: float, width: int, height: int, fps: float) -> dict:
    return {
        "name": name,
        "fx": focal,
        "fy": focal,
        "cx": width / 2.0,
        "cy": height / 2.0,
        "width": width,
        "height": height,
        "frames": [{"index": k, "time": k / fps, "c2w": pose.tolist()} for k, pose in enumerate(poses)],
    }


def _write_cameras(path: Path, cameras: list[dict], generator: str, seed: int) -> None:
    description = {
        "generator": f"tensorfield.datasets.synthetic_capture.{generator}",
        "convention": "OpenCV camera-to-world (x right, y down, z forward), world z up",
        "seed": seed,
        "cameras": cameras,
    }
    path.write_text(json.dumps(description, indent=1), encoding="utf-8")


def load_capture_cameras(path: str | Path) -> list[dict]:
    """The ``cameras`` list of a ``cameras.json`` written by this module (``c2w`` as arrays)."""
    cameras = json.loads(Path(path).read_text(encoding="utf-8"))["cameras"]
    for camera in cameras:
        for frame in camera["frames"]:
            frame["c2w"] = np.asarray(frame["c2w"], dtype=np.float64)
    return cameras
