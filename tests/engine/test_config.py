"""tensorfield.engine.config: YAML + overrides -> typed config, one-line errors, help, save."""

from __future__ import annotations

import pytest
from tensorfield.engine.config import (
    ConfigError,
    config_from_dict,
    config_help,
    config_to_dict,
    load_config,
    save_config,
)


def _write(tmp_path, text, name="x.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def test_yaml_then_overrides(toys, tmp_path):
    path = _write(tmp_path, "method: toy_rays\nsteps: 100\nlr_grid: 1e-3\nupsample_steps: [5, 9]\n")
    config = load_config(path, ["steps=7", "upsample_steps=[10,20]", "adam_betas=[0.8,0.9]", "tensorboard=false"], None)
    assert isinstance(config, toys.ToyRaysConfig)
    assert config.method == "toy_rays"
    assert config.steps == 7
    assert config.lr_grid == pytest.approx(1e-3)  # YAML 1.1 would read "1e-3" as a string
    assert config.upsample_steps == [10, 20]
    assert config.adam_betas == (0.8, 0.9)
    assert config.resolution == 4  # default kept


def test_method_argument_and_defaults(toys):
    config = load_config(None, ["batch_size=3"], method="toy_images")
    assert isinstance(config, toys.ToyImagesConfig) and config.batch_size == 3 and config.method == "toy_images"
    assert load_config(None, ["method=toy_rays"], None).method == "toy_rays"


def test_unknown_key_in_file_names_file_and_suggests(toys, tmp_path):
    path = _write(tmp_path, "method: toy_rays\nlr_gird: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, [], None)
    assert _one_line(err) == f"{path}: unknown key 'lr_gird' for method toy_rays (did you mean 'lr_grid'?)"


def test_unknown_key_in_override(toys):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["stpes=5"], "toy_rays")
    assert _one_line(err) == "override stpes=5: unknown key 'stpes' for method toy_rays (did you mean 'steps'?)"


def test_bad_type_in_override(toys):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["steps=abc"], "toy_rays")
    assert _one_line(err) == "override steps=abc: expected int"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["upsample_steps=[1,x]"], "toy_rays")
    assert "upsample_steps" in _one_line(err) and "list[int]" in str(err.value)


def test_bad_type_in_file(toys, tmp_path):
    path = _write(tmp_path, "method: toy_rays\nsteps: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, [], None)
    assert _one_line(err) == f"{path}: key 'steps': expected int, got 'many'"


def test_bad_yaml_names_file(toys, tmp_path):
    path = _write(tmp_path, "method: toy_rays\nsteps: [1,\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, [], None)
    message = _one_line(err)
    assert message.startswith(f"{path}: invalid YAML at line")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("steps: 3\n", "no 'method:' key"),
        ("method: nope\n", "unknown method 'nope'"),
        ("- 1\n- 2\n", "expected a mapping"),
    ],
)
def test_file_level_errors(toys, tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, [], None)
    assert _one_line(err).startswith(f"{path}: ") and expected in str(err.value)


def test_missing_file_and_malformed_override(toys, tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "absent.yaml", [], None)
    assert _one_line(err) == f"{tmp_path / 'absent.yaml'}: config file not found"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["steps"], "toy_rays")
    assert _one_line(err) == "override steps: expected key=value"


def test_help_lists_fields_with_type_default_and_help(toys):
    text = config_help(toys.ToyRaysConfig)
    assert "  steps: int = 3000" in text
    assert "      Number of optimisation steps." in text
    assert "  upsample_steps: list[int] = [3, 7]" in text
    assert "  adam_betas: tuple[float, float] = [0.9, 0.99]" in text
    assert "  background: str = 'white'" in text


def test_help_groups_options_under_headings_in_a_stable_order(toys):
    text = config_help(toys.ToyRaysConfig)
    lines = text.splitlines()
    headings = [line for line in lines if line.startswith("[")]
    assert headings == ["[training]", "[data]", "[video data]", "[rendering]", "[logging]", "[method]"]
    block = {h: text.split(h + "\n", 1)[1].split("\n[", 1)[0] for h in headings}
    assert "  steps: int = 3000" in block["[training]"] and "  seed: int = 0" in block["[training]"]
    assert "  data: str = ''" in block["[data]"] and "  background: str = 'white'" in block["[data]"]
    assert "  frame_stride: int = 1" in block["[video data]"]
    assert "  render_chunk: int = 16384" in block["[rendering]"]
    assert "  log_every: int = 50" in block["[logging]"]
    assert "  upsample_steps: list[int] = [3, 7]" in block["[method]"]
    assert config_help(toys.ToyRaysConfig) == text  # stable


