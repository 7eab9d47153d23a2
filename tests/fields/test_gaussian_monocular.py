"""Tests of the monocular-video options of :mod:`tensorfield.fields.gaussians` (issue 17): the
annealed time jitter of training views, the 4D consistency loss and the opacity entropy loss,
each against a float64 loop and shown to change what training does."""

from __future__ import annotations

import math

import pytest
import torch
from tensorfield.fields.base import SceneInfo
from tensorfield.fields.gaussian_math import covariance_4d, mean_velocity
from tensorfield.fields.gaussians import GaussianConfig, GaussianSplatting

BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def model_with(dim: int = 4, count: int = 40, **overrides) -> GaussianSplatting:
    """A model of ``count`` Gaussians at random points in the unit box (as test_gaussians.py)."""
    g = torch.Generator().manual_seed(11)
    points = torch.rand(count, 3, generator=g) * 2 - 1
    scene = SceneInfo(BOX.clone(), 1.0, 5.0, points=points, points_rgb=torch.rand(count, 3, generator=g))
    values = dict(method=f"gaussians{dim}d", init_points=64, steps=100, seed=0)
    values.update(overrides)
    return GaussianSplatting(GaussianConfig(**values), scene)


# ------------------------------------------------------------------------------ time jitter
def test_time_jitter_off_keeps_the_cameras_times():
    model = model_with(4, count=10)
    times = torch.tensor([0.1, 0.5, 0.9])
    assert model.training_times(times, step=3) == pytest.approx([0.1, 0.5, 0.9], abs=1e-7)
    static = model_with(3, count=10, time_jitter=0.5)  # no time axis: nothing to jitter
    assert static.training_times(times, step=3) == pytest.approx([0.1, 0.5, 0.9], abs=1e-7)


def test_time_jitter_spread_anneals_linearly_and_repeats_per_step():
    """Std of the noise = time_jitter x (1 - step / time_jitter_steps), zero from the horizon on;
    the same step draws the same noise (resumed runs), different steps differ."""
    model = model_with(4, count=10, time_jitter=0.02, time_jitter_steps=100)
    times = torch.full((20000,), 0.5)
    for step, expected in ((0, 0.02), (50, 0.01), (75, 0.005)):
        offsets = torch.tensor(model.training_times(times, step), dtype=torch.float64) - 0.5
        assert abs(float(offsets.mean())) < 4 * expected / math.sqrt(times.numel())
        assert float(offsets.std()) == pytest.approx(expected, rel=0.03)
    assert model.training_times(times[:4], 100) == pytest.approx([0.5] * 4, abs=1e-7)
    assert model.training_times(times[:4], 130) == pytest.approx([0.5] * 4, abs=1e-7)
    assert model.training_times(times[:4], 7) == model.training_times(times[:4], 7)
    assert model.training_times(times[:4], 7) != model.training_times(times[:4], 8)


def test_training_renders_at_the_jittered_times(monkeypatch):
    """training_step slices each view at training_times (what the option changes)."""
    from tensorfield.datasets.cameras import Cameras
    from tensorfield.fields.base import ImageBatch, RenderOutput

    model = model_with(4, count=10, time_jitter=0.05)
    seen = []

    def fake_rasterize(cameras, index, time, background):
        seen.append(time)
        rgb = torch.sigmoid(model.opacity_logits).mean().expand(4, 4, 3)
        zeros = torch.zeros(4, 4)
        return RenderOutput(rgb=rgb, depth=zeros, alpha=zeros), None, None

    monkeypatch.setattr(model, "_rasterize_camera", fake_rasterize)
    c2w = torch.eye(4)[None, :3].repeat(2, 1, 1)
    cameras = Cameras(c2w=c2w, fx=torch.full((2,), 4.0), fy=torch.full((2,), 4.0), cx=torch.full((2,), 2.0),
                      cy=torch.full((2,), 2.0), width=4, height=4, times=torch.tensor([0.25, 0.75]))
    batch = ImageBatch(cameras, torch.zeros(2, 4, 4, 3), None, torch.ones(3), torch.arange(2))
    model.training_step(batch, step=5)
    assert seen == pytest.approx(model.training_times(cameras.times, 5), abs=1e-12)
    assert seen != pytest.approx([0.25, 0.75], abs=1e-4)


