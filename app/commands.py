"""Implementations of the ``tensorfield`` subcommands (argument parsing lives in :mod:`.cli`)."""

from __future__ import annotations

import json
import math
import sys
import time
from importlib import resources
from pathlib import Path

from tensorfield.datasets.errors import DatasetError
from tensorfield.engine.checkpoint import CHECKPOINT_DIR, CheckpointError, latest_checkpoint
from tensorfield.engine.config import ConfigError, config_help, load_config
from tensorfield.engine.data import DataError
from tensorfield.engine.dependencies import MissingDependency
from tensorfield.engine.export import ExportError
from tensorfield.engine.fit import FitError
from tensorfield.engine.render import CameraPathError
from tensorfield.engine.trainer import DeviceError, TrainingError, load_run
from tensorfield.engine.render import RenderError
from tensorfield.fields.registry import RegistryError, get_method, methods
from tensorfield.app.process import cmd_process


class CommandError(ValueError):
    """A command-line usage problem (one line)."""


USER_ERRORS = (
    CommandError,
    MissingDependency,
    DatasetError,
    ConfigError,
    CheckpointError,
    CameraPathError,
    ExportError,
    DeviceError,
    TrainingError,
    RenderError,
    RegistryError,
    DataError,
    FitError,
    FileNotFoundError,
    KeyError,
)

DEMO_CONFIG = "demo.yaml"


def packaged_config(name: str) -> Path:
    """Path of a YAML shipped in ``tensorfield.configs``."""
    path = Path(str(resources.files("tensorfield.configs").joinpath(name)))
    if not path.is_file():
        raise CommandError(f"{name}: no such packaged config")
    return path


def _resolve_config(spec: str, overrides: list[str]):
    """``spec`` is a YAML path, a packaged config name or a registered method name.

    ``configs/NAME.yaml`` that does not exist relative to the working directory is taken from the
    packaged configs, so the README's commands work from any folder.
    """
    path = Path(spec)
    if path.is_file():
        return load_config(path, overrides)
    if spec in methods():
        return load_config(None, overrides, method=spec)
    packaged = [path.name] if path.parent.name == "configs" else []
    for candidate in (spec, spec + ".yaml", *packaged):
        try:
            return load_config(packaged_config(candidate), overrides)
        except CommandError:
            continue
    raise CommandError(f"{spec}: no such config file or method (methods: {', '.join(sorted(methods()))})")


def _print_summary(title: str, values: dict) -> None:
    print(title)
    for key, value in values.items():
        if isinstance(value, float):
            value = f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
        print(f"  {key:<14} {value}")


# ------------------------------------------------------------------------------- methods
def cmd_methods(args) -> int:
    available = methods()
    for name in sorted(available):
        print(f"{name:<14} {available[name].summary}")
    return 0


# ------------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from tensorfield.engine.trainer import Trainer

    overrides = list(args.overrides)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise CommandError(f"override '{bad[0]}' is not KEY=VALUE")
    if args.help_config:
        config = _resolve_config(args.config, overrides)
        print(config_help(get_method(config.method).config_class()))
        return 0
    chosen = getattr(args, "checkpoint", None)
    if chosen is not None and not args.resume:
        raise CommandError("--checkpoint needs --resume (train continues a run from a checkpoint only when resuming)")
    if args.resume:
        if args.out is None:
            raise CommandError("--resume needs --out RUN (the run folder to continue)")
        # an explicit --checkpoint must be readable; the newest may fall back to an earlier one
        trainer = Trainer.from_checkpoint(
            args.out, checkpoint=chosen, fallback=chosen is None, overrides=overrides, data_path=args.data, device=args.device
        )
        for bad, reason, kept in trainer.skipped_checkpoints:
            print(f"tensorfield: warning: {bad.name}: {reason.split(' (')[0]}; resuming from {trainer.checkpoint_path.name} instead (kept as {kept.name})", file=sys.stderr)
        if trainer.step >= trainer.config.steps:
            raise CommandError(f"{args.out}: already trained for {trainer.step} steps (steps={trainer.config.steps}); pass steps=N with N > {trainer.step} to train longer")
        print(f"resuming {args.out} at step {trainer.step}")
    else:
        config = _resolve_config(args.config, overrides)
        data = args.data or config.data or None  # a method whose data is named by its config needs none
        default_name = f"{Path(data).resolve().name}_{config.method}" if data else config.method
        run_dir = Path(args.out) if args.out else Path("runs") / default_name
        if latest_checkpoint(run_dir) is not None:
            raise CommandError(f"{run_dir}: already holds a run; use --resume to continue it or another --out")
        trainer = Trainer.from_config(config, run_dir, data_path=data, device=args.device)
    if args.view:
        return _train_with_viewer(trainer, args)
    summary = trainer.train(progress=not args.no_progress)
    trainer.close()
    _print_summary(f"trained {summary['method']} for {summary['steps']} steps -> {summary['run_dir']}", {
        "train_s": summary.get("train_s"),
        "it_per_s": summary.get("it_per_s"),
        "train_psnr": summary.get("psnr"),
        # named after the split evaluated (val when the data has no test split)
        **({f"{(summary.get('eval') or {}).get('split')}_{k}": v for k, v in (summary.get("eval") or {}).items() if isinstance(v, float)}),
    })
    return 0


