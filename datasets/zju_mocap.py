"""ZJU-MoCap captures (neuralbody's layout) as a multi-identity monocular avatar data set.

``--data`` may point at one subject folder or at a folder of them (each subfolder with an
``annots.npy`` is a subject, in name order); :func:`is_zju_mocap` detects either. A subject
(``CoreView_377`` ...) holds::

    annots.npy          a pickled dict: "cams": {"K": [C x 3x3], "R": [C x 3x3], "T": [C x 3x1],
                        "D": [C x 5x1]} and "ims": [{"ims": [C image paths]} per frame]
    Camera_B1/000000.jpg ...    the images the paths name (relative to the subject folder;
                                some releases put them under images/)
    mask_cihp/<path>.png or mask/<path>.png   the foreground masks (non-zero = body)
    new_params/<i>.npy or params/<i>.npy      pickled dicts of the SMPL fit of frame i:
                        "poses" [1, 72], "shapes" [1, 10], "Rh" [1, 3], "Th" [1, 3]

Conventions, as neuralbody reads them (``lib/datasets``): the cameras are OpenCV
world-to-camera ``x_c = R x_w + T`` with ``T`` in **millimetres** (divided by 1000: the world and
the SMPL fits are in metres), intrinsics ``K`` with pixel centres at integer coordinates (so
``cx = K[0, 2] + 0.5`` in this package's convention, :mod:`.cameras`), distortion ``D`` OpenCV's
``(k1, k2, p1, p2, k3)``, undistorted at load time (:func:`.distortion.undistort_image`, as
neuralbody's ``cv2.undistort``). A frame's SMPL fit is ``<i>.npy`` with ``i`` the number of its
image file (``000123.jpg``; ``CoreView_313/315``'s ``..._Camera_B1_0001_...jpg``: the fifth
``_`` field); ``new_params/`` is preferred over ``params/`` when both exist. The SMPL body is
mapped to the world by :math:`x_w = R(R_h)\\, x + T_h` (EasyMocap's fits; neuralbody computes
``(x_w - T_h) R``), with ``poses[:3]`` SMPL's global orientation: :func:`.smpl.smpl_pose`.

The skeleton: the SMPL rest joints of the subject's ``shapes`` (those of its first loaded frame)
through smplx and the user's SMPL model files (:mod:`.smpl`: ``smpl_model_path`` or
``TENSORFIELD_SMPL``); without them, neuralbody's precomputed ``lbs/joints.npy`` ``[24, 3]`` and
``lbs/parents.npy`` when the subject has them.

**Monocular protocol** (3DGS-Avatar's and the official MIGS ``zjumocap_multi`` config: train on
view ``'1'``, i.e. camera 0, every frame; novel views are the other cameras): each subject is one
:class:`~.avatars.AvatarSequence` whose frames are, in order, the ``train_frames`` of ``camera``
(split ``train``), the ``novel_pose_frames`` of ``camera`` (split ``novel_pose``) and the
``novel_view_frames`` of each of ``novel_view_cameras`` (split ``novel_view``). Frame ranges are
``[start, end, step]`` over the annotated frames (``end`` 0 = all). Subjects in ``held_out`` go to
``novel_identity`` / ``novel_identity_pose`` / ``novel_identity_view`` instead (``tensorfield
fit-identity``). Images are masked onto ``background`` and averaged down by ``downscale`` as they
load (1024x1024 ZJU frames are 12 MB each in float32; MIGS trains at 512x512, ``downscale=2``).

Every problem is a one-line :class:`~.errors.DatasetError` naming the file: ``annots.npy``
missing or malformed, a camera index out of range, a frame range beyond the annotated frames, a
frame without its SMPL fit (``new_params/<i>.npy: missing file``), NaN/inf pose parameters (naming
the file and the joint), a missing image or mask, images of another size.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tensorfield.fields.skeleton import Skeleton

from .avatars import AvatarDataset, AvatarSequence
from .cameras import Cameras
from .distortion import undistort_image
from .errors import DatasetError, one_line
from .images import decode, resize
from .smpl import SMPL_JOINT_NAMES, smpl_model_location, smpl_pose, smpl_skeleton

ANNOTS_FILE = "annots.npy"
PARAM_DIRS = ("new_params", "params")
MASK_DIRS = ("mask_cihp", "mask")


# ====================================================================== layout
def zju_subjects(path: str | Path) -> list[Path]:
    """Subject folders of ``path``: itself when it holds ``annots.npy``, else its subfolders that
    do (name order); empty when none."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    if (path / ANNOTS_FILE).is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(child for child in path.iterdir() if child.is_dir() and (child / ANNOTS_FILE).is_file())


