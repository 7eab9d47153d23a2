"""The render service: camera paths in, images and videos out.

Both ``tensorfield render`` and the desktop viewer go through :func:`render_frame` and
:func:`output_image` (together :func:`render_image`), which take one
:class:`~tensorfield.fields.base.RenderRequest` (camera, time, identity, frame, mode), so a frame
in the viewer and the CLI's render of the same request are identical. Coordinate models render
slices instead (:func:`render_slice`).

Camera paths are read from three sources:

* ``test`` (or ``train``/``val``): the cameras of a dataset split;
* ``orbit``: a circle around the scene centre at the training cameras' mean distance and
  elevation;
* a JSON file in nerfstudio's camera-path layout (``camera_path`` entries with a row-major
  OpenGL ``camera_to_world`` 4x4 and a vertical ``fov`` in degrees, ``render_width``,
  ``render_height``), extended with an optional per-frame ``time`` in [0, 1].

Models driven by skeleton poses (:class:`~tensorfield.fields.base.DrivenByPoses`, avatars) also
render a **pose sequence** (:func:`load_pose_sequence`: an ``.npz`` in the ``poses.npz`` layout of
:mod:`tensorfield.datasets.avatars`, e.g. another subject's motion): one frame per pose, each a
request with that :class:`~tensorfield.fields.base.BodyPose`.
"""

from __future__ import annotations

import json
import math
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tensorfield.datasets.cameras import Cameras, look_at, opengl_to_opencv
from tensorfield.fields.base import (
    RENDER_MODES,
    BodyPose,
    DrivenByPoses,
    ExportsSlices,
    HasIdentities,
    RenderOutput,
    RenderRequest,
    RendersViews,
    SliceRequest,
)
from torch import Tensor


class CameraPathError(ValueError):
    """A camera path file that cannot be used (one-line message naming the file)."""


class RenderError(ValueError):
    """A render the model cannot do (one line)."""


@dataclass
class CameraPath:
    """Cameras to render, each with a time (``nan`` = the model's static / default time)."""

    cameras: Cameras

    def __len__(self) -> int:
        return len(self.cameras)

    def with_times(self, times: Tensor) -> CameraPath:
        cams = self.cameras
        return CameraPath(Cameras(cams.c2w, cams.fx, cams.fy, cams.cx, cams.cy, cams.width, cams.height, times.float()))


# ------------------------------------------------------------------------------- camera paths
def orbit_path(reference: Cameras, n_frames: int = 60, center: Tensor | None = None) -> CameraPath:
    """A full circle around ``center`` (default: the point the reference cameras look at most).

    Radius and elevation are the means of the reference cameras; intrinsics are the first
    camera's. The circle is horizontal in the frame whose up axis is the reference cameras' mean
    up direction (``-y`` of the OpenCV camera frame).
    """
    positions = reference.c2w[:, :, 3]
    center = torch.zeros(3) if center is None else center.float()
    up = -reference.c2w[:, :, 1].mean(0)
    up = up / up.norm()
    offsets = positions - center
    radius = float(offsets.norm(dim=-1).mean())
    height = float((offsets @ up).mean())
    horizontal = math.sqrt(max(radius**2 - height**2, 1e-8))
    # an orthonormal basis of the horizontal plane
    seed_axis = torch.tensor([1.0, 0.0, 0.0]) if abs(float(up[0])) < 0.9 else torch.tensor([0.0, 1.0, 0.0])
    e1 = torch.linalg.cross(up, seed_axis)
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(up, e1)
    angles = torch.linspace(0, 2 * math.pi, n_frames + 1)[:-1]
    poses = []
    for angle in angles:
        eye = center + horizontal * (math.cos(angle) * e1 + math.sin(angle) * e2) + height * up
        poses.append(look_at(eye, center, up))
    c2w = torch.stack(poses)
    first = reference[0]
    n = len(angles)
    return CameraPath(
        Cameras(
            c2w=c2w,
            fx=first.fx.expand(n).clone(),
            fy=first.fy.expand(n).clone(),
            cx=first.cx.expand(n).clone(),
            cy=first.cy.expand(n).clone(),
            width=first.width,
            height=first.height,
            times=torch.full((n,), float("nan")),
        )
    )


