"""tensorfield.engine.trainer: loop, schedules, ray filtering, logging, evaluation, exact resume."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import pytest
import torch
from tensorfield.engine.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints
from tensorfield.engine.config import ConfigError, load_config
from tensorfield.engine.logger import read_metrics
from tensorfield.engine.optim import scheduled_lr
from tensorfield.engine.sampling import ImageSource
from tensorfield.engine.trainer import DeviceError, Trainer, resolve_device
from tensorfield.fields.base import ParamGroup


def _train_lines(run_dir):
    return [r for r in read_metrics(run_dir) if "loss" in r]


def _straight_run(toys, make_ray_config, run_dir, scene, **overrides):
    trainer = Trainer.from_config(make_ray_config(**overrides), run_dir, scene=scene)
    summary = trainer.train(progress=False, final_eval=False)
    return trainer, summary


# ------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("stop_at", [5, 7])
def test_resume_is_bit_exact(toys, make_ray_config, tmp_path, stop_at):
    scene = toys.make_scene()
    straight, _ = _straight_run(toys, make_ray_config, tmp_path / "straight", scene)

    # Train stop_at steps (the final evaluation must not disturb any RNG), then resume.
    stopped = Trainer.from_config(make_ray_config(steps=stop_at), tmp_path / "resumed", scene=scene)
    stopped.train(progress=False, final_eval=True)
    resumed = Trainer.from_checkpoint(tmp_path / "resumed", overrides=["steps=12"], scene=scene)
    assert resumed.step == stop_at and isinstance(resumed.model, toys.ToyRays)
    resumed.train(progress=False, final_eval=False)

    initial = toys.ToyRays(make_ray_config(), scene.scene_info())
    assert not torch.equal(straight.model.view.weight, initial.view.weight)  # it did train
    assert straight.model.resolution == resumed.model.resolution == 8
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    state_a, state_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for key in state_a:
        for field in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state_a[key][field], state_b[key][field]), (key, field)
    losses_a = [(r["step"], r["loss"]) for r in _train_lines(tmp_path / "straight")]
    losses_b = [(r["step"], r["loss"]) for r in _train_lines(tmp_path / "resumed")]
    assert losses_a == losses_b
    assert torch.equal(straight.batch_source.active, resumed.batch_source.active)


def test_image_model_resume_is_bit_exact(toys, tmp_path):
    scene = toys.make_scene()
    config = toys.ToyImagesConfig(method="toy_images", steps=8, log_every=2, checkpoint_every=3, background="random", seed=5)
    straight = Trainer.from_config(config, tmp_path / "a", scene=scene)
    straight.train(progress=False, final_eval=False)
    resumed = Trainer.from_checkpoint(tmp_path / "a" / "checkpoints" / "step_000003.ckpt", run_dir=tmp_path / "b", scene=scene)
    resumed.train(progress=False, final_eval=False)
    assert torch.equal(straight.model.logits, resumed.model.logits)
    assert torch.equal(straight.model.gains, resumed.model.gains)


def test_from_checkpoint_without_checkpoint_is_clear(toys, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        Trainer.from_checkpoint(tmp_path, scene=toys.make_scene())


# ------------------------------------------------------------------------------------ schedule
def test_scheduled_lr_formula():
    group = ParamGroup("g", [], lr=0.02, decay_ratio=0.1, decay_steps=100)
    assert scheduled_lr(group, 0, 0) == pytest.approx(0.02)
    assert scheduled_lr(group, 100, 0) == pytest.approx(0.002)
    assert scheduled_lr(group, 150, 100) == pytest.approx(0.02 * 0.1**0.5)


def test_lr_schedule_decays_and_resets_on_rebuild(toys, make_ray_config, tmp_path):
    # ToyRays upsamples after steps 3 and 7 -> optimiser rebuilt, decay restarts at 4 and 8.
    trainer, _ = _straight_run(toys, make_ray_config, tmp_path, toys.make_scene())
    lines = _train_lines(tmp_path)
    assert [r["step"] for r in lines] == list(range(1, 13))
    for record in lines:
        step = record["step"] - 1
        base = 0 if step <= 3 else 4 if step <= 7 else 8
        assert record["lr/grid"] == pytest.approx(0.05 * 0.1 ** ((step - base) / 20), rel=1e-12)
        assert record["lr/net"] == pytest.approx(0.01 * 0.1 ** ((step - base) / 20), rel=1e-12)
        assert record["lr"] == record["lr/grid"]
    assert trainer.base_step == 8
    # the rebuilt optimiser holds the upsampled grids
    held = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert id(trainer.model.density) in held and trainer.model.density.shape[-1] == 8


# ------------------------------------------------------------------------------------ rays
def test_ray_filter_applied_before_training_and_on_refilter(toys, make_ray_config, tmp_path):
    scene = toys.make_scene()
    trainer = Trainer.from_config(make_ray_config(steps=7), tmp_path, scene=scene)
    source = trainer.batch_source
    train = scene.split("train")
    origins, directions = train.cameras.generate_all_rays()
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    in_aabb = toys.rays_hit_box(origins, directions, scene.aabb)
    assert 0 < int(in_aabb.sum()) < in_aabb.numel()  # the toy scene has rays that miss the box
    assert torch.equal(source.active, torch.nonzero(in_aabb).flatten())

    batch = source.sample(256, torch.Generator().manual_seed(0))
    assert toys.rays_hit_box(batch.origins, batch.directions, scene.aabb).all()
    assert torch.allclose(batch.directions.norm(dim=-1), torch.ones(256))

    trainer.train(progress=False, final_eval=False)  # after_step(6) shrinks the box and refilters
    in_box = toys.rays_hit_box(origins, directions, trainer.model.box)
    assert torch.equal(source.active, torch.nonzero(in_aabb & in_box).flatten())
    assert source.num_active < int(in_aabb.sum())
    events = [r for r in read_metrics(tmp_path) if r.get("event") == "ray_filter"]
    assert [(e["step"], e["rays_before"], e["rays_after"]) for e in events] == [
        (0, in_aabb.numel(), int(in_aabb.sum())),
        (7, int(in_aabb.sum()), source.num_active),
    ]


def test_random_background_recomposites_with_alpha(toys):
    scene = toys.make_scene()
    train = scene.split("train")
    source = ImageSource(train, scene.background, random_background=True, device=torch.device("cpu"))
    batch = source.sample(3, torch.Generator().manual_seed(0))
    alpha = train.alphas[batch.indices][..., None]
    foreground = train.images[batch.indices] - (1 - alpha) * scene.background
    assert torch.allclose(batch.images, foreground + (1 - alpha) * batch.background, atol=1e-6)
    other = source.sample(3, torch.Generator().manual_seed(1))
    assert not torch.equal(batch.background, other.background)


# ------------------------------------------------------------------------------------ logging
def test_metrics_jsonl_and_config_yaml(toys, make_ray_config, tmp_path):
    scene = toys.make_scene()
    config = make_ray_config(steps=6, log_every=3, eval_every=4, checkpoint_every=4, keep_checkpoints=1)
    summary = Trainer.from_config(config, tmp_path, scene=scene).train(progress=False)
    records = read_metrics(tmp_path)
    train_lines = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_lines] == [3, 6]
    for record in train_lines:
        for key in ("loss", "psnr", "lr", "elapsed_s", "it_per_s", "grid_res", "mse"):
            assert isinstance(record[key], float), key
        assert record["psnr"] > 0
    eval_lines = [r for r in records if "split" in r]
    assert [(r["step"], r["split"]) for r in eval_lines] == [(4, "test"), (6, "test")]
    assert all(0 < r["ssim"] <= 1 and r["psnr"] > 0 for r in eval_lines)
    # resolved config round-trips; retention kept only the newest checkpoint
    assert load_config(tmp_path / "config.yaml", [], None) == config
    assert [step for step, _ in list_checkpoints(tmp_path / "checkpoints")] == [6]
    assert summary["steps"] == 6 and summary["eval"]["split"] == "test"
    assert summary["checkpoint"] == str(latest_checkpoint(tmp_path))


# ------------------------------------------------------------------------------------ evaluation
def test_evaluate_writes_renders_and_eval_json(toys, make_ray_config, tmp_path):
    scene = toys.make_scene()
    summary = Trainer.from_config(make_ray_config(steps=4), tmp_path, scene=scene).train(progress=False)
    for index in range(2):
        assert imageio.imread(tmp_path / "renders" / "test" / f"{index:03d}.png").shape == (8, 8, 3)
        assert imageio.imread(tmp_path / "renders" / "test" / f"{index:03d}_depth.png").shape == (8, 8, 3)
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["split"] == "test" and result["step"] == 4 and result["num_images"] == 2
    assert [image["name"] for image in result["per_image"]] == ["r_6", "r_7"]
    assert result["psnr"] == pytest.approx(sum(i["psnr"] for i in result["per_image"]) / 2)
    assert result["lpips"] is None
    assert summary["eval"]["psnr"] == pytest.approx(result["psnr"])

    # evaluating a finished run from its directory gives the same numbers
    again = Trainer.from_checkpoint(tmp_path, scene=scene).evaluate("test", save_renders=False)
    assert again["psnr"] == pytest.approx(result["psnr"], abs=1e-12)
    assert again["ssim"] == pytest.approx(result["ssim"], abs=1e-12)


def test_coordinate_model_trains_and_evaluates(toys, tmp_path):
    config = toys.ToyCoordinatesConfig(method="toy_coords", steps=30, log_every=10, checkpoint_every=30)
    sampler = toys.ToySampler()
    trainer = Trainer.from_config(config, tmp_path, scene=sampler)
    before = sampler.evaluate(trainer.model)["mse"]
    summary = trainer.train(progress=False)
    assert summary["eval"]["mse"] < before
    assert json.loads((tmp_path / "eval.json").read_text())["mse"] == pytest.approx(summary["eval"]["mse"])


# ------------------------------------------------------------------------------------ devices, options
def test_resolve_device():
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="device 'cuda' requested but CUDA is not available"):
            resolve_device("cuda")


def test_tensorboard_requested_but_missing(toys, make_ray_config, tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a))
    with pytest.raises(ConfigError) as err:
        Trainer.from_config(make_ray_config(tensorboard=True), tmp_path, scene=toys.make_scene())
    assert str(err.value) == "tensorboard=true but the tensorboard package is not installed (pip install tensorboard)"


def test_rays_walk_a_permutation_per_epoch_and_resume_mid_epoch(toys, make_ray_config, tmp_path):
    """Every active ray once per epoch (official SimpleSampler); a state round trip mid-epoch continues the same walk."""
    scene = toys.make_scene()
    source = Trainer.from_config(make_ray_config(steps=1), tmp_path, scene=scene).batch_source
    count, batch = source.num_active, 32
    generator = torch.Generator().manual_seed(3)
    key = lambda b: [tuple(r) for r in torch.cat([b.directions, b.rgb], dim=1).tolist()]
    every = torch.cat([source.directions[source.active], source.rgb[source.active]], dim=1)
    epoch = [row for _ in range(count // batch) for row in key(source.sample(batch, generator))]
    assert len(set(epoch)) == len(epoch) == (count // batch) * batch  # no repeats within an epoch
    assert set(epoch) <= {tuple(r) for r in every.tolist()}

    source.sample(batch, generator)  # the next epoch's permutation starts
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in source.state_dict().items()}
    saved_generator = generator.get_state()
    ahead = [key(source.sample(batch, generator)) for _ in range(count // batch + 2)]

    twin = Trainer.from_config(make_ray_config(steps=1), tmp_path / "twin", scene=scene).batch_source
    twin.load_state_dict(state)
    generator.set_state(saved_generator)
    assert [key(twin.sample(batch, generator)) for _ in range(count // batch + 2)] == ahead


def test_callbacks_see_every_step_and_request_stop_checkpoints(toys, make_ray_config, tmp_path):
    from tensorfield.engine.trainer import TrainingCallback

    scene = toys.make_scene()
    seen = []

    class StopAtFive(TrainingCallback):
        def before_step(self, trainer, step):
            if step == 5:
                trainer.request_stop()

        def after_step(self, trainer, step, output):
            assert trainer.step == step + 1 and torch.isfinite(output.loss)
            seen.append(step)

    trainer = Trainer.from_config(make_ray_config(steps=12, checkpoint_every=100), tmp_path, scene=scene)
    summary = trainer.train(progress=False, callbacks=[StopAtFive()])
    assert seen == [0, 1, 2, 3, 4] and summary["stopped"] and summary["eval"] is None
    assert summary["steps"] == 5 and summary["checkpoint"].endswith("step_000005.ckpt")
    resumed = Trainer.from_checkpoint(tmp_path, scene=scene)
    assert resumed.step == 5
    assert resumed.train(progress=False, final_eval=False)["stopped"] is False and resumed.step == 12


def _flatten(prefix, value, out):
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _flatten(f"{prefix}[{index}]", item, out)
    else:
        out[prefix] = value
    return out


def assert_same_state(a: dict, b: dict, skip=("trainer.elapsed_s", "trainer.train_s")):
    """Two checkpoints hold bit-identical tensors and values (RNG states, parameters, optimiser)."""
    flat_a = _flatten("", {k: a[k] for k in ("trainer", "model", "optimizer")}, {})
    flat_b = _flatten("", {k: b[k] for k in ("trainer", "model", "optimizer")}, {})
    assert flat_a.keys() == flat_b.keys()
    differing = [
        key for key in flat_a
        if key.lstrip(".") not in skip
        and not (torch.equal(flat_a[key], flat_b[key]) if torch.is_tensor(flat_a[key]) else flat_a[key] == flat_b[key])
    ]
    assert differing == []
    return flat_a


@pytest.mark.parametrize("stop_at", [4, 7])
def test_stop_and_resume_restores_every_rng_bit_exactly(toys, make_ray_config, tmp_path, stop_at):
    """A run stopped at ``stop_at`` and resumed saves, from the next checkpoint on, the same global torch,
    numpy and Python RNG states, sampler and model generator states and parameters as a run never stopped."""
    import random

    import numpy as np
    from tensorfield.engine.checkpoint import load_checkpoint
    from tensorfield.engine.trainer import TrainingCallback

    class Draws(TrainingCallback):
        """Draws from numpy's and Python's global RNGs every step, as a model or augmentation may."""

        def __init__(self, stop=None):
            self.stop, self.seen = stop, {}

        def before_step(self, trainer, step):
            if step == self.stop:
                trainer.request_stop()

        def after_step(self, trainer, step, output):
            self.seen[step] = (float(np.random.rand()), random.random(), float(torch.rand(())))

    scene = toys.make_scene()
    config = make_ray_config(steps=12, checkpoint_every=5, keep_checkpoints=0)
    straight_draws = Draws()
    Trainer.from_config(config, tmp_path / "straight", scene=scene).train(progress=False, final_eval=False, callbacks=[straight_draws])
    ends = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())

    first = Draws(stop=stop_at)
    stopped = Trainer.from_config(config, tmp_path / "resumed", scene=scene)
    assert stopped.train(progress=False, final_eval=True, callbacks=[first])["stopped"]
    torch.manual_seed(999), np.random.seed(999), random.seed(999)  # a new process starts elsewhere
    resumed = Trainer.from_checkpoint(tmp_path / "resumed", scene=scene)
    assert resumed.step == stop_at
    second = Draws()
    resumed.train(progress=False, final_eval=False, callbacks=[second])

    assert {**first.seen, **second.seen} == straight_draws.seen
    assert torch.equal(torch.get_rng_state(), ends[0]) and np.array_equal(np.random.get_state()[1], ends[1])
    assert random.getstate() == ends[2]
    for name in ("step_000010.ckpt", "step_000012.ckpt"):
        a = load_checkpoint(tmp_path / "straight" / "checkpoints" / name)
        b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / name)
        state = assert_same_state(a, b)
        for key in (".trainer.rng.torch", ".trainer.rng.numpy.keys", ".trainer.sampler_rng", ".trainer.model_rng"):
            assert torch.is_tensor(state[key]) and state[key].numel() > 0, key  # every generator is stored
        assert ".trainer.rng.python[1][0]" in state