def is_zju_mocap(path: str | Path) -> bool:
    """Whether ``path`` is a ZJU-MoCap subject or a folder of subjects (module docstring)."""
    return bool(zju_subjects(path))


def _read_annots(path: Path, root: Path) -> tuple[dict[str, np.ndarray], list[list[str]]]:
    """``(cams {K [C,3,3], R [C,3,3], T [C,3] metres, D [C,5]}, ims [frames][C] paths)``."""
    if not path.is_file():
        raise DatasetError(path, "missing file", root=root)
    try:
        annots = np.load(path, allow_pickle=True)  # noqa: S301 - the data set's own pickled annotations
        annots = annots.item() if isinstance(annots, np.ndarray) and annots.dtype == object and annots.ndim == 0 else annots
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, ModuleNotFoundError, pickle.UnpicklingError) as error:
        raise DatasetError(path, f"unreadable file ({one_line(error)[:100]})", root=root) from None
    if not isinstance(annots, dict) or "cams" not in annots or "ims" not in annots:
        raise DatasetError(path, "expected a pickled dict with 'cams' and 'ims' (neuralbody's annots.npy)", root=root)
    cams = annots["cams"]
    if not isinstance(cams, dict):
        raise DatasetError(path, "'cams' must be a dict of K, R, T, D lists", root=root)
    arrays = {}
    for key, shape in (("K", (3, 3)), ("R", (3, 3)), ("T", (3,)), ("D", (5,))):
        if key not in cams:
            if key == "D":
                continue
            raise DatasetError(path, f"cams has no {key!r}", root=root)
        try:
            values = [np.asarray(v, dtype=np.float64).reshape(-1)[: int(np.prod(shape))] for v in cams[key]]
            value = np.stack(values).reshape(-1, *shape)
        except (ValueError, TypeError) as error:
            raise DatasetError(path, f"cams {key} is not a list of {'x'.join(map(str, shape))} arrays ({one_line(error)[:80]})", root=root) from None
        if not np.isfinite(value).all():
            raise DatasetError(path, f"cams {key} of camera {int(np.nonzero(~np.isfinite(value.reshape(len(value), -1)).all(-1))[0][0])} is NaN/inf", root=root)
        arrays[key] = value
    count = len(arrays["K"])
    arrays.setdefault("D", np.zeros((count, 5)))
    for key in ("R", "T", "D"):
        if len(arrays[key]) != count:
            raise DatasetError(path, f"cams has {count} K but {len(arrays[key])} {key}", root=root)
    arrays["T"] = arrays["T"] / 1000.0  # millimetres -> metres
    ims = []
    for t, frame in enumerate(annots["ims"]):
        paths = frame.get("ims") if isinstance(frame, dict) else None
        if paths is None:
            raise DatasetError(path, f"ims[{t}] has no 'ims' list of image paths", root=root)
        ims.append([str(p) for p in paths])
    if not ims:
        raise DatasetError(path, "ims lists no frames", root=root)
    return arrays, ims


def _frame_range(spec: Sequence[int], count: int, what: str, path: Path, root: Path) -> list[int]:
    """Annotated frames of ``[start, end, step]`` (``end`` 0 = all); empty ``spec``: none."""
    if len(spec) == 0:
        return []
    if len(spec) != 3:
        raise DatasetError(path, f"{what} must be [start, end, step], got {list(spec)}", root=root)
    start, end, step = (int(v) for v in spec)
    end = count if end == 0 else end
    if step < 1 or start < 0 or end > count or start >= end:
        raise DatasetError(path, f"{what} {list(spec)} do not fit the {count} frames it lists", root=root)
    return list(range(start, end, step))


def smpl_index(image_path: str) -> int:
    """The SMPL-fit number of an image (module docstring): ``000123.jpg`` -> 123,
    ``CoreView_313_Camera_B1_0001_2019-08-23_16-08-50.592.jpg`` -> 1.

    Raises:
        ValueError: a file name with neither form.
    """
    stem = Path(image_path).stem
    if stem.isdigit():
        return int(stem)
    parts = Path(image_path).name.split("_")
    if len(parts) > 4 and parts[4].isdigit():
        return int(parts[4])
    raise ValueError(f"cannot tell the frame number of image {image_path!r}")


