"""Einstein fields (fields/einfield.py, fields/einfield_targets.py): the network's jets against
float64 references, a tiny trained field against the analytic metric, SOAP/Adam exact resumes and
the CLI (train, eval, export slices)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from tensorfield.app.cli import main
from tensorfield.app.commands import packaged_config
from tensorfield.engine.config import load_config
from tensorfield.engine.trainer import Trainer
from tensorfield.fields.config import option_bounds
from tensorfield.fields.einfield import (
    EinField,
    EinFieldConfig,
    TimeDependentEinField,
    build_einfield,
)
from tensorfield.fields.einfield_targets import EinFieldData, einfield_data, slice_quantity
from tensorfield.fields.relativity import christoffels_at, curvature
from torch.autograd.functional import hessian, jacobian

FREE = {"method", "data", "tensorboard", "render_background"}
# a box outside the horizon, away from the singularity: x, y, z in [1, 2.5]
TINY = [
    "domain_min=[0.0,1.0,1.0,1.0]",
    "domain_max=[0.0,2.5,2.5,2.5]",
    "grid_size=6",
    "dtype=float64",
    "hidden=32",
    "layers=2",
    "lr=1e-2",
    "lr_final=1e-4",
    "eval_points=128",
]


@pytest.fixture
def one_thread():
    """One intra-op thread: these tiny networks are dispatch-bound, and on a shared 2-core machine
    two OpenMP threads spin-wait each other (about 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(*overrides: str) -> EinFieldConfig:
    return load_config(str(packaged_config("einfield_small.yaml")), [*TINY, *overrides])


def test_every_option_declares_its_accepted_values():
    unbounded = [f.name for f in dataclasses.fields(EinFieldConfig) if option_bounds(EinFieldConfig, f.name) is None]
    assert sorted(set(unbounded) - FREE) == []


RADIAL = ("spacetime=kerr_ks", "spin=0.6", "radial_features=true", "radial_envelope=true")


@pytest.mark.parametrize(
    "activation, fourier, extra",
    [("silu", 0, ()), ("gelu", 3, ()), ("siren", 0, ()), ("silu", 2, RADIAL), ("gelu", 0, RADIAL[:3]), ("silu", 0, (*RADIAL[:2], RADIAL[3]))],
)
def test_network_jets_equal_reverse_mode_and_finite_differences(activation, fourier, extra):
    config = tiny_config(f"activation={activation}", f"fourier_features={fourier}", "siren_omega=3.0", *extra)
    model = build_einfield(config, EinFieldData(config).scene_info())
    coords = torch.tensor([[0.0, 1.2, 1.7, 2.1], [0.0, 2.4, 1.1, 1.3]], dtype=torch.float64)
    values, jac, hess = model.jets(coords, order=2, method="jacfwd")
    assert values.shape == (2, 10) and jac.shape == (2, 10, 4) and hess.shape == (2, 10, 4, 4)
    # the explicit tangent propagation (the training default) gives the same jets
    for fast, reference in zip(model.jets(coords, order=2, method="explicit"), (values, jac, hess)):
        torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-13)
    for n in range(2):
        reference = jacobian(model.components, coords[n])  # reverse mode, [10, 4]
        torch.testing.assert_close(jac[n], reference, rtol=1e-10, atol=1e-12)
        for c in range(10):
            torch.testing.assert_close(hess[n, c], hessian(lambda x, c=c: model.components(x)[c], coords[n]), rtol=1e-9, atol=1e-11)
        # central differences, step 1e-5: error O(h^2) ~ 1e-10 of the derivatives
        h = 1e-5
        steps = torch.eye(4, dtype=torch.float64) * h
        central = torch.stack([(model.components(coords[n] + e) - model.components(coords[n] - e)) / (2 * h) for e in steps], -1)
        torch.testing.assert_close(jac[n], central, rtol=1e-6, atol=1e-8)


