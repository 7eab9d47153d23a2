"""Einstein fields: a neural tensor field that compresses a spacetime metric into an MLP.

Cranganore et al., "Einstein Fields: A Neural Perspective To Computational General Relativity"
(2025). An MLP maps coordinates ``x = (t, x, y, z)`` (or the chart's own four) to the 10
independent components of the distortion ``Delta_ij = g_ij - eta_ij`` in the same chart
(``target: distortion``, the default) or of ``g_ij`` itself (``target: full``); the components
are stored in :data:`~tensorfield.datasets.einfield_data.COMPONENTS` order (upper triangle row
by row). The inputs are normalised to the domain box, ``u = (x - centre) / half_extent``, inside
the network, so every derivative is with respect to the chart's coordinates.

Training is Sobolev (section 3 of the paper): with ``N_theta(x)`` the network,

    L = w_g |N - Delta|^2 + w_J |d_k N - d_k Delta|^2 + w_H |d_l d_k N - d_l d_k Delta|^2

(means over points and components), the network's derivatives by forward mode
(:func:`torch.func.jacfwd` under :func:`torch.func.vmap`), the targets' from the analytic
metric's exact jets (:mod:`tensorfield.fields.einfield_targets`). Christoffels, Riemann and
Kretschmann then follow from :meth:`EinField.metric` by :mod:`tensorfield.fields.relativity`,
the same code as for the analytic metric.

Activations: SiLU (default), GELU, or SIREN (``sin(omega_0 W x + b)`` with Sitzmann et al.'s
initialisation); optional random Fourier features ``[sin(2 pi B u), cos(2 pi B u)]``,
``B ~ N(0, sigma^2)`` (Tancik et al. 2020) before the MLP.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensorfield.datasets.einfield_data import COMPONENT_NAMES, components_to_matrix
from tensorfield.datasets.spacetimes import CHARTS, Spacetime, SpacetimeParameters
from tensorfield.fields.base import (
    BatchKind,
    CoordinateBatch,
    Field,
    ParamGroup,
    RenderOutput,
    RenderRequest,
    SceneInfo,
    SliceDomain,
    SliceRequest,
    StepOutput,
)
from tensorfield.fields.config import MethodConfig, option
from torch import Tensor, nn
from torch.func import jacfwd, vmap

ACTIVATIONS = ("silu", "gelu", "siren")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
OPTIMIZERS = ("adam", "soap")
SCALAR_QUANTITIES = ("det", "kretschmann", "ricci_scalar")
METRIC_QUANTITIES = tuple(f"g_{'txyz'[i]}{'txyz'[j]}" for i in range(4) for j in range(i, 4))
"""Slice names of the metric components (``g_tt, g_tx, ..., g_zz``; the chart's own indices for
spherical charts: ``t`` stands for index 0, ``x`` for 1 and so on)."""


@dataclass
class EinFieldConfig(MethodConfig):
    """An Einstein field: the spacetime to learn, the network and the Sobolev training."""

    steps: int = option(3000, "Optimisation steps.", minimum=1)
    batch_size: int = option(
        4096, "Training points per step (all of them when larger than the training set).", minimum=1
    )
    # the spacetime
    spacetime: str = option(
        "schwarzschild_ks",
        "Analytic spacetime to learn (ignored with --data, except for its flat metric).",
        group="spacetime",
        choices=tuple(CHARTS),
    )
    mass: float = option(1.0, "Black-hole mass M (geometric units).", group="spacetime", above=0)
    spin: float = option(
        0.0, "Kerr spin a = J/M (|a| <= M).", group="spacetime", minimum=-1e3, maximum=1e3
    )
    amplitude: float = option(
        0.0, "Plane wave: plus amplitude A_+.", group="spacetime", minimum=-1.0, maximum=1.0
    )
    cross_amplitude: float = option(
        0.0, "Plane wave: cross amplitude A_x.", group="spacetime", minimum=-1.0, maximum=1.0
    )
    frequency: float = option(
        1.0, "Plane wave: angular frequency omega.", group="spacetime", above=0
    )
    domain_min: list[float] = option(
        [0.0, -3.0, -3.0, 0.1],
        "Domain box lower corner in the chart's coordinates (t, x, y, z).",
        group="spacetime",
        lengths=(4,),
    )
    domain_max: list[float] = option(
        [0.0, 3.0, 3.0, 3.0],
        "Domain box upper corner (t equal to domain_min's: one time slice).",
        group="spacetime",
        lengths=(4,),
    )
    excision_radius: float = option(
        0.0,
        "Drop training and evaluation points with radius below this (around singularities).",
        group="spacetime",
        minimum=0,
    )
    sampling: str = option(
        "grid",
        "Training points: a regular grid of the box or uniform random points.",
        group="spacetime",
        choices=("grid", "random"),
    )
    grid_size: int = option(
        32, "Grid points per spatial axis (sampling: grid).", group="spacetime", minimum=2
    )
    time_samples: int = option(
        1,
        "Grid points along time (sampling: grid; 1 for a single slice).",
        group="spacetime",
        minimum=1,
    )
    num_points: int = option(
        32768, "Training points (sampling: random).", group="spacetime", minimum=1
    )
    eval_points: int = option(
        4096,
        "Held-out evaluation points (uniform in the box, never the training points).",
        group="spacetime",
        minimum=8,
    )
    eval_fraction: float = option(
        0.1,
        "User data: fraction of the samples held out for evaluation.",
        group="spacetime",
        above=0,
        below=1,
    )
    # the network
    target: str = option(
        "distortion",
        "What the network outputs: distortion g - g_flat in the chart, or the full metric.",
        choices=("distortion", "full"),
    )
    hidden: int = option(128, "Hidden width of the MLP.", minimum=1)
    layers: int = option(4, "Hidden layers of the MLP.", minimum=1)
    activation: str = option(
        "silu",
        "Activation: silu, gelu or siren (sine with SIREN initialisation).",
        choices=ACTIVATIONS,
    )
    siren_omega: float = option(30.0, "SIREN: frequency omega_0 of the first layer.", above=0)
    fourier_features: int = option(
        0, "Random Fourier features of the normalised input (0 = none).", minimum=0
    )
    fourier_scale: float = option(
        1.0, "Standard deviation of the Fourier feature frequencies.", above=0
    )
    radial_features: bool = option(
        False,
        "Append the unit vector x/|x| and M/r (r: the chart's radius, Kerr-Schild r for Kerr) to the network's inputs; Cartesian charts of a central mass (schwarzschild_ks, kerr_ks).",
        choices=(False, True),
    )
    radial_envelope: bool = option(
        False,
        "Multiply the network's output by M/r, so the network learns r (g - g_flat) / M, which stays bounded at the singularity where g - g_flat grows like M/r (target distortion; charts of a central mass).",
        choices=(False, True),
    )
    derivatives: str = option(
        "explicit",
        "How the network's Jacobian and Hessian are computed for training: explicit tangent propagation through the layers, or torch.func jacfwd + vmap (same values).",
        choices=("explicit", "jacfwd"),
    )
    dtype: str = option("float32", "Network precision: float32 or float64.", choices=tuple(DTYPES))
    # training
    optimizer: str = option(
        "adam",
        "Optimiser: adam or soap (pytorch-optimizer's SOAP, as in the paper).",
        group="training",
        choices=OPTIMIZERS,
    )
    lr: float = option(1e-3, "Initial learning rate.", group="training", above=0)
    lr_final: float = option(
        1e-5, "Learning rate at the last step (exponential decay).", group="training", above=0
    )
    soap_precondition_frequency: int = option(
        10, "SOAP: steps between eigenbasis updates.", group="training", minimum=1
    )
    metric_weight: float = option(
        1.0, "Weight of the metric value loss.", group="training", minimum=0
    )
    jacobian_weight: float = option(
        1.0, "Weight of the Jacobian loss (d g / d x^k).", group="training", minimum=0
    )
    hessian_weight: float = option(
        0.0, "Weight of the Hessian loss (0 = off: faster steps).", group="training", minimum=0
    )
    sample_weight_power: float = option(
        0.0,
        "Per-sample loss weights (|target|^2 + mean |target|^2)^-p, normalised to mean 1, separately for the values, Jacobian and Hessian terms: 0 = plain MSE (the official loss); 0.5 weighs errors relative to each sample's magnitude, so the few samples near a singularity (distortion ~ 2M/r, Jacobian ~ 2M/r^2) stop dominating the batch.",
        group="training",
        minimum=0,
        maximum=1,
    )
    importance_sampling: float = option(
        0.0,
        "Fraction lambda of each batch's sampling probability proportional to the sample's target size: p_i = (1 - lambda) / N + lambda s_i / sum s, s_i the RMS of its values and Jacobian, and the loss weighted by 1 / (N p_i), so it stays the plain mean over the training set (unbiased) with less variance: the few samples next to a singularity that dominate that mean are in nearly every batch instead of a few (0 = uniform batches, the official sampling).",
        group="training",
        minimum=0,
        maximum=1,
    )
    # rendering (lensed views through fields.lensing)
    render_background: str = option(
        "stars", "Lensed render background: stars (procedural) or an image path.", group="rendering"
    )
    disk_inner: float = option(
        6.0,
        "Accretion disk inner radius (0 with disk_outer 0: no disk).",
        group="rendering",
        minimum=0,
    )
    disk_outer: float = option(
        0.0, "Accretion disk outer radius (0 = no disk).", group="rendering", minimum=0
    )
    escape_radius: float = option(
        30.0, "Rays beyond this radius have escaped to the background.", group="rendering", above=0
    )
    camera_distance: float = option(
        20.0, "Distance of the default orbit camera from the origin.", group="rendering", above=0
    )
    camera_elevation: float = option(
        10.0,
        "Elevation of the default orbit above the z = 0 plane, in degrees.",
        group="rendering",
        minimum=-89.0,
        maximum=89.0,
    )
    render_resolution: int = option(
        256, "Width and height of the default cameras' images.", group="rendering", minimum=8
    )
    render_fov: float = option(
        40.0,
        "Horizontal field of view of the default cameras, in degrees.",
        group="rendering",
        above=0,
        below=180,
    )
    render_christoffels: str = option(
        "grid",
        "Lensed renders of static spacetimes: Christoffels from a cached spherical grid (fast) or exact autodiff per integrator stage (time-dependent spacetimes always use exact).",
        group="rendering",
        choices=("grid", "exact"),
    )
    render_outside: str = option(
        "network",
        "The metric lensed renders use outside the training domain (rays from a camera at camera_distance cross it): network (extrapolate the learned field; a one-line warning says so), analytic (blend to the config's analytic spacetime over render_blend_width beyond the box) or flat (blend to the chart's flat metric).",
        group="rendering",
        choices=("network", "analytic", "flat"),
    )
    render_blend_width: float = option(
        1.0,
        "Width (coordinate units, per axis) of the C2 blend from the learned metric at the domain's spatial faces to render_outside's metric.",
        group="rendering",
        above=0,
    )
    render_rtol: float = option(
        1e-5, "Geodesic integrator relative tolerance.", group="rendering", above=0
    )
    render_atol: float = option(
        1e-7, "Geodesic integrator absolute tolerance.", group="rendering", above=0
    )
    render_max_steps: int = option(
        2000, "Geodesic integrator step limit per ray.", group="rendering", minimum=1
    )


def domain_window(coords: Tensor, low: Tensor, high: Tensor, width: float) -> Tensor:
    """``[...]`` weight of the learned metric at ``coords [..., 4]``: 1 inside the spatial box
    ``[low, high]`` (``[3]`` each), falling to 0 at ``width`` beyond each face as the product over
    axes of ``1 - smootherstep(excess / width)`` (``6u^5 - 15u^4 + 10u^3``), so the blended
    metric stays C2 (its Christoffels and curvature are continuous across the faces)."""
    spatial = coords[..., 1:]
    excess = (low - spatial).clamp_min(0) + (spatial - high).clamp_min(0)
    u = (excess / width).clamp(max=1.0)
    return (1 - u**3 * (10 - 15 * u + 6 * u * u)).prod(dim=-1)


def spacetime_of(config: EinFieldConfig) -> Spacetime:
    """The analytic spacetime the config names (its parameters from the config)."""
    params = SpacetimeParameters(
        config.mass, config.spin, config.amplitude, config.cross_amplitude, config.frequency
    )
    return Spacetime(config.spacetime, params)


RADIAL_SPACETIMES = ("schwarzschild_ks", "kerr_ks")
"""Charts where ``radial_features`` / ``radial_envelope`` apply: Cartesian, a mass at the origin."""


def _point_jets(function: Callable[[Tensor], Tensor], points: Tensor, order: int) -> list[Tensor]:
    """A small per-point map ``[4] -> [F]`` and its derivatives at ``points [B, 4]``:
    ``[values [B, F], first [B, 4 (k), F]]`` and, at order 2, ``second [B, 4, 4, F]``."""

    def first(point: Tensor):
        value = function(point)
        return value, value

    jet1 = jacfwd(first, has_aux=True)
    if order == 1:
        jacobian, values = vmap(jet1)(points)
        return [t.to(points.dtype) for t in (values, jacobian.transpose(1, 2))]

    def second(point: Tensor):
        jacobian, value = jet1(point)
        return jacobian, (jacobian, value)

    hessian, (jacobian, values) = vmap(jacfwd(second, has_aux=True))(points)
    # (cast: forward mode promotes a float32 map's tangents to float64 through Python scalars)
    jets = (values, jacobian.transpose(1, 2), hessian.permute(0, 2, 3, 1))
    return [t.to(points.dtype) for t in jets]


class _Sine(nn.Module):
    def __init__(self, omega: float) -> None:
        super().__init__()
        self.omega = omega

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.omega * x)

    def derivatives(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``sigma, sigma', sigma''`` at ``x``."""
        sin, cos = torch.sin(self.omega * x), torch.cos(self.omega * x)
        return sin, self.omega * cos, -(self.omega**2) * sin