def _read_params(folder: Path, index: int, root: Path) -> tuple[dict[str, np.ndarray], Path]:
    """``({poses [72], shapes [B], Rh [3], Th [3]} float64, file)`` of SMPL fit ``index``, checked."""
    path = folder / f"{index}.npy"
    if not path.is_file() and (folder / f"{index:06d}.npy").is_file():
        path = folder / f"{index:06d}.npy"
    if not path.is_file():
        raise DatasetError(path, "missing file (the SMPL fit of an annotated frame)", root=root)
    try:
        params = np.load(path, allow_pickle=True)  # noqa: S301 - the data set's own pickled fits
        params = params.item() if isinstance(params, np.ndarray) and params.dtype == object and params.ndim == 0 else params
    except (OSError, ValueError, EOFError, ModuleNotFoundError, pickle.UnpicklingError) as error:
        raise DatasetError(path, f"unreadable file ({one_line(error)[:100]})", root=root) from None
    if not isinstance(params, dict):
        raise DatasetError(path, "expected a pickled dict of poses, shapes, Rh, Th", root=root)
    out = {}
    for key, size in (("poses", 72), ("shapes", None), ("Rh", 3), ("Th", 3)):
        if key not in params:
            raise DatasetError(path, f"no {key!r}", root=root)
        try:
            value = np.asarray(params[key], dtype=np.float64).reshape(-1)
        except (ValueError, TypeError):
            raise DatasetError(path, f"{key} is not numeric", root=root) from None
        if size is not None and value.size != size:
            raise DatasetError(path, f"{key} has {value.size} numbers, expected {size}", root=root)
        bad = ~np.isfinite(value)
        if bad.any():
            where = f" (joint {int(np.nonzero(bad)[0][0]) // 3}, {SMPL_JOINT_NAMES[int(np.nonzero(bad)[0][0]) // 3]!r})" if key == "poses" else ""
            raise DatasetError(path, f"{key} hold NaN/inf{where}", root=root)
        out[key] = value
    return out, path


def _mask_file(subject: Path, image_path: str, root: Path) -> Path:
    relative = Path(image_path).with_suffix(".png")
    options = [relative] + ([Path(*relative.parts[1:])] if relative.parts[0] == "images" and len(relative.parts) > 1 else [])
    for folder in MASK_DIRS:
        for option in options:
            if (subject / folder / option).is_file():
                return subject / folder / option
    raise DatasetError(subject / MASK_DIRS[-1] / relative, f"missing mask (looked in {' and '.join(f'{d}/' for d in MASK_DIRS)})", root=root)


def _camera(cams: dict[str, np.ndarray], c: int) -> tuple[np.ndarray, tuple[float, float, float, float], np.ndarray]:
    """``(c2w [4, 4] float64 OpenCV, (fx, fy, cx, cy) in this package's convention, distortion
    (k1, k2, k3, k4, p1, p2))`` of camera ``c``."""
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = cams["R"][c], cams["T"][c]
    K = cams["K"][c]
    k1, k2, p1, p2, k3 = cams["D"][c]
    return np.linalg.inv(w2c), (K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5), np.array([k1, k2, k3, 0.0, p1, p2])


