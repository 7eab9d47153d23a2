"""Declared value ranges of config options (fields.config.Bounds), checked where configs are read."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

import pytest
from tensorfield.engine.config import ConfigError, config_from_dict, config_help, config_to_dict, load_config, validate_config
from tensorfield.fields import registry
from tensorfield.fields.config import ImageMethodConfig, option_bounds
from tensorfield.fields.gaussians import GaussianConfig
from tensorfield.fields.tensorf import TensoRFConfig

# options whose every value of the declared type is meaningful
FREE = {"method", "data", "tensorboard", "test_cameras", "density_shift", "lr_upsample_reset", "antialiased"}


@pytest.mark.parametrize("config_class", [ImageMethodConfig, TensoRFConfig, GaussianConfig])
def test_every_option_declares_its_accepted_values(config_class):
    unbounded = [item.name for item in dataclasses.fields(config_class) if option_bounds(config_class, item.name) is None]
    assert sorted(set(unbounded) - FREE) == []


@pytest.mark.parametrize("method", sorted(registry.methods()))
def test_defaults_of_every_method_are_valid(method):
    config = load_config(None, [], method=method)
    assert validate_config(config) is config


def test_packaged_configs_are_valid():
    folder = Path(str(resources.files("tensorfield.configs")))
    paths = sorted(folder.glob("*.yaml"))
    assert len(paths) >= 5
    for path in paths:
        load_config(path, [])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("steps=-5", "steps must be >= 1, got -5"),
        ("steps=0", "steps must be >= 1, got 0"),
        ("batch_size=0", "batch_size must be >= 1, got 0"),
        ("background=purple", "background must be one of 'white', 'black', 'random', got 'purple'"),
        ("lr_grid=-0.1", "lr_grid must be >= 0, got -0.1"),
        ("lr_decay_steps=0", "lr_decay_steps must be >= 1 (or -1), got 0"),
        ("upsample_steps=[300,200]", "upsample_steps must be sorted in increasing order, got [300, 200]"),
        ("alpha_mask_steps=[-1,20]", "alpha_mask_steps must be >= 0, got -1 (in [-1, 20])"),
        ("density_components=[4,4]", "density_components must have 3 values, got 2"),
        ("adam_betas=[0.9,1.0]", "adam_betas must be < 1, got 1.0 (in [0.9, 1.0])"),
        ("alpha_mask_kernel=4", "alpha_mask_kernel must be odd, got 4"),
        ("transmittance_threshold=1.5", "transmittance_threshold must be <= 1, got 1.5"),
        ("mode=xy", "mode must be one of '', 'vm', 'cp', got 'xy'"),
        ("time_range=[2.0,1.0]", "time_range must be sorted in increasing order, got [2.0, 1.0]"),
        ("frame_stride=0", "frame_stride must be >= 1, got 0"),
        ("render_chunk=0", "render_chunk must be >= 1, got 0"),
        ("rendering.render_chunk=-1", "render_chunk must be >= 1, got -1"),
        ("downscale=0", "downscale must be > 0, got 0.0"),
        ("keep_checkpoints=-1", "keep_checkpoints must be >= 0, got -1"),
        ("step_ratio=nan", "step_ratio must be a number, got nan"),
    ],
)
def test_out_of_range_override_is_one_line_naming_it(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override], method="tensorf_vm")
    assert str(err.value) == f"override {override}: {expected}"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("sh_degree=4", "sh_degree must be <= 3, got 4"),
        ("init_opacity=1.0", "init_opacity must be < 1, got 1.0"),
        ("gaussian_dim=2", "gaussian_dim must be one of 0, 3, 4, got 2"),
        ("backend=vulkan", "backend must be one of 'auto', 'gsplat', 'cpu', 'torch', 'reference', got 'vulkan'"),
        ("max_gaussians=0", "max_gaussians must be >= 1 (or -1), got 0"),
        ("ssim_weight=-0.2", "ssim_weight must be >= 0, got -0.2"),
    ],
)
def test_gaussian_ranges(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override], method="gaussians3d")
    assert str(err.value) == f"override {override}: {expected}"
    load_config(None, ["max_gaussians=-1", "lr_times=-1", "lr_means_steps=-1"], method="gaussians4d")  # the special -1


def test_file_value_names_the_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method: tensorf_vm\nsteps: 100\nbatch_size: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, [])
    assert str(err.value) == f"{path}: key 'batch_size' must be >= 1, got 0"
    # a later override that fixes the value does not excuse the file: the file is wrong
    with pytest.raises(ConfigError):
        load_config(path, ["batch_size=8"])


def test_stored_config_and_code_built_configs_are_checked():
    values = config_to_dict(load_config(None, [], method="tensorf_vm"))
    with pytest.raises(ConfigError, match=r"^ckpt: key 'steps' must be >= 1, got 0$"):
        config_from_dict({**values, "steps": 0}, source="ckpt")
    with pytest.raises(ConfigError, match=r"^override steps=-1: steps must be >= 1, got -1$"):
        config_from_dict(values, ["steps=-1"], source="ckpt")
    with pytest.raises(ConfigError, match=r"^config: key 'eval_every' must be >= 0, got -3$"):
        validate_config(TensoRFConfig(method="tensorf_vm", eval_every=-3))


def test_help_lists_the_accepted_values():
    text = config_help(TensoRFConfig)
    assert "  steps: int = 30000  (>= 1)" in text
    assert "  lr_decay_steps: int = -1  (>= 1, or -1)" in text
    assert "  background: str = 'white'  (one of 'white', 'black', 'random')" in text
    assert "  upsample_steps: list[int] = [2000, 3000, 4000, 5500, 7000]  (>= 0, sorted)" in text


def test_backgrounds_match_the_loader():
    from tensorfield.datasets.scene import BACKGROUNDS as LOADER
    from tensorfield.fields.config import BACKGROUNDS

    assert set(BACKGROUNDS) == set(LOADER)