def load_camera_path(path: str | Path) -> CameraPath:
    """Read a nerfstudio-style camera path JSON (plus optional per-frame ``time``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CameraPathError(f"{path}: camera path file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CameraPathError(f"{path}: not valid JSON ({err})") from None
    try:
        width = int(data["render_width"])
        height = int(data["render_height"])
        frames = data["camera_path"]
    except (KeyError, TypeError, ValueError) as err:
        raise CameraPathError(f"{path}: missing or bad key {err} (need render_width, render_height, camera_path)") from None
    if not frames:
        raise CameraPathError(f"{path}: camera_path is empty")
    c2w, fy, times = [], [], []
    for i, frame in enumerate(frames):
        try:
            matrix = torch.tensor(frame["camera_to_world"], dtype=torch.float32).reshape(-1)
            fov = float(frame.get("fov", data.get("default_fov", 50.0)))
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CameraPathError(f"{path}: frame {i} has a bad camera_to_world or fov ({err})") from None
        if matrix.numel() not in (12, 16):
            raise CameraPathError(f"{path}: frame {i} camera_to_world has {matrix.numel()} values (need 12 or 16)")
        if not torch.isfinite(matrix).all():
            raise CameraPathError(f"{path}: frame {i} camera_to_world holds NaN/inf")
        matrix = matrix.reshape(-1, 4)[:3]
        c2w.append(opengl_to_opencv(matrix))
        fy.append(0.5 * height / math.tan(math.radians(fov) / 2))
        time = frame.get("time")
        times.append(float("nan") if time is None else float(time))
    n = len(frames)
    fy_t = torch.tensor(fy)
    return CameraPath(
        Cameras(
            c2w=torch.stack(c2w),
            fx=fy_t.clone(),
            fy=fy_t,
            cx=torch.full((n,), width / 2.0),
            cy=torch.full((n,), height / 2.0),
            width=width,
            height=height,
            times=torch.tensor(times),
        )
    )


def save_camera_path(path: str | Path, camera_path: CameraPath, fps: float = 30.0) -> None:
    """Write ``camera_path`` in the layout :func:`load_camera_path` reads (nerfstudio-compatible)."""
    cams = camera_path.cameras
    frames = []
    for i in range(len(cams)):
        gl = opengl_to_opencv(cams.c2w[i])  # the flip is its own inverse
        matrix = torch.eye(4)
        matrix[:3] = gl
        fov = math.degrees(2 * math.atan(0.5 * cams.height / float(cams.fy[i])))
        frame = {"camera_to_world": matrix.reshape(-1).tolist(), "fov": fov, "aspect": cams.width / cams.height}
        if math.isfinite(float(cams.times[i])):
            frame["time"] = float(cams.times[i])
        frames.append(frame)
    data = {
        "camera_type": "perspective",
        "render_width": cams.width,
        "render_height": cams.height,
        "fps": fps,
        "seconds": len(frames) / fps,
        "camera_path": frames,
    }
    Path(path).write_text(json.dumps(data, indent=1))


def apply_time(camera_path: CameraPath, time: float | None = None, time_range: tuple[float, float] | None = None) -> CameraPath:
    """Set one time for every frame, or sweep linearly over ``time_range``."""
    n = len(camera_path)
    if time is not None:
        return camera_path.with_times(torch.full((n,), float(time)))
    if time_range is not None:
        return camera_path.with_times(torch.linspace(float(time_range[0]), float(time_range[1]), n))
    return camera_path


def load_pose_sequence(model, identity: int, path: str | Path) -> list[BodyPose]:
    """The poses of a pose file (:func:`tensorfield.datasets.avatars.read_pose_file`) for
    ``identity`` of ``model``: rotations matched to its skeleton by joint name when the file
    names its joints, ``root_orient`` pivoting about its rest root joint.

    Raises:
        RenderError: the model is not driven by poses, or ``identity`` is out of range.
        DatasetError: a bad pose file (one line naming it).
    """
    from tensorfield.datasets.avatars import read_pose_file

    if not isinstance(model, DrivenByPoses):
        raise RenderError(f"a {type(model).__name__} is not driven by skeleton poses (no --poses)")
    if isinstance(model, HasIdentities) and not 0 <= int(identity) < model.num_identities():
        raise RenderError(f"identity {identity} out of range (the model has {model.num_identities()})")
    sequence = read_pose_file(path, model.pose_skeleton(int(identity)), f"the model's skeleton (identity {identity})")
    return [BodyPose(sequence.rotations[t], sequence.root[t]) for t in range(len(sequence))]


# ------------------------------------------------------------------------------- rendering
@torch.no_grad()
def render_frame(model, request: RenderRequest) -> RenderOutput:
    """Render one request with ``model`` (the single entry point of the CLI, viewer and exports).

    A ``nan`` time means the camera's own (``None``). Models without time ignore it, and models
    without identities ignore ``identity`` and ``frame``: the model reads what it understands.

    Raises:
        RenderError: the model does not render views (:class:`~tensorfield.fields.base.RendersViews`),
            or a ``pose`` for a model not :class:`~tensorfield.fields.base.DrivenByPoses`.
    """
    if not isinstance(model, RendersViews):
        raise RenderError(f"a {type(model).__name__} does not render camera views")
    if request.pose is not None and not isinstance(model, DrivenByPoses):
        raise RenderError(f"a {type(model).__name__} is not driven by skeleton poses")
    if isinstance(model, HasIdentities):
        if request.frame is not None and not 0 <= request.frame < model.num_frames():
            raise RenderError(f"frame {request.frame} out of range (the model has {model.num_frames()} frames)")
        if request.identity is not None and not 0 <= request.identity < model.num_identities():
            raise RenderError(f"identity {request.identity} out of range (the model has {model.num_identities()})")
    time = request.time
    if time is not None and not math.isfinite(time):
        request = dataclasses.replace(request, time=None)
    was_training = model.training
    model.eval()
    try:
        device = next(iter(model.parameters())).device
        return model.render_view(request.on(device))
    finally:
        model.train(was_training)


def output_image(output: RenderOutput, mode: str = "rgb") -> np.ndarray:
    """The ``[H, W, 3]`` uint8 image of one render mode of ``output``.

    Modes: ``rgb`` (colour on the background), ``depth`` (:func:`colorize_depth`), ``alpha``
    (accumulated opacity as grey).
    """
    if mode == "rgb":
        return to_uint8(output.rgb)
    if mode == "depth":
        return colorize_depth(output.depth, output.alpha)
    if mode == "alpha":
        return np.repeat(to_uint8(output.alpha[..., None]), 3, axis=-1)
    raise ValueError(f"unknown render mode '{mode}' (use one of {', '.join(RENDER_MODES)})")


def render_image(model, request: RenderRequest) -> np.ndarray:
    """The render service: a :class:`~tensorfield.fields.base.RenderRequest` -> ``[H, W, 3]`` uint8.

    ``tensorfield render`` (:func:`render_path`) and the desktop viewer both produce their
    images as ``output_image(render_frame(model, request), request.mode)``, so a viewer frame and
    the CLI's frame of the same camera and time are identical bit for bit.
    """
    return output_image(render_frame(model, request), request.mode)


def resolve_slice(model, request: SliceRequest) -> SliceRequest:
    """``request`` with its component checked against the model's (empty: the model's default).

    Raises:
        RenderError: the model has no slices, or an unknown component.
    """
    if not isinstance(model, ExportsSlices):
        raise RenderError(f"a {type(model).__name__} has no slices to render")
    components = model.slice_components()
    if request.component and request.component not in components:
        raise RenderError(f"unknown slice component '{request.component}' (has: {', '.join(components)})")
    return request if request.component else dataclasses.replace(request, component=components[0])


def slice_title(request: SliceRequest) -> str:
    """The caption of a slice figure: the component, and its time when it has one (what
    ``export RUN slices`` and the viewer write above the map)."""
    return f"{request.component}  time {request.time:g}" if request.time is not None else request.component


def render_slice(model, request: SliceRequest, log: bool = False, colorbar: bool = False) -> np.ndarray:
    """A coordinate model's slice (:class:`~tensorfield.fields.base.ExportsSlices`) as a
    colour-mapped uint8 image: the turbo ramp of :func:`colorize_depth`, minimum to maximum.

    Args:
        log: colour ``log10 |value|`` (:func:`tensorfield.engine.colormap.display_values`).
        colorbar: the figure of :func:`tensorfield.engine.colormap.colorbar_figure` (the map, a
            colour bar with value labels and :func:`slice_title` above) instead of the bare
            ``[R, R, 3]`` map.

    Raises:
        RenderError: the model has no slices, or an unknown component.
    """
    from tensorfield.engine.colormap import colorbar_figure, display_values

    request = resolve_slice(model, request)
    was_training = model.training
    model.eval()
    try:
        values = model.field_slice(request).detach().double().cpu()
    finally:
        model.train(was_training)
    if colorbar:
        return colorbar_figure(values, slice_title(request), log=log)
    if not log:
        return colorize_depth(values)
    shown, _ = display_values(values, log=True)
    finite = torch.isfinite(shown)
    return colorize_depth(torch.where(finite, shown, torch.zeros_like(shown)), alpha=finite.double())


def to_uint8(image: Tensor) -> np.ndarray:
    """``[H, W, C]`` float in [0, 1] -> uint8 array."""
    return (image.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def colorize_depth(depth: Tensor, alpha: Tensor | None = None, near: float | None = None, far: float | None = None) -> np.ndarray:
    """Colour-map a depth image (turbo-like ramp) to ``[H, W, 3]`` uint8.

    Depth is normalised by accumulated opacity where ``alpha`` is given (so a half-transparent
    pixel at distance 2 shows 2, not 1); pixels with alpha < 0.5 are black.
    """
    depth = depth.detach().cpu().double()
    valid = torch.ones_like(depth, dtype=torch.bool)
    if alpha is not None:
        alpha = alpha.detach().cpu().double()
        depth = depth / alpha.clamp_min(1e-6)
        valid = alpha > 0.5
    if not valid.any():
        return np.zeros((*depth.shape, 3), dtype=np.uint8)
    lo = float(depth[valid].min()) if near is None else near
    hi = float(depth[valid].max()) if far is None else far
    x = ((depth - lo) / max(hi - lo, 1e-8)).clamp(0, 1).numpy()
    # A compact polynomial approximation of the 'turbo' colour map (Mikhailov, 2019).
    r = 0.1357 + x * (4.5974 - x * (42.3277 - x * (130.5887 - x * (150.5666 - x * 58.1375))))
    g = 0.0914 + x * (2.1856 + x * (4.8052 - x * (14.0195 - x * (4.2109 + x * 2.7747))))
    b = 0.1067 + x * (12.5925 - x * (60.1097 - x * (109.0745 - x * (88.5066 - x * 26.8183))))
    rgb = np.clip(np.stack([r, g, b], axis=-1), 0, 1)
    rgb[~valid.numpy()] = 0
    return (rgb * 255 + 0.5).astype(np.uint8)


def write_video(path: str | Path, frames: list[np.ndarray], fps: float = 30.0) -> None:
    """Write ``frames`` (uint8 ``[H, W, 3]``) as an H.264 MP4 via imageio-ffmpeg.

    Odd sizes are padded by edge replication to even ones (yuv420p needs them).
    """
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=8, macro_block_size=1, pixelformat="yuv420p") as writer:
        for frame in frames:
            writer.append_data(np.pad(frame, pad, mode="edge") if any(p[1] for p in pad) else frame)
    tmp.replace(path)


def render_path(
    model,
    camera_path: CameraPath,
    background: Tensor,
    out: str | Path,
    fps: float = 30.0,
    depth: bool = True,
    progress: bool = True,
    frame: int | list[int] | None = None,
    identity: int | None = None,
    poses: list[BodyPose] | None = None,
) -> list[Path]:
    """Render every camera of ``camera_path``; write an MP4 (``out`` ends in .mp4/.mov/.gif)
    or a folder of PNGs (``NNNNN.png`` and ``NNNNN_depth.png``).

    ``frame`` / ``identity`` go into every request (models with per-frame inputs / subjects); a
    list of frames gives one per camera (the views of an avatar split, each in its own pose).
    With ``poses`` (:func:`load_pose_sequence`) output frame ``t`` shows pose ``t`` seen by camera
    ``t`` of the path, or by its only camera when it has one. Returns the written files.

    Raises:
        RenderError: ``poses`` and a camera path of another length (not 1), or a list of frames
            of another length than the path.
    """
    import imageio.v2 as imageio
    from tqdm import tqdm

    out = Path(out)
    cams = camera_path.cameras
    count = len(cams)
    if poses is not None:
        if len(cams) not in (1, len(poses)):
            raise RenderError(f"{len(poses)} poses but the camera path has {len(cams)} cameras (give one camera, or one per pose)")
        count = len(poses)
    if isinstance(frame, list) and len(frame) != len(cams):
        raise RenderError(f"{len(frame)} frames for a camera path of {len(cams)} cameras")
    colour_frames, depth_frames = [], []
    for i in tqdm(range(count), desc="render", unit="frame", disable=not progress, leave=False):
        pose = poses[i] if poses is not None else None
        camera = i if len(cams) == count else 0
        shown = frame[i] if isinstance(frame, list) else frame
        result = render_frame(model, RenderRequest(cams, camera, background, identity=identity, frame=shown, pose=pose))
        colour_frames.append(output_image(result, "rgb"))
        if depth:
            depth_frames.append(output_image(result, "depth"))
    written: list[Path] = []
    if out.suffix.lower() in (".mp4", ".mov", ".mkv", ".gif"):
        write_video(out, colour_frames, fps)
        written.append(out)
        if depth:
            depth_out = out.with_name(out.stem + "_depth" + out.suffix)
            write_video(depth_out, depth_frames, fps)
            written.append(depth_out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(colour_frames):
            imageio.imwrite(out / f"{i:05d}.png", frame)
            written.append(out / f"{i:05d}.png")
            if depth:
                imageio.imwrite(out / f"{i:05d}_depth.png", depth_frames[i])
                written.append(out / f"{i:05d}_depth.png")
    return written
