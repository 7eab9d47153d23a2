"""The nerfstudio entry-point module (app/nerfstudio_plugin.py), tested without nerfstudio.

nerfstudio is not installed here (it pins gsplat 1.4.0 and a CUDA torch), so the spec-building
and the Model adapter run against a tiny stand-in ``nerfstudio`` package put in ``sys.modules``:
plain dataclasses with the names and fields the plugin uses. That checks the plugin's own logic
(names, configs, the adapter calling tensorfield's field), not nerfstudio's behaviour.
"""

from __future__ import annotations

import importlib
import sys
import tomllib
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _fake_nerfstudio(monkeypatch):
    @dataclass
    class ModelConfig:
        _target: type = object

    class Model(torch.nn.Module):
        def __init__(self, config, scene_box, num_train_data):
            super().__init__()
            self.config, self.scene_box, self.num_train_data = config, scene_box, num_train_data
            self.populate_modules()

        def populate_modules(self):
            pass  # the stand-in Model builds nothing; the adapter under test overrides this

    @dataclass
    class Config:  # stands for every nerfstudio config dataclass the plugin builds
        kwargs: dict = field(default_factory=dict)

    def config_class(name):
        return type(name, (), {"__init__": lambda self, **kwargs: self.__dict__.update(kwargs)})

    modules = {
        "nerfstudio": {},
        "nerfstudio.models": {},
        "nerfstudio.models.base_model": {"Model": Model, "ModelConfig": ModelConfig},
        "nerfstudio.data": {},
        "nerfstudio.data.datamanagers": {},
        "nerfstudio.data.datamanagers.base_datamanager": {"VanillaDataManagerConfig": config_class("VanillaDataManagerConfig")},
        "nerfstudio.data.dataparsers": {},
        "nerfstudio.data.dataparsers.nerfstudio_dataparser": {"NerfstudioDataParserConfig": config_class("NerfstudioDataParserConfig")},
        "nerfstudio.engine": {},
        "nerfstudio.engine.optimizers": {"AdamOptimizerConfig": config_class("AdamOptimizerConfig")},
        "nerfstudio.engine.trainer": {"TrainerConfig": config_class("TrainerConfig")},
        "nerfstudio.pipelines": {},
        "nerfstudio.pipelines.base_pipeline": {"VanillaPipelineConfig": config_class("VanillaPipelineConfig")},
        "nerfstudio.plugins": {},
        "nerfstudio.plugins.types": {"MethodSpecification": config_class("MethodSpecification")},
    }  # fmt: skip
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)


def test_without_nerfstudio_a_one_line_error_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nerfstudio", None)  # import nerfstudio -> ImportError
    plugin = importlib.import_module("tensorfield.app.nerfstudio_plugin")  # importing needs nothing
    with pytest.raises(ImportError) as info:
        plugin.tensorf_vm_tf
    message = str(info.value)
    assert "\n" not in message and "nerfstudio" in message and "pip install 'tensorfield[nerfstudio]'" in message
    with pytest.raises(AttributeError):
        plugin.not_a_method


def test_entry_points_name_every_method():
    plugin = importlib.import_module("tensorfield.app.nerfstudio_plugin")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["nerfstudio.method_configs"]
    assert declared == {name: f"tensorfield.app.nerfstudio_plugin:{name.replace('-', '_')}" for name in plugin.METHODS}


def test_specs_and_adapter_with_a_stand_in_nerfstudio(monkeypatch):
    _fake_nerfstudio(monkeypatch)
    plugin = importlib.import_module("tensorfield.app.nerfstudio_plugin")
    spec = plugin.tensorf_vm_tf
    config = spec.config
    assert config.method_name == "tensorf-vm-tf" and "TensoRF-VM" in spec.description
    model_config = config.pipeline.model
    assert model_config.method == "tensorf_vm" and set(config.optimizers) == {"tensorfield"}

    scene_box = types.SimpleNamespace(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]))
    model = model_config._target(model_config, scene_box=scene_box, num_train_data=4)
    assert torch.equal(model.field.aabb.cpu(), scene_box.aabb)
    generator = torch.Generator().manual_seed(0)
    bundle = types.SimpleNamespace(
        origins=torch.tensor([[0.0, 0.0, -3.0]]).repeat(64, 1),
        directions=torch.nn.functional.normalize(torch.randn(64, 3, generator=generator) * 0.1 + torch.tensor([0, 0, 1.0]), dim=-1),
    )
    outputs = model.get_outputs(bundle)
    assert outputs["rgb"].shape == (64, 3) and outputs["depth"].shape == (64, 1)
    batch = {"image": torch.rand(64, 3, generator=generator)}
    loss = model.get_loss_dict(outputs, batch)["tensorfield_loss"]
    parameters = model.get_param_groups()["tensorfield"]
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in parameters)
    metrics, images = model.get_image_metrics_and_images(outputs, batch)
    assert "psnr" in metrics and images["img"].shape == (64, 3)
