"""Flat, typed configuration shared by the methods.

Each method defines one flat dataclass; every field carries a one-line ``help`` and a ``group``
in its metadata, which ``tensorfield train --help-config`` prints under one heading per group.
YAML files in ``configs/`` fill these dataclasses and ``key=value`` (or ``group.key=value``)
command-line overrides are applied on top (see :mod:`tensorfield.engine.config`, which validates
names and types with omegaconf).

The keys stay flat; the groups are the dataclass *bases* a method combines:

* :class:`MethodConfig`: what every method has (training loop, data path, logging);
* :class:`ImageDataConfig`: posed-image loading (``downscale``, ``background``);
* :class:`VideoDataConfig`: multi-view video loading (N3V: ``frame_stride``, ...);
* :class:`RenderConfig`: full-image rendering (``render_chunk``);
* :class:`ImageMethodConfig`: all of them, for methods trained on posed images.

A coordinate model extends :class:`MethodConfig` only and so has no image options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

DEFAULT_GROUP = "method"
"""Group of an option declared without one (e.g. in a plugin's config)."""


def option(default, help: str, group: str | None = None, **kwargs):
    """A dataclass field with a one-line help string and the group it is listed under.

    ``group=None`` inherits the group of the same option in a base class (an override of
    ``steps`` stays under ``training``), else :data:`DEFAULT_GROUP`.
    """
    metadata = {"help": help}
    if group is not None:
        metadata["group"] = group
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def option_group(config_class: type, name: str) -> str:
    """The group of option ``name`` of ``config_class`` (its own, else the nearest base's)."""
    for klass in config_class.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and "group" in declared.metadata:
            return declared.metadata["group"]
    return DEFAULT_GROUP


def option_groups(config_class: type) -> dict[str, list[str]]:
    """``{group: [option names]}`` of a config dataclass, groups in first-declaration order."""
    groups: dict[str, list[str]] = {}
    for item in dataclasses.fields(config_class):
        if item.init:
            groups.setdefault(option_group(config_class, item.name), []).append(item.name)
    return groups


@dataclass
class MethodConfig:
    """Options common to every method: the training loop, the data path, logging and checkpoints."""

    method: str = option("", "Registered method name (see `tensorfield methods`).", group="training")
    steps: int = option(3000, "Number of optimisation steps.", group="training")
    batch_size: int = option(4096, "Rays (ray models), images (image models) or samples per step.", group="training")
    seed: int = option(0, "Random seed; CPU runs are bit-reproducible for a given seed.", group="training")
    data: str = option("", "Path of the training data (set by `tensorfield train --data`; may be empty for methods that make their own).", group="data")
    log_every: int = option(50, "Write a metrics.jsonl line every N steps.", group="logging")
    eval_every: int = option(0, "Evaluate on the test split every N steps (0 = only at the end).", group="logging")
    eval_max_images: int = option(0, "Evaluate on at most this many test images (0 = all).", group="logging")
    checkpoint_every: int = option(1000, "Write a checkpoint every N steps (and always at the end).", group="logging")
    keep_checkpoints: int = option(3, "Keep the newest N checkpoints.", group="logging")
    tensorboard: bool = option(False, "Also log to TensorBoard (needs the tensorboard package).", group="logging")


@dataclass
class ImageDataConfig:
    """Loading posed images (mixin of image methods' configs)."""

    downscale: float = option(1.0, "Divide image resolution by this factor at load time.", group="data")
    background: str = option("white", "Background the RGBA images are composited on: white, black or random.", group="data")


@dataclass
class VideoDataConfig:
    """Loading multi-view video (N3V) scenes (mixin of image methods' configs)."""

    frame_stride: int = option(1, "Video scenes (N3V): keep every N-th frame.", group="video data")
    max_frames: int = option(0, "Video scenes (N3V): keep at most this many frames per camera (0 = all).", group="video data")
    time_range: list[float] = option([], "Video scenes (N3V): [start, end] in seconds to load (empty = all).", group="video data")
    test_cameras: list[str] = option([], "Video scenes (N3V): held-out cameras by name, e.g. [cam00] (empty = cam00).", group="video data")


@dataclass
class RenderConfig:
    """Rendering full images (mixin of image methods' configs)."""

    render_chunk: int = option(16384, "Rays per chunk when rendering full images (bigger chunks: fewer marching rounds of fixed cost; 4096 -> 16384 is ~10% faster on a 2-core CPU).", group="rendering")


@dataclass
class ImageMethodConfig(RenderConfig, VideoDataConfig, ImageDataConfig, MethodConfig):
    """Base config of a method trained on posed images or multi-view video."""


IMAGE_OPTIONS: tuple[str, ...] = tuple(
    item.name for base in (ImageDataConfig, VideoDataConfig, RenderConfig) for item in dataclasses.fields(base)
)
"""Options an image method has and a coordinate method lacks (older flat configs had them all)."""

LEGACY_DEFAULTS: dict = {
    item.name: (item.default if item.default is not dataclasses.MISSING else item.default_factory())
    for base in (ImageDataConfig, VideoDataConfig, RenderConfig)
    for item in dataclasses.fields(base)
}
"""Defaults of :data:`IMAGE_OPTIONS`, which every stored config from before the groups carries."""
