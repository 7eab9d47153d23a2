"""COLMAP sparse models as a data set: ``cameras``, ``images`` (and ``points3D``), ``.bin`` or ``.txt``.

Layout: a scene folder with ``images/`` and a model folder, the first of ``sparse/0``, ``sparse``
and ``colmap/sparse/0`` (where ``ns-process-data`` and ``tensorfield process`` put it) that holds
``cameras`` and ``images`` files. Binary files are preferred when both kinds exist; either
gives the same result (text is written with round-trip precision by COLMAP and by
:func:`write_model`). Image ``NAME`` s are relative to ``images/``.

**Files** (COLMAP's own layouts, little endian):

* ``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]``; ``cameras.bin``: ``uint64`` count,
  then per camera ``int32 id, int32 model id, uint64 width, uint64 height, float64 params[n]``
  (``n`` fixed by the model);
* ``images.txt``: two lines per image, ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` then the
  (possibly empty) ``POINTS2D[] as (X, Y, POINT3D_ID)`` line; ``images.bin``: ``uint64`` count,
  then per image ``int32 id, 4 x float64 q, 3 x float64 t, int32 camera id``, the name as a
  NUL-terminated string, ``uint64`` number of 2D points and ``(float64 x, float64 y, int64 id)``
  each (the 2D points are skipped);
* ``points3D``: read with :func:`.colmap.read_points3d` (COLMAP's world = the poses' world).

**Cameras.** COLMAP's pixel convention (centre of the top-left pixel at ``(0.5, 0.5)``) is this
package's, so ``cx, cy`` are used as written. Models and their distortion in this package's order
``(k1, k2, k3, k4, p1, p2)`` (:mod:`.distortion`; images are undistorted at load):

=================  ==========================  ==============================
model              params                      distortion
=================  ==========================  ==============================
SIMPLE_PINHOLE     f, cx, cy                   none
PINHOLE            fx, fy, cx, cy              none
SIMPLE_RADIAL      f, cx, cy, k                (k, 0, 0, 0, 0, 0)
RADIAL             f, cx, cy, k1, k2           (k1, k2, 0, 0, 0, 0)
OPENCV             fx, fy, cx, cy, k1, k2,     (k1, k2, 0, 0, p1, p2)
                   p1, p2
=================  ==========================  ==============================

Every other model (``OPENCV_FISHEYE``, ``FULL_OPENCV``, ``FOV``, the fisheye and thin-prism
models) is refused by name.

**Poses.** COLMAP stores world-to-camera ``x_cam = R(q) x_world + t`` with ``q = (qw, qx, qy, qz)``
and an OpenCV camera frame, so ``c2w = [R^T | -R^T t]``.

**Splits.** Images sorted by name; every 8th one (0, 8, 16, ...) is the test split, the rest
train (nerfstudio's rule, :data:`.nerfstudio.TEST_EVERY`); no val split.

**Bounds** in COLMAP's frame (what ``normalize=none`` trains in) are the nerfstudio loader's
camera box (:func:`.normalize.camera_box`); by default :func:`.scene.load_scene` normalises the
scene (:mod:`.normalize`).

Bad input raises a one-line :class:`~.errors.DatasetError` naming the file and the camera or image
at fault: truncated or malformed files, unknown or unsupported camera models, an image whose
camera is missing, a non-finite or zero quaternion, a missing ``images/`` file.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .colmap import read_points3d, write_points3d_binary, write_points3d_text
from .errors import DatasetError, one_line
from .normalize import camera_box, near_far_for_box
from .parsing import FrameRecord, ParsedScene

MODEL_FOLDERS = ("sparse/0", "sparse", "colmap/sparse/0")
IMAGE_FOLDER = "images"
TEST_EVERY = 8

#: COLMAP's model ids -> (name, number of parameters), all models COLMAP defines.
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
MODEL_IDS = {name: model_id for model_id, (name, _) in CAMERA_MODELS.items()}
SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")

_CAMERA_HEAD = struct.Struct("<iiQQ")  # id, model id, width, height
_IMAGE_HEAD = struct.Struct("<i4d3di")  # id, qw qx qy qz, tx ty tz, camera id
_POINT2D = struct.Struct("<ddq")  # x, y, point3D id


@dataclass(frozen=True)
class ColmapCamera:
    """One entry of ``cameras.bin`` / ``cameras.txt``."""

    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass(frozen=True)
class ColmapImage:
    """One entry of ``images.bin`` / ``images.txt`` (without its 2D points).

    Attributes:
        qvec: world-to-camera rotation ``(qw, qx, qy, qz)``.
        tvec: world-to-camera translation ``[3]``.
    """

    image_id: int
    qvec: tuple[float, float, float, float]
    tvec: tuple[float, float, float]
    camera_id: int
    name: str


# ---------------------------------------------------------------------------------- layout
def locate_model(root: Path) -> Path | None:
    """The first model folder of :data:`MODEL_FOLDERS` holding ``cameras`` and ``images`` files."""
    for folder in MODEL_FOLDERS:
        path = root / folder
        if _model_file(path, "cameras") is not None and _model_file(path, "images") is not None:
            return path
    return None


def is_colmap(root: Path) -> bool:
    return locate_model(root) is not None


def _model_file(folder: Path, stem: str) -> Path | None:
    for suffix in (".bin", ".txt"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


# ---------------------------------------------------------------------------------- readers
class _Cursor:
    """Sequential ``struct`` reads over a binary file; running off the end is a DatasetError."""

    def __init__(self, path: Path, root: Path | None):
        self.path, self.root = path, root
        self.data = _read_bytes(path, root)
        self.offset = 0

    def read(self, layout: struct.Struct, what: str) -> tuple:
        if self.offset + layout.size > len(self.data):
            raise DatasetError(self.path, f"truncated in {what}", root=self.root)
        values = layout.unpack_from(self.data, self.offset)
        self.offset += layout.size
        return values

    def skip(self, count: int, what: str) -> None:
        if self.offset + count > len(self.data):
            raise DatasetError(self.path, f"truncated in {what}", root=self.root)
        self.offset += count

    def string(self, what: str) -> str:
        end = self.data.find(b"\x00", self.offset)
        if end < 0:
            raise DatasetError(self.path, f"truncated in {what} (name not terminated)", root=self.root)
        raw, self.offset = self.data[self.offset : end], end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetError(self.path, f"{what} name is not UTF-8", root=self.root) from None

    def count(self, what: str, min_record: int) -> int:
        (count,) = self.read(struct.Struct("<Q"), f"the {what} count")
        # reject absurd counts before looping (each record has a fixed-size head)
        if count > (len(self.data) - self.offset) // min_record:
            raise DatasetError(
                self.path, f"truncated: header says {count} {what} but the file is too short", root=self.root
            )
        return count

    def finish(self, what: str) -> None:
        if self.offset != len(self.data):
            extra = len(self.data) - self.offset
            raise DatasetError(self.path, f"{extra} unexpected bytes after the last {what}", root=self.root)


def _read_bytes(path: Path, root: Path | None) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(path, "missing file", root=root) from None
    except OSError as error:
        raise DatasetError(path, f"unreadable file ({one_line(error.strerror)})", root=root) from None


def _text_lines(path: Path, root: Path | None) -> list[str]:
    try:
        return _read_bytes(path, root).decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise DatasetError(path, f"not a text file (use {path.stem}.bin for binary)", root=root) from None


def read_cameras(path: Path, root: Path | None = None) -> dict[int, ColmapCamera]:
    """Cameras of a ``cameras.bin`` / ``cameras.txt`` (by extension), by camera id.

    Raises:
        DatasetError: truncated or malformed file, unknown model, wrong parameter count,
            duplicate id, non-finite parameters (naming the camera).
    """
    path = Path(path)
    cameras: dict[int, ColmapCamera] = {}
    if path.suffix.lower() == ".bin":
        cursor = _Cursor(path, root)
        count = cursor.count("cameras", _CAMERA_HEAD.size)
        for i in range(count):
            camera_id, model_id, width, height = cursor.read(_CAMERA_HEAD, f"camera {i} of {count}")
            if model_id not in CAMERA_MODELS:
                raise DatasetError(path, f"camera {camera_id}: unknown camera model id {model_id}", root=root)
            name, num_params = CAMERA_MODELS[model_id]
            params = cursor.read(struct.Struct(f"<{num_params}d"), f"the parameters of camera {camera_id}")
            _add_camera(cameras, ColmapCamera(camera_id, name, width, height, params), path, root)
        cursor.finish("camera")
        return cameras
    for number, line in enumerate(_text_lines(path, root), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) < 4:
            raise DatasetError(path, f"line {number}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]", root=root)
        try:
            camera_id, width, height = int(words[0]), int(words[2]), int(words[3])
            params = tuple(float(w) for w in words[4:])
        except ValueError:
            raise DatasetError(path, f"line {number}: non-numeric value", root=root) from None
        model = words[1]
        if model not in MODEL_IDS:
            raise DatasetError(path, f"camera {camera_id}: unknown camera model {model}", root=root)
        expected = CAMERA_MODELS[MODEL_IDS[model]][1]
        if len(params) != expected:
            raise DatasetError(
                path, f"camera {camera_id}: {model} has {expected} parameters, got {len(params)}", root=root
            )
        _add_camera(cameras, ColmapCamera(camera_id, model, width, height, params), path, root)
    return cameras


def _add_camera(cameras: dict, camera: ColmapCamera, path: Path, root: Path | None) -> None:
    if camera.camera_id in cameras:
        raise DatasetError(path, f"camera {camera.camera_id} is listed twice", root=root)
    if camera.width <= 0 or camera.height <= 0:
        raise DatasetError(path, f"camera {camera.camera_id}: size must be positive, got {camera.width}x{camera.height}", root=root)
    if not all(math.isfinite(p) for p in camera.params):
        raise DatasetError(path, f"camera {camera.camera_id}: parameters hold NaN/inf", root=root)
    cameras[camera.camera_id] = camera


def read_images(path: Path, root: Path | None = None) -> list[ColmapImage]:
    """Images (poses and names) of an ``images.bin`` / ``images.txt`` (by extension), in file order.

    Raises:
        DatasetError: truncated or malformed file, duplicate id, non-finite or zero quaternion,
            non-finite translation (naming the image).
    """
    path = Path(path)
    images: list[ColmapImage] = []
    if path.suffix.lower() == ".bin":
        cursor = _Cursor(path, root)
        count = cursor.count("images", _IMAGE_HEAD.size + 1 + 8)
        for i in range(count):
            image_id, qw, qx, qy, qz, tx, ty, tz, camera_id = cursor.read(_IMAGE_HEAD, f"image {i} of {count}")
            name = cursor.string(f"image {image_id}")
            (num_points,) = cursor.read(struct.Struct("<Q"), f"the 2D points of image {image_id}")
            cursor.skip(num_points * _POINT2D.size, f"the 2D points of image {image_id}")
            images.append(ColmapImage(image_id, (qw, qx, qy, qz), (tx, ty, tz), camera_id, name))
        cursor.finish("image")
    else:
        lines = _text_lines(path, root)
        number = 0
        while number < len(lines):
            line, number = lines[number], number + 1
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if len(words) < 10:
                raise DatasetError(
                    path, f"line {number}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME", root=root
                )
            try:
                image_id, camera_id = int(words[0]), int(words[8])
                values = [float(w) for w in words[1:8]]
            except ValueError:
                raise DatasetError(path, f"line {number}: non-numeric value", root=root) from None
            # the name may hold spaces: it is everything after the ninth field
            name = line.strip().split(maxsplit=9)[9]
            number += 1  # the POINTS2D line that follows every image line (may be empty)
            images.append(ColmapImage(image_id, tuple(values[:4]), tuple(values[4:]), camera_id, name))
    seen: set[int] = set()
    for image in images:
        if image.image_id in seen:
            raise DatasetError(path, f"image {image.image_id} is listed twice", root=root)
        seen.add(image.image_id)
        q, t = np.asarray(image.qvec), np.asarray(image.tvec)
        if not (np.isfinite(q).all() and np.isfinite(t).all()):
            raise DatasetError(path, f"image {image.image_id} ({image.name}): pose holds NaN/inf", root=root)
        if np.linalg.norm(q) < 1e-8:
            raise DatasetError(path, f"image {image.image_id} ({image.name}): quaternion is zero", root=root)
    return images


# ---------------------------------------------------------------------------------- conversion
def qvec_to_rotmat(qvec) -> np.ndarray:
    """``[3, 3]`` rotation of a quaternion ``(qw, qx, qy, qz)`` (normalised first)."""
    w, x, y, z = np.asarray(qvec, dtype=np.float64) / np.linalg.norm(qvec)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def rotmat_to_qvec(rotation: np.ndarray) -> np.ndarray:
    """Quaternion ``(qw, qx, qy, qz)`` with ``qw >= 0`` of a ``[3, 3]`` rotation (for writers)."""
    r = np.asarray(rotation, dtype=np.float64)
    # the eigenvector of the symmetric 4x4 K with the largest eigenvalue is the quaternion
    # (numerically stable for every rotation, unlike the trace formula)
    k = np.array([
        [r[0, 0] - r[1, 1] - r[2, 2], r[1, 0] + r[0, 1], r[2, 0] + r[0, 2], r[2, 1] - r[1, 2]],
        [r[1, 0] + r[0, 1], r[1, 1] - r[0, 0] - r[2, 2], r[2, 1] + r[1, 2], r[0, 2] - r[2, 0]],
        [r[2, 0] + r[0, 2], r[2, 1] + r[1, 2], r[2, 2] - r[0, 0] - r[1, 1], r[1, 0] - r[0, 1]],
        [r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1], r[0, 0] + r[1, 1] + r[2, 2]],
    ]) / 3.0  # fmt: skip
    values, vectors = np.linalg.eigh(k)
    x, y, z, w = vectors[:, np.argmax(values)]
    q = np.array([w, x, y, z])
    return q if w >= 0 else -q


def image_c2w(image: ColmapImage) -> np.ndarray:
    """``[3, 4]`` OpenCV camera-to-world of a COLMAP image: ``[R^T | -R^T t]``."""
    rotation = qvec_to_rotmat(image.qvec)
    c2w = np.empty((3, 4))
    c2w[:, :3] = rotation.T
    c2w[:, 3] = -rotation.T @ np.asarray(image.tvec, dtype=np.float64)
    return c2w


def camera_intrinsics(camera: ColmapCamera, path: Path, root: Path | None = None) -> dict:
    """:class:`FrameRecord` keyword arguments (``fx, fy, cx, cy, width, height, distortion``).

    Raises:
        DatasetError: a model outside :data:`SUPPORTED_MODELS`, or a non-positive focal length.
    """
    p = camera.params
    if camera.model == "SIMPLE_PINHOLE":
        fx = fy = p[0]
        cx, cy, coefficients = p[1], p[2], None
    elif camera.model == "PINHOLE":
        fx, fy, cx, cy, coefficients = p[0], p[1], p[2], p[3], None
    elif camera.model == "SIMPLE_RADIAL":
        fx = fy = p[0]
        cx, cy, coefficients = p[1], p[2], (p[3], 0.0, 0.0, 0.0, 0.0, 0.0)
    elif camera.model == "RADIAL":
        fx = fy = p[0]
        cx, cy, coefficients = p[1], p[2], (p[3], p[4], 0.0, 0.0, 0.0, 0.0)
    elif camera.model == "OPENCV":
        fx, fy, cx, cy = p[:4]
        coefficients = (p[4], p[5], 0.0, 0.0, p[6], p[7])
    else:
        raise DatasetError(
            path,
            f"camera {camera.camera_id}: camera model {camera.model} is not supported "
            f"(supported: {', '.join(SUPPORTED_MODELS)})",
            root=root,
        )
    if not (fx > 0 and fy > 0):
        raise DatasetError(path, f"camera {camera.camera_id}: focal length must be positive", root=root)
    distortion = np.asarray(coefficients) if coefficients is not None and any(coefficients) else None
    return {
        "fx": float(fx), "fy": float(fy), "cx": float(cx), "cy": float(cy),
        "width": int(camera.width), "height": int(camera.height), "distortion": distortion,
    }  # fmt: skip


# ---------------------------------------------------------------------------------- parser
def parse_colmap(root: Path, splits: tuple[str, ...]) -> ParsedScene:
    """Read the metadata of a COLMAP scene folder (no image is decoded).

    Args:
        root: folder with ``images/`` and a model folder (see the module docstring).
        splits: splits to return (``train``, ``test``; there is no val split).

    Raises:
        DatasetError: naming the file (and camera or image) for every problem.
    """
    folder = locate_model(root)
    if folder is None:
        raise DatasetError(root, f"no COLMAP model (cameras + images) in {', '.join(MODEL_FOLDERS)}")
    cameras_path, images_path = _model_file(folder, "cameras"), _model_file(folder, "images")
    cameras = read_cameras(cameras_path, root)
    images = read_images(images_path, root)
    if not images:
        raise DatasetError(images_path, "no images", root=root)
    image_folder = root / IMAGE_FOLDER
    if not image_folder.is_dir():
        raise DatasetError(image_folder, "missing image folder (COLMAP image names are relative to it)", root=root)

    intrinsics: dict[int, dict] = {}
    records = []
    for index, image in enumerate(sorted(images, key=lambda im: im.name)):
        if image.camera_id not in cameras:
            raise DatasetError(
                images_path, f"image {image.image_id} ({image.name}) uses camera {image.camera_id}, "
                f"which {cameras_path.name} does not list", root=root,
            )  # fmt: skip
        if image.camera_id not in intrinsics:
            intrinsics[image.camera_id] = camera_intrinsics(cameras[image.camera_id], cameras_path, root)
        image_path = image_folder / image.name
        if not image_path.is_file():
            raise DatasetError(
                image_path, f"missing image ({images_path.name} image {image.image_id})", root=root
            )
        records.append(
            FrameRecord(
                image_path=image_path,
                c2w=image_c2w(image),
                source=images_path.name,
                index=image.image_id,
                **intrinsics[image.camera_id],
            )
        )
    # records are sorted by name: every TEST_EVERY-th is test (one image: train only)
    assignment = {"train": records} if len(records) < 2 else {
        "train": [r for k, r in enumerate(records) if k % TEST_EVERY != 0],
        "test": [r for k, r in enumerate(records) if k % TEST_EVERY == 0],
    }  # fmt: skip
    chosen = {name: assignment[name] for name in splits if assignment.get(name)}

    all_c2w = np.stack([r.c2w for r in records])
    aabb = camera_box(all_c2w[:, :, 3], all_c2w[:, :, 2])
    near, far = near_far_for_box(aabb, all_c2w[:, :, 3])
    points = colors = None
    points_path = _model_file(folder, "points3D")
    if points_path is not None:
        points, colors = read_points3d(points_path, root)
        if len(points) == 0:
            points = colors = None
    return ParsedScene(root, "colmap", chosen, aabb, near, far, points, colors, all_c2w=all_c2w)


# ---------------------------------------------------------------------------------- writers
def write_model(
    folder: str | Path,
    cameras: list[ColmapCamera],
    images: list[ColmapImage],
    points: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    binary: bool = True,
) -> Path:
    """Write ``cameras``, ``images`` (no 2D points) and optional ``points3D`` in COLMAP's layout.

    For tests and for handing a scene to COLMAP-based tools; text floats use ``repr`` so a text
    model reads back bit-identical to a binary one.

    Args:
        folder: model folder (created), e.g. ``scene/sparse/0``.
        points, colors: ``[P, 3]`` points and colours in [0, 1] (empty tracks).
        binary: ``.bin`` files, else ``.txt``.

    Returns:
        ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if binary:
        chunks = [struct.pack("<Q", len(cameras))]
        for c in cameras:
            chunks.append(_CAMERA_HEAD.pack(c.camera_id, MODEL_IDS[c.model], c.width, c.height))
            chunks.append(struct.pack(f"<{len(c.params)}d", *c.params))
        (folder / "cameras.bin").write_bytes(b"".join(chunks))
        chunks = [struct.pack("<Q", len(images))]
        for im in images:
            chunks.append(_IMAGE_HEAD.pack(im.image_id, *im.qvec, *im.tvec, im.camera_id))
            chunks.append(im.name.encode("utf-8") + b"\x00" + struct.pack("<Q", 0))
        (folder / "images.bin").write_bytes(b"".join(chunks))
    else:
        lines = ["# Camera list with one line of data per camera:",
                 "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]  # fmt: skip
        lines += [" ".join([str(c.camera_id), c.model, str(c.width), str(c.height), *map(repr, map(float, c.params))])
                  for c in cameras]  # fmt: skip
        (folder / "cameras.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        lines = ["# Image list with two lines of data per image:",
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
                 "#   POINTS2D[] as (X, Y, POINT3D_ID)"]  # fmt: skip
        for im in images:
            values = [repr(float(v)) for v in (*im.qvec, *im.tvec)]
            lines += [" ".join([str(im.image_id), *values, str(im.camera_id), im.name]), ""]
        (folder / "images.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if points is not None:
        colors = np.full_like(np.asarray(points), 0.5) if colors is None else colors
        writer = write_points3d_binary if binary else write_points3d_text
        writer(folder / f"points3D.{'bin' if binary else 'txt'}", points, colors)
    return folder


def write_scene_as_colmap(
    scene, out: str | Path, world: np.ndarray | None = None, *, binary: bool = True, folder: str = "sparse/0"
) -> Path:
    """Write a loaded scene as a COLMAP scene folder (``out/images`` + ``out/<folder>``).

    Images are copied as ``<split>_<file name>``; each distinct set of intrinsics becomes one
    ``PINHOLE`` camera (the loaded cameras are distortion-free); ``scene.points`` become
    ``points3D``. For tests and for handing a data set to COLMAP-based tools.

    Args:
        scene: a :class:`tensorfield.datasets.scene.Scene`.
        out: scene folder to create.
        world: optional ``[4, 4]`` similarity ``[[s R, t], [0, 1]]`` applied to poses and points
            (to write the scene in another frame).
        binary, folder: file kind and model folder (``sparse/0``, ``sparse`` or ``colmap/sparse/0``).

    Returns:
        ``out``.
    """
    import shutil

    from .normalize import SceneTransform

    out = Path(out)
    (out / IMAGE_FOLDER).mkdir(parents=True, exist_ok=True)
    transform = SceneTransform(np.eye(4) if world is None else np.asarray(world, dtype=np.float64))
    cameras: dict[tuple, ColmapCamera] = {}
    images = []
    for split in scene.splits.values():
        c2w = transform.apply_c2w(split.cameras.c2w.double().numpy())
        for i, path in enumerate(split.image_paths):
            name = f"{split.name}_{Path(path).name}"
            shutil.copy(path, out / IMAGE_FOLDER / name)
            c = split.cameras
            key = (c.width, c.height, float(c.fx[i]), float(c.fy[i]), float(c.cx[i]), float(c.cy[i]))
            if key not in cameras:
                cameras[key] = ColmapCamera(len(cameras) + 1, "PINHOLE", key[0], key[1], key[2:])
            images.append(image_from_c2w(len(images) + 1, c2w[i], cameras[key].camera_id, name))
    points = colors = None
    if scene.points is not None:
        points = transform.apply_points(scene.points.double().numpy())
        colors = np.full_like(points, 0.5) if scene.points_rgb is None else scene.points_rgb.double().numpy()
    write_model(out / folder, list(cameras.values()), images, points, colors, binary=binary)
    return out


def image_from_c2w(image_id: int, c2w: np.ndarray, camera_id: int, name: str) -> ColmapImage:
    """The :class:`ColmapImage` of an OpenCV ``[3, 4]`` camera-to-world (inverse of :func:`image_c2w`)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    rotation = c2w[:3, :3].T
    tvec = -rotation @ c2w[:3, 3]
    return ColmapImage(image_id, tuple(rotmat_to_qvec(rotation).tolist()), tuple(tvec.tolist()), camera_id, name)


__all__ = [
    "CAMERA_MODELS",
    "ColmapCamera",
    "ColmapImage",
    "SUPPORTED_MODELS",
    "camera_intrinsics",
    "image_c2w",
    "image_from_c2w",
    "is_colmap",
    "locate_model",
    "parse_colmap",
    "qvec_to_rotmat",
    "read_cameras",
    "read_images",
    "rotmat_to_qvec",
    "write_model",
    "write_scene_as_colmap",
]
