"""Tests of fields/migs.py and fields/migs_data.py: identity tables from the factors, posing
(rest pose, LBS against the data's bone transforms, a hand-worked case, skinning gradients against
float64), a short training run through the Trainer, exact resume, a round trip through a checkpoint
with render and splat export, unseen identities (add_identity, and fitting on top of a trained
model: data order, frozen model, start_identity_fit), errors."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from tensorfield.datasets.avatars import load_avatars
from tensorfield.datasets.errors import DatasetError
from tensorfield.datasets.synthetic_avatars import make_avatars
from tensorfield.engine.config import ConfigError, load_config
from tensorfield.engine.data import DataError
from tensorfield.engine.render import render_frame
from tensorfield.engine.trainer import Trainer, build_data
from tensorfield.fields.base import (
    DrivenByPoses,
    ExportsSplats,
    FitsIdentities,
    HasIdentities,
    RenderRequest,
    RendersViews,
    SceneInfo,
)
from tensorfield.fields.lowrank import cp_dense
from tensorfield.fields.migs import MIGS, MIGSConfig, cp_from_identity_tables, skin_gaussians
from tensorfield.fields.migs_data import AvatarTrainingData, migs_data
from tensorfield.fields.skeleton import (
    Skeleton,
    axis_angle_to_matrix,
    bone_distances,
    linear_blend_skinning,
)


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Three subjects (the last held out), 6 training + 2 novel-pose frames each, 32x32."""
    root = tmp_path_factory.mktemp("migs_avatars")
    return make_avatars(root / "data", n_identities=3, n_train=6, n_novel_pose=2, n_held_out=1, resolution=32, seed=4)


@pytest.fixture(scope="module")
def dataset(data_dir):
    return load_avatars(data_dir)


def small_config(**overrides) -> MIGSConfig:
    values = dict(
        method="migs", steps=60, batch_size=1, num_gaussians=400, rank=12, sh_degree=1, sh_increase_interval=30,
        nr_width=16, nr_layers=1, nr_frequencies=2, skinning_prior_until=20, backend="cpu", seed=3,
        log_every=1, checkpoint_every=0, eval_every=0, keep_checkpoints=10,
    )  # fmt: skip
    values.update(overrides)
    return MIGSConfig(**values)


def build(dataset, **overrides) -> tuple[MIGS, AvatarTrainingData]:
    config = small_config(**overrides)
    data = migs_data(config, scene=dataset)
    return MIGS(config, data.scene_info()), data


# ====================================================================== identity tables
@pytest.mark.parametrize("decomposition", ["cp", "tucker"])
def test_identity_tables_are_the_dense_reconstruction_and_start_on_each_skeleton(dataset, decomposition):
    model, _ = build(dataset, decomposition=decomposition)
    assert model.num_identities() == 2 and model.num_frames() == 3 * 8
    dense = model.tensor.dense()  # [K, F, N]
    for k in range(model.num_identities()):
        torch.testing.assert_close(model.tensor.identity(k), dense[k].T, rtol=1e-5, atol=1e-5)
        # every subject starts on its own skeleton: within init_radius of its height from a bone
        rest = model.identity_rest_joints[k]
        height = float((rest.max(0).values - rest.min(0).values).max())
        distance = bone_distances(model.canonical(k).xyz.detach().double(), model.skeleton(k)).min(1).values
        assert float(distance.max()) <= model.config.init_radius * height * 1.01
    # the two subjects differ (their skeletons do), so the start is not one shared table
    assert float((model.canonical(0).xyz - model.canonical(1).xyz).detach().abs().max()) > 1e-3


def test_cp_start_of_tables_differing_in_xyz_is_exact():
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(200, 9, generator=g)
    tables = shared.expand(3, -1, -1).clone()
    tables[:, :, :3] += 0.1 * torch.randn(3, 200, 3, generator=g)
    a, b, c = cp_from_identity_tables(tables, rank=9 + 9, xyz=slice(0, 3))
    torch.testing.assert_close(cp_dense(a, b, c).permute(0, 2, 1), tables, rtol=1e-4, atol=1e-4)
    assert torch.allclose(b.pow(2).mean(0).sqrt(), c.pow(2).mean(0).sqrt(), rtol=1e-4)  # balanced


