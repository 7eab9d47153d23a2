"""Flat, typed configuration shared by every method.

Each method defines one flat dataclass that extends :class:`MethodConfig`; every field carries a
one-line ``help`` in its metadata, which ``tensorfield train --help-config`` prints. YAML files in
``configs/`` fill these dataclasses and ``key=value`` command-line overrides are applied on top
(see :mod:`tensorfield.engine.config`, which validates names and types with omegaconf).
"""

from __future__ import annotations

from dataclasses import dataclass, field


def option(default, help: str, **kwargs):
    """A dataclass field with a one-line help string."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class MethodConfig:
    """Options common to every method: the training loop, data and evaluation."""

    method: str = option("", "Registered method name (see `tensorfield methods`).")
    # training loop
    steps: int = option(3000, "Number of optimisation steps.")
    batch_size: int = option(4096, "Rays (ray models), images (image models) or samples per step.")
    seed: int = option(0, "Random seed; CPU runs are bit-reproducible for a given seed.")
    # data
    data: str = option("", "Path of the training data (set by `tensorfield train --data`).")
    downscale: float = option(1.0, "Divide image resolution by this factor at load time.")
    background: str = option("white", "Background the RGBA images are composited on: white, black or random.")
    frame_stride: int = option(1, "Video scenes (N3V): keep every N-th frame.")
    max_frames: int = option(0, "Video scenes (N3V): keep at most this many frames per camera (0 = all).")
    time_range: list[float] = option([], "Video scenes (N3V): [start, end] in seconds to load (empty = all).")
    test_cameras: list[str] = option([], "Video scenes (N3V): held-out cameras by name, e.g. [cam00] (empty = cam00).")
    # logging / evaluation / checkpoints
    log_every: int = option(50, "Write a metrics.jsonl line every N steps.")
    eval_every: int = option(0, "Evaluate on the test split every N steps (0 = only at the end).")
    eval_max_images: int = option(0, "Evaluate on at most this many test images (0 = all).")
    checkpoint_every: int = option(1000, "Write a checkpoint every N steps (and always at the end).")
    keep_checkpoints: int = option(3, "Keep the newest N checkpoints.")
    tensorboard: bool = option(False, "Also log to TensorBoard (needs the tensorboard package).")
    render_chunk: int = option(16384, "Rays per chunk when rendering full images (bigger chunks: fewer marching rounds of fixed cost; 4096 -> 16384 is ~10% faster on a 2-core CPU).")
