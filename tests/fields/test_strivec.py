"""Tests of :mod:`tensorfield.fields.strivec` and its kernels (:mod:`tensorfield.cuda.local_tensors`)."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tensorfield.cuda.local_tensors import (
    LocalTensorIndex,
    aggregate_features,
    aggregate_sum,
    box_coverage,
    find_neighbours,
    query_features,
)
from tensorfield.cuda.local_tensors_reference import aggregate_reference
from tensorfield.fields.base import ExportsDensityGrid, RayBatch, RendersViews, SceneInfo
from tensorfield.fields.strivec import Strivec, StrivecConfig, length_schedule, vertices_near_cells
from tensorfield.fields.strivec_placement import place_tensors, voxel_centres

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
UNIT_BOX = torch.tensor([[-1.0] * 3, [1.0] * 3])


def tiny_config(**overrides) -> StrivecConfig:
    values = dict(
        method="strivec",
        steps=60,
        batch_size=128,
        half_extents=[0.45, 0.225],
        voxel_sizes=[0.6, 0.3],
        density_components=[16, 16],
        app_components=[6, 6],
        vector_lengths_init=[3, 3],
        vector_lengths_final=[9, 9],
        upsample_steps=[10, 20],
        alpha_mask_steps=[15, 30],
        app_dim=8,
        mlp_hidden=16,
        render_chunk=512,
        step_ratio=1.0,
        coarse_steps=5,
        coarse_voxels=12**3,
        l1_weight_initial=0.0,
        l1_weight_rest=0.0,
        lr_grid=0.05,
    )
    values.update(overrides)
    return StrivecConfig(**values)


def sphere_points(n: int = 1500, radius: float = 0.6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(n, 3, generator=g)
    return radius * points / points.norm(dim=-1, keepdim=True)


def scene_with_points(points=None, aabb=UNIT_BOX) -> SceneInfo:
    return SceneInfo(aabb=aabb.clone(), near=2.0, far=6.0, points=sphere_points() if points is None else points)


def ball_rays(n: int, seed: int):
    """Rays from a sphere of radius 4 towards the centre; targets: a ball of radius 0.6 coloured
    sigmoid(3 p) at the hit point, white elsewhere (as in the TensoRF tests)."""
    g = torch.Generator().manual_seed(seed)
    origins = torch.randn(n, 3, generator=g)
    origins = 4.0 * origins / origins.norm(dim=-1, keepdim=True)
    targets = (torch.rand(n, 3, generator=g) * 2 - 1) * 0.9
    directions = F.normalize(targets - origins, dim=-1)
    b = (origins * directions).sum(-1)
    disc = b * b - ((origins * origins).sum(-1) - 0.36)
    t = -b - disc.clamp_min(0).sqrt()
    colour = torch.sigmoid(3 * (origins + t[:, None] * directions))
    rgb = torch.where((disc > 0)[:, None], colour, torch.ones(3))
    return origins, directions, rgb


def batch_of(rays, ids) -> RayBatch:
    origins, directions, rgb = rays
    return RayBatch(origins[ids], directions[ids], rgb[ids], torch.full((len(ids),), float("nan")), torch.ones(3))


def train(model: Strivec, steps: range, rays, seed: int = 0) -> list[float]:
    """A minimal trainer: Adam with the groups' exponential schedules, hooks and rebuilds."""
    g = torch.Generator().manual_seed(seed)
    base = steps.start

    def build():
        groups = model.param_groups()
        return torch.optim.Adam([{"params": gr.params, "lr": gr.lr} for gr in groups], betas=(0.9, 0.99)), groups

    optimizer, groups = build()
    losses = []
    for step in steps:
        for torch_group, group in zip(optimizer.param_groups, groups):
            torch_group["lr"] = group.lr * group.decay_ratio ** ((step - base) / group.decay_steps)
        ids = torch.randint(rays[0].shape[0], (model.config.batch_size,), generator=g)
        out = model.training_step(batch_of(rays, ids), step)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        losses.append(out.metrics["mse"])
        if model.after_step(step).rebuild_optimizer:
            optimizer, groups = build()
            base = step + 1
    return losses