def test_radial_options_learn_the_distortion_times_r_over_m_from_unit_vector_and_m_over_r():
    config = tiny_config(*RADIAL)
    model = build_einfield(config, EinFieldData(config).scene_info())
    coords = torch.tensor([[0.0, 1.2, 1.7, 2.1], [0.0, 2.4, 1.1, 1.3]], dtype=torch.float64)
    radius = model.spacetime.radius(coords)
    torch.testing.assert_close(model.envelope(coords), config.mass / radius)
    features = model.radial_inputs(coords)
    torch.testing.assert_close(features[:, :3], coords[:, 1:] / coords[:, 1:].norm(dim=1, keepdim=True))
    torch.testing.assert_close(features[:, 3], config.mass / radius)
    # the output is the bare network (on coordinates + features) times M / r
    u = (coords - model.center) / model.half_extent
    bare = model.net(torch.cat([u, features], dim=1))
    torch.testing.assert_close(model.components(coords), bare * (config.mass / radius)[:, None])
    with pytest.raises(ValueError, match="central mass"):
        build_einfield(tiny_config("spacetime=gw_tt", "radial_features=true"), EinFieldData(tiny_config()).scene_info())
    with pytest.raises(ValueError, match="target: distortion"):
        build_einfield(tiny_config(*RADIAL, "target=full"), EinFieldData(tiny_config()).scene_info())


def test_float32_network_jacobian_against_float64_copy():
    config = tiny_config("dtype=float32")
    model = build_einfield(config, EinFieldData(config).scene_info())
    double = build_einfield(dataclasses.replace(config, dtype="float64"), EinFieldData(config).scene_info())
    double.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    coords = torch.rand(16, 4, dtype=torch.float64) + 1
    _, jac32, _ = model.jets(coords)
    _, jac64, _ = double.jets(coords)
    assert jac32.dtype == torch.float32  # the chart's flat metric must not promote the tangents
    torch.testing.assert_close(jac32.double(), jac64, rtol=1e-4, atol=1e-5)


def test_metric_is_flat_plus_distortion_and_feeds_the_curvature_code():
    config = tiny_config()
    model = build_einfield(config, EinFieldData(config).scene_info())
    with torch.no_grad():
        model.net[-1].weight.zero_()
        model.net[-1].bias.zero_()
    coords = torch.rand(5, 4, dtype=torch.float64) + 1
    g = model.metric_function()(coords)
    assert g.shape == (5, 4, 4)
    torch.testing.assert_close(g, torch.diag(torch.tensor([-1.0, 1, 1, 1], dtype=torch.float64)).expand(5, 4, 4))
    geometry = curvature(model.metric, coords)  # a zero distortion: flat space
    assert geometry.christoffel.abs().max() == 0 and geometry.kretschmann.abs().max() == 0
    assert model.chart_is_cartesian and model.horizon_radius() == pytest.approx(2.0)
    full = build_einfield(dataclasses.replace(config, target="full"), EinFieldData(config).scene_info())
    torch.testing.assert_close(full.metric(coords), full.net((coords - full.center) / full.half_extent)[..., [0, 1, 2, 3, 1, 4, 5, 6, 2, 5, 7, 8, 3, 6, 8, 9]].reshape(5, 4, 4))


def test_training_targets_are_the_analytic_distortion_and_its_jets():
    data = EinFieldData(tiny_config("hessian_weight=1.0"))
    assert data.coords.shape == (216, 4) and data.values.shape == (216, 10)
    assert data.jacobians.shape == (216, 10, 4) and data.hessians.shape == (216, 10, 4, 4)
    x, y, z = data.coords[:, 1], data.coords[:, 2], data.coords[:, 3]
    r = torch.sqrt(x**2 + y**2 + z**2)
    torch.testing.assert_close(data.values[:, 0], 2 / r)  # g_tt - eta_tt = 2M/r (l_t = 1)
    torch.testing.assert_close(data.values[:, 4], 2 * x**2 / r**3)  # 2M/r (x/r)^2
    torch.testing.assert_close(data.jacobians[:, 0, 1], -2 * x / r**3)  # d_x (2/r)
    torch.testing.assert_close(data.hessians[:, 0, 1, 1], -2 / r**3 + 6 * x**2 / r**5)


def test_analytic_slice_kretschmann_is_48_m2_over_r6():
    config = tiny_config("mass=1.5")
    data = EinFieldData(config)
    coords = data.held_out_points()[:32]
    r = coords[:, 1:].norm(dim=1)
    torch.testing.assert_close(slice_quantity(data.spacetime.metric, coords, "kretschmann"), 48 * 1.5**2 / r**6, rtol=1e-10, atol=0)