# ------------------------------------------------------------------------------ 4D consistency
def _consistency_reference(means, times, scales4, ql, qr, k):
    """float64 loops: (1/N) sum_i |v_i - mean_{j in kNN4(i)} v_j|_1, the neighbours (itself
    excluded) by sorting every space-time distance, v Gaussian by Gaussian."""
    n = means.shape[0]
    velocities = []
    for i in range(n):
        cov = covariance_4d(scales4[i : i + 1], ql[i : i + 1], qr[i : i + 1])[0]
        velocities.append(cov[:3, 3] / cov[3, 3] * 0.1)
    total = means.new_zeros(())
    for i in range(n):
        distances = sorted(
            (math.sqrt(float(((means[j] - means[i]) ** 2).sum() + (times[j] - times[i]) ** 2)), j) for j in range(n) if j != i
        )
        neighbourhood = sum(velocities[j] for _, j in distances[:k]) / k
        total = total + (velocities[i] - neighbourhood).abs().sum()
    return total / n


def test_consistency_loss_against_a_float64_loop():
    """Values and gradients (scales, both quaternions); neighbours found in space-time."""
    model = model_with(4, count=30, consistency_weight=1.0, consistency_neighbours=5).double()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        model.quats_right.copy_(torch.randn(30, 4, generator=g, dtype=torch.float64))
        model.quats.copy_(torch.randn(30, 4, generator=g, dtype=torch.float64))
        model.log_scale_t.add_(torch.randn(30, generator=g, dtype=torch.float64) * 0.3)
    names = ("log_scales", "log_scale_t", "quats", "quats_right")
    velocity = mean_velocity(model._scales_4d(), model.quats, model.quats_right, 0.1)
    loss = model.consistency_loss(velocity, step=0)
    loss.backward()
    got = {name: getattr(model, name).grad.clone() for name in names}
    assert model.means.grad is None and model.times.grad is None  # neighbours only

    leaves = {name: getattr(model, name).detach().clone().requires_grad_(True) for name in names}
    scales4 = torch.exp(torch.cat([leaves["log_scales"], leaves["log_scale_t"][:, None]], dim=1))
    expected = _consistency_reference(model.means.detach(), model.times.detach(), scales4, leaves["quats"], leaves["quats_right"], 5)
    expected.backward()
    assert float(loss.detach()) > 1e-4
    assert torch.allclose(loss, expected, rtol=1e-10, atol=0)
    for name, grad in got.items():
        assert torch.allclose(grad, leaves[name].grad, rtol=1e-8, atol=1e-12), name


def test_consistency_neighbours_are_space_time_and_refresh():
    """Two Gaussians at one place but far apart in time are not neighbours; the cache is kept
    until the interval and dropped by densification."""
    model = model_with(4, count=12, consistency_weight=1.0, consistency_neighbours=1, consistency_knn_interval=5,
                       percent_dense=0.1, scene_extent=1.0)
    with torch.no_grad():
        model.means.copy_(torch.arange(12, dtype=torch.float32)[:, None].repeat(1, 3) * 0.1)
        model.times.copy_(torch.arange(12, dtype=torch.float32) * 0.1)
        model.means[1] = model.means[0]  # same place as 0, 0.1 later in time ...
        model.times[1] = 5.0  # ... no: far later
    velocity = torch.zeros(12, 3)
    model.consistency_loss(velocity, step=1)
    first = model._consistency_neighbours.clone()
    assert int(first[0, 0]) != 1 and int(first[1, 0]) != 0
    with torch.no_grad():
        model.times[1] = 0.0  # now the nearest in space-time
    model.consistency_loss(velocity, step=2)
    assert torch.equal(model._consistency_neighbours, first)
    model.consistency_loss(velocity, step=5)
    assert int(model._consistency_neighbours[0, 0]) == 1
    model.grad_accum[:3] = 1.0
    model.grad_count[:] = 1.0
    model.densify_and_prune(prune_large=False)
    assert model._consistency_neighbours is None


# ------------------------------------------------------------------------------ opacity entropy
def test_entropy_loss_value_and_gradient():
    """mean(-o log o) with o = sigmoid(logit): against the closed-form derivative
    d/dx = -o (1 - o) (log o + 1) / N, Gaussian by Gaussian."""
    for dim in (3, 4):
        model = model_with(dim, count=25, entropy_weight=0.5).double()
        with torch.no_grad():
            model.opacity_logits.copy_(torch.linspace(-6.0, 6.0, 25, dtype=torch.float64))
        losses = dict((name, (w, v)) for name, w, v in model.producer.extra_losses(model.params(), 0, model.rigidity_loss, model.consistency_loss))
        weight, value = losses["entropy"]
        assert weight == 0.5
        value.backward()
        o = torch.sigmoid(model.opacity_logits.detach())
        expected = sum(float(-p * math.log(p)) for p in o) / 25
        assert float(value.detach()) == pytest.approx(expected, rel=1e-12)
        closed = torch.stack([-p * (1 - p) * (torch.log(p) + 1) for p in o]) / 25
        assert torch.allclose(model.opacity_logits.grad, closed, rtol=1e-10, atol=1e-15)
    off = model_with(4, count=5)
    assert off.producer.extra_losses(off.params(), 0, off.rigidity_loss, off.consistency_loss) == []