def psnr(model: Strivec, rays) -> float:
    origins, directions, rgb = rays
    out = model.render_rays(origins, directions, background=torch.ones(3))
    return -10 * math.log10(float(((out.rgb - rgb) ** 2).mean()))


def random_scale(num_tensors: int, cells: int, components: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(num_tensors, 3, generator=g, dtype=torch.float64) * 1.6 - 0.8
    lines = tuple(torch.randn(num_tensors, cells + 1, components, generator=g, dtype=dtype).requires_grad_() for _ in range(3))
    points = torch.rand(400, 3, generator=g, dtype=torch.float64) * 2.2 - 1.1
    return centres, lines, points


# ------------------------------------------------------------------------------ kernels
@pytest.mark.parametrize("num_tensors,cells,components,half_extent,k", [
    (1, 2, 1, 0.5, 4), (30, 5, 3, 0.3, 4), (80, 7, 4, 0.25, 2), (60, 3, 6, 0.5, 8),
])
def test_aggregation_matches_brute_force_values_and_gradients(num_tensors, cells, components, half_extent, k):
    centres, lines, points = random_scale(num_tensors, cells, components, seed=num_tensors)
    index = LocalTensorIndex.build(centres, half_extent)
    neighbours = find_neighbours(index, points, k)
    fast = aggregate_features(neighbours, lines, half_extent)
    fast_sum = aggregate_sum(neighbours, lines, half_extent)
    reference = aggregate_reference(points, centres, half_extent, lines, k)
    assert bool((reference != 0).any(1).float().mean() > 0.05)  # the points do meet cubes
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast_sum, reference.sum(1), rtol=1e-12, atol=1e-12)
    weights = torch.randn(fast.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads_fast = torch.autograd.grad((fast * weights).sum() + fast_sum.sum(), lines)
    grads_ref = torch.autograd.grad((reference * weights).sum() + reference.sum(), lines)
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_float32_aggregation_agrees_with_the_float64_reference():
    centres, lines64, points = random_scale(50, 6, 5, seed=7)
    lines = tuple(line.detach().float().requires_grad_() for line in lines64)
    index = LocalTensorIndex.build(centres.float(), 0.3)
    fast = aggregate_features(find_neighbours(index, points.float(), 4), lines, 0.3)
    reference = aggregate_reference(points, centres, 0.3, lines64, 4)
    torch.testing.assert_close(fast.double(), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reduce", [False, True], ids=["features", "sum"])
def test_native_and_torch_float32_paths_agree_with_the_reference_values_and_gradients(reduce, monkeypatch):
    from tensorfield.cuda import local_tensors_native

    if local_tensors_native.native_library() is None:
        pytest.skip("no C compiler: the torch path is the only one")
    centres, lines64, points = random_scale(70, 6, 12, seed=11)
    lines = tuple(line.detach().float().requires_grad_() for line in lines64)
    neighbours = find_neighbours(LocalTensorIndex.build(centres.float(), 0.3), points.float(), 4)
    reference = aggregate_reference(points, centres, 0.3, lines64, 4)
    reference = reference.sum(1) if reduce else reference
    upstream = torch.randn(reference.shape, generator=torch.Generator().manual_seed(3))
    ref_grads = torch.autograd.grad((reference * upstream.double()).sum(), lines64)
    aggregate = aggregate_sum if reduce else aggregate_features
    results = {}
    threads_before = torch.get_num_threads()
    try:
        _compare_paths(aggregate, neighbours, lines, upstream, reference, ref_grads, results, monkeypatch)
    finally:
        torch.set_num_threads(threads_before)
    # the native backward splits components, not pairs: the same floats for any thread count
    for a, b in zip(results["native", 1][1], results["native", 2][1]):
        assert torch.equal(a, b)


def _compare_paths(aggregate, neighbours, lines, upstream, reference, ref_grads, results, monkeypatch):
    from tensorfield.cuda import local_tensors_native

    calls = []
    forward = local_tensors_native.cp_forward
    monkeypatch.setattr(local_tensors_native, "cp_forward", lambda *args: calls.append(1) or forward(*args))
    for name, native in (("native", True), ("torch", False)):
        if not native:
            assert len(calls) == 2  # the native kernels did run (once per thread count)
            monkeypatch.setattr(local_tensors_native, "usable", lambda *tensors: False)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = aggregate(neighbours, lines, 0.3)
            grads = torch.autograd.grad((out * upstream).sum(), lines)
            torch.testing.assert_close(out.double(), reference, rtol=1e-4, atol=2e-5)
            for a, b in zip(grads, ref_grads):
                torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=2e-5)
            results[name, threads] = (out, grads)


@pytest.mark.parametrize("reduce", [False, True], ids=["features", "sum"])
@pytest.mark.parametrize("k", [1, 4, 9])
def test_fused_query_matches_the_float64_reference_values_and_gradients(reduce, k, monkeypatch):
    from tensorfield.cuda import local_tensors_native

    if local_tensors_native.native_library() is None:
        pytest.skip("no C compiler: the torch path is the only one")
    calls = []
    fused = local_tensors_native.query
    monkeypatch.setattr(local_tensors_native, "query", lambda *args, **kwargs: calls.append(1) or fused(*args, **kwargs))
    centres, lines64, points = random_scale(90, 5, 7, seed=13 + k)
    lines = tuple(line.detach().float().requires_grad_() for line in lines64)
    index = LocalTensorIndex.build(centres.float(), 0.35)
    reference = aggregate_reference(points, centres, 0.35, lines64, k)
    reference = reference.sum(1) if reduce else reference
    upstream = torch.randn(reference.shape, generator=torch.Generator().manual_seed(4))
    ref_grads = torch.autograd.grad((reference * upstream.double()).sum(), lines64)
    threads_before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = query_features(index, points.float(), lines, k, reduce=reduce)
            grads = torch.autograd.grad((out * upstream).sum(), lines)
            torch.testing.assert_close(out.double(), reference, rtol=1e-4, atol=2e-5)
            for a, b in zip(grads, ref_grads):
                torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=2e-5)
            results.append(grads)
    finally:
        torch.set_num_threads(threads_before)
    assert len(calls) == 2  # the fused kernel ran (both thread counts), not the two-stage path
    assert bool((reference != 0).float().mean() > 0.05)
    for a, b in zip(*results):  # backward split over components: the same floats for any thread count
        assert torch.equal(a, b)
    with torch.no_grad():  # no gradient: nothing kept, the same values
        torch.testing.assert_close(query_features(index, points.float(), lines, k, reduce=reduce).double(), reference, rtol=1e-4, atol=2e-5)