class _SiLU(nn.Module):
    """``x sigmoid(x)`` written out: torch's fused SiLU has no forward-mode rule for its own
    derivative, so its Hessian by ``jacfwd(jacfwd(...))`` would fail."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x)

    def derivatives(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``sigma = x s``, ``sigma' = s (1 + x (1 - s))``, ``sigma'' = s (1 - s) (2 + x (1 - 2 s))``."""
        s = torch.sigmoid(x)
        return x * s, s * (1 + x * (1 - s)), s * (1 - s) * (2 + x * (1 - 2 * s))


class _GELU(nn.Module):
    """``x Phi(x)`` (exact GELU) written out, for the same reason as :class:`_SiLU`."""

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * x * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))

    def derivatives(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``sigma = x Phi``, ``sigma' = Phi + x phi``, ``sigma'' = phi (2 - x^2)``."""
        cdf = 0.5 * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))
        pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return x * cdf, cdf + x * pdf, pdf * (2 - x * x)


def _mlp(config: EinFieldConfig, inputs: int, outputs: int) -> nn.Sequential:
    """``layers`` hidden layers of width ``hidden`` with the configured activation."""
    modules: list[nn.Module] = []
    width = inputs
    for index in range(config.layers):
        linear = nn.Linear(width, config.hidden)
        if config.activation == "siren":  # Sitzmann et al. 2020, section 3.2
            omega = config.siren_omega if index == 0 else 1.0
            bound = 1.0 / width if index == 0 else math.sqrt(6.0 / width)
            nn.init.uniform_(linear.weight, -bound, bound)
            modules += [linear, _Sine(omega)]
        else:
            modules += [linear, _SiLU() if config.activation == "silu" else _GELU()]
        width = config.hidden
    modules.append(nn.Linear(width, outputs))
    return nn.Sequential(*modules)


