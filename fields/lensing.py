"""Lensed images of a spacetime: null geodesics traced backwards from a pinhole camera.

:func:`render_lensed` ``(metric_fn, request, settings) -> RenderOutput`` is what an Einstein
field's ``render_view`` calls. ``metric_fn`` maps ``(t, x, y, z) [B, 4] -> g [B, 4, 4]`` in a
Cartesian chart (analytic or a network); the camera's world frame is that chart's ``x, y, z``.

1. **Camera.** Pixel directions follow the package's pinhole convention
   (:mod:`tensorfield.datasets.cameras`: OpenCV frame, ``c2w``, ``fx, fy, cx, cy``). They are
   directions in the local frame of a *static observer* at the camera (``e_0 = d_t / |d_t|``,
   falling back to the normal observer inside an ergoregion), the camera axes made orthonormal in
   the metric by Gram-Schmidt (forward, down, right). A pixel seeing direction ``n`` receives the
   photon ``k = e_0 - n^i e_i``; the ray is traced along ``u = -k`` (past-directed, the same
   curve backwards), with ``|u|`` ~ 1 in coordinates so that the affine parameter is roughly the
   distance near the camera.
2. **Christoffels.** ``exact`` evaluates ``Gamma`` of ``metric_fn`` by forward-mode autodiff at every
   Runge-Kutta stage (:func:`tensorfield.fields.relativity.christoffels_at`); ``grid`` (static
   spacetimes) evaluates it once on a spherical grid around the hole (log-spaced radius, polar
   angle, azimuth) and interpolates trilinearly (:class:`ChristoffelGrid`). The grid stores the
   components in the local frame ``(e_r, e_theta, e_phi)`` of each node (a rigid rotation, under
   which ``Gamma`` transforms as a tensor), times ``r^2``: for a spherically symmetric spacetime
   these do not depend on the angles at all and vary slowly with ``log r``, so a small grid is
   accurate.
3. **Integration.** A per-ray adaptive Dormand-Prince 5(4) integrator (:func:`trace_rays`): each
   ray has its own step size from its own error estimate (``rtol``, ``atol``), finished rays are
   removed from the batch after every step, and rays are integrated in chunks.
4. **What a ray sees.** A ray stops at the horizon (Kerr-Schild radius ``r <= horizon_radius``,
   :func:`~tensorfield.datasets.spacetimes.kerr_schild_radius` with ``spin``: the Euclidean radius
   at ``a = 0``, an oblate surface for Kerr; black), on the thin disk in ``z = 0`` between the
   radii ``disk_inner`` and ``disk_outer`` (``r = sqrt(rho^2 - a^2)`` in the plane; crossing located
   on the step's cubic Hermite interpolant; colour :func:`tensorfield.fields.sky.disk_colour` with
   the redshift ``g = (k . u_obs) / (k . u_emit)`` of an emitter on the circular equatorial
   geodesic, :func:`disk_angular_velocity`), or beyond
   ``escape_radius`` moving outwards (the sky in its final direction,
   :mod:`tensorfield.fields.sky`).

The output's ``alpha`` is 1 where a ray ended on the disk or the sky and 0 in the shadow (rays
that fell into the horizon or did not finish in ``max_steps``); ``rgb`` is black there (the
shadow is darkness, not transparency, so the request's background is not composited). ``depth``
is the affine parameter at the disk, 0 elsewhere.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensorfield.datasets.spacetimes import kerr_schild_radius
from tensorfield.fields.base import RenderOutput, RenderRequest
from tensorfield.fields.geodesics import geodesic_acceleration, metric_norm
from tensorfield.fields.relativity import MetricFunction, christoffels_at
from tensorfield.fields.sky import disk_colour, make_sky
from torch import Tensor

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class LensingSettings:
    """How :func:`render_lensed` traces and shades a frame (geometric units, ``G = c = 1``).

    Attributes:
        horizon_radius: rays whose Kerr-Schild radius (see ``spin``) falls to
            ``horizon_radius * (1 + horizon_margin)`` are captured (black).
        escape_radius: rays beyond this radius moving outwards show the sky; the camera must be
            inside it.
        background: ``"stars"`` (procedural :class:`~tensorfield.fields.sky.StarField`) or the
            path of an equirectangular image.
        disk_inner: inner radius of the thin disk in ``z = 0`` (the Kerr-Schild / Boyer-Lindquist
            ``r = sqrt(rho^2 - a^2)`` of the plane's cylindrical ``rho``; ``rho`` at ``a = 0``).
        disk_outer: its outer radius; 0 = no disk.
        time: the coordinate time ``t`` of the camera event.
        rtol: per-step relative error tolerance of the integrator.
        atol: per-step absolute error tolerance of the integrator.
        max_steps: accepted plus rejected steps per ray before it counts as captured.
        christoffels: ``"grid"`` (cached, static spacetimes) or ``"exact"`` (autodiff per stage;
            use it for time-dependent spacetimes).
        grid_resolution: ``(radius, polar, azimuth)`` nodes of the Christoffel grid.
        grid_inner_radius: the grid's innermost radius (0 = ``0.8 horizon_radius``).
        mass: the mass whose circular orbits move the disk (0 = ``horizon_radius / 2``).
        spin: Kerr's ``a`` of a Kerr-Schild chart with its axis along ``z`` (0: Schwarzschild or
            no hole): the capture surface and the disk's radii and angular velocity follow it.
        doppler: shift the disk's colour and brightness by the redshift factor ``g``.
        exposure: brightness scale of the disk.
        horizon_margin: relative safety margin of the capture radius.
        chunk_size: rays integrated together (memory bound).
        dtype: ``"float32"`` or ``"float64"``: the dtype rays are integrated in (the Christoffel
            grid is built from float64 points either way). float32 traced a 256^2 frame 2.4x
            faster here, with the same steps and shadow (``benchmarks/lensing.py``).
        seed: the procedural star field's seed.
        cpu_threads: torch intra-op threads while tracing on the CPU (0 = leave as is). The
            per-ray work is many small elementwise operations; on the shared 2-core machine one
            thread traced 10x faster than two (OpenMP synchronisation under contention).
    """

    horizon_radius: float = 2.0
    escape_radius: float = 60.0
    background: str = "stars"
    disk_inner: float = 6.0
    disk_outer: float = 0.0
    time: float = 0.0
    rtol: float = 1e-5
    atol: float = 1e-6
    max_steps: int = 2000
    christoffels: str = "grid"
    grid_resolution: tuple[int, int, int] = (96, 24, 48)
    grid_inner_radius: float = 0.0
    mass: float = 0.0
    spin: float = 0.0
    doppler: bool = True
    exposure: float = 1.0
    horizon_margin: float = 0.01
    chunk_size: int = 65536
    dtype: str = "float32"
    seed: int = 0
    cpu_threads: int = 1

    def validate(self) -> None:
        """Raises ``ValueError`` (one line) for inconsistent settings."""
        if not 0 <= self.horizon_radius < self.escape_radius:
            raise ValueError(
                f"need 0 <= horizon_radius < escape_radius, got {self.horizon_radius} and {self.escape_radius}"
            )
        if self.disk_outer and not 0 <= self.disk_inner < self.disk_outer:
            raise ValueError(
                f"need 0 <= disk_inner < disk_outer, got {self.disk_inner} and {self.disk_outer}"
            )
        if self.horizon_radius > 0 and abs(self.spin) >= self.horizon_radius:
            raise ValueError(f"need |spin| < horizon_radius, got {self.spin} and {self.horizon_radius}")
        if self.rtol <= 0 or self.atol <= 0 or self.max_steps < 1:
            raise ValueError("rtol and atol must be positive and max_steps at least 1")
        if self.christoffels not in ("grid", "exact"):
            raise ValueError(f"christoffels must be 'grid' or 'exact', got '{self.christoffels}'")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be float32 or float64, got '{self.dtype}'")
        if min(self.grid_resolution) < 2:
            raise ValueError(
                f"grid_resolution needs at least 2 nodes per axis, got {self.grid_resolution}"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def disk_mass(self) -> float:
        return self.mass if self.mass > 0 else 0.5 * self.horizon_radius


def disk_radius(rho: Tensor, spin: float) -> Tensor:
    """The Kerr-Schild ``r`` of points of the plane ``z = 0`` at cylindrical radius ``rho``:
    ``sqrt(rho^2 - a^2)`` (0 inside the ring singularity ``rho < |a|``)."""
    return torch.sqrt((rho * rho - spin * spin).clamp_min(0.0))


def disk_angular_velocity(radius: Tensor, mass: float, spin: float) -> Tensor:
    """``Omega = d phi / dt`` of the circular equatorial geodesic at Boyer-Lindquist / Kerr-Schild
    radius ``r`` moving in ``+phi`` (Bardeen, Press and Teukolsky 1972):
    ``sqrt(M) / (r^(3/2) + a sqrt(M))``; prograde for ``a > 0``, Kepler's ``sqrt(M / r^3)`` at
    ``a = 0``. In Kerr-Schild Cartesian coordinates such an orbit turns rigidly about ``z``:
    ``dx/dt = -Omega y``, ``dy/dt = Omega x``."""
    root = math.sqrt(mass)
    return root / (radius**1.5 + spin * root)


# ------------------------------------------------------------------------------ local frames
def spherical_frame(positions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``r, theta, phi [N]`` and the rotation ``[N, 3, 3]`` whose rows are ``e_r, e_theta, e_phi``
    at spatial ``positions [N, 3]``."""
    r = positions.norm(dim=-1).clamp_min(1e-300)
    theta = torch.acos((positions[:, 2] / r).clamp(-1, 1))
    phi = torch.atan2(positions[:, 1], positions[:, 0])
    st, ct, sp, cp = torch.sin(theta), torch.cos(theta), torch.sin(phi), torch.cos(phi)
    zero = torch.zeros_like(r)
    rows = (
        torch.stack([st * cp, st * sp, ct], -1),
        torch.stack([ct * cp, ct * sp, -st], -1),
        torch.stack([-sp, cp, zero], -1),
    )
    return r, theta, phi, torch.stack(rows, dim=-2)