def test_native_neighbour_lookup_matches_the_torch_lookup(monkeypatch):
    from tensorfield.cuda import local_tensors_native

    if local_tensors_native.native_library() is None:
        pytest.skip("no C compiler: the torch path is the only one")
    centres, _, points = random_scale(150, 3, 1, seed=5)
    index = LocalTensorIndex.build(centres.float(), 0.25)
    native = find_neighbours(index, points.float(), 4)
    monkeypatch.setattr(local_tensors_native, "usable", lambda *tensors: False)
    plain = find_neighbours(index, points.float(), 4)
    assert native.samples.numel() > points.shape[0]  # several neighbours per sample on average
    assert torch.equal(native.samples, plain.samples) and torch.equal(native.tensors, plain.tensors)
    torch.testing.assert_close(native.weights, plain.weights, rtol=1e-5, atol=0)
    torch.testing.assert_close(native.offsets, plain.offsets)


def test_index_lists_every_tensor_whose_cube_contains_the_point():
    centres, _, points = random_scale(120, 3, 1, seed=3)
    half_extent = 0.2
    index = LocalTensorIndex.build(centres, half_extent)
    neighbours = find_neighbours(index, points, k=1000)
    found = torch.bincount(neighbours.samples, minlength=points.shape[0])
    expected = ((points[:, None, :] - centres[None]).abs() <= half_extent).all(-1).sum(1)
    assert torch.equal(found, expected) and int(expected.max()) >= 3
    # memory is bounded by the candidates per cell, not by the number of tensors
    assert index.max_candidates < centres.shape[0] // 3


