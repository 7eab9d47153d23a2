"""Multi-identity avatar captures: a folder per subject, each a monocular video with body poses.

The layout MIGS-style training reads (one camera per subject, as in ZJU-MoCap's monocular
protocol, or AIST++), written by :func:`write_avatars` and read by :func:`load_avatars`::

    root/
      avatars.json          {"format": "tensorfield-avatars", "version": 1,
                             "identities": ["id0", "id1", ...],      # folder names, in order
                             "splits": {"train": {"id0": [0, 1, ...], ...},   # frame indices
                                        "novel_pose": {...}, ...},
                             "background": [r, g, b]}                 # optional, default black
      <identity>/
        images/000000.png   RGB (or RGBA: alpha is the mask when masks/ is absent), frames in
                            sorted file-name order; or instead of images/
        video.mp4           every frame of the sequence (decoded with imageio-ffmpeg)
        masks/000000.png    optional: 8-bit grey foreground coverage, one per frame (sorted
                            order), the same size as the images
        cameras.json        {"frames": [{"fx", "fy", "cx", "cy", "width", "height",
                                         "c2w": 4x4 camera-to-world}, ...]}   one per frame
        poses.npz           rotations [T, J, 3] axis-angle, local per joint (fields.skeleton);
                            root [T, 4, 4] world-from-body transform, or instead
                            root_orient [T, 3] + transl [T, 3] (SMPL: root = T(transl) T(x0)
                            R(root_orient) T(-x0), a rotation about the rest root joint x0 then a
                            translation);
                            optional joint_names [J] (rotations are then matched to skeleton.json
                            by name) and times [T] (normalised to [0, 1]; default evenly spaced)
        skeleton.json       {"names": [...], "parents": [...], "rest_joints": [[x, y, z], ...]}
                            or an SMPL body: {"smpl": {"betas": [...], "gender": "neutral"}}
                            (rest joints, parents and names computed by smplx from the user's
                            model files, :mod:`.smpl`; ``smpl_model_path`` / TENSORFIELD_SMPL)

**SMPL poses.** Instead of ``rotations``, ``poses.npz`` may hold ``smpl_poses [T, 72]`` (SMPL's
axis-angle: global orientation, then 23 joints) with optional ``transl [T, 3]`` (smplx's) and
``Rh``, ``Th [T, 3]`` (ZJU-MoCap's world-from-SMPL map); they become the generic pose by
:func:`.smpl.smpl_pose` (the global orientation moves into ``root``), for a 24-joint skeleton.

**Pose files** (:func:`read_pose_file`: ``render --poses``, ``export splat --poses``, the
viewer's pose playback) are ``.npz`` archives in the ``poses.npz`` layout above, so an
identity's own ``poses.npz`` drives any other identity (motion transfer). With ``joint_names``
the rotations are matched to the model's skeleton by name (any joint order); without, they must
be in its order. ``root_orient`` pivots about the driven identity's rest root joint.

Cameras follow the package convention (:mod:`.cameras`): pinhole intrinsics in pixels with pixel
centres at ``+0.5``, camera-to-world in the **OpenCV** frame (+x right, +y down, +z forward).
Poses follow :mod:`tensorfield.fields.skeleton` (LBS convention: bone transforms
``G_j = T_j (T_j^rest)^{-1}``). Splits name frames by their index in the identity's sequence;
a split may list only some identities (a held-out identity appears only in its own splits).

Every problem raises a one-line :class:`~.errors.DatasetError` ``<file>: <problem>`` with the file
relative to ``root``: unreadable or malformed files; frame counts that disagree between
``images/`` (or ``video.mp4``), ``cameras.json`` and ``poses.npz`` (the message names the one
that disagrees with the other two); a joint missing (``poses.npz``
with another joint count than ``skeleton.json``, or a skeleton joint absent from
``joint_names``); a NaN/inf rotation (naming the frame and the joint); masks of another size than
the images; split frames out of range.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from tensorfield.fields.skeleton import (
    Skeleton,
    axis_angle_to_matrix,
    check_rotations,
    rigid_transform,
    translation_matrix,
)
from torch import Tensor

from .cameras import Cameras
from .errors import DatasetError, one_line
from .images import decode
from .parsing import frames_of, number, pose_matrix, read_json

FORMAT = "tensorfield-avatars"
VERSION = 1
AVATARS_FILE = "avatars.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# ====================================================================== data
@dataclass
class AvatarSequence:
    """One subject's capture: frames, cameras, body poses and skeleton.

    Attributes:
        name: identity (its folder name).
        images: ``[T, H, W, 3]`` float32 RGB in [0, 1] (composited on the background).
        cameras: ``T`` cameras (OpenCV ``c2w``), times normalised to [0, 1].
        root: ``[T, 4, 4]`` float64 world-from-body transforms.
        rotations: ``[T, J, 3]`` float64 axis-angle joint rotations (skeleton order).
        skeleton: the subject's rest skeleton.
        masks: ``[T, H, W]`` float32 foreground coverage in [0, 1], or ``None``.
    """

    name: str
    images: Tensor
    cameras: Cameras
    root: Tensor
    rotations: Tensor
    skeleton: Skeleton
    masks: Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def bone_transforms(self) -> Tensor:
        """``[T, J, 4, 4]`` LBS bone transforms of every frame (float64)."""
        return self.skeleton.bone_transforms(self.rotations, self.root)


@dataclass
class AvatarDataset:
    """A multi-identity capture read by :func:`load_avatars`.

    Attributes:
        root: the data set folder.
        sequences: identity -> :class:`AvatarSequence`, in ``avatars.json`` order.
        splits: split name -> identity -> frame indices.
        background: RGB the images are composited on.
    """

    root: Path
    sequences: dict[str, AvatarSequence]
    splits: dict[str, dict[str, list[int]]]
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def identities(self) -> list[str]:
        """Identity names in order (index = row of the identity factor)."""
        return list(self.sequences)

    def split_frames(self, split: str) -> list[tuple[str, int]]:
        """``(identity, frame)`` pairs of ``split``, identity-major."""
        if split not in self.splits:
            raise KeyError(f"no split {split!r}; have {sorted(self.splits)}")
        return [(name, frame) for name, frames in self.splits[split].items() for frame in frames]


# ====================================================================== writing
def _uint8(values: np.ndarray) -> np.ndarray:
    return np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_sequence(
    folder: str | Path,
    sequence: AvatarSequence,
    *,
    video: bool = False,
    fps: float = 10.0,
    crf: int = 0,
) -> Path:
    """Write one identity folder (layout in the module docstring).

    Args:
        folder: the identity's folder (created).
        sequence: what to write; masks are written when present.
        video: write ``video.mp4`` (H.264, yuv444p, constant quality ``crf``) instead of
            ``images/``; needs an even width and height.
        fps: the video's frame rate.
        crf: x264 constant rate factor (0 = lossless up to RGB <-> YUV rounding).

    Returns:
        ``folder`` as a :class:`Path`.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    images = sequence.images.detach().cpu().numpy()
    count, height, width = images.shape[:3]
    digits = max(6, len(str(count - 1)))
    if video:
        import imageio.v2 as iio2

        if width % 2 or height % 2:
            raise ValueError(f"video frames need an even size, got {width}x{height}")
        writer = iio2.get_writer(
            out / "video.mp4", format="ffmpeg", fps=fps, codec="libx264", quality=None,
            pixelformat="yuv444p", output_params=["-crf", str(int(crf))], macro_block_size=1,
        )  # fmt: skip
        try:
            for frame in images:
                writer.append_data(_uint8(frame))
        finally:
            writer.close()
    else:
        (out / "images").mkdir(exist_ok=True)
        for i, frame in enumerate(images):
            iio.imwrite(out / "images" / f"{i:0{digits}d}.png", _uint8(frame))
    if sequence.masks is not None:
        (out / "masks").mkdir(exist_ok=True)
        for i, mask in enumerate(sequence.masks.detach().cpu().numpy()):
            iio.imwrite(out / "masks" / f"{i:0{digits}d}.png", _uint8(mask))
    cameras = sequence.cameras
    frames = []
    for i in range(len(cameras)):
        c2w = np.eye(4)
        c2w[:3] = cameras.c2w[i].detach().cpu().double().numpy()
        frames.append({
            "fx": float(cameras.fx[i]), "fy": float(cameras.fy[i]),
            "cx": float(cameras.cx[i]), "cy": float(cameras.cy[i]),
            "width": int(cameras.width), "height": int(cameras.height),
            "c2w": c2w.tolist(),
        })  # fmt: skip
    (out / "cameras.json").write_text(json.dumps({"frames": frames}, indent=1), encoding="utf-8")
    times = cameras.times.detach().cpu().double().numpy()
    arrays = {
        "root": sequence.root.detach().cpu().double().numpy(),
        "rotations": sequence.rotations.detach().cpu().double().numpy(),
        "joint_names": np.asarray(sequence.skeleton.names),
    }
    if np.isfinite(times).all():
        arrays["times"] = times
    np.savez(out / "poses.npz", **arrays)
    (out / "skeleton.json").write_text(
        json.dumps(sequence.skeleton.to_dict(), indent=1), encoding="utf-8"
    )
    return out