# ------------------------------------------------------------------------------- fit-identity
def cmd_fit_identity(args) -> int:
    """``fit-identity RUN --data NEW --out RUN2``: :func:`tensorfield.engine.fit.identity_fit`, then train."""
    from tensorfield.engine.fit import identity_fit

    overrides = list(args.overrides)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise CommandError(f"override '{bad[0]}' is not KEY=VALUE")
    if not Path(args.run).exists():
        raise CommandError(f"{args.run}: no such run folder or checkpoint")
    if args.split is not None:
        overrides.append(f"train_split={args.split}")
    fit = identity_fit(args.run, args.data, args.out, overrides, device=args.device, checkpoint=args.checkpoint)
    trainer = fit.trainer
    print(f"fitting identit{'y' if len(fit.rows) == 1 else 'ies'} {', '.join(map(str, fit.rows))} of {args.data} on {args.run} (everything else frozen) -> {args.out}")
    summary = trainer.train(progress=not args.no_progress)
    trainer.close()
    _print_summary(f"fitted {summary['method']} for {summary['steps']} steps -> {summary['run_dir']}", {
        "train_s": summary.get("train_s"),
        "train_psnr": summary.get("psnr"),
        **({f"{(summary.get('eval') or {}).get('split')}_{k}": v for k, v in (summary.get("eval") or {}).items() if isinstance(v, float)}),
    })
    return 0


# ------------------------------------------------------------------------------- doctor
def cmd_doctor(args) -> int:
    from tensorfield.app.doctor import run_doctor

    return run_doctor(install=args.install)


# ------------------------------------------------------------------------------- view
def _viewer_module():
    """The Qt viewer, or a one-line error naming the missing package or system library."""
    from tensorfield.engine.dependencies import explain_import_error

    try:
        from tensorfield.app.viewer import window
    except ImportError as err:
        raise CommandError(explain_import_error("the viewer (PyQt6)", err)) from None
    return window


def cmd_view(args) -> int:
    window = _viewer_module()
    if args.run is not None and not Path(args.run).exists():
        raise CommandError(f"{args.run}: no such run folder or checkpoint")
    window.run_viewer(args.run, device=args.device)
    return 0


def _train_with_viewer(trainer, args) -> int:
    """``train --view``: training runs in a background thread, the viewer in the foreground."""
    window = _viewer_module()
    closed = window.run_viewer(trainer=trainer, live=True)
    trainer.close()
    state = closed.training_state or "stopped"
    print(f"{state} {trainer.config.method} at step {trainer.step} / {trainer.config.steps} -> {trainer.run_dir}")
    return 0


# ------------------------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    trainer = load_run(args.run, args.device, checkpoint=getattr(args, "checkpoint", None))
    split = args.split or trainer.default_eval_split()
    if split is None:
        raise CommandError(f"{args.run}: the data has no split to evaluate besides train (use --split train)")
    result = trainer.evaluate(split=split, save_renders=not args.no_renders)
    trainer.close()
    shown = {k: v for k, v in result.items() if k != "per_image" and v is not None}
    _print_summary(f"{args.run}: {split} split at step {result.get('step')}", shown)
    return 0