def test_builtin_help_groups_model_and_optimisation_options():
    from tensorfield.fields.gaussians import GaussianConfig
    from tensorfield.fields.tensorf import TensoRFConfig

    text = config_help(TensoRFConfig)
    assert text.index("[training]") < text.index("[data]") < text.index("[model]") < text.index("[optimisation]")
    assert "  steps: int = 30000" in text.split("[training]\n", 1)[1].split("\n[", 1)[0]  # override keeps its group
    assert "  lr_grid: float = 0.02" in text.split("[optimisation]\n", 1)[1].split("\n[", 1)[0]
    assert "[method]" not in text
    text = config_help(GaussianConfig)
    for heading in ("[model]", "[initialisation]", "[optimisation]", "[densification]", "[rasteriser]"):
        assert heading in text
    assert "[method]" not in text


def test_coordinate_config_has_no_image_options(toys):
    import dataclasses

    names = {item.name for item in dataclasses.fields(toys.ToyCoordinatesConfig)}
    assert not names & {"downscale", "background", "frame_stride", "max_frames", "time_range", "test_cameras", "render_chunk"}
    assert "[rendering]" not in config_help(toys.ToyCoordinatesConfig)


def test_group_dot_key_overrides_are_aliases(toys):
    config = load_config(
        None,
        ["rendering.render_chunk=4096", "data.background=black", "video_data.frame_stride=2", "method.upsample_steps=[1,2]", "data=/x"],
        "toy_rays",
    )
    flat = load_config(None, ["render_chunk=4096", "background=black", "frame_stride=2", "upsample_steps=[1,2]", "data=/x"], "toy_rays")
    assert config == flat and config.render_chunk == 4096 and config.background == "black" and config.data == "/x"
    stored = config_to_dict(flat)
    assert config_from_dict(stored, ["training.steps=7"]).steps == 7
    with pytest.raises(ConfigError) as err:
        load_config(None, ["render.render_chunk=1"], "toy_rays")
    assert _one_line(err).startswith("override render.render_chunk=1: unknown group 'render' for method toy_rays (groups: training")
    with pytest.raises(ConfigError) as err:
        load_config(None, ["rendering.steps=1"], "toy_rays")
    assert _one_line(err) == (
        "override rendering.steps=1: 'steps' is not an option of group 'rendering' for method toy_rays; 'steps' is in group 'training'"
    )
    with pytest.raises(ConfigError) as err:
        load_config(None, ["rendering.render_chunk=abc"], "toy_rays")
    assert _one_line(err) == "override rendering.render_chunk=abc: expected int"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["rendering.render_chunk=1"], "toy_coords")
    assert "unknown group 'rendering' for method toy_coords" in _one_line(err)


def test_flat_stored_config_from_before_the_groups_still_loads(toys):
    old = {
        "method": "toy_coords", "steps": 5, "data": "", "downscale": 1.0, "background": "white", "frame_stride": 1,
        "max_frames": 0, "time_range": [], "test_cameras": [], "render_chunk": 16384,
    }
    config = config_from_dict(old)
    assert config.steps == 5 and not hasattr(config, "background")
    with pytest.raises(ConfigError, match="unknown key 'background'"):
        load_config(None, ["background=black"], "toy_coords")


def test_save_then_load_round_trip(toys, tmp_path):
    config = load_config(None, ["steps=11", "upsample_steps=[1,2,3]", "lr_grid=0.5"], "toy_rays")
    path = save_config(config, tmp_path / "run" / "config.yaml")
    assert load_config(path, [], None) == config
    assert config_from_dict(config_to_dict(config), ["steps=20"]).steps == 20
    with pytest.raises(ConfigError, match="cannot be changed"):
        config_from_dict(config_to_dict(config), ["method=toy_images"])