_PAIRS = [(b, c) for b in range(4) for c in range(b, 4)]  # the 10 symmetric lower index pairs


def _pack(christoffel: Tensor) -> Tensor:
    """``[N, 4, 4, 4]`` -> ``[N, 40]`` (``a`` major, then the pairs ``b <= c``)."""
    return torch.stack([christoffel[:, :, b, c] for b, c in _PAIRS], dim=-1).reshape(-1, 40)


def _contract_packed(packed: Tensor, velocity: Tensor) -> Tensor:
    """``[N, 4]`` ``-Gamma^a_bc u^b u^c`` from packed ``[N, 40]`` symbols."""
    weights = torch.stack(
        [velocity[:, b] * velocity[:, c] * (1.0 if b == c else 2.0) for b, c in _PAIRS], dim=-1
    )
    # broadcast and sum: batched 4x10 matrix products are slow on the CPU (per-matrix overhead)
    return -(packed.view(-1, 4, 10) * weights[:, None, :]).sum(-1)


class ChristoffelGrid:
    """``Gamma`` of a static metric on a spherical grid, interpolated trilinearly.

    Nodes: ``log r`` uniform over ``[inner, outer]``, ``theta`` uniform over ``[0, pi]``, ``phi``
    uniform and periodic over ``[-pi, pi)``. Each node stores ``r^2 Gamma'`` with
    ``Gamma'^a_bc = L^a_d Gamma^d_ef L^b_e L^c_f``, ``L = diag(1, R)`` and ``R`` the node's local
    rotation (rows ``e_r, e_theta, e_phi``). At a query point the velocity is rotated into the
    query's local frame, contracted with the interpolated symbols and rotated back.

    Args:
        metric_fn: ``[B, 4] -> [B, 4, 4]`` Cartesian chart.
        inner, outer: radii the grid spans.
        resolution: ``(radius, polar, azimuth)`` node counts.
        time: the coordinate time of the slice (the spacetime is assumed static).
        dtype, device: of the nodes and of ``metric_fn``'s input.
        chunk_size: points per autodiff chunk.
    """

    def __init__(
        self,
        metric_fn: MetricFunction,
        inner: float,
        outer: float,
        resolution: tuple[int, int, int],
        time: float = 0.0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        chunk_size: int = 16384,
    ) -> None:
        if not 0 < inner < outer:
            raise ValueError(f"Christoffel grid needs 0 < inner < outer, got {inner} and {outer}")
        n_r, n_theta, n_phi = resolution
        self.inner, self.outer, self.resolution, self.time = (
            float(inner),
            float(outer),
            tuple(resolution),
            float(time),
        )
        log_r = torch.linspace(math.log(inner), math.log(outer), n_r, dtype=dtype, device=device)
        theta = torch.linspace(0.0, math.pi, n_theta, dtype=dtype, device=device)
        phi = -math.pi + 2 * math.pi * torch.arange(n_phi, dtype=dtype, device=device) / n_phi
        lr, th, ph = torch.meshgrid(log_r, theta, phi, indexing="ij")
        r = torch.exp(lr).reshape(-1)
        th, ph = th.reshape(-1), ph.reshape(-1)
        spatial = torch.stack(
            [
                r * torch.sin(th) * torch.cos(ph),
                r * torch.sin(th) * torch.sin(ph),
                r * torch.cos(th),
            ],
            -1,
        )
        points = torch.cat([torch.full_like(r[:, None], time), spatial], dim=-1)
        packed = []
        for start in range(0, points.shape[0], chunk_size):
            chunk = points[start : start + chunk_size]
            with torch.no_grad():
                # float64 nodes (a float32 network casts its input itself)
                gamma = christoffels_at(metric_fn, chunk.double()).to(dtype)
            rotation = torch.zeros(chunk.shape[0], 4, 4, dtype=dtype, device=device)
            rotation[:, 0, 0] = 1.0
            rotation[:, 1:, 1:] = self._node_rotation(
                th[start : start + chunk_size], ph[start : start + chunk_size]
            )
            local = torch.einsum("nad,ndef,nbe,ncf->nabc", rotation, gamma, rotation, rotation)
            packed.append(_pack(local) * r[start : start + chunk_size, None] ** 2)
        self.table = torch.cat(packed).contiguous()  # [n_r * n_theta * n_phi, 40]
        self._log_inner, self._log_outer = math.log(inner), math.log(outer)

    @staticmethod
    def _node_rotation(theta: Tensor, phi: Tensor) -> Tensor:
        st, ct, sp, cp = torch.sin(theta), torch.cos(theta), torch.sin(phi), torch.cos(phi)
        rows = (
            torch.stack([st * cp, st * sp, ct], -1),
            torch.stack([ct * cp, ct * sp, -st], -1),
            torch.stack([-sp, cp, torch.zeros_like(st)], -1),
        )
        return torch.stack(rows, dim=-2)

    def matches(self, settings: LensingSettings, device: torch.device) -> bool:
        """Whether this grid was built for ``settings`` (radii, resolution, time, device)."""
        inner, outer = grid_radii(settings)
        return (
            (self.inner, self.outer, self.resolution, self.time)
            == (inner, outer, tuple(settings.grid_resolution), float(settings.time))
            and self.table.device == torch.device(device)
            and self.table.dtype == settings.torch_dtype
        )

    def acceleration(self, positions: Tensor, velocities: Tensor) -> Tensor:
        """``[N, 4]`` ``-Gamma^a_bc u^b u^c`` at ``positions [N, 4]`` for ``velocities [N, 4]``."""
        n_r, n_theta, n_phi = self.resolution
        r, theta, phi, rotation = spherical_frame(positions[:, 1:])
        fr = (
            (torch.log(r) - self._log_inner) / (self._log_outer - self._log_inner) * (n_r - 1)
        ).clamp(0, n_r - 1 - 1e-9)
        ft = (theta / math.pi * (n_theta - 1)).clamp(0, n_theta - 1 - 1e-9)
        fp = ((phi + math.pi) / (2 * math.pi) * n_phi).clamp(0, n_phi)
        # a non-finite state (a ray at the singularity) reads node 0; the integrator rejects it
        fr, ft, fp = (torch.nan_to_num(f, nan=0.0) for f in (fr, ft, fp))
        # lower corners clamped as integers (in float32, n - 1 - 1e-9 rounds to n - 1)
        i0 = fr.floor().long().clamp(0, n_r - 2)
        j0 = ft.floor().long().clamp(0, n_theta - 2)
        k0 = fp.floor().long().clamp(0, n_phi)
        wr, wt, wp = (fr - i0).clamp(0, 1), (ft - j0).clamp(0, 1), (fp - k0).clamp(0, 1)
        k0 = k0 % n_phi
        k1 = (k0 + 1) % n_phi
        packed = torch.zeros(
            positions.shape[0], 40, dtype=self.table.dtype, device=positions.device
        )
        for di, w_i in ((0, 1 - wr), (1, wr)):
            for dj, w_j in ((0, 1 - wt), (1, wt)):
                for k, w_k in ((k0, 1 - wp), (k1, wp)):
                    index = ((i0 + di) * n_theta + (j0 + dj)) * n_phi + k
                    packed += (w_i * w_j * w_k)[:, None] * self.table.index_select(0, index)
        packed = packed / (r**2)[:, None]
        local_u = torch.cat(
            [velocities[:, :1], (rotation * velocities[:, None, 1:]).sum(-1)], dim=-1
        )
        local_a = _contract_packed(packed, local_u)
        return torch.cat([local_a[:, :1], (rotation * local_a[:, 1:, None]).sum(-2)], dim=-1)


