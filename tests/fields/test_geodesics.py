"""Geodesics (fields/geodesics.py): photon sphere, perihelion advance, constraint, flat space, charts."""

from __future__ import annotations

import math

import pytest
import torch
from tensorfield.datasets.spacetimes import Spacetime, SpacetimeParameters
from tensorfield.fields.geodesics import (
    GeodesicStatus,
    cartesian_radius,
    initial_velocity,
    integrate_geodesics,
    locate_event,
    metric_norm,
    spherical_radius,
)

MASS = 1.0
F64 = torch.float64


def _tensor(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def _spherical_to_cartesian(
    positions: torch.Tensor, velocities: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial position ``[..., 3]`` and coordinate velocity ``[..., 3]`` of ``(t, r, theta, phi)`` states."""
    r, theta, phi = positions[..., 1], positions[..., 2], positions[..., 3]
    dr, dtheta, dphi = velocities[..., 1], velocities[..., 2], velocities[..., 3]
    st, ct, sp, cp = torch.sin(theta), torch.cos(theta), torch.sin(phi), torch.cos(phi)
    xyz = torch.stack([r * st * cp, r * st * sp, r * ct], -1)
    velocity = torch.stack(
        [
            dr * st * cp + r * ct * cp * dtheta - r * st * sp * dphi,
            dr * st * sp + r * ct * sp * dtheta + r * st * cp * dphi,
            dr * ct - r * st * dtheta,
        ],
        -1,
    )
    return xyz, velocity


def test_initial_velocity_solves_the_constraint():
    spacetime = Spacetime("kerr_ks", SpacetimeParameters(mass=MASS, spin=0.6))
    positions = _tensor([[0.0, 6.0, 1.0, -2.0], [0.0, -3.0, 4.0, 2.5], [0.0, 0.5, -9.0, 1.0]])
    spatial = _tensor([[0.1, -0.2, 0.05], [-0.3, 0.1, 0.2], [0.0, 0.25, -0.1]])
    g = spacetime.metric(positions)
    null = initial_velocity(spacetime.metric, positions, spatial, "null")
    timelike = initial_velocity(spacetime.metric, positions, spatial, "timelike")
    torch.testing.assert_close(metric_norm(g, null), torch.zeros(3, dtype=F64), atol=1e-14, rtol=0)
    torch.testing.assert_close(
        metric_norm(g, timelike), -torch.ones(3, dtype=F64), atol=1e-13, rtol=0
    )
    assert bool((null[:, 0] > 0).all()) and bool((timelike[:, 0] > null[:, 0]).all())
    torch.testing.assert_close(
        initial_velocity(spacetime.metric, positions, spatial, "null", future=False), -null
    )
    with pytest.raises(
        ValueError, match="no null velocity"
    ):  # a Riemannian 'metric' has no light cone
        initial_velocity(
            lambda x: torch.eye(4, dtype=F64).expand(x.shape[0], 4, 4), positions, spatial, "null"
        )
    with pytest.raises(ValueError, match="kind"):
        initial_velocity(spacetime.metric, positions, spatial, "spacelike")


def test_circular_photon_orbit_at_three_mass_stays_on_it():
    """The unstable photon orbit r = 3M (Kerr-Schild chart): |r - 3M| < 1e-6 M over one full turn
    (2 pi) at rtol = atol = 1e-9 with dopri8, and the null constraint holds to 1e-8."""
    spacetime = Spacetime("schwarzschild_ks", SpacetimeParameters(mass=MASS))
    position = _tensor([[0.0, 3.0 * MASS, 0.0, 0.0]])
    velocity = initial_velocity(spacetime.metric, position, _tensor([[0.0, 1.0, 0.0]]))
    # u^phi = 1 / (3M): a full turn takes affine parameter 6 pi M
    affine = torch.linspace(0.0, 6.0 * math.pi * MASS, 9, dtype=F64)
    path = integrate_geodesics(
        spacetime.metric,
        position,
        velocity,
        affine,
        horizon_radius=2.0 * MASS,
        rtol=1e-9,
        atol=1e-9,
    )
    radius = cartesian_radius(path.positions[:, 0])
    assert float((radius - 3.0 * MASS).abs().max()) < 1e-6 * MASS
    angle = torch.atan2(path.positions[:, 0, 2], path.positions[:, 0, 1])
    assert (
        abs(float(angle[-1])) < 1e-6 and abs(abs(float(angle[len(angle) // 2])) - math.pi) < 1e-6
    )  # it went round
    assert float(path.constraint_drift[0]) < 1e-8
    assert int(path.status[0]) == GeodesicStatus.RUNNING


def test_timelike_orbit_precesses_by_the_post_newtonian_advance():
    """Eccentric orbit with a = 1000 M, e = 0.5 (Schwarzschild chart): the periapsis advances by
    6 pi M / (a (1 - e^2)) per orbit within 1 % (the next post-Newtonian order is ~0.6 % here),
    and by the exact advance 4 sqrt(p / (p - 6 + 2e)) K(4e / (p - 6 + 2e)) - 2 pi (Cutler,
    Kennefick & Poisson 1994, p = a (1 - e^2) / M) to 1e-4 relative."""
    from scipy.special import ellipk

    a, e = 1000.0 * MASS, 0.5
    p = a * (1 - e * e) / MASS
    periapsis = p * MASS / (1 + e)
    angular_momentum = p * MASS / math.sqrt(p - 3 - e * e)
    spacetime = Spacetime("schwarzschild", SpacetimeParameters(mass=MASS))
    position = _tensor([[0.0, periapsis, math.pi / 2, 0.0]])
    velocity = initial_velocity(
        spacetime.metric,
        position,
        _tensor([[0.0, 0.0, angular_momentum / periapsis**2]]),
        "timelike",
    )
    # past the apoapsis (3/4 of a Newtonian period), then to the next periapsis: u^r = 0 rising
    three_quarters = 1.5 * math.pi * (a**3 / MASS) ** 0.5
    tolerance = 1e-11
    path = integrate_geodesics(
        spacetime.metric,
        position,
        velocity,
        _tensor([0.0, three_quarters]),
        radius_fn=spherical_radius,
        rtol=tolerance,
        atol=tolerance,
    )
    assert float(path.velocities[-1, 0, 1]) < 0  # falling in again
    _, at_periapsis, _ = locate_event(
        spacetime.metric,
        path.positions[-1],
        path.velocities[-1],
        lambda x, u: u[:, 1],
        start=three_quarters,
        rtol=tolerance,
        atol=tolerance,
    )
    advance = float(at_periapsis[0, 3]) - 2 * math.pi
    post_newtonian = 6 * math.pi * MASS / (a * (1 - e * e))
    exact = (
        4 * math.sqrt(p / (p - 6 + 2 * e)) * float(ellipk(4 * e / (p - 6 + 2 * e))) - 2 * math.pi
    )
    assert abs(advance / post_newtonian - 1) < 1e-2
    assert abs(advance / exact - 1) < 1e-4
    assert abs(float(at_periapsis[0, 1]) - periapsis) < 1e-6 * periapsis
    assert float(path.constraint_drift[0]) < 1e-8


def test_flat_space_geodesics_are_straight_lines():
    """Flat space in spherical coordinates (Schwarzschild chart at M = 0; Christoffels nonzero) and
    in Cartesian coordinates: the paths are x0 + v lambda to 1e-10 (float64)."""
    flat = Spacetime("schwarzschild", SpacetimeParameters(mass=0.0))
    # the rays stay more than 3 away from the z axis, where the chart is singular
    positions = _tensor([[0.0, 5.0, 1.0, 0.3], [0.0, 8.0, 2.0, -1.0], [0.0, 4.0, 1.7, 2.0]])
    spatial = _tensor([[-0.5, 0.05, 0.1], [0.2, -0.02, 0.03], [-0.1, -0.02, -0.15]])
    velocities = initial_velocity(flat.metric, positions, spatial, "null")
    affine = torch.linspace(0.0, 12.0, 7, dtype=F64)
    path = integrate_geodesics(
        flat.metric,
        positions,
        velocities,
        affine,
        radius_fn=spherical_radius,
        rtol=1e-12,
        atol=1e-12,
    )
    xyz, v = _spherical_to_cartesian(path.positions, path.velocities)
    straight = xyz[0] + affine[:, None, None] * v[0]
    assert float((xyz - straight).abs().max()) < 1e-10
    assert float((v - v[0]).abs().max()) < 1e-10
    minkowski = Spacetime("minkowski", SpacetimeParameters())
    cartesian = torch.cat([torch.zeros(3, 1, dtype=F64), xyz[0]], -1)
    u = initial_velocity(minkowski.metric, cartesian, v[0], "null")
    line = integrate_geodesics(minkowski.metric, cartesian, u, affine)
    assert float((line.positions[:, :, 1:] - straight).abs().max()) < 1e-10


def test_chart_change_gives_the_same_deflection_and_keeps_the_null_constraint():
    """One light ray past the hole (impact parameter 8M) in Schwarzschild and Kerr-Schild
    coordinates: the same spatial path to 1e-7 relative and final direction to 1e-6 (the charts share
    x, y, z and differ only in t); the null constraint stays below 1e-9 in both (rtol 1e-9)."""
    start = _tensor([[0.0, -40.0, 8.0, 0.0]])
    direction = _tensor([[1.0, 0.0, 0.0]])
    affine = _tensor([0.0, 40.0, 80.0])
    kerr_schild = Spacetime("schwarzschild_ks", SpacetimeParameters(mass=MASS))
    u_ks = initial_velocity(kerr_schild.metric, start, direction)
    ks = integrate_geodesics(
        kerr_schild.metric, start, u_ks, affine, horizon_radius=2.0, rtol=1e-9, atol=1e-9
    )
    r = float(start[0, 1:].norm())
    theta, phi = math.pi / 2, math.atan2(8.0, -40.0)
    spherical_start = _tensor([[0.0, r, theta, phi]])
    # the same coordinate velocity dx^i / dlambda expressed in (r, theta, phi)
    spherical_velocity = _tensor([[-40.0 / r, 0.0, -8.0 / r**2]])
    schwarzschild = Spacetime("schwarzschild", SpacetimeParameters(mass=MASS))
    u_s = initial_velocity(schwarzschild.metric, spherical_start, spherical_velocity)
    sph = integrate_geodesics(
        schwarzschild.metric,
        spherical_start,
        u_s,
        affine,
        radius_fn=spherical_radius,
        horizon_radius=2.0,
        rtol=1e-9,
        atol=1e-9,
    )
    xyz, v = _spherical_to_cartesian(sph.positions, sph.velocities)
    assert float((xyz - ks.positions[..., 1:]).abs().max()) < 1e-7 * 40
    deflection_ks = math.atan2(float(ks.velocities[-1, 0, 2]), float(ks.velocities[-1, 0, 1]))
    deflection_s = math.atan2(float(v[-1, 0, 1]), float(v[-1, 0, 0]))
    assert abs(deflection_ks - deflection_s) < 1e-6
    assert (
        -1.0 < deflection_ks < -0.6
    )  # bent towards the hole (4M/b + 15 pi M^2 / 4b^2 = 0.68 to this order)
    assert float(ks.constraint_drift[0]) < 1e-9 and float(sph.constraint_drift[0]) < 1e-9


def test_termination_at_the_horizon_and_the_escape_radius():
    spacetime = Spacetime("schwarzschild_ks", SpacetimeParameters(mass=MASS))
    positions = _tensor([[0.0, 10.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0]])
    # radially in, radially out, tangential (escapes: 10M is outside the photon sphere)
    spatial = _tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    velocities = initial_velocity(spacetime.metric, positions, spatial)
    affine = torch.linspace(0.0, 24.0, 13, dtype=F64)
    path = integrate_geodesics(
        spacetime.metric,
        positions,
        velocities,
        affine,
        horizon_radius=2.0,
        escape_radius=20.0,
        rtol=1e-8,
        atol=1e-8,
    )
    assert path.status.tolist() == [
        GeodesicStatus.HORIZON,
        GeodesicStatus.ESCAPED,
        GeodesicStatus.ESCAPED,
    ]
    end = cartesian_radius(path.positions[-1])
    assert (
        1.6 < float(end[0]) <= 2.0 and 20.0 <= float(end[1]) < 24.0
    )  # halted just past the boundary
    # radial null rays move at |dr/dlambda| = 1 here: in by 8 at lambda 8, out by 10 at lambda 10
    torch.testing.assert_close(path.end_affine[:2], _tensor([8.0, 10.0]), atol=1e-3, rtol=0)
