"""The method registry: method name -> (config class, model factory, data factory).

A method is one :class:`MethodSpec`: import paths (``"module:attribute"``) of its config dataclass,
its model (a :class:`~tensorfield.fields.base.Field` subclass or any callable ``(config,
scene_info) -> Field``) and its data factory (``(config, path, scene=None) ->``
:class:`~tensorfield.fields.base.TrainingData`). Import paths keep ``tensorfield methods`` from
importing torch-heavy modules.

Methods come from three places, later ones winning on a name clash:

1. the built-ins below;
2. the ``tensorfield.methods`` entry-point group of installed packages (a plugin's
   ``pyproject.toml``: ``[project.entry-points."tensorfield.methods"] my_method =
   "my_pkg.my_method:SPEC"``, the attribute a :class:`MethodSpec` or a list of them);
3. the ``TENSORFIELD_METHODS`` environment variable: comma-separated ``module:attribute`` of
   specs (a method under development, tests).

So adding a method is one file that defines its config, model and data plus ``SPEC``, and one
YAML in ``configs/``; a built-in method also adds its line to :data:`BUILTIN`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from types import MappingProxyType

ENTRY_POINT_GROUP = "tensorfield.methods"
ENVIRONMENT_VARIABLE = "TENSORFIELD_METHODS"


class RegistryError(KeyError):
    """An unknown method or a plugin that cannot be loaded (one line)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _load(path: str):
    module, _, attr = path.partition(":")
    try:
        value = importlib.import_module(module)
        for part in attr.split(".") if attr else []:
            value = getattr(value, part)
    except (ImportError, AttributeError) as err:
        raise RegistryError(f"cannot load '{path}' ({err})") from None
    return value


@dataclass(frozen=True)
class MethodSpec:
    """One method.

    Attributes:
        name: the name configs use (``method: NAME``).
        config: ``"module:ConfigClass"`` (a :class:`~tensorfield.fields.config.MethodConfig`).
        model: ``"module:ModelClass"`` or a factory ``(config, scene_info) -> Field``.
        summary: one line for ``tensorfield methods``.
        data: ``"module:factory"``, ``(config, path, scene=None) -> TrainingData``.
    """

    name: str
    config: str
    model: str
    summary: str
    data: str = "tensorfield.engine.data:ray_data"

    def config_class(self):
        return _load(self.config)

    def model_class(self):
        return _load(self.model)

    def data_factory(self):
        return _load(self.data)


_BUILTIN_SPECS = (
    MethodSpec(
        "tensorf_vm",
        "tensorfield.fields.tensorf:TensoRFConfig",
        "tensorfield.fields.tensorf:TensoRF",
        "TensoRF with vector-matrix (plane x line) factorised grids.",
        "tensorfield.engine.data:ray_data",
    ),
    MethodSpec(
        "tensorf_cp",
        "tensorfield.fields.tensorf:TensoRFConfig",
        "tensorfield.fields.tensorf:TensoRF",
        "TensoRF with CANDECOMP/PARAFAC (vector x vector x vector) factorised grids.",
        "tensorfield.engine.data:ray_data",
    ),
    MethodSpec(
        "strivec",
        "tensorfield.fields.strivec:StrivecConfig",
        "tensorfield.fields.strivec:Strivec",
        "Strivec: sparse multi-scale local CP tri-vector tensors placed on a coarse geometry or point cloud.",
        "tensorfield.engine.data:ray_data",
    ),
    MethodSpec(
        "gaussians3d",
        "tensorfield.fields.gaussians:GaussianConfig",
        "tensorfield.fields.gaussians:build_gaussians",
        "3D Gaussian splatting (static scenes): SH colour, densification, opacity reset.",
        "tensorfield.engine.data:image_data",
    ),
    MethodSpec(
        "gaussians4d",
        "tensorfield.fields.gaussians:GaussianConfig",
        "tensorfield.fields.gaussians:build_gaussians",
        "4D Gaussian splatting (Yang et al. 2024): space-time Gaussians sliced per frame, spherindrical harmonics.",
        "tensorfield.engine.data:image_data",
    ),
    MethodSpec(
        "einfield",
        "tensorfield.fields.einfield:EinFieldConfig",
        "tensorfield.fields.einfield:build_einfield",
        "Einstein fields: an MLP spacetime metric with Sobolev training; curvature, slices and lensed renders from it.",
        "tensorfield.fields.einfield_targets:einfield_data",
    ),
    MethodSpec("migs", "tensorfield.fields.migs:MIGSConfig", "tensorfield.fields.migs:build_migs", "MIGS: multi-identity Gaussian avatars, one CP/Tucker tensor of every subject's Gaussians, posed by learned LBS plus a non-rigid MLP.", "tensorfield.fields.migs_data:migs_data"),
)

BUILTIN: Mapping[str, MethodSpec] = MappingProxyType({spec.name: spec for spec in _BUILTIN_SPECS})
"""The methods shipped with tensorfield (read-only)."""

METHODS: dict[str, MethodSpec] = dict(BUILTIN)
"""Methods registered in code (built-ins, plus what tests add with ``monkeypatch.setitem``);
:func:`methods` adds the plugins on top."""


def _specs_from(value, origin: str) -> list[MethodSpec]:
    specs = list(value) if isinstance(value, (list, tuple)) else [value]
    for spec in specs:
        if not isinstance(spec, MethodSpec):
            raise RegistryError(f"{origin}: expected a MethodSpec, got {type(spec).__name__}")
    return specs


def plugin_methods() -> dict[str, MethodSpec]:
    """Methods from the entry-point group and the environment variable (see module docstring)."""
    found: dict[str, MethodSpec] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        for spec in _specs_from(_load(entry.value), f"entry point {entry.name}"):
            found[spec.name] = spec
    for path in filter(None, (part.strip() for part in os.environ.get(ENVIRONMENT_VARIABLE, "").split(","))):
        for spec in _specs_from(_load(path), f"{ENVIRONMENT_VARIABLE} {path}"):
            found[spec.name] = spec
    return found


def methods() -> dict[str, MethodSpec]:
    """Every method available now: :data:`METHODS` plus the plugins."""
    return {**METHODS, **plugin_methods()}


def get_method(name: str) -> MethodSpec:
    """The spec of ``name``.

    Raises:
        RegistryError: unknown name (the message lists the known ones).
    """
    available = methods()
    try:
        return available[name]
    except KeyError:
        known = ", ".join(sorted(available))
        raise RegistryError(f"unknown method '{name}' (known: {known})") from None
