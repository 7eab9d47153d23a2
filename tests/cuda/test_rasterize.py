"""The Gaussian rasteriser: torch backend vs the float64 reference, hand-worked pixels, gsplat's torch reference."""

from __future__ import annotations

import math

import pytest
import torch
from tensorfield.cuda.rasterize import (
    GaussianBatch,
    camera_matrices,
    covariance_from_scales_quats,
    eval_sh,
    project,
    rasterize,
)
from tensorfield.datasets.cameras import Cameras, look_at


def _cameras(count: int, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    poses = []
    for k in range(count):
        angle = 0.6 * k
        eye = torch.tensor([3.0 * math.sin(angle), -0.5, -3.0 * math.cos(angle)])
        poses.append(look_at(eye, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0])))
    cameras = Cameras.from_fov(torch.stack(poses), width, height, math.radians(50.0))
    return camera_matrices(cameras)


def _scene(n: int, seed: int, *, sh_degree: int | None = None, channels: int = 3, covars: bool = False):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * 1.6
    scales = 0.04 + 0.2 * torch.rand(n, 3, generator=g)
    quats = torch.randn(n, 4, generator=g)
    opacities = 0.05 + 0.94 * torch.rand(n, generator=g)
    if sh_degree is not None:
        colors = 0.3 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g)
    else:
        colors = torch.rand(n, channels, generator=g)
    params = {"means": means, "scales": scales, "quats": quats, "opacities": opacities, "colors": colors}
    params = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    if covars:
        cov = covariance_from_scales_quats(params["scales"], params["quats"]).detach().clone().requires_grad_(True)
        params["covars"] = cov
        batch = GaussianBatch(params["means"], params["opacities"], params["colors"], covars=cov, sh_degree=sh_degree)
    else:
        batch = GaussianBatch(params["means"], params["opacities"], params["colors"], params["scales"], params["quats"], sh_degree=sh_degree)
    return batch, params


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    actual, expected = actual.detach().double(), expected.detach().double()
    scale = max(1.0, float(expected.abs().max()))
    error = float((actual - expected).abs().max())
    assert error <= tol * scale, f"max error {error:.3g} > {tol:.1g} x {scale:.3g}"


CASES = [
    {"n": 1, "size": (16, 16), "seed": 0},
    {"n": 12, "size": (23, 17), "seed": 1, "sh_degree": 0},
    {"n": 60, "size": (33, 29), "seed": 2, "sh_degree": 3, "background": True},
    {"n": 150, "size": (32, 24), "seed": 3, "antialiased": True, "channels": 5},
    {"n": 80, "size": (20, 20), "seed": 4, "covars": True, "sh_degree": 1, "background": True},
    {"n": 300, "size": (40, 32), "seed": 5, "sh_degree": 2},
]


@pytest.mark.parametrize("case", CASES, ids=[f"n{c['n']}" for c in CASES])
def test_torch_backend_matches_float64_reference(case):
    width, height = case["size"]
    viewmats, Ks = _cameras(2, width, height)
    channels = 3 if case.get("sh_degree") is not None else case.get("channels", 3)
    background = torch.rand(channels, generator=torch.Generator().manual_seed(9)) if case.get("background") else None
    results = {}
    for backend in ("torch", "reference"):
        batch, params = _scene(case["n"], case["seed"], sh_degree=case.get("sh_degree"), channels=case.get("channels", 3), covars=case.get("covars", False))
        out = rasterize(batch, viewmats, Ks, width, height, background=background, antialiased=case.get("antialiased", False), backend=backend)
        weights = torch.rand(out.rgb.shape, generator=torch.Generator().manual_seed(1)).to(out.rgb.dtype)
        loss = (out.rgb * weights).sum() + 0.3 * out.alpha.sum() + 0.05 * (out.depth * out.alpha.detach()).sum()
        loss.backward()
        results[backend] = (out, {k: v.grad for k, v in params.items()})
    (out, grads), (ref, ref_grads) = results["torch"], results["reference"]
    assert float(ref.alpha.detach().max()) > 0.05, "the scene must be visible"
    _close(out.rgb, ref.rgb, 1e-5)
    _close(out.alpha, ref.alpha, 1e-5)
    _close(out.depth * ref.alpha, ref.depth * ref.alpha, 1e-5)
    assert torch.equal(out.radii, ref.radii)
    for name, grad in ref_grads.items():
        if grad is None:
            continue
        assert grads[name] is not None, name
        _close(grads[name], grad, 1e-4)


