"""Lensed renders (fields/lensing.py, fields/sky.py): shadow size, flat space, disk, grid, sky."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tensorfield.datasets.cameras import Cameras, look_at
from tensorfield.datasets.spacetimes import Spacetime, SpacetimeParameters
from tensorfield.fields.base import RenderRequest
from tensorfield.fields.lensing import (
    ChristoffelGrid,
    LensingSettings,
    RayStatus,
    build_christoffel_grid,
    exact_acceleration,
    render_lensed,
    trace_camera,
    trace_rays,
)
from tensorfield.fields.sky import ImageSky, StarField, hash32

F64 = torch.float64


def _request(eye, target, width, height, fov_degrees, up=(0.0, 0.0, 1.0)) -> RenderRequest:
    c2w = look_at(torch.tensor(eye), torch.tensor(target), torch.tensor(up))
    return RenderRequest(Cameras.from_fov(c2w[None], width, height, math.radians(fov_degrees)), 0)


def test_schwarzschild_shadow_has_the_exact_angular_radius():
    """Camera at r_o = 15M (Kerr-Schild chart), 128 pixels across a 60 degree field, one row
    through the centre: the shadow's half-width in pixels is f tan(alpha) with
    sin(alpha) = sqrt(27) M sqrt(1 - 2M/r_o) / r_o (a static observer) within one pixel
    (Christoffel grid; the exact path is exercised by the flat-space tests)."""
    mass, distance, width = 1.0, 15.0, 128
    spacetime = Spacetime("schwarzschild_ks", SpacetimeParameters(mass=mass))
    request = _request((distance, 0.0, 0.0), (0.0, 0.0, 0.0), width, 1, 60.0)
    settings = LensingSettings(
        horizon_radius=2 * mass, escape_radius=40.0, christoffels="grid", grid_resolution=(40, 4, 8)
    )
    grid = build_christoffel_grid(spacetime.metric, settings)
    trace = trace_camera(spacetime.metric, request, settings, grid)
    shadow = (trace.rays.status == RayStatus.CAPTURED) | (trace.rays.status == RayStatus.UNRESOLVED)
    focal = float(request.cameras.fx[0])
    expected = focal * math.tan(
        math.asin(math.sqrt(27) * mass * math.sqrt(1 - 2 * mass / distance) / distance)
    )
    # the shadow is one run of pixels about the centre; its half-width is within a pixel
    columns = torch.nonzero(shadow)[:, 0].double() + 0.5 - width / 2
    assert int(shadow.sum()) == int(columns.max() - columns.min()) + 1
    assert abs(float(shadow.sum()) / 2 - expected) <= 1.0
    assert abs(float(columns.max()) + float(columns.min())) <= 1.0  # centred
    assert int((trace.rays.status == RayStatus.ESCAPED).sum()) == width - int(shadow.sum())
    output = render_lensed(spacetime.metric, request, settings, grid)
    torch.testing.assert_close(output.alpha[0], (~shadow).float())
    assert float(output.rgb[0][shadow].abs().max()) == 0.0


def test_flat_space_renders_the_background_undistorted():
    """Minkowski: every ray escapes along its own pixel direction and shows the sky there."""
    flat = Spacetime("minkowski", SpacetimeParameters())
    request = _request((3.0, -4.0, 1.5), (0.5, 0.3, -0.2), 16, 12, 70.0)
    settings = LensingSettings(
        horizon_radius=0.0, escape_radius=30.0, christoffels="exact", dtype="float64"
    )
    trace = trace_camera(flat.metric, request, settings)
    assert bool((trace.rays.status == RayStatus.ESCAPED).all())
    _, directions = request.cameras.generate_rays(0)
    directions = directions.reshape(-1, 3).double()
    final = trace.rays.velocities[:, 1:] / trace.rays.velocities[:, 1:].norm(dim=-1, keepdim=True)
    torch.testing.assert_close(final, directions, atol=1e-6, rtol=0)
    output = render_lensed(flat.metric, request, settings)
    torch.testing.assert_close(
        output.rgb.reshape(-1, 3), StarField(0)(directions).float(), atol=1e-4, rtol=0
    )
    assert bool((output.alpha == 1).all()) and bool((output.depth == 0).all())


def test_thin_disk_is_hit_where_the_rays_cross_the_plane():
    """Flat space, camera at z = 10 looking down: the rays with 2 <= rho(z = 0) <= 5 hit the disk,
    at affine parameter (= distance here) 10 / |d_z|; the others show the sky."""
    flat = Spacetime("minkowski", SpacetimeParameters())
    request = _request((0.0, 0.0, 10.0), (0.0, 0.0, 0.0), 24, 24, 70.0, up=(0.0, 1.0, 0.0))
    settings = LensingSettings(
        horizon_radius=0.0,
        escape_radius=40.0,
        disk_inner=2.0,
        disk_outer=5.0,
        christoffels="exact",
        dtype="float64",
    )
    output = render_lensed(flat.metric, request, settings)
    _, d = request.cameras.generate_rays(0)
    d = d.double()
    distance = 10.0 / (-d[..., 2])
    rho = distance * d[..., :2].norm(dim=-1)
    expected = (rho >= 2.0) & (rho <= 5.0)
    clear = ((rho - 2.0).abs() > 1e-3) & ((rho - 5.0).abs() > 1e-3)
    hit = output.depth > 0
    assert bool((hit == expected)[clear].all()) and int(expected.sum()) > 50
    torch.testing.assert_close(output.depth[hit].double(), distance[hit], atol=1e-4, rtol=0)
    assert bool((output.alpha == 1).all())
    assert float(output.rgb[hit].sum(-1).min()) > 0  # the disk glows


def test_christoffel_grid_matches_the_exact_symbols():
    """Kerr (a = 0.7) in Kerr-Schild coordinates: the interpolated acceleration of a 48 x 16 x 32
    grid matches the autodiff one to 2e-2 relative (worst point; median 1e-3) between 2.5M and 30M."""
    spacetime = Spacetime("kerr_ks", SpacetimeParameters(mass=1.0, spin=0.7))
    grid = ChristoffelGrid(spacetime.metric, 1.5, 40.0, (48, 16, 32))
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(200, 3, generator=generator, dtype=F64)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    radius = 2.5 + 27.5 * torch.rand(200, 1, generator=generator, dtype=F64)
    positions = torch.cat([torch.zeros(200, 1, dtype=F64), radius * directions], -1)
    velocities = torch.cat(
        [-torch.ones(200, 1, dtype=F64), torch.randn(200, 3, generator=generator, dtype=F64)], -1
    )
    exact = exact_acceleration(spacetime.metric)(positions, velocities)
    approx = grid.acceleration(positions, velocities)
    scale = exact.norm(dim=-1)
    error = (approx - exact).norm(dim=-1) / scale
    assert float(error.max()) < 2e-2 and float(error.median()) < 1e-3


def test_star_field_is_deterministic():
    generator = torch.Generator().manual_seed(1)
    directions = torch.randn(20000, 3, generator=generator, dtype=F64)
    sky = StarField(seed=3)
    first, second = sky(directions), StarField(seed=3)(directions.clone())
    assert torch.equal(first, second)
    assert not torch.equal(first, StarField(seed=4)(directions))
    assert float(first.min()) >= 0 and float(first.max()) <= 1
    assert float(first.max()) > 0.3  # some directions land on bright stars
    brightness = first.sum(-1)
    assert float((brightness > 0.5).float().mean()) < 0.05  # mostly dark sky
    # the hash is a fixed function (values of Wellons' lowbias32)
    assert hash32(torch.tensor([0, 1])).tolist() == [0, 1753845952]


def test_image_sky_and_bad_settings(tmp_path):
    import imageio.v3 as iio

    image = np.zeros((8, 16, 3), dtype=np.uint8)
    image[:, 8:, 0] = 255  # right half red: longitudes 0..pi
    path = tmp_path / "sky.png"
    iio.imwrite(path, image)
    sky = ImageSky(path)
    colours = sky(torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]], dtype=F64))
    assert float(colours[0, 0]) == pytest.approx(1.0) and float(colours[1, 0]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="not found"):
        ImageSky(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read"):
        ImageSky(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="escape_radius"):
        LensingSettings(horizon_radius=5.0, escape_radius=4.0).validate()
    with pytest.raises(ValueError, match="disk_inner"):
        LensingSettings(disk_inner=6.0, disk_outer=3.0).validate()
    flat = Spacetime("minkowski", SpacetimeParameters())
    with pytest.raises(ValueError, match="outside escape_radius"):
        trace_camera(
            flat.metric,
            _request((50.0, 0.0, 0.0), (0.0, 0.0, 0.0), 4, 4, 60.0),
            LensingSettings(escape_radius=20.0),
        )


@pytest.mark.slow
def test_per_ray_integrator_matches_torchdiffeq():
    """The renderer's per-ray Dormand-Prince 5(4) (rtol 1e-9) against torchdiffeq's dopri8
    (rtol 1e-10) on the same acceleration field (a Schwarzschild Christoffel grid): rays past the
    hole escape (the middle one: same end event, positions to 1e-4 (of 40) and velocities to 1e-6, float64)."""
    from tensorfield.fields.geodesics import initial_velocity
    from torchdiffeq import odeint

    spacetime = Spacetime("schwarzschild_ks", SpacetimeParameters(mass=1.0))
    grid = ChristoffelGrid(spacetime.metric, 1.6, 42.0, (40, 4, 8))
    settings = LensingSettings(
        horizon_radius=2.0, escape_radius=40.0, rtol=1e-9, atol=1e-10, dtype="float64"
    )
    positions = torch.tensor([[0.0, 15.0, 0.0, 0.0]] * 3, dtype=F64)
    # null rays aimed 0.4, 0.5 and 0.6 rad off the hole (impact parameters 5.8M to 8.5M)
    angles = torch.tensor([0.4, 0.5, 0.6], dtype=F64)
    spatial = torch.stack([-torch.cos(angles), torch.sin(angles), torch.zeros(3, dtype=F64)], -1)
    velocities = initial_velocity(spacetime.metric, positions, spatial)
    trace = trace_rays(grid.acceleration, positions, velocities, settings)
    assert trace.status.tolist() == [RayStatus.ESCAPED] * 3

    def rhs(lam, state):
        return torch.cat([state[:, 4:], grid.acceleration(state[:, :4], state[:, 4:])], -1)

    state0 = torch.cat([positions, velocities], -1)
    for ray in (1,):  # one reference solve (a C0 interpolated field costs dopri8 many steps)
        end = trace.affine[ray]
        reference = odeint(
            rhs,
            state0[ray : ray + 1],
            torch.stack([end.new_zeros(()), end]),
            rtol=1e-10,
            atol=1e-10,
            method="dopri8",
        )[-1, 0]
        torch.testing.assert_close(trace.positions[ray], reference[:4], atol=1e-4, rtol=0)
        torch.testing.assert_close(trace.velocities[ray], reference[4:], atol=1e-6, rtol=0)


@pytest.mark.parametrize("spin", [0.0, 0.6, -0.9])
def test_disk_emitters_move_on_circular_equatorial_geodesics(spin):
    """At r = 4M .. 20M in Kerr-Schild coordinates, x(t) = R(Omega t) x0 with the disk's angular
    velocity satisfies the geodesic equation in coordinate time,
    d2x^i/dt2 = -Gamma^i_ab v^a v^b + Gamma^0_ab v^a v^b v^i (v = dx/dt), i.e. its centripetal
    acceleration -Omega^2 (x, y, 0); Kepler's law at a = 0."""
    from tensorfield.fields.lensing import disk_angular_velocity, disk_radius
    from tensorfield.fields.relativity import christoffels_at

    mass = 1.0
    spacetime = Spacetime("kerr_ks", SpacetimeParameters(mass=mass, spin=spin)) if spin else Spacetime("schwarzschild_ks", SpacetimeParameters(mass=mass))
    r = torch.tensor([4.0, 6.0, 9.0, 20.0], dtype=F64)
    phi = torch.tensor([0.3, 1.7, -2.0, 4.0], dtype=F64)
    rho = torch.sqrt(r * r + spin * spin)  # cylindrical radius of the ring r in z = 0
    torch.testing.assert_close(disk_radius(rho, spin), r, rtol=1e-12, atol=0)
    x, y = rho * torch.cos(phi), rho * torch.sin(phi)
    coords = torch.stack([torch.zeros_like(r), x, y, torch.zeros_like(r)], -1)
    omega = disk_angular_velocity(r, mass, spin)
    if spin == 0.0:
        torch.testing.assert_close(omega, torch.sqrt(mass / r**3), rtol=1e-12, atol=0)
    v = torch.stack([torch.ones_like(r), -omega * y, omega * x, torch.zeros_like(r)], -1)
    gamma = christoffels_at(spacetime.metric, coords)  # [N, a, b, c] Gamma^a_bc
    quad = torch.einsum("nabc,nb,nc->na", gamma, v, v)
    acceleration = -quad[:, 1:] + quad[:, :1] * v[:, 1:]
    expected = torch.stack([-omega**2 * x, -omega**2 * y, torch.zeros_like(r)], -1)
    torch.testing.assert_close(acceleration, expected, rtol=1e-9, atol=1e-12)
    if spin:  # the other sense of rotation is not a geodesic: the formula knows the hole's spin
        wrong = disk_angular_velocity(r, mass, -spin)
        v_wrong = torch.stack([torch.ones_like(r), -wrong * y, wrong * x, torch.zeros_like(r)], -1)
        quad = torch.einsum("nabc,nb,nc->na", gamma, v_wrong, v_wrong)
        residual = -quad[:, 1:] + quad[:, :1] * v_wrong[:, 1:] + wrong[:, None] ** 2 * coords[:, 1:]
        assert float((residual.norm(dim=-1) / (omega**2 * rho))[0]) > 1e-2  # at r = 4M