def test_hand_worked_single_tensor():
    """One cube at the origin, h = 1, two cells per axis (vertices at -1, 0, 1), one component."""
    centres = torch.zeros(1, 3, dtype=torch.float64)
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(1, 3, 1)
    y = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).view(1, 3, 1)
    z = torch.tensor([2.0, 4.0, 6.0], dtype=torch.float64).view(1, 3, 1)
    points = torch.tensor([[0.5, -0.5, 0.25], [0.9, 0.9, 0.9], [1.1, 0.0, 0.0]], dtype=torch.float64)
    index = LocalTensorIndex.build(centres, 1.0)
    out = aggregate_features(find_neighbours(index, points, 4), (x, y, z), 1.0)[:, 0]
    # (0.5, -0.5, 0.25): x between 2 and 3 at 1/2 -> 2.5; y between 0 and 1 at 1/2 -> 0.5; z between
    # 4 and 6 at 1/4 -> 4.5; product 5.625. Distance 0.75: weight 1/0.750001 > 1, so the clamped
    # normalisation divides by the weight itself: the value is the product.
    assert float(out[0]) == pytest.approx(5.625, abs=1e-12)
    # (0.9, 0.9, 0.9): 2.9 * 0.1 * 5.8 = 1.682; distance sqrt(2.43) = 1.5588...: the weight
    # 1 / (1.5588 + 1e-6) stays below 1 and is not normalised away (official clamp(sum, min=1)).
    distance = math.sqrt(3 * 0.81)
    assert float(out[1]) == pytest.approx(1.682 / (distance + 1e-6), rel=1e-12)
    # outside the cube: nothing
    assert float(out[2]) == 0.0


def test_box_coverage_marks_exactly_the_cells_of_the_boxes():
    g = torch.Generator().manual_seed(0)
    lower = torch.randint(-2, 9, (12, 3), generator=g)
    upper = lower + torch.randint(0, 4, (12, 3), generator=g)
    shape = (8, 7, 9)
    covered = box_coverage(lower, upper, shape)
    cells = torch.stack(torch.meshgrid(*[torch.arange(n) for n in shape], indexing="ij"), -1)
    expected = ((cells[..., None, :] >= lower) & (cells[..., None, :] < upper)).all(-1).any(-1)
    assert torch.equal(covered, expected) and 0 < int(expected.sum()) < expected.numel()


# ------------------------------------------------------------------------------ placement
def test_placement_from_a_known_point_cloud_gives_the_expected_centres_per_scale():
    points = torch.tensor([[0.05, 0.05, 0.05], [0.15, 0.10, 0.05], [0.55, 0.05, 0.30], [5.0, 0.0, 0.0]])
    centres = place_tensors(points, UNIT_BOX * 1.5, [0.4, 0.2])  # the last point lies outside the box
    # voxels anchored at the cloud's lower corner (0.05, 0.05, 0.05)
    torch.testing.assert_close(centres[0], torch.tensor([[0.25, 0.25, 0.25], [0.65, 0.25, 0.25]]))
    torch.testing.assert_close(centres[1], torch.tensor([[0.15, 0.15, 0.15], [0.55, 0.15, 0.35]]))
    # the model scales the paper's sizes with the box: a box twice as large doubles them
    model = Strivec(tiny_config(voxel_sizes=[0.4, 0.2], half_extents=[0.3, 0.15]), scene_with_points(points * 2, UNIT_BOX * 3.0))
    torch.testing.assert_close(model.centres(0), centres[0] * 2)
    torch.testing.assert_close(model.centres(1), centres[1] * 2)
    assert model.half_extents == pytest.approx([0.6, 0.3]) and not model.in_coarse_phase


