"""nerfstudio plugin: this package's ray-marched methods as ``ns-train`` methods.

Registered in ``pyproject.toml`` under the entry-point group ``nerfstudio.method_configs``
(``pip install 'tensorfield[nerfstudio]'``), so ``ns-train tensorf-vm-tf --data DATA`` trains
tensorfield's TensoRF-VM inside nerfstudio's trainer, data manager and viewer.

nerfstudio loads each entry point (``tensorfield.app.nerfstudio_plugin:tensorf_vm_tf``) and expects
a ``MethodSpecification``. Those are built on first access (module ``__getattr__``), so importing
this module never imports nerfstudio; without nerfstudio the access raises a one-line
:class:`ImportError` naming the package and the install command.

The adapter (:func:`build_model_class`) is a nerfstudio ``Model`` that owns one tensorfield field
built from the method's registered config (nerfstudio's ``scene_box`` as the field's ``aabb``):
``get_outputs`` renders the ray bundle with the field's ``render_rays``, and ``get_loss_dict``
runs the field's own :meth:`~tensorfield.fields.base.Field.training_step` on the bundle's rays and
the batch's colours, so the loss, regularisers and schedule hooks are tensorfield's. Only
ray-batch methods are offered (Gaussians train on whole images, which nerfstudio's ray data
manager does not hand out).
"""

from __future__ import annotations

import math

#: nerfstudio method name -> (tensorfield method, description)
METHODS = {
    "tensorf-vm-tf": ("tensorf_vm", "tensorfield's TensoRF-VM (vector-matrix factorised radiance field)"),
    "tensorf-cp-tf": ("tensorf_cp", "tensorfield's TensoRF-CP (CP-factorised radiance field)"),
}
INSTALL = "pip install 'tensorfield[nerfstudio]'"


def _require_nerfstudio():
    try:
        import nerfstudio  # noqa: F401
    except ImportError:
        raise ImportError(f"the nerfstudio plugin needs the nerfstudio package; install it with: {INSTALL}") from None


def build_model_class():
    """The nerfstudio ``(ModelConfig, Model)`` adapter classes (imports nerfstudio)."""
    _require_nerfstudio()
    from dataclasses import dataclass, field

    import torch
    from nerfstudio.models.base_model import Model, ModelConfig
    from tensorfield.engine.config import load_config
    from tensorfield.fields.base import RayBatch, SceneInfo
    from tensorfield.fields.registry import get_method

    @dataclass
    class TensorfieldModelConfig(ModelConfig):
        """A tensorfield method inside nerfstudio."""

        _target: type = field(default_factory=lambda: TensorfieldModel)
        method: str = "tensorf_vm"
        """Registered tensorfield method."""
        overrides: tuple = ()
        """tensorfield config overrides, ``key=value``."""

    class TensorfieldModel(Model):
        config: TensorfieldModelConfig

        def populate_modules(self):
            super().populate_modules()
            method_config = load_config(None, list(self.config.overrides), method=self.config.method)
            aabb = self.scene_box.aabb.float()
            diagonal = float((aabb[1] - aabb[0]).norm())
            info = SceneInfo(aabb=aabb, near=0.01 * diagonal, far=2.0 * diagonal, num_train_images=self.num_train_data)
            self.field = get_method(self.config.method).model_class()(method_config, info)
            self.background = torch.ones(3)
            self.step = 0

        def get_param_groups(self):
            return {"tensorfield": list(self.field.parameters())}

        def get_outputs(self, ray_bundle):
            origins = ray_bundle.origins.reshape(-1, 3)
            directions = ray_bundle.directions.reshape(-1, 3)
            with torch.no_grad():
                out = self.field.render_rays(origins, directions, background=self.background.to(origins))
            return {"rgb": out.rgb, "depth": out.depth[:, None], "accumulation": out.alpha[:, None],
                    "origins": origins, "directions": directions}  # fmt: skip

        def get_metrics_dict(self, outputs, batch):
            mse = torch.mean((outputs["rgb"] - batch["image"][..., :3].to(outputs["rgb"])) ** 2)
            return {"psnr": -10.0 * torch.log10(mse.clamp_min(1e-10))}

        def get_loss_dict(self, outputs, batch, metrics_dict=None):
            origins = outputs["origins"]
            rays = RayBatch(origins, outputs["directions"], batch["image"][..., :3].to(origins),
                            torch.full((len(origins),), math.nan, device=origins.device), self.background.to(origins))  # fmt: skip
            self.step += 1
            return {"tensorfield_loss": self.field.training_step(rays, self.step).loss}

        def get_image_metrics_and_images(self, outputs, batch):
            metrics = {key: float(value) for key, value in self.get_metrics_dict(outputs, batch).items()}
            return metrics, {"img": outputs["rgb"]}

    return TensorfieldModelConfig, TensorfieldModel


def method_specification(name: str):
    """The nerfstudio ``MethodSpecification`` of ``name`` (a key of :data:`METHODS`)."""
    if name not in METHODS:
        raise KeyError(f"no nerfstudio method {name!r} (available: {', '.join(METHODS)})")
    _require_nerfstudio()
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from nerfstudio.engine.optimizers import AdamOptimizerConfig
    from nerfstudio.engine.trainer import TrainerConfig
    from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
    from nerfstudio.plugins.types import MethodSpecification
    from tensorfield.engine.config import load_config

    method, description = METHODS[name]
    defaults = load_config(None, [], method=method)
    model_config_class, _ = build_model_class()
    config = TrainerConfig(
        method_name=name,
        max_num_iterations=int(defaults.steps),
        pipeline=VanillaPipelineConfig(
            datamanager=VanillaDataManagerConfig(
                dataparser=NerfstudioDataParserConfig(), train_num_rays_per_batch=int(defaults.batch_size)
            ),
            model=model_config_class(method=method),
        ),
        # tensorfield's own per-group rates are applied by the field; nerfstudio's optimiser gets
        # the grid rate (the largest) for the one group the adapter exposes
        optimizers={"tensorfield": {"optimizer": AdamOptimizerConfig(lr=float(getattr(defaults, "lr_grid", 0.02))), "scheduler": None}},
    )
    return MethodSpecification(config=config, description=description)


def __getattr__(attribute: str):
    """``tensorf_vm_tf`` -> the spec of ``tensorf-vm-tf`` (what the entry points name)."""
    name = attribute.replace("_", "-")
    if name in METHODS:
        return method_specification(name)
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


__all__ = ["INSTALL", "METHODS", "build_model_class", "method_specification"]