def write_avatars(
    out_dir: str | Path,
    sequences: Sequence[AvatarSequence],
    splits: dict[str, dict[str, list[int]]],
    *,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    video: bool = False,
    fps: float = 10.0,
    crf: int = 0,
    extra: dict | None = None,
) -> Path:
    """Write a multi-identity data set: ``avatars.json`` and one folder per sequence.

    Args:
        out_dir: data set folder (created; files of the same names are overwritten).
        sequences: one per identity, written to ``out_dir / sequence.name``.
        splits: split name -> identity -> frame indices.
        background: colour the images were composited on (recorded in ``avatars.json``).
        video, fps, crf: see :func:`write_sequence`.
        extra: more keys for ``avatars.json`` (e.g. a generator's settings).

    Returns:
        ``out_dir`` as a :class:`Path`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in sequences]
    if len(set(names)) != len(names):
        raise ValueError(f"identity names must be distinct, got {names}")
    for sequence in sequences:
        write_sequence(out / sequence.name, sequence, video=video, fps=fps, crf=crf)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "identities": names,
        "splits": {
            s: {k: [int(i) for i in v] for k, v in per.items()} for s, per in splits.items()
        },
        "background": [float(c) for c in background],
        **(extra or {}),
    }
    (out / AVATARS_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return out


# ====================================================================== reading
def _read_skeleton(path: Path, root: Path, smpl_model_path: str | Path | None = None) -> Skeleton:
    meta = read_json(path, root)
    if "smpl" in meta:
        body = meta["smpl"]
        if not isinstance(body, dict) or not isinstance(body.get("betas", []), list):
            raise DatasetError(path, "'smpl' must be {\"betas\": [numbers], \"gender\": \"neutral\"}", root=root)
        betas = [number(b, "smpl betas", path, root) for b in body.get("betas", [])]
        from .smpl import smpl_skeleton

        return smpl_skeleton(betas, gender=str(body.get("gender", "neutral")), model_path=smpl_model_path, requested_by=path, root=root)
    for key in ("parents", "rest_joints"):
        if key not in meta:
            raise DatasetError(path, f"no {key!r} key", root=root)
    try:
        return Skeleton.from_dict(meta)
    except (ValueError, TypeError) as error:
        raise DatasetError(path, one_line(error), root=root) from None


def _read_cameras(path: Path, root: Path) -> tuple[list[dict], int, int]:
    """Per-frame camera dicts (c2w 4x4 float64 + intrinsics) and the shared image size."""
    frames = frames_of(read_json(path, root), path, root)
    out, size = [], None
    for i, frame in enumerate(frames):
        c2w = pose_matrix(frame, i, path, root, key="c2w")
        values = {}
        for key in ("fx", "fy", "cx", "cy", "width", "height"):
            if key not in frame:
                raise DatasetError(path, f"frame {i} has no {key}", root=root)
            values[key] = number(
                frame[key],
                f"frame {i} {key}",
                path,
                root,
                positive=key in ("fx", "fy", "width", "height"),
            )
        frame_size = (int(values["width"]), int(values["height"]))
        if frame_size != (values["width"], values["height"]):
            raise DatasetError(path, f"frame {i} width/height must be integers", root=root)
        if size is not None and frame_size != size:
            raise DatasetError(
                path,
                f"frame {i} is {frame_size[0]}x{frame_size[1]} but frame 0 is {size[0]}x{size[1]}",
                root=root,
            )
        size = frame_size
        out.append({"c2w": c2w, **values})
    return out, size[0], size[1]  # type: ignore[index]


def _read_poses(
    path: Path, root: Path | None, skeleton: Skeleton, skeleton_label: str = "skeleton.json"
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(root [T, 4, 4], rotations [T, J, 3], times [T] or None)`` float64, checked; messages
    call the skeleton the rotations must fit ``skeleton_label``."""
    if not path.is_file():
        raise DatasetError(path, "missing file", root=root)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DatasetError(path, f"unreadable file ({one_line(error)[:100]})", root=root) from None
    if "smpl_poses" in arrays and "rotations" not in arrays:
        return _read_smpl_poses(path, root, arrays, skeleton, skeleton_label)
    if "rotations" not in arrays:
        raise DatasetError(path, "no 'rotations' array (nor 'smpl_poses')", root=root)
    rotations = arrays["rotations"]
    if (
        rotations.ndim != 3
        or rotations.shape[2] != 3
        or not np.issubdtype(rotations.dtype, np.number)
    ):
        raise DatasetError(
            path, f"rotations must be [T, J, 3] axis-angle, got {rotations.shape}", root=root
        )
    count = rotations.shape[0]
    if count == 0:
        raise DatasetError(path, "no frames", root=root)
    if "joint_names" in arrays:
        names = [str(n) for n in arrays["joint_names"].reshape(-1)]
        if len(names) != rotations.shape[1]:
            raise DatasetError(
                path,
                f"{len(names)} joint_names for {rotations.shape[1]} joints in rotations",
                root=root,
            )
        missing = [n for n in skeleton.names if n not in names]
        if missing:
            raise DatasetError(
                path,
                f"joint {missing[0]!r} of {skeleton_label} is missing from joint_names ({len(missing)} missing)",
                root=root,
            )
        rotations = rotations[:, [names.index(n) for n in skeleton.names]]
    rotations = torch.from_numpy(rotations.astype(np.float64))
    try:
        check_rotations(rotations, skeleton.num_joints, "axis_angle", skeleton.names)
    except ValueError as error:
        message = one_line(error).replace("the skeleton has", f"{skeleton_label} has")
        raise DatasetError(path, message, root=root) from None
    if "root" in arrays:
        root_transform = arrays["root"].astype(np.float64)
        if root_transform.shape != (count, 4, 4):
            raise DatasetError(
                path, f"root must be [{count}, 4, 4], got {root_transform.shape}", root=root
            )
        root_transform = torch.from_numpy(root_transform)
    elif "root_orient" in arrays and "transl" in arrays:
        orient, transl = (
            arrays["root_orient"].astype(np.float64),
            arrays["transl"].astype(np.float64),
        )
        for key, value in (("root_orient", orient), ("transl", transl)):
            if value.shape != (count, 3):
                raise DatasetError(
                    path, f"{key} must be [{count}, 3], got {value.shape}", root=root
                )
        pivot = skeleton.rest_joints[0]
        rotation = rigid_transform(
            axis_angle_to_matrix(torch.from_numpy(orient)), torch.zeros(3, dtype=torch.float64)
        )
        root_transform = (
            translation_matrix(torch.from_numpy(transl) + pivot)
            @ rotation
            @ translation_matrix(-pivot)
        )
    else:
        raise DatasetError(path, "no 'root' array (nor 'root_orient' and 'transl')", root=root)
    bad = ~torch.isfinite(root_transform).reshape(count, -1).all(-1)
    if bad.any():
        raise DatasetError(
            path, f"root transform of frame {int(bad.nonzero()[0])} is NaN/inf", root=root
        )
    times = None
    if "times" in arrays:
        times_array = arrays["times"].astype(np.float64).reshape(-1)
        if times_array.shape != (count,) or not np.isfinite(times_array).all():
            raise DatasetError(path, f"times must be [{count}] finite numbers", root=root)
        times = torch.from_numpy(times_array)
    return root_transform, rotations, times