def test_kerr_rays_are_captured_at_the_oblate_kerr_schild_horizon():
    """a = 0.9 M: the horizon r_+ = 1.436 M is the Kerr-Schild radius, an oblate surface reaching
    Euclidean radius sqrt(r_+^2 + a^2) = 1.694 M in the equator. Straight tangential rays (no
    acceleration) from Euclidean radius 1.6 M: in the equator (inside the horizon) captured at
    once; over the pole (outside it) they fly off to the sky."""
    spin, mass = 0.9, 1.0
    r_plus = mass + math.sqrt(mass**2 - spin**2)
    settings = LensingSettings(horizon_radius=r_plus, escape_radius=20.0, spin=spin, dtype="float64")
    positions = torch.tensor([[0.0, 1.6, 0.0, 0.0], [0.0, 0.0, 0.0, 1.6]], dtype=F64)
    velocities = torch.tensor([[-1.0, 0.0, 1.0, 0.0], [-1.0, 1.0, 0.0, 0.0]], dtype=F64)
    trace = trace_rays(lambda x, u: torch.zeros_like(u), positions, velocities, settings)
    assert trace.status.tolist() == [int(RayStatus.CAPTURED), int(RayStatus.ESCAPED)]
    assert int(trace.steps[0]) == 1 and float(trace.positions[0, 1:].norm()) < 1.7
    euclidean = LensingSettings(horizon_radius=r_plus, escape_radius=20.0, dtype="float64")  # a = 0
    trace = trace_rays(lambda x, u: torch.zeros_like(u), positions, velocities, euclidean)
    assert trace.status.tolist() == [int(RayStatus.ESCAPED)] * 2
    with pytest.raises(ValueError, match="spin"):
        LensingSettings(horizon_radius=1.0, spin=1.0).validate()