def test_tiny_trained_field_matches_the_analytic_metric(one_thread, tmp_path):
    """300 Adam steps (full batch of the 6^3 grid, float64, 2 x 32 SiLU, Jacobian loss; ~5 s):
    held-out metric within 2e-2, Christoffels within 0.25, Kretschmann within 0.8 (relative L2),
    each far below the untrained field's."""
    config = tiny_config("steps=300", "checkpoint_every=0", "log_every=100")
    trainer = Trainer.from_config(config, tmp_path / "run")
    before = trainer.evaluate(save_renders=False)
    summary = trainer.train(progress=False)
    after = summary["eval"]
    assert after["metric_rel_l2"] < 2e-2 and after["metric_rel_l2"] < before["metric_rel_l2"] / 10
    assert after["christoffel_rel_l2"] < 0.25 and after["christoffel_rel_l2"] < before["christoffel_rel_l2"] / 3
    assert after["kretschmann_rel_l2"] < 0.8
    # the model's Christoffels at held-out points against the analytic ones, directly
    data = trainer.data
    coords = data.held_out_points()[:64]
    predicted = christoffels_at(trainer.model.metric, coords)
    truth = christoffels_at(data.spacetime.metric, coords)
    assert float((predicted - truth).detach().norm() / truth.norm()) < 0.25


@pytest.mark.parametrize("optimizer", ["adam", "soap"])
def test_resume_is_exact(optimizer, one_thread, tmp_path):
    overrides = [f"optimizer={optimizer}", "soap_precondition_frequency=2", "steps=8", "checkpoint_every=4", "keep_checkpoints=0", "batch_size=64", "log_every=4"]
    config = tiny_config(*overrides)
    straight = Trainer.from_config(config, tmp_path / "straight")
    straight.train(progress=False, final_eval=False)
    if optimizer == "soap":
        from pytorch_optimizer import SOAP

        assert isinstance(straight.optimizer, SOAP)
    else:
        assert isinstance(straight.optimizer, torch.optim.Adam)
    resumed = Trainer.from_checkpoint(tmp_path / "straight" / "checkpoints" / "step_000004.ckpt", run_dir=tmp_path / "resumed")
    assert resumed.step == 4
    resumed.train(progress=False, final_eval=False)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert type(resumed.optimizer) is type(straight.optimizer)


def test_time_dependent_spacetime_has_time_and_honours_slice_time():
    config = tiny_config("spacetime=gw_tt", "amplitude=0.1", "frequency=2.0", "domain_min=[0.0,-1.0,-1.0,-1.0]", "domain_max=[3.0,1.0,1.0,1.0]", "target=full", "grid_size=3", "time_samples=3")
    data = EinFieldData(config)
    model = build_einfield(config, data.scene_info())
    assert isinstance(model, TimeDependentEinField) and model.time_span() == (0.0, 1.0)
    request = dataclasses.replace(model.default_slice(), resolution=4, time=0.5)
    points = request.points()
    truth = 1 + 0.1 * torch.cos(2.0 * (1.5 - points[..., 3]))  # h_xx = A cos(w (t - z)) at t = 0.5 * 3
    network = model.field_slice(dataclasses.replace(request, component="g_xx"))
    torch.testing.assert_close(model.field_slice(dataclasses.replace(request, component="error_g_xx")), network - truth)
    earlier = model.field_slice(dataclasses.replace(request, component="g_xx", time=0.0))
    assert not torch.allclose(earlier, network)  # the time reached the network
    static = build_einfield(tiny_config(), EinFieldData(tiny_config()).scene_info())
    assert type(static) is EinField and not hasattr(static, "time_span")


def test_cli_train_eval_export_slices(one_thread, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "einfield_small", "--out", str(run), "--no-progress", "steps=20", "grid_size=5", "eval_points=64"]) == 0
    assert (run / "eval.json").exists()
    capsys.readouterr()
    assert main(["eval", str(run), "--no-renders"]) == 0
    printed = capsys.readouterr().out
    for key in ("metric_rel_l2", "christoffel_rel_l2", "riemann_rel_l2", "kretschmann_rel_l2", "kretschmann_outside_2m_rel_l2"):
        assert key in printed
    stored = json.loads((run / "eval.json").read_text())
    assert 0 < stored["metric_rel_l2"] < 10
    out = tmp_path / "slices"
    code = main(["export", str(run), "slices", "--quantity", "kretschmann", "--quantity", "g_tt", "--quantity", "error_g_tt", "--time", "0", "--resolution", "16", "--log", "--out", str(out)])
    assert code == 0
    import imageio.v2 as imageio

    for name in ("kretschmann", "g_tt", "error_g_tt"):
        values = np.load(out / f"{name}.npy")
        assert values.shape == (16, 16) and np.isfinite(values).all()
        figure = imageio.imread(out / f"{name}.png")
        assert figure.shape[0] > 16 and figure.shape[1] > 16 + 16  # the map plus the colour bar
    # g_tt's error is the network's g_tt minus -(1 - 2M/r)
    config = load_config(str(run / "config.yaml"), [])
    assert np.allclose(np.load(out / "error_g_tt.npy"), np.load(out / "g_tt.npy") - _analytic_g_tt(config, 16), atol=1e-5)
    assert main(["export", str(run), "slice", "--component", "det", "--out", str(tmp_path / "det.npy")]) == 0
    assert main(["export", str(run), "slices", "--quantity", "nope", "--out", str(out)]) != 0
    assert "unknown slice component 'nope'" in capsys.readouterr().err


