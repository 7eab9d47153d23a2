"""Analytic spacetimes in float64: the metrics Einstein fields learn and are tested against.

Every chart is a torch function ``coords [..., 4] -> g [..., 4, 4]`` written with elementwise
operations and :func:`torch.stack` only (no in-place writes), so it works on one point or a
batch and under :mod:`torch.func` transforms: :func:`tensorfield.fields.relativity.metric_jets`
differentiates it exactly (to rounding) to any order. Units are geometric (``G = c = 1``), the
signature is ``(-, +, +, +)`` and indices run ``0..3`` over the chart's coordinates.

========================== ====================== ==============================================
name                       coordinates            metric
========================== ====================== ==============================================
``minkowski``              ``(t, x, y, z)``       ``eta = diag(-1, 1, 1, 1)``
``schwarzschild``          ``(t, r, theta, phi)`` ``-(1 - 2M/r) dt^2 + dr^2 / (1 - 2M/r) + r^2 dOmega^2``
``schwarzschild_ef``       ``(v, r, theta, phi)`` ingoing Eddington-Finkelstein: ``-(1 - 2M/r) dv^2 + 2 dv dr + r^2 dOmega^2``
``schwarzschild_ks``       ``(t, x, y, z)``       Kerr-Schild: ``eta + (2M/r) l l``, ``l = (1, x/r, y/r, z/r)``
``kerr_bl``                ``(t, r, theta, phi)`` Kerr in Boyer-Lindquist coordinates
``kerr_ks``                ``(t, x, y, z)``       Kerr in Kerr-Schild coordinates: ``eta + f l l``
``gw_tt``                  ``(t, x, y, z)``       linearised plane wave along ``z`` in TT gauge
========================== ====================== ==============================================

The flat metric "in the same chart" (what an Einstein field's ``distortion`` target is measured
from) is the chart at zero mass and amplitude: ``diag(-1, 1, r^2, r^2 sin^2 theta)`` for the
spherical charts, the oblate-spheroidal flat metric for Boyer-Lindquist, ``eta`` for the Cartesian
ones. Kerr uses the spin ``a = J / M`` (a length, ``|a| <= M``), with the hole's axis along ``z``.

References: Misner, Thorne & Wheeler, *Gravitation* (1973), eqs. 31.2, 33.2 and 35.22 (TT
waves); Visser, "The Kerr spacetime: a brief introduction" (arXiv:0706.0622) for the Kerr-Schild form.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

CARTESIAN = ("t", "x", "y", "z")
SPHERICAL = ("t", "r", "theta", "phi")


@dataclass(frozen=True)
class SpacetimeParameters:
    """Physical parameters of an analytic spacetime (geometric units).

    Attributes:
        mass: ``M`` of the black holes.
        spin: Kerr's ``a = J / M`` (same units as ``M``; ``|a| <= M``).
        amplitude: plus-polarisation amplitude ``A_+`` of the plane wave.
        cross_amplitude: cross-polarisation amplitude ``A_x`` of the plane wave.
        frequency: angular frequency ``omega`` of the plane wave.
    """

    mass: float = 1.0
    spin: float = 0.0
    amplitude: float = 0.0
    cross_amplitude: float = 0.0
    frequency: float = 1.0

    def flat(self) -> SpacetimeParameters:
        """The same chart without gravity (zero mass and amplitudes, the spin kept: Boyer-Lindquist
        at ``M = 0`` is flat space in oblate spheroidal coordinates)."""
        return SpacetimeParameters(0.0, self.spin, 0.0, 0.0, self.frequency)


def _symmetric(entries: dict[tuple[int, int], Tensor], like: Tensor) -> Tensor:
    """``[..., 4, 4]`` symmetric matrix from its upper-triangle entries (missing ones are 0)."""
    zero = torch.zeros_like(like)
    rows = []
    for i in range(4):
        row = [entries.get((min(i, j), max(i, j)), zero) for j in range(4)]
        rows.append(torch.stack(row, dim=-1))
    return torch.stack(rows, dim=-2)


def minkowski(coords: Tensor, params: SpacetimeParameters) -> Tensor:
    """``eta = diag(-1, 1, 1, 1)`` in Cartesian coordinates; ``coords [..., 4]`` -> ``[..., 4, 4]``."""
    t = coords[..., 0]
    one = torch.ones_like(t)
    return _symmetric({(0, 0): -one, (1, 1): one, (2, 2): one, (3, 3): one}, t)


def schwarzschild_spherical(coords: Tensor, params: SpacetimeParameters) -> Tensor:
    """Schwarzschild in Schwarzschild coordinates ``(t, r, theta, phi)`` (valid for ``r > 2M``)."""
    r, theta = coords[..., 1], coords[..., 2]
    lapse = 1 - 2 * params.mass / r
    sin = torch.sin(theta)
    return _symmetric({(0, 0): -lapse, (1, 1): 1 / lapse, (2, 2): r**2, (3, 3): (r * sin) ** 2}, r)


def schwarzschild_eddington_finkelstein(coords: Tensor, params: SpacetimeParameters) -> Tensor:
    """Schwarzschild in ingoing Eddington-Finkelstein coordinates ``(v, r, theta, phi)``,
    ``v = t + r + 2M ln|r/2M - 1|``: regular across the horizon (valid for ``r > 0``)."""
    r, theta = coords[..., 1], coords[..., 2]
    sin = torch.sin(theta)
    one = torch.ones_like(r)
    return _symmetric({(0, 0): -(1 - 2 * params.mass / r), (0, 1): one, (2, 2): r**2, (3, 3): (r * sin) ** 2}, r)


def kerr_schild_radius(coords: Tensor, spin: float) -> Tensor:
    """Kerr-Schild's ``r``: the positive root of ``(x^2 + y^2) / (r^2 + a^2) + z^2 / r^2 = 1``
    (``sqrt(x^2 + y^2 + z^2)`` at ``a = 0``); ``coords [..., 4]`` -> ``[...]``."""
    x, y, z = coords[..., 1], coords[..., 2], coords[..., 3]
    rho2 = x**2 + y**2 + z**2
    if spin == 0.0:
        return torch.sqrt(rho2)
    a2 = spin**2
    b = rho2 - a2
    return torch.sqrt(0.5 * (b + torch.sqrt(b**2 + 4 * a2 * z**2)))


def kerr_schild(coords: Tensor, params: SpacetimeParameters) -> Tensor:
    """Kerr (Schwarzschild at ``a = 0``) in Kerr-Schild Cartesian coordinates ``(t, x, y, z)``.

    ``g = eta + f l l`` with ``f = 2 M r^3 / (r^4 + a^2 z^2)`` and the null covector
    ``l = (1, (r x + a y) / (r^2 + a^2), (r y - a x) / (r^2 + a^2), z / r)``; regular across the
    horizon, singular on the ring ``r = 0`` (``x^2 + y^2 = a^2, z = 0``).
    """
    x, y, z = coords[..., 1], coords[..., 2], coords[..., 3]
    a = params.spin
    r = kerr_schild_radius(coords, a)
    f = 2 * params.mass * r**3 / (r**4 + a**2 * z**2)
    l = (torch.ones_like(r), (r * x + a * y) / (r**2 + a**2), (r * y - a * x) / (r**2 + a**2), z / r)
    eta = (-1.0, 1.0, 1.0, 1.0)
    entries = {}
    for i in range(4):
        for j in range(i, 4):
            entries[(i, j)] = f * l[i] * l[j] + (eta[i] if i == j else 0.0)
    return _symmetric(entries, r)


def kerr_boyer_lindquist(coords: Tensor, params: SpacetimeParameters) -> Tensor:
    """Kerr in Boyer-Lindquist coordinates ``(t, r, theta, phi)`` (valid outside the outer horizon
    ``r_+ = M + sqrt(M^2 - a^2)``): with ``Sigma = r^2 + a^2 cos^2 theta`` and
    ``Delta = r^2 - 2 M r + a^2``,
    ``g_tt = -(1 - 2Mr/Sigma)``, ``g_tphi = -2 M a r sin^2 theta / Sigma``, ``g_rr = Sigma / Delta``,
    ``g_thth = Sigma``, ``g_phph = (r^2 + a^2 + 2 M a^2 r sin^2 theta / Sigma) sin^2 theta``."""
    r, theta = coords[..., 1], coords[..., 2]
    m, a = params.mass, params.spin
    sin2 = torch.sin(theta) ** 2
    sigma = r**2 + a**2 * torch.cos(theta) ** 2
    delta = r**2 - 2 * m * r + a**2
    return _symmetric(
        {
            (0, 0): -(1 - 2 * m * r / sigma),
            (0, 3): -2 * m * a * r * sin2 / sigma,
            (1, 1): sigma / delta,
            (2, 2): sigma,
            (3, 3): (r**2 + a**2 + 2 * m * a**2 * r * sin2 / sigma) * sin2,
        },
        r,
    )


def plane_wave_tt(coords: Tensor, params: SpacetimeParameters) -> Tensor:
    """Linearised gravitational plane wave along ``+z`` in TT gauge, ``g = eta + h`` with
    ``h_xx = -h_yy = A_+ cos(omega (t - z))`` and ``h_xy = A_x cos(omega (t - z))``.

    A vacuum solution to first order in the amplitude (its Ricci tensor is ``O(A^2)``).
    """
    t, z = coords[..., 0], coords[..., 3]
    phase = torch.cos(params.frequency * (t - z))
    one = torch.ones_like(t)
    plus, cross = params.amplitude * phase, params.cross_amplitude * phase
    return _symmetric({(0, 0): -one, (1, 1): one + plus, (1, 2): cross, (2, 2): one - plus, (3, 3): one}, t)


def _no_radius(coords: Tensor, params: SpacetimeParameters) -> Tensor:
    return torch.full_like(coords[..., 0], math.inf)


def _chart_radius(coords: Tensor, params: SpacetimeParameters) -> Tensor:
    return coords[..., 1]


def _ks_radius(coords: Tensor, params: SpacetimeParameters) -> Tensor:
    return kerr_schild_radius(coords, params.spin)


@dataclass(frozen=True)
class Chart:
    """One analytic spacetime in one coordinate chart.

    Attributes:
        name: the config's ``spacetime`` value.
        coordinates: the four coordinate names (slice axes, user data).
        metric: ``(coords [..., 4], params) -> g [..., 4, 4]`` float64.
        radius: ``(coords, params) -> [...]`` the radius excision is measured in (Schwarzschild
            or Boyer-Lindquist ``r``; ``inf`` where nothing is excised).
        time_dependent: the metric depends on the time coordinate.
        summary: one line for docs and errors.
    """

    name: str
    coordinates: tuple[str, str, str, str]
    metric: Callable[[Tensor, SpacetimeParameters], Tensor]
    radius: Callable[[Tensor, SpacetimeParameters], Tensor]
    time_dependent: bool
    summary: str

    @property
    def cartesian(self) -> bool:
        return self.coordinates == CARTESIAN


CHARTS: dict[str, Chart] = {
    chart.name: chart
    for chart in (
        Chart("minkowski", CARTESIAN, minkowski, _no_radius, False, "flat space, Cartesian"),
        Chart("schwarzschild", SPHERICAL, schwarzschild_spherical, _chart_radius, False, "Schwarzschild, Schwarzschild coordinates"),
        Chart("schwarzschild_ef", ("v", "r", "theta", "phi"), schwarzschild_eddington_finkelstein, _chart_radius, False, "Schwarzschild, ingoing Eddington-Finkelstein"),
        Chart("schwarzschild_ks", CARTESIAN, kerr_schild, _ks_radius, False, "Schwarzschild, Kerr-Schild Cartesian"),
        Chart("kerr_bl", SPHERICAL, kerr_boyer_lindquist, _chart_radius, False, "Kerr, Boyer-Lindquist"),
        Chart("kerr_ks", CARTESIAN, kerr_schild, _ks_radius, False, "Kerr, Kerr-Schild Cartesian"),
        Chart("gw_tt", CARTESIAN, plane_wave_tt, _no_radius, True, "linearised plane gravitational wave, TT gauge"),
    )
}
"""The analytic spacetimes by config name."""


class Spacetime:
    """An analytic chart with its parameters: the metric and its flat counterpart as functions.

    Args:
        name: a key of :data:`CHARTS`.
        params: mass, spin, wave amplitude and frequency (Schwarzschild charts ignore the spin).

    Raises:
        ValueError: unknown name, or ``|a| > M`` for Kerr (a naked singularity).
    """

    def __init__(self, name: str, params: SpacetimeParameters) -> None:
        if name not in CHARTS:
            raise ValueError(f"unknown spacetime '{name}' (known: {', '.join(CHARTS)})")
        if name.startswith("schwarzschild") and params.spin != 0.0:
            params = SpacetimeParameters(params.mass, 0.0, params.amplitude, params.cross_amplitude, params.frequency)
        if name.startswith("kerr") and abs(params.spin) > params.mass:
            raise ValueError(f"spin {params.spin} exceeds the mass {params.mass} (|a| <= M, else a naked singularity)")
        self.chart = CHARTS[name]
        self.params = params

    @property
    def name(self) -> str:
        return self.chart.name

    def metric(self, coords: Tensor) -> Tensor:
        """``g [..., 4, 4]`` at ``coords [..., 4]`` (float64 in, float64 out)."""
        return self.chart.metric(coords, self.params)

    def flat_metric(self, coords: Tensor) -> Tensor:
        """The flat metric in the same chart at ``coords [..., 4]`` (``[..., 4, 4]``)."""
        return self.chart.metric(coords, self.params.flat())

    def radius(self, coords: Tensor) -> Tensor:
        """``[...]`` the radius excision is measured in (``inf`` for charts without a singularity)."""
        return self.chart.radius(coords, self.params)

    def horizon_radius(self) -> float:
        """The outer horizon ``r_+ = M + sqrt(M^2 - a^2)`` (0 without one)."""
        if self.name in ("minkowski", "gw_tt"):
            return 0.0
        m, a = self.params.mass, self.params.spin
        return m + math.sqrt(max(m * m - a * a, 0.0))


def sample_points(
    spacetime: Spacetime,
    domain_min: tuple[float, ...],
    domain_max: tuple[float, ...],
    excision_radius: float,
    count: int,
    generator: torch.Generator,
) -> Tensor:
    """Uniform samples of the coordinate box, excising ``radius < excision_radius``.

    Args:
        spacetime: gives the radius excision is measured in.
        domain_min, domain_max: the box's corners in the chart's coordinates (4 each).
        excision_radius: points closer than this to the singularity are rejected.
        count: how many points.
        generator: the CPU generator drawn from (the trainer's, or a fixed held-out one).

    Returns:
        ``[count, 4]`` float64 coordinates.

    Raises:
        ValueError: almost the whole box is excised (fewer than 1 in 1000 samples kept).
    """
    low = torch.tensor(domain_min, dtype=torch.float64)
    high = torch.tensor(domain_max, dtype=torch.float64)
    kept: list[Tensor] = []
    have, drawn = 0, 0
    while have < count:
        want = max(2 * (count - have), 64)
        unit = torch.rand(want, 4, generator=generator, dtype=torch.float64)
        points = low + unit * (high - low)
        points = points[spacetime.radius(points) >= excision_radius]
        kept.append(points)
        have += points.shape[0]
        drawn += want
        if drawn > 1000 * max(count, 64) and have * 1000 < drawn:
            raise ValueError(
                f"the domain {list(domain_min)}..{list(domain_max)} lies almost entirely inside the excision radius {excision_radius}"
            )
    return torch.cat(kept)[:count]
