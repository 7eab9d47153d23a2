"""DefaultStrategy on hand-made per-Gaussian values: which Gaussians are cloned, split, pruned."""

from __future__ import annotations

import math

import torch
from tensorfield.fields.densification import DefaultStrategy, ScreenRecord, StepPlan
from tensorfield.fields.gaussian_producers import StaticProducer
from tensorfield.fields.gaussians import GaussianConfig


def five_gaussians() -> dict[str, torch.Tensor]:
    """0: small + high gradient (clone); 1: large + high gradient (split); 2: transparent (pruned);
    3: plain; 4: large, never seen (pruned only by world size)."""
    scales = torch.tensor([0.05, 0.5, 0.05, 0.05, 0.45])
    return {
        "means": torch.arange(15, dtype=torch.float32).reshape(5, 3),
        "opacity_logits": torch.tensor([0.0, 0.0, -10.0, 0.0, 0.0]),
        "log_scales": scales.log()[:, None].repeat(1, 3),
        "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(5, 1),
        "sh_dc": torch.arange(5, dtype=torch.float32)[:, None, None].repeat(1, 1, 3),
    }


STRATEGY = DefaultStrategy(grad_threshold=1e-3, percent_dense=0.1, prune_opacity=0.005, prune_world_scale=0.4)
STATS = dict(
    grad_accum=torch.tensor([4e-3, 2e-3, 0.0, 1e-4, 0.0]),
    grad_count=torch.tensor([2.0, 1.0, 1.0, 1.0, 0.0]),
    max_radii=torch.zeros(5),
)


def test_clone_split_prune_rows_and_values():
    values = five_gaussians()
    calls = []

    def sampler(v, split, samples):
        calls.append((split.tolist(), samples))
        return StaticProducer(GaussianConfig()).split_values(v, split, samples, torch.Generator().manual_seed(0))

    new, rows = STRATEGY.densify(values, **STATS, extent=1.0, prune_large=False, split_sampler=sampler)
    assert calls == [([1], 2)]
    assert rows.tolist() == [0, 3, 4, -1, -1, -1]  # survivors (2 pruned, 1 split away), the clone, 2 samples
    assert torch.equal(new["sh_dc"][:, 0, 0], torch.tensor([0.0, 3, 4, 0, 1, 1]))  # the clone of 0, children of 1
    assert torch.equal(new["means"][3], values["means"][0])  # clones are copies
    children = new["log_scales"][4:]
    torch.testing.assert_close(children, torch.full((2, 3), math.log(0.5) - math.log(1.6)))
    assert bool(((new["means"][4:] - values["means"][1]).abs() > 0).all())  # sampled from the Gaussian
    assert set(new) == set(values) and all(v.shape[0] == 6 for v in new.values())

    new, rows = STRATEGY.densify(values, **STATS, extent=1.0, prune_large=True, split_sampler=sampler)
    assert rows.tolist() == [0, 3, -1, -1, -1]  # 4 is larger than 0.4 E; the children (0.31) are not
    new, rows = STRATEGY.densify(values, **STATS, extent=0.1, prune_large=False, split_sampler=sampler)
    assert rows.tolist() == [3, 4, -1, -1, -1, -1]  # E = 0.1: 0 is large too, so 0 and 1 both split


def test_plan_of_a_small_schedule():
    strategy = DefaultStrategy(densify_from=2, densify_interval=2, densify_until=9, opacity_reset_interval=6,
                               reset_at_densify_from=True, max_gaussians=100)
    plans = {step + 1: strategy.plan(step, count=10) for step in range(12)}
    assert plans[1] == StepPlan(accumulate=True)
    assert plans[2] == StepPlan(accumulate=True, reset_opacity=True)  # white background: reset at densify_from
    assert plans[4] == StepPlan(accumulate=True, densify=True)
    assert plans[6] == StepPlan(accumulate=True, densify=True, reset_opacity=True)
    assert plans[8] == StepPlan(accumulate=True, densify=True, prune_large=True)  # past the first reset
    assert plans[9] == plans[10] == StepPlan()  # densify_until
    assert strategy.plan(3, count=100) == StepPlan()  # full
    assert not DefaultStrategy(densify_from=2).plan(1, count=10).reset_opacity


def test_accumulate_scales_to_ndc_and_maps_rows():
    means2d = torch.zeros(1, 3, 2, requires_grad=True)
    (means2d * torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])).sum().backward()
    radii = torch.tensor([[3, 4, 0]])  # the third is not visible
    record = ScreenRecord(means2d, radii, torch.tensor([4, 1, 0]), width=8, height=2, views=2)
    accum, count, max_radii = torch.zeros(5), torch.zeros(5), torch.zeros(5)
    STRATEGY.accumulate([record, record], accum, count, max_radii)
    # x scaled by W/2 * views = 8, y by H/2 * views = 2
    assert accum.tolist() == [0.0, 8.0, 0.0, 0.0, 16.0]
    assert count.tolist() == [0.0, 2.0, 0.0, 0.0, 2.0]
    assert max_radii.tolist() == [0.0, 4.0, 0.0, 0.0, 3.0]


def test_reset_opacity_clamps_to_the_ceiling():
    logits = torch.tensor([-6.0, 0.0, 3.0])
    reset = DefaultStrategy(opacity_reset_value=0.01).reset_opacity(logits)
    torch.testing.assert_close(torch.sigmoid(reset), torch.tensor([torch.sigmoid(torch.tensor(-6.0)).item(), 0.01, 0.01]))
