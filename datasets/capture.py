"""From a video, an image folder or a rig of synchronised videos to a posed nerfstudio dataset.

:func:`process_capture` runs four stages, each with a progress bar:

1. ``decode`` -- frames into ``DATA/images`` (:mod:`.capture_frames`: even sampling, blur
   rejection, downscaling; image folders are copied);
2. ``features`` -- CPU SIFT into ``DATA/colmap/database.db``, one camera per video;
3. ``matching`` -- sequential (default for one video), exhaustive (default otherwise) or
   vocabulary-tree pairs, geometrically verified;
4. ``mapping`` -- incremental SfM into ``DATA/colmap/sparse/0`` (COLMAP binary model).

It then writes ``DATA/transforms.json`` and ``DATA/points3D.ply`` (:func:`.capture_sfm.
write_transforms`) and, after every stage, ``DATA/process.json`` (inputs, settings, per-stage key,
seconds and whether it was reused, counts, the error if one stopped the run).

Retrying is cheap: each stage has a key, the hash of its own settings and of the previous stage's
key. A stage whose key matches the last finished run and whose files exist is reused (frames are
not decoded again, features not extracted again); changing the matcher re-runs only matching and
mapping. A failure keeps everything extracted so far.

Rig mode (several videos, one per fixed camera): all videos are sampled at the same timestamps;
SfM solves only the frames of the first timestamp (one image and one camera model per video), and
every frame of a camera gets that camera's pose and a per-frame ``time`` in [0, 1]. A camera that
moves during the capture is outside this mode.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from . import capture_frames as frames_io
from . import capture_sfm as sfm
from .capture_frames import VIDEO_SUFFIXES, CaptureError, FrameInfo
from .parsing import IMAGE_SUFFIXES

STAGES = ("decode", "features", "matching", "mapping")
STATE_FILE = "process.json"


@dataclass
class CaptureSettings:
    """Options of :func:`process_capture` (the ``tensorfield process`` flags).

    Attributes:
        frames: frames to sample from a video (per camera for rigs); image folders: keep this many
            evenly spaced images (0 = all).
        matcher: ``sequential``, ``exhaustive`` or ``vocab``; ``None``: sequential for one video,
            exhaustive for image folders and rigs.
        downscale: integer factor the frames are shrunk by before SfM (box filter).
        max_size: then at most this many pixels on the long side (0 = no limit).
        camera_model: COLMAP camera model shared by the frames of one video.
        blur_keep: fraction of the sharpest-in-window candidates kept (1 = no extra rejection).
        max_features: SIFT features per image at most.
        overlap: successors each frame is matched with by the sequential matcher.
        vocab_tree: vocabulary tree file (``--matcher vocab``).
        min_registered: fail when fewer than this fraction of the frames (rigs: cameras) get a pose.
        seed: COLMAP's random seed.
    """

    frames: int = 100
    matcher: str | None = None
    downscale: int = 1
    max_size: int = 0
    camera_model: str = "OPENCV"
    blur_keep: float = 0.9
    max_features: int = 8192
    overlap: int = 10
    vocab_tree: str | None = None
    min_registered: float = 0.5
    seed: int = 0

    def check(self) -> None:
        """Raise :class:`CaptureError` (naming the option) for a value out of range."""
        problems = [
            (self.frames < 0 or (self.frames < 2 and self.frames != 0), f"--frames must be >= 2 (got {self.frames})"),
            (self.downscale < 1, f"--downscale must be a whole number >= 1 (got {self.downscale})"),
            (self.max_size < 0 or 0 < self.max_size < 32, f"--max-size must be 0 or >= 32 pixels (got {self.max_size})"),
            (not 0.0 < self.blur_keep <= 1.0, f"--blur-keep must be in (0, 1] (got {self.blur_keep})"),
            (self.camera_model not in sfm.CAMERA_MODELS, f"--camera-model must be one of {', '.join(sfm.CAMERA_MODELS)} (got {self.camera_model})"),
            (self.matcher is not None and self.matcher not in sfm.MATCHERS, f"--matcher must be one of {', '.join(sfm.MATCHERS)} (got {self.matcher})"),
            (self.max_features < 64, f"--max-features must be >= 64 (got {self.max_features})"),
            (self.overlap < 1, f"--overlap must be >= 1 (got {self.overlap})"),
            (not 0.0 <= self.min_registered <= 1.0, f"--min-registered must be in [0, 1] (got {self.min_registered})"),
        ]  # fmt: skip
        for bad, message in problems:
            if bad:
                raise CaptureError("process", message)


@dataclass
class CaptureResult:
    """What :func:`process_capture` produced.

    Attributes:
        out_dir: the dataset folder.
        kind: ``video``, ``images`` or ``rig``.
        frames: frames written to ``images/``.
        sfm_images: images given to SfM (rigs: one per camera).
        registered: of those, how many got a pose.
        written: frames listed in ``transforms.json``.
        points: 3D points of the model.
        mean_reprojection_error: in pixels.
        seconds: per-stage wall time (0 for a reused stage).
        reused: per-stage flag.
    """

    out_dir: Path
    kind: str
    frames: int
    sfm_images: int
    registered: int
    written: int
    points: int
    mean_reprojection_error: float
    seconds: dict[str, float] = field(default_factory=dict)
    reused: dict[str, bool] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- inputs
def classify_inputs(inputs: list[Path]) -> tuple[str, list[Path]]:
    """``("video" | "images" | "rig", files)`` for what the user passed.

    One video -> ``video``; a folder of images -> ``images`` (its image files); several videos,
    or a folder holding only videos -> ``rig`` (one camera per video, sorted by name).

    Raises:
        CaptureError: missing paths, mixed or unsupported inputs.
    """
    if not inputs:
        raise CaptureError("process", "no input: give a video, an image folder or several videos")
    for path in inputs:
        if not path.exists():
            raise CaptureError(path, "no such file or folder")
    if len(inputs) == 1 and inputs[0].is_dir():
        folder = inputs[0]
        videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        images = [p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES]
        if images:
            return "images", frames_io.list_images(folder)
        if len(videos) >= 2:
            return "rig", videos
        if len(videos) == 1:
            return "video", videos
        raise CaptureError(folder, "holds no images and no videos")
    for path in inputs:
        if path.is_dir() or path.suffix.lower() not in VIDEO_SUFFIXES:
            raise CaptureError(path, f"not a video ({', '.join(VIDEO_SUFFIXES)}); give one image folder or video files only")
    return ("video", inputs) if len(inputs) == 1 else ("rig", inputs)


def _identity(path: Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------- state
class _State:
    """``DATA/process.json``: read the last run's stage keys, write this run's progress."""

    def __init__(self, out_dir: Path, kind: str, inputs: list[Path], settings: CaptureSettings):
        self.path = out_dir / STATE_FILE
        self.previous: dict = {}
        if self.path.is_file():
            try:
                self.previous = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.previous = {}  # unreadable state: nothing is reused
        self.data: dict = {
            "kind": kind,
            "inputs": [str(p) for p in inputs],
            "settings": asdict(settings),
            "stages": {},
            "counts": {},
            "status": "running",
        }

    def reusable(self, stage: str, key: str) -> bool:
        old = self.previous.get("stages", {}).get(stage, {})
        return old.get("key") == key and old.get("status") == "done"

    def previous_frames(self) -> list[FrameInfo]:
        return [FrameInfo(**{k: (math.nan if v is None else v) for k, v in f.items()}) for f in self.previous.get("frames", [])]

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=2), encoding="utf-8")


def _bar(stage: str, total: int | None, progress: bool, unit: str) -> tqdm:
    return tqdm(total=total, desc=f"{stage:<8}", unit=unit, disable=not progress, leave=True, dynamic_ncols=True)


# ---------------------------------------------------------------------------------- pipeline
def process_capture(
    inputs: list[str | Path],
    out_dir: str | Path,
    settings: CaptureSettings | None = None,
    progress: bool = True,
) -> CaptureResult:
    """Turn a capture into a posed dataset in ``out_dir`` (see the module docstring).

    Args:
        inputs: one video, one image folder, several videos or a folder of videos.
        out_dir: dataset folder to create or update.
        settings: options (defaults: :class:`CaptureSettings`).
        progress: show tqdm progress bars.

    Raises:
        CaptureError: one line naming the file and the problem: an unreadable video, no features,
            no model, too few registered frames. Everything extracted so far stays in ``out_dir``.
    """
    settings = settings or CaptureSettings()
    settings.check()
    paths = [Path(p) for p in inputs]
    kind, files = classify_inputs(paths)
    if kind != "images" and settings.frames == 0:
        raise CaptureError("process", "--frames must be >= 2 for videos")
    matcher = settings.matcher or ("sequential" if kind == "video" else "exhaustive")
    out = Path(out_dir)
    images_dir, colmap_dir = out / "images", out / "colmap"
    database, sparse_dir = colmap_dir / "database.db", colmap_dir / "sparse" / "0"
    out.mkdir(parents=True, exist_ok=True)
    state = _State(out, kind, files, settings)
    state.data["settings"]["matcher"] = matcher
    seconds: dict[str, float] = {}
    reused: dict[str, bool] = {}

    def record(stage: str, key: str, began: float | None, **extra) -> None:
        seconds[stage] = 0.0 if began is None else time.perf_counter() - began
        reused[stage] = began is None
        state.data["stages"][stage] = {"key": key, "status": "done", "seconds": round(seconds[stage], 3), "reused": reused[stage], **extra}
        state.save()

    def fail(stage: str, key: str, error: CaptureError) -> CaptureError:
        state.data["stages"][stage] = {"key": key, "status": "failed", "error": str(error)}
        state.data["status"] = f"failed: {error}"
        state.save()
        return error

    def invalidate_outputs() -> None:
        # transforms.json / points3D.ply describe the stages' previous results: once a stage
        # re-runs they no longer match the images or the model, so they go (they are re-derived)
        for name in ("transforms.json", "points3D.ply"):
            (out / name).unlink(missing_ok=True)

    # ---- decode
    decode_settings = [kind, [_identity(f) for f in files], settings.frames, settings.downscale, settings.max_size]
    if kind == "video":
        decode_settings.append(settings.blur_keep)
    decode_key = _key("decode", decode_settings)
    frames = state.previous_frames()
    if state.reusable("decode", decode_key) and frames and all((images_dir / f.name).is_file() for f in frames):
        record("decode", decode_key, None)
    else:
        invalidate_outputs()
        began = time.perf_counter()
        _remove_frames(images_dir)
        try:
            frames = _decode(kind, files, images_dir, settings, progress, out)
        except CaptureError as error:
            raise fail("decode", decode_key, error) from None
        state.data["frames"] = [f.to_json() for f in frames]
        record("decode", decode_key, began)
    state.data["frames"] = [f.to_json() for f in frames]
    state.data["counts"]["frames"] = len(frames)

    # ---- features
    if kind == "rig":
        first = {}
        for frame in sorted(frames, key=lambda f: f.name):
            first.setdefault(frame.camera, frame.name)
        groups = [[first[c]] for c in sorted(first)]
    else:
        groups = [[f.name for f in sorted(frames, key=lambda f: f.name)]]
    sfm_count = sum(len(g) for g in groups)
    features_key = _key("features", decode_key, groups, settings.camera_model, settings.max_features)
    if state.reusable("features", features_key) and database.is_file():
        record("features", features_key, None, counts=state.previous["stages"]["features"].get("counts", {}))
    else:
        invalidate_outputs()
        began = time.perf_counter()
        colmap_dir.mkdir(parents=True, exist_ok=True)
        database.unlink(missing_ok=True)
        with _bar("features", sfm_count, progress, "img") as bar:
            counts = sfm.extract_features(database, images_dir, groups, settings.camera_model, settings.max_features, bar.update)
        if counts["keypoints"] == 0:
            raise fail("features", features_key, CaptureError(
                database, f"no features found in any of the {sfm_count} frames (blank, dark or featureless "
                "images?); film a textured scene, or check the video", root=out))  # fmt: skip
        record("features", features_key, began, counts=counts)

    # ---- matching
    vocab = Path(settings.vocab_tree) if settings.vocab_tree else None
    matching_key = _key("matching", features_key, matcher, settings.overlap if matcher == "sequential" else None,
                        _identity(vocab) if matcher == "vocab" and vocab is not None and vocab.is_file() else str(vocab))  # fmt: skip
    if state.reusable("matching", matching_key):
        record("matching", matching_key, None, counts=state.previous["stages"]["matching"].get("counts", {}))
    else:
        invalidate_outputs()
        began = time.perf_counter()
        try:
            with _bar("matching", None, progress, "pair") as bar:
                counts = sfm.match_features(database, matcher, settings.overlap, vocab, bar.update)
        except CaptureError as error:
            raise fail("matching", matching_key, error) from None
        record("matching", matching_key, began, counts=counts)

    # ---- mapping
    mapping_key = _key("mapping", matching_key, settings.seed)
    if state.reusable("mapping", mapping_key) and (sparse_dir / "images.bin").is_file():
        model = sfm.load_model(sparse_dir)
        record("mapping", mapping_key, None)
    else:
        invalidate_outputs()
        began = time.perf_counter()
        try:
            with _bar("mapping", sfm_count, progress, "img") as bar:
                # COLMAP reports every registration, also of models it later discards: clamp
                tick = lambda n: bar.update(n) if bar.n < sfm_count else None  # noqa: E731
                model = sfm.map_scene(database, images_dir, sparse_dir, tick, settings.seed, min(10, max(2, sfm_count // 2)))
        except CaptureError as error:
            raise fail("mapping", mapping_key, CaptureError(error.path, error.problem, root=out)) from None
        record("mapping", mapping_key, began)

    registered = int(model.num_reg_images())
    mean_error = float(model.compute_mean_reprojection_error())
    state.data["counts"].update(sfm_images=sfm_count, registered=registered, points=int(model.num_points3D()),
                                mean_reprojection_error=mean_error)  # fmt: skip
    needed = max(2, math.ceil(settings.min_registered * sfm_count))
    if registered < needed:
        what = "cameras" if kind == "rig" else "frames"
        advice = ("more overlap between the cameras, or --matcher exhaustive" if kind == "rig" else
                  f"more --frames (now {len(frames)}), --matcher exhaustive, or a slower, steadier video")  # fmt: skip
        error = CaptureError(colmap_dir, f"only {registered} of {sfm_count} {what} registered (need {needed}, "
                             f"--min-registered {settings.min_registered:g}); try {advice}", root=out)  # fmt: skip
        state.data["status"] = f"failed: {error}"
        state.save()
        raise error

    # ---- transforms.json + points3D.ply
    times = sfm_names = None
    if kind == "rig":
        sfm_names = {camera: group[0] for camera, group in zip(sorted(first), groups)}
        steps = max(int(name.rsplit("_", 1)[1].split(".")[0]) for name in (f.name for f in frames))
        times = {f.name: (int(f.name.rsplit("_", 1)[1].split(".")[0]) / steps if steps else 0.0) for f in frames}
    written = sfm.write_transforms(model, out, frames, sfm_names, times)
    state.data["counts"].update(written=written["written"])
    state.data["status"] = "done"
    state.save()
    return CaptureResult(out, kind, len(frames), sfm_count, registered, written["written"], int(model.num_points3D()),
                         mean_error, seconds, reused)  # fmt: skip


def _decode(kind: str, files: list[Path], images_dir: Path, settings: CaptureSettings, progress: bool, root: Path) -> list[FrameInfo]:
    if kind == "images":
        with _bar("decode", len(files) if not settings.frames else min(len(files), settings.frames), progress, "img") as bar:
            return frames_io.import_images(files, images_dir, settings.frames, settings.downscale, settings.max_size, bar.update, root)
    if kind == "video":
        total, _ = frames_io.count_video_frames(files[0], root)
        with _bar("decode", total, progress, "frame") as bar:
            return frames_io.decode_video(files[0], images_dir, settings.frames, settings.blur_keep, settings.downscale,
                                          settings.max_size, bar.update, root)  # fmt: skip
    with _bar("decode", None, progress, "frame") as bar:
        return frames_io.decode_synchronised(files, images_dir, settings.frames, settings.downscale, settings.max_size, bar.update, root)


def _remove_frames(images_dir: Path) -> None:
    """Delete the frames an earlier run wrote (``frame_*.png``, also in rig camera folders)."""
    if not images_dir.is_dir():
        return
    for path in list(images_dir.glob("frame_*.png")) + list(images_dir.glob("cam*/frame_*.png")):
        path.unlink()


def next_command(result: CaptureResult, data_arg: str) -> str:
    """The ``tensorfield train`` command to run on a processed capture."""
    config = "configs/gaussians4d_small.yaml" if result.kind == "rig" else "configs/tensorf_vm_small.yaml"
    return f"tensorfield train {config} --data {data_arg}"


__all__ = ["CaptureError", "CaptureResult", "CaptureSettings", "STAGES", "classify_inputs", "next_command", "process_capture"]
