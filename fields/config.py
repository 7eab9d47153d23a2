"""Flat, typed configuration shared by the methods.

Each method defines one flat dataclass; every field carries a one-line ``help`` and a ``group``
in its metadata, which ``tensorfield train --help-config`` prints under one heading per group.
YAML files in ``configs/`` fill these dataclasses and ``key=value`` (or ``group.key=value``)
command-line overrides are applied on top (see :mod:`tensorfield.engine.config`, which validates
names and types with omegaconf).

The keys stay flat; the groups are the dataclass *bases* a method combines:

* :class:`MethodConfig`: what every method has (training loop, data path, logging);
* :class:`ImageDataConfig`: posed-image loading (``downscale``, ``background``, ``normalize``);
* :class:`VideoDataConfig`: multi-view video loading (N3V: ``frame_stride``, ...);
* :class:`RenderConfig`: full-image rendering (``render_chunk``);
* :class:`ImageMethodConfig`: all of them, for methods trained on posed images.

A coordinate model extends :class:`MethodConfig` only and so has no image options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

BACKGROUNDS = ("white", "black", "random")
"""Values of ``background`` (:func:`tensorfield.datasets.scene.parse_background` reads them)."""

DEFAULT_GROUP = "method"
"""Group of an option declared without one (e.g. in a plugin's config)."""


@dataclass(frozen=True)
class Bounds:
    """The values an option accepts (declared with :func:`option`; checked by
    :func:`tensorfield.engine.config.validate_config` wherever a config is read).

    Numeric bounds apply to a number, or to every element of a list option.

    Attributes:
        minimum, maximum: inclusive bounds.
        above, below: exclusive bounds (``above=0``: strictly positive).
        choices: the only values allowed.
        special: values allowed besides the range, with a meaning in the help (``-1`` = "from steps").
        ascending: a list must be sorted (non-decreasing), e.g. the steps of a schedule.
        lengths: the list lengths allowed (``(3,)`` for one value per axis, ``(0, 2)`` for empty or a pair).
        odd: an integer must be odd (a centred pooling kernel).
    """

    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple | None = None
    special: tuple = ()
    ascending: bool = False
    lengths: tuple[int, ...] | None = None
    odd: bool = False

    def problem(self, value) -> str | None:
        """Why ``value`` is not accepted (``None`` if it is), e.g. ``"must be >= 1, got 0"``."""
        if isinstance(value, (list, tuple)):
            if self.lengths is not None and len(value) not in self.lengths:
                counts = " or ".join(str(n) for n in self.lengths)
                return f"must have {counts} values, got {len(value)}"
            for item in value:
                why = self._scalar_problem(item)
                if why is not None:
                    return f"{why} (in {list(value)})"
            if self.ascending and any(b < a for a, b in zip(value, value[1:])):
                return f"must be sorted in increasing order, got {list(value)}"
            return None
        return self._scalar_problem(value)

    def _scalar_problem(self, value) -> str | None:
        if value in self.special and not isinstance(value, bool):
            return None
        if self.choices is not None:
            if value not in self.choices:
                return f"must be one of {', '.join(repr(c) if isinstance(c, str) else str(c) for c in self.choices)}, got {value!r}"
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None  # types are omegaconf's job
        if value != value:  # nan passes no comparison; say so rather than "must be >= 0, got nan"
            return "must be a number, got nan"
        if self.odd and int(value) % 2 == 0:
            return f"must be odd, got {value}"
        for fails, text in (
            (self.minimum is not None and value < self.minimum, f">= {self.minimum}"),
            (self.maximum is not None and value > self.maximum, f"<= {self.maximum}"),
            (self.above is not None and value <= self.above, f"> {self.above}"),
            (self.below is not None and value >= self.below, f"< {self.below}"),
        ):
            if fails:
                alternative = f" (or {', '.join(str(v) for v in self.special)})" if self.special else ""
                return f"must be {text}{alternative}, got {value}"
        return None

    def describe(self) -> str:
        """The accepted values in a few words, for ``--help-config`` (``""`` if unconstrained)."""
        parts = []
        if self.choices is not None:
            parts.append("one of " + ", ".join(repr(c) if isinstance(c, str) else str(c) for c in self.choices))
        for value, sign in ((self.minimum, ">="), (self.above, ">"), (self.maximum, "<="), (self.below, "<")):
            if value is not None:
                parts.append(f"{sign} {value}")
        if self.odd:
            parts.append("odd")
        if self.special:
            parts.append("or " + ", ".join(str(v) for v in self.special))
        if self.lengths is not None:
            parts.append(" or ".join(str(n) for n in self.lengths) + " values")
        if self.ascending:
            parts.append("sorted")
        return ", ".join(parts)


_BOUND_KEYS = tuple(item.name for item in dataclasses.fields(Bounds))


def option(default, help: str, group: str | None = None, **kwargs):
    """A dataclass field with a one-line help string, the group it is listed under and the values
    it accepts.

    ``group=None`` inherits the group of the same option in a base class (an override of
    ``steps`` stays under ``training``), else :data:`DEFAULT_GROUP`. Keyword arguments named like
    the fields of :class:`Bounds` (``minimum=1``, ``choices=(...)``, ``ascending=True``, ...)
    declare the accepted values; an option redeclared without any inherits its base's bounds.
    Other keyword arguments go to :func:`dataclasses.field`.
    """
    metadata = {"help": help}
    if group is not None:
        metadata["group"] = group
    bounds = {key: kwargs.pop(key) for key in _BOUND_KEYS if key in kwargs}
    if bounds:
        for key in ("choices", "special", "lengths"):
            if key in bounds and bounds[key] is not None:
                bounds[key] = tuple(bounds[key])
        metadata["bounds"] = Bounds(**bounds)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def option_bounds(config_class: type, name: str) -> Bounds | None:
    """The :class:`Bounds` of option ``name`` (its own, else the nearest base's), or ``None``."""
    for klass in config_class.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and "bounds" in declared.metadata:
            return declared.metadata["bounds"]
    return None


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
    steps: int = option(3000, "Number of optimisation steps.", group="training", minimum=1)
    batch_size: int = option(4096, "Rays (ray models), images (image models) or samples per step.", group="training", minimum=1)
    seed: int = option(0, "Random seed; CPU runs are bit-reproducible for a given seed.", group="training", minimum=0)
    data: str = option("", "Path of the training data (set by `tensorfield train --data`; may be empty for methods that make their own).", group="data")
    log_every: int = option(50, "Write a metrics.jsonl line every N steps (and at the end).", group="logging", minimum=1)
    eval_every: int = option(0, "Evaluate on the test split (val if there is none) every N steps (0 = only at the end).", group="logging", minimum=0)
    eval_max_images: int = option(0, "Evaluate on at most this many test images (0 = all).", group="logging", minimum=0)
    checkpoint_every: int = option(1000, "Write a checkpoint every N steps (and always at the end; 0 = only at the end).", group="logging", minimum=0)
    keep_checkpoints: int = option(3, "Keep the newest N checkpoints (0 = all).", group="logging", minimum=0)
    tensorboard: bool = option(False, "Also log to TensorBoard (needs the tensorboard package).", group="logging")


@dataclass
class ImageDataConfig:
    """Loading posed images (mixin of image methods' configs)."""

    downscale: float = option(1.0, "Divide image resolution by this factor at load time.", group="data", above=0)
    background: str = option("white", "Background the RGBA images are composited on: white, black or random.", group="data", choices=BACKGROUNDS)
    normalize: str = option("auto", "Scene normalisation into the model's box: auto (none for Blender / D-NeRF / N3V, poses for COLMAP / nerfstudio), none, poses (centre the cameras) or focus (centre their common focus).", group="data", choices=("auto", "none", "poses", "focus"))


@dataclass
class VideoDataConfig:
    """Loading multi-view video (N3V) scenes (mixin of image methods' configs)."""

    frame_stride: int = option(1, "Video scenes (N3V): keep every N-th frame.", group="video data", minimum=1)
    max_frames: int = option(0, "Video scenes (N3V): keep at most this many frames per camera (0 = all).", group="video data", minimum=0)
    time_range: list[float] = option([], "Video scenes (N3V): [start, end] in seconds to load (empty = all).", group="video data", minimum=0, lengths=(0, 2), ascending=True)
    test_cameras: list[str] = option([], "Video scenes (N3V): held-out cameras by name, e.g. [cam00] (empty = cam00).", group="video data")


@dataclass
class RenderConfig:
    """Rendering full images (mixin of image methods' configs)."""

    render_chunk: int = option(16384, "Rays per chunk when rendering full images (bigger chunks: fewer marching rounds of fixed cost; 4096 -> 16384 is ~10% faster on a 2-core CPU).", group="rendering", minimum=1)


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
