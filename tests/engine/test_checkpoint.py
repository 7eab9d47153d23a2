"""tensorfield.engine.checkpoint: atomic writes, retention, refusal of pickled code, clear errors."""

from __future__ import annotations

import os
import random

import pytest
import torch
from tensorfield.engine import checkpoint as ckpt
from tensorfield.engine.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from tensorfield.engine.optim import build_optimizer


@pytest.fixture
def parts(toys, make_ray_config):
    config = make_ray_config(keep_checkpoints=2)
    model = toys.ToyRays(config, toys.make_scene().scene_info())
    optimizer, _ = build_optimizer(model, config)
    return config, model, optimizer


def _save(directory, step, config, model, optimizer):
    return save_checkpoint(
        directory / ckpt.checkpoint_name(step),
        model=model,
        optimizer=optimizer,
        trainer_state={"step": step, "rng": torch.get_rng_state()},
        config=config,
    )


def test_round_trip(parts, tmp_path):
    config, model, optimizer = parts
    model.resolution = 6  # shape_state travels as JSON
    path = _save(tmp_path, 7, config, model, optimizer)
    data = load_checkpoint(path)
    assert data["shape_state"] == {"resolution": 6}
    assert data["trainer"]["step"] == 7
    assert torch.equal(data["model"]["density"], model.density.detach())
    assert data["config"]["method"] == "toy_rays" and data["config"]["upsample_steps"] == [3, 7]
    assert latest_checkpoint(tmp_path) == path


def test_retention_keeps_newest_and_the_one_just_written(parts, tmp_path):
    config, model, optimizer = parts  # keep_checkpoints=2
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, config, model, optimizer)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [3, 4]
    _save(tmp_path, 2, config, model, optimizer)  # older than the newest two, but just written
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 3, 4]
    _save(tmp_path, 5, config, model, optimizer)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [4, 5]
    assert latest_checkpoint(tmp_path).name == "step_000005.ckpt"


def test_crash_mid_write_leaves_earlier_checkpoint_intact(parts, tmp_path, monkeypatch):
    config, model, optimizer = parts
    good = _save(tmp_path, 5, config, model, optimizer)
    good_bytes = good.read_bytes()

    def crashing_save(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a zip")
        raise RuntimeError("power cut")

    monkeypatch.setattr(ckpt.torch, "save", crashing_save)
    with pytest.raises(RuntimeError, match="power cut"):
        _save(tmp_path, 10, config, model, optimizer)
    monkeypatch.undo()

    assert sorted(os.listdir(tmp_path)) == ["step_000005.ckpt"]  # no partial file, no temp file
    assert good.read_bytes() == good_bytes
    assert latest_checkpoint(tmp_path) == good
    load_checkpoint(good)


def test_stray_temp_file_of_a_killed_writer_is_ignored(parts, tmp_path):
    config, model, optimizer = parts
    good = _save(tmp_path, 5, config, model, optimizer)
    (tmp_path / ".step_000010.ckpt.abc123.tmp").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path) == good


def test_failed_replace_is_a_checkpoint_error(parts, tmp_path, monkeypatch):
    config, model, optimizer = parts
    good = _save(tmp_path, 5, config, model, optimizer)

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.os, "replace", failing_replace)
    with pytest.raises(CheckpointError, match="step_000010.ckpt: cannot write checkpoint"):
        _save(tmp_path, 10, config, model, optimizer)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == [good.name]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_file_is_a_one_line_error_naming_it(parts, tmp_path, damage):
    config, model, optimizer = parts
    path = _save(tmp_path, 5, config, model, optimizer)
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": bytes(random.Random(damage).getrandbits(8) for _ in range(500)), "empty": b""}[damage])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert ("not a tensorfield checkpoint" if damage == "garbage" else "corrupt") in message
    assert "weights_only" not in message and len(message) < 200


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "step_000001.ckpt")
    assert latest_checkpoint(tmp_path) is None


class _Payload:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_objects_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "step_000001.ckpt"
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION, "model": {}, "payload": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: refused: loading it would need executing pickled code") and "\n" not in message
    assert "weights_only" not in message
    assert not marker.exists()


def test_foreign_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a tensorfield checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_are_a_checkpoint_error(tmp_path, seed):
    path = tmp_path / "step_000001.ckpt"
    rng = random.Random(seed)
    path.write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000))))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "step_000001.ckpt" in str(err.value) and "\n" not in str(err.value)
    assert "weights_only" not in str(err.value)


@pytest.mark.parametrize(
    "payload, expected",
    [
        ("random", "not a tensorfield checkpoint"),
        ("dict", "not a tensorfield checkpoint (a raw pickle"),
        ("code", f"refused: loading it would need executing pickled code ({os.system.__module__}.system)"),
    ],
)
def test_raw_pickles_and_random_bytes_never_reach_torch_load(tmp_path, payload, expected, monkeypatch):
    import pickle
    import warnings

    marker = tmp_path / "executed"
    path = tmp_path / "step_000001.ckpt"
    if payload == "random":
        path.write_bytes(bytes(random.Random(1).getrandbits(8) for _ in range(700)))
    else:
        with path.open("wb") as handle:
            pickle.dump({"format": ckpt.FORMAT, "weights": [1.0, 2.0]} if payload == "dict" else {"x": _Payload(marker)}, handle)
    monkeypatch.setattr(ckpt.torch, "load", lambda *a, **k: pytest.fail("torch.load saw a file without the zip header"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {expected}")
    assert "\n" not in message and "weights_only" not in message
    assert caught == []
    assert not marker.exists()


def test_cli_reports_a_malicious_checkpoint_in_one_line_and_runs_nothing(tmp_path, capsys):
    import pickle
    import warnings

    from tensorfield.app.cli import main

    marker = tmp_path / "executed"
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    evil = checkpoints / "step_000001.ckpt"
    with evil.open("wb") as handle:
        pickle.dump({"x": _Payload(marker)}, handle)
    before = evil.read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["eval", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(evil) in err
    assert "refused: loading it would need executing pickled code" in err and "weights_only" not in err
    assert [str(w.message) for w in caught] == []
    assert not marker.exists() and evil.read_bytes() == before


def test_choosing_and_falling_back(parts, tmp_path):
    from tensorfield.engine.checkpoint import open_checkpoint, resolve_checkpoint

    config, model, optimizer = parts
    config.keep_checkpoints = 0
    paths = [_save(tmp_path, step, config, model, optimizer) for step in (1, 2, 3)]
    for choice in ("2", "step_2", "step_000002", "step_000002.ckpt", str(paths[1])):
        assert resolve_checkpoint(tmp_path, choice) == paths[1]
    with pytest.raises(CheckpointError, match=r"no checkpoint step_9 \(has: step_000001, step_000002, step_000003\)$"):
        resolve_checkpoint(tmp_path, "step_9")
    paths[2].write_bytes(paths[2].read_bytes()[:100])
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path)
    assert str(err.value) == (
        f"{paths[2]}: truncated or corrupt checkpoint; intact earlier: step_000002, step_000001 (use --checkpoint step_000002)"
    )
    path, data, skipped = open_checkpoint(tmp_path, fallback=True)
    assert path == paths[1] and data["trainer"]["step"] == 2
    assert skipped == [(paths[2], "truncated or corrupt checkpoint (the zip archive cannot be read)")]
    assert open_checkpoint(tmp_path, "step_1")[0] == paths[0]