# ====================================================================== posing
def test_rest_pose_is_the_canonical_table(dataset):
    model, _ = build(dataset)
    for non_rigid in (True, False):
        posed = model.pose(1, non_rigid=non_rigid)  # fresh MLP: zero last layer
        torch.testing.assert_close(posed.means, model.canonical(1).xyz, rtol=0, atol=1e-6)
        torch.testing.assert_close(posed.covariances, posed.canonical_covariances, rtol=1e-5, atol=1e-9)
    with torch.no_grad():
        torch.nn.init.normal_(model.deformer.out.weight, std=0.1)
    assert float((model.pose(1).means - model.canonical(1).xyz).detach().abs().max()) > 1e-4  # the MLP acts
    torch.testing.assert_close(model.pose(1, non_rigid=False).means, model.canonical(1).xyz, rtol=0, atol=1e-6)


def test_posed_means_are_lbs_with_the_data_bone_transforms(dataset, data):
    model, _ = build(dataset)
    name = data.identity_names[1]
    sequence = dataset.sequences[name]
    local = 7  # a novel-pose frame
    frame = data.global_frame(1, local)
    rotations, root = model.frame_pose(frame)
    posed = model.pose(1, rotations, root)
    weights = torch.softmax(model.skinning_logits, dim=-1)
    expected = linear_blend_skinning(model.canonical(1).xyz, weights, sequence.bone_transforms()[local].float()).points
    torch.testing.assert_close(posed.means, expected, rtol=0, atol=2e-5)


@pytest.fixture(scope="module")
def data(dataset):
    return migs_data(small_config(), scene=dataset)


