"""Scenes: posed images split into train / val / test, and :func:`load_scene`, the one loader.

:func:`load_scene` detects the layout (``transforms_train.json``: Blender, or D-NeRF when frames
carry ``time``; ``transforms.json``: nerfstudio; ``poses_bounds.npy`` + ``cam*.mp4``: N3V
multi-view video, :mod:`.n3v`; a COLMAP sparse model in ``sparse/0``, ``sparse`` or
``colmap/sparse/0`` with ``images/``: :mod:`.colmap_model`), reads the metadata with the format's parser, then runs every image
format through the same image pipeline (:mod:`.images`) and camera construction (videos through
:func:`.n3v.load_video_split`, which shares the resizing and the caches), so all scenes obey the
conventions of :mod:`.cameras` (OpenCV poses, pixel centres at +0.5, times in [0, 1] or ``nan``).
SfM points come from the parser or, failing that, from :func:`.points.find_scene_points`.
Last, every scene goes through the one normalisation of :mod:`.normalize` (``normalize="auto"``:
the identity for Blender / D-NeRF / N3V, nerfstudio's up / centre / scale for COLMAP and
nerfstudio data), recorded in :attr:`Scene.transform`.

Images with alpha are composited as ``rgb * a + background * (1 - a)`` (alpha premultiplied before
any resampling) and the alphas are kept. ``background="random"`` stores the images composited on
white and sets :attr:`Scene.random_background`; a trainer draws its own colours and re-composites
with :func:`recomposite`, which is exact because the alphas are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .blender import is_blender, parse_blender
from .cameras import Cameras
from .colmap_model import is_colmap, parse_colmap
from .errors import DatasetError
from .info import SceneInfo
from .images import ImageRequest, load_images, resize, resized_size
from .n3v import VideoOptions, is_n3v, load_video_split, parse_n3v
from .nerfstudio import is_nerfstudio, parse_nerfstudio
from .normalize import SceneTransform, normalized_bounds, resolve_mode, scene_transform
from .parsing import FrameRecord, ParsedScene
from .points import find_scene_points

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "random": (1.0, 1.0, 1.0)}


@dataclass
class SceneSplit:
    """The images of one split with their cameras.

    Attributes:
        name: ``"train"``, ``"val"`` or ``"test"``.
        cameras: ``N`` cameras (OpenCV convention, times set: ``nan`` for static scenes).
        images: ``[N, H, W, 3]`` float32 in [0, 1], composited on the scene background.
        alphas: ``[N, H, W]`` float32 coverage in [0, 1], ``None`` if the images had no alpha.
        image_paths: the ``N`` image files.
        depths: ``[N, H, W]`` float32 ground-truth distance along the unit ray through each pixel
            centre (synthetic scenes), **0 where the ray hits nothing**, or ``None``. After a
            downscale a pixel holds the mean depth of the full-resolution pixels it covers that hit
            something, and 0 if fewer than half of them did (an approximation at silhouettes).
        distortion: ``[N, 6]`` float64 lens coefficients ``(k1, k2, k3, k4, p1, p2)`` the image
            files were undistorted from at load (``None``: no lens distortion), so exports that
            point at the original files can describe them.
    """

    name: str
    cameras: Cameras
    images: Tensor
    alphas: Tensor | None
    image_paths: list[Path]
    depths: Tensor | None = None
    distortion: Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class Scene:
    """A loaded scene.

    Attributes:
        root: scene folder.
        format: ``"blender"``, ``"dnerf"``, ``"nerfstudio"``, ``"colmap"`` or ``"n3v"``.
        splits: split name -> :class:`SceneSplit` (only splits present on disk and asked for).
        aabb: ``[2, 3]`` float32 bounding box (min, max corners).
        near, far: default ray distance range.
        background: ``[3]`` colour the images are composited on.
        points, points_rgb: optional ``[P, 3]`` initial point cloud and colours in [0, 1].
        random_background: the caller asked for random backgrounds; images are composited on
            white (``background``) and a trainer should re-composite with :func:`recomposite`.
        transform: the similarity applied to the input's poses and points
            (:class:`~.normalize.SceneTransform`; identity when not normalised). Cameras, points,
            ``aabb``, ``near`` and ``far`` are all in the normalised (model) frame.
    """

    root: Path
    format: str
    splits: dict[str, SceneSplit]
    aabb: Tensor
    near: float
    far: float
    background: Tensor
    points: Tensor | None = None
    points_rgb: Tensor | None = None
    random_background: bool = False
    transform: SceneTransform = field(default_factory=SceneTransform.identity)

    def split(self, name: str) -> SceneSplit:
        """The split called ``name``; a :class:`DatasetError` naming the scene if it is missing."""
        if name not in self.splits:
            available = ", ".join(self.splits) or "none"
            raise DatasetError(self.root, f"no '{name}' split (available: {available})")
        return self.splits[name]

    @property
    def is_dynamic(self) -> bool:
        """Whether any camera carries a time."""
        return any(split.cameras.is_dynamic for split in self.splits.values())

    def scene_info(self) -> SceneInfo:
        """What a model needs at construction (see :class:`tensorfield.datasets.info.SceneInfo`)."""
        train = self.splits.get("train")
        return SceneInfo(
            aabb=self.aabb.clone(),
            near=self.near,
            far=self.far,
            is_dynamic=self.is_dynamic,
            num_train_images=len(train) if train is not None else 0,
            points=self.points,
            points_rgb=self.points_rgb,
            camera_centers=train.cameras.c2w[:, :, 3].clone() if train is not None else None,
            source_format=self.format,
            white_background=not self.random_background and bool((self.background.float() == 1.0).all()),
            scene_transform=torch.from_numpy(self.transform.matrix.copy()),
        )


def recomposite(
    rgb: Tensor, alpha: Tensor, old_background: Tensor, new_background: Tensor
) -> Tensor:
    """Move colours composited on ``old_background`` onto ``new_background``.

    ``rgb = c a + old (1 - a)``, so ``c a + new (1 - a) = rgb + (new - old)(1 - a)``.

    Args:
        rgb: ``[..., 3]`` composited colours.
        alpha: ``[...]`` coverage.
        old_background, new_background: ``[3]`` or ``[..., 3]`` colours.

    Returns:
        ``[..., 3]`` colours on ``new_background``.
    """
    return rgb + (new_background - old_background) * (1.0 - alpha).unsqueeze(-1)


def parse_background(background: str | Sequence[float]) -> tuple[Tensor, bool]:
    """``(colour [3], is_random)`` for ``"white"``, ``"black"``, ``"random"`` or three floats."""
    if isinstance(background, str):
        if background not in BACKGROUNDS:
            raise ValueError(
                f"background must be one of {', '.join(BACKGROUNDS)} or three floats, got {background!r}"
            )
        return torch.tensor(BACKGROUNDS[background]), background == "random"
    colour = torch.as_tensor([float(c) for c in background], dtype=torch.float32)
    if colour.shape != (3,) or not bool(((colour >= 0) & (colour <= 1)).all()):
        raise ValueError(
            f"background colour must be three floats in [0, 1], got {list(background)}"
        )
    return colour, False


def load_scene(
    path: str | Path,
    *,
    downscale: float = 1.0,
    background: str | Sequence[float] = "white",
    splits: Sequence[str] = ("train", "val", "test"),
    disk_cache: bool = False,
    frame_stride: int = 1,
    max_frames: int | None = None,
    time_range: tuple[float, float] | None = None,
    test_cameras: Sequence[str | int] | None = None,
    normalize: str = "auto",
) -> Scene:
    """Load a scene folder in any supported layout.

    Args:
        path: scene folder (with ``transforms_train.json``, ``transforms.json`` or
            ``poses_bounds.npy`` + ``cam*.mp4``).
        downscale: divide the image resolution by this (>= 1); images are box/antialias filtered
            and the cameras scaled with :meth:`Cameras.scaled`.
        background: ``"white"``, ``"black"``, ``"random"`` (stored on white, see
            :attr:`Scene.random_background`) or three floats in [0, 1].
        splits: splits to load; absent ones are skipped silently, except ``"train"``.
        disk_cache: also keep decoded images in a ``.npz`` cache under ``$TENSORFIELD_CACHE``
            (default ``~/.cache/tensorfield``); the in-process cache is always on.
        frame_stride, max_frames, time_range, test_cameras: video scenes (N3V) only, see
            :class:`.n3v.VideoOptions`: keep every ``frame_stride``-th frame, at most
            ``max_frames``, within ``time_range`` seconds; hold out ``test_cameras`` (names such
            as ``"cam00"`` or pose rows; default ``("cam00",)``). Setting them for an image
            scene is a ``ValueError``.
        normalize: ``"auto"``, ``"none"``, ``"poses"`` or ``"focus"`` (see :mod:`.normalize`).

    Returns:
        the :class:`Scene`.

    Raises:
        DatasetError: one-line message naming the file at fault.
        ValueError: bad ``downscale`` or ``background`` arguments.
    """
    root = Path(path).expanduser()
    resolve_mode(normalize, "")  # a bad mode is a ValueError before anything is read
    if not float(downscale) >= 1.0:
        raise ValueError(f"downscale must be >= 1, got {downscale}")
    colour, random_background = parse_background(background)
    splits = tuple(splits)
    video_options = VideoOptions(
        frame_stride=frame_stride,
        max_frames=max_frames,
        time_range=None if time_range is None else tuple(time_range),
        test_cameras=tuple(test_cameras) if test_cameras is not None else VideoOptions.test_cameras,
    )
    if not root.is_dir():
        raise DatasetError(root, "scene folder not found")
    if is_n3v(root) and not is_blender(root) and not is_nerfstudio(root):
        scene = _load_video_scene(root, splits, float(downscale), colour, disk_cache, video_options)
        return _normalised(scene, normalize, None)
    if video_options != VideoOptions():
        raise ValueError(
            "frame_stride / max_frames / time_range / test_cameras apply to video scenes (N3V) only"
        )
    if is_blender(root):
        parsed = parse_blender(root, splits)
    elif is_nerfstudio(root):
        parsed = parse_nerfstudio(root, splits)
    elif is_colmap(root):
        parsed = parse_colmap(root, splits)
    else:
        raise DatasetError(
            root,
            "no transforms_train.json (Blender / D-NeRF), transforms.json (nerfstudio), "
            "poses_bounds.npy + cam*.mp4 (N3V) or COLMAP sparse/0 + images/",
        )
    if parsed.points is None:
        found = find_scene_points(root, parsed.format)
        if found is not None:
            parsed.points, parsed.points_rgb = found

    loaded = {}
    for name, records in parsed.splits.items():
        records, split_downscale = _downscaled_copies(records, parsed.format, float(downscale), root)
        loaded[name] = _build_split(name, records, parsed, split_downscale, colour, disk_cache)
    as_tensor = lambda a: None if a is None else torch.as_tensor(np.asarray(a, dtype=np.float32))
    scene = Scene(
        root=root,
        format=parsed.format,
        splits=loaded,
        aabb=as_tensor(parsed.aabb),
        near=float(parsed.near),
        far=float(parsed.far),
        background=colour,
        points=as_tensor(parsed.points),
        points_rgb=as_tensor(parsed.points_rgb),
        random_background=random_background,
    )
    return _normalised(scene, normalize, parsed.all_c2w)


def _normalised(scene: Scene, normalize: str, all_c2w: np.ndarray | None) -> Scene:
    """The one normalisation step of every format (:mod:`.normalize`), applied in place.

    ``all_c2w``: ``[N, 3, 4]`` poses of every frame (so the transform does not depend on the
    splits asked for); ``None`` uses the loaded splits' cameras. Under ``"none"`` nothing is
    touched, so canonical formats stay bit-identical.
    """
    mode = resolve_mode(normalize, scene.format)
    if mode == "none":
        return scene
    if all_c2w is None:
        all_c2w = np.concatenate([s.cameras.c2w.double().numpy() for s in scene.splits.values()])
    transform = scene_transform(all_c2w, mode)
    for split in scene.splits.values():
        c2w = transform.apply_c2w(split.cameras.c2w.double().numpy())
        split.cameras = dataclasses.replace(split.cameras, c2w=torch.from_numpy(c2w).to(split.cameras.c2w.dtype))
        if split.depths is not None:
            split.depths = split.depths * np.float32(transform.scale)
    points = None
    if scene.points is not None:
        points = transform.apply_points(scene.points.double().numpy())
        scene.points = torch.from_numpy(points.astype(np.float32))
    aabb, near, far = normalized_bounds(transform.apply_c2w(all_c2w)[:, :, 3], points)
    scene.aabb = torch.as_tensor(aabb, dtype=torch.float32)
    scene.near, scene.far = float(near), float(far)
    scene.transform = transform
    return scene


def _load_video_scene(
    root: Path,
    splits: tuple[str, ...],
    downscale: float,
    background: Tensor,
    disk_cache: bool,
    options: VideoOptions,
) -> Scene:
    """An N3V scene (:mod:`.n3v`): videos have no alpha, so ``background`` is only recorded."""
    parsed = parse_n3v(root, splits, options)
    loaded = {}
    for name, camera_indices in parsed.splits.items():
        cameras, images, paths = load_video_split(parsed, camera_indices, downscale, disk_cache)
        loaded[name] = SceneSplit(name, cameras, images, None, paths)
    found = find_scene_points(root, "n3v")
    as_tensor = lambda a: None if a is None else torch.as_tensor(np.asarray(a, dtype=np.float32))
    return Scene(
        root=root,
        format="n3v",
        splits=loaded,
        aabb=as_tensor(parsed.aabb),
        near=parsed.near,
        far=parsed.far,
        background=background,
        points=None if found is None else as_tensor(found[0]),
        points_rgb=None if found is None else as_tensor(found[1]),
    )


def _downscaled_copies(
    records: list[FrameRecord], format: str, downscale: float, root: Path
) -> tuple[list[FrameRecord], float]:
    """nerfstudio's pre-downscaled copies: ``root/images_N/<file name>`` for ``downscale = N``.

    ``ns-process-data`` writes ``images_2``, ``images_4``, ... beside ``images`` and nerfstudio's
    ``downscale_factor`` reads them. When every frame of a nerfstudio or COLMAP split has its copy,
    the copies are loaded as they are (no resampling here) with intrinsics scaled by the copies'
    actual size over the full size (ffmpeg may round the size differently from
    :func:`.images.resized_size`); otherwise the full images are resized. Returns the records to
    load and the downscale still to apply.
    """
    if format not in ("nerfstudio", "colmap") or downscale == 1.0 or downscale != int(downscale):
        return records, downscale
    copies = [root / f"images_{int(downscale)}" / r.image_path.name for r in records]
    if not all(c.is_file() for c in copies) or any(r.depth_path is not None for r in records):
        return records, downscale
    from PIL import Image

    def size(path: Path) -> tuple[int, int]:
        try:
            with Image.open(path) as image:
                return image.size
        except OSError as error:
            raise DatasetError(path, f"unreadable image ({' '.join(str(error).split())})", root=root) from None

    moved = []
    for record, copy in zip(records, copies):
        full_width, full_height = (record.width, record.height) if record.width and record.height else size(record.image_path)
        width, height = size(copy)
        sx, sy = width / full_width, height / full_height
        scaled = lambda value, factor: None if value is None else value * factor
        moved.append(dataclasses.replace(
            record, image_path=copy, width=width, height=height,
            fx=scaled(record.fx, sx), fy=scaled(record.fy, sy), cx=scaled(record.cx, sx), cy=scaled(record.cy, sy),
        ))  # fmt: skip
    return moved, 1.0


def _build_split(
    name: str,
    records: list[FrameRecord],
    parsed: ParsedScene,
    downscale: float,
    background: Tensor,
    disk_cache: bool,
) -> SceneSplit:
    root = parsed.root
    requests = [
        ImageRequest(
            r.image_path,
            None if r.distortion is None else tuple(float(k) for k in r.distortion),
            (r.fov_x, r.fx, r.fy, r.cx, r.cy),
        )
        for r in records
    ]
    prepared = load_images(requests, downscale=downscale, root=root, disk_cache=disk_cache)

    width, height = prepared[0].full_width, prepared[0].full_height
    for record, image in zip(records, prepared):
        size = f"{image.full_width}x{image.full_height}"
        if (image.full_width, image.full_height) != (width, height):
            raise DatasetError(
                record.image_path,
                f"image is {size} but the split's first image is {width}x{height}",
                root=root,
            )
        claimed = (record.width or image.full_width, record.height or image.full_height)
        if claimed != (image.full_width, image.full_height):
            raise DatasetError(
                record.image_path,
                f"image is {size} but {record.source} frame {record.index} says {claimed[0]}x{claimed[1]}",
                root=root,
            )

    intrinsics = torch.tensor([r.intrinsics(width, height) for r in records], dtype=torch.float32)
    cameras = Cameras(
        c2w=torch.as_tensor(np.stack([r.c2w for r in records]), dtype=torch.float32),
        fx=intrinsics[:, 0].contiguous(),
        fy=intrinsics[:, 1].contiguous(),
        cx=intrinsics[:, 2].contiguous(),
        cy=intrinsics[:, 3].contiguous(),
        width=width,
        height=height,
        times=torch.tensor([r.time for r in records], dtype=torch.float32),
    )
    if downscale != 1.0:
        cameras = cameras.scaled(1.0 / downscale)

    # numpy for the big element-wise work: single-threaded, no thread-pool stalls on a busy CPU
    has_alpha = any(image.pixels.shape[2] == 4 for image in prepared)
    pixels = np.stack(
        [_with_alpha(image.pixels) if has_alpha else image.pixels for image in prepared]
    )
    if has_alpha:
        alpha = np.ascontiguousarray(pixels[..., 3])
        colour = pixels[..., :3] + background.numpy() * (1.0 - alpha[..., None])
        images, alphas = (
            torch.from_numpy(np.clip(colour, 0.0, 1.0, out=colour)),
            torch.from_numpy(alpha),
        )
    else:
        images, alphas = torch.from_numpy(pixels), None
    depths = None
    if all(r.depth_path is not None for r in records):
        depths = torch.from_numpy(
            np.stack([_load_depth(r.depth_path, width, height, downscale, root) for r in records])
        )
    distortion = None
    if any(r.distortion is not None for r in records):
        distortion = torch.tensor(
            [[0.0] * 6 if r.distortion is None else [float(k) for k in r.distortion] for r in records],
            dtype=torch.float64,
        )
    return SceneSplit(
        name=name,
        cameras=cameras,
        images=images.contiguous(),
        alphas=alphas,
        image_paths=[r.image_path for r in records],
        depths=depths,
        distortion=distortion,
    )


def _with_alpha(pixels: np.ndarray) -> np.ndarray:
    if pixels.shape[2] == 4:
        return pixels
    return np.concatenate([pixels, np.ones_like(pixels[..., :1])], axis=2)


def _load_depth(path: Path, width: int, height: int, downscale: float, root: Path) -> np.ndarray:
    """A ``[h, w]`` float32 depth map, 0 for background (non-finite values count as background)."""
    try:
        depth = np.load(path, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - truncated or not an .npy
        raise DatasetError(
            path, f"unreadable depth map ({type(error).__name__})", root=root
        ) from None
    if depth.shape != (height, width):
        shape = "x".join(str(s) for s in depth.shape[::-1])
        raise DatasetError(
            path, f"depth map is {shape} but the images are {width}x{height}", root=root
        )
    depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    if (depth < 0).any():
        raise DatasetError(path, "depth map holds negative distances", root=root)
    new_width, new_height = resized_size(width, height, downscale)
    if (new_width, new_height) == (width, height):
        return depth
    hit = (depth > 0).astype(np.float32)
    pooled = resize(np.stack([depth * hit, hit], axis=-1), new_width, new_height, clamp=False)
    coverage = pooled[..., 1]
    return np.where(coverage >= 0.5, pooled[..., 0] / np.maximum(coverage, 1e-12), 0.0).astype(
        np.float32
    )


__all__ = ["Scene", "SceneSplit", "load_scene", "parse_background", "recomposite"]
