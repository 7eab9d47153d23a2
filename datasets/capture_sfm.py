"""Structure from motion with pycolmap, and the nerfstudio ``transforms.json`` of its result.

Three stages, each a pure function of its files: :func:`extract_features` (CPU SIFT into a COLMAP
database, one camera model per group of images, i.e. per video), :func:`match_features`
(sequential, exhaustive or vocabulary-tree pairs, geometrically verified) and :func:`map_scene`
(incremental mapping; the model with most registered images wins). :func:`write_transforms`
converts that model into nerfstudio's layout as ``ns-process-data`` writes it.

Coordinates (nerfstudio's conventions, which :mod:`.nerfstudio` reads back):

* ``transform_matrix`` is the OpenGL camera-to-world: COLMAP's world-to-camera is inverted and
  the camera's y and z axes flipped (``c2w @ diag(1, -1, -1, 1)``);
* the world is then rotated by ``applied_transform = [[1,0,0,0],[0,0,1,0],[0,-1,0,0]]`` (COLMAP
  worlds tend to have y down; this makes z the up axis as nerfstudio does), and the same map is
  applied to ``points3D.ply``, so poses and points stay consistent.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .capture_frames import CaptureError, FrameInfo
from .ply import write_ply_points

CAMERA_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
MATCHERS = ("sequential", "exhaustive", "vocab")
#: nerfstudio's world rotation applied to COLMAP's model (original -> saved coordinates)
APPLIED_TRANSFORM = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0]])
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
VOCAB_HELP = (
    "--matcher vocab needs a COLMAP vocabulary tree: download one matching COLMAP 4 from "
    "https://github.com/colmap/colmap/releases (vocab_tree_*.bin) and pass --vocab-tree FILE, "
    "or use --matcher sequential / exhaustive"
)


def _pycolmap():
    import pycolmap

    # COLMAP's INFO/WARNING chatter would drown the progress bars, and its ERROR lines repeat what
    # the one-line CaptureError says (e.g. 'Failed to create any sparse model'): only FATAL passes
    pycolmap.logging.minloglevel = 3
    return pycolmap


def extract_features(
    database: Path,
    images_dir: Path,
    groups: list[list[str]],
    camera_model: str = "OPENCV",
    max_features: int = 8192,
    progress: Callable[[int], None] | None = None,
    chunk: int = 8,
) -> dict:
    """CPU SIFT features of every image into a fresh COLMAP database.

    Args:
        database: ``database.db`` to create (must not exist).
        images_dir: folder the image names are relative to.
        groups: image names per camera; every group shares one camera (one model, one set of
            intrinsics refined by bundle adjustment), e.g. the frames of one video.
        camera_model: one of :data:`CAMERA_MODELS`.
        max_features: SIFT features per image at most.
        progress: called with the number of images done since the last call.
        chunk: images per pycolmap call (the granularity of ``progress``).

    Returns:
        ``{"images": n, "keypoints": total, "empty": [names without features]}``.
    """
    pycolmap = _pycolmap()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.use_gpu = False
    extraction.sift.max_num_features = int(max_features)
    for names in groups:
        reader.existing_camera_id = -1
        for start in range(0, len(names), chunk):
            part = names[start : start + chunk]
            pycolmap.extract_features(
                database, images_dir, image_names=part, camera_mode=pycolmap.CameraMode.SINGLE,
                reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu,
            )  # fmt: skip
            if reader.existing_camera_id < 0:  # later chunks of this group reuse its camera
                with _open(database) as db:
                    reader.existing_camera_id = db.read_image_with_name(part[0]).camera_id
            if progress is not None:
                progress(len(part))
    with _open(database) as db:
        images = db.read_all_images()
        counts = {image.name: db.num_keypoints_for_image(image.image_id) for image in images}
    return {
        "images": len(counts),
        "keypoints": int(sum(counts.values())),
        "empty": sorted(name for name, n in counts.items() if n == 0),
    }


class _open:
    """``with _open(path) as db``: a pycolmap database closed on exit."""

    def __init__(self, path: Path):
        self.db = _pycolmap().Database.open(path)

    def __enter__(self):
        return self.db

    def __exit__(self, *exc) -> None:
        self.db.close()


def match_features(
    database: Path,
    matcher: str = "sequential",
    overlap: int = 10,
    vocab_tree: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Match features between image pairs and verify them geometrically (two-view geometry).

    Matches of an earlier run are cleared first, so a matcher can be re-run on kept features.

    Args:
        database: a database with features (:func:`extract_features`).
        matcher: ``sequential`` (each image with its ``overlap`` successors by name, for video),
            ``exhaustive`` (all pairs) or ``vocab`` (nearest images by a vocabulary tree).
        overlap: successors per image for ``sequential``.
        vocab_tree: vocabulary tree file for ``vocab``.
        progress: called with 0 while matching runs (a heartbeat), then with the matched pairs.

    Returns:
        ``{"pairs": matched pairs, "verified_pairs": n, "inlier_matches": n}``.

    Raises:
        CaptureError: ``vocab`` without a readable vocabulary tree.
    """
    pycolmap = _pycolmap()
    if matcher not in MATCHERS:
        raise CaptureError(database, f"unknown matcher {matcher!r} (choose from {', '.join(MATCHERS)})")
    if matcher == "vocab" and (vocab_tree is None or not Path(vocab_tree).is_file()):
        shown = vocab_tree if vocab_tree is not None else "--vocab-tree"
        raise CaptureError(shown, ("no such file; " if vocab_tree is not None else "not given; ") + VOCAB_HELP)
    with _open(database) as db:
        db.clear_matches()
        db.clear_two_view_geometries()
    options = pycolmap.FeatureMatchingOptions()
    options.use_gpu = False
    if matcher == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = int(overlap)
        run = lambda: pycolmap.match_sequential(database, options, pairing, device=pycolmap.Device.cpu)  # noqa: E731
    elif matcher == "exhaustive":
        run = lambda: pycolmap.match_exhaustive(database, options, device=pycolmap.Device.cpu)  # noqa: E731
    else:
        pairing = pycolmap.VocabTreePairingOptions()
        pairing.vocab_tree_path = str(vocab_tree)
        run = lambda: pycolmap.match_vocabtree(database, options, pairing, device=pycolmap.Device.cpu)  # noqa: E731
    _run_polling(run, database, progress)
    with _open(database) as db:
        counts = {
            "pairs": int(db.num_matched_image_pairs()),
            "verified_pairs": int(db.num_verified_image_pairs()),
            "inlier_matches": int(db.num_inlier_matches()),
        }
    if progress is not None:
        progress(counts["pairs"])
    return counts