def grid_radii(settings: LensingSettings) -> tuple[float, float]:
    """``(inner, outer)`` radii of the Christoffel grid for ``settings``."""
    inner = settings.grid_inner_radius or (
        0.8 * settings.horizon_radius
        if settings.horizon_radius > 0
        else 0.02 * settings.escape_radius
    )
    return float(inner), float(settings.escape_radius) * 1.05


def build_christoffel_grid(
    metric_fn: MetricFunction, settings: LensingSettings, device: torch.device | str = "cpu"
) -> ChristoffelGrid:
    """The :class:`ChristoffelGrid` that :func:`render_lensed` uses for ``settings`` (build it once
    and pass it to every frame of a static spacetime)."""
    inner, outer = grid_radii(settings)
    return ChristoffelGrid(
        metric_fn,
        inner,
        outer,
        settings.grid_resolution,
        settings.time,
        settings.torch_dtype,
        device,
    )


def exact_acceleration(
    metric_fn: MetricFunction, chunk_size: int = 16384
) -> Callable[[Tensor, Tensor], Tensor]:
    """``(positions [N, 4], velocities [N, 4]) -> [N, 4]`` by autodiff Christoffels at every call."""

    def acceleration(positions: Tensor, velocities: Tensor) -> Tensor:
        # in float64 like the grid: forward-mode jets of a float32 chart mix dtypes
        with torch.no_grad():
            gamma = christoffels_at(metric_fn, positions.double(), chunk_size=chunk_size)
        return geodesic_acceleration(gamma.to(velocities.dtype), velocities)

    return acceleration


