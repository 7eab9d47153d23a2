"""Tests of :mod:`tensorfield.fields.gaussians` that need no rasteriser: initialisation,
densification and pruning with the optimiser state, opacity reset, checkpoint shapes, export."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from tensorfield.engine.optim import apply_param_surgery, build_optimizer
from tensorfield.fields.base import SceneInfo
from tensorfield.fields.gaussian_math import (
    covariance_3d,
    covariance_4d,
    eval_spherindrical,
    mean_neighbour_distance,
    sh_to_rgb,
    slice_4d,
)
from tensorfield.fields.gaussians import (
    GaussianConfig,
    GaussianSplatting,
    resolve_dim,
    scene_extent,
)

BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def config(dim: int = 3, **overrides) -> GaussianConfig:
    values = dict(method=f"gaussians{dim}d", init_points=64, steps=100, seed=0)
    values.update(overrides)
    return GaussianConfig(**values)


def model_with(dim: int = 3, count: int = 40, white_background: bool = True, **overrides) -> GaussianSplatting:
    g = torch.Generator().manual_seed(11)
    points = torch.rand(count, 3, generator=g) * 2 - 1
    rgb = torch.rand(count, 3, generator=g)
    scene = SceneInfo(BOX.clone(), 1.0, 5.0, points=points, points_rgb=rgb, white_background=white_background)
    return GaussianSplatting(config(dim, **overrides), scene)


def stepped_optimizer(model: GaussianSplatting):
    """An Adam that took two steps, with each row's exp_avg then overwritten by its row id + 1."""
    optimizer, groups = build_optimizer(model, model.config)
    for _ in range(2):
        optimizer.zero_grad()
        loss = sum((p * p).sum() for p in model.parameters())
        loss.backward()
        optimizer.step()
    for name in model.per_gaussian_names:
        p = getattr(model, name)
        ids = torch.arange(1, p.shape[0] + 1, dtype=p.dtype).view(-1, *([1] * (p.ndim - 1)))
        optimizer.state[p]["exp_avg"] = ids.expand_as(p).clone()
    return optimizer, groups


# ------------------------------------------------------------------------------ construction
def test_dimension_and_extent():
    assert resolve_dim(config(3)) == 3 and resolve_dim(config(4)) == 4
    assert resolve_dim(GaussianConfig(method="gaussians3d", gaussian_dim=4)) == 4
    with pytest.raises(ValueError):
        resolve_dim(GaussianConfig(method="gaussians3d", gaussian_dim=5))
    info = SceneInfo(BOX.clone(), 1.0, 5.0)
    assert scene_extent(config(), info) == pytest.approx(1.1 * math.sqrt(3))
    info.camera_centers = torch.tensor([[4.0, 0, 0], [-4.0, 0, 0], [0, 4.0, 0]])
    mean = info.camera_centers.mean(0)
    assert scene_extent(config(), info) == pytest.approx(1.1 * float((info.camera_centers - mean).norm(dim=1).max()))
    assert scene_extent(config(scene_extent=2.5), info) == 2.5


def test_init_from_points():
    model = model_with(3, count=30)
    assert model.num_gaussians == 30
    g = torch.Generator().manual_seed(11)
    points = torch.rand(30, 3, generator=g) * 2 - 1
    rgb = torch.rand(30, 3, generator=g)
    assert torch.equal(model.means.detach(), points)
    assert torch.allclose(sh_to_rgb(model.sh_dc.detach()[:, 0]), rgb, atol=1e-6)
    assert torch.allclose(model.log_scales.detach()[:, 0], mean_neighbour_distance(points).log(), atol=1e-6)
    assert torch.allclose(model.opacities, torch.full((30,), 0.1), atol=1e-6)
    assert model.sh_rest.shape == (30, 15, 3)


