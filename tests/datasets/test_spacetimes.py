"""Analytic charts and the domain sampler (datasets/spacetimes.py)."""

from __future__ import annotations

import math

import pytest
import torch
from tensorfield.datasets.spacetimes import CHARTS, Spacetime, SpacetimeParameters, kerr_schild_radius, sample_points


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_metrics_are_symmetric_lorentzian_and_flat_without_mass(name):
    spacetime = Spacetime(name, SpacetimeParameters(mass=1.0, spin=0.5 if name.startswith("kerr") else 0.0, amplitude=0.1, frequency=1.5))
    generator = torch.Generator().manual_seed(1)
    box = ((0, -4, -4, -4), (2, 4, 4, 4)) if spacetime.chart.cartesian else ((0, 2.5, 0.3, 0.0), (2, 6, 2.8, 6.0))
    points = sample_points(spacetime, *box, 2.5, 100, generator)
    g = spacetime.metric(points)
    assert g.shape == (100, 4, 4) and g.dtype == torch.float64
    torch.testing.assert_close(g, g.transpose(-1, -2), rtol=0, atol=0)
    signs = torch.linalg.eigvalsh(g).sign()
    assert bool((signs == torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=torch.float64)).all())
    flat = spacetime.flat_metric(points)
    if name in ("minkowski",):
        torch.testing.assert_close(g, flat)
    else:
        assert float((g - flat).abs().max()) > 1e-3  # gravity changes the metric
    if spacetime.chart.cartesian:
        torch.testing.assert_close(flat, torch.diag(torch.tensor([-1.0, 1, 1, 1], dtype=torch.float64)).expand(100, 4, 4))


def test_sampler_excises_and_stays_in_the_box():
    spacetime = Spacetime("kerr_ks", SpacetimeParameters(mass=1.0, spin=0.9))
    generator = torch.Generator().manual_seed(0)
    points = sample_points(spacetime, (0, -3, -3, -3), (1, 3, 3, 3), 2.0, 500, generator)
    assert points.shape == (500, 4)
    assert bool((kerr_schild_radius(points, 0.9) >= 2.0).all())
    assert bool((points[:, 1:].abs() <= 3).all()) and bool(((points[:, 0] >= 0) & (points[:, 0] <= 1)).all())
    # same generator state, same points (held-out sets are reproducible)
    again = sample_points(spacetime, (0, -3, -3, -3), (1, 3, 3, 3), 2.0, 500, torch.Generator().manual_seed(0))
    torch.testing.assert_close(points, again)


def test_sampler_rejects_a_fully_excised_box():
    spacetime = Spacetime("schwarzschild", SpacetimeParameters(mass=1.0))
    with pytest.raises(ValueError, match="excision radius"):
        sample_points(spacetime, (0, 1, 0.1, 0), (1, 2, 3, 6), 2.5, 10, torch.Generator().manual_seed(0))


def test_kerr_schild_radius_solves_its_quadric_and_spin_bound():
    points = torch.tensor([[0.0, 1.0, 2.0, 0.5], [0.0, -3.0, 0.2, -1.0]], dtype=torch.float64)
    a = 0.8
    r = kerr_schild_radius(points, a)
    x, y, z = points[:, 1], points[:, 2], points[:, 3]
    torch.testing.assert_close((x**2 + y**2) / (r**2 + a**2) + z**2 / r**2, torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="exceeds the mass"):
        Spacetime("kerr_bl", SpacetimeParameters(mass=1.0, spin=1.2))
    with pytest.raises(ValueError, match="unknown spacetime"):
        Spacetime("reissner", SpacetimeParameters())
    assert Spacetime("kerr_ks", SpacetimeParameters(mass=1.0, spin=0.6)).horizon_radius() == pytest.approx(1.8)
    assert not math.isfinite(float(Spacetime("gw_tt", SpacetimeParameters()).radius(points)[0]))