# ------------------------------------------------------------------------------- render
def _camera_data(trainer, what: str):
    """The run's data as :class:`~tensorfield.fields.base.CameraData`, or a one-line error."""
    from tensorfield.fields.base import CameraData

    if not isinstance(trainer.data, CameraData):
        raise CommandError(f"{trainer.run_dir}: {what} needs data seen through cameras; {trainer.config.method} has none")
    return trainer.data


def _camera_path(trainer, spec: str | None, frames: int, identity: int | None = None, frame: int | None = None):
    """``(cameras of --path, the split they are or None)``. Without ``--path``: for ``--frame`` /
    ``--poses`` on data whose frames come with cameras
    (:class:`~tensorfield.fields.base.FrameCameraData`, avatars) the camera of that frame (or of
    the identity's first frame), else ``test``, else the evaluation split."""
    from tensorfield.engine.render import CameraPath, load_camera_path, orbit_path
    from tensorfield.fields.base import FrameCameraData

    if spec is None:
        if isinstance(trainer.data, FrameCameraData) and (frame is not None or identity is not None):
            return CameraPath(trainer.data.frame_camera(identity, frame)), None
        cameras = _camera_data(trainer, "render").split_cameras()
        spec = "test" if "test" in cameras else (trainer.default_eval_split() or "train")
    if spec.endswith(".json") or Path(spec).is_file():
        return load_camera_path(spec), None
    data = _camera_data(trainer, f"--path {spec}")
    cameras = data.split_cameras()
    if spec not in ("test", "train", "val", "orbit") and spec not in cameras:
        raise CommandError(f"--path {spec}: use test, train, val, orbit, a split of the data ({', '.join(cameras)}) or a camera path .json file")
    if spec == "orbit":
        return orbit_path(cameras["train"], frames, center=data.scene_box().mean(0)), None
    if spec not in cameras:
        raise CommandError(f"--path {spec}: the data has no '{spec}' split (has: {', '.join(cameras)})")
    return CameraPath(cameras[spec]), spec


def cmd_render(args) -> int:
    from tensorfield.engine.export import check_output_path
    from tensorfield.engine.render import apply_time, load_pose_sequence, render_path
    from tensorfield.fields.base import ExportsSlices, FrameCameraData, HasTime, RendersViews

    times = [args.time] if args.time is not None else list(args.time_range or [])
    flag = "--time" if args.time is not None else "--time-range"
    outside = [t for t in times if not 0.0 <= t <= 1.0]  # also catches nan
    if outside:
        raise CommandError(f"{flag} {outside[0]}: times are normalised to [0, 1]")
    # before loading the run: a bad --out must not cost a model load and a render
    check_output_path(args.out, folder=Path(args.out).suffix.lower() != ".mp4")
    trainer = load_run(args.run, args.device, checkpoint=getattr(args, "checkpoint", None))
    model = trainer.model
    if not isinstance(model, RendersViews):
        hint = f"; use: tensorfield export {args.run} slice --out slice.png" if isinstance(model, ExportsSlices) else ""
        raise CommandError(f"{args.run}: a {type(model).__name__} does not render camera views{hint}")
    if times and not isinstance(model, HasTime):
        raise CommandError(f"{flag}: {args.run} is a static {type(model).__name__} (no time to set); drop {flag}")
    poses = None
    if args.poses is not None:
        if args.frame is not None:
            raise CommandError("--poses renders every pose of the file; drop --frame (it picks a pose of the data)")
        poses = load_pose_sequence(model, args.identity if args.identity is not None else 0, args.poses)
    identity = args.identity if args.identity is not None or poses is None else 0
    path, split = _camera_path(trainer, args.path, len(poses) if poses is not None else args.frames, identity, args.frame)
    path = apply_time(path, args.time, tuple(args.time_range) if args.time_range else None)
    frame = args.frame
    if split is not None and frame is None and poses is None and isinstance(trainer.data, FrameCameraData):
        frame = trainer.data.split_frames(split).tolist()  # each view of an avatar split in its own frame's pose
    background = _background(trainer)
    start = time.perf_counter()
    written = render_path(
        model, path, background, args.out, fps=args.fps, depth=not args.no_depth, frame=frame, identity=identity, poses=poses
    )
    seconds = time.perf_counter() - start
    count = len(poses) if poses is not None else len(path)
    print(f"rendered {count} frames in {seconds:.1f} s -> {args.out} ({len(written)} files)")
    return 0