def test_voxel_centres_are_one_per_occupied_voxel():
    points = sphere_points(3000)
    centres = voxel_centres(points, 0.2)
    origin = points.amin(0)
    voxels = torch.floor((points - origin) / 0.2).long()
    assert centres.shape[0] == torch.unique(voxels, dim=0).shape[0]
    # every centre is within half a voxel diagonal of some point: no tensor far from the surface
    nearest = torch.cdist(centres, points).amin(1)
    assert float(nearest.max()) <= 0.2 * math.sqrt(3) / 2 + 1e-6


def test_coarse_phase_places_tensors_on_the_grid_geometry_only():
    config = tiny_config(coarse_steps=3, coarse_alpha_threshold=0.5)
    model = Strivec(config, SceneInfo(aabb=UNIT_BOX.clone(), near=2.0, far=6.0))
    assert model.in_coarse_phase and model.num_tensors == [0, 0] and model.occupancy is None
    assert [g.name for g in model.param_groups()] == ["coarse"]
    # a solid ball of radius 0.5 in the coarse grid
    depth, height, width, _ = model.coarse_density.shape
    axes = [torch.linspace(-1, 1, n) for n in (depth, height, width)]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    with torch.no_grad():
        model.coarse_density[..., 0] = torch.where(xx**2 + yy**2 + zz**2 <= 0.25, 30.0, -30.0)
    assert not model.after_step(0).rebuild_optimizer
    hook = model.after_step(2)
    assert hook.rebuild_optimizer and hook.refilter_rays and not model.in_coarse_phase
    assert [g.name for g in model.param_groups()] == ["vectors", "network"]
    for level, voxel in enumerate(model.voxel_sizes):
        centres = model.centres(level)
        assert centres.shape[0] > 0
        assert float(centres.norm(dim=-1).max()) <= 0.5 + voxel * math.sqrt(3)
    assert model.occupancy is not None and 0 < float(model.occupancy.mask.float().mean()) < 0.9


def test_coarse_dilation_grows_the_seed_geometry_by_whole_voxels():
    scene = SceneInfo(aabb=UNIT_BOX.clone(), near=2.0, far=6.0)
    seeds = {}
    for grow in (0, 1):
        model = Strivec(tiny_config(coarse_steps=3, coarse_alpha_threshold=0.5, coarse_dilation=grow), scene)
        with torch.no_grad():
            model.coarse_density.fill_(-30.0)
            model.coarse_density[5, 6, 7, 0] = 30.0  # one occupied vertex (z, y, x)
        seeds[grow] = model.coarse_points()
    assert seeds[0].shape[0] == 1 and seeds[1].shape[0] == 27  # the vertex and its 26 neighbours
    step = (UNIT_BOX[1] - UNIT_BOX[0]) / (torch.tensor(model.coarse_density.shape[2::-1][:3]) - 1)
    assert torch.allclose((seeds[1] - seeds[0]).abs().amax(0), step)