# ------------------------------------------------------------------------------ integration
class RayStatus(enum.IntEnum):
    """How a traced ray ended (:attr:`RayTrace.status`)."""

    UNRESOLVED = 0  # ran out of steps
    CAPTURED = 1  # fell to the horizon (or became non-finite)
    DISK = 2  # crossed the disk
    ESCAPED = 3  # left the escape sphere moving outwards


@dataclass
class RayTrace:
    """Where ``N`` rays ended.

    Attributes:
        status: ``[N]`` int64 :class:`RayStatus`.
        positions: ``[N, 4]`` the final event (the disk crossing for ``DISK``).
        velocities: ``[N, 4]`` the final velocity.
        affine: ``[N]`` the affine parameter there.
        steps: ``[N]`` steps taken (accepted and rejected).
    """

    status: Tensor
    positions: Tensor
    velocities: Tensor
    affine: Tensor
    steps: Tensor


# Dormand & Prince (1980) RK5(4)7FM: nodes, stages, 5th-order weights and the error weights b5 - b4
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def _hermite(y0: Tensor, y1: Tensor, f0: Tensor, f1: Tensor, h: Tensor, s: Tensor) -> Tensor:
    """Cubic Hermite interpolant of a step at fractions ``s [N]`` (``h [N]`` step sizes)."""
    s = s[:, None]
    h00, h10, h01, h11 = (
        2 * s**3 - 3 * s**2 + 1,
        s**3 - 2 * s**2 + s,
        -2 * s**3 + 3 * s**2,
        s**3 - s**2,
    )
    return h00 * y0 + h10 * h[:, None] * f0 + h01 * y1 + h11 * h[:, None] * f1