def _read_smpl_poses(
    path: Path, root: Path | None, arrays: dict, skeleton: Skeleton, skeleton_label: str
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``_read_poses`` of a file with ``smpl_poses [T, 72]`` (optional ``transl``, ``Rh``, ``Th``)."""
    from .smpl import NUM_JOINTS, smpl_pose

    poses = arrays["smpl_poses"]
    if poses.ndim != 2 or poses.shape[1] != 3 * NUM_JOINTS or not np.issubdtype(poses.dtype, np.number):
        raise DatasetError(path, f"smpl_poses must be [T, 72] axis-angle, got {list(poses.shape)}", root=root)
    if poses.shape[0] == 0:
        raise DatasetError(path, "no frames", root=root)
    if skeleton.num_joints != NUM_JOINTS:
        raise DatasetError(path, f"smpl_poses drive a 24-joint SMPL skeleton but {skeleton_label} has {skeleton.num_joints} joints", root=root)
    extra = {}
    for key in ("transl", "Rh", "Th"):
        if key in arrays:
            if not np.issubdtype(arrays[key].dtype, np.number):
                raise DatasetError(path, f"{key} must be numbers", root=root)
            extra[key] = torch.from_numpy(arrays[key].astype(np.float64))
    try:
        rotations, root_transform = smpl_pose(torch.from_numpy(poses.astype(np.float64)), skeleton.rest_joints[0], **extra)
    except ValueError as error:
        raise DatasetError(path, one_line(error), root=root) from None
    times = None
    if "times" in arrays:
        times_array = arrays["times"].astype(np.float64).reshape(-1)
        if times_array.shape != (len(poses),) or not np.isfinite(times_array).all():
            raise DatasetError(path, f"times must be [{len(poses)}] finite numbers", root=root)
        times = torch.from_numpy(times_array)
    return root_transform, rotations, times


@dataclass
class PoseSequence:
    """A pose-sequence file read by :func:`read_pose_file`.

    Attributes:
        rotations: ``[T, J, 3]`` float64 axis-angle joint rotations, in the skeleton's joint order.
        root: ``[T, 4, 4]`` float64 world-from-body transforms.
        times: ``[T]`` float64 normalised times, or ``None`` when the file has none.
    """

    rotations: Tensor
    root: Tensor
    times: Tensor | None = None

    def __len__(self) -> int:
        return int(self.rotations.shape[0])


def read_pose_file(path: str | Path, skeleton: Skeleton, skeleton_label: str = "the model's skeleton") -> PoseSequence:
    """Read a pose sequence to drive an avatar with (``render --poses``, ``export splat --poses``).

    The format is an identity's ``poses.npz`` of the layout above, so any subject's motion drives
    any other: ``rotations [T, J, 3]`` axis-angle, local per joint; ``root [T, 4, 4]`` (or
    ``root_orient [T, 3]`` + ``transl [T, 3]``, pivoting about ``skeleton``'s rest root joint);
    optional ``joint_names [J]`` (matched to ``skeleton.names``, so the file's joint order may
    differ) and ``times [T]``.

    Args:
        path: the ``.npz`` file.
        skeleton: the skeleton the poses must fit (joint count and names, rest root joint).
        skeleton_label: how messages call ``skeleton``.

    Returns:
        :class:`PoseSequence`.

    Raises:
        DatasetError: one line naming ``path``: not ``.npz``, missing or unreadable, no
            ``rotations``, a joint missing, a NaN/inf rotation or root, arrays of other lengths.
    """
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise DatasetError(path, "a pose file is an .npz archive (the poses.npz layout of tensorfield.datasets.avatars)")
    root_transform, rotations, times = _read_poses(path, None, skeleton, skeleton_label)
    return PoseSequence(rotations=rotations, root=root_transform, times=times)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_frames(
    folder: Path, root: Path, background: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(rgb [T, H, W, 3], alpha [T, H, W] or None, source)`` from ``images/`` or ``video.mp4``."""
    images_dir, video = folder / "images", folder / "video.mp4"
    if images_dir.is_dir():
        files = _image_files(images_dir)
        if not files:
            raise DatasetError(images_dir, "no images (.png/.jpg)", root=root)
        decoded = [decode(f, root) for f in files]
        size = decoded[0].shape[:2]
        for f, pixels in zip(files, decoded):
            if pixels.shape[:2] != size:
                raise DatasetError(
                    f,
                    f"image is {pixels.shape[1]}x{pixels.shape[0]} but {files[0].name} is {size[1]}x{size[0]}",
                    root=root,
                )
        stack = np.stack(decoded)
        alpha = stack[..., 3] if stack.shape[-1] == 4 else None
        rgb = stack[..., :3]
        if alpha is not None:  # straight alpha -> composite on the background
            rgb = rgb * alpha[..., None] + background * (1.0 - alpha[..., None])
        return rgb.astype(np.float32), alpha, "images/"
    if video.is_file():
        from .n3v import decode_video, probe_video

        info = probe_video(video, root)
        frames = decode_video(video, np.arange(info.frames), 1.0, root)
        return np.stack([f.pixels for f in frames]).astype(np.float32), None, "video.mp4"
    raise DatasetError(folder, "no images/ folder and no video.mp4", root=root)


def _read_masks(
    folder: Path, root: Path, count: int, height: int, width: int, source: str
) -> np.ndarray:
    files = _image_files(folder)
    if len(files) != count:
        raise DatasetError(folder, f"{len(files)} masks but {source} has {count} frames", root=root)
    masks = []
    for f in files:
        pixels = decode(f, root)
        if pixels.shape[:2] != (height, width):
            raise DatasetError(
                f,
                f"mask is {pixels.shape[1]}x{pixels.shape[0]} but the images are {width}x{height}",
                root=root,
            )
        masks.append(pixels[..., 0])
    return np.stack(masks).astype(np.float32)


def read_sequence(
    folder: Path,
    root: Path,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    smpl_model_path: str | Path | None = None,
) -> AvatarSequence:
    """Read and check one identity folder (module docstring); errors name files relative to
    ``root``. ``smpl_model_path``: the SMPL model files of an SMPL ``skeleton.json`` (default
    ``$TENSORFIELD_SMPL``)."""
    if not folder.is_dir():
        raise DatasetError(folder, "missing identity folder", root=root)
    skeleton = _read_skeleton(folder / "skeleton.json", root, smpl_model_path)
    cameras_path, poses_path = folder / "cameras.json", folder / "poses.npz"
    camera_frames, width, height = _read_cameras(cameras_path, root)
    root_transform, rotations, times = _read_poses(poses_path, root, skeleton)
    rgb, alpha, source = _read_frames(folder, root, np.asarray(background, dtype=np.float32))
    count, n_cameras, n_poses = rgb.shape[0], len(camera_frames), rotations.shape[0]
    if n_cameras == n_poses != count:  # the two metadata files agree: the frames are off
        raise DatasetError(
            folder / source.rstrip("/"),
            f"{count} frames but cameras.json and poses.npz have {n_cameras}",
            root=root,
        )
    if n_cameras != count:
        raise DatasetError(cameras_path, f"{n_cameras} frames but {source} has {count}", root=root)
    if n_poses != count:
        raise DatasetError(poses_path, f"{n_poses} frames but {source} has {count}", root=root)
    if rgb.shape[1:3] != (height, width):
        shown = folder / source if source == "video.mp4" else folder / "images"
        raise DatasetError(
            shown,
            f"frames are {rgb.shape[2]}x{rgb.shape[1]} but cameras.json says {width}x{height}",
            root=root,
        )
    masks = alpha
    if (folder / "masks").is_dir():
        masks = _read_masks(folder / "masks", root, count, height, width, source)
    if times is None:
        times = (
            torch.linspace(0.0, 1.0, count, dtype=torch.float64)
            if count > 1
            else torch.zeros(1, dtype=torch.float64)
        )
    column = lambda key: torch.tensor([f[key] for f in camera_frames], dtype=torch.float32)
    cameras = Cameras(
        c2w=torch.from_numpy(np.stack([f["c2w"][:3] for f in camera_frames])).float(),
        fx=column("fx"), fy=column("fy"), cx=column("cx"), cy=column("cy"),
        width=width, height=height, times=times.float(),
    )  # fmt: skip
    return AvatarSequence(
        name=folder.name,
        images=torch.from_numpy(np.ascontiguousarray(rgb)),
        cameras=cameras,
        root=root_transform,
        rotations=rotations,
        skeleton=skeleton,
        masks=None if masks is None else torch.from_numpy(np.ascontiguousarray(masks)),
    )


def _read_index(path: Path, root: Path) -> tuple[list[str], dict, tuple[float, float, float]]:
    meta = read_json(path, root)
    if meta.get("format", FORMAT) != FORMAT:
        raise DatasetError(
            path, f"format is {meta.get('format')!r}, expected {FORMAT!r}", root=root
        )
    names = meta.get("identities")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise DatasetError(path, "'identities' must be a non-empty list of folder names", root=root)
    if len(set(names)) != len(names):
        raise DatasetError(
            path,
            f"identity {next(n for n in names if names.count(n) > 1)!r} is listed twice",
            root=root,
        )
    splits = meta.get("splits", {})
    if not isinstance(splits, dict):
        raise DatasetError(
            path, "'splits' must be an object {split: {identity: [frames]}}", root=root
        )
    for split, per in splits.items():
        if not isinstance(per, dict):
            raise DatasetError(
                path, f"split {split!r} must map identities to frame lists", root=root
            )
        for name, frames in per.items():
            if name not in names:
                raise DatasetError(
                    path, f"split {split!r} names unknown identity {name!r}", root=root
                )
            if not isinstance(frames, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in frames
            ):
                raise DatasetError(
                    path,
                    f"split {split!r} frames of {name!r} must be a list of integers",
                    root=root,
                )
    background = meta.get("background", [0.0, 0.0, 0.0])
    if not (isinstance(background, list) and len(background) == 3):
        raise DatasetError(path, "'background' must be [r, g, b]", root=root)
    colour = tuple(number(c, "background", path, root) for c in background)
    return names, splits, colour  # type: ignore[return-value]


def load_avatars(
    path: str | Path,
    identities: Sequence[str] | None = None,
    smpl_model_path: str | Path | None = None,
) -> AvatarDataset:
    """Load a multi-identity data set (layout and checks in the module docstring).

    Args:
        path: the data set folder or its ``avatars.json``.
        identities: load only these (default all, in ``avatars.json`` order); splits keep only them.
        smpl_model_path: folder or file of the SMPL model, for SMPL skeletons (default
            ``$TENSORFIELD_SMPL``; unused by generic skeletons).

    Returns:
        :class:`AvatarDataset`.

    Raises:
        DatasetError: one line naming the file at fault.
    """
    path = Path(path)
    root = path.parent if path.is_file() else path
    index = root / AVATARS_FILE
    if not index.is_file():
        raise DatasetError(index, "missing file (not an avatars data set)", root=root)
    names, splits, background = _read_index(index, root)
    if identities is not None:
        unknown = [n for n in identities if n not in names]
        if unknown:
            raise DatasetError(index, f"identity {unknown[0]!r} is not listed", root=root)
        names = [n for n in names if n in identities]
    sequences = {name: read_sequence(root / name, root, background, smpl_model_path) for name in names}
    kept: dict[str, dict[str, list[int]]] = {}
    for split, per in splits.items():
        kept[split] = {}
        for name, frames in per.items():
            if name not in sequences:
                continue
            count = len(sequences[name])
            bad = [i for i in frames if not 0 <= i < count]
            if bad:
                raise DatasetError(
                    index,
                    f"split {split!r} frame {bad[0]} of {name!r} is out of range ({count} frames)",
                    root=root,
                )
            kept[split][name] = list(frames)
    return AvatarDataset(root=root, sequences=sequences, splits=kept, background=background)