def test_random_init_of_a_real_capture_warns():
    """Without SfM points, a nerfstudio / N3V scene (a real capture) starts from random points: say so."""
    with pytest.warns(UserWarning, match="no SfM points in this n3v scene"):
        GaussianSplatting(config(4), SceneInfo(BOX.clone(), 1.0, 5.0, is_dynamic=True, source_format="n3v"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # synthetic (Blender) scenes start randomly by design: no warning
        GaussianSplatting(config(3), SceneInfo(BOX.clone(), 1.0, 5.0, source_format="blender"))


def test_random_init_4d():
    model = GaussianSplatting(config(4, init_points=500, time_duration=2.0), SceneInfo(BOX.clone(), 1.0, 5.0, is_dynamic=True))
    assert model.num_gaussians == 500
    assert bool(((model.means >= -1) & (model.means <= 1)).all())
    times = model.times.detach()
    assert float(times.min()) >= -0.2 and float(times.max()) <= 2.2 and float(times.std()) > 0.3
    assert torch.allclose(torch.exp(2 * model.log_scale_t), torch.full((500,), 0.2 * 2.0))
    assert model.sh_rest.shape == (500, 16 * 3 - 1, 3)
    # the initial rotation is the identity: slicing does not move anything
    m3, c3, marginal = slice_4d(model._means_4d().detach(), covariance_4d(model._scales_4d(), model.quats, model.quats_right).detach(), 0.7)
    assert torch.allclose(m3, model.means.detach())


def test_active_degrees_follow_the_official_schedule():
    model = model_with(4, sh_increase_interval=10)
    seen = []
    for step in (0, 8, 9, 19, 29, 39, 49, 59, 1000):
        model.before_step(step)
        seen.append((model.active_sh_degree, model.active_time_degree))
    assert seen == [(0, 0), (0, 0), (1, 0), (2, 0), (3, 0), (3, 1), (3, 2), (3, 2), (3, 2)]
    static = model_with(3, sh_increase_interval=10)
    static.before_step(1000)
    assert (static.active_sh_degree, static.active_time_degree) == (3, 0)


def test_temporal_culling():
    model = model_with(4, count=20)
    with torch.no_grad():
        model.times.copy_(torch.linspace(0, 1, 20))
        model.log_scale_t.fill_(math.log(0.05))
    sliced = model.gaussians_at(0.5)
    marginal = torch.exp(-0.5 * (0.5 - model.times.detach()) ** 2 / 0.05**2)
    assert torch.equal(sliced.index, (marginal > 0.05).nonzero().squeeze(1))
    assert torch.allclose(sliced.opacities.detach(), 0.1 * marginal[sliced.index], atol=1e-6)


# ------------------------------------------------------------------------------ densification
@pytest.mark.parametrize("dim", [3, 4])
def test_densify_keeps_optimizer_state_aligned(dim):
    model = model_with(dim, count=40, percent_dense=0.1, scene_extent=1.0, densify_grad_threshold=1e-3)
    with torch.no_grad():
        model.log_scales[:, :] = math.log(0.05)  # small: clone
        model.log_scales[20:, :] = math.log(0.5)  # large: split
        model.opacity_logits[35:] = -10.0  # pruned (low opacity)
    model.grad_accum[:] = 0.0
    model.grad_count[:] = 1.0
    clone, split = [1, 3, 5], [21, 22, 36]
    model.grad_accum[clone + split] = 2e-3
    model.grad_count[7] = 0.0  # never seen: gradient 0 (no division by zero)
    optimizer, groups = stepped_optimizer(model)
    before = {name: getattr(model, name).detach().clone() for name in model.per_gaussian_names}
    result = model.densify_and_prune(prune_large=False)
    apply_param_surgery(optimizer, groups, result.surgery)

    survivors = [i for i in range(40) if i not in split and i < 35]
    # survivors, clones, then 2 samples per split Gaussian (split 36 has low opacity: its children are pruned)
    expected = len(survivors) + len(clone) + 2 * 2
    assert model.num_gaussians == expected
    for name in model.per_gaussian_names:
        p = getattr(model, name)
        assert optimizer.param_groups[model.per_gaussian_names.index(name)]["params"][0] is p
        state = optimizer.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape
        ids = state["exp_avg"].reshape(p.shape[0], -1)[:, 0]
        assert torch.equal(ids[: len(survivors)], torch.tensor(survivors, dtype=p.dtype) + 1)  # carried over
        assert torch.count_nonzero(state["exp_avg"][len(survivors) :]) == 0  # new rows start at zero
        assert torch.count_nonzero(state["exp_avg_sq"][len(survivors) :]) == 0
        assert torch.equal(p.detach()[: len(survivors)], before[name][survivors])
        clones = p.detach()[len(survivors) : len(survivors) + len(clone)]
        assert torch.equal(clones, before[name][clone])
    children = slice(len(survivors) + len(clone), None)
    parents = [21, 22, 21, 22]  # the split rows are repeated block-wise, as the original
    assert torch.allclose(model.log_scales.detach()[children], before["log_scales"][parents] - math.log(1.6), atol=1e-6)
    offsets = model.means.detach()[children] - before["means"][parents]
    assert bool((offsets.abs() > 0).all()) and bool((offsets.abs() < 0.5 * 5).all())
    if dim == 4:
        assert torch.allclose(model.log_scale_t.detach()[children], before["log_scale_t"][parents] - math.log(1.6), atol=1e-6)
        assert bool((model.times.detach()[children] != before["times"][parents]).all())  # split in time too
    assert model.grad_accum.shape == (expected,) and float(model.grad_accum.abs().sum()) == 0.0


def test_prune_large_after_reset():
    model = model_with(3, count=20, scene_extent=1.0, prune_world_scale=0.1)
    with torch.no_grad():
        model.log_scales[:, :] = math.log(0.05)
        model.log_scales[[2, 9], 0] = math.log(0.2)
    assert model.densify_and_prune(prune_large=False).surgery[0].new.shape[0] == 20
    result = model.densify_and_prune(prune_large=True)
    assert model.num_gaussians == 18
    assert torch.equal(result.surgery[0].rows, torch.tensor([i for i in range(20) if i not in (2, 9)]))


def test_opacity_reset_zeroes_opacity_moments_only():
    model = model_with(3, count=12)
    with torch.no_grad():
        model.opacity_logits[:6] = 3.0
    optimizer, groups = stepped_optimizer(model)
    means_state = optimizer.state[model.means]["exp_avg"].clone()
    result = model.reset_opacity()
    apply_param_surgery(optimizer, groups, result.surgery)
    assert float(model.opacities.detach().max()) <= 0.01 + 1e-6
    assert torch.allclose(model.opacities[6:], torch.full((6,), 0.01), atol=1e-6)  # 0.1 clamped too
    assert torch.count_nonzero(optimizer.state[model.opacity_logits]["exp_avg"]) == 0
    assert torch.equal(optimizer.state[model.means]["exp_avg"], means_state)


def test_after_step_schedule():
    model = model_with(3, count=10, densify_from=2, densify_interval=2, densify_until=9, opacity_reset_interval=6, white_background=False)
    events = {}
    for step in range(12):
        result = model.after_step(step)
        events[step + 1] = len(result.surgery)
    per = len(model.per_gaussian_names)
    assert events[4] == per and events[8] == per  # densify at iterations 4, 8 (> densify_from, < densify_until)
    assert events[6] == per + 1  # densify + opacity reset
    assert events[2] == 0 and events[10] == 0 and events[3] == 0


# ------------------------------------------------------------------------------ checkpoints, export
@pytest.mark.parametrize("dim", [3, 4])
def test_state_round_trip_with_changed_count(dim):
    model = model_with(dim, count=30, percent_dense=0.1, scene_extent=1.0)
    model.grad_accum[:5] = 1.0
    model.grad_count[:] = 1.0
    model.densify_and_prune(prune_large=False)
    model.before_step(5000)
    assert model.num_gaussians != 30
    state, shape = model.state_dict(), model.shape_state()
    fresh = model_with(dim, count=30)
    fresh.prepare_for_state(shape)
    fresh.load_state_dict(state)
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    assert fresh.active_sh_degree == 3
    with pytest.raises(ValueError):
        model_with(7 - dim, count=5).prepare_for_state(shape)


def test_checkpoints_without_rigid_neighbours_still_load():
    """State written before the rigidity loss existed (no ``rigid_neighbours``) loads, with an
    empty neighbour table."""
    model = model_with(4, count=12)
    state = {k: v for k, v in model.state_dict().items() if k != "rigid_neighbours"}
    fresh = model_with(4, count=12)
    fresh.prepare_for_state({k: v for k, v in model.shape_state().items() if k != "rigid_columns"})  # an old shape_state
    fresh.load_state_dict(state)
    assert fresh.rigid_neighbours.shape == (12, 0)
    assert torch.equal(fresh.means, model.means)


def test_splat_attributes_3d():
    model = model_with(3, count=8)
    splat = model.splat_attributes()
    assert splat.names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert splat.names[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert len(splat.names) == 62 and splat.values.shape == (8, 62)
    with torch.no_grad():
        model.sh_rest[:, 2, 1] = 7.0  # green, coefficient 3 -> f_rest_{15 + 2}
    values = model.splat_attributes().values
    assert torch.all(values[:, 9 + 15 + 2] == 7.0) and torch.all(values[:, 9 + 2] == 0.0)
    assert torch.equal(values[:, :3], model.means.detach())
    assert torch.equal(values[:, 54], model.opacity_logits.detach())


def test_splat_attributes_4d_slice_is_exact():
    model = model_with(4, count=50, time_duration=2.0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        model.quats.copy_(torch.randn(50, 4, generator=g))
        model.quats_right.copy_(torch.randn(50, 4, generator=g))
        model.sh_rest.normal_(generator=g)
        model.times.copy_(torch.rand(50, generator=g) * 2)
    model.before_step(10**6)
    time = 0.4  # normalised; scene time 0.8
    splat = model.splat_attributes(time)
    sliced = model.gaussians_at(0.8)
    values = splat.values
    assert values.shape[0] == sliced.means.shape[0] > 0
    assert torch.allclose(values[:, :3], sliced.means.detach(), atol=1e-6)
    scales, quats = values[:, -7:-4].exp(), values[:, -4:]
    assert torch.allclose(covariance_3d(scales.double(), quats.double()).float(), sliced.covariances.detach(), atol=1e-5)
    assert torch.allclose(torch.sigmoid(values[:, -8]), sliced.opacities.detach(), atol=1e-5)
    # plain SH from the exported table gives the 4D colour at that time
    table = torch.cat([values[:, None, 6:9], values[:, 9:54].reshape(-1, 3, 15).transpose(1, 2)], dim=1)
    dirs = torch.nn.functional.normalize(torch.randn(table.shape[0], 3, generator=g), dim=-1)
    exported = eval_spherindrical(table, dirs, 3)
    direct = eval_spherindrical(sliced.coefficients.detach(), dirs, 3, sliced.dt.detach(), time_degree=2, period=2.0)
    assert torch.allclose(exported, direct, atol=1e-4)


def test_native_4d_slice_equals_the_torch_slice():
    """Without gradients a 4D model slices natively; the culled set and every sliced quantity
    equal the torch path's (which training uses)."""
    from tensorfield.cuda.gaussian_kernels import native_library

    if native_library() is None:
        pytest.skip("no C compiler for the native kernel")
    model = GaussianSplatting(config(4, init_points=3000, time_duration=2.0), SceneInfo(BOX.clone(), 1.0, 5.0, is_dynamic=True))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        model.quats.copy_(torch.randn(model.quats.shape, generator=g))
        model.quats_right.copy_(torch.randn(model.quats_right.shape, generator=g))
        model.log_scales.add_(0.5 * torch.randn(model.log_scales.shape, generator=g))
        model.log_scale_t.add_(torch.randn(model.log_scale_t.shape, generator=g))
        model.opacity_logits.copy_(torch.randn(model.opacity_logits.shape, generator=g))
    with torch.enable_grad():
        exact = model.gaussians_at(0.9)
    with torch.no_grad():
        native = model.gaussians_at(0.9)
    assert exact.index is not None and 100 < exact.index.numel() < 2900  # some culled, some kept
    assert torch.equal(native.index, exact.index)
    for name in ("means", "covariances", "opacities", "dt", "sh_dc", "sh_rest"):
        assert torch.allclose(getattr(native, name), getattr(exact, name).detach(), atol=1e-5, rtol=1e-4), name


# ------------------------------------------------------------------------------ 4DGS regularisers
def _rigidity_reference(means, scales4, ql, qr, k):
    """float64 loops: sum_i sum_{j in kNN(i)} exp(-100 |mu_j - mu_i|) |v_j - v_i| / (k N), the kNN
    by sorting all distances, v = Sigma_{1:3,4} / Sigma_44 * 0.1 Gaussian by Gaussian."""
    n = means.shape[0]
    total = means.new_zeros(())
    velocities = []
    for i in range(n):
        cov = covariance_4d(scales4[i : i + 1], ql[i : i + 1], qr[i : i + 1])[0]
        velocities.append(cov[:3, 3] / cov[3, 3] * 0.1)
    for i in range(n):
        d = [(float((means[j] - means[i]).norm()), j) for j in range(n)]
        for dist, j in sorted(d)[:k]:
            total = total + math.exp(-100.0 * dist) * (velocities[j] - velocities[i]).norm()
    return total / k / n


def test_rigidity_loss_against_a_float64_loop():
    """Values and gradients (scales, both quaternions) of the rigidity loss; the means only set the
    neighbours and weights (detached, as the official)."""
    from tensorfield.fields.gaussian_math import mean_velocity

    model = model_with(4, count=30, rigid_weight=1.0, rigid_neighbours=6).double()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        model.means.mul_(0.05)  # close enough for the exp(-100 d) weights to matter
        model.quats_right.copy_(torch.randn(30, 4, generator=g, dtype=torch.float64))
        model.log_scale_t.add_(torch.randn(30, generator=g, dtype=torch.float64) * 0.3)
    velocity = mean_velocity(model._scales_4d(), model.quats, model.quats_right, 0.1)
    loss = model.rigidity_loss(velocity, step=0)
    loss.backward()
    got = {name: getattr(model, name).grad.clone() for name in ("log_scales", "log_scale_t", "quats", "quats_right")}
    assert model.means.grad is None  # neighbours and weights are detached
    assert model.rigid_neighbours.shape == (30, 6)

    leaves = {name: getattr(model, name).detach().clone().requires_grad_(True) for name in ("log_scales", "log_scale_t", "quats", "quats_right")}
    scales4 = torch.exp(torch.cat([leaves["log_scales"], leaves["log_scale_t"][:, None]], dim=1))
    expected = _rigidity_reference(model.means.detach(), scales4, leaves["quats"], leaves["quats_right"], 6)
    expected.backward()
    assert float(loss.detach()) > 1e-6
    assert torch.allclose(loss, expected, rtol=1e-10, atol=0)
    for name, grad in got.items():
        assert torch.allclose(grad, leaves[name].grad, rtol=1e-8, atol=1e-12), name


def test_rigidity_neighbours_refresh_schedule():
    """Kept for rigid_knn_interval steps, recomputed on the interval and after densification."""
    from tensorfield.fields.gaussian_math import mean_velocity

    model = model_with(4, count=30, rigid_weight=1.0, rigid_neighbours=4, rigid_knn_interval=5, percent_dense=0.1, scene_extent=1.0)
    velocity = mean_velocity(model._scales_4d(), model.quats, model.quats_right, 0.1).detach()
    model.rigidity_loss(velocity, step=3)  # nothing cached yet: computed now
    first = model.rigid_neighbours.clone()
    with torch.no_grad():
        model.means.copy_(model.means.flip(0))  # the neighbours change ...
    model.rigidity_loss(velocity, step=4)
    assert torch.equal(model.rigid_neighbours, first)  # ... but are kept until the interval
    model.rigidity_loss(velocity, step=5)
    assert not torch.equal(model.rigid_neighbours, first)
    model.grad_accum[:5] = 1.0
    model.grad_count[:] = 1.0
    model.densify_and_prune(prune_large=False)
    assert model.rigid_neighbours.shape == (model.num_gaussians, 0)  # dropped with the old rows
