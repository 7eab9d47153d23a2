"""Gaussian models rendered and trained through the rasteriser on tiny synthetic scenes:
depth convention, loss going down for 3DGS and 4DGS, exact resume through densification."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("tensorfield.cuda.rasterize")

from tensorfield.datasets.cameras import Cameras, look_at
from tensorfield.datasets.scene import load_scene
from tensorfield.datasets.synthetic import make_scene
from tensorfield.engine.trainer import Trainer
from tensorfield.fields.base import RenderRequest, SceneInfo
from tensorfield.fields.gaussians import GaussianConfig, GaussianSplatting

BACKEND = "torch"


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("gaussian_scenes")
    return {
        kind: load_scene(make_scene(root / kind, kind=kind, resolution=24, n_train=8, n_test=2, n_val=0, seed=1))
        for kind in ("static", "dynamic")
    }


def train_config(dim: int, **overrides) -> GaussianConfig:
    values = dict(
        method=f"gaussians{dim}d", steps=40, batch_size=2, init_points=250, seed=2, backend=BACKEND,
        lr_means=1.6e-3, sh_increase_interval=15, densify_from=8, densify_interval=8, densify_until=35,
        opacity_reset_interval=1000, log_every=1, checkpoint_every=0, eval_every=0, keep_checkpoints=10,
    )
    values.update(overrides)
    return GaussianConfig(**values)


def test_depth_is_distance_along_the_ray():
    """A flat opaque Gaussian facing the camera at z = 3: depth / alpha = 3 / (ray z) per pixel."""
    config = GaussianConfig(method="gaussians3d", sh_degree=0, backend=BACKEND)
    scene = SceneInfo(torch.tensor([[-2.0, -2, -2], [2, 2, 2]]), 0.5, 6.0, points=torch.zeros(1, 3), points_rgb=torch.full((1, 3), 0.25))
    model = GaussianSplatting(config, scene)
    with torch.no_grad():
        model.log_scales.copy_(torch.tensor([[math.log(2.0), math.log(2.0), math.log(1e-4)]]))
        model.opacity_logits.fill_(8.0)
    pose = look_at(torch.tensor([0.0, 0.0, -3.0]), torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]))
    cameras = Cameras.from_fov(pose[None], 16, 12, fov_x=0.8)
    out = model.render_view(RenderRequest(cameras, 0, torch.ones(3)))
    assert out.rgb.shape == (12, 16, 3) and out.depth.shape == (12, 16) and out.alpha.shape == (12, 16)
    centre = out.alpha > 0.9
    assert int(centre.sum()) > 20
    _, directions = cameras.generate_rays(0)
    ray_z = (directions @ cameras.c2w[0, :, :3])[..., 2]
    assert torch.allclose((out.depth / out.alpha)[centre], (3.0 / ray_z)[centre], rtol=1e-3)
    composited = 0.25 * out.alpha + (1.0 - out.alpha)  # on the white background
    assert torch.allclose(out.rgb[centre], composited[centre, None].expand(-1, 3), atol=1e-3)


@pytest.mark.parametrize("dim", [3, 4])
def test_rasteriser_sh_equals_the_model_colours(dim, monkeypatch):
    """The SH table handed to the rasteriser (4D: collapsed to the frame's time) renders exactly
    what the model's own colours (:meth:`GaussianSplatting.colors`) render, in every active degree."""
    config = GaussianConfig(method=f"gaussians{dim}d", init_points=300, seed=3, backend="cpu", time_degree=2 if dim == 4 else 0)
    scene = SceneInfo(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]), 0.5, 6.0, is_dynamic=dim == 4)
    model = GaussianSplatting(config, scene)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        model.sh_rest.copy_(0.3 * torch.randn(model.sh_rest.shape, generator=g))
        model.opacity_logits.fill_(0.0)
        if dim == 4:
            model.quats_right.copy_(torch.randn(model.quats_right.shape, generator=g))
    model.active_sh_degree = 3
    if dim == 4:
        model.active_time_degree = 2
    pose = look_at(torch.tensor([0.3, -0.5, -3.0]), torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]))
    cameras = Cameras.from_fov(pose[None], 24, 20, fov_x=0.9)
    table = model.render_view(RenderRequest(cameras, 0, torch.ones(3), 0.4)).rgb
    monkeypatch.setattr(GaussianSplatting, "_raster_colors", lambda self, gaussians, center: (self.colors(gaussians, center), None))
    own = model.render_view(RenderRequest(cameras, 0, torch.ones(3), 0.4)).rgb
    assert float((own - 1.0).abs().mean()) > 0.05  # something is drawn
    assert torch.allclose(table, own, atol=2e-5)


@pytest.mark.parametrize("dim", [3, 4])
def test_training_lowers_the_loss_and_densifies(dim, scenes, tmp_path):
    scene = scenes["dynamic" if dim == 4 else "static"]
    trainer = Trainer.from_config(train_config(dim), tmp_path / "run", scene=scene)
    trainer.train(progress=False, final_eval=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r and r.get("loss") is not None]
    assert len(losses) == 40
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8
    model = trainer.model
    assert model.num_gaussians != 250  # densification happened
    for name in model.per_gaussian_names:
        p = getattr(model, name)
        assert trainer.optimizer.state[p]["exp_avg"].shape == p.shape