def test_placement_filling_the_box_warns_that_it_is_not_sparse():
    model = Strivec(tiny_config(), SceneInfo(aabb=UNIT_BOX.clone(), near=2.0, far=6.0))
    everywhere = torch.rand(5000, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with pytest.warns(UserWarning, match="not sparse"):
        model.place(everywhere)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.place(torch.rand(50, 3, generator=torch.Generator().manual_seed(1)) * 0.2)  # a small object: silent


def test_placement_points_without_a_point_cloud_is_a_one_line_error():
    with pytest.raises(ValueError, match="placement=points"):
        Strivec(tiny_config(placement="points"), SceneInfo(aabb=UNIT_BOX.clone(), near=2.0, far=6.0))
    with pytest.raises(ValueError, match="one value per scale"):
        Strivec(tiny_config(voxel_sizes=[0.6]), scene_with_points())


# ------------------------------------------------------------------------------ schedule
def test_length_schedule_follows_the_official_formula():
    # 2^linspace(log2 28, log2 120, 6) = 28, 37.5, 50.1, 67.0, 89.7, 120 -> odd floors 29, 37, 51, 67, 89, 121
    # 2^linspace(log2 14, log2 60, 6) = 14, 18.7, 25.1, 33.5, 44.9, 60 -> 15, 19, 25, 33, 45, 61
    # 2^linspace(log2 6, log2 30, 6) = 6, 8.3, 11.4, 15.8, 21.7, 30 -> 7, 9, 11, 15, 21, 31
    assert length_schedule([29, 15, 7], [121, 61, 31], 5) == [
        [37, 19, 9], [51, 25, 11], [67, 33, 15], [89, 45, 21], [121, 61, 31],
    ]


def test_upsampling_preserves_the_field_and_rebuilds_the_optimiser():
    model = Strivec(tiny_config(upsample_steps=[0]), scene_with_points())
    points = torch.rand(500, 3, generator=torch.Generator().manual_seed(2)) * 1.4 - 0.7
    with torch.no_grad():
        before_density, before_app = model.density_feature(points), model.app_features(points)
    hook = model.after_step(0)  # 3 -> 9 cells: the old vertices are among the new ones
    assert hook.rebuild_optimizer and model.lengths == [9, 9]
    assert model.density_lines[0].shape[1] == 10
    with torch.no_grad():
        torch.testing.assert_close(model.density_feature(points), before_density, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.app_features(points), before_app, rtol=1e-5, atol=1e-6)
    assert model.step_size == pytest.approx(2 * model.half_extents[0] / 9 * model.config.step_ratio)


def test_capabilities_and_output_ranges():
    model = Strivec(tiny_config(), scene_with_points())
    assert isinstance(model, RendersViews) and isinstance(model, ExportsDensityGrid)
    points = torch.rand(300, 3) * 2 - 1
    sigma = model.density(points)
    rgb = model.radiance(points, torch.randn(300, 3))
    assert sigma.shape == (300,) and bool((sigma >= 0).all())
    assert rgb.shape == (300, 3) and bool(((rgb > 0) & (rgb < 1)).all())
    alpha, box = model.density_grid((6, 7, 8))
    assert alpha.shape == (6, 7, 8) and torch.equal(box, model.aabb)


# ------------------------------------------------------------------------------ training
@pytest.mark.slow
def test_psnr_goes_up_on_an_analytic_ball_scene():
    """Point-cloud placement, 60 steps through two upsamplings and two alpha masks: ~8.7 -> ~16 dB."""
    model = Strivec(tiny_config(), scene_with_points())
    train_rays, test_rays = ball_rays(2048, seed=1), ball_rays(256, seed=2)
    before = psnr(model, test_rays)
    losses = train(model, range(60), train_rays)
    after = psnr(model, test_rays)
    assert model.lengths == [9, 9] and model.alpha_mask_updates == 2
    assert after > before + 5.0, (before, after)
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])


# ------------------------------------------------------------------------------ render cache
def test_vertices_near_cells_keeps_each_occupied_cells_corners_grown_by_one_vertex():
    cells = torch.zeros(6, 5, 4, dtype=torch.bool)
    cells[2, 1, 3] = True
    kept = vertices_near_cells(cells)
    assert kept.shape == (7, 6, 5)
    expected = torch.zeros(7, 6, 5, dtype=torch.bool)
    expected[1:5, 0:4, 2:5] = True  # corners 2..3 / 1..2 / 3..4, one more each side, clipped
    assert torch.equal(kept, expected)
    assert not vertices_near_cells(torch.zeros(3, 3, 3, dtype=torch.bool)).any()