def test_hand_worked_single_gaussian_pixel():
    """One isotropic Gaussian straight ahead: the centre pixel's colour is o * exp(-sigma) * c + (1 - alpha) * bg."""
    width = height = 9
    viewmats, Ks = torch.eye(4)[None], torch.tensor([[[10.0, 0, 4.5], [0, 10.0, 4.5], [0, 0, 1]]])
    s, z, o = 0.1, 2.0, 0.8
    batch = GaussianBatch(
        means=torch.tensor([[0.0, 0.0, z]]), opacities=torch.tensor([o]), colors=torch.tensor([[1.0, 0.5, 0.25]]),
        scales=torch.full((1, 3), s), quats=torch.tensor([[1.0, 0, 0, 0]]),
    )
    out = rasterize(batch, viewmats, Ks, width, height, background=torch.zeros(3), backend="torch")
    var = (10.0 * s / z) ** 2 + 0.3  # J Sigma J^T = (f s / z)^2 on the axis, plus the blur
    for (x, y) in [(4, 4), (6, 4), (3, 7)]:
        dx, dy = 4.5 - (x + 0.5), 4.5 - (y + 0.5)
        alpha = o * math.exp(-0.5 * (dx * dx + dy * dy) / var)
        expected = alpha if alpha >= 1 / 255 else 0.0
        assert abs(float(out.alpha[0, y, x]) - expected) < 1e-6
        assert abs(float(out.rgb[0, y, x, 1]) - 0.5 * expected) < 1e-6
        if expected > 0:
            assert abs(float(out.depth[0, y, x]) - z) < 1e-5


def test_early_termination_and_saturation():
    """Opaque layers: a pixel stops before the layer that would take T to <= 1e-4; alpha is clamped at 0.999."""
    viewmats, Ks = torch.eye(4)[None], torch.tensor([[[4.0, 0, 2.0], [0, 4.0, 2.0], [0, 0, 1]]])
    n = 4
    batch = GaussianBatch(
        means=torch.tensor([[0.0, 0.0, 1.0 + k] for k in range(n)]), opacities=torch.ones(n),
        colors=torch.eye(4)[:n, :3] + torch.tensor([0, 0, 0.0]), scales=torch.full((n, 3), 5.0),
        quats=torch.tensor([[1.0, 0, 0, 0]] * n),
    )
    out = rasterize(batch, viewmats, Ks, 4, 4, backend="torch")
    ref = rasterize(batch, viewmats, Ks, 4, 4, backend="reference")
    # layer 1: alpha ~0.999 (T -> 1e-3); layer 2 would take T to 1e-6 <= 1e-4: stop, so only layer 1 counts
    centre = out.rgb[0, 2, 2]
    assert float(centre[0]) == pytest.approx(0.999, abs=2e-3) and float(centre[1]) == 0.0
    assert torch.allclose(out.rgb.double(), ref.rgb, atol=1e-6)


def test_culling_behind_camera_and_empty_scene():
    viewmats, Ks = _cameras(1, 16, 16)
    bg = torch.tensor([0.2, 0.4, 0.6])
    empty = GaussianBatch(torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 4))
    out = rasterize(empty, viewmats, Ks, 16, 16, background=bg, backend="torch")
    assert torch.allclose(out.rgb, bg.expand(1, 16, 16, 3)) and float(out.alpha.abs().max()) == 0.0
    centre = -(viewmats[0, :3, :3].T @ viewmats[0, :3, 3])
    forward = viewmats[0, 2, :3]
    behind = GaussianBatch((centre - 1.0 * forward)[None], torch.ones(1), torch.ones(1, 3), torch.full((1, 3), 0.3), torch.tensor([[1.0, 0, 0, 0]]))
    out = rasterize(behind, viewmats, Ks, 16, 16, background=bg, backend="torch")
    assert int(out.radii.abs().sum()) == 0 and torch.allclose(out.rgb, bg.expand(1, 16, 16, 3))


