"""Training sets and evaluation of Einstein fields (:mod:`tensorfield.fields.einfield`).

The training set is fixed and computed once: the points (a grid of the domain box or uniform
random points, excised around the singularity) with the target's 10 components, their exact
Jacobian and, when the Hessian loss is on, their Hessian, from the analytic metric's float64
jets (:func:`tensorfield.fields.relativity.metric_jets`), or the user's samples
(:mod:`tensorfield.datasets.einfield_data`). Each step draws ``batch_size`` of them (all of them
when the batch is larger), so a step costs one network jet, nothing analytic.

Evaluation is on held-out points, never the training ones: for an analytic spacetime ``eval_points``
uniform points of the box drawn from a fixed generator (independent of the training seed); for
user data the held-out ``eval_fraction`` of the samples. The errors are relative L2 norms over
all points and components, ``|q_net - q_true| / |q_true|``, of the metric, its Jacobian, the
Christoffel symbols, the Riemann tensor and the Kretschmann scalar (also restricted to radius
``> 2M``, outside the Schwarzschild radius where it is ``<= 48 / 2^6 M^-4``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tensorfield.datasets.cameras import Cameras, orbit_poses
from tensorfield.datasets.einfield_data import (
    COMPONENTS,
    derivative_components,
    load_metric_samples,
    to_components,
)
from tensorfield.datasets.errors import DatasetError
from tensorfield.datasets.spacetimes import Spacetime, sample_points
from tensorfield.fields.base import CoordinateBatch, Field, SceneInfo, StatelessSource
from tensorfield.fields.einfield import METRIC_QUANTITIES, EinFieldConfig, spacetime_of
from tensorfield.fields.relativity import Curvature, curvature, metric_jets
from torch import Tensor

EVAL_SEED = 20250917
"""Seed of the held-out points' generator (fixed: the same points for every run of a config)."""
CHUNK = 1024


def hessian_components(hessian: Tensor) -> Tensor:
    """``[N, 4, 4, 4, 4]`` ``d_l d_k g_ij`` -> ``[N, 10, 4, 4]``."""
    return to_components(hessian.permute(0, 3, 4, 1, 2)).permute(0, 3, 1, 2)


@dataclass
class SobolevBatch(CoordinateBatch):
    """A :class:`CoordinateBatch` with second derivatives.

    Attributes:
        hessians: ``[B, 10, 4, 4]`` target ``d_l d_k`` of each component, or ``None``.
    """

    hessians: Tensor | None = None
    weights: Tensor | None = None


def importance_probabilities(values: Tensor, jacobians: Tensor | None, mix: float) -> Tensor:
    """``[N]`` sampling probabilities ``(1 - mix) / N + mix s_i / sum s`` with ``s_i`` the RMS of
    sample ``i``'s target values and Jacobian (float64)."""
    size = values.double().square().flatten(1).sum(dim=1)
    entries = values[0].numel()
    if jacobians is not None:
        size = size + jacobians.double().square().flatten(1).sum(dim=1)
        entries += jacobians[0].numel()
    rms = (size / entries).sqrt()
    count = values.shape[0]
    uniform = torch.full_like(rms, 1.0 / count)
    if float(rms.sum()) <= 0:
        return uniform
    return (1 - mix) * uniform + mix * rms / rms.sum()