def _render_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(max(float(((a - b) ** 2).mean()), 1e-20))


def test_render_cache_approximates_the_exact_render_and_follows_parameter_changes():
    model = Strivec(tiny_config(l1_weight_rest=0.0), scene_with_points())
    rays = ball_rays(1024, seed=1)
    train(model, range(40), rays)  # past both upsamplings and alpha masks
    origins, directions, _ = ball_rays(400, seed=6)
    model.eval()

    def render(cache_mb: float, subdivision: int = 6):
        model.config.render_cache_mb = cache_mb
        model.config.render_cache_subdivision = subdivision
        return model.render_rays(origins, directions, background=torch.ones(3))

    exact = render(0)
    assert float(exact.alpha.mean()) > 0.2 and float(exact.rgb.std()) > 0.05  # a scene worth comparing
    with torch.no_grad():
        assert model.render_cache() is None
    coarse = render(1024, subdivision=1)
    cached = render(1024)  # this tiny field is sharp for its cells: lego_100 gets 43 dB at the default 2
    with torch.no_grad():
        cache = model.render_cache()
    assert cache is not None and cache.subdivision == 6
    resolution = model.occupancy.resolution
    assert cache.density.shape == tuple(n * 6 + 1 for n in reversed(resolution))
    assert _render_psnr(cached.rgb, exact.rgb) >= 40.0
    assert _render_psnr(cached.rgb, exact.rgb) > _render_psnr(coarse.rgb, exact.rgb) + 5.0
    assert float((cached.alpha - exact.alpha).abs().mean()) < 0.01
    with torch.no_grad():
        assert model.render_cache() is cache  # reused while nothing changes

    # an in-place update (an optimiser step) rebuilds it; the render follows the new field
    with torch.no_grad():
        model.density_lines[0].mul_(0.3)
    changed_exact = render(0)
    changed = render(1024)
    with torch.no_grad():
        assert model.render_cache() is not cache
    assert float((changed_exact.alpha - exact.alpha).abs().max()) > 1e-2
    assert _render_psnr(changed.rgb, changed_exact.rgb) >= 40.0

    # a budget too small for the finer grid drops the subdivision; one too small for any: no cache
    vertices = math.prod(n + 1 for n in resolution)
    model.config.render_cache_mb = 1.5 * vertices * 4 / 2**20
    model.config.render_cache_subdivision = 2
    with torch.no_grad():
        assert model.render_cache().subdivision == 1
    model.config.render_cache_mb = 0.5 * vertices * 4 / 2**20
    with torch.no_grad():
        assert model.render_cache() is None

    # training never uses it and a training step frees it
    model.config.render_cache_mb = 1024
    with torch.no_grad():
        assert model.render_cache() is not None
    model.train()
    with torch.no_grad():
        assert model.render_cache() is None
    model.training_step(batch_of(rays, torch.arange(64)), 40)
    assert model._render_cache is None


def _round_trip(model: Strivec, config: StrivecConfig, scene: SceneInfo) -> Strivec:
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "shape_state": json.dumps(model.shape_state())}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    fresh = Strivec(config, scene)
    fresh.prepare_for_state(json.loads(saved["shape_state"]))
    fresh.load_state_dict(saved["model"])  # strict
    assert fresh.shape_state() == model.shape_state()
    return fresh