# ------------------------------------------------------------------------------ lifespan
@pytest.mark.parametrize("speed", [0.0, 0.3])
def test_lifespan_loss_against_a_float64_loop(speed):
    """mean(relu(log f - log sigma_t)^2), sigma_t = sqrt(Sigma_44) / T of the full 4D covariance,
    Gaussian by Gaussian; values and gradients (scales, both quaternions); zero above the floor.
    With lifespan_speed s each term is gated by exp(-(d / s)^2), d = |Sigma_xt / Sigma_tt| T the
    distance the Gaussian travels over the clip, without a gradient through the gate."""
    model = model_with(4, count=30, lifespan_floor=0.08, lifespan_weight=0.7, time_duration=2.0, lifespan_speed=speed).double()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        model.quats_right.copy_(torch.randn(30, 4, generator=g, dtype=torch.float64))
        model.quats.copy_(torch.randn(30, 4, generator=g, dtype=torch.float64))
        model.log_scale_t.copy_(torch.log(torch.linspace(0.01, 0.5, 30, dtype=torch.float64)))
        model.log_scales.copy_(torch.log(torch.rand(30, 3, generator=g, dtype=torch.float64) * 0.3 + 0.01))
    losses = {name: (w, v) for name, w, v in model.producer.extra_losses(model.params(), 0, model.rigidity_loss, model.consistency_loss)}
    weight, value = losses["lifespan"]
    assert weight == 0.7
    value.backward()
    names = ("log_scales", "log_scale_t", "quats", "quats_right")
    got = {name: getattr(model, name).grad.clone() for name in names}

    leaves = {name: getattr(model, name).detach().clone().requires_grad_(True) for name in names}
    scales4 = torch.exp(torch.cat([leaves["log_scales"], leaves["log_scale_t"][:, None]], dim=1))
    terms, gates = [], []
    for i in range(30):
        cov = covariance_4d(scales4[i : i + 1], leaves["quats"][i : i + 1], leaves["quats_right"][i : i + 1])[0]
        sigma = torch.sqrt(cov[3, 3]) / 2.0
        gap = math.log(0.08) - torch.log(sigma)
        gate = 1.0
        if speed > 0:
            travel = float((cov[:3, 3] / cov[3, 3] * 2.0).detach().norm())
            gate = math.exp(-((travel / speed) ** 2))
            gates.append(gate)
        terms.append(gate * gap.square() if float(gap.detach()) > 0 else gap * 0.0)
    expected = torch.stack(terms).mean()
    expected.backward()
    short = sum(1 for term in terms if float(term.detach()) > 0)
    assert 0 < short < 30  # both sides of the floor are exercised
    if speed > 0:  # the gate takes values well inside (0, 1): moving and resting Gaussians
        assert min(gates) < 0.2 and max(gates) > 0.8
    assert torch.allclose(value, expected, rtol=1e-10, atol=0)
    for name, grad in got.items():
        assert torch.allclose(grad, leaves[name].grad, rtol=1e-8, atol=1e-14), name


def test_lifespan_loss_lengthens_only_short_lived_gaussians():
    """Without rotation sigma_t = exp(log_scale_t) / T: the gradient pushes the temporal scale up
    below the floor and is exactly zero above it; floor 0 adds no loss."""
    model = model_with(4, count=6, lifespan_floor=0.1)
    with torch.no_grad():
        model.quats.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(6, 1))
        model.quats_right.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(6, 1))
        model.log_scale_t.copy_(torch.log(torch.tensor([0.01, 0.05, 0.09, 0.11, 0.3, 1.0])))
    (_, _, value), = [item for item in model.producer.extra_losses(model.params(), 0, model.rigidity_loss, model.consistency_loss) if item[0] == "lifespan"]
    expected = sum(math.log(0.1 / s) ** 2 for s in (0.01, 0.05, 0.09)) / 6
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5)
    value.backward()
    grad = model.log_scale_t.grad
    assert bool((grad[:3] < 0).all()) and bool((grad[3:] == 0).all())
    off = model_with(4, count=6, lifespan_floor=0.0)
    assert all(name != "lifespan" for name, _, _ in off.producer.extra_losses(off.params(), 0, off.rigidity_loss, off.consistency_loss))
