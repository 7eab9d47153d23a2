"""The method registry: method name -> (config class, model class).

Adding a method is one new file in ``fields/`` plus one YAML in ``configs/`` and one line here.
Entries are import paths so that listing methods never imports torch-heavy modules.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config: str  # "module:ConfigClass"
    model: str  # "module:ModelClass"
    summary: str

    @staticmethod
    def _load(path: str):
        module, _, attr = path.partition(":")
        return getattr(importlib.import_module(module), attr)

    def config_class(self):
        return self._load(self.config)

    def model_class(self):
        return self._load(self.model)


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "tensorf_vm",
            "tensorfield.fields.tensorf:TensoRFConfig",
            "tensorfield.fields.tensorf:TensoRF",
            "TensoRF with vector-matrix (plane x line) factorised grids.",
        ),
        MethodSpec(
            "tensorf_cp",
            "tensorfield.fields.tensorf:TensoRFConfig",
            "tensorfield.fields.tensorf:TensoRF",
            "TensoRF with CANDECOMP/PARAFAC (vector x vector x vector) factorised grids.",
        ),
        MethodSpec(
            "gaussians3d",
            "tensorfield.fields.gaussians:GaussianConfig",
            "tensorfield.fields.gaussians:GaussianSplatting",
            "3D Gaussian splatting (static scenes): SH colour, densification, opacity reset.",
        ),
        MethodSpec(
            "gaussians4d",
            "tensorfield.fields.gaussians:GaussianConfig",
            "tensorfield.fields.gaussians:GaussianSplatting",
            "4D Gaussian splatting (Yang et al. 2024): space-time Gaussians sliced per frame, spherindrical harmonics.",
        ),
    )
}


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(sorted(METHODS))
        raise KeyError(f"unknown method '{name}' (known: {known})") from None
