"""The ``tensorfield`` command line.

Subcommands: ``demo``, ``process``, ``train``, ``fit-identity``, ``eval``, ``render``, ``export``, ``view``, ``methods``, ``doctor``. Errors that come
from the user's input (data, configs, checkpoints, camera paths) print one line and exit with
status 2; nothing already written is removed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """examples:
  tensorfield demo --out demo_run
  tensorfield demo --method gaussians3d --out demo_gs
  tensorfield train configs/tensorf_vm_small.yaml --data ../shared/data/lego_100 --out runs/lego steps=300
  tensorfield eval runs/lego
  tensorfield render runs/lego --path orbit --out orbit.mp4
  tensorfield export runs/lego mesh --out lego.ply
  tensorfield export runs/dyn splat --time 0.5 --out dyn.ply
  tensorfield render runs/avatars --identity 0 --poses data/subject_1/poses.npz --out dance.mp4
  tensorfield fit-identity runs/avatars --data new_subject --out runs/avatars_new steps=500
"""


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")


def _add_checkpoint(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--checkpoint", default=None, metavar="NAME|PATH",
        help=f"{what} this checkpoint of the run: step_N (e.g. step_500) or a .ckpt path (default: the newest)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tensorfield",
        description="Reconstruct 3D and 4D neural fields from images, train them, render and export.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from tensorfield import __version__

    parser.add_argument("--version", action="version", version=f"tensorfield {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "demo",
        help="build the synthetic scene, train a CPU-sized model, write renders, video, mesh, metrics",
        description="Generate the built-in synthetic scene, train a CPU-sized model on it (TensoRF-VM, or 3D "
        "Gaussians with --method gaussians3d), then write test renders and stills with depth, an orbit video, "
        "a mesh and a metrics summary (summary.json) into --out.",
    )
    p.add_argument("--out", default="demo_run", help="output folder (default: demo_run)")
    p.add_argument("--method", default="tensorf_vm", choices=["tensorf_vm", "gaussians3d"], help="model to train (default: tensorf_vm)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo config's)")
    p.add_argument("--size", type=int, default=256, help="pixels per side of the stills and the orbit video (default: 256)")
    p.add_argument("--frames", type=int, default=90, help="frames of the orbit video (default: 90, 3 s at 30 fps)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_device(p)

    p = sub.add_parser(
        "train",
        help="train a method on a dataset",
        description="Train CONFIG (a YAML in configs/, or a method name) on --data. Extra KEY=VALUE arguments "
        "override config fields, e.g. steps=2000 batch_size=2048 upsample_steps=[100,200]. "
        "Use --help-config to list every field of the method's config.",
    )
    p.add_argument("config", help="YAML config file (see configs/) or a registered method name")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--data", help="dataset folder (Blender/NeRF-Synthetic, D-NeRF, nerfstudio / ns-process-data, COLMAP sparse model, N3V video, or what `tensorfield process` writes); methods whose data the config names need none")
    p.add_argument("--out", default=None, help="run folder (default: runs/<data name>_<method>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest readable checkpoint (an unreadable newer one is renamed *.corrupt, with a warning)")
    _add_checkpoint(p, "--resume: continue from")
    p.add_argument("--help-config", action="store_true", help="list the config fields of CONFIG's method and exit")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--view", action="store_true", help="train in the background with the desktop viewer attached (needs PyQt6)")
    _add_device(p)

    p = sub.add_parser(
        "fit-identity",
        help="fit new identities on top of a trained multi-identity model (MIGS), the rest frozen",
        description="Open RUN (a trained model of several identities, e.g. MIGS), build a new run in --out on "
        "--data (data showing subjects RUN's model lacks; subjects it shares with RUN by name keep their rows) "
        "and train only the new identities' rows of the identity factor, everything else frozen, through the "
        "common trainer. The config is RUN's with KEY=VALUE overrides on top (e.g. steps=500). The new run "
        "evaluates, renders, exports, resumes (train --resume) and opens in the viewer like any run.",
    )
    p.add_argument("run", help="the trained run folder or checkpoint file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (e.g. steps=500 lr_identity=0.01)")
    p.add_argument("--data", required=True, help="data with the new subjects (for MIGS an avatars folder)")
    p.add_argument("--out", required=True, help="the new run folder")
    p.add_argument("--split", default=None, help="the split whose frames of the new subjects to fit (default: the config's train_split, usually train)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_checkpoint(p, "fit from")
    _add_device(p)

    p = sub.add_parser("eval", help="compute PSNR/SSIM of a run on its test split", description="Render the test split of RUN, print and store PSNR and SSIM (RUN/eval.json).")
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument("--split", default=None, help="dataset split to evaluate (default: test, else val)")
    _add_checkpoint(p, "evaluate")
    p.add_argument("--no-renders", action="store_true", help="do not save the rendered images")
    _add_device(p)

    p = sub.add_parser(
        "render",
        help="render a camera path to a video or image folder",
        description="Render RUN along a camera path: the test split's cameras, an orbit, or a camera-path JSON "
        "(nerfstudio layout, optional per-frame 'time'). --out ending in .mp4 writes a video (plus *_depth.mp4), "
        "anything else a folder of PNGs. Avatars (MIGS): --identity K in the pose of --frame F, or one frame per "
        "pose of --poses FILE (a poses.npz of an avatars folder: rotations [T, J, 3] axis-angle, root [T, 4, 4] "
        "or root_orient + transl, optional joint_names), seen by the data's camera unless --path is given.",
    )
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument("--path", default=None, help="test, train, orbit, another split's name or a camera path JSON (default: the camera of --frame or of --identity's first frame for --frame / --poses on avatar data, else test, else the evaluation split)")
    p.add_argument("--out", required=True, help="FILE.mp4 or a folder")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--time", type=float, default=None, help="render every frame at this time in [0, 1]")
    group.add_argument("--time-range", type=float, nargs=2, metavar=("A", "B"), default=None, help="sweep time from A to B over the path")
    p.add_argument("--frames", type=int, default=120, help="frames of an orbit (default: 120)")
    p.add_argument("--fps", type=float, default=30.0, help="video frame rate (default: 30)")
    p.add_argument("--no-depth", action="store_true", help="do not write depth renders")
    p.add_argument("--frame", type=int, default=None, help="models with per-frame inputs (avatars): the frame / pose to render")
    p.add_argument("--identity", type=int, default=None, help="models with several subjects: the identity to render")
    p.add_argument("--poses", default=None, metavar="FILE", help="models driven by skeleton poses (avatars): render one frame per pose of this .npz (the poses.npz layout of an avatars folder, e.g. another subject's motion)")
    _add_checkpoint(p, "render")
    _add_device(p)

    p = sub.add_parser("export", help="export a mesh, point cloud, Gaussian splats, a field slice or the cameras", description="Export RUN as a mesh (grid fields: marching cubes on the density grid; Gaussians: TSDF fusion of rendered depth and colour; vertex colours from the radiance field, small floating parts removed), a point cloud, or Gaussian splats (the standard 3DGS .ply that splat viewers open; 4D models: the slice at --time). The format follows --out's extension: .ply .obj .glb for meshes; .ply .pcd .xyz for points; .ply for splats. Coordinate models (no images): `slice` writes the field on a plane as .png (colour-mapped) or .npy; `slices` writes each --quantity at --time into the folder --out as QUANTITY.png (colour map with a colour bar) and QUANTITY.npy (values). `cameras` writes the run's cameras as a nerfstudio transforms.json (--out FILE.json). Meshes, points, splats and cameras are written in the data's input frame (COLMAP and nerfstudio scenes are normalised for training) unless --normalized.")
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument("what", choices=["mesh", "pointcloud", "splat", "slice", "slices", "cameras"], help="what to export")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--resolution", type=int, default=None, help="grid resolution per axis (default: the model's)")
    p.add_argument("--normalized", action="store_true", help="keep the model's normalised coordinates (default: map meshes, points, splats and cameras back to the data's input frame)")
    p.add_argument("--level", type=float, default=0.005, help="alpha iso-level for marching cubes (default: 0.005)")
    p.add_argument("--min-component", type=float, default=0.02, help="drop mesh parts smaller than this fraction of the largest")
    p.add_argument("--time", type=float, default=None, help="time in [0, 1] for dynamic models")
    p.add_argument("--identity", type=int, default=None, help="splat: the identity of a model with several subjects (avatars)")
    p.add_argument("--frame", type=int, default=None, help="splat: the frame whose pose to export (avatars); with --poses the pose of the file")
    p.add_argument("--poses", default=None, metavar="FILE", help="splat: a pose-sequence .npz (avatars; poses.npz layout) to take pose --frame (default 0) from")
    p.add_argument("--component", default="", help="slice: which value to show (default: the model's first)")
    p.add_argument("--quantity", action="append", default=None, help="slices: a value to write (repeatable, e.g. kretschmann, g_tt, det, ricci_scalar, error_kretschmann; default: the model's first)")
    p.add_argument("--log", action="store_true", help="slices: colour log10 |value| (curvature scalars span orders of magnitude)")
    p.add_argument("--origin", type=float, nargs="+", default=None, help="slice: centre in the model's coordinates")
    p.add_argument("--axis-u", dest="axis_u", type=float, nargs="+", default=None, help="slice: first in-plane half-extent vector")
    p.add_argument("--axis-v", dest="axis_v", type=float, nargs="+", default=None, help="slice: second in-plane half-extent vector")
    _add_checkpoint(p, "export")
    _add_device(p)

    p = sub.add_parser(
        "view",
        help="open the desktop viewer on a run (needs PyQt6)",
        description="Open RUN (a run folder or checkpoint) in the desktop viewer: orbit/pan/zoom with the mouse, "
        "WASD/QE to fly, snap to dataset cameras, scrub time for dynamic scenes, colour/depth/alpha modes, "
        "snapshots, keyframe camera paths (JSON that `render --path` accepts) and MP4 renders. "
        "Install the viewer with: pip install 'tensorfield[viewer]'.",
    )
    p.add_argument("run", nargs="?", default=None, help="run folder or checkpoint file (optional: open one from the window)")
    _add_device(p)

    from tensorfield.app.process import add_parser as add_process_parser

    add_process_parser(sub)
    sub.add_parser("methods", help="list the registered methods")

    p = sub.add_parser(
        "doctor",
        help="report what this machine can run and the system libraries it lacks",
        description="List the installed optional packages, the GPU, and the system libraries that wheels need "
        "(open3d: libusb; the viewer: EGL/GL, xkbcommon, fontconfig ...). --install fetches the missing ones with "
        "apt-get when run as root on Debian/Ubuntu; otherwise the command to run is printed.",
    )
    p.add_argument("--install", action="store_true", help="install missing system libraries with apt-get (root only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides (KEY=VALUE) may come before or after options, so gather the leftovers here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command in ("train", "fit-identity") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from tensorfield.app import commands

    handler = commands.COMMANDS[args.command]
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("tensorfield: interrupted", file=sys.stderr)
        return 130
    except commands.USER_ERRORS as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"tensorfield: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["Path", "build_parser", "main"]