def _analytic_g_tt(config, resolution):
    model = build_einfield(config, einfield_data(config).scene_info())
    points = dataclasses.replace(model.default_slice(), resolution=resolution).points()
    r = points[..., 1:].norm(dim=-1)
    return (-(1 - 2 * config.mass / r)).numpy()


def test_render_view_traces_the_learned_metric(one_thread):
    """An 8 x 8 lensed view down the axis at the hole (exact Christoffels of the network): the
    centre falls into the horizon, the corners see the sky; the default orbit circles the origin."""
    from tensorfield.datasets.cameras import Cameras, look_at
    from tensorfield.fields.base import RenderRequest, RendersViews

    config = tiny_config("render_christoffels=exact", "render_resolution=8", "render_fov=40", "camera_distance=20")
    data = EinFieldData(config)
    model = build_einfield(config, data.scene_info()).eval()
    with torch.no_grad():  # zero distortion: flat space with the configured capture radius 2M
        model.net[-1].weight.zero_()
        model.net[-1].bias.zero_()
    assert isinstance(model, RendersViews)
    cameras = data.split_cameras()["train"]
    assert len(cameras) == 8 and torch.allclose(cameras.c2w[:, :, 3].norm(dim=-1), torch.tensor(20.0))
    assert torch.equal(data.scene_box().mean(0), torch.zeros(3))
    eye = torch.tensor([0.0, 0.0, 20.0])
    c2w = look_at(eye, torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]))
    camera = Cameras.from_fov(c2w[None], 8, 8, float(np.radians(40.0)))
    output = model.render_view(RenderRequest(camera))
    assert output.rgb.shape == (8, 8, 3) and output.alpha.shape == (8, 8)
    assert float(output.alpha[3:5, 3:5].max()) == 0.0  # asin(2 / 20) = 5.7 deg > the central pixels' 2.5 deg
    assert float(output.alpha[[0, 0, -1, -1], [0, -1, 0, -1]].min()) > 0.0


def test_held_out_errors_by_radius_band_locate_a_local_error():
    """A metric that is wrong only inside r < 1 shows its error in the bands below 1 and
    nowhere else; the band sizes add up to the held-out points."""
    from tensorfield.fields.einfield_targets import RADIUS_BANDS, curvature_errors

    config = tiny_config("mass=0.05")
    data = EinFieldData(config)
    g = torch.Generator().manual_seed(3)
    directions = torch.nn.functional.normalize(torch.randn(400, 3, generator=g, dtype=torch.float64), dim=1)
    radii = 0.3 + 2.7 * torch.rand(400, 1, generator=g, dtype=torch.float64)
    coords = torch.cat([torch.zeros(400, 1, dtype=torch.float64), radii * directions], dim=1)
    radius = data.spacetime.radius(coords)
    assert bool((radius < 1).any()) and bool((radius >= 1).any())

    def wrong_inside(points):
        g = data.spacetime.metric(points)
        r = points[..., 1:].norm(dim=-1)
        bump = torch.where(r < 1, 1e-3 * (1 - r).clamp_min(0) ** 3, torch.zeros_like(r))  # C^2 at r = 1
        return g + bump[..., None, None] * torch.eye(4, dtype=g.dtype)

    true = [curvature(data.spacetime.metric, coords)]
    predicted = [curvature(wrong_inside, coords)]
    errors = curvature_errors(predicted, true, coords, data.spacetime, config.mass, config.target)
    bands = [(lo, hi) for lo, hi in zip(RADIUS_BANDS[:-1], RADIUS_BANDS[1:]) if ((radius >= lo) & (radius < hi)).any()]
    assert sum(errors[f"band_r{lo:g}-{hi:g}_num_points"] for lo, hi in bands) == coords.shape[0]
    for lo, hi in bands:
        value = errors[f"band_r{lo:g}-{hi:g}_metric_rel_l2"]
        assert (value > 1e-6) if hi <= 1 else (value == 0.0), (lo, hi, value)
    assert errors["metric_rel_l2"] > 0 and errors["num_points"] == coords.shape[0]
    same = curvature_errors(true, true, coords, data.spacetime, config.mass, config.target)
    assert same["christoffel_rel_l2"] == 0.0 and same["kretschmann_rel_l2"] == 0.0