def _background(trainer):
    """The data's background colour, white when the data has no cameras."""
    import torch
    from tensorfield.fields.base import CameraData

    return trainer.data.background_color() if isinstance(trainer.data, CameraData) else torch.ones(3)


# ------------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    import dataclasses

    from tensorfield.engine.export import (
        apply_similarity,
        extract_mesh,
        extract_point_cloud,
        write_mesh,
        write_point_cloud,
    )
    from tensorfield.engine.export import EXPORT_SUFFIXES, check_output_path
    from tensorfield.fields.base import ExportsDensityGrid, RendersViews

    # before loading the run: a bad --out must not cost a model load and an extraction
    if args.what != "slices":  # slices writes a folder
        check_output_path(args.out, EXPORT_SUFFIXES.get(args.what))  # kinds without a list accept any name
    trainer = load_run(args.run, args.device, checkpoint=getattr(args, "checkpoint", None))
    model = trainer.model
    to_input = _input_frame(trainer, args)
    if args.what == "cameras":
        return _export_cameras(trainer, args, to_input)
    if args.what == "splat":
        return _export_splat(model, args, to_input)
    if args.what in ("slice", "slices"):
        return _export_slice(model, args)
    if args.what == "mesh" and isinstance(model, ExportsDensityGrid):
        mesh = extract_mesh(model, level=args.level, resolution=args.resolution, min_component_fraction=args.min_component)
    else:
        if not isinstance(model, RendersViews):
            raise CommandError(f"{args.run}: a {type(model).__name__} renders no views to build a {args.what} from")
        data = _camera_data(trainer, args.what)
        cameras, background = data.split_cameras()["train"], data.background_color()
        if args.what == "pointcloud":
            box = data.scene_box()
            extent = float((box[1] - box[0]).max())
            points, colors = extract_point_cloud(model, cameras, background, time=args.time, voxel_size=extent / 512)
            if to_input is not None:
                points = apply_similarity(to_input, points)[0]
            write_point_cloud(points, colors, args.out)
            print(f"wrote {args.out}: {len(points)} points")
            return 0
        mesh = extract_mesh(
            model,
            level=args.level,
            resolution=args.resolution,
            min_component_fraction=args.min_component,
            cameras=cameras,
            background=background,
            time=args.time,
        )
    if to_input is not None:
        mesh = dataclasses.replace(mesh, vertices=apply_similarity(to_input, mesh.vertices)[0])
    write_mesh(mesh, args.out)
    print(f"wrote {args.out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} triangles")
    return 0


def _input_frame(trainer, args):
    """``[4, 4]`` model -> input similarity the export applies, ``None`` for none (``--normalized``,
    data without an input frame, or the identity; see :mod:`tensorfield.engine.scene_frame`)."""
    from tensorfield.engine.scene_frame import to_input_frame

    try:
        return to_input_frame(trainer.run_dir, trainer.data.scene_info(), normalized=getattr(args, "normalized", False))
    except ValueError as err:
        raise CommandError(str(err)) from None


def _export_cameras(trainer, args, to_input) -> int:
    """``export RUN cameras``: the run's cameras as a nerfstudio transforms.json (input frame)."""
    from tensorfield.engine.camera_export import CameraExportError, write_cameras_json
    from tensorfield.engine.data import ImageSceneData

    if not isinstance(trainer.data, ImageSceneData):
        raise CommandError(f"{args.run}: export cameras needs posed-image data; {trainer.config.method} has none")
    try:
        write_cameras_json(trainer.data.scene, args.out, to_input)
    except CameraExportError as err:
        raise CommandError(str(err)) from None
    counts = ", ".join(f"{len(s)} {name}" for name, s in trainer.data.scene.splits.items())
    frame = "normalised" if to_input is None and getattr(args, "normalized", False) else "input"
    print(f"wrote {args.out}: {counts} cameras ({frame} frame)")
    return 0