def test_projection_matches_gsplat_torch_reference():
    impl = pytest.importorskip("gsplat.cuda._torch_impl", reason="gsplat (test extra) is not installed")
    batch, _ = _scene(200, 7)
    viewmats, Ks = _cameras(3, 40, 30)
    ours = project(batch, viewmats, Ks, 40, 30)
    radii, means2d, depths, conics, _ = impl._fully_fused_projection(
        batch.means.detach(), batch.covariances().detach(), viewmats, Ks, 40, 30, eps2d=0.3
    )
    visible = (ours.radii > 0).all(-1) & (radii > 0).all(-1)
    assert int(visible.sum()) > 100
    assert torch.allclose(ours.means2d.detach()[visible], means2d[visible], atol=1e-4)
    assert torch.allclose(ours.depths.detach()[visible], depths[visible], atol=1e-6)
    assert torch.allclose(ours.conics.detach()[visible], conics[visible], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_matches_gsplat_torch_reference(degree):
    impl = pytest.importorskip("gsplat.cuda._torch_impl", reason="gsplat (test extra) is not installed")
    g = torch.Generator().manual_seed(degree)
    dirs = torch.randn(50, 3, generator=g)
    coeffs = torch.randn(50, 16, 3, generator=g)
    expected = torch.clamp_min(impl._spherical_harmonics(degree, dirs, coeffs) + 0.5, 0.0)
    assert torch.allclose(eval_sh(degree, dirs, coeffs), expected, atol=1e-5)


@pytest.mark.parametrize("case", CASES[1:], ids=[f"n{c['n']}" for c in CASES[1:]])
def test_native_forward_matches_torch_backend(case):
    from tensorfield.cuda.raster_native import native_library

    if native_library() is None:
        pytest.skip("no C compiler for the native kernel")
    width, height = case["size"]
    viewmats, Ks = _cameras(2, width, height)
    channels = 3 if case.get("sh_degree") is not None else case.get("channels", 3)
    background = torch.rand(channels, generator=torch.Generator().manual_seed(9)) if case.get("background") else None
    batch, _ = _scene(case["n"], case["seed"], sh_degree=case.get("sh_degree"), channels=case.get("channels", 3), covars=case.get("covars", False))
    kwargs = {"background": background, "antialiased": case.get("antialiased", False)}
    with torch.no_grad():
        native = rasterize(batch, viewmats, Ks, width, height, backend="cpu", **kwargs)
        exact = rasterize(batch, viewmats, Ks, width, height, backend="torch", **kwargs)
    assert float(exact.alpha.max()) > 0.05
    _close(native.rgb, exact.rgb, 2e-5)
    _close(native.alpha, exact.alpha, 2e-5)
    _close(native.depth * exact.alpha, exact.depth * exact.alpha, 2e-5)


def test_cpu_backend_with_gradients_uses_the_exact_path():
    batch, params = _scene(20, 3)
    viewmats, Ks = _cameras(1, 16, 16)
    out = rasterize(batch, viewmats, Ks, 16, 16, backend="cpu")
    out.rgb.sum().backward()
    assert params["means"].grad is not None and float(params["means"].grad.abs().sum()) > 0


@pytest.mark.parametrize("case", CASES, ids=[f"n{c['n']}" for c in CASES])
def test_native_gradients_match_float64_reference(case):
    from tensorfield.cuda.raster_native import native_library

    if native_library() is None:
        pytest.skip("no C compiler for the native kernel")
    width, height = case["size"]
    viewmats, Ks = _cameras(2, width, height)
    channels = 3 if case.get("sh_degree") is not None else case.get("channels", 3)
    results = {}
    for backend in ("cpu", "reference"):
        background = torch.rand(channels, generator=torch.Generator().manual_seed(9)) if case.get("background") else None
        if background is not None:
            background.requires_grad_(True)
        batch, params = _scene(case["n"], case["seed"], sh_degree=case.get("sh_degree"), channels=case.get("channels", 3), covars=case.get("covars", False))
        out = rasterize(batch, viewmats, Ks, width, height, background=background, antialiased=case.get("antialiased", False), backend=backend)
        weights = torch.rand(out.rgb.shape, generator=torch.Generator().manual_seed(1)).to(out.rgb.dtype)
        loss = (out.rgb * weights).sum() + 0.3 * out.alpha.sum() + 0.05 * (out.depth * out.alpha.detach()).sum()
        loss.backward()
        grads = {k: v.grad for k, v in params.items()}
        grads["background"] = background.grad if background is not None else None
        results[backend] = (out, grads)
    (out, grads), (ref, ref_grads) = results["cpu"], results["reference"]
    _close(out.rgb, ref.rgb, 2e-5)
    _close(out.alpha, ref.alpha, 2e-5)
    for name, grad in ref_grads.items():
        if grad is None:
            continue
        _close(grads[name], grad, 1e-4)


def test_native_tile_lists_equal_the_torch_ones():
    from tensorfield.cuda.raster_native import native_library, tile_lists, tile_lists_torch
    from tensorfield.cuda.rasterize import tile_rectangles

    if native_library() is None:
        pytest.skip("no C compiler for the native kernel")
    g = torch.Generator().manual_seed(0)
    means2d = torch.rand(500, 2, generator=g) * torch.tensor([130.0, 90.0]) - 10.0
    radii = torch.randint(0, 30, (500, 2), generator=g, dtype=torch.int32)
    depths = torch.randint(-25, 25, (500,), generator=g).float() * 0.37  # negatives, and ties broken by index order
    lo, hi = tile_rectangles(means2d, radii, 110, 75, 16)
    (offsets, ranks, order), (offsets_t, ranks_t, order_t) = tile_lists(means2d, radii, depths, 110, 75, 16), tile_lists_torch(lo, hi, depths, 7, 5)
    assert torch.equal(offsets, offsets_t) and torch.equal(ranks, ranks_t) and torch.equal(order, order_t)
    assert ranks.numel() > 500 and ranks.dtype == torch.int32
    visible = ((hi - lo) > 0).all(-1)
    assert 100 < int(visible.sum()) < 500  # some culled (radius 0 or off screen)
    assert torch.equal(torch.sort(order).values, torch.nonzero(visible).squeeze(1))  # every visible Gaussian, once
    ordered = depths[order]
    assert bool((ordered[1:] > ordered[:-1]).logical_or((ordered[1:] == ordered[:-1]) & (order[1:] > order[:-1])).all())
    for t in range(35):  # each tile's list is front to back
        assert bool((ranks[offsets[t] + 1 : offsets[t + 1]] > ranks[offsets[t] : offsets[t + 1] - 1]).all())


@pytest.mark.parametrize("covars", [False, True], ids=["scales_quats", "covars"])
@pytest.mark.parametrize("sh_degree", [None, 0, 1, 2, 3])
def test_native_projection_matches_torch_projection(covars, sh_degree):
    """Values, radii and every gradient of the native EWA projection + SH against :func:`project`."""
    from tensorfield.cuda.raster_native import native_projection_usable, project_native

    g = torch.Generator().manual_seed(7 + (sh_degree or 0))
    count = 400
    A = 0.1 * torch.randn(count, 3, 3, generator=g)
    params = {
        "means": 0.8 * torch.randn(count, 3, generator=g),
        "opacities": torch.rand(count, generator=g),
        "colors": torch.randn(count, 16, 3, generator=g) if sh_degree is not None else torch.rand(count, 5, generator=g),
    }
    if covars:
        params["covars"] = A @ A.transpose(1, 2) + 1e-3 * torch.eye(3)
    else:
        params["scales"] = 0.01 + 0.2 * torch.rand(count, 3, generator=g)
        params["quats"] = torch.randn(count, 4, generator=g)
    params = {k: v.requires_grad_(True) for k, v in params.items()}
    batch = GaussianBatch(sh_degree=sh_degree, **params)
    viewmats, Ks = _cameras(2, 40, 30)
    if not native_projection_usable(batch, viewmats, Ks):
        pytest.skip("no C compiler for the native kernel")
    results = []
    for fn in (project, project_native):
        for antialiased in (False, True):
            out = fn(batch, viewmats, Ks, 40, 30, antialiased=antialiased)
            fields = [out.means2d, out.conics, out.depths, out.opacities, out.colors]
            weights = torch.Generator().manual_seed(3)
            loss = sum((torch.randn(f.shape, generator=weights) * f).sum() for f in fields)
            grads = torch.autograd.grad(loss, list(params.values()))
            results.append((fields, out.radii, grads))
    for (fields, radii, grads), (nfields, nradii, ngrads) in zip(results[:2], results[2:]):
        assert torch.equal(radii, nradii) and int((radii > 0).sum()) > 100
        for a, b in zip(fields, nfields):
            _close(b, a, 1e-5)
        for a, b in zip(grads, ngrads):
            _close(b, a, 1e-5)


def test_cpu_backend_edge_cases():
    """No Gaussians, all culled (behind the camera), and more channels than the native kernel
    holds (falls back to the exact path): background only / same as the torch backend."""
    viewmats, Ks = _cameras(1, 24, 20)
    background = torch.tensor([0.2, 0.5, 1.0])
    for count, offset in ((0, 0.0), (5, 50.0)):
        g = torch.Generator().manual_seed(count)
        means = (torch.randn(count, 3, generator=g) - offset * viewmats[0, 2, :3]).requires_grad_(True)
        batch = GaussianBatch(means, torch.rand(count, generator=g), torch.rand(count, 3, generator=g), 0.1 * torch.rand(count, 3, generator=g), torch.randn(count, 4, generator=g))
        out = rasterize(batch, viewmats, Ks, 24, 20, background=background, backend="cpu")
        assert torch.allclose(out.rgb, background.expand(1, 20, 24, 3)) and float(out.alpha.abs().max()) == 0.0
        out.rgb.sum().backward()
        assert means.grad is not None and float(means.grad.abs().sum()) == 0.0
    batch, params = _scene(40, 5, channels=40)
    grads = {}
    for backend in ("cpu", "torch"):
        for p in params.values():
            p.grad = None
        out = rasterize(batch, viewmats, Ks, 24, 20, backend=backend)
        out.rgb.sum().backward()
        grads[backend] = (out.rgb.detach(), params["colors"].grad.clone())
    assert grads["cpu"][0].shape[-1] == 40
    _close(grads["cpu"][0], grads["torch"][0], 1e-6)
    _close(grads["cpu"][1], grads["torch"][1], 1e-6)


@pytest.mark.parametrize("covars", [False, True], ids=["scales", "covars"])
@pytest.mark.parametrize("antialiased", [False, True], ids=["classic", "antialiased"])
def test_gsplat_wrapper_against_a_stand_in(gsplat_stand_in, covars, antialiased):
    """The CUDA path's call of ``gsplat.rasterization`` (no GPU here) through the stand-in bound
    to gsplat's real signature (``tests/conftest.py``): the wrapper's result must equal the torch
    backend called directly, values and gradients."""
    batch, params = _scene(40, seed=7, sh_degree=2, covars=covars)
    viewmats, Ks = _cameras(2, 24, 20)
    background = torch.tensor([0.2, 0.5, 0.9])
    options = {"background": background, "eps2d": 0.3, "antialiased": antialiased, "near_plane": 0.05}
    results = []
    for backend in ("gsplat", "torch"):
        for p in params.values():
            p.grad = None
        out = rasterize(batch, viewmats, Ks, 24, 20, backend=backend, **options)
        (out.rgb.sum() + out.depth.sum() + out.alpha.sum()).backward()
        results.append((out, {name: p.grad.clone() for name, p in params.items() if p.grad is not None}))
    (wrapped, wrapped_grads), (direct, direct_grads) = results
    assert len(gsplat_stand_in) == 1
    for name in ("rgb", "alpha", "depth", "means2d", "radii"):
        assert torch.allclose(getattr(wrapped, name).detach().float(), getattr(direct, name).detach().float(), atol=1e-6), name
    assert wrapped_grads.keys() == direct_grads.keys() and len(direct_grads) >= 4
    for name, grad in direct_grads.items():
        assert torch.allclose(wrapped_grads[name], grad, atol=1e-6), name
    assert float(direct.alpha.detach().max()) > 0.3  # something was drawn