def _run_polling(run: Callable[[], None], database: Path, progress: Callable[[int], None] | None) -> None:
    """Run ``run`` while a thread calls ``progress(0)`` twice a second (pycolmap releases the GIL),
    so a progress bar keeps showing the elapsed time. The database is not polled: a reader could
    make COLMAP's writer fail with "database is locked"."""
    if progress is None:
        run()
        return
    done = threading.Event()

    def tick() -> None:
        while not done.wait(0.5):
            progress(0)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        run()
    finally:
        done.set()
        thread.join()


def map_scene(
    database: Path,
    images_dir: Path,
    sparse_dir: Path,
    progress: Callable[[int], None] | None = None,
    seed: int = 0,
    min_model_size: int = 3,
):
    """Incremental mapping; the model with the most registered images is written to ``sparse_dir``.

    Args:
        database: a matched database.
        images_dir: the images (colours of the points are read from them).
        sparse_dir: receives the COLMAP binary model (``cameras.bin``, ``images.bin``,
            ``points3D.bin``, ...); replaced only when mapping succeeds.
        progress: called once per newly registered image.
        seed: COLMAP's random seed (repeatable runs).
        min_model_size: smallest model COLMAP keeps (its default, 10, would drop small rigs).

    Returns:
        the chosen ``pycolmap.Reconstruction``.

    Raises:
        CaptureError: no model could be started (too little overlap or texture).
    """
    pycolmap = _pycolmap()
    options = pycolmap.IncrementalPipelineOptions()
    options.random_seed = int(seed)
    options.min_model_size = int(min_model_size)
    scratch = sparse_dir.parent / (sparse_dir.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    callback = (lambda: progress(1)) if progress is not None else None
    models = pycolmap.incremental_mapping(database, images_dir, scratch, options, next_image_callback=callback)
    shutil.rmtree(scratch, ignore_errors=True)
    if not models:
        raise CaptureError(
            database, "no model could be built (too little overlap or texture between the frames): "
            "try more --frames, --matcher exhaustive, or a slower, steadier video",
        )  # fmt: skip
    best = max(models.values(), key=lambda model: model.num_reg_images())
    if sparse_dir.exists():
        shutil.rmtree(sparse_dir)
    sparse_dir.mkdir(parents=True)
    best.write_binary(str(sparse_dir))
    return best


def load_model(sparse_dir: Path):
    """A COLMAP binary model written by :func:`map_scene`."""
    return _pycolmap().Reconstruction(str(sparse_dir))


def camera_entry(camera) -> dict:
    """nerfstudio intrinsics of a pycolmap camera: ``w, h, fl_x, fl_y, cx, cy, camera_model`` and
    ``k1, k2, p1, p2`` for models with distortion (nerfstudio calls all of those ``OPENCV``)."""
    params = [float(p) for p in camera.params]
    name = camera.model.name
    if name == "SIMPLE_PINHOLE":
        (f, cx, cy), k1, k2, p1, p2, fy = params, 0.0, 0.0, 0.0, 0.0, None
    elif name == "PINHOLE":
        (f, fy, cx, cy), k1, k2, p1, p2 = params, 0.0, 0.0, 0.0, 0.0
    elif name == "SIMPLE_RADIAL":
        (f, cx, cy, k1), k2, p1, p2, fy = params, 0.0, 0.0, 0.0, None
    elif name == "RADIAL":
        (f, cx, cy, k1, k2), p1, p2, fy = params, 0.0, 0.0, None
    elif name == "OPENCV":
        f, fy, cx, cy, k1, k2, p1, p2 = params
    else:
        raise CaptureError("sparse", f"camera model {name} is not supported ({', '.join(CAMERA_MODELS)})")
    entry = {"w": int(camera.width), "h": int(camera.height), "fl_x": f, "fl_y": f if fy is None else fy, "cx": cx, "cy": cy}
    if name in ("SIMPLE_PINHOLE", "PINHOLE"):
        entry["camera_model"] = "PINHOLE"
    else:
        entry.update(camera_model="OPENCV", k1=k1, k2=k2, p1=p1, p2=p2)
    return entry


def opengl_c2w(image) -> np.ndarray:
    """``[4, 4]`` OpenGL camera-to-world of a registered pycolmap image, in the saved world."""
    w2c = np.eye(4)
    w2c[:3] = image.cam_from_world().matrix()
    applied = np.eye(4)
    applied[:3] = APPLIED_TRANSFORM
    return applied @ np.linalg.inv(w2c) @ _GL_TO_CV


def write_transforms(
    model,
    out_dir: Path,
    frames: list[FrameInfo],
    sfm_names: dict[int, str] | None = None,
    times: dict[str, float] | None = None,
) -> dict:
    """Write ``transforms.json`` and ``points3D.ply`` for ``frames`` from a COLMAP model.

    Args:
        model: a ``pycolmap.Reconstruction`` whose image names are frame names.
        out_dir: the dataset folder (images live in ``out_dir/images``).
        frames: every frame to list; a frame is written when its own image is registered or,
            with ``sfm_names``, when its camera's reference image is.
        sfm_names: rigs of fixed cameras: camera index -> the image name whose pose and
            intrinsics all that camera's frames share.
        times: frame name -> time in [0, 1] (per-frame ``time``, for dynamic scenes).

    Returns:
        ``{"written": frames listed, "cameras": cameras with a pose}``.
    """
    registered = {image.name: image for image in model.images.values() if image.has_pose}
    camera_ids = sorted({image.camera_id for image in registered.values()})
    shared = len(camera_ids) == 1
    meta: dict = {}
    if shared:
        meta.update(camera_entry(model.cameras[camera_ids[0]]))
    entries = []
    posed_cameras = set()
    for frame in sorted(frames, key=lambda f: f.name):
        reference = sfm_names.get(frame.camera) if sfm_names is not None else frame.name
        image = registered.get(reference)
        if image is None:
            continue
        posed_cameras.add(frame.camera)
        entry = {"file_path": f"images/{frame.name}", "transform_matrix": opengl_c2w(image).tolist(), "colmap_im_id": int(image.image_id)}
        if not shared:
            entry.update(camera_entry(model.cameras[image.camera_id]))
        if times is not None:
            entry["time"] = float(times[frame.name])
        entries.append(entry)
    meta["frames"] = entries
    meta["applied_transform"] = APPLIED_TRANSFORM.tolist()
    meta["ply_file_path"] = "points3D.ply"
    points = np.array([p.xyz for p in model.points3D.values()], dtype=np.float64).reshape(-1, 3)
    colours = np.array([p.color for p in model.points3D.values()], dtype=np.float64).reshape(-1, 3) / 255.0
    write_ply_points(out_dir / "points3D.ply", points @ APPLIED_TRANSFORM[:, :3].T + APPLIED_TRANSFORM[:, 3], colours)
    (out_dir / "transforms.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return {"written": len(entries), "cameras": len(posed_cameras)}