@pytest.mark.parametrize("dim", [3, 4])
def test_training_through_the_gsplat_call_equals_the_torch_backend(dim, scenes, tmp_path, gsplat_stand_in):
    """The CUDA training path without a GPU: ``backend=gsplat`` with gsplat's call answered by the
    stand-in of ``tests/conftest.py`` (the torch backend in gsplat's layout) trains exactly like
    ``backend=torch``: the same losses, the same densification (from the means2d gradient gsplat
    hands back) and the same parameters."""
    scene = scenes["dynamic" if dim == 4 else "static"]
    models = {}
    for backend in ("gsplat", "torch"):
        trainer = Trainer.from_config(train_config(dim, steps=20, densify_until=18, backend=backend), tmp_path / backend, scene=scene)
        trainer.train(progress=False, final_eval=False)
        models[backend] = trainer.model
    assert len(gsplat_stand_in) >= 20  # every training view went through the gsplat call
    assert models["gsplat"].num_gaussians == models["torch"].num_gaussians != 250
    for name, value in models["torch"].state_dict().items():
        torch.testing.assert_close(models["gsplat"].state_dict()[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_exact_resume_through_densification(scenes, tmp_path):
    scene = scenes["dynamic"]
    # densify at 8 | 16, 24; the mean learning rate decays over 26 steps in both runs
    config = train_config(4, steps=26, checkpoint_every=12, densify_from=4, lr_means_steps=26)
    straight = Trainer.from_config(config, tmp_path / "straight", scene=scene)
    straight.train(progress=False, final_eval=False)

    first = Trainer.from_config(train_config(4, steps=12, checkpoint_every=12, densify_from=4, lr_means_steps=26), tmp_path / "resumed", scene=scene)
    first.train(progress=False, final_eval=False)
    count_at_checkpoint = first.model.num_gaussians
    resumed = Trainer.from_checkpoint(tmp_path / "resumed", overrides=["steps=26"], scene=scene)
    assert resumed.model.num_gaussians == count_at_checkpoint != 250
    resumed.train(progress=False, final_eval=False)
    assert resumed.model.num_gaussians == straight.model.num_gaussians != count_at_checkpoint
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


def test_rigidity_loss_trains_and_resumes_exactly(scenes, tmp_path):
    """4DGS with the official rigidity and motion losses: both are logged every step, and a
    run resumed between two neighbour refreshes (rigid_knn_interval 5, checkpoint at step 12) and
    across densifications continues bit for bit (the neighbours are checkpointed)."""
    scene = scenes["dynamic"]
    extra = dict(rigid_weight=1.0, rigid_knn_interval=5, rigid_neighbours=8, motion_weight=0.01, densify_from=4, lr_means_steps=26)
    straight = Trainer.from_config(train_config(4, steps=26, checkpoint_every=12, **extra), tmp_path / "straight", scene=scene)
    straight.train(progress=False, final_eval=False)
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    rigid = [r["rigid"] for r in records if "rigid" in r]
    assert len(rigid) == 26 and all(math.isfinite(v) and v >= 0 for v in rigid)
    assert sum(1 for r in records if "motion" in r) == 26

    first = Trainer.from_config(train_config(4, steps=12, checkpoint_every=12, **extra), tmp_path / "resumed", scene=scene)
    first.train(progress=False, final_eval=False)
    assert first.model.rigid_neighbours.shape[1] == 8
    resumed = Trainer.from_checkpoint(tmp_path / "resumed", overrides=["steps=26"], scene=scene)
    assert torch.equal(resumed.model.rigid_neighbours, first.model.rigid_neighbours)
    resumed.train(progress=False, final_eval=False)
    assert resumed.model.num_gaussians == straight.model.num_gaussians != 250
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


def test_tsdf_mesh_of_a_4d_model_follows_time():
    """``extract_mesh`` of a 4D model fuses renders at the requested time: two opaque blobs that
    exist at t = 0.2 (left) and t = 0.8 (right) give meshes on the matching side."""
    from tensorfield.datasets.cameras import orbit_poses
    from tensorfield.engine.export import extract_mesh

    g = torch.Generator().manual_seed(0)
    count = 400
    directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=g), dim=-1)
    side = torch.where(torch.arange(count) < count // 2, -1.0, 1.0)
    points = 0.35 * directions + torch.stack([0.6 * side, torch.zeros(count), torch.zeros(count)], -1)
    config = GaussianConfig(method="gaussians4d", init_points=count, seed=0, backend="cpu", sh_degree=0)
    model = GaussianSplatting(config, SceneInfo(torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]]), 0.5, 8.0,
                                                points=points, points_rgb=torch.full((count, 3), 0.6), is_dynamic=True))
    with torch.no_grad():
        model.times.copy_(torch.where(side < 0, 0.2, 0.8))
        model.log_scale_t.fill_(math.log(0.08))
        model.log_scales.fill_(math.log(0.12))
        model.opacity_logits.fill_(6.0)
    cameras = Cameras.from_fov(orbit_poses(16, 3.5, elevation_deg=25.0), 48, 48, math.radians(50.0))
    centres = {}
    for time in (0.2, 0.8):
        cams = Cameras.from_fov(cameras.c2w, 48, 48, math.radians(50.0), times=torch.full((16,), time))
        mesh = extract_mesh(model, cameras=cams, background=torch.ones(3), time=time)
        assert len(mesh.faces) > 100
        centres[time] = float(torch.as_tensor(mesh.vertices).double().mean(0)[0])
    assert centres[0.2] < -0.3 and centres[0.8] > 0.3, centres
