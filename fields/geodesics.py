"""Geodesics of any metric (analytic chart or neural field), batched, with error control.

A geodesic ``x^mu(lambda)`` with velocity ``u^mu = dx^mu / dlambda`` solves

    dx^mu / dlambda = u^mu,        du^mu / dlambda = -Gamma^mu_ab u^a u^b,

with the Christoffel symbols of :func:`tensorfield.fields.relativity.christoffels_at` (forward-mode
autodiff of ``metric_fn``; the same code for a network and for an analytic chart). The state of
``B`` geodesics is ``[B, 8]`` = ``(x, u)``. The integration uses torchdiffeq's adaptive
Runge-Kutta solvers with error control (``dopri8`` = Dormand-Prince 8(5,3), ``dopri5``).

The quadratic constraint ``C = g_ab u^a u^b`` is a first integral: ``0`` for light, ``-1`` for a
timelike geodesic parametrised by proper time (signature ``(-, +, +, +)``). The solver does not
enforce it, so its drift along the path measures the integration error
(:attr:`GeodesicPath.constraint_drift`).

Initial data are a position and the spatial components ``u^i`` (:func:`initial_velocity` solves
``C = 0`` or ``-1`` for ``u^t``). Integration stops ray by ray at the horizon
(``radius <= horizon_radius``), past an escape radius, or at the last requested affine
parameter; exact event locations (periapsis, a plane crossing) come from :func:`locate_event`.

References: Misner, Thorne & Wheeler, *Gravitation* (1973), section 25; Dormand & Prince,
J. Comp. Appl. Math. 6 (1980); torchdiffeq (Chen et al., 2018).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensorfield.fields.relativity import MetricFunction, christoffels_at
from torch import Tensor

RadiusFunction = Callable[[Tensor], Tensor]
"""``positions [B, 4] -> [B]`` the radius termination is measured in."""


class GeodesicStatus(enum.IntEnum):
    """Why a geodesic stopped (values of :attr:`GeodesicPath.status`)."""

    RUNNING = 0  # reached the last requested affine parameter
    HORIZON = 1  # radius fell to the horizon radius
    ESCAPED = 2  # radius grew past the escape radius
    FAILED = 3  # the state became non-finite (a coordinate singularity)


def cartesian_radius(positions: Tensor) -> Tensor:
    """``[B]`` Euclidean ``sqrt(x^2 + y^2 + z^2)`` of ``(t, x, y, z)`` positions ``[B, 4]``."""
    return positions[..., 1:].norm(dim=-1)


def spherical_radius(positions: Tensor) -> Tensor:
    """``[B]`` the ``r`` of ``(t, r, theta, phi)`` positions ``[B, 4]``."""
    return positions[..., 1]


def metric_norm(metric: Tensor, velocity: Tensor) -> Tensor:
    """``[B]`` ``g_ab u^a u^b`` of ``u [B, 4]`` with ``g [B, 4, 4]``."""
    return torch.einsum("...a,...ab,...b->...", velocity, metric, velocity)


def _batched_metric(metric_fn: MetricFunction, positions: Tensor) -> Tensor:
    return metric_fn(positions).to(positions.dtype)


def initial_velocity(
    metric_fn: MetricFunction,
    positions: Tensor,
    spatial: Tensor,
    kind: str = "null",
    future: bool = True,
) -> Tensor:
    """Complete spatial components ``u^i`` to a null or unit timelike ``u^mu``.

    Solves ``g_tt (u^t)^2 + 2 g_ti u^i u^t + g_ij u^i u^j = -kappa`` (``kappa = 0`` light,
    ``1`` timelike, ``lambda`` = proper time) for ``u^t``. Where ``g_tt < 0`` exactly one root
    is positive (future-directed when ``t`` increases to the future); inside an ergoregion
    (``g_tt >= 0``) the larger root is taken.

    Args:
        metric_fn: ``[B, 4] -> [B, 4, 4]``.
        positions: ``[B, 4]``.
        spatial: ``[B, 3]`` ``u^i`` (for light only the direction and a scale matter).
        kind: ``"null"`` or ``"timelike"``.
        future: ``False`` negates the result: the same curve traced backwards in time.

    Returns:
        ``[B, 4]`` ``u^mu``.

    Raises:
        ValueError: unknown ``kind``, or no real root (the metric is not Lorentzian there).
    """
    if kind not in ("null", "timelike"):
        raise ValueError(f"geodesic kind must be 'null' or 'timelike', got '{kind}'")
    g = _batched_metric(metric_fn, positions)
    kappa = 0.0 if kind == "null" else 1.0
    a = g[:, 0, 0]
    b = 2 * torch.einsum("bi,bi->b", g[:, 0, 1:], spatial)
    c = torch.einsum("bi,bij,bj->b", spatial, g[:, 1:, 1:], spatial) + kappa
    discriminant = b * b - 4 * a * c
    if bool((discriminant < 0).any()):
        index = int(torch.nonzero(discriminant < 0)[0, 0])
        raise ValueError(
            f"no {kind} velocity with spatial part {spatial[index].tolist()} at {positions[index].tolist()}"
        )
    root = torch.sqrt(discriminant)
    # a < 0: (-b - root) / 2a is the positive root; a > 0: both roots share a sign, take the larger
    u_t = torch.where(a < 0, (-b - root) / (2 * a), (-b + root) / (2 * a))
    u = torch.cat([u_t[:, None], spatial], dim=-1)
    return u if future else -u


def geodesic_acceleration(christoffel: Tensor, velocity: Tensor) -> Tensor:
    """``[B, 4]`` ``-Gamma^a_bc u^b u^c`` from ``Gamma [B, 4, 4, 4]`` and ``u [B, 4]``."""
    return -torch.einsum("nabc,nb,nc->na", christoffel, velocity, velocity)


def geodesic_rhs(
    metric_fn: MetricFunction, chunk_size: int | None = None
) -> Callable[[Tensor, Tensor], Tensor]:
    """The geodesic equation as an ODE right-hand side ``(lambda, state [B, 8]) -> [B, 8]``."""

    def rhs(affine: Tensor, state: Tensor) -> Tensor:
        position, velocity = state[:, :4], state[:, 4:]
        gamma = christoffels_at(metric_fn, position, chunk_size=chunk_size).to(state.dtype)
        return torch.cat([velocity, geodesic_acceleration(gamma, velocity)], dim=-1)

    return rhs


@dataclass
class GeodesicPath:
    """``B`` geodesics sampled at ``T`` affine parameters.

    After a geodesic stops (:attr:`status` other than ``RUNNING``) its samples hold states just
    beyond the boundary it crossed (it is brought to a halt there).

    Attributes:
        affine: ``[T]`` the requested affine parameters.
        positions: ``[T, B, 4]``.
        velocities: ``[T, B, 4]``.
        constraint: ``[T, B]`` ``g(u, u)`` along the path.
        status: ``[B]`` int64 :class:`GeodesicStatus`.
        end_affine: ``[B]`` affine parameter where the geodesic left the shell (interpolated
            between samples; the last one for ``RUNNING``).
    """

    affine: Tensor
    positions: Tensor
    velocities: Tensor
    constraint: Tensor
    status: Tensor
    end_affine: Tensor

    @property
    def constraint_drift(self) -> Tensor:
        """``[B]`` ``max_lambda |g(u, u) - g(u, u)_0| / (u^t_0)^2``: the constraint's drift
        relative to the size of the initial velocity (dimensionless for light and matter)."""
        scale = self.velocities[0, :, 0] ** 2
        return (self.constraint - self.constraint[:1]).abs().amax(dim=0) / scale


def _termination(
    positions: Tensor,
    velocities: Tensor,
    radius_fn: RadiusFunction,
    horizon_radius: float,
    escape_radius: float,
) -> Tensor:
    """``[...]`` :class:`GeodesicStatus` of states ``[..., 4]`` (``RUNNING`` while inside the shell)."""
    radius = radius_fn(positions)
    status = torch.full(
        radius.shape, int(GeodesicStatus.RUNNING), dtype=torch.int64, device=radius.device
    )
    status = torch.where(radius <= horizon_radius, int(GeodesicStatus.HORIZON), status)
    status = torch.where(radius >= escape_radius, int(GeodesicStatus.ESCAPED), status)
    finite = torch.isfinite(positions).all(-1) & torch.isfinite(velocities).all(-1)
    return torch.where(finite, status, int(GeodesicStatus.FAILED))


def _margin(
    positions: Tensor, radius_fn: RadiusFunction, horizon_radius: float, escape_radius: float
) -> Tensor:
    """``[...]`` signed distance inside the shell ``horizon_radius < radius < escape_radius``
    (``<= 0`` outside)."""
    radius = radius_fn(positions)
    margin = radius - horizon_radius
    if math.isfinite(escape_radius):
        margin = torch.minimum(margin, escape_radius - radius)
    return margin


def _brake(radius: Tensor, horizon_radius: float, escape_radius: float) -> Tensor:
    """``[B]`` the factor ``s`` of the reparametrised equation ``dy / dlambda' = s f(y)``: 1 inside
    the shell, ``exp(-(d / w)^4)`` at a depth ``d`` beyond a boundary (``w`` a tenth of that
    sphere's radius). Inside the shell the solution is untouched; outside, the geodesic slows to a
    halt before it nears the singularity behind the horizon. ``s`` is smooth to third order at the
    boundary, so the adaptive steps stay large."""
    brake = torch.ones_like(radius)
    if horizon_radius > 0:
        depth = (horizon_radius - radius).clamp_min(0) / (0.1 * horizon_radius)
        brake = brake * torch.exp(-(depth**4))
    if math.isfinite(escape_radius):
        depth = (radius - escape_radius).clamp_min(0) / (0.1 * escape_radius)
        brake = brake * torch.exp(-(depth**4))
    return brake


def integrate_geodesics(
    metric_fn: MetricFunction,
    positions: Tensor,
    velocities: Tensor,
    affine: Tensor,
    *,
    radius_fn: RadiusFunction = cartesian_radius,
    horizon_radius: float = 0.0,
    escape_radius: float = math.inf,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    method: str = "dopri8",
    chunk_size: int | None = None,
    max_steps: int = 100_000,
) -> GeodesicPath:
    """Integrate ``B`` geodesics with an adaptive Runge-Kutta method (torchdiffeq).

    One solve serves a batch whose members stop at different times: a geodesic that leaves the
    shell ``horizon_radius < radius < escape_radius`` is brought to a smooth halt just beyond
    the boundary (:func:`_brake`, a reparametrisation that leaves the path inside the shell exact
    and keeps the right-hand side smooth, so the shared step size does not collapse and no ray
    reaches the singular region behind a horizon). Its status and the affine parameter where it
    crossed (linear interpolation of the radius between the two samples around the crossing)
    are read off the samples; :func:`locate_event` gives exact event locations. The solver steps
    onto every requested affine parameter (torchdiffeq's ``step_t``): the samples are solution
    points, not values of the lower-order dense-output interpolant.

    Args:
        metric_fn: ``[B, 4] -> [B, 4, 4]`` in the chart of ``positions``.
        positions: ``[B, 4]`` initial events.
        velocities: ``[B, 4]`` initial ``u^mu`` (e.g. from :func:`initial_velocity`).
        affine: ``[T]`` increasing affine parameters to sample at; ``affine[0]`` is the start,
            ``affine[-1]`` the maximum (trace backwards by negating the velocity).
        radius_fn: the radius the two spheres are measured in (:func:`cartesian_radius` for
            ``(t, x, y, z)`` charts, :func:`spherical_radius` for ``(t, r, theta, phi)``).
        horizon_radius: stop when the radius falls to this (0: never).
        escape_radius: stop when the radius reaches this (``inf``: never).
        rtol, atol: the solver's relative and absolute error tolerances per step.
        method: a torchdiffeq adaptive method (``dopri8``, ``dopri5``, ``bosh3``...).
        chunk_size: points per vectorised Christoffel chunk (memory bound for big batches).
        max_steps: the solver's step limit.

    Returns:
        :class:`GeodesicPath` in the dtype of ``positions`` (a stopped geodesic's later samples
        lie just beyond the boundary it crossed).

    Raises:
        ValueError: bad shapes, or ``affine`` not increasing.
    """
    from torchdiffeq import odeint

    if positions.shape != velocities.shape or positions.shape[-1] != 4 or positions.ndim != 2:
        raise ValueError(
            f"positions and velocities must both be [B, 4], got {tuple(positions.shape)} and {tuple(velocities.shape)}"
        )
    affine = affine.to(positions)
    if affine.ndim != 1 or affine.numel() < 2 or not bool((affine[1:] > affine[:-1]).all()):
        raise ValueError("affine must be an increasing 1D tensor of at least two parameters")
    rhs = geodesic_rhs(metric_fn, chunk_size)

    def braked_rhs(lam: Tensor, state: Tensor) -> Tensor:
        brake = _brake(radius_fn(state[:, :4]), horizon_radius, escape_radius)
        return rhs(lam, state) * brake[:, None]

    state0 = torch.cat([positions, velocities], dim=-1)
    with torch.no_grad():
        states = odeint(
            braked_rhs,
            state0,
            affine,
            rtol=rtol,
            atol=atol,
            method=method,
            options={"max_num_steps": max_steps, "step_t": affine},
        )
    path_positions, path_velocities = states[..., :4], states[..., 4:]
    count, batch = states.shape[:2]
    metric = _batched_metric(metric_fn, path_positions.reshape(-1, 4)).reshape(count, batch, 4, 4)
    constraint = metric_norm(metric, path_velocities)
    statuses = _termination(
        path_positions, path_velocities, radius_fn, horizon_radius, escape_radius
    )  # [T, B]
    stopped = statuses != GeodesicStatus.RUNNING
    first = torch.where(stopped.any(0), stopped.int().argmax(0), count - 1)
    status = statuses.gather(0, first[None])[0]
    # where the radius crossed the boundary: linear in lambda between the samples around it
    margin = _margin(path_positions, radius_fn, horizon_radius, escape_radius)  # [T, B]
    before = (first - 1).clamp_min(0)
    m0, m1 = margin.gather(0, before[None])[0], margin.gather(0, first[None])[0]
    fraction = (m0 / (m0 - m1).clamp_min(1e-300)).clamp(0, 1)
    crossed = affine[before] + fraction * (affine[first] - affine[before])
    end_affine = torch.where(stopped.any(0) & (first > 0), crossed, affine[first])
    return GeodesicPath(affine, path_positions, path_velocities, constraint, status, end_affine)


def locate_event(
    metric_fn: MetricFunction,
    position: Tensor,
    velocity: Tensor,
    event_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    start: float = 0.0,
    rtol: float = 1e-12,
    atol: float = 1e-12,
    method: str = "dopri8",
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Integrate until ``event_fn(position [B, 4], velocity [B, 4]) -> [B]`` first changes sign
    for any member of the batch (torchdiffeq's ``odeint_event``: bisection on the solver's
    interpolant to ``atol`` in the affine parameter).

    Args:
        metric_fn, position ``[B, 4]``, velocity ``[B, 4]``: as :func:`integrate_geodesics`.
        event_fn: e.g. ``lambda x, u: (x[:, 1:] * u[:, 1:]).sum(-1)`` (radial velocity: periapsis
            or apoapsis), or ``lambda x, u: x[:, 3]`` (crossing the ``z = 0`` plane).
        start: the affine parameter at ``position``.

    Returns:
        ``(affine, position, velocity)`` at the event: ``[]``, ``[B, 4]``, ``[B, 4]``.
    """
    from torchdiffeq import odeint_event

    rhs = geodesic_rhs(metric_fn, chunk_size)
    state0 = torch.cat([position, velocity], dim=-1)
    t0 = torch.tensor(start, dtype=position.dtype, device=position.device)
    with torch.no_grad():
        event_affine, states = odeint_event(
            rhs,
            state0,
            t0,
            event_fn=lambda lam, state: event_fn(state[:, :4], state[:, 4:]),
            rtol=rtol,
            atol=atol,
            method=method,
        )
    final = states[-1]
    return event_affine, final[:, :4], final[:, 4:]