def trace_rays(
    acceleration: Callable[[Tensor, Tensor], Tensor],
    positions: Tensor,
    velocities: Tensor,
    settings: LensingSettings,
) -> RayTrace:
    """Integrate rays until they are captured, hit the disk, escape, or run out of steps.

    Each ray carries its own step ``h`` (initially ``0.02 r``): a Dormand-Prince 5(4) step is
    accepted when the error estimate, scaled per component by ``atol + rtol |y|`` (max norm), is
    at most 1, and ``h`` changes by ``0.9 err^(-1/5)`` (clamped to ``[0.2, 5]``; at most ``0.5 r``
    so a step cannot jump over the hole or the disk). Only the running rays are integrated.

    Args:
        acceleration: ``(positions [N, 4], velocities [N, 4]) -> [N, 4]`` (exact or grid).
        positions, velocities: ``[N, 4]`` initial states.
        settings: radii, disk, tolerances and step limit.

    Returns:
        :class:`RayTrace`.
    """
    n = positions.shape[0]
    device, dtype = positions.device, positions.dtype
    state = torch.cat([positions, velocities], dim=-1)
    out_state = state.clone()
    out_affine = torch.zeros(n, dtype=dtype, device=device)
    status = torch.full((n,), int(RayStatus.UNRESOLVED), dtype=torch.int64, device=device)
    steps = torch.zeros(n, dtype=torch.int64, device=device)
    capture = settings.horizon_radius * (1 + settings.horizon_margin)
    disk = settings.disk_outer > 0
    spin = float(settings.spin)

    def rhs(y: Tensor) -> Tensor:
        return torch.cat([y[:, 4:], acceleration(y[:, :4], y[:, 4:])], dim=-1)

    index = torch.arange(n, device=device)
    y = state
    radius = y[:, 1:4].norm(dim=-1)
    h = 0.02 * radius
    lam = torch.zeros(n, dtype=dtype, device=device)
    k1 = rhs(y)
    count = torch.zeros(n, dtype=torch.int64, device=device)
    while index.numel() > 0:
        stages = [k1]
        for i in range(1, 7):
            increment = sum(a * k for a, k in zip(_A[i], stages) if a != 0.0)
            stages.append(rhs(y + h[:, None] * increment))
        y_new = y + h[:, None] * sum(b * k for b, k in zip(_A[6], stages) if b != 0.0)
        k_new = stages[6]
        error = h[:, None] * sum(e * k for e, k in zip(_E, stages) if e != 0.0)
        scale = settings.atol + settings.rtol * torch.maximum(y.abs(), y_new.abs())
        err = (error / scale).abs().amax(dim=-1)
        err = torch.where(torch.isfinite(err), err, torch.full_like(err, 1e10))
        accept = err <= 1.0
        count = count + 1
        factor = (0.9 * err.clamp_min(1e-10) ** -0.2).clamp(0.2, 5.0)
        # accepted steps: events on [y, y_new]
        y_acc = torch.where(accept[:, None], y_new, y)
        lam_acc = torch.where(accept, lam + h, lam)
        finished = torch.zeros_like(accept)
        ended_status = torch.zeros_like(count)
        ended_state = y_acc.clone()
        ended_lam = lam_acc.clone()
        if disk:
            z0, z1 = y[:, 3], y_new[:, 3]
            crossing = accept & (z0 * z1 <= 0) & (z0 != 0)
            if bool(crossing.any()):
                s = (z0 / (z0 - z1)).clamp(0, 1)
                for _ in range(3):  # Newton on the Hermite interpolant of z
                    s2, s3 = s * s, s * s * s
                    z = (
                        (2 * s3 - 3 * s2 + 1) * z0
                        + (s3 - 2 * s2 + s) * h * k1[:, 3]
                        + (-2 * s3 + 3 * s2) * z1
                        + (s3 - s2) * h * k_new[:, 3]
                    )
                    dz = (
                        (6 * s2 - 6 * s) * z0
                        + (3 * s2 - 4 * s + 1) * h * k1[:, 3]
                        + (-6 * s2 + 6 * s) * z1
                        + (3 * s2 - 2 * s) * h * k_new[:, 3]
                    )
                    s = torch.where(
                        dz.abs() > 0, s - z / torch.where(dz.abs() > 0, dz, torch.ones_like(dz)), s
                    ).clamp(0, 1)
                hit = _hermite(y, y_new, k1, k_new, h, s)
                r_disk = disk_radius(hit[:, 1:3].norm(dim=-1), spin)
                on_disk = crossing & (r_disk >= settings.disk_inner) & (r_disk <= settings.disk_outer)
                finished |= on_disk
                ended_status = torch.where(on_disk, int(RayStatus.DISK), ended_status)
                ended_state = torch.where(on_disk[:, None], hit, ended_state)
                ended_lam = torch.where(on_disk, lam + s * h, ended_lam)
        radius = y_acc[:, 1:4].norm(dim=-1)
        horizon = kerr_schild_radius(y_acc, spin) if spin else radius
        captured = accept & ~finished & ((horizon <= capture) | ~torch.isfinite(y_acc).all(-1))
        outward = (y_acc[:, 1:4] * y_acc[:, 5:8]).sum(-1) > 0
        escaped = accept & ~finished & ~captured & (radius >= settings.escape_radius) & outward
        ended_status = torch.where(captured, int(RayStatus.CAPTURED), ended_status)
        ended_status = torch.where(escaped, int(RayStatus.ESCAPED), ended_status)
        finished |= captured | escaped
        out_of_steps = ~finished & (count >= settings.max_steps)
        done = finished | out_of_steps
        if bool(done.any()):
            ids = index[done]
            out_state[ids] = ended_state[done]
            out_affine[ids] = ended_lam[done]
            status[ids] = torch.where(finished[done], ended_status[done], int(RayStatus.UNRESOLVED))
            steps[ids] = count[done]
        keep = ~done
        y = y_acc[keep]
        k1 = torch.where(accept[:, None], k_new, k1)[keep]
        lam = lam_acc[keep]
        radius = radius[keep]
        h = torch.minimum((h * factor)[keep], 0.5 * radius)
        count = count[keep]
        index = index[keep]
    return RayTrace(status, out_state[:, :4], out_state[:, 4:], out_affine, steps)