def test_skinning_by_hand():
    """Two joints: root at 0, child at (1, 0, 0), both turned 90 degrees about z. G_0 = Rz90,
    G_1 = [Rz180 | (1, 1, 0)]; the point (2, 0, 0) with weights (1/4, 3/4) goes to
    0.25 (0, 2, 0) + 0.75 (-1, 1, 0) = (-0.75, 1.25, 0); a Gaussian's axis x turns with A."""
    skeleton = Skeleton([-1, 0], [[0.0, 0, 0], [1.0, 0, 0]])
    quarter = torch.tensor([[0.0, 0.0, math.pi / 2], [0.0, 0.0, math.pi / 2]], dtype=torch.float64)
    transforms = skeleton.bone_transforms(quarter).float()
    torch.testing.assert_close(transforms[1, :3, 3], torch.tensor([1.0, 1.0, 0.0]), rtol=0, atol=1e-6)
    logits = torch.log(torch.tensor([[0.25, 0.75]]))
    means, covariances, weights = skin_gaussians(
        torch.tensor([[2.0, 0.0, 0.0]]), torch.log(torch.tensor([[0.2, 0.1, 0.1]])), torch.tensor([[1.0, 0.0, 0.0, 0.0]]), logits, transforms
    )
    torch.testing.assert_close(means, torch.tensor([[-0.75, 1.25, 0.0]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(weights, torch.tensor([[0.25, 0.75]]))
    # A = 0.25 Rz90 + 0.75 Rz180: A e_x = (-0.75, 0.25, 0); Sigma = 0.04 (A e_x)(A e_x)^T + 0.01 (A e_y)(A e_y)^T + 0.01 e_z e_z^T
    ax, ay = torch.tensor([-0.75, 0.25, 0.0]), torch.tensor([-0.25, -0.75, 0.0])
    expected = 0.04 * torch.outer(ax, ax) + 0.01 * torch.outer(ay, ay) + 0.01 * torch.outer(torch.tensor([0.0, 0, 1]), torch.tensor([0.0, 0, 1]))
    torch.testing.assert_close(covariances[0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("count, joints", [(5, 3), (17, 19)])
def test_gradients_of_posed_means_wrt_skinning_logits_against_float64(count, joints):
    g = torch.Generator().manual_seed(count)
    means = torch.randn(count, 3, generator=g)
    logits = torch.randn(count, joints, generator=g)
    rotations = 0.7 * torch.randn(joints, 3, generator=g, dtype=torch.float64)
    transforms = torch.eye(4, dtype=torch.float64).repeat(joints, 1, 1)
    transforms[:, :3, :3] = axis_angle_to_matrix(rotations)
    transforms[:, :3, 3] = torch.randn(joints, 3, generator=g, dtype=torch.float64)
    weights_out = torch.randn(count, 3, generator=g)
    parameter = logits.clone().requires_grad_(True)
    posed, _, _ = skin_gaussians(means, torch.zeros(count, 3), torch.tensor([1.0, 0, 0, 0]).repeat(count, 1), parameter, transforms.float())
    (posed * weights_out).sum().backward()
    # float64 loops: x' = sum_j w_j G_j x, dx'/dl_j = w_j (G_j x - x'), w = softmax(l)
    reference = torch.zeros(count, joints, dtype=torch.float64)
    for n in range(count):
        w = torch.softmax(logits[n].double(), dim=0)
        moved = [transforms[j, :3, :3] @ means[n].double() + transforms[j, :3, 3] for j in range(joints)]
        blended = sum(w[j] * moved[j] for j in range(joints))
        for j in range(joints):
            reference[n, j] = float(w[j] * ((moved[j] - blended) @ weights_out[n].double()))
    torch.testing.assert_close(parameter.grad.double(), reference, rtol=1e-4, atol=1e-5)


# ====================================================================== rendering and training
def test_capabilities_pose_transfer_and_splats(dataset, data):
    model, _ = build(dataset)
    assert isinstance(model, RendersViews) and isinstance(model, HasIdentities) and isinstance(model, ExportsSplats)
    assert isinstance(model, DrivenByPoses) and isinstance(model, FitsIdentities)
    assert model.pose_skeleton(1).names == data.joint_names and model.pose_skeleton(1).num_joints == model.num_joints
    frames = data.split_frames("novel_pose")
    _, _, cameras = data.views(frames[:1])
    own = render_frame(model, RenderRequest(cameras, 0, data.background, frame=int(frames[0])))
    other = render_frame(model, RenderRequest(cameras, 0, data.background, identity=1, frame=int(frames[0])))
    assert own.rgb.shape == (32, 32, 3) and float(own.alpha.max()) > 0.5
    assert float((own.rgb - other.rgb).abs().max()) > 1e-3  # identity 1 in identity 0's pose
    splat = model.splat_attributes(identity=1, frame=int(frames[0]))
    assert splat.values.shape == (model.num_gaussians, len(splat.names)) and torch.isfinite(splat.values).all()
    torch.testing.assert_close(splat.values[:, :3], model.pose(1, *model.frame_pose(int(frames[0]))).means)
    held_out_frame = data.global_frame(2, 0)
    with pytest.raises(ValueError, match="shows identity 2, which has no row in the model"):
        model.render_view(RenderRequest(cameras, 0, data.background, frame=held_out_frame))


def test_training_lowers_the_loss_and_raises_psnr(dataset, tmp_path):
    trainer = Trainer.from_config(small_config(steps=80), tmp_path / "run", scene=dataset)
    before = {split: trainer.evaluate(split, save_renders=False)["psnr"] for split in ("train", "novel_pose")}
    trainer.train(progress=False, final_eval=False)
    after = {split: trainer.evaluate(split, save_renders=False)["psnr"] for split in ("train", "novel_pose")}
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r.get("loss") is not None]
    assert len(losses) == 80 and all("skinning" in r and "aiap_xyz" in r and "mask" in r for r in records if "loss" in r)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    assert after["train"] > before["train"] + 3.0 and after["novel_pose"] > before["novel_pose"] + 2.0, (before, after)


def test_training_through_the_gsplat_call_equals_the_torch_backend(dataset, tmp_path, gsplat_stand_in):
    """The CUDA path without a GPU: covariances handed to gsplat's call (answered by the stand-in
    of tests/conftest.py) train exactly like ``backend=torch``."""
    models = {}
    for backend in ("gsplat", "torch"):
        trainer = Trainer.from_config(small_config(steps=4, backend=backend), tmp_path / backend, scene=dataset)
        trainer.train(progress=False, final_eval=False)
        models[backend] = trainer.model
    assert len(gsplat_stand_in) == 4 and gsplat_stand_in[0]["covars"] is not None
    for name, value in models["torch"].state_dict().items():
        torch.testing.assert_close(models["gsplat"].state_dict()[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_exact_resume_loads_without_pickled_code(dataset, tmp_path):
    config = dict(lr_decay_steps=16, pose_noise=0.1, skinning_prior_until=5)
    straight = Trainer.from_config(small_config(steps=16, **config), tmp_path / "straight", scene=dataset)
    straight.train(progress=False, final_eval=False)
    first = Trainer.from_config(small_config(steps=8, checkpoint_every=8, **config), tmp_path / "resumed", scene=dataset)
    first.train(progress=False, final_eval=False)
    checkpoint = tmp_path / "resumed" / "checkpoints" / "step_000008.ckpt"
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)  # tensors and plain containers only
    assert json.loads(stored["shape_state"])["num_identities"] == 2
    resumed = Trainer.from_checkpoint(tmp_path / "resumed", overrides=["steps=16"], scene=dataset)
    resumed.train(progress=False, final_eval=False)
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


def test_add_identity_fits_only_the_new_row(dataset, tmp_path):
    model, data = build(dataset)
    with pytest.raises(DataError, match="has 2 identities: fit it first"):
        data.evaluate(model, "novel_identity", None)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    new = model.add_identity()
    assert new.index == 2 and model.num_identities() == 3 and len(new.parameters) == 1
    assert [p for p in model.parameters() if p.requires_grad] == new.parameters
    assert [g.name for g in model.param_groups()] == ["identity"]
    fit_data = migs_data(small_config(train_split="novel_identity"), scene=dataset)
    source = fit_data.batch_source(model, torch.device("cpu"))
    optimizer = torch.optim.Adam(new.parameters, lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for step in range(6):
        batch = source.sample(1, generator)
        assert int(batch.extras["identity"][0]) == 2
        optimizer.zero_grad()
        model.training_step(batch, step).loss.backward()
        optimizer.step()
    after = model.state_dict()
    assert float((after["tensor.identity_rows.2"] - torch.stack([before[f"tensor.identity_rows.{k}"] for k in range(2)]).mean(0)).abs().max()) > 1e-4
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    assert fit_data.evaluate(model, "novel_identity", None)["num_images"] == 6
    # the added row survives a checkpoint round trip (shape_state, then load_state_dict)
    fresh, _ = build(dataset)
    fresh.prepare_for_state(json.loads(json.dumps(model.shape_state())))
    fresh.load_state_dict(model.state_dict())
    assert fresh.num_identities() == 3
    torch.testing.assert_close(fresh.canonical(2).xyz, model.canonical(2).xyz, rtol=0, atol=0)


# ====================================================================== errors
def test_bad_config_key_and_bad_data_are_one_line(data_dir, tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["rnak=5"], method="migs")
    assert str(err.value) == "override rnak=5: unknown key 'rnak' for method migs (did you mean 'rank'?)"
    with pytest.raises(ConfigError, match="decomposition must be one of 'cp', 'tucker', got 'tt'"):
        load_config(None, ["decomposition=tt"], method="migs")
    broken = shutil.copytree(data_dir, tmp_path / "broken")
    (broken / "subject_1" / "poses.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError) as err:
        build_data(small_config(), broken)
    assert str(err.value).startswith("subject_1/poses.npz: unreadable file") and "\n" not in str(err.value)
    other = shutil.copytree(data_dir, tmp_path / "other_tree")
    skeleton = json.loads((other / "subject_1" / "skeleton.json").read_text())
    skeleton["parents"][4] = 2  # the head hangs from the chest
    (other / "subject_1" / "skeleton.json").write_text(json.dumps(skeleton))
    with pytest.raises(DatasetError, match=r"^subject_1/skeleton.json: parents .* differ from 'subject_0'"):
        build_data(small_config(), other)
    with pytest.raises(ValueError, match="MIGS needs avatar data"):
        MIGS(small_config(), SceneInfo(torch.tensor([[-1.0] * 3, [1.0] * 3]), 0.1, 5.0))


# ====================================================================== round trip
@pytest.mark.parametrize("decomposition", ["cp", "tucker"])
def test_avatar_round_trip_through_checkpoint_render_and_splat_export(dataset, data, tmp_path, decomposition):
    """Train, checkpoint, reload: the same parameters, renders and splats; the splat PLY written
    and read back holds the posed Gaussians (means, covariances from its scales and rotations)."""
    from tensorfield.cuda.rasterize import covariance_from_scales_quats
    from tensorfield.engine.export import read_splat_ply, write_splat_ply

    trainer = Trainer.from_config(small_config(steps=6, checkpoint_every=6, decomposition=decomposition), tmp_path / "run", scene=dataset)
    trainer.train(progress=False, final_eval=False)
    loaded = Trainer.from_checkpoint(tmp_path / "run", scene=dataset)
    assert loaded.step == 6 and loaded.model.active_sh_degree == trainer.model.active_sh_degree
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value), name
    frame = int(data.split_frames("novel_pose")[1])
    _, _, cameras = data.views(torch.tensor([frame]))
    request = RenderRequest(cameras, 0, data.background, identity=1, frame=frame)
    assert torch.equal(render_frame(loaded.model, request).rgb, render_frame(trainer.model, request).rgb)
    splats = loaded.model.splat_attributes(identity=1, frame=frame)
    assert torch.equal(splats.values, trainer.model.splat_attributes(identity=1, frame=frame).values)
    column = {name: i for i, name in enumerate(splats.names)}
    pick = lambda *names: splats.values[:, [column[n] for n in names]]
    rest = [n for n in splats.names if n.startswith("f_rest_")]
    count = splats.values.shape[0]
    write_splat_ply(
        tmp_path / "splat.ply", pick("x", "y", "z"), pick("f_dc_0", "f_dc_1", "f_dc_2"),
        pick(*rest).reshape(count, 3, -1).transpose(1, 2), splats.values[:, column["opacity"]],
        pick("scale_0", "scale_1", "scale_2"), pick("rot_0", "rot_1", "rot_2", "rot_3"),
    )  # fmt: skip
    stored = read_splat_ply(tmp_path / "splat.ply")
    posed = loaded.model.pose(1, *loaded.model.frame_pose(frame))
    np.testing.assert_allclose(stored.means, posed.means.detach().numpy(), rtol=0, atol=1e-6)
    covariances = covariance_from_scales_quats(torch.from_numpy(stored.log_scales).exp(), torch.from_numpy(stored.quats))
    torch.testing.assert_close(covariances, posed.covariances.detach(), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(torch.sigmoid(torch.from_numpy(stored.opacity_logits)).numpy(), posed.opacities.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stored.sh_dc, posed.sh[:, 0].detach().numpy(), rtol=0, atol=1e-6)


# ====================================================================== fitting on top of a trained model
def test_fit_rows_order_of_the_data_and_frozen_model(dataset, data):
    fit = migs_data(small_config(train_split="novel_identity", identity_rows=["subject_0", "subject_1"]), scene=dataset)
    assert fit.identity_names == ["subject_0", "subject_1", "subject_2"] and fit.new_identities == ["subject_2"]
    frames = fit.training_frames()
    assert len(frames) == 6 and set(fit.frame_table["identity"][frames].tolist()) == {2}  # novel_identity only
    assert fit.eval_splits()[:2] == ("novel_identity_pose", "novel_identity")
    assert torch.equal(fit.frame_camera(identity=2).c2w, data.views(torch.tensor([data.global_frame(2, 0)]))[2].c2w)
    model = MIGS(small_config(train_split="novel_identity", identity_rows=["subject_0", "subject_1"]), fit.scene_info())
    assert model.num_identities() == 3 and model.known_rows == 2
    assert [p for p in model.parameters() if p.requires_grad] == [model.tensor.identity_rows[2]]
    assert [g.name for g in model.param_groups()] == ["identity"]
    # a data set showing only the new subject: the trained rows keep their places, without frames
    alone = load_avatars(dataset.root, identities=["subject_2"])
    only = migs_data(small_config(train_split="novel_identity", identity_rows=["subject_0", "subject_1"]), scene=alone)
    assert only.identity_names == ["subject_0", "subject_1", "subject_2"] and only.num_frames == 8
    assert set(only.frame_table["identity"].tolist()) == {2} and only.scene_info().joint_names == data.joint_names
    with pytest.raises(DatasetError, match="split 'novel_identity' shows no identity the model lacks"):
        migs_data(small_config(train_split="novel_identity", identity_rows=["subject_0", "subject_1", "subject_2"]), scene=dataset)


def test_start_identity_fit_takes_the_trained_values_and_refuses_other_structures(dataset):
    base, _ = build(dataset)
    with torch.no_grad():
        base.skinning_logits.add_(0.5)
        base.deformer.out.weight.normal_()
    fit_config = dict(train_split="novel_identity", identity_rows=["subject_0", "subject_1"])
    fitted, fit = build(dataset, **fit_config)
    assert fitted.start_identity_fit(base) == [2]
    assert torch.equal(fitted.skinning_logits, base.skinning_logits) and torch.equal(fitted.deformer.out.weight, base.deformer.out.weight)
    for k in range(2):
        assert torch.equal(fitted.tensor.identity_rows[k], base.tensor.identity_rows[k])
        torch.testing.assert_close(fitted.canonical(k).xyz, base.canonical(k).xyz, rtol=0, atol=0)
    torch.testing.assert_close(fitted.tensor.identity_rows[2], base.tensor.identity_factors.mean(0).detach())
    assert not fitted.skinning_logits.requires_grad and fitted.tensor.identity_rows[2].requires_grad
    with pytest.raises(ValueError, match="needs a model built with identity_rows"):
        build(dataset)[0].start_identity_fit(base)
    other, _ = build(dataset, rank=10, **fit_config)
    with pytest.raises(ValueError, match=r"the base model's tensor.gaussian_factors \(400, 12\) does not fit this model's \(400, 10\)"):
        other.start_identity_fit(base)
