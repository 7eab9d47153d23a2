"""Loading, validating, documenting and saving method configs.

A run is configured by one flat dataclass per method (a subclass of
:class:`tensorfield.fields.config.MethodConfig`, looked up in the method registry). Values come,
in increasing priority, from the dataclass defaults, a YAML file (which names the method with
``method:``) and ``key=value`` command-line overrides. Merging uses omegaconf *structured
configs*, so unknown keys and wrongly typed values are rejected; every such problem becomes a
one-line :class:`ConfigError` that names the file (or the override) and the key::

    configs/x.yaml: unknown key 'lr_gird' for method tensorf_vm (did you mean 'lr_grid'?)
    override steps=abc: expected int, got 'abc'

Override values are parsed as YAML, so ``upsample_steps=[10,20]``, ``tensorboard=true`` and
``maybe=null`` work as expected. Keys are flat; ``group.key=value`` (``rendering.render_chunk=4096``,
``data.background=black``, ``video_data.frame_stride=2``) is an alias of ``key=value`` when ``key``
is listed under that group by ``--help-config`` (spaces in a group name become ``_``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tempfile
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from tensorfield.engine.files import publish
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError
from tensorfield.fields import registry
from tensorfield.fields.config import LEGACY_DEFAULTS, MethodConfig, option_bounds, option_groups


class ConfigError(ValueError):
    """A configuration problem, described in one line naming the file or override and the key."""


# ------------------------------------------------------------------------------------ loading
def load_config(
    path: str | os.PathLike | None,
    overrides: Sequence[str] = (),
    method: str | None = None,
) -> MethodConfig:
    """Build the typed config of a run from a YAML file and ``key=value`` overrides.

    The method is, in decreasing priority, ``method``, a ``method=...`` override, or the YAML
    file's ``method:`` key. Its config dataclass comes from
    :func:`tensorfield.fields.registry.get_method`.

    Args:
        path: YAML file, or ``None`` to start from the method's defaults.
        overrides: ``key=value`` strings applied in order after the file (values parsed as YAML).
        method: registered method name; overrides the file's ``method:``.

    Returns:
        An instance of the method's config dataclass with ``method`` set.

    Raises:
        ConfigError: unreadable/invalid YAML, no or unknown method, unknown key, bad type.
    """
    source = str(path) if path is not None else "config"
    file_values: dict[str, Any] = {}
    if path is not None:
        file_values = _read_yaml(Path(path))
    override_values = [_parse_override(text) for text in overrides]

    chosen = method
    if chosen is None:
        for text, values in reversed(override_values):
            if "method" in values:
                chosen = str(values["method"])
                break
    if chosen is None:
        chosen = file_values.get("method")
    if not chosen:
        where = f"{source}: no 'method:' key" if path is not None else "config: no method given"
        raise ConfigError(f"{where} (e.g. method: tensorf_vm; known: {_known_methods()})")
    chosen = str(chosen)
    config_class = _config_class(chosen, source)

    merged = OmegaConf.structured(config_class)
    file_values = {**file_values, "method": chosen}
    merged = _merge(merged, file_values, source, chosen, config_class)
    for text, values in override_values:
        values = _ungroup(text, values, config_class, chosen)
        merged = _merge(merged, values, f"override {text}", chosen, config_class)
    merged.method = chosen
    return _to_object(merged, source)


def config_from_dict(
    values: dict,
    overrides: Sequence[str] = (),
    source: str = "checkpoint",
) -> MethodConfig:
    """Rebuild a config from a plain dict (e.g. the one stored in a checkpoint), then override.

    Args:
        values: mapping with at least ``method``.
        overrides: ``key=value`` strings applied on top (e.g. ``steps=30000`` to train longer).
        source: how errors name the origin of ``values``.

    Raises:
        ConfigError: as :func:`load_config`.
    """
    chosen = values.get("method")
    for text in overrides:
        parsed = _parse_override(text)[1]
        if "method" in parsed:
            raise ConfigError(f"override {text}: the method of an existing run cannot be changed")
    if not chosen:
        raise ConfigError(f"{source}: no 'method' in the stored config")
    config_class = _config_class(str(chosen), source)
    names = {item.name for item in dataclasses.fields(config_class)}
    # configs stored before the option groups were flat and carried every image option; a
    # coordinate method never read them, so their (default) values are dropped
    values = {key: value for key, value in values.items() if key in names or key not in LEGACY_DEFAULTS}
    merged = _merge(OmegaConf.structured(config_class), values, source, chosen, config_class)
    for text in overrides:
        parsed = _ungroup(text, _parse_override(text)[1], config_class, chosen)
        merged = _merge(merged, parsed, f"override {text}", chosen, config_class)
    return _to_object(merged, source)


def validate_config(config: MethodConfig, source: str = "config") -> MethodConfig:
    """Check every option of ``config`` against the bounds its dataclass declares
    (:class:`tensorfield.fields.config.Bounds`); :func:`load_config` and :func:`config_from_dict`
    already do this per file and override, so this is for configs built in code.

    Returns:
        ``config`` itself.

    Raises:
        ConfigError: ``"<source>: key 'steps' must be >= 1, got 0"``.
    """
    for item in dataclasses.fields(config):
        _check_value(type(config), item.name, getattr(config, item.name), source)
    return config


def config_to_dict(config: MethodConfig) -> dict:
    """Plain-container copy of ``config`` (tuples become lists), safe for JSON and checkpoints."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def save_config(config: MethodConfig, path: str | os.PathLike) -> Path:
    """Write the resolved ``config`` as YAML (atomically), loadable again by :func:`load_config`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        f"# Resolved configuration of a tensorfield run (method {config.method}).\n"
        + OmegaConf.to_yaml(OmegaConf.structured(config))
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------------------ help
GROUP_ORDER = (
    "training",
    "data",
    "video data",
    "model",
    "initialisation",
    "ray marching",
    "alpha mask",
    "optimisation",
    "densification",
    "rasteriser",
    "rendering",
    "logging",
)
"""Order of the ``--help-config`` headings; other groups follow in declaration order."""


def config_help(config_class: type) -> str:
    """Human-readable list of a config dataclass's options (``tensorfield train --help-config``).

    Options are listed under one ``[group]`` heading per group (:data:`GROUP_ORDER`, then any
    other group in declaration order), each as ``name: type = default`` and its one-line help,
    in declaration order within the group.
    """
    hints = _type_hints(config_class)
    fields = {item.name: item for item in dataclasses.fields(config_class)}
    groups = option_groups(config_class)
    order = [g for g in GROUP_ORDER if g in groups] + [g for g in groups if g not in GROUP_ORDER]
    lines = [
        f"Options of {config_class.__name__} (set them in YAML or override with key=value or group.key=value):"
    ]
    for group in order:
        lines.append(f"[{group}]")
        for name in groups[group]:
            item = fields[name]
            if item.default is not dataclasses.MISSING:
                default = item.default
            elif item.default_factory is not dataclasses.MISSING:
                default = item.default_factory()
            else:
                default = "(required)"
            bounds = option_bounds(config_class, name)
            accepted = f"  ({bounds.describe()})" if bounds is not None and bounds.describe() else ""
            lines.append(f"  {item.name}: {_type_name(hints.get(item.name, Any))} = {_show(default)}{accepted}")
            help_text = item.metadata.get("help", "")
            if help_text:
                lines.append(f"      {help_text}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ internals
def _known_methods() -> str:
    return ", ".join(sorted(registry.methods()))


def _config_class(method: str, source: str) -> type:
    try:
        spec = registry.get_method(method)
    except registry.RegistryError as err:
        if "unknown method" in str(err):
            raise ConfigError(f"{source}: unknown method '{method}' (known: {_known_methods()})") from None
        raise ConfigError(f"{source}: {err}") from None
    config_class = spec.config_class()
    if not (dataclasses.is_dataclass(config_class) and issubclass(config_class, MethodConfig)):
        raise ConfigError(f"{source}: method '{method}' has no MethodConfig dataclass")
    return config_class


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config file ({_one_line(err)})") from None
    try:
        # omegaconf's YAML loader (unlike yaml.safe_load) reads 1e-3 as a float
        loaded = OmegaConf.create(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or _one_line(err)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: invalid config ({_one_line(err)})") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of options at the top level, got a list")
    return OmegaConf.to_container(loaded, resolve=False)


def _parse_override(text: str) -> tuple[str, dict[str, Any]]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text}: expected key=value")
    try:
        values = OmegaConf.to_container(OmegaConf.from_dotlist([f"{key}={raw}"]))
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError(f"override {text}: cannot parse value ({_one_line(err)})") from None
    return text, values


def _ungroup(text: str, values: dict[str, Any], config_class: type, method: str) -> dict[str, Any]:
    """Resolve a ``group.key=value`` override to ``key=value`` (one-line error if not in the group)."""
    key = text.partition("=")[0].strip()
    head, dot, rest = key.partition(".")
    if not dot:
        return values
    groups = {name.replace(" ", "_"): members for name, members in option_groups(config_class).items()}
    names = {item.name for item in dataclasses.fields(config_class)}
    if head not in groups:
        if head in names:  # a dotted path into an option's own value, as omegaconf reads it
            return values
        raise ConfigError(f"override {text}: unknown group '{head}' for method {method} (groups: {', '.join(groups)})")
    member = rest.partition(".")[0].partition("[")[0]
    if member not in groups[head]:
        owner = next((g for g, members in groups.items() if member in members), None)
        hint = f"; '{member}' is in group '{owner}'" if owner else ""
        raise ConfigError(f"override {text}: '{member}' is not an option of group '{head}' for method {method}{hint}")
    return values[head]


def _merge(base: DictConfig, values: dict, source: str, method: str, config_class: type) -> DictConfig:
    merged = _merge_typed(base, values, source, method, config_class)
    # checked per source, so the message names the file or override that set the bad value
    for key in values:
        if key in merged:
            value = merged[key]
            _check_value(config_class, key, OmegaConf.to_container(value) if OmegaConf.is_config(value) else value, source)
    return merged


def _check_value(config_class: type, key: str, value: Any, source: str) -> None:
    bounds = option_bounds(config_class, key)
    problem = bounds.problem(value) if bounds is not None else None
    if problem is None:
        return
    if source.startswith("override "):
        raise ConfigError(f"{source}: {key} {problem}")
    raise ConfigError(f"{source}: key '{key}' {problem}")


def _merge_typed(base: DictConfig, values: dict, source: str, method: str, config_class: type) -> DictConfig:
    try:
        return OmegaConf.merge(base, values)
    except ConfigKeyError as err:
        key = str(getattr(err, "full_key", None) or getattr(err, "key", "?"))
        names = [item.name for item in dataclasses.fields(config_class)]
        close = difflib.get_close_matches(key.split(".")[0], names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{source}: unknown key '{key}' for method {method}{hint}") from None
    except ValidationError as err:
        full_key = str(getattr(err, "full_key", None) or getattr(err, "key", "?"))
        root = full_key.split(".")[0].split("[")[0]
        expected = _type_name(_type_hints(config_class).get(root, Any))
        value = _lookup(values, full_key)
        prefix = source if source.startswith("override ") else f"{source}: key '{full_key}'"
        got = "" if source.startswith("override ") else f", got {value!r}"
        if source.startswith("override ") and full_key != root:
            prefix = f"{source}: {full_key}"
        raise ConfigError(f"{prefix}: expected {expected}{got}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {_one_line(err)}") from None


def _to_object(merged: DictConfig, source: str) -> MethodConfig:
    try:
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {_one_line(err)}") from None
    except (TypeError, ValueError) as err:  # a config's own __post_init__ validation
        raise ConfigError(f"{source}: {_one_line(err)}") from None


def _lookup(values: dict, full_key: str) -> Any:
    node: Any = values
    for part in full_key.replace("[", ".").replace("]", "").split("."):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return None
    return node


def _type_hints(config_class: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(config_class)
    except Exception:  # noqa: BLE001 - an unresolvable annotation only degrades help text
        return {}


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]" if args else name
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple):
        return str(list(value))
    return str(value)


def _one_line(err: BaseException | str) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