class SobolevSource(StatelessSource):
    """Random batches of the fixed training set (with replacement across steps).

    With ``importance > 0`` the samples are drawn with :func:`importance_probabilities` and each
    carries the weight ``1 / (N p_i)``, so a weighted mean over a batch estimates the plain mean
    over the training set without bias (importance sampling), with far less variance when a few
    samples dominate it (the Jacobian next to a singularity).
    """

    def __init__(
        self,
        coords: Tensor,
        values: Tensor,
        jacobians: Tensor | None,
        hessians: Tensor | None,
        device: torch.device,
        dtype: torch.dtype,
        importance: float = 0.0,
    ) -> None:
        def move(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else tensor.to(device=device, dtype=dtype)

        self.probabilities = (
            importance_probabilities(values, jacobians, importance) if importance > 0 else None
        )
        self.coords, self.values, self.jacobians, self.hessians = (
            move(t) for t in (coords, values, jacobians, hessians)
        )

    def sample(self, batch_size: int, generator: torch.Generator) -> SobolevBatch:
        count = self.coords.shape[0]
        if batch_size >= count:
            return SobolevBatch(self.coords, self.values, self.jacobians, self.hessians)
        weights = None
        if self.probabilities is None:
            index = torch.randint(count, (batch_size,), generator=generator)
        else:
            index = torch.multinomial(self.probabilities, batch_size, replacement=True, generator=generator)
            weights = (1.0 / (count * self.probabilities[index])).to(self.values)
        index = index.to(self.coords.device)

        def pick(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else tensor[index]

        return SobolevBatch(
            pick(self.coords), pick(self.values), pick(self.jacobians), pick(self.hessians),
            None if weights is None else weights.to(self.coords.device),
        )


def grid_points(config: EinFieldConfig) -> Tensor:
    """``[T * G^3, 4]`` float64 grid of the domain box (``time_samples`` x ``grid_size^3``;
    a degenerate axis has one value)."""
    axes = []
    for axis in range(4):
        low, high = config.domain_min[axis], config.domain_max[axis]
        count = config.time_samples if axis == 0 else config.grid_size
        axes.append(torch.linspace(low, high, count if high > low else 1, dtype=torch.float64))
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 4)


def target_function(spacetime: Spacetime, target: str):
    """``coords -> [..., 4, 4]`` what the network learns: ``g - g_flat`` or ``g``."""
    if target == "distortion":
        return lambda coords: spacetime.metric(coords) - spacetime.flat_metric(coords)
    return spacetime.metric


def relative_l2(prediction: Tensor, truth: Tensor) -> float:
    """``|prediction - truth| / |truth|`` over every entry (float64)."""
    prediction, truth = prediction.double(), truth.double()
    return float((prediction - truth).norm() / truth.norm().clamp_min(1e-300))


def slice_quantity(metric_fn, coords: Tensor, name: str) -> Tensor:
    """``[N]`` a named scalar of a metric at ``coords [N, 4]``: ``g_tt``... (components),
    ``det``, ``kretschmann`` or ``ricci_scalar`` (in chunks; no parameter gradients)."""
    if name in METRIC_QUANTITIES:
        i, j = COMPONENTS[METRIC_QUANTITIES.index(name)]
        with torch.no_grad():
            return metric_fn(coords)[:, i, j]
    if name == "det":
        with torch.no_grad():
            return torch.linalg.det(metric_fn(coords))
    if name not in ("kretschmann", "ricci_scalar"):
        raise ValueError(f"unknown quantity '{name}'")
    parts = []
    for chunk in coords.split(CHUNK):
        with torch.no_grad():
            geometry = curvature(metric_fn, chunk)
        parts.append(geometry.kretschmann if name == "kretschmann" else geometry.ricci_scalar)
    return torch.cat(parts)


class EinFieldData:
    """:class:`~tensorfield.fields.base.TrainingData` of an analytic spacetime (no ``--data``)."""

    def __init__(self, config: EinFieldConfig) -> None:
        self.config = config
        self.spacetime = spacetime_of(config)
        if config.sampling == "grid":
            points = grid_points(config)
            points = points[self.spacetime.radius(points) >= config.excision_radius]
        else:
            points = sample_points(
                self.spacetime,
                tuple(config.domain_min),
                tuple(config.domain_max),
                config.excision_radius,
                config.num_points,
                torch.Generator().manual_seed(config.seed),
            )
        if points.shape[0] == 0:
            raise ValueError(
                f"no training points: the domain lies inside the excision radius {config.excision_radius}"
            )
        order = 2 if config.hessian_weight > 0 else 1
        jets = metric_jets(
            target_function(self.spacetime, config.target), points, order=order, chunk_size=4096
        )
        self.coords = points
        self.values = to_components(jets.metric)
        self.jacobians = derivative_components(jets.jacobian)
        self.hessians = hessian_components(jets.hessian) if jets.hessian is not None else None

    def scene_info(self) -> SceneInfo:
        low, high = (
            torch.tensor(self.config.domain_min[1:]),
            torch.tensor(self.config.domain_max[1:]),
        )
        dynamic = (
            self.spacetime.chart.time_dependent
            and self.config.domain_max[0] > self.config.domain_min[0]
        )
        extent = float((high - low).norm())
        return SceneInfo(
            aabb=torch.stack([low, high]).float(),
            near=0.0,
            far=extent + 2 * self.config.camera_distance,
            is_dynamic=dynamic,
            source_format="analytic_spacetime",
        )

    def batch_source(self, model: Field, device: torch.device) -> SobolevSource:
        return SobolevSource(
            self.coords, self.values, self.jacobians, self.hessians, device, model.dtype,
            self.config.importance_sampling,
        )

    def eval_splits(self) -> tuple[str, ...]:
        return ("test",)

    # CameraData: where the lensed renders look from (``render --path orbit``, the viewer)
    def split_cameras(self) -> dict[str, Cameras]:
        """``{"train": 8 cameras}`` on a circle of radius ``camera_distance`` around the hole at
        the origin, ``camera_elevation`` degrees above the equatorial plane, looking at it."""
        config = self.config
        poses = orbit_poses(8, config.camera_distance, config.camera_elevation, up_axis=2)
        size = config.render_resolution
        return {"train": Cameras.from_fov(poses, size, size, math.radians(config.render_fov))}

    def scene_box(self) -> Tensor:
        """``[2, 3]`` a box centred on the origin (the hole: the orbit's centre) holding the domain."""
        corners = torch.tensor([self.config.domain_min[1:], self.config.domain_max[1:]])
        reach = float(corners.abs().max())
        return torch.tensor([[-reach] * 3, [reach] * 3])

    def background_color(self) -> Tensor:
        """Black (the sky of a lensed render is the star field)."""
        return torch.zeros(3)

    def held_out_points(self) -> Tensor:
        """``[eval_points, 4]`` uniform points of the box (excised), from a fixed generator."""
        config = self.config
        generator = torch.Generator().manual_seed(EVAL_SEED)
        return sample_points(
            self.spacetime,
            tuple(config.domain_min),
            tuple(config.domain_max),
            config.excision_radius,
            config.eval_points,
            generator,
        )

    def evaluate(self, model: Field, split: str, out_dir: Path | None, max_items: int = 0) -> dict:
        """Relative L2 errors of the metric, Jacobian, Christoffels, Riemann and Kretschmann on
        the held-out points (see the module docstring and :func:`curvature_errors`)."""
        coords = self.held_out_points()
        device = model.center.device
        predicted, true = [], []
        for chunk in coords.split(CHUNK):
            predicted.append(curvature(model.metric, chunk.to(device=device, dtype=model.dtype)))
            true.append(curvature(self.spacetime.metric, chunk))
        return curvature_errors(
            predicted, true, coords, self.spacetime, self.config.mass, self.config.target
        )


RADIUS_BANDS = (0.0, 0.5, 1.0, 2.0, math.inf)
"""Edges of the radius bands of :func:`curvature_errors` (``r < 0.5``, ``0.5 <= r < 1``, ...)."""


def curvature_errors(
    predicted: list[Curvature],
    true: list[Curvature],
    coords: Tensor,
    spacetime: Spacetime,
    mass: float,
    target: str = "distortion",
) -> dict:
    """The held-out errors of a field against the analytic metric.

    Args:
        predicted: the field's :class:`~tensorfield.fields.relativity.Curvature`, in chunks.
        true: the analytic metric's, the same chunks.
        coords: ``[N, 4]`` the points (their radius picks the bands).
        spacetime: the analytic spacetime (its flat metric and radius).
        mass: ``M`` (the ``r > 2M`` restriction of the Kretschmann error).
        target: ``"distortion"`` adds the error of ``g - g_flat``.

    Returns:
        ``{quantity}_rel_l2 = |q_net - q| / |q|`` over all points and components for the metric,
        Jacobian, Christoffels, Riemann and Kretschmann; ``{metric,christoffel,kretschmann}_outside_2m_rel_l2``
        over the points outside ``r = 2M``;
        per radius band ``[lo, hi)`` of :data:`RADIUS_BANDS`, ``band_r{lo}-{hi}_num_points`` and
        ``band_r{lo}-{hi}_{metric,jacobian,christoffel}_rel_l2`` (the relative L2 error within
        the band), which shows where in the box the error lives.
    """

    def gather(parts, name):
        return torch.cat([getattr(part, name).detach().double().cpu() for part in parts])

    radius = spacetime.radius(coords)
    outside = radius > 2 * mass
    result = {"num_points": int(coords.shape[0])}
    fields = {}
    for name in ("metric", "jacobian", "christoffel", "riemann", "kretschmann"):
        fields[name] = (gather(predicted, name), gather(true, name))
        result[f"{name}_rel_l2"] = relative_l2(*fields[name])
    if target == "distortion":
        flat = spacetime.flat_metric(coords)
        result["distortion_rel_l2"] = relative_l2(
            fields["metric"][0] - flat, fields["metric"][1] - flat
        )
    if outside.any():
        for name in ("metric", "christoffel", "kretschmann"):
            result[f"{name}_outside_2m_rel_l2"] = relative_l2(
                fields[name][0][outside], fields[name][1][outside]
            )
        result["num_points_outside_2m"] = int(outside.sum())
    for low, high in itertools.pairwise(RADIUS_BANDS):
        inside = (radius >= low) & (radius < high)
        if not inside.any():
            continue
        band = f"band_r{low:g}-{high:g}"
        result[f"{band}_num_points"] = int(inside.sum())
        for name in ("metric", "jacobian", "christoffel"):
            result[f"{band}_{name}_rel_l2"] = relative_l2(
                fields[name][0][inside], fields[name][1][inside]
            )
    return result


class MetricSampleData:
    """:class:`~tensorfield.fields.base.TrainingData` of user metric samples (``--data FILE``).

    The domain box (the network's input normalisation) becomes the samples' bounding box: the
    factory writes it into ``config.domain_min`` / ``domain_max`` before the model is built.
    """

    def __init__(self, config: EinFieldConfig, path: str) -> None:
        self.config = config
        self.path = path
        samples = load_metric_samples(path)
        count = samples.coords.shape[0]
        held = round(config.eval_fraction * count)
        if count < 2 or held < 1 or held >= count:
            raise DatasetError(
                path,
                f"{count} samples cannot be split into training and {config.eval_fraction:.0%} held-out points",
            )
        order = torch.randperm(count, generator=torch.Generator().manual_seed(EVAL_SEED))
        train, test = order[held:], order[:held]
        self.spacetime = spacetime_of(config)  # only its flat metric is used
        flat = metric_jets(self.spacetime.flat_metric, samples.coords, order=1, chunk_size=4096)
        if config.target == "distortion":
            values = samples.metric - flat.metric
            jacobian = None if samples.jacobian is None else samples.jacobian - flat.jacobian
        else:
            values, jacobian = samples.metric, samples.jacobian
        self.samples = samples
        self.train_index, self.test_index = train, test
        self.coords = samples.coords[train]
        self.values = to_components(values[train])
        self.jacobians = None if jacobian is None else derivative_components(jacobian[train])
        low, high = samples.coords.amin(0), samples.coords.amax(0)
        config.domain_min = [float(v) for v in low]
        config.domain_max = [float(v) for v in high]

    def scene_info(self) -> SceneInfo:
        low, high = (
            torch.tensor(self.config.domain_min[1:]),
            torch.tensor(self.config.domain_max[1:]),
        )
        dynamic = self.config.domain_max[0] > self.config.domain_min[0]
        return SceneInfo(
            aabb=torch.stack([low, high]).float(),
            near=0.0,
            far=float((high - low).norm()) + 2 * self.config.camera_distance,
            is_dynamic=dynamic,
            source_format="metric_samples",
        )

    def batch_source(self, model: Field, device: torch.device) -> SobolevSource:
        return SobolevSource(
            self.coords, self.values, self.jacobians, None, device, model.dtype,
            self.config.importance_sampling,
        )

    def eval_splits(self) -> tuple[str, ...]:
        return ("test",)

    def evaluate(self, model: Field, split: str, out_dir: Path | None, max_items: int = 0) -> dict:
        """Relative L2 errors of the metric (and Jacobian, if the file has one) on the held-out samples."""
        coords = self.samples.coords[self.test_index]
        device = model.center.device
        parts = [
            metric_jets(model.metric, chunk.to(device=device, dtype=model.dtype), order=1)
            for chunk in coords.split(CHUNK)
        ]
        metric = torch.cat([p.metric.detach().double().cpu() for p in parts])
        result = {
            "num_points": int(coords.shape[0]),
            "metric_rel_l2": relative_l2(metric, self.samples.metric[self.test_index]),
        }
        if self.samples.jacobian is not None:
            jacobian = torch.cat([p.jacobian.detach().double().cpu() for p in parts])
            result["jacobian_rel_l2"] = relative_l2(
                jacobian, self.samples.jacobian[self.test_index]
            )
        return result


def einfield_data(config: EinFieldConfig, path: str | None = None, scene=None):
    """The data factory of ``einfield``: user samples with ``--data FILE``, else the analytic
    spacetime of the config."""
    path = path or config.data or None
    if path:
        return MetricSampleData(config, str(path))
    return EinFieldData(config)