def _export_slice(model, args) -> int:
    """``export RUN slice``: a coordinate model's values on a plane, as a PNG (colour-mapped) or .npy;
    ``export RUN slices``: each ``--quantity`` into the folder ``--out`` as a PNG with a colour bar
    and the ``.npy`` values. Both at ``--time`` (normalised) when given."""
    import dataclasses

    import imageio.v2 as imageio
    import numpy as np
    from tensorfield.engine.render import render_slice, resolve_slice
    from tensorfield.fields.base import ExportsSlices

    if not isinstance(model, ExportsSlices):
        raise CommandError(f"{args.run}: a {type(model).__name__} has no slices to export (use mesh, pointcloud or splat)")
    if args.time is not None and not 0.0 <= args.time <= 1.0:
        raise CommandError(f"--time {args.time}: times are normalised to [0, 1]")
    request = model.default_slice()
    changes = {"resolution": args.resolution} if args.resolution else {}
    if args.time is not None:
        changes["time"] = float(args.time)
    if args.component:
        changes["component"] = args.component
    for name, value in (("origin", args.origin), ("axis_u", args.axis_u), ("axis_v", args.axis_v)):
        if value is not None:
            if len(value) != len(request.origin):
                raise CommandError(f"--{name.replace('_', '-')}: expected {len(request.origin)} numbers, got {len(value)}")
            changes[name] = tuple(float(v) for v in value)
    if args.what == "slices":
        return _export_slices(model, dataclasses.replace(request, **changes), args)
    request = resolve_slice(model, dataclasses.replace(request, **changes))
    out = Path(args.out)
    if out.suffix.lower() == ".npy":
        np.save(out, model.field_slice(request).detach().cpu().numpy())
    elif out.suffix.lower() == ".png":
        imageio.imwrite(out, render_slice(model, request))
    else:
        raise CommandError(f"{args.out}: slices are written as .png (colour-mapped) or .npy (values)")
    print(f"wrote {args.out}: {request.resolution}x{request.resolution} slice of {request.component}")
    return 0


def _export_slices(model, request, args) -> int:
    """``export RUN slices``: ``--out`` is a folder; one ``QUANTITY.png`` (colour bar) and
    ``QUANTITY.npy`` per ``--quantity`` (``--component`` also counts; default: the model's first)."""
    import dataclasses

    import imageio.v2 as imageio
    import numpy as np
    from tensorfield.engine.colormap import colorbar_figure
    from tensorfield.engine.render import resolve_slice, slice_title

    quantities = list(args.quantity or []) + ([args.component] if args.component else [])
    out = Path(args.out)
    if out.suffix.lower() in (".png", ".npy"):
        raise CommandError(f"{args.out}: slices writes a folder (QUANTITY.png and QUANTITY.npy per --quantity); use `slice` for one file")
    resolved = []
    for quantity in quantities or [""]:
        try:
            resolved.append(resolve_slice(model, dataclasses.replace(request, component=quantity)))
        except RenderError as err:
            raise CommandError(str(err)) from None
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        for item in resolved:
            values = model.field_slice(item).detach().double().cpu()
            np.save(out / f"{item.component}.npy", values.numpy())
            imageio.imwrite(out / f"{item.component}.png", colorbar_figure(values, slice_title(item), log=args.log))
            print(f"wrote {out / item.component}.png and .npy: {item.resolution}x{item.resolution} slice of {item.component}")
    finally:
        model.train(was_training)
    return 0


