"""Tests of :func:`tensorfield.engine.optim.apply_param_surgery` and the trainer's use of it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from tensorfield.engine.optim import apply_param_surgery, build_optimizer
from tensorfield.engine.trainer import Trainer
from tensorfield.fields.base import (
    BatchKind,
    Field,
    HookResult,
    ParamGroup,
    ParamSurgery,
    RenderOutput,
    StepOutput,
)
from tensorfield.fields.config import ImageMethodConfig, option
from torch import nn


class Rows(nn.Module):
    def __init__(self, count: int):
        super().__init__()
        self.points = nn.Parameter(torch.randn(count, 3))
        self.other = nn.Parameter(torch.randn(4))

    def param_groups(self):
        return [ParamGroup("points", [self.points], 0.1), ParamGroup("other", [self.other], 0.01)]


def stepped(count: int = 6):
    model = Rows(count)
    optimizer, groups = build_optimizer(model, object())
    for _ in range(3):
        optimizer.zero_grad()
        (model.points.pow(2).sum() + model.other.sum() * torch.arange(1, count + 1).float().sum()).backward()
        optimizer.step()
    return model, optimizer, groups


def test_surgery_gathers_moments_and_zeroes_new_rows():
    model, optimizer, groups = stepped()
    old = model.points
    before = {k: v.clone() for k, v in optimizer.state[old].items()}
    other_state = {k: v.clone() for k, v in optimizer.state[model.other].items()}
    rows = torch.tensor([5, 0, 2, -1, 2, -1])
    new = nn.Parameter(torch.zeros(6, 3))
    apply_param_surgery(optimizer, groups, [ParamSurgery(old, new, rows)])
    assert old not in optimizer.state and optimizer.param_groups[0]["params"][0] is new
    assert groups[0].params[0] is new
    state = optimizer.state[new]
    for key in ("exp_avg", "exp_avg_sq"):
        assert state[key].shape == new.shape
        assert torch.equal(state[key][0], before[key][5]) and torch.equal(state[key][1], before[key][0])
        assert torch.equal(state[key][2], before[key][2]) and torch.equal(state[key][4], before[key][2])
        assert torch.count_nonzero(state[key][3]) == 0 and torch.count_nonzero(state[key][5]) == 0
    assert torch.equal(state["step"], before["step"])
    for key, value in other_state.items():  # untouched
        assert torch.equal(optimizer.state[model.other][key], value)
    # the optimiser keeps working on the new tensor
    model.points = new
    optimizer.zero_grad()
    model.points.pow(2).sum().backward()
    optimizer.step()
    assert torch.count_nonzero(new) > 0


def test_surgery_rejects_mismatch():
    model, optimizer, groups = stepped()
    with pytest.raises(ValueError):
        apply_param_surgery(optimizer, groups, [ParamSurgery(model.points, nn.Parameter(torch.zeros(3, 3)), torch.arange(2))])
    with pytest.raises(ValueError):
        stranger = nn.Parameter(torch.zeros(2, 3))
        apply_param_surgery(optimizer, groups, [ParamSurgery(stranger, nn.Parameter(torch.zeros(2, 3)), torch.arange(2))])


def test_hook_results_concatenate_surgery():
    a = ParamSurgery(nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1)), torch.zeros(1, dtype=torch.long))
    b = ParamSurgery(nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1)), torch.zeros(1, dtype=torch.long))
    merged = HookResult(surgery=(a,)) | HookResult(refilter_rays=True) | HookResult(surgery=(b,))
    assert merged.surgery == (a, b) and merged.refilter_rays and not merged.rebuild_optimizer


# ------------------------------------------------------------------------------ through the trainer
@dataclass
class GrowConfig(ImageMethodConfig):
    lr: float = option(0.05, "Learning rate.")
    batch_size: int = option(2, "Images per step.")
    grow_every: int = option(3, "Grow by one row every N steps.")


class Growing(Field):
    """Rows of colours; every few steps the rows move, row 0 is copied to the end and a fresh row added."""

    batch_kind = BatchKind.IMAGES

    def __init__(self, config, scene_info, size: int = 8):
        super().__init__()
        self.config = config
        self.size = size
        self.rows = nn.Parameter(torch.zeros(4, 3))
        self.seen: list[int] = []

    def param_groups(self):
        return [ParamGroup("rows", [self.rows], self.config.lr)]

    def _image(self, background):
        colour = torch.sigmoid(self.rows).mean(0)
        return colour.expand(self.size, self.size, 3)

    def training_step(self, batch, step):
        image = self._image(batch.background)
        mse = F.mse_loss(image[None].expand_as(batch.images), batch.images)
        return StepOutput(mse, {"mse": float(mse.detach())})

    def render_view(self, request):
        image = self._image(request.background)
        return RenderOutput(image, image[..., 0] * 0, image[..., 0] * 0 + 1)

    def after_step(self, step):
        if (step + 1) % self.config.grow_every:
            return HookResult()
        count = self.rows.shape[0]
        rows = torch.cat([torch.arange(1, count), torch.tensor([0, -1])])  # drop row 0, copy it, add one
        old = self.rows
        self.rows = nn.Parameter(torch.where(rows[:, None] >= 0, old.detach()[rows.clamp_min(0)], 0.0))
        self.seen.append(count)
        return HookResult(surgery=(ParamSurgery(old, self.rows, rows),))

    def shape_state(self):
        return {"rows": int(self.rows.shape[0])}

    def prepare_for_state(self, shape_state):
        self.rows = nn.Parameter(torch.zeros(int(shape_state["rows"]), 3))


def test_trainer_applies_surgery_and_resumes_exactly(tmp_path, toys, monkeypatch):
    from tensorfield.fields import registry

    from .conftest import DirectSpec

    monkeypatch.setitem(registry.METHODS, "grow", DirectSpec("grow", "", "", "toy", "tensorfield.engine.data:image_data", config_cls=GrowConfig, model_cls=Growing))
    scene = toys.make_scene()
    config = GrowConfig(method="grow", steps=10, log_every=1, checkpoint_every=4, keep_checkpoints=5, eval_every=0, seed=1)
    straight = Trainer.from_config(config, tmp_path / "a", scene=scene)
    straight.train(progress=False, final_eval=False)
    assert straight.optimizer.param_groups[0]["params"][0] is straight.model.rows
    assert straight.model.rows.shape[0] == 7 and straight.model.seen == [4, 5, 6]
    assert straight.optimizer.state[straight.model.rows]["exp_avg"].shape == straight.model.rows.shape

    first = Trainer.from_config(GrowConfig(**{**config.__dict__, "steps": 4}), tmp_path / "b", scene=scene)
    first.train(progress=False, final_eval=False)
    resumed = Trainer.from_checkpoint(tmp_path / "b", overrides=["steps=10"], scene=scene)
    resumed.train(progress=False, final_eval=False)
    assert torch.equal(resumed.model.rows, straight.model.rows)
    state_a = straight.optimizer.state[straight.model.rows]
    state_b = resumed.optimizer.state[resumed.model.rows]
    assert torch.equal(state_a["exp_avg"], state_b["exp_avg"]) and torch.equal(state_a["exp_avg_sq"], state_b["exp_avg_sq"])
