"""Curvature by autodiff (fields/relativity.py) against closed forms and einsteinpy's symbolic tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tensorfield.datasets.spacetimes import Spacetime, SpacetimeParameters, kerr_schild_radius, sample_points
from tensorfield.fields.relativity import christoffels_at, curvature, metric_jets

MASS, SPIN = 1.0, 0.7


def _points(spacetime: Spacetime, count: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if spacetime.chart.cartesian:
        return sample_points(spacetime, (0, -6, -6, -6), (1, 6, 6, 6), 2.5, count, generator)
    return sample_points(spacetime, (0, 2.5, 0.2, 0), (1, 9, math.pi - 0.2, 2 * math.pi), 2.5, count, generator)


def _kerr_kretschmann(r: torch.Tensor, cos_theta: torch.Tensor, m: float, a: float) -> torch.Tensor:
    c2 = cos_theta**2
    return 48 * m**2 * (r**6 - 15 * a**2 * r**4 * c2 + 15 * a**4 * r**2 * c2**2 - a**6 * c2**3) / (r**2 + a**2 * c2) ** 6


@pytest.mark.parametrize("name", ["schwarzschild", "schwarzschild_ef", "schwarzschild_ks", "kerr_bl", "kerr_ks"])
def test_kretschmann_matches_closed_form_and_vacuum(name):
    spin = SPIN if name.startswith("kerr") else 0.0
    spacetime = Spacetime(name, SpacetimeParameters(mass=MASS, spin=spin))
    points = _points(spacetime)
    geometry = curvature(spacetime.metric, points)
    if spacetime.chart.cartesian:
        r = kerr_schild_radius(points, spin)
        cos_theta = points[:, 3] / r
    else:
        r, cos_theta = points[:, 1], torch.cos(points[:, 2])
    expected = _kerr_kretschmann(r, cos_theta, MASS, spin)
    if spin == 0.0:
        torch.testing.assert_close(expected, 48 * MASS**2 / r**6)
    torch.testing.assert_close(geometry.kretschmann, expected, rtol=1e-10, atol=0)
    # vacuum: Ricci and Einstein vanish (to rounding, relative to the Riemann scale)
    scale = float(geometry.riemann.abs().max())
    assert float(geometry.ricci.abs().max()) < 1e-12 * scale
    assert float(geometry.einstein.abs().max()) < 1e-12 * scale
    assert float(geometry.ricci_scalar.abs().max()) < 1e-12 * scale


def test_schwarzschild_christoffels_hand_written():
    spacetime = Spacetime("schwarzschild", SpacetimeParameters(mass=MASS))
    points = _points(spacetime, 16)
    gamma = christoffels_at(spacetime.metric, points)
    r, theta = points[:, 1], points[:, 2]
    m = MASS
    expected = torch.zeros_like(gamma)
    expected[:, 0, 0, 1] = expected[:, 0, 1, 0] = m / (r * (r - 2 * m))
    expected[:, 1, 0, 0] = m * (r - 2 * m) / r**3
    expected[:, 1, 1, 1] = -m / (r * (r - 2 * m))
    expected[:, 1, 2, 2] = -(r - 2 * m)
    expected[:, 1, 3, 3] = -(r - 2 * m) * torch.sin(theta) ** 2
    expected[:, 2, 1, 2] = expected[:, 2, 2, 1] = 1 / r
    expected[:, 2, 3, 3] = -torch.sin(theta) * torch.cos(theta)
    expected[:, 3, 1, 3] = expected[:, 3, 3, 1] = 1 / r
    expected[:, 3, 2, 3] = expected[:, 3, 3, 2] = torch.cos(theta) / torch.sin(theta)
    torch.testing.assert_close(gamma, expected, rtol=1e-12, atol=1e-14)


def test_chart_change_keeps_kretschmann():
    """Schwarzschild and Kerr-Schild coordinates of the same events give the same invariant."""
    spherical = Spacetime("schwarzschild", SpacetimeParameters(mass=MASS))
    points = _points(spherical, 32, seed=3)
    t, r, theta, phi = points.unbind(-1)
    # Kerr-Schild time differs from Schwarzschild time by a function of r; the scalar is static anyway
    cartesian = torch.stack([t, r * torch.sin(theta) * torch.cos(phi), r * torch.sin(theta) * torch.sin(phi), r * torch.cos(theta)], -1)
    kerr_schild = Spacetime("schwarzschild_ks", SpacetimeParameters(mass=MASS))
    k_spherical = curvature(spherical.metric, points).kretschmann
    k_cartesian = curvature(kerr_schild.metric, cartesian).kretschmann
    torch.testing.assert_close(k_cartesian, k_spherical, rtol=1e-10, atol=0)
    # the chart change does change the Christoffels: the comparison above is not vacuous
    assert not torch.allclose(christoffels_at(spherical.metric, points), christoffels_at(kerr_schild.metric, cartesian))


def test_plane_wave_is_vacuum_to_first_order():
    """The linearised wave's Ricci tensor is O(A^2): halving A divides it by ~4, its Riemann by ~2."""
    sizes = []
    for amplitude in (1e-2, 5e-3):
        wave = Spacetime("gw_tt", SpacetimeParameters(amplitude=amplitude, cross_amplitude=0.5 * amplitude, frequency=2.0))
        geometry = curvature(wave.metric, _points(wave, 32))
        sizes.append((float(geometry.riemann.abs().max()), float(geometry.ricci.abs().max())))
    (riemann_big, ricci_big), (riemann_small, ricci_small) = sizes
    assert riemann_big / riemann_small == pytest.approx(2.0, rel=0.05)
    assert ricci_big / ricci_small == pytest.approx(4.0, rel=0.05)
    assert ricci_big < 5 * 1e-2 * riemann_big  # O(A) relative to the curvature, A = 1e-2