def _export_splat(model, args, to_input=None) -> int:
    """``export RUN splat``: the model's Gaussians (4D: the slice at ``--time``) as a 3DGS PLY
    (moved by ``to_input``, ``[4, 4]``, when given: back to the data's input frame)."""
    import torch
    from tensorfield.engine.export import write_splat_ply

    from tensorfield.fields.base import ExportsSplats

    if not isinstance(model, ExportsSplats):
        raise CommandError(f"{args.run}: a {type(model).__name__} has no Gaussians to export as splats (use mesh or pointcloud)")
    if Path(args.out).suffix.lower() != ".ply":
        raise CommandError(f"{args.out}: splats are written as .ply")
    subject = _splat_subject(model, args)
    with torch.no_grad():
        attributes = model.splat_attributes(args.time, **subject)
    column = {name: i for i, name in enumerate(attributes.names)}
    values = attributes.values
    rest = [name for name in attributes.names if name.startswith("f_rest_")]
    count = values.shape[0]
    sh_rest = None
    if rest:  # channel-major in the file: f_rest_{c (K-1) + k}
        block = values[:, column[rest[0]] : column[rest[-1]] + 1]
        sh_rest = block.reshape(count, 3, len(rest) // 3).transpose(1, 2)
    pick = lambda *names: values[:, [column[n] for n in names]]
    means, log_scales, quats = pick("x", "y", "z"), pick("scale_0", "scale_1", "scale_2"), pick("rot_0", "rot_1", "rot_2", "rot_3")
    if to_input is not None:
        from tensorfield.engine.scene_frame import splats_to_frame

        means, sh_rest, log_scales, quats = splats_to_frame(to_input, means, sh_rest, log_scales, quats)
    write_splat_ply(
        args.out,
        means,
        pick("f_dc_0", "f_dc_1", "f_dc_2"),
        sh_rest,
        values[:, column["opacity"]],
        log_scales,
        quats,
    )
    when = f" at time {args.time}" if args.time is not None else ""
    if subject:
        pose = f"pose {args.frame or 0} of {args.poses}" if args.poses else (f"frame {args.frame}" if args.frame is not None else "the rest pose")
        who = f"identity {subject['identity']}" if subject.get("identity") is not None else f"frame {args.frame}'s identity"
        when += f", {who} in {pose}"
    print(f"wrote {args.out}: {count} Gaussians{when}")
    return 0


def _splat_subject(model, args) -> dict:
    """``splat_attributes`` keywords of ``--identity`` / ``--frame`` / ``--poses`` (avatars),
    checked against the model; ``{}`` when none is given."""
    from tensorfield.engine.render import load_pose_sequence
    from tensorfield.fields.base import HasIdentities

    identity, frame, poses = getattr(args, "identity", None), getattr(args, "frame", None), getattr(args, "poses", None)
    if identity is None and frame is None and poses is None:
        return {}
    if not isinstance(model, HasIdentities):
        given = "--identity" if identity is not None else ("--frame" if frame is not None else "--poses")
        raise CommandError(f"{given}: a {type(model).__name__} has no identities or poses")
    if identity is not None and not 0 <= identity < model.num_identities():
        raise CommandError(f"--identity {identity}: out of range (the model has {model.num_identities()})")
    subject: dict = {"identity": identity if identity is not None else 0}
    if poses is None:
        if frame is not None and not 0 <= frame < model.num_frames():
            raise CommandError(f"--frame {frame}: out of range (the model has {model.num_frames()} frames)")
        if frame is not None:
            subject = {"identity": identity, "frame": frame}  # identity None: the frame's own subject
        return subject
    sequence = load_pose_sequence(model, subject["identity"], poses)
    index = frame if frame is not None else 0
    if not 0 <= index < len(sequence):
        raise CommandError(f"--frame {index}: {poses} has {len(sequence)} poses")
    subject["pose"] = sequence[index]
    return subject


# ------------------------------------------------------------------------------- demo
DEMO_CONFIGS = {"tensorf_vm": DEMO_CONFIG, "gaussians3d": "demo_gaussians3d.yaml"}
"""Methods ``tensorfield demo --method`` can show, with their packaged CPU-sized configs."""


def cmd_demo(args) -> int:
    """Synthetic scene -> CPU-sized model -> renders, depth, orbit video, mesh, metrics.

    Every step after training is independent: one that cannot run (an empty mesh, a missing
    optional library) prints one line and the demo goes on, so the summary is always written.
    """
    from tensorfield.datasets.synthetic import make_scene
    from tensorfield.engine.render import CameraPath, apply_time, orbit_path, render_path
    from tensorfield.engine.trainer import Trainer

    method = getattr(args, "method", None) or "tensorf_vm"
    if method not in DEMO_CONFIGS:
        raise CommandError(f"--method {method}: the demo shows {', '.join(DEMO_CONFIGS)}")
    size = getattr(args, "size", None) or 256
    n_frames = getattr(args, "frames", None) or 90
    if size < 16 or n_frames < 1:
        raise CommandError("--size must be at least 16 and --frames at least 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"{out}: exists and is not a folder")
    overrides = [f"steps={args.steps}"] if args.steps else []
    config = load_config(packaged_config(DEMO_CONFIGS[method]), overrides)
    run_dir = out / "run"
    if latest_checkpoint(run_dir) is not None:
        raise CommandError(f"{run_dir}: already holds a run; remove it or use another --out")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = out / "data"
    if not (data / "transforms_train.json").exists():
        print(f"[1/6] generating the synthetic scene in {data}")
        make_scene(data, kind="static")
    else:
        print(f"[1/6] using the synthetic scene in {data}")
    print(f"[2/6] training {config.method} for {config.steps} steps")
    trainer = Trainer.from_config(config, run_dir, data_path=data, device=args.device)
    summary = trainer.train(progress=not args.no_progress)
    trainer.close()
    evaluation = summary.get("eval") or {}
    eval_split = evaluation.get("split") or "test"
    model, scene = trainer.model, trainer.data  # the demo's methods train on posed images (CameraData)
    cameras = scene.split_cameras()
    background = scene.background_color()
    factor = size / max(cameras["train"].width, cameras["train"].height)
    files: dict[str, str] = {"test_renders": str(run_dir / "renders" / eval_split)}
    skipped: dict[str, str] = {}

    def step(label: str, work) -> None:
        print(label)
        try:
            files.update(work())
        except USER_ERRORS + (ImportError, OSError) as err:  # say why, keep the other outputs
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            skipped[label.split("] ", 1)[-1]] = reason
            print(f"  skipped: {reason}")

    def stills() -> dict[str, str]:
        split = "test" if "test" in cameras else eval_split
        path = CameraPath(cameras[split].scaled(factor))
        render_path(model, path, background, out / "stills", progress=not args.no_progress)
        return {"stills": str(out / "stills")}

    def orbit() -> dict[str, str]:
        path = apply_time(orbit_path(cameras["train"], n_frames, center=scene.scene_box().mean(0)))
        path = CameraPath(path.cameras.scaled(factor))
        render_path(model, path, background, out / "orbit.mp4", fps=30, progress=not args.no_progress)
        return {"orbit_video": str(out / "orbit.mp4"), "orbit_depth_video": str(out / "orbit_depth.mp4")}

    mesh_stats: dict[str, int] = {}

    def mesh() -> dict[str, str]:
        from tensorfield.engine.export import extract_mesh, write_mesh

        result = extract_mesh(model, cameras=cameras["train"], background=background)
        mesh_stats.update(mesh_vertices=len(result.vertices), mesh_triangles=len(result.faces))
        write_mesh(result, out / "mesh.ply")
        return {"mesh": str(out / "mesh.ply")}

    step(f"[3/6] rendering {split_label(cameras)} views at {size}x{size} into {out / 'stills'}", stills)
    step(f"[4/6] rendering a {n_frames}-frame orbit video at {size}x{size}", orbit)
    step("[5/6] extracting a mesh", mesh)

    print("[6/6] writing the summary")
    result = {
        "method": config.method,
        "steps": summary["steps"],
        "train_seconds": round(summary.get("train_s", float("nan")), 2),
        "iterations_per_second": round(summary.get("it_per_s", float("nan")), 2),
        "eval_split": eval_split,
        f"{eval_split}_psnr": evaluation.get("psnr"),
        f"{eval_split}_ssim": evaluation.get("ssim"),
        "render_size": size,
        **mesh_stats,
        "total_seconds": round(time.perf_counter() - started, 1),
        "files": {**files, "metrics": str(run_dir / "metrics.jsonl"), "checkpoints": str(run_dir / CHECKPOINT_DIR)},
        "skipped": skipped,
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    psnr = evaluation.get("psnr")
    psnr_text = f"{psnr:.2f} dB" if isinstance(psnr, float) and math.isfinite(psnr) else "n/a"
    note = f"; skipped: {', '.join(skipped)}" if skipped else ""
    print(f"done in {result['total_seconds']} s: {eval_split} PSNR {psnr_text}; outputs in {out}/ (summary.json lists them){note}")
    return 0


def split_label(cameras: dict) -> str:
    """``"8 test"``: how many views the demo's stills show, and from which split."""
    split = "test" if "test" in cameras else next(iter(cameras))
    return f"{len(cameras[split])} {split}"


COMMANDS = {
    "demo": cmd_demo,
    "train": cmd_train,
    "fit-identity": cmd_fit_identity,
    "eval": cmd_eval,
    "render": cmd_render,
    "export": cmd_export,
    "view": cmd_view,
    "methods": cmd_methods,
    "process": cmd_process,
    "doctor": cmd_doctor,
}
"""Subcommand name -> handler (what :func:`tensorfield.app.cli.main` dispatches on)."""
