"""``tensorfield process``: a video, an image folder or a camera rig to a posed dataset."""

from __future__ import annotations

import argparse
import shlex

from tensorfield.datasets.capture import CaptureSettings, next_command, process_capture
from tensorfield.datasets.capture_sfm import CAMERA_MODELS, MATCHERS


def add_parser(sub) -> argparse.ArgumentParser:
    """Register the ``process`` subcommand on the CLI's subparsers."""
    defaults = CaptureSettings()
    p = sub.add_parser(
        "process",
        help="turn a video, an image folder or synchronised videos into a posed dataset (COLMAP SfM)",
        description="Sample sharp frames from a video (or take an image folder), run structure from motion "
        "(pycolmap: SIFT features, matching, incremental mapping) and write DATA/images, DATA/colmap "
        "(database.db, sparse/0), DATA/transforms.json (nerfstudio layout), DATA/points3D.ply and "
        "DATA/process.json. Several videos (or a folder of videos) are a rig of fixed, synchronised cameras: "
        "one pose per camera, a per-frame time. Re-running with other options reuses the finished stages "
        "whose inputs did not change.",
    )
    p.add_argument("inputs", nargs="+", metavar="VIDEO|IMAGE_DIR", help="a video, an image folder, several videos or a folder of videos")
    p.add_argument("--out", required=True, help="dataset folder to write (DATA)")
    p.add_argument("--frames", type=int, default=defaults.frames, help=f"frames to sample per video; image folders: keep this many (default: {defaults.frames}; 0 = all images)")
    p.add_argument("--matcher", choices=MATCHERS, default=None, help="pairs to match (default: sequential for one video, exhaustive otherwise)")
    p.add_argument("--vocab-tree", default=None, help="COLMAP vocabulary tree file for --matcher vocab")
    p.add_argument("--downscale", type=int, default=defaults.downscale, help="shrink frames by this integer factor (default: 1)")
    p.add_argument("--max-size", type=int, default=defaults.max_size, help="then at most this many pixels on the long side (default: 0, no limit)")
    p.add_argument("--camera-model", choices=CAMERA_MODELS, default=defaults.camera_model, help=f"COLMAP camera model, one per video (default: {defaults.camera_model})")
    p.add_argument("--blur-keep", type=float, default=defaults.blur_keep, help=f"keep this fraction of the sharpest-in-window frames (default: {defaults.blur_keep}; 1 = no extra rejection)")
    p.add_argument("--max-features", type=int, default=defaults.max_features, help=f"SIFT features per image (default: {defaults.max_features})")
    p.add_argument("--overlap", type=int, default=defaults.overlap, help=f"sequential matcher: successors per frame (default: {defaults.overlap})")
    p.add_argument("--min-registered", type=float, default=defaults.min_registered, help=f"fail below this fraction of frames registered (default: {defaults.min_registered})")
    p.add_argument("--seed", type=int, default=defaults.seed, help="COLMAP's random seed (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def cmd_process(args) -> int:
    settings = CaptureSettings(
        frames=args.frames, matcher=args.matcher, downscale=args.downscale, max_size=args.max_size,
        camera_model=args.camera_model, blur_keep=args.blur_keep, max_features=args.max_features,
        overlap=args.overlap, vocab_tree=args.vocab_tree, min_registered=args.min_registered, seed=args.seed,
    )  # fmt: skip
    try:
        result = process_capture(args.inputs, args.out, settings, progress=not args.no_progress)
    except ImportError as error:  # pycolmap / imageio-ffmpeg missing or its system library absent
        from tensorfield.engine.dependencies import MissingDependency, explain_import_error

        module = (getattr(error, "name", None) or "pycolmap").split(".")[0]
        raise MissingDependency(explain_import_error(module, error, "tensorfield process")) from None
    what = "cameras" if result.kind == "rig" else "frames"
    reused = [stage for stage, flag in result.reused.items() if flag]
    print(f"registered {result.registered} / {result.sfm_images} {what}, mean reprojection error "
          f"{result.mean_reprojection_error:.3f} px, {result.points} points -> {result.out_dir}")  # fmt: skip
    print("stages: " + ", ".join(f"{stage} {'reused' if result.reused[stage] else f'{seconds:.1f}s'}" for stage, seconds in result.seconds.items()))
    if reused:
        print(f"(reused from the last run: {', '.join(reused)})")
    print(f"next: {next_command(result, shlex.quote(str(args.out)))}")
    return 0
