"""GridSchedule: the TensoRF coarse-to-fine schedule, on its own and on a recording fake model."""

from __future__ import annotations

import pytest
import torch
from tensorfield.fields.grid_schedule import GridEvents, GridSchedule
from tensorfield.fields.tensorf import TensoRFConfig


def small_schedule(**overrides) -> GridSchedule:
    values = dict(
        method="tensorf_vm", steps=100, upsample_steps=[10, 20], voxels_init=8**3, voxels_final=27**3,
        alpha_mask_steps=[5, 20], l1_weight_initial=8e-5, l1_weight_rest=4e-5, lr_upsample_reset=False,
        lr_decay_ratio=0.1,
    )
    values.update(overrides)
    return GridSchedule.from_config(TensoRFConfig(**values))


class FakeGrid:
    """Records the calls the schedule makes; ``mask_ok`` says whether a mask gets installed."""

    def __init__(self, mask_ok: bool = True) -> None:
        self.aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
        self.alpha_mask_updates = 0
        self.lr_scale = 1.0
        self.mask_ok = mask_ok
        self.calls: list[tuple] = []

    def upsample(self, resolution):
        self.calls.append(("upsample", tuple(resolution)))

    def rebuild_alpha_mask(self, step):
        self.calls.append(("mask", step))
        self.alpha_mask_updates += int(self.mask_ok)
        return self.mask_ok

    def shrink_to_mask(self):
        self.calls.append(("shrink",))


def test_events_of_a_small_config():
    schedule = small_schedule()
    assert schedule.voxel_counts == (3175, 19683)  # log-linear 8^3 -> 27^3: the geometric mean, then the end
    assert schedule.events_at(4) == GridEvents()
    assert schedule.events_at(5) == GridEvents(alpha_mask=True)
    assert schedule.events_at(10) == GridEvents(upsample_voxels=3175)
    assert schedule.events_at(20) == GridEvents(alpha_mask=True, refilter_rays=True, upsample_voxels=19683)
    assert [schedule.l1_weight(n) for n in (0, 1, 2)] == [8e-5, 4e-5, 4e-5]
    assert schedule.lr_scale(50) == pytest.approx(0.1**0.5)
    assert small_schedule(lr_upsample_reset=True).lr_scale(50) == 1.0


def test_after_step_drives_the_model_in_order():
    schedule, model = small_schedule(), FakeGrid()
    results = {step: schedule.after_step(model, step) for step in range(25)}
    assert model.calls == [("mask", 5), ("shrink",), ("upsample", (14, 14, 14)), ("mask", 20), ("upsample", (27, 27, 27))]
    assert results[5].rebuild_optimizer and not results[5].refilter_rays
    assert results[10].rebuild_optimizer and not results[10].refilter_rays
    assert results[20].rebuild_optimizer and results[20].refilter_rays  # second mask: no shrink, but refilter
    assert not any(r.rebuild_optimizer or r.refilter_rays for s, r in results.items() if s not in (5, 10, 20))
    assert model.lr_scale == pytest.approx(0.1 ** (20 / 100))


def test_a_mask_that_is_not_installed_neither_shrinks_nor_refilters():
    schedule, model = small_schedule(alpha_mask_steps=[5, 7], upsample_steps=[]), FakeGrid(mask_ok=False)
    assert schedule.after_step(model, 5) == schedule.after_step(model, 7) == schedule.after_step(model, 6)
    assert model.calls == [("mask", 5), ("mask", 7)] and model.lr_scale == 1.0
    model.mask_ok = True  # the first mask that *is* installed shrinks, even at a later step
    result = schedule.after_step(model, 7)
    assert result.rebuild_optimizer and result.refilter_rays and model.calls[-1] == ("shrink",)