# ------------------------------------------------------------------------------ camera
def _metric_at(metric_fn: MetricFunction, positions: Tensor) -> Tensor:
    return metric_fn(positions).to(positions.dtype)


def camera_rays(
    metric_fn: MetricFunction, request: RenderRequest, settings: LensingSettings
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Initial states of the rays of ``request``'s camera.

    Returns:
        ``positions [H*W, 4]``, past-directed null ``velocities [H*W, 4]``, the observer's
        4-velocity ``[4]`` and the pixel directions in the observer's frame ``[H*W, 3]``
        (world axes of the camera, unit length).
    """
    cams, index = request.cameras, request.index
    dtype = settings.torch_dtype
    device = cams.c2w.device
    c2w = cams.c2w[index].to(dtype)
    v, u = torch.meshgrid(
        torch.arange(cams.height, device=device, dtype=dtype),
        torch.arange(cams.width, device=device, dtype=dtype),
        indexing="ij",
    )
    x = (u + 0.5 - float(cams.cx[index])) / float(cams.fx[index])
    y = (v + 0.5 - float(cams.cy[index])) / float(cams.fy[index])
    local = torch.stack([x, y, torch.ones_like(x)], -1).reshape(-1, 3)
    local = local / local.norm(dim=-1, keepdim=True)
    event = torch.cat([torch.tensor([settings.time], dtype=dtype, device=device), c2w[:, 3]])
    if float(c2w[:, 3].norm()) >= settings.escape_radius:
        raise ValueError(
            f"the camera at radius {float(c2w[:, 3].norm()):.4g} is outside escape_radius {settings.escape_radius}"
        )
    g = _metric_at(metric_fn, event[None])[0]
    if float(g[0, 0]) < 0:  # static observer
        e0 = torch.zeros(4, dtype=dtype, device=device)
        e0[0] = 1.0 / torch.sqrt(-g[0, 0])
    else:  # inside an ergoregion: the observer normal to t = const
        inverse = torch.linalg.inv(g)
        e0 = -inverse[:, 0] / torch.sqrt(-inverse[0, 0])
    triad = []
    for axis in (2, 1, 0):  # forward, down, right
        vector = torch.cat([torch.zeros(1, dtype=dtype, device=device), c2w[:, axis]])
        vector = vector + (vector @ g @ e0) * e0
        for previous in triad:
            vector = vector - (vector @ g @ previous) * previous
        triad.append(vector / torch.sqrt(vector @ g @ vector))
    forward, down, right = triad
    spatial = local[:, :1] * right + local[:, 1:2] * down + local[:, 2:3] * forward
    velocities = -e0 + spatial
    positions = event.expand(local.shape[0], 4).contiguous()
    world = local @ c2w[:, :3].T
    return positions, velocities, e0, world


def render_lensed(
    metric_fn: MetricFunction,
    request: RenderRequest,
    settings: LensingSettings,
    christoffel_grid: ChristoffelGrid | None = None,
) -> RenderOutput:
    """The lensed image of ``request``'s camera in the spacetime ``metric_fn``.

    Args:
        metric_fn: ``(t, x, y, z) [B, 4] -> g [B, 4, 4]`` in a Cartesian chart, called with
            ``settings.dtype`` tensors on the camera's device.
        request: the camera (``request.cameras``, ``request.index``); the time of the frame is
            ``settings.time`` (the model maps the request's normalised time to it).
        settings: :class:`LensingSettings`.
        christoffel_grid: a grid from :func:`build_christoffel_grid` for these settings, reused
            across frames; built here when ``settings.christoffels == "grid"`` and it is missing
            or was built for other settings.

    Returns:
        :class:`~tensorfield.fields.base.RenderOutput` ``rgb [H, W, 3]``, ``depth [H, W]``
        (affine parameter at the disk), ``alpha [H, W]`` (0 in the shadow), float32.
    """
    trace = trace_camera(metric_fn, request, settings, christoffel_grid)
    height, width = request.cameras.height, request.cameras.width
    rgb, alpha, depth = shade(metric_fn, trace, settings)
    return RenderOutput(
        rgb=rgb.view(height, width, 3).float(),
        depth=depth.view(height, width).float(),
        alpha=alpha.view(height, width).float(),
    )


@dataclass
class CameraTrace:
    """Every pixel's ray (row-major) of one frame.

    Attributes:
        rays: the :class:`RayTrace`.
        directions: ``[H*W, 3]`` each pixel's unit world direction (pinhole, no lensing).
        initial: ``[H*W, 4]`` the rays' initial (past-directed) velocities.
        observer: ``[4]`` the camera's 4-velocity.
        camera_metric: ``[4, 4]`` the metric at the camera.
    """

    rays: RayTrace
    directions: Tensor
    initial: Tensor
    observer: Tensor
    camera_metric: Tensor


def trace_camera(
    metric_fn: MetricFunction,
    request: RenderRequest,
    settings: LensingSettings,
    christoffel_grid: ChristoffelGrid | None = None,
) -> CameraTrace:
    """Trace every pixel of ``request``'s camera (:func:`render_lensed` without the shading)."""
    with torch.no_grad():
        return _trace_camera(metric_fn, request, settings, christoffel_grid)


def _trace_camera(
    metric_fn: MetricFunction,
    request: RenderRequest,
    settings: LensingSettings,
    christoffel_grid: ChristoffelGrid | None,
) -> CameraTrace:
    settings.validate()
    positions, velocities, observer, world = camera_rays(metric_fn, request, settings)
    device = positions.device
    if settings.christoffels == "grid":
        if christoffel_grid is None or not christoffel_grid.matches(settings, device):
            christoffel_grid = build_christoffel_grid(metric_fn, settings, device)
        acceleration = christoffel_grid.acceleration
    else:
        acceleration = exact_acceleration(metric_fn)
    parts = []
    threads = torch.get_num_threads()
    if device.type == "cpu" and settings.cpu_threads > 0:
        torch.set_num_threads(settings.cpu_threads)
    try:
        for start in range(0, positions.shape[0], settings.chunk_size):
            stop = start + settings.chunk_size
            parts.append(
                trace_rays(acceleration, positions[start:stop], velocities[start:stop], settings)
            )
    finally:
        torch.set_num_threads(threads)
    rays = RayTrace(
        *(torch.cat([getattr(p, f) for p in parts]) for f in RayTrace.__dataclass_fields__)
    )
    return CameraTrace(rays, world, velocities, observer, _metric_at(metric_fn, positions[:1])[0])


@torch.no_grad()
def shade(
    metric_fn: MetricFunction, camera: CameraTrace, settings: LensingSettings
) -> tuple[Tensor, Tensor, Tensor]:
    """``rgb [N, 3]``, ``alpha [N]``, ``depth [N]`` of traced rays (see the module docstring)."""
    trace = camera.rays
    n = trace.status.shape[0]
    dtype, device = trace.positions.dtype, trace.positions.device
    rgb = torch.zeros(n, 3, dtype=torch.float64, device=device)
    alpha = torch.zeros(n, dtype=dtype, device=device)
    depth = torch.zeros(n, dtype=dtype, device=device)
    escaped = trace.status == RayStatus.ESCAPED
    if bool(escaped.any()):
        sky = make_sky(settings.background, settings.seed)
        rgb[escaped] = sky(trace.velocities[escaped, 1:]).to(device)
        alpha[escaped] = 1.0
    on_disk = trace.status == RayStatus.DISK
    if bool(on_disk.any()):
        x, u = trace.positions[on_disk], trace.velocities[on_disk]
        rho = disk_radius(x[:, 1:3].norm(dim=-1), float(settings.spin))
        redshift = torch.ones_like(rho)
        if settings.doppler:
            # g = (k . u_obs) / (k . u_emit) with k = -u (constant factors cancel)
            at_camera = camera.initial[on_disk] @ (camera.camera_metric @ camera.observer)
            g_hit = _metric_at(metric_fn, x)
            omega = disk_angular_velocity(rho, settings.disk_mass, float(settings.spin))
            emitter = torch.stack(
                [torch.ones_like(rho), -omega * x[:, 2], omega * x[:, 1], torch.zeros_like(rho)], -1
            )
            norm = metric_norm(g_hit, emitter)
            timelike = norm < 0
            emitter = emitter / torch.sqrt((-norm).clamp_min(1e-30))[:, None]
            at_disk = torch.einsum("na,nab,nb->n", u, g_hit, emitter)
            redshift = torch.where(timelike, at_camera / at_disk, torch.zeros_like(rho))
        rgb[on_disk] = disk_colour(
            rho.double(), redshift.double(), settings.disk_inner, settings.exposure
        )
        alpha[on_disk] = 1.0
        depth[on_disk] = trace.affine[on_disk]
    return rgb, alpha, depth