def _view(subject: Path, root: Path, image_path: str, intrinsics, distortion: np.ndarray,
          background: np.ndarray, downscale: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(rgb [h, w, 3] on the background, mask [h, w])`` float32 of one image, undistorted and
    averaged down by ``downscale``."""
    image_file = subject / image_path
    if not image_file.is_file() and (subject / "images" / image_path).is_file():
        image_file = subject / "images" / image_path
    rgb = decode(image_file, root)[..., :3]
    mask_file = _mask_file(subject, image_path, root)
    mask = decode(mask_file, root)[..., :3].max(-1)  # CIHP part colours: any non-zero channel is body
    if mask.shape != rgb.shape[:2]:
        raise DatasetError(mask_file, f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {rgb.shape[1]}x{rgb.shape[0]}", root=root)
    stack = np.concatenate([rgb, (mask > 0).astype(np.float32)[..., None]], axis=-1)
    if np.any(distortion != 0.0):
        undistorted, _ = undistort_image(torch.from_numpy(stack), *intrinsics, torch.from_numpy(distortion).float())
        stack = undistorted.numpy()
    height, width = stack.shape[:2]
    if downscale > 1:
        if width % downscale or height % downscale:
            raise DatasetError(image_file, f"image is {width}x{height}, not divisible by downscale={downscale}", root=root)
        stack = resize(stack, width // downscale, height // downscale)
    rgb, alpha = stack[..., :3], stack[..., 3]
    rgb = rgb * alpha[..., None] + background * (1.0 - alpha[..., None])
    return rgb.astype(np.float32), alpha.astype(np.float32)


# ====================================================================== loading
def _skeleton(subject: Path, root: Path, shapes: np.ndarray, params_file: Path, smpl_model_path, gender: str) -> Skeleton:
    joints, parents = subject / "lbs" / "joints.npy", subject / "lbs" / "parents.npy"
    if smpl_model_location(smpl_model_path) is None and joints.is_file() and parents.is_file():
        try:
            return Skeleton(np.load(parents).astype(int).reshape(-1).tolist(), np.load(joints), SMPL_JOINT_NAMES)
        except (ValueError, OSError) as error:
            raise DatasetError(joints, f"unusable rest skeleton with lbs/parents.npy ({one_line(error)[:100]})", root=root) from None
    return smpl_skeleton(shapes, gender=gender, model_path=smpl_model_path, requested_by=params_file, root=root)


def read_zju_subject(
    subject: Path,
    root: Path,
    *,
    camera: int = 0,
    train_frames: Sequence[int] = (0, 0, 1),
    novel_pose_frames: Sequence[int] = (),
    novel_view_cameras: Sequence[int] = (),
    novel_view_frames: Sequence[int] = (0, 0, 30),
    smpl_model_path: str | Path | None = None,
    gender: str = "neutral",
    downscale: int = 1,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> tuple[AvatarSequence, dict[str, list[int]]]:
    """One subject as ``(sequence, {"train" | "novel_pose" | "novel_view": frame indices})``
    (arguments as :func:`load_zju_mocap`)."""
    annots_file = subject / ANNOTS_FILE
    cams, ims = _read_annots(annots_file, root)
    count, n_cameras = len(ims), len(cams["K"])
    for c in [camera, *novel_view_cameras]:
        if not 0 <= int(c) < n_cameras:
            raise DatasetError(annots_file, f"camera {c} out of range (cams has {n_cameras})", root=root)
    parts = {
        "train": [(camera, t) for t in _frame_range(train_frames, count, "train frames", annots_file, root)],
        "novel_pose": [(camera, t) for t in _frame_range(novel_pose_frames, count, "novel-pose frames", annots_file, root)],
        "novel_view": [(int(c), t) for c in novel_view_cameras for t in _frame_range(novel_view_frames, count, "novel-view frames", annots_file, root)],
    }
    params_dir = next((subject / d for d in PARAM_DIRS if (subject / d).is_dir()), None)
    if params_dir is None:
        raise DatasetError(subject / PARAM_DIRS[0], f"missing folder (nor {PARAM_DIRS[1]}/): the per-frame SMPL fits", root=root)
    entries = [entry for part in parts.values() for entry in part]
    if not entries:
        raise DatasetError(annots_file, "no frames selected", root=root)
    background_array = np.asarray(background, dtype=np.float32)
    images, masks, poses, c2ws, intrinsics, first_params = [], [], [], [], [], None
    for c, t in entries:
        if len(ims[t]) != n_cameras:
            raise DatasetError(annots_file, f"frame {t} lists {len(ims[t])} images but cams has {n_cameras} cameras", root=root)
        try:
            index = smpl_index(ims[t][c])
        except ValueError as error:
            raise DatasetError(annots_file, one_line(error), root=root) from None
        params, params_file = _read_params(params_dir, index, root)
        if first_params is None:
            first_params = (params, params_file)
        c2w, pinhole, distortion = _camera(cams, c)
        rgb, alpha = _view(subject, root, ims[t][c], pinhole, distortion, background_array, downscale)
        if images and rgb.shape != images[0].shape:
            raise DatasetError(subject / ims[t][c], f"image is {rgb.shape[1]}x{rgb.shape[0]} but the first is {images[0].shape[1]}x{images[0].shape[0]}", root=root)
        images.append(rgb)
        masks.append(alpha)
        poses.append(params)
        c2ws.append(c2w)
        intrinsics.append(pinhole)
    skeleton = _skeleton(subject, root, first_params[0]["shapes"], first_params[1], smpl_model_path, gender)
    stacked = {key: torch.from_numpy(np.stack([p[key] for p in poses])) for key in ("poses", "Rh", "Th")}
    rotations, root_transform = smpl_pose(stacked["poses"], skeleton.rest_joints[0], Rh=stacked["Rh"], Th=stacked["Th"])
    height, width = images[0].shape[:2]
    column = lambda k: torch.tensor([pinhole[k] for pinhole in intrinsics], dtype=torch.float32) / downscale
    times = torch.tensor([t / max(count - 1, 1) for _, t in entries], dtype=torch.float32)
    cameras = Cameras(
        c2w=torch.from_numpy(np.stack(c2ws)[:, :3]).float(), fx=column(0), fy=column(1), cx=column(2), cy=column(3),
        width=width, height=height, times=times,
    )  # fmt: skip
    splits, start = {}, 0
    for name, part in parts.items():
        if part:
            splits[name] = list(range(start, start + len(part)))
        start += len(part)
    sequence = AvatarSequence(
        name=subject.name, images=torch.from_numpy(np.stack(images)), cameras=cameras, root=root_transform,
        rotations=rotations, skeleton=skeleton, masks=torch.from_numpy(np.stack(masks)),
    )  # fmt: skip
    return sequence, splits


HELD_OUT_SPLITS = {"train": "novel_identity", "novel_pose": "novel_identity_pose", "novel_view": "novel_identity_view"}


def load_zju_mocap(
    path: str | Path,
    *,
    camera: int = 0,
    train_frames: Sequence[int] = (0, 0, 1),
    novel_pose_frames: Sequence[int] = (),
    novel_view_cameras: Sequence[int] = (),
    novel_view_frames: Sequence[int] = (0, 0, 30),
    held_out: Sequence[str] = (),
    identities: Sequence[str] | None = None,
    smpl_model_path: str | Path | None = None,
    gender: str = "neutral",
    downscale: int = 1,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> AvatarDataset:
    """Load ZJU-MoCap subjects as an :class:`~.avatars.AvatarDataset` (module docstring).

    Args:
        path: a subject folder (with ``annots.npy``) or a folder of subject folders.
        camera: the training camera's index in ``annots.npy`` (0 = ``Camera_B1``, view ``'1'``
            of 3DGS-Avatar / MIGS).
        train_frames: ``[start, end, step]`` of the annotated frames to train on (end 0 = all).
        novel_pose_frames: ``[start, end, step]`` seen by ``camera`` for the ``novel_pose`` split
            (empty: none).
        novel_view_cameras: other cameras for the ``novel_view`` split (empty: none).
        novel_view_frames: ``[start, end, step]`` of the novel views (3DGS-Avatar: every 30th).
        held_out: subjects whose frames form the ``novel_identity*`` splits instead.
        identities: load only these subjects (folder names; default all).
        smpl_model_path: folder or file of the SMPL model (default ``$TENSORFIELD_SMPL``).
        gender: the SMPL model's gender (ZJU-MoCap's fits use the neutral model).
        downscale: integer factor the images are averaged down by while loading.
        background: RGB the masked images are composited on.

    Returns:
        :class:`~.avatars.AvatarDataset` rooted at the folder that holds the subjects.

    Raises:
        DatasetError: one line naming the file at fault (module docstring).
    """
    path = Path(path)
    subjects = zju_subjects(path)
    if not subjects:
        raise DatasetError(path / ANNOTS_FILE, "missing file (not a ZJU-MoCap subject, nor a folder of them)")
    root = subjects[0].parent
    names = [s.name for s in subjects]
    for name in [*(identities or []), *held_out]:
        if name not in names:
            raise DatasetError(root / name / ANNOTS_FILE, f"no subject {name!r} (have {', '.join(names)})", root=root)
    if identities is not None:
        subjects = [s for s in subjects if s.name in identities]
    sequences, splits = {}, {}
    for subject in subjects:
        sequence, own = read_zju_subject(
            subject, root, camera=camera, train_frames=train_frames, novel_pose_frames=novel_pose_frames,
            novel_view_cameras=novel_view_cameras, novel_view_frames=novel_view_frames,
            smpl_model_path=smpl_model_path, gender=gender, downscale=downscale, background=background,
        )  # fmt: skip
        sequences[subject.name] = sequence
        for split, frames in own.items():
            name = HELD_OUT_SPLITS[split] if subject.name in held_out else split
            splits.setdefault(name, {})[subject.name] = frames
    return AvatarDataset(root=root, sequences=sequences, splits=splits, background=tuple(float(c) for c in background))

