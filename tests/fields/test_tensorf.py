"""Tests of :mod:`tensorfield.fields.tensorf` (TensoRF VM / CP)."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tensorfield.datasets.cameras import Cameras, look_at
from tensorfield.fields.base import RayBatch, RenderRequest, SceneInfo
from tensorfield.fields.factor_grids import CandecompGrids, VectorMatrixGrids
from tensorfield.fields.tensorf import (
    TensoRF,
    TensoRFConfig,
    resolve_mode,
    voxel_schedule,
    voxels_to_resolution,
)

CUBE = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_config(**overrides) -> TensoRFConfig:
    values = dict(
        method="tensorf_vm",
        steps=100,
        batch_size=256,
        voxels_init=16**3,
        voxels_final=24**3,
        upsample_steps=[30, 60],
        alpha_mask_steps=[40, 70],
        density_components=[4, 4, 4],
        app_components=[8, 8, 8],
        cp_density_components=8,
        cp_app_components=16,
        app_dim=8,
        mlp_hidden=32,
        render_chunk=512,
    )
    values.update(overrides)
    return TensoRFConfig(**values)


def scene_info(aabb=CUBE) -> SceneInfo:
    return SceneInfo(aabb=aabb.clone(), near=2.0, far=6.0)


def zero_factors(model: TensoRF) -> None:
    with torch.no_grad():
        for p in list(model.density_grids.parameters()) + list(model.app_grids.parameters()):
            p.zero_()


def set_density_box(model: TensoRF, lower, upper, value: float = 15.0) -> None:
    """Density feature ``value`` on the grid vertices ``lower <= i <= upper`` (per axis), 0 elsewhere.

    Uses VM mode 0 only: plane (x, y) and line z, component 0.
    """
    zero_factors(model)
    with torch.no_grad():
        plane, line = model.density_grids.planes[0], model.density_grids.lines[0]
        plane[lower[1] : upper[1] + 1, lower[0] : upper[0] + 1, 0] = value
        line[lower[2] : upper[2] + 1, 0] = 1.0


def vertex(model: TensoRF, index) -> torch.Tensor:
    """World position of grid vertex ``index`` of the current grid."""
    res = torch.tensor(model.resolution, dtype=torch.float32)
    lo, hi = model.aabb[0], model.aabb[1]
    return lo + torch.tensor(index, dtype=torch.float32) / (res - 1) * (hi - lo)


# ------------------------------------------------------------------------------ analytic scene
def ball_rays(n: int, seed: int):
    """Rays from a sphere of radius 4 towards points near the centre; targets: a ball of radius
    0.6 coloured sigmoid(3 p) at the hit point, white elsewhere."""
    g = torch.Generator().manual_seed(seed)
    origins = torch.randn(n, 3, generator=g)
    origins = 4.0 * origins / origins.norm(dim=-1, keepdim=True)
    targets = (torch.rand(n, 3, generator=g) * 2 - 1) * 0.9
    directions = F.normalize(targets - origins, dim=-1)
    b = (origins * directions).sum(-1)
    disc = b * b - ((origins * origins).sum(-1) - 0.36)
    t = -b - disc.clamp_min(0).sqrt()
    hit = disc > 0
    colour = torch.sigmoid(3 * (origins + t[:, None] * directions))
    rgb = torch.where(hit[:, None], colour, torch.ones(3))
    return origins, directions, rgb


def batch_of(origins, directions, rgb, ids) -> RayBatch:
    return RayBatch(origins[ids], directions[ids], rgb[ids], torch.full((len(ids),), float("nan")), torch.ones(3))


def train(model: TensoRF, steps: range, rays, seed: int = 0):
    """A minimal trainer: Adam (0.9, 0.99) with the exponential schedule, hooks, rebuilds."""
    origins, directions, rgb = rays
    g = torch.Generator().manual_seed(seed)
    base, optimizer, groups = steps.start, None, None

    def build():
        groups = model.param_groups()
        opt = torch.optim.Adam([{"params": gr.params, "lr": gr.lr} for gr in groups], betas=(0.9, 0.99))
        return opt, groups

    optimizer, groups = build()
    losses = []
    for step in steps:
        for torch_group, group in zip(optimizer.param_groups, groups):
            torch_group["lr"] = group.lr * group.decay_ratio ** ((step - base) / group.decay_steps)
        ids = torch.randint(origins.shape[0], (model.config.batch_size,), generator=g)
        out = model.training_step(batch_of(origins, directions, rgb, ids), step)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        losses.append(out.metrics["mse"])
        hook = model.after_step(step)
        if hook.rebuild_optimizer:
            optimizer, groups = build()
            base = step + 1
    return losses


def psnr(model: TensoRF, rays) -> float:
    origins, directions, rgb = rays
    out = model.render_rays(origins, directions, background=torch.ones(3))
    return -10 * math.log10(float(((out.rgb - rgb) ** 2).mean()))


# ------------------------------------------------------------------------------ structure
def test_mode_comes_from_config_or_method():
    assert resolve_mode(TensoRFConfig(method="tensorf_vm")) == "vm"
    assert resolve_mode(TensoRFConfig(method="tensorf_cp")) == "cp"
    assert resolve_mode(TensoRFConfig(method="tensorf_vm", mode="cp")) == "cp"
    with pytest.raises(ValueError):
        resolve_mode(TensoRFConfig(mode="tucker"))


def test_vm192_and_cp384_parameter_counts():
    res = 32
    vm = TensoRF(TensoRFConfig(method="tensorf_vm", voxels_init=res**3 + 4), scene_info())
    cp = TensoRF(TensoRFConfig(method="tensorf_cp", voxels_init=res**3 + 4), scene_info())
    assert vm.resolution == cp.resolution == (res, res, res)
    mlp = (150 * 128 + 128) + (128 * 128 + 128) + (128 * 3 + 3)  # in = 27 + 3 + 2*2*27 + 2*2*3
    count = lambda module: sum(p.numel() for p in module.parameters())
    assert isinstance(vm.density_grids, VectorMatrixGrids) and isinstance(cp.app_grids, CandecompGrids)
    assert count(vm.density_grids) == 3 * 16 * (res * res + res)
    assert count(vm.app_grids) == 3 * 48 * (res * res + res)
    assert count(vm.basis) == 144 * 27 and count(vm.shader) == mlp
    assert count(cp.density_grids) == 96 * 3 * res
    assert count(cp.app_grids) == 288 * 3 * res
    assert count(cp.basis) == 288 * 27 and count(cp.shader) == mlp
    assert vm.basis.bias is None
    # the paper's VM-192 at 300^3: 3 * 64 * (300^2 + 300) floats = 69.4 MB (paper: 71.8 MB)
    assert 3 * 64 * (300**2 + 300) * 4 / 1e6 == pytest.approx(69.4, abs=0.1)


def test_init_scales_follow_official():
    vm = TensoRF(tiny_config(voxels_init=40**3), scene_info())
    cp = TensoRF(tiny_config(method="tensorf_cp", voxels_init=40**3, cp_density_components=64), scene_info())
    assert float(vm.density_grids.planes[0].detach().std()) == pytest.approx(0.1, rel=0.1)
    assert float(cp.density_grids.lines[0].detach().std()) == pytest.approx(0.2, rel=0.15)


def test_construction_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = TensoRF(tiny_config(seed=7), scene_info())
    assert torch.equal(torch.get_rng_state(), state)
    b = TensoRF(tiny_config(seed=7), scene_info())
    c = TensoRF(tiny_config(seed=8), scene_info())
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.density_grids.planes[0], c.density_grids.planes[0])


def test_voxel_counts_and_schedule_match_official_numbers():
    assert voxels_to_resolution(262144, CUBE) == [64, 64, 64]  # float64 would give 63
    assert voxels_to_resolution(2097156, CUBE) == [128, 128, 128]
    assert voxels_to_resolution(27000000, CUBE) == [300, 300, 300]
    assert voxels_to_resolution(1000, torch.tensor([[0.0, 0, 0], [1, 2, 4]])) == [5, 10, 20]
    assert voxel_schedule(262144, 3375000, 5) == [437005, 728506, 1214452, 2024544, 3375001]


def test_step_size_and_sample_caps():
    model = TensoRF(tiny_config(voxels_init=262144), scene_info())
    assert model.step_size == pytest.approx(3.0 / 63 * 0.5, rel=1e-6)
    assert model.max_samples_per_ray == int(math.sqrt(3 * 64**2) / 0.5)  # cal_n_samples = 221
    capped = TensoRF(tiny_config(voxels_init=262144, max_samples=100), scene_info())
    assert capped.max_samples_per_ray == 100


# ------------------------------------------------------------------------------ field values
@pytest.mark.parametrize("method", ["tensorf_vm", "tensorf_cp"])
def test_zero_factors_give_the_shifted_softplus(method):
    model = TensoRF(tiny_config(method=method), scene_info())
    zero_factors(model)
    sigma = model.density(torch.rand(50, 3) * 3 - 1.5)
    torch.testing.assert_close(sigma, torch.full((50,), F.softplus(torch.tensor(-10.0)).item()))


@pytest.mark.parametrize("method", ["tensorf_vm", "tensorf_cp"])
def test_density_is_nonnegative_and_colour_in_unit_range(method):
    model = TensoRF(tiny_config(method=method), scene_info())
    with torch.no_grad():
        for p in model.density_grids.parameters():
            p.mul_(40.0)  # large, mixed-sign features
    points = torch.rand(400, 3) * 4 - 2  # some outside the box
    assert bool((model.density(points) >= 0).all())
    rgb = model.radiance(points, torch.randn(400, 3))
    assert rgb.shape == (400, 3) and bool(((rgb > 0) & (rgb < 1)).all())


def test_density_grid_is_official_dense_alpha():
    model = TensoRF(tiny_config(), scene_info())
    alpha, aabb = model.density_grid((5, 6, 7))
    assert alpha.shape == (5, 6, 7) and torch.equal(aabb, model.aabb)
    point = CUBE[0] + torch.tensor([2 / 4, 3 / 5, 4 / 6]) * 3.0
    sigma = model.density(point[None])
    expected = 1 - torch.exp(-sigma * model.step_size)  # step length, no distance scale
    torch.testing.assert_close(alpha[2, 3, 4], expected[0], rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------ schedule
def test_upsample_hook_rebuilds_and_preserves_the_field():
    model = TensoRF(tiny_config(upsample_steps=[5], voxels_init=12**3, voxels_final=20**3), scene_info())
    with torch.no_grad():  # smooth factors so that resampling is accurate
        for table in list(model.density_grids.parameters()) + list(model.app_grids.parameters()):
            axes = [torch.linspace(-1, 1, n) for n in table.shape[:-1]]
            mesh = torch.meshgrid(*axes, indexing="ij")
            phase = sum((k + 1) * m for k, m in enumerate(mesh))
            table.copy_(0.5 + 0.3 * torch.cos(phase[..., None] + torch.arange(table.shape[-1])))
    points = torch.rand(300, 3, generator=torch.Generator().manual_seed(0)) * 2.8 - 1.4
    dirs = F.normalize(torch.randn(300, 3), dim=-1)
    sigma, rgb = model.density(points), model.radiance(points, dirs)
    assert model.after_step(4) == model.after_step(4).__class__()  # nothing scheduled
    result = model.after_step(5)
    assert result.rebuild_optimizer and not result.refilter_rays
    assert model.resolution == (20, 20, 20)
    torch.testing.assert_close(model.density(points), sigma, rtol=0.05, atol=0.05)
    torch.testing.assert_close(model.radiance(points, dirs), rgb, rtol=0.02, atol=0.02)


def test_learning_rates_reset_or_continue_after_upsampling():
    for reset, expected in ((True, 1.0), (False, 0.1 ** (30 / 100))):
        model = TensoRF(tiny_config(lr_upsample_reset=reset), scene_info())
        groups = model.param_groups()
        assert [g.name for g in groups] == ["grids", "network"]
        assert groups[0].lr == pytest.approx(0.02) and groups[1].lr == pytest.approx(1e-3)
        assert groups[0].decay_ratio == 0.1 and groups[0].decay_steps == 100
        grid_ids = {id(p) for p in groups[0].params}
        assert grid_ids == {id(p) for p in list(model.density_grids.parameters()) + list(model.app_grids.parameters())}
        assert model.after_step(30).rebuild_optimizer
        groups = model.param_groups()
        assert groups[0].lr == pytest.approx(0.02 * expected) and groups[1].lr == pytest.approx(1e-3 * expected)
    assert TensoRF(tiny_config(lr_decay_steps=7), scene_info()).param_groups()[0].decay_steps == 7


def test_alpha_mask_excludes_empty_space_and_first_update_shrinks():
    config = tiny_config(alpha_mask_steps=[3, 6], upsample_steps=[])
    model = TensoRF(config, scene_info())
    lower, upper = (4, 6, 8), (7, 9, 10)  # vertex box of the density blob on the 16^3 grid
    set_density_box(model, lower, upper)
    inside = torch.rand(200, 3) * (vertex(model, upper) - vertex(model, lower)) + vertex(model, lower)
    sigma_inside = model.density(inside)
    assert model.l1_weight == config.l1_weight_initial and model.occupancy is None

    result = model.after_step(3)
    assert result.rebuild_optimizer and not result.refilter_rays
    assert model.l1_weight == config.l1_weight_rest
    # the mask: the blob's vertices dilated by the 3^3 max-pool, nothing else
    occupied = model.alpha_mask.nonzero()
    assert occupied.amin(0).tolist() == [l - 1 for l in lower]
    assert occupied.amax(0).tolist() == [u + 1 for u in upper]
    assert int(model.alpha_mask.sum()) == math.prod(u - l + 3 for l, u in zip(lower, upper))
    # the box shrank to those vertices and the grid was cropped, keeping the field inside
    old_vertex = lambda i: CUBE[0] + torch.tensor(i, dtype=torch.float32) / 15 * 3.0
    torch.testing.assert_close(model.aabb[0], old_vertex([l - 1 for l in lower]))
    torch.testing.assert_close(model.aabb[1], old_vertex([u + 1 for u in upper]))
    assert model.resolution == tuple(u - l + 3 for l, u in zip(lower, upper))
    torch.testing.assert_close(model.density(inside), sigma_inside, rtol=1e-5, atol=1e-6)
    # empty space is skipped by the marcher
    occupancy = model.occupancy
    far_away = torch.tensor([[1.2, 1.2, 1.2], [-1.2, -1.2, -1.2], [0.0, -1.4, 0.0]])
    assert not bool(occupancy.query(far_away).any())
    assert bool(occupancy.query(inside).all())

    result = model.after_step(6)
    assert result.refilter_rays and not result.rebuild_optimizer
    assert model.alpha_mask_updates == 2


def test_empty_alpha_mask_is_ignored_with_a_warning():
    model = TensoRF(tiny_config(alpha_mask_steps=[0]), scene_info())
    zero_factors(model)
    with pytest.warns(UserWarning, match="empty"):
        assert model.after_step(0) == model.after_step(1).__class__()
    assert model.occupancy is None and torch.equal(model.aabb, CUBE)


def test_cell_occupancy_matches_official_trilinear_mask_test():
    model = TensoRF(tiny_config(), scene_info())
    g = torch.Generator().manual_seed(1)
    model.alpha_mask = torch.rand(9, 7, 8, generator=g) > 0.8
    model.alpha_mask_aabb = torch.tensor([[-1.0, -1.2, -0.9], [1.1, 1.0, 1.3]])
    model._invalidate_occupancy()
    points = torch.rand(5000, 3, generator=g) * 2.6 - 1.3  # almost surely not on a vertex
    inside = ((points >= model.alpha_mask_aabb[0]) & (points <= model.alpha_mask_aabb[1])).all(-1)
    official = model._vertex_mask_query(points)
    assert torch.equal(model.occupancy.query(points)[inside], official[inside])


def test_ray_filter_is_bbox_only_without_mask_then_uses_the_mask():
    model = TensoRF(tiny_config(alpha_mask_steps=[0, 1], upsample_steps=[]), scene_info())
    origins = torch.tensor([[0.0, 0.0, 4.0], [0.0, 0.0, 4.0], [3.0, 3.0, 4.0], [0.0, 0.0, 4.0]])
    directions = F.normalize(torch.tensor([[0.0, 0.0, -1.0], [0.3, 0.3, -1.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]]), dim=-1)
    assert model.ray_filter(origins, directions).tolist() == [True, True, False, False]
    set_density_box(model, (6, 6, 6), (9, 9, 9))  # a blob around the centre
    model.after_step(0)
    assert model.ray_filter(origins, directions).tolist() == [True, False, False, False]


# ------------------------------------------------------------------------------ training
@pytest.mark.parametrize("method", ["tensorf_vm", "tensorf_cp"])
def test_training_step_outputs_and_gradients(method):
    model = TensoRF(tiny_config(method=method, tv_weight_density=0.1, tv_weight_app=0.1, ortho_weight=0.1), scene_info())
    rays = ball_rays(64, seed=0)
    out = model.training_step(batch_of(*rays, torch.arange(64)), 0)
    assert out.loss.ndim == 0 and math.isfinite(float(out.loss.detach()))
    assert {"mse", "l1", "tv_density", "tv_app", "ortho", "num_samples", "samples_per_ray"} <= set(out.metrics)
    assert all(isinstance(v, float) for v in out.metrics.values())
    out.loss.backward()
    for group in model.param_groups():
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in group.params), group.name


@pytest.mark.parametrize("overrides", [
    dict(method="tensorf_vm"),
    # CP's density forms later: masks after it has (an empty mask is skipped, not installed)
    dict(method="tensorf_cp", l1_weight_initial=1e-5, l1_weight_rest=1e-5, alpha_mask_steps=[70, 90]),
], ids=["vm", "cp"])
def test_psnr_goes_up_on_an_analytic_ball_scene(overrides):
    """100 steps through the whole schedule (2 upsamplings, 2 alpha masks): ~9.7 -> ~18 dB (VM)."""
    config = tiny_config(**overrides)
    model = TensoRF(config, SceneInfo(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]), near=2.0, far=6.0))
    train_rays, test_rays = ball_rays(4096, seed=1), ball_rays(512, seed=2)
    before = psnr(model, test_rays)
    losses = train(model, range(100), train_rays)
    after = psnr(model, test_rays)
    assert model.alpha_mask_updates == 2 and model.resolution != (16, 16, 16)
    assert after > before + 5.0, (before, after)
    assert after > 14.0
    assert sum(losses[-10:]) < 0.3 * sum(losses[:10])


def test_training_is_deterministic():
    rays = ball_rays(1024, seed=3)
    runs = []
    for _ in range(2):
        model = TensoRF(tiny_config(), scene_info())
        runs.append(train(model, range(8), rays))
    assert runs[0] == runs[1]


def test_checkpoint_round_trip_is_bit_exact_and_resumes_exactly():
    config = tiny_config(upsample_steps=[3, 6], alpha_mask_steps=[4, 7])
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    model = TensoRF(config, SceneInfo(aabb=aabb, near=2.0, far=6.0))
    set_density_box(model, (5, 5, 5), (10, 10, 10), value=12.0)  # something for the masks to keep
    rays = ball_rays(2048, seed=4)
    train(model, range(9), rays)
    assert model.alpha_mask_updates == 2 and model.occupancy is not None

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "shape_state": json.dumps(model.shape_state())}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    fresh = TensoRF(config, SceneInfo(aabb=aabb, near=2.0, far=6.0))
    fresh.prepare_for_state(json.loads(saved["shape_state"]))
    fresh.load_state_dict(saved["model"])  # strict
    assert fresh.shape_state() == model.shape_state()

    origins, directions, _ = ball_rays(300, seed=5)
    a = model.render_rays(origins, directions, background=torch.ones(3))
    b = fresh.render_rays(origins, directions, background=torch.ones(3))
    for name in ("rgb", "depth", "alpha"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    # the jitter generator state travels in the state dict: the next steps agree exactly
    batch = batch_of(*rays, torch.arange(256))
    assert float(model.training_step(batch, 9).loss.detach()) == float(fresh.training_step(batch, 9).loss.detach())
    assert torch.equal(model.rng_state, fresh.rng_state)


def test_render_view_shapes_and_background():
    model = TensoRF(tiny_config(render_chunk=7), scene_info())
    zero_factors(model)  # empty scene: the background shows through
    c2w = look_at(torch.tensor([0.0, -4.0, 0.0]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    cameras = Cameras.from_fov(c2w[None], 6, 5, math.radians(40))
    out = model.render_view(RenderRequest(cameras, 0, torch.tensor([0.2, 0.4, 0.6])))
    assert out.rgb.shape == (5, 6, 3) and out.depth.shape == (5, 6) and out.alpha.shape == (5, 6)
    # zero factors leave sigma = softplus(-10): ~30 samples of length 2.5 give alpha ~ 0.0035
    assert float(out.alpha.max()) < 0.01
    torch.testing.assert_close(out.rgb, torch.tensor([0.2, 0.4, 0.6]).expand(5, 6, 3), atol=0.01, rtol=0)


def test_prepare_for_state_refuses_the_other_mode():
    vm = TensoRF(tiny_config(), scene_info())
    cp = TensoRF(tiny_config(method="tensorf_cp"), scene_info())
    with pytest.raises(ValueError, match="CP"):
        vm.prepare_for_state(cp.shape_state())


# ------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("name,mode", [
    ("tensorf_vm.yaml", "vm"), ("tensorf_cp.yaml", "cp"),
    ("tensorf_vm_small.yaml", "vm"), ("tensorf_cp_small.yaml", "cp"),
])
def test_yaml_configs_use_exact_field_names(name, mode):
    import yaml

    values = yaml.safe_load((CONFIGS / name).read_text())
    fields = set(TensoRFConfig.__dataclass_fields__)
    assert set(values) <= fields, set(values) - fields
    config = replace(TensoRFConfig(), **values)
    assert resolve_mode(config) == mode
    assert len(config.upsample_steps) >= 1 and len(config.alpha_mask_steps) >= 2


# ------------------------------------------------------------------------------ render cache
@pytest.mark.parametrize("method", ["tensorf_vm", "tensorf_cp"])
def test_render_cache_gives_the_factorised_render_and_follows_parameter_changes(method):
    model = TensoRF(tiny_config(method=method, density_shift=0.0), scene_info())  # dense and coloured everywhere
    rays = ball_rays(300, seed=4)
    train(model, range(0, 45), rays)  # past an upsampling and the first alpha mask (box shrunk)
    origins, directions, _ = rays
    model.eval()

    def render(cache_mb: float):
        model.config.render_cache_mb = cache_mb
        return model.render_rays(origins, directions, background=torch.ones(3))

    plain = render(0)
    assert float(plain.alpha.mean()) > 0.3 and float(plain.rgb.std()) > 0.02  # a scene worth comparing
    with torch.no_grad():
        assert model.render_cache() is None
    cached = render(1024)
    with torch.no_grad():
        cache = model.render_cache()
    assert cache is not None and cache.app is not None
    assert cache.density.shape == (*reversed(model.resolution), 1)
    assert cache.app.shape == (*reversed(model.resolution), model.config.app_dim)
    for a, b in ((cached.rgb, plain.rgb), (cached.depth, plain.depth), (cached.alpha, plain.alpha)):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-5)
    with torch.no_grad():
        assert model.render_cache() is cache  # reused while nothing changes

    # an in-place update (what an optimiser step does) rebuilds it on the next render
    with torch.no_grad():
        model.density_grids.tables()[0].mul_(0.5)
        model.basis.weight.mul_(-1.0)
    changed_plain = render(0)
    changed = render(1024)
    with torch.no_grad():
        assert model.render_cache() is not cache
    torch.testing.assert_close(changed.rgb, changed_plain.rgb, rtol=0, atol=2e-5)
    assert float((changed.rgb - cached.rgb).abs().max()) > 1e-3

    # a budget that holds only the density: appearance stays factorised
    voxels = math.prod(model.resolution)
    model.config.render_cache_mb = 1.5 * voxels * 4 / 2**20
    density_only = render(model.config.render_cache_mb)
    with torch.no_grad():
        assert model.render_cache().app is None
    torch.testing.assert_close(density_only.rgb, changed_plain.rgb, rtol=0, atol=2e-5)
    model.config.render_cache_mb = 0.5 * voxels * 4 / 2**20
    with torch.no_grad():
        assert model.render_cache() is None

    # kept across eval/train toggles (render_frame restores the mode after each view) ...
    model.config.render_cache_mb = 1024
    with torch.no_grad():
        cache = model.render_cache()
    model.train()
    model.eval()
    with torch.no_grad():
        assert model.render_cache() is cache
    # ... never used in training mode, with gradients or when the model disallows it
    with torch.enable_grad():
        assert model.render_cache() is None
    model.allow_render_cache = False
    with torch.no_grad():
        assert model.render_cache() is None
    model.train()
    with torch.no_grad():
        assert model.render_cache() is None
    # and a training step frees it
    assert model._render_cache is not None
    model.training_step(batch_of(*rays, torch.arange(64)), 45)
    assert model._render_cache is None