def test_domain_window_is_one_inside_zero_beyond_the_blend_and_c2_at_the_faces():
    from tensorfield.fields.einfield import domain_window

    low, high = torch.tensor([-1.0, -2.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)

    def at(x, y, z):
        return float(domain_window(torch.tensor([0.0, x, y, z], dtype=torch.float64), low, high, 0.5))

    assert at(0.0, 0.0, 1.0) == 1.0 and at(1.0, -2.0, 3.0) == 1.0  # inside and on the faces
    assert at(1.5, 0.0, 1.0) == 0.0 and at(0.0, 0.0, 0.0) == 0.0 and at(3.0, 5.0, 9.0) == 0.0
    assert at(1.25, 0.0, 1.0) == pytest.approx(0.5)  # smootherstep's midpoint
    assert at(1.25, 2.25, 1.0) == pytest.approx(0.25)  # a product over the axes
    # C2 at the face x = 1: value 1, first and second derivatives 0 from both sides
    for x0 in (1.0 - 1e-9, 1.0 + 1e-9):
        point = torch.tensor([0.0, x0, 0.0, 1.0], dtype=torch.float64)
        grad = jacobian(lambda p: domain_window(p, low, high, 0.5), point)
        second = hessian(lambda p: domain_window(p, low, high, 0.5), point)
        assert float(grad.abs().max()) < 1e-12 and float(second.abs().max()) < 1e-6


@pytest.mark.parametrize("outside", ["analytic", "flat"])
def test_render_metric_is_the_network_inside_and_the_chosen_metric_beyond_the_blend(outside):
    config = tiny_config(f"render_outside={outside}", "render_blend_width=0.5")
    data = EinFieldData(config)
    model = build_einfield(config, data.scene_info()).eval()
    metric = model.render_metric()
    inside = torch.tensor([[0.0, 1.5, 2.0, 1.2], [0.0, 2.5, 1.0, 1.0]], dtype=torch.float64)
    far = torch.tensor([[0.0, 10.0, -4.0, 7.0], [0.0, 1.5, 1.5, 2.6]], dtype=torch.float64)
    torch.testing.assert_close(metric(inside), model.metric(inside), rtol=0, atol=0)
    expected = data.spacetime.metric(far) if outside == "analytic" else model.flat_metric(far)
    torch.testing.assert_close(metric(far[:1]), expected[:1].to(torch.float64), rtol=1e-12, atol=1e-12)
    between = metric(far[1:])  # 0.1 beyond the z face: mostly the network, not all of it
    assert not torch.equal(between, model.metric(far[1:])) and not torch.equal(between, expected[1:])


def test_lensed_render_warns_once_when_the_network_is_extrapolated(monkeypatch):
    import tensorfield.fields.lensing as lensing
    from tensorfield.datasets.cameras import Cameras, look_at
    from tensorfield.fields.base import RenderRequest

    traced = []  # the trace itself is tested in test_lensing.py; here only which metric it gets
    monkeypatch.setattr(lensing, "render_lensed", lambda metric, request, settings, christoffel_grid=None: traced.append(metric))

    eye = torch.tensor([0.0, 0.0, 20.0])
    camera = Cameras.from_fov(look_at(eye, torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]))[None], 4, 4, 0.5)
    for outside, warns in (("network", True), ("analytic", False)):
        config = tiny_config("render_christoffels=exact", f"render_outside={outside}")
        model = build_einfield(config, EinFieldData(config).scene_info()).eval()
        import warnings as warnings_module

        with warnings_module.catch_warnings(record=True) as caught:
            warnings_module.simplefilter("always")
            model.render_view(RenderRequest(camera))
            model.render_view(RenderRequest(camera))
        messages = [str(w.message) for w in caught if "training domain" in str(w.message)]
        assert len(messages) == (1 if warns else 0), messages
        assert len(traced) == 2 and (traced[-1] == model.metric) == warns  # analytic: the blended metric
        traced.clear()


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_sample_weighted_sobolev_loss_equals_a_per_sample_loop(power):
    config = tiny_config(f"sample_weight_power={power}", "jacobian_weight=0.7", "hessian_weight=0.3")
    data = EinFieldData(config)
    model = build_einfield(config, data.scene_info())
    batch = data.batch_source(model, torch.device("cpu")).sample(7, torch.Generator().manual_seed(3))
    assert batch.hessians is not None and batch.jacobians is not None
    loss = model.training_step(batch, 0).loss
    values, jac, hess = (t.detach() for t in model.jets(batch.coordinates, order=2))

    def term(prediction, target):  # the documented weights, one sample at a time
        sizes = [float((target[i].double() ** 2).mean()) for i in range(target.shape[0])]
        weights = [(s + sum(sizes) / len(sizes)) ** -power for s in sizes]
        weights = [w * len(weights) / sum(weights) for w in weights]
        errors = [float(((prediction[i].double() - target[i].double()) ** 2).mean()) for i in range(target.shape[0])]
        return sum(w * e for w, e in zip(weights, errors)) / len(errors)

    expected = term(values, batch.values) + 0.7 * term(jac, batch.jacobians) + 0.3 * term(hess, batch.hessians)
    assert float(loss) == pytest.approx(expected, rel=1e-9)
    if power > 0:  # the weights do change the loss: the samples differ in magnitude
        plain = build_einfield(tiny_config("jacobian_weight=0.7", "hessian_weight=0.3"), data.scene_info())
        plain.load_state_dict(model.state_dict())
        assert float(plain.training_step(batch, 0).loss) != pytest.approx(float(loss), rel=1e-6)