class EinField(Field):
    """MLP ``(t, x, y, z) -> 10`` metric components (distortion or full), a differentiable metric.

    Args:
        config: :class:`EinFieldConfig`.
        scene: its ``aabb`` is the spatial domain (views and orbits).
    """

    batch_kind = BatchKind.COORDINATES
    render_cache_required = True  # the Christoffel grid: built for every frame if not kept

    def __init__(self, config: EinFieldConfig, scene: SceneInfo) -> None:
        super().__init__()
        self.config = config
        self.spacetime = spacetime_of(config)
        self.dtype = DTYPES[config.dtype]
        self.scene = scene
        low = torch.tensor(config.domain_min, dtype=torch.float64)
        high = torch.tensor(config.domain_max, dtype=torch.float64)
        if (high < low).any():
            raise ValueError(
                f"domain_max {list(config.domain_max)} is below domain_min {list(config.domain_min)}"
            )
        half = (high - low) / 2
        self.register_buffer("center", ((high + low) / 2).to(self.dtype))
        self.register_buffer(
            "half_extent", torch.where(half > 0, half, torch.ones_like(half)).to(self.dtype)
        )
        central = config.spacetime in RADIAL_SPACETIMES
        if (config.radial_features or config.radial_envelope) and not central:
            raise ValueError(
                f"radial_features / radial_envelope need a Cartesian chart of a central mass "
                f"({', '.join(RADIAL_SPACETIMES)}), not spacetime {config.spacetime}"
            )
        if config.radial_envelope and config.target != "distortion":
            raise ValueError("radial_envelope needs target: distortion (the full metric does not fall off as M/r)")
        inputs = 4 + (4 if config.radial_features else 0)
        if config.fourier_features > 0:
            generator = torch.Generator().manual_seed(config.seed + 7919)
            frequencies = (
                torch.randn(4, config.fourier_features, generator=generator, dtype=torch.float64)
                * config.fourier_scale
            )
            self.register_buffer("fourier_matrix", frequencies.to(self.dtype))
            inputs += 2 * config.fourier_features
        else:
            self.register_buffer("fourier_matrix", None)
        self.net = _mlp(config, inputs, len(COMPONENT_NAMES)).to(self.dtype)
        self._lensing_grid = None  # the renderer's Christoffel grid of the current weights

    # ------------------------------------------------------------------ the field
    def radial_inputs(self, coords: Tensor) -> Tensor:
        """``[..., 4]`` the radial features at ``coords [..., 4]``: ``x / |x|`` (Euclidean unit
        vector of the spatial part) and ``M / r`` with the chart's radius ``r``."""
        # in float64 and cast, as flat_metric: forward mode would otherwise promote a float32
        # network's tangents to float64 through the Python scalars here
        wide = coords.double()
        spatial = wide[..., 1:]
        unit = spatial / spatial.norm(dim=-1, keepdim=True)
        inverse = self.config.mass / self.spacetime.radius(wide)
        return torch.cat([unit, inverse[..., None]], dim=-1).to(self.dtype)

    def envelope(self, coords: Tensor) -> Tensor:
        """``[...]`` the factor ``M / r`` the output is multiplied by (``radial_envelope``)."""
        return (self.config.mass / self.spacetime.radius(coords.double())).to(self.dtype)

    def components(self, coords: Tensor) -> Tensor:
        """``[..., 10]`` network output at ``coords [..., 4]`` (chart coordinates)."""
        x = coords.to(self.dtype)
        u = (x - self.center) / self.half_extent
        parts = [u]
        if self.config.radial_features:
            parts.append(self.radial_inputs(x))
        if self.fourier_matrix is not None:
            phase = 2 * math.pi * u @ self.fourier_matrix
            parts += [torch.sin(phase), torch.cos(phase)]
        out = self.net(torch.cat(parts, dim=-1) if len(parts) > 1 else u)
        return out * self.envelope(x)[..., None] if self.config.radial_envelope else out

    def forward(self, coords: Tensor) -> Tensor:
        return self.components(coords)

    def flat_metric(self, coords: Tensor) -> Tensor:
        """``[..., 4, 4]`` the flat metric of the chart (what the distortion is measured from)."""
        # in float64 and cast: at zero mass the charts multiply by a Python 0.0, whose forward-mode
        # tangent torch promotes to float64 (it would leak into a float32 network's jets)
        return self.spacetime.flat_metric(coords.double()).to(self.dtype)

    def metric(self, coords: Tensor) -> Tensor:
        """``g [..., 4, 4]`` at ``coords [..., 4]``: flat + distortion (or the full output);
        differentiable, so :func:`tensorfield.fields.relativity.curvature` works on it."""
        learned = components_to_matrix(self.components(coords))
        return learned + self.flat_metric(coords) if self.config.target == "distortion" else learned

    def metric_function(self) -> Callable[[Tensor], Tensor]:
        """``coords [B, 4] -> g [B, 4, 4]`` (also one point ``[4] -> [4, 4]``), for the physics
        code (:mod:`~tensorfield.fields.relativity`, geodesics, the lensed renderer)."""
        return self.metric

    def render_metric(self) -> Callable[[Tensor], Tensor]:
        """The metric lensed renders trace: the learned one, blended outside the training domain
        to the analytic or flat metric as ``render_outside`` says (:func:`domain_window`)."""
        mode = self.config.render_outside
        if mode == "network":
            return self.metric
        low = torch.tensor(self.config.domain_min[1:], dtype=torch.float64)
        high = torch.tensor(self.config.domain_max[1:], dtype=torch.float64)
        width = float(self.config.render_blend_width)

        def blended(coords: Tensor) -> Tensor:
            weight = domain_window(coords, low.to(coords), high.to(coords), width)[..., None, None]
            outside = self.spacetime.metric(coords) if mode == "analytic" else self.flat_metric(coords)
            learned = self.metric(coords)
            # lerp is exact at both ends: the network itself inside the box, the other metric beyond
            return torch.lerp(outside.to(learned.dtype), learned, weight.to(learned.dtype))

        return blended

    def _warn_if_extrapolating(self, request: RenderRequest, settings) -> None:
        """One warning when a lensed render with ``render_outside: network`` reaches outside the
        training box (the camera or the escape sphere lies beyond it)."""
        if self.config.render_outside != "network" or getattr(self, "_warned_outside", False):
            return
        low, high = self.config.domain_min[1:], self.config.domain_max[1:]
        eye = request.cameras.c2w[request.index, :3, 3].tolist()
        inside = all(lo <= e <= hi for lo, e, hi in zip(low, eye, high))
        reach = max(max(abs(v) for v in low), max(abs(v) for v in high))
        if inside and settings.escape_radius <= reach:
            return
        self._warned_outside = True
        warnings.warn(
            f"einfield: the lensed render traces rays outside the training domain {list(low)}..{list(high)} "
            f"(camera at {[round(e, 2) for e in eye]}, escape radius {settings.escape_radius}), where the network "
            "extrapolates; render_outside=analytic (or flat) blends to that metric outside the box",
            stacklevel=3,
        )

    @property
    def chart_is_cartesian(self) -> bool:
        """The chart is ``(t, x, y, z)`` (the renderer's camera lives in it)."""
        return self.spacetime.chart.cartesian

    @property
    def spacetime_parameters(self) -> SpacetimeParameters:
        return self.spacetime.params

    def horizon_radius(self) -> float:
        """Outer horizon ``r_+`` of the configured spacetime (0 without one)."""
        return self.spacetime.horizon_radius()

    # ------------------------------------------------------------------ training
    def param_groups(self) -> list[ParamGroup]:
        ratio = self.config.lr_final / self.config.lr
        return [
            ParamGroup("net", list(self.net.parameters()), self.config.lr, ratio, self.config.steps)
        ]

    def optimizer_settings(self) -> tuple[str, dict]:
        """The optimiser the trainer builds (:func:`tensorfield.engine.optim.build_optimizer`)."""
        if self.config.optimizer == "soap":
            return "soap", {
                "betas": (0.95, 0.95),
                "weight_decay": 0.0,
                "precondition_frequency": self.config.soap_precondition_frequency,
            }
        return "adam", {}

    def adam_settings(self) -> tuple[tuple[float, float], float]:
        return (0.9, 0.999), 1e-8

    def jets(
        self, coords: Tensor, order: int = 1, method: str | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The network's output and its coordinate derivatives by forward mode.

        Args:
            coords: ``[B, 4]``.
            order: 1 for values and Jacobian, 2 adds the Hessian.
            method: ``"jacfwd"`` (:func:`torch.func.jacfwd` under :func:`torch.func.vmap`, the
                reference) or ``"explicit"`` (:meth:`explicit_jets`); default: the config's.

        Returns:
            ``values [B, 10]``, ``jacobian [B, 10, 4]`` (``d_k N_c``), ``hessian [B, 10, 4, 4]``
            (``d_l d_k N_c``) or ``None``. Differentiable with respect to the parameters.
        """
        if (method or self.config.derivatives) == "explicit":
            return self.explicit_jets(coords, order)
        values, jacobian, *rest = _point_jets(self.components, coords.to(self.dtype), order)
        hessian = rest[0].permute(0, 3, 1, 2) if order == 2 else None  # [B, 10, 4, 4]
        return values, jacobian.transpose(1, 2), hessian

    def explicit_jets(self, coords: Tensor, order: int = 1) -> tuple[Tensor, Tensor, Tensor | None]:
        """:meth:`jets` by pushing the 4 coordinate tangents (and their 16 second-order ones)
        through the layers as batched matrix products: for ``z = W a + b``, ``dz = W da`` and
        ``ddz = W dda``; for ``a = sigma(z)``, ``da = sigma'(z) dz`` and
        ``dda_kl = sigma''(z) dz_k dz_l + sigma'(z) ddz_kl``. The same numbers as forward-mode
        autodiff (tested against :func:`torch.func.jacfwd`), with a few large kernels per layer
        instead of vmap's per-operation batching."""
        x = coords.to(self.dtype)
        u = (x - self.center) / self.half_extent
        batch = u.shape[0]
        # tangents: d u / d x^k = e_k / half_extent  -> [B, 4 (k), 4 (feature)]
        du = torch.diag(1.0 / self.half_extent).expand(batch, 4, 4)
        ddu = u.new_zeros(batch, 4, 4, 4) if order == 2 else None
        a, da, dda = u, du, ddu
        if self.config.radial_features:
            radial = _point_jets(self.radial_inputs, x, order)  # [B, 4], [B, 4 (k), 4], ...
            a = torch.cat([a, radial[0]], dim=-1)
            da = torch.cat([da, radial[1]], dim=-1)
            if order == 2:
                dda = torch.cat([dda, radial[2]], dim=-1)
        if self.fourier_matrix is not None:
            phase = 2 * math.pi * u @ self.fourier_matrix  # [B, F]
            dphase = 2 * math.pi * du @ self.fourier_matrix  # [B, 4, F]
            sin, cos = torch.sin(phase), torch.cos(phase)
            a = torch.cat([a, sin, cos], dim=-1)
            da = torch.cat([da, cos[:, None] * dphase, -sin[:, None] * dphase], dim=-1)
            if order == 2:
                outer = dphase[:, :, None] * dphase[:, None, :]  # [B, 4, 4, F] (ddphase = 0)
                dda = torch.cat(
                    [dda, -sin[:, None, None] * outer, -cos[:, None, None] * outer], dim=-1
                )
        modules = list(self.net)
        for index in range(0, len(modules) - 1, 2):
            linear, activation = modules[index], modules[index + 1]
            z = linear(a)
            dz = da @ linear.weight.T
            value, slope, curve = activation.derivatives(z)
            if order == 2:
                ddz = dda @ linear.weight.T
                dda = (
                    curve[:, None, None] * dz[:, :, None] * dz[:, None, :]
                    + slope[:, None, None] * ddz
                )
            a, da = value, slope[:, None] * dz
        last = modules[-1]
        values = last(a)
        jacobian = (da @ last.weight.T).transpose(1, 2)  # [B, 10, 4]
        hessian = (dda @ last.weight.T).permute(0, 3, 1, 2) if order == 2 else None  # [B, 10, 4, 4]
        if self.config.radial_envelope:  # product rule with E = M / r
            value_e, grad_e, *rest = _point_jets(lambda p: self.envelope(p)[..., None], x, order)
            value_e, grad_e = value_e[:, 0], grad_e[..., 0]  # [B], [B, 4]
            if order == 2:
                hess_e = rest[0][..., 0]  # [B, 4, 4]
                hessian = (
                    hess_e[:, None] * values[:, :, None, None]
                    + grad_e[:, None, :, None] * jacobian[:, :, None, :]
                    + grad_e[:, None, None, :] * jacobian[:, :, :, None]
                    + value_e[:, None, None, None] * hessian
                )
            jacobian = grad_e[:, None, :] * values[:, :, None] + value_e[:, None, None] * jacobian
            values = value_e[:, None] * values
        return values, jacobian, hessian

    def training_step(self, batch: CoordinateBatch, step: int) -> StepOutput:
        config = self.config
        hessians = getattr(batch, "hessians", None)
        use_hessian = config.hessian_weight > 0 and hessians is not None
        use_jacobian = config.jacobian_weight > 0 and batch.jacobians is not None
        if use_hessian:
            values, jacobian, hessian = self.jets(batch.coordinates, order=2)
        elif use_jacobian:
            values, jacobian, hessian = (*self.jets(batch.coordinates, order=1)[:2], None)
        else:
            values, jacobian, hessian = self.components(batch.coordinates), None, None
        power = config.sample_weight_power
        importance = getattr(batch, "weights", None)  # 1 / (N p_i) of importance sampling

        def mse(prediction: Tensor, target: Tensor) -> Tensor:
            error = (prediction - target.to(self.dtype)).square().flatten(1)
            if power == 0 and importance is None:
                return error.mean()
            per_sample = error.mean(dim=1)
            if power > 0:
                size = target.to(self.dtype).square().flatten(1).mean(dim=1)
                weight = (size + size.mean()).pow(-power)
                per_sample = per_sample * (weight / weight.mean())
            if importance is not None:
                per_sample = per_sample * importance.to(self.dtype)
            return per_sample.mean()

        metric_mse = mse(values, batch.values)
        loss = config.metric_weight * metric_mse
        metrics = {"metric_mse": float(metric_mse.detach())}
        if use_jacobian:
            jacobian_mse = mse(jacobian, batch.jacobians)
            loss = loss + config.jacobian_weight * jacobian_mse
            metrics["jacobian_mse"] = float(jacobian_mse.detach())
        if use_hessian:
            hessian_mse = mse(hessian, hessians)
            loss = loss + config.hessian_weight * hessian_mse
            metrics["hessian_mse"] = float(hessian_mse.detach())
        return StepOutput(loss, metrics)

    # ------------------------------------------------------------------ slices (ExportsSlices)
    def slice_components(self) -> tuple[str, ...]:
        names = ("kretschmann", *METRIC_QUANTITIES, "det", "ricci_scalar")
        return names + tuple(f"error_{name}" for name in names)

    def default_slice(self) -> SliceRequest:
        """The plane through the domain's centre spanned by its first two spatial axes, at its
        middle spatial height (the ``z`` mid-plane of the box)."""
        center = tuple(float(v) for v in self.center.double())
        half = [
            float(v)
            for v in (
                (torch.tensor(self.config.domain_max) - torch.tensor(self.config.domain_min)) / 2
            )
        ]
        return SliceRequest(
            origin=center,
            axis_u=(0.0, half[1], 0.0, 0.0),
            axis_v=(0.0, 0.0, half[2], 0.0),
            resolution=128,
        )

    def slice_domain(self) -> SliceDomain:
        """The domain box in the chart's coordinates (time: axis 0), for the viewer's planes."""
        return SliceDomain(
            tuple(self.spacetime.chart.coordinates),
            tuple(float(v) for v in self.config.domain_min),
            tuple(float(v) for v in self.config.domain_max),
            time_axis=0,
        )

    def slice_time(self, time: float | None) -> float | None:
        """Chart time of normalised ``time`` in ``[0, 1]`` over the domain's time range."""
        if time is None:
            return None
        low, high = self.config.domain_min[0], self.config.domain_max[0]
        return low + float(time) * (high - low)

    def field_slice(self, request: SliceRequest) -> Tensor:
        """``[R, R]`` values of ``request.component`` on the slice (``error_<q>``: network minus
        analytic ``q``); ``request.time`` (normalised) sets the time coordinate."""
        from tensorfield.fields.einfield_targets import slice_quantity

        points = request.points()
        chart_time = self.slice_time(getattr(request, "time", None))
        if chart_time is not None:
            points = points.clone()
            points[..., 0] = chart_time
        flat = points.reshape(-1, 4)
        name = request.component or self.slice_components()[0]
        device = self.center.device
        if name.startswith("error_"):
            quantity = name[len("error_") :]
            values = slice_quantity(
                self.metric, flat.to(device), quantity
            ).double().cpu() - slice_quantity(self.spacetime.metric, flat, quantity)
        else:
            values = slice_quantity(self.metric, flat.to(device), name).double().cpu()
        return values.reshape(request.resolution, request.resolution)

    # ------------------------------------------------------------------ views (RendersViews)
    def lensing_settings(self, time: float | None = None):
        """:class:`tensorfield.fields.lensing.LensingSettings` from the config."""
        from tensorfield.fields.lensing import LensingSettings

        config = self.config
        chart_time = self.slice_time(time)
        return LensingSettings(
            horizon_radius=self.horizon_radius(),
            escape_radius=config.escape_radius,
            background=config.render_background,
            disk_inner=config.disk_inner,
            disk_outer=config.disk_outer,
            time=float(chart_time if chart_time is not None else config.domain_min[0]),
            rtol=config.render_rtol,
            atol=config.render_atol,
            max_steps=config.render_max_steps,
            mass=config.mass if self.horizon_radius() > 0 else 0.0,
            spin=self.spacetime.params.spin if self.horizon_radius() > 0 else 0.0,
            christoffels="exact"
            if self.spacetime.chart.time_dependent
            else config.render_christoffels,
        )

    def render_view(self, request: RenderRequest) -> RenderOutput:
        """The lensed image of ``request``'s camera: null geodesics traced backwards through the
        learned metric (:func:`tensorfield.fields.lensing.render_lensed`)."""
        from tensorfield.fields.lensing import render_lensed

        if not self.chart_is_cartesian:
            raise ValueError(
                f"lensed renders need a Cartesian chart; {self.config.spacetime} is not"
            )
        settings = self.lensing_settings(request.camera_time)
        self._warn_if_extrapolating(request, settings)
        cache = self.allow_render_cache and not self.training
        grid = self._lensing_grid if cache else None
        if settings.christoffels == "grid" and grid is None:
            from tensorfield.fields.lensing import build_christoffel_grid

            grid = build_christoffel_grid(
                self.render_metric(), settings, request.cameras.c2w.device
            )
            if cache:
                self._lensing_grid = grid
        with torch.no_grad():
            return render_lensed(self.render_metric(), request, settings, christoffel_grid=grid)

    def after_step(self, step: int):
        """The weights changed: drop the cached Christoffel grid of the lensed renderer."""
        self._lensing_grid = None
        return super().after_step(step)


class TimeDependentEinField(EinField):
    """An Einstein field of a time-dependent spacetime (the plane wave): has a time slider."""

    def time_span(self) -> tuple[float, float]:
        return (0.0, 1.0)


def build_einfield(config: EinFieldConfig, scene: SceneInfo) -> EinField:
    """The model: :class:`TimeDependentEinField` when the domain spans time and the spacetime
    (or user data, ``scene.is_dynamic``) depends on it, else :class:`EinField`."""
    spans_time = config.domain_max[0] > config.domain_min[0]
    dynamic = spans_time and (CHARTS[config.spacetime].time_dependent or scene.is_dynamic)
    return (TimeDependentEinField if dynamic else EinField)(config, scene)