def test_jets_of_a_batch_match_finite_differences():
    """The metric's Jacobian and Hessian themselves (what Sobolev training supervises)."""
    spacetime = Spacetime("kerr_ks", SpacetimeParameters(mass=MASS, spin=SPIN))
    points = _points(spacetime, 8)
    jets = metric_jets(spacetime.metric, points, order=2, chunk_size=3)
    step = 1e-5
    for k in range(4):
        offset = torch.zeros(4, dtype=torch.float64)
        offset[k] = step
        central = (spacetime.metric(points + offset) - spacetime.metric(points - offset)) / (2 * step)
        torch.testing.assert_close(jets.jacobian[..., k], central, rtol=1e-6, atol=1e-8)
        jacobian_central = (metric_jets(spacetime.metric, points + offset, 1).jacobian - metric_jets(spacetime.metric, points - offset, 1).jacobian) / (2 * step)
        torch.testing.assert_close(jets.hessian[..., k], jacobian_central, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------ einsteinpy
einsteinpy = pytest.importorskip("einsteinpy")


def _symbolic(tensor, symbols, points: torch.Tensor) -> torch.Tensor:
    import sympy

    function = sympy.lambdify(symbols, tensor.tensor(), "numpy")
    values = []
    for point in points.tolist():
        value = np.array(function(*point), dtype=object)
        values.append(np.vectorize(float)(np.broadcast_to(value, value.shape)))
    return torch.tensor(np.stack(values), dtype=torch.float64)


def test_christoffels_and_riemann_match_einsteinpy_schwarzschild():
    from einsteinpy.symbolic import ChristoffelSymbols, RiemannCurvatureTensor
    from einsteinpy.symbolic.predefined import Schwarzschild

    metric = Schwarzschild(c=1, sch=2 * MASS)  # (+, -, -, -), r_s = 2M
    christoffel = ChristoffelSymbols.from_metric(metric)
    riemann = RiemannCurvatureTensor.from_christoffels(christoffel)
    spacetime = Spacetime("schwarzschild", SpacetimeParameters(mass=MASS))
    points = _points(spacetime, 6, seed=5)
    geometry = curvature(spacetime.metric, points)
    torch.testing.assert_close(geometry.christoffel, _symbolic(christoffel, metric.symbols(), points), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(geometry.riemann, _symbolic(riemann, metric.symbols(), points), rtol=1e-10, atol=1e-12)


def test_christoffels_match_einsteinpy_kerr_boyer_lindquist():
    import sympy
    from einsteinpy.symbolic import ChristoffelSymbols
    from einsteinpy.symbolic.predefined import Kerr

    metric = Kerr(c=1, sch=2 * MASS, a=sympy.Rational(7, 10))
    christoffel = ChristoffelSymbols.from_metric(metric)
    spacetime = Spacetime("kerr_bl", SpacetimeParameters(mass=MASS, spin=0.7))
    points = _points(spacetime, 6, seed=6)
    torch.testing.assert_close(christoffels_at(spacetime.metric, points), _symbolic(christoffel, metric.symbols(), points), rtol=1e-10, atol=1e-12)


# einsteinpy has no Kerr-Schild or TT-wave metric, and its simplification of hand-written ones
# takes minutes: those charts are checked against closed forms, the chart change and O(A^2) above.