def test_importance_sampling_is_an_unbiased_estimate_of_the_plain_loss():
    config = tiny_config("importance_sampling=0.6", "jacobian_weight=0.7", "domain_min=[0.0,0.3,0.3,0.3]")
    data = EinFieldData(config)
    model = build_einfield(config, data.scene_info())
    source = data.batch_source(model, torch.device("cpu"))
    p = source.probabilities
    count = data.coords.shape[0]
    # the documented probabilities: (1 - lambda) / N + lambda rms_i / sum rms, float64 loop
    rms = [
        float(torch.cat([data.values[i].flatten(), data.jacobians[i].flatten()]).double().square().mean().sqrt())
        for i in range(count)
    ]
    expected = torch.tensor([0.4 / count + 0.6 * r / sum(rms) for r in rms], dtype=torch.float64)
    torch.testing.assert_close(p, expected, rtol=1e-12, atol=0)
    assert float(p.max() / p.min()) > 3  # the samples near the mass are drawn more often
    # unbiased: E_p[w_i f_i] = sum_i p_i f_i / (N p_i) = the plain mean of any per-sample f
    per_sample = torch.rand(count, dtype=torch.float64)
    assert float((p * per_sample / (count * p)).sum()) == pytest.approx(float(per_sample.mean()), rel=1e-12)
    # a batch carries those weights, and the loss is the weighted per-sample loop
    batch = source.sample(9, torch.Generator().manual_seed(5))
    index = [int(torch.nonzero((data.coords == c).all(dim=1))[0]) for c in batch.coordinates]
    torch.testing.assert_close(batch.weights, 1 / (count * p[index]))
    loss = model.training_step(batch, 0).loss
    values, jac, _ = (t.detach() if t is not None else None for t in model.jets(batch.coordinates))

    def term(prediction, target):
        errors = [float(((prediction[i].double() - target[i].double()) ** 2).mean()) for i in range(9)]
        return sum(float(batch.weights[i]) * errors[i] for i in range(9)) / 9

    assert float(loss) == pytest.approx(term(values, batch.values) + 0.7 * term(jac, batch.jacobians), rel=1e-9)
    # the draws follow p (chi-square-free check: frequencies of the largest-p sample)
    draws = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(1))
    top = int(p.argmax())
    assert float((draws == top).double().mean()) == pytest.approx(float(p[top]), rel=0.1)