def test_checkpoint_round_trip_is_bit_exact_and_resumes_exactly():
    """Through the coarse phase, placement, an upsampling and an alpha mask; then each state
    loads into a freshly built model and the next steps agree bit for bit."""
    config = tiny_config(coarse_steps=3, upsample_steps=[2], alpha_mask_steps=[3, 4], coarse_alpha_init=0.05, coarse_alpha_threshold=0.05)
    scene = SceneInfo(aabb=UNIT_BOX.clone(), near=2.0, far=6.0)
    rays = ball_rays(1024, seed=4)
    model = Strivec(config, scene)
    train(model, range(2), rays)
    coarse = _round_trip(model, config, scene)  # mid coarse phase
    assert coarse.in_coarse_phase
    batch = batch_of(rays, torch.arange(128))
    assert float(model.training_step(batch, 2).loss) == float(coarse.training_step(batch, 2).loss)

    train(model, range(2, 3), rays, seed=1)  # placement after step 2
    with torch.no_grad():  # something solid for the alpha masks to keep
        for line in model.density_lines:
            line.fill_(1.0)
    train(model, range(3, 9), rays, seed=2)
    assert not model.in_coarse_phase and model.lengths == [9, 9] and model.alpha_mask_updates >= 1
    fresh = _round_trip(model, config, scene)
    origins, directions, _ = ball_rays(200, seed=5)
    a = model.render_rays(origins, directions, background=torch.ones(3))
    b = fresh.render_rays(origins, directions, background=torch.ones(3))
    for name in ("rgb", "depth", "alpha"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert float(model.training_step(batch, 9).loss) == float(fresh.training_step(batch, 9).loss)
    assert torch.equal(model.rng_state, fresh.rng_state)


def test_resume_through_the_trainer_is_bit_exact(tmp_path):
    """A run stopped in the coarse phase and resumed ends where the straight run ends."""
    from tensorfield.datasets.synthetic import make_scene
    from tensorfield.engine.trainer import Trainer

    torch.set_num_threads(1)
    folder = make_scene(tmp_path / "scene", resolution=12, n_train=4, n_test=1, n_val=1)
    overrides = dict(steps=6, coarse_steps=3, upsample_steps=[1], alpha_mask_steps=[2, 4], batch_size=64,
                     log_every=1, checkpoint_every=2, coarse_alpha_init=0.05, coarse_alpha_threshold=0.05)
    straight = Trainer.from_config(tiny_config(**overrides), tmp_path / "a", data_path=str(folder))
    straight.train(progress=False, final_eval=False)
    stopped = Trainer.from_config(tiny_config(**{**overrides, "steps": 2}), tmp_path / "b", data_path=str(folder))
    stopped.train(progress=False, final_eval=False)
    resumed = Trainer.from_checkpoint(tmp_path / "b", overrides=["steps=6"])
    assert resumed.step == 2
    resumed.train(progress=False, final_eval=False)
    assert not straight.model.in_coarse_phase and straight.model.shape_state() == resumed.model.shape_state()
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name

    # evaluation scores the exact model: the approximate render cache stays off and unbuilt
    straight.evaluate(save_renders=False)
    assert straight.model._render_cache is None and straight.model.allow_render_cache
    straight.model.eval()
    with torch.no_grad():
        assert straight.model.render_cache() is not None  # what the viewer and `render` use


# ------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("name", ["strivec.yaml", "strivec_small.yaml"])
def test_yaml_configs_use_exact_field_names(name):
    import yaml

    values = yaml.safe_load((CONFIGS / name).read_text())
    assert set(values) <= set(StrivecConfig.__dataclass_fields__), set(values) - set(StrivecConfig.__dataclass_fields__)
    config = replace(StrivecConfig(), **values)
    assert config.method == "strivec" and len(config.half_extents) == 3
    assert len(length_schedule(config.vector_lengths_init, config.vector_lengths_final, len(config.upsample_steps))) == 5


def test_every_option_declares_its_accepted_values():
    import dataclasses

    from tensorfield.fields.config import option_bounds

    free = {"method", "data", "tensorboard", "test_cameras", "density_shift", "lr_upsample_reset"}
    unbounded = [item.name for item in dataclasses.fields(StrivecConfig) if option_bounds(StrivecConfig, item.name) is None]
    assert sorted(set(unbounded) - free) == []
