"""The contract between the common trainer (``engine``) and every model family (``fields``).

A method is three things, named by one :class:`~tensorfield.fields.registry.MethodSpec`:

1. **a config** (a :class:`~tensorfield.fields.config.MethodConfig` dataclass);
2. **its data** (a factory ``(config, path, scene=None) ->`` :class:`TrainingData`): what the
   model learns of the scene (:class:`SceneInfo`), a :class:`BatchSource` of training batches
   (:class:`RayBatch`, :class:`ImageBatch` with optional per-frame ``extras``,
   :class:`CoordinateBatch`, or the method's own), and the evaluation of a split. Image methods
   use :mod:`tensorfield.engine.data`; an Einstein field samples the spacetime its config names,
   an avatar adds per-frame poses. Data seen through cameras also implements :class:`CameraData`;
3. **a model** (a :class:`Field`): optimiser groups (:class:`ParamGroup`, with an exponential
   schedule) and Adam settings, the loss of a batch (:meth:`Field.training_step`), hooks
   (:meth:`Field.before_step`, :meth:`Field.after_step`) whose :class:`HookResult` tells the
   trainer what changed, and checkpoint shape support.

The trainer owns the rest (loop, optimisers, schedules, evaluation calls, logging, checkpoints)
and never branches on the kind of model or data.

What a model can do beyond training is an explicit optional **capability protocol**, checked with
``isinstance`` by the CLI, the render service, the exporters and the viewer (which shows the
controls of the protocols a model implements):

===================== ================================== ==========================================
protocol              methods                            used by
===================== ================================== ==========================================
:class:`RendersViews` ``render_view(RenderRequest)``     ``eval`` of images, ``render``, viewer, TSDF
:class:`ExportsDensityGrid` ``density_grid``, ``radiance`` ``export mesh`` (marching cubes)
:class:`ExportsSplats` ``splat_attributes(time)``        ``export splat``
:class:`HasTime`      ``time_span()``                    viewer time slider, ``--time``
:class:`HasIdentities` ``num_identities``, ``num_frames`` viewer identity / frame choosers, ``--frame``
:class:`DrivenByPoses` ``pose_skeleton(identity)``         ``render --poses``, ``export splat --poses``, viewer pose playback
:class:`FitsIdentities` ``identity_fit_values``, ``start_identity_fit`` ``fit-identity``
:class:`ExportsSlices` ``slice_components``, ``default_slice``, ``field_slice`` ``export slice``
===================== ================================== ==========================================

Every render goes through one :class:`RenderRequest` (camera, time, identity, frame, pose, mode).

Models whose number of primitives changes during training (Gaussian densification) never touch the
optimiser: ``after_step`` replaces the parameters and returns, per parameter, which old row each
new row continues (:class:`ParamSurgery`); the trainer carries the optimiser state over. The
gradients of the step just taken are still on the parameters (and on any tensor the model kept
from ``training_step``, e.g. screen-space means with ``retain_grad``) when ``after_step`` runs.
"""

from __future__ import annotations

import abc
import enum
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from tensorfield.datasets.cameras import Cameras
from tensorfield.datasets.info import SceneInfo  # re-exported: models are built from it


class BatchKind(str, enum.Enum):
    RAYS = "rays"
    IMAGES = "images"
    COORDINATES = "coordinates"


# ---------------------------------------------------------------------------------- batches
@dataclass
class RayBatch:
    """Random training rays.

    Attributes:
        origins: ``[B, 3]`` world-space ray origins.
        directions: ``[B, 3]`` unit directions.
        rgb: ``[B, 3]`` target colours, composited on ``background``.
        times: ``[B]`` normalised times (``nan`` for static scenes).
        background: ``[3]`` background colour the targets were composited on.
    """

    origins: Tensor
    directions: Tensor
    rgb: Tensor
    times: Tensor
    background: Tensor

    def to(self, device: torch.device | str) -> RayBatch:
        return RayBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


@dataclass
class ImageBatch:
    """Whole training images (used by the Gaussian families).

    Attributes:
        cameras: a batch of ``B`` cameras.
        images: ``[B, H, W, 3]`` targets composited on ``background``.
        alphas: ``[B, H, W]`` foreground masks, or ``None``.
        background: ``[3]``.
        indices: ``[B]`` indices of the images in the training split.
        extras: per-image inputs a method's data source adds (name -> ``[B, ...]`` tensor,
            e.g. an avatar's skeleton pose per frame); empty for plain image scenes.
    """

    cameras: Cameras
    images: Tensor
    alphas: Tensor | None
    background: Tensor
    indices: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class CoordinateBatch:
    """Samples of a tensor field (used by Einstein fields).

    Attributes:
        coordinates: ``[B, D]`` sample positions (e.g. ``(t, x, y, z)``).
        values: ``[B, ...]`` target tensor values at those positions.
        jacobians: optional ``[B, ..., D]`` target derivatives for Sobolev supervision.
    """

    coordinates: Tensor
    values: Tensor
    jacobians: Tensor | None = None


# ---------------------------------------------------------------------------------- outputs
@dataclass
class RenderOutput:
    """A rendered image.

    Attributes:
        rgb: ``[H, W, 3]`` colour composited on the background.
        depth: ``[H, W]`` expected distance along the (unit) ray; 0 where nothing was hit.
        alpha: ``[H, W]`` accumulated opacity.
    """

    rgb: Tensor
    depth: Tensor
    alpha: Tensor


RENDER_MODES = ("rgb", "depth", "alpha")


@dataclass(frozen=True)
class BodyPose:
    """An explicit skeleton pose for a model driven by poses (:class:`DrivenByPoses`).

    Conventions of :mod:`tensorfield.fields.skeleton`: joints in the model's skeleton order
    (:meth:`DrivenByPoses.pose_skeleton`), local rotations about each joint, then the root
    transform (world from body).

    Attributes:
        rotations: ``[J, 3]`` axis-angle joint rotations (float64).
        root: ``[4, 4]`` world-from-body transform (float64).
    """

    rotations: Tensor
    root: Tensor

    def on(self, device: torch.device | str) -> BodyPose:
        return BodyPose(self.rotations.to(device), self.root.to(device))


@dataclass(frozen=True)
class RenderRequest:
    """One frame to render: the single request type of the CLI, the viewer and the exporters.

    Attributes:
        cameras: the cameras; ``index`` picks one.
        index: which camera of ``cameras``.
        background: ``[3]`` colour to composite on.
        time: normalised time in ``[0, 1]``; ``None`` (or ``nan``) = the camera's own time, which
            models without time (:class:`HasTime`) ignore.
        identity: the subject of a model with identities (:class:`HasIdentities`), else ``None``.
        frame: the pose / frame index of a model driven by per-frame inputs (avatars), else
            ``None``.
        pose: an explicit :class:`BodyPose` (a pose-sequence file, another subject's motion) that
            replaces ``frame``'s pose; read only by :class:`DrivenByPoses` models.
        mode: ``rgb``, ``depth`` or ``alpha`` (what :func:`tensorfield.engine.render.output_image`
            turns the :class:`RenderOutput` into; the model renders all three at once).
    """

    cameras: Cameras
    index: int = 0
    background: Tensor | None = None
    time: float | None = None
    identity: int | None = None
    frame: int | None = None
    mode: str = "rgb"
    pose: BodyPose | None = None

    def __post_init__(self) -> None:
        if self.mode not in RENDER_MODES:
            raise ValueError(f"unknown render mode '{self.mode}' (use one of {', '.join(RENDER_MODES)})")

    @property
    def camera_time(self) -> float | None:
        """The time to render at: ``time`` if finite, else the camera's own (``None`` if it has none)."""
        if self.time is not None and math.isfinite(float(self.time)):
            return float(self.time)
        own = float(self.cameras.times[self.index])
        return own if math.isfinite(own) else None

    def on(self, device: torch.device | str) -> RenderRequest:
        """The same request with cameras and background on ``device``."""
        background = self.background if self.background is not None else torch.ones(3)
        return RenderRequest(
            self.cameras.to(device), self.index, background.to(device), self.time, self.identity, self.frame, self.mode,
            self.pose.on(device) if self.pose is not None else None,
        )


@dataclass(frozen=True)
class SliceRequest:
    """A 2D slice of a field's values, for models without images (Einstein fields).

    The slice is the plane ``origin + u * axis_u + v * axis_v`` for ``u, v`` in ``[-1, 1]``
    sampled on a ``resolution x resolution`` grid (row ``i`` is ``v`` from +1 down to -1).

    Attributes:
        origin: ``[D]`` centre of the slice in the model's coordinates (e.g. ``(t, x, y, z)``).
        axis_u, axis_v: ``[D]`` half-extents of the two in-plane directions.
        resolution: samples per side.
        component: which scalar to show (model-defined name, e.g. ``"g_tt"`` or
            ``"kretschmann"``); empty = the model's default.
        time: normalised time in ``[0, 1]`` (``--time``) at which a model with time
            (:class:`HasTime`) or a time coordinate places the slice; ``None`` = the origin's own.
    """

    origin: tuple[float, ...]
    axis_u: tuple[float, ...]
    axis_v: tuple[float, ...]
    resolution: int = 128
    component: str = ""
    time: float | None = None

    def points(self) -> Tensor:
        """``[R, R, D]`` float64 sample coordinates."""
        origin = torch.tensor(self.origin, dtype=torch.float64)
        u_axis = torch.tensor(self.axis_u, dtype=torch.float64)
        v_axis = torch.tensor(self.axis_v, dtype=torch.float64)
        if not (origin.shape == u_axis.shape == v_axis.shape):
            raise ValueError("slice origin and axes must have the same length")
        steps = torch.linspace(-1.0, 1.0, self.resolution, dtype=torch.float64)
        v, u = torch.meshgrid(-steps, steps, indexing="ij")
        return origin + u[..., None] * u_axis + v[..., None] * v_axis


@dataclass
class StepOutput:
    """What :meth:`Field.training_step` returns.

    Attributes:
        loss: scalar to minimise (data term plus regularisers).
        metrics: detached scalars to log (``mse`` is turned into PSNR by the trainer).
    """

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ParamSurgery:
    """One parameter tensor replaced by another whose rows derive from it (densification).

    Gaussian models add, duplicate and remove Gaussians between steps; each per-Gaussian
    parameter (rows = Gaussians) is then replaced by a new ``nn.Parameter``. The optimiser must
    keep its moments for the Gaussians that survive and start the others from zero, as the
    original 3DGS code does (``cat_tensors_to_optimizer`` / ``_prune_optimizer``). A model
    describes that with ``rows``; the trainer applies it to the optimiser
    (:func:`tensorfield.engine.optim.apply_param_surgery`) without rebuilding it, so learning-rate
    schedules and the other parameters' state are untouched.

    Attributes:
        old: the parameter the optimiser currently holds.
        new: its replacement (already installed in the model); ``new.shape[1:] == old.shape[1:]``.
        rows: ``[new.shape[0]]`` int64: row ``i`` of ``new`` continues row ``rows[i]`` of ``old``
            (its per-element optimiser state, e.g. Adam's ``exp_avg`` / ``exp_avg_sq``, is
            gathered from there); ``-1`` marks a new row whose state starts at zero. All ``-1``
            resets the whole state (e.g. the opacity reset).
    """

    old: nn.Parameter
    new: nn.Parameter
    rows: Tensor


@dataclass
class HookResult:
    """What a hook changed, so the trainer can react.

    Attributes:
        rebuild_optimizer: the parameter tensors were replaced (e.g. grid upsampling); the trainer
            builds a new optimiser from :meth:`Field.param_groups` and restarts the decay.
        refilter_rays: the model can now reject more training rays (e.g. after the alpha mask
            shrank the bounding box); the trainer calls :meth:`Field.ray_filter`.
        surgery: parameters replaced row by row (densification, pruning, opacity reset); the
            trainer keeps the optimiser and moves each one's state to the new tensor
            (:class:`ParamSurgery`). Applied in order, so a later entry may take the ``new``
            of an earlier one as its ``old``; ignored when ``rebuild_optimizer`` is also set
            (the new optimiser starts from the current parameters anyway).
    """

    rebuild_optimizer: bool = False
    refilter_rays: bool = False
    surgery: tuple[ParamSurgery, ...] = ()

    def __or__(self, other: HookResult) -> HookResult:
        return HookResult(
            self.rebuild_optimizer or other.rebuild_optimizer,
            self.refilter_rays or other.refilter_rays,
            tuple(self.surgery) + tuple(other.surgery),
        )


@dataclass
class ParamGroup:
    """One optimiser parameter group with an exponential learning-rate schedule.

    The learning rate at ``k`` steps after the last optimiser (re)build is
    ``lr * decay_ratio ** (k / decay_steps)``.
    """

    name: str
    params: list[nn.Parameter]
    lr: float
    decay_ratio: float = 1.0
    decay_steps: int = 1


# ---------------------------------------------------------------------------------- the field
class Field(nn.Module, abc.ABC):
    """Base class of every model family.

    Subclasses set :attr:`batch_kind` and implement the abstract methods. Models whose parameter
    shapes change during training (grid upsampling, densification) override
    :meth:`shape_state` / :meth:`prepare_for_state` so checkpoints load into the right shapes.
    """

    batch_kind: ClassVar[BatchKind]
    #: Models with an inference cache (TensoRF's dense render grids) build and use it only while
    #: this is True. Worth it for a model rendered many times (viewer, ``render``, evaluation);
    #: the live viewer's training snapshots, each rendered a few times, turn it off.
    allow_render_cache: bool = True
    #: Whether the inference cache renders what the model itself renders (TensoRF's grids, to
    #: float rounding). Evaluation turns an approximate one (Strivec's baked density) off, so
    #: scores are of the model, not of its cache.
    render_cache_exact: ClassVar[bool] = True
    #: Whether rendering without the cache builds it anyway, for every frame (the Einstein
    #: field's Christoffel grid, which its lensed renders interpolate): the live viewer's
    #: snapshots then keep ``allow_render_cache``, so each snapshot builds it once, not per frame.
    render_cache_required: ClassVar[bool] = False
    #: A model that draws random numbers of its own (Gaussian splits, TensoRF's sample jitter)
    #: draws them from this generator, which the trainer checkpoints for exact resumes.
    generator: torch.Generator | None = None

    @abc.abstractmethod
    def param_groups(self) -> list[ParamGroup]:
        """Optimiser groups with their learning rates and schedules."""

    @abc.abstractmethod
    def training_step(self, batch, step: int) -> StepOutput:
        """Loss (and logged metrics) for one batch."""

    def adam_settings(self) -> tuple[tuple[float, float], float]:
        """``(betas, eps)`` of the Adam optimiser the trainer builds over :meth:`param_groups`
        (default: TensoRF's ``(0.9, 0.99)`` and torch's ``1e-8``)."""
        return (0.9, 0.99), 1e-8

    def optimizer_settings(self) -> tuple[str, dict]:
        """``(kind, keyword arguments)`` of the optimiser the trainer builds over
        :meth:`param_groups`: ``"adam"`` (default; betas and eps from :meth:`adam_settings`) or
        ``"soap"`` (pytorch-optimizer's SOAP, Vyas et al. 2024, with these keyword arguments)."""
        return "adam", {}

    # Hooks: defaults do nothing.
    def before_step(self, step: int) -> HookResult:
        """Called before the batch of ``step`` is drawn."""
        return HookResult()

    def after_step(self, step: int) -> HookResult:
        """Called after the optimiser step of ``step`` (upsampling, masks, densification).

        Gradients of ``step`` are still available here (the trainer clears them only before the
        next backward pass).
        """
        return HookResult()

    def ray_filter(self, origins: Tensor, directions: Tensor) -> Tensor:
        """``[R]`` bool: which training rays can see anything (ray-batch models)."""
        return torch.ones(origins.shape[0], dtype=torch.bool, device=origins.device)

    # Checkpoint support for models whose parameter shapes change.
    def shape_state(self) -> dict:
        """JSON-serialisable description of the current parameter shapes / structure."""
        return {}

    def prepare_for_state(self, shape_state: dict) -> None:
        """Reshape parameters and buffers to ``shape_state`` before ``load_state_dict``."""


# ---------------------------------------------------------------------------------- capabilities
# What a model can do beyond training is one of these optional protocols. The CLI, the viewer and
# the exporters test ``isinstance(model, Protocol)`` and nothing else; a family implements the
# methods of the capabilities it has (structural typing: no registration, no flags).
@runtime_checkable
class RendersViews(Protocol):
    """Renders camera views (radiance fields, Gaussians, avatars): ``render``, ``eval`` images."""

    def render_view(self, request: RenderRequest) -> RenderOutput:
        """Colour, depth and alpha of ``request``'s camera (without gradients)."""


@runtime_checkable
class ExportsDensityGrid(Protocol):
    """A density on a grid and a radiance to colour it: marching-cubes meshes (TensoRF, Strivec)."""

    def density_grid(self, resolution: tuple[int, int, int] | None = None) -> tuple[Tensor, Tensor]:
        """``alpha [X, Y, Z]`` (opacity of one step) over ``aabb [2, 3]``, and that box."""

    def radiance(self, points: Tensor, directions: Tensor) -> Tensor:
        """``[N, 3]`` colour leaving ``points [N, 3]`` along unit ``directions [N, 3]``."""


@runtime_checkable
class ExportsSplats(Protocol):
    """Gaussians in the standard 3DGS PLY layout (``export RUN splat``)."""

    def splat_attributes(self, time: float | None = None) -> SplatAttributes:
        """The Gaussians (dynamic models: the slice at normalised ``time``). Models with
        :class:`HasIdentities` also take ``identity`` and ``frame`` keywords, and
        :class:`DrivenByPoses` ones ``pose`` (a :class:`BodyPose`), as :class:`RenderRequest`."""


@runtime_checkable
class HasTime(Protocol):
    """A dynamic model: renders depend on :attr:`RenderRequest.time` (the viewer's time slider)."""

    def time_span(self) -> tuple[float, float]:
        """The normalised times the model was trained on (usually ``(0, 1)``)."""


@runtime_checkable
class HasIdentities(Protocol):
    """A model of several subjects driven by per-frame inputs (avatars): identity and frame choosers."""

    def num_identities(self) -> int:
        """How many subjects :attr:`RenderRequest.identity` can select."""

    def num_frames(self) -> int:
        """How many poses / frames :attr:`RenderRequest.frame` can select (0 = none)."""


@runtime_checkable
class DrivenByPoses(Protocol):
    """A model posed by a skeleton (avatars): :attr:`RenderRequest.pose` drives it with any pose."""

    def pose_skeleton(self, identity: int):
        """The :class:`~tensorfield.fields.skeleton.Skeleton` (joint names, parents, rest joints)
        of ``identity`` that a :class:`BodyPose` for it refers to."""


@runtime_checkable
class FitsIdentities(Protocol):
    """A model of several identities that can learn new ones with everything else frozen
    (``tensorfield fit-identity``, through the common trainer)."""

    def identity_fit_values(self, data) -> dict:
        """Config values of a run that fits new identities on top of this trained model (built
        from ``data``, its :class:`TrainingData`): e.g. the names of the rows it has."""

    def start_identity_fit(self, base) -> list[int]:
        """Take every trained value from ``base`` (this method's model trained on other
        identities), keep only this model's new identities trainable; returns their indices."""


@runtime_checkable
class ExportsSlices(Protocol):
    """Values on 2D slices of the model's domain (coordinate models: ``export RUN slice``)."""

    def slice_components(self) -> tuple[str, ...]:
        """Names :attr:`SliceRequest.component` accepts, the default first."""

    def default_slice(self) -> SliceRequest:
        """The slice shown when none is asked for (e.g. the ``z = 0`` plane at ``t = 0``)."""

    def field_slice(self, request: SliceRequest) -> Tensor:
        """``[R, R]`` float values of ``request.component`` on the slice."""


@dataclass(frozen=True)
class SliceDomain:
    """The coordinate box a model's slices may lie in.

    Attributes:
        coordinates: the ``D`` coordinate names (e.g. ``("t", "x", "y", "z")``).
        low, high: ``[D]`` the box's corners.
        time_axis: the coordinate that :attr:`SliceRequest.time` sets (not a plane axis), or ``None``.
    """

    coordinates: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    time_axis: int | None = None

    def axis_aligned(self, normal: int, offset: float, resolution: int = 128) -> SliceRequest:
        """The slice through the box's centre spanned by the two other non-time axes, at
        coordinate ``offset`` along axis ``normal`` (``u`` the lower-numbered axis, ``v`` the
        other); every other coordinate at the box's centre.

        Raises:
            ValueError: ``normal`` is the time axis or out of range, or fewer than three
                non-time axes.
        """
        axes = [i for i in range(len(self.coordinates)) if i != self.time_axis]
        if normal not in axes or len(axes) != 3:
            raise ValueError(f"slice normal {normal} is not one of the spatial axes {axes} of {self.coordinates}")
        u_axis, v_axis = (i for i in axes if i != normal)
        origin = [(lo + hi) / 2 for lo, hi in zip(self.low, self.high)]
        origin[normal] = float(offset)
        axis_u, axis_v = [0.0] * len(origin), [0.0] * len(origin)
        axis_u[u_axis] = (self.high[u_axis] - self.low[u_axis]) / 2
        axis_v[v_axis] = (self.high[v_axis] - self.low[v_axis]) / 2
        return SliceRequest(tuple(origin), tuple(axis_u), tuple(axis_v), resolution)


@runtime_checkable
class HasSliceDomain(Protocol):
    """A model whose slices can be placed anywhere in a coordinate box (the viewer's plane
    chooser: normal axis and offset)."""

    def slice_domain(self) -> SliceDomain:
        """The box, its coordinate names and which coordinate is time."""


@dataclass
class SplatAttributes:
    """Gaussians in the standard 3DGS PLY layout (what splat viewers read).

    Attributes:
        names: the ``F`` vertex property names in file order: ``x y z nx ny nz f_dc_0..2
            f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3`` (``f_rest`` channel-major: all
            red coefficients, then green, then blue; opacity a logit, scales logs, rotation
            ``(w, x, y, z)``).
        values: ``[N, F]`` float32.
    """

    names: list[str]
    values: Tensor


def capabilities(model) -> tuple[str, ...]:
    """Names of the capability protocols ``model`` implements (for ``tensorfield methods`` / docs)."""
    return tuple(
        protocol.__name__
        for protocol in (RendersViews, ExportsDensityGrid, ExportsSplats, HasTime, HasIdentities, DrivenByPoses, FitsIdentities, ExportsSlices)
        if isinstance(model, protocol)
    )


# ---------------------------------------------------------------------------------- data
# A method names the data it trains on (``MethodSpec.data``: a factory ``(config, path) ->
# TrainingData``). The trainer only ever talks to these two protocols, so an image scene, a
# sampled spacetime and an avatar capture are all trained, resumed and evaluated the same way.
@runtime_checkable
class BatchSource(Protocol):
    """Where each training step's batch comes from; its state is checkpointed for exact resumes."""

    def sample(self, batch_size: int, generator: torch.Generator):
        """The next batch (a :class:`RayBatch`, :class:`ImageBatch`, :class:`CoordinateBatch`, ...),
        on the training device, drawn with ``generator`` (the trainer's checkpointed CPU generator)."""

    def refilter(self, model: Field) -> tuple[int, int] | None:
        """React to :attr:`HookResult.refilter_rays`: ``(before, after)`` counts, or ``None``."""

    def state_dict(self) -> dict:
        """Tensors and numbers that make :meth:`sample` continue exactly after a resume."""

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""


class StatelessSource:
    """Base of batch sources whose batches depend on the generator alone (no cursor, no filter):
    nothing to refilter, nothing to checkpoint. Subclasses implement ``sample``."""

    def refilter(self, model: Field) -> None:
        """Nothing to filter: ``None`` (no event is logged)."""
        return None

    def state_dict(self) -> dict:
        """No state: every batch comes from the trainer's (checkpointed) generator."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Accept the empty state :meth:`state_dict` wrote.

        Raises:
            ValueError: ``state`` holds entries (it was written by another kind of source).
        """
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, but the checkpoint holds {sorted(state)}")


@runtime_checkable
class TrainingData(Protocol):
    """A typed scene a method trains on: what the model learns of it, batches and evaluation."""

    def scene_info(self) -> SceneInfo:
        """What the model is built from."""

    def batch_source(self, model: Field, device: torch.device) -> BatchSource:
        """A fresh batch source for ``model`` (e.g. rays already filtered by its ``ray_filter``)."""

    def eval_splits(self) -> tuple[str, ...]:
        """Splits :meth:`evaluate` accepts, the default (end-of-training) one first; may be empty."""

    def evaluate(self, model: Field, split: str, out_dir: Path | None, max_items: int = 0) -> dict:
        """Score ``model`` on ``split`` (no gradients; the trainer forks the RNG around it).

        Returns the means (``psnr``, ``ssim``... or a coordinate model's errors) and, optionally,
        ``per_image`` records; renders are written under ``out_dir`` when it is given.
        """


@runtime_checkable
class CameraData(Protocol):
    """Training data seen through cameras: what ``render --path``, orbits, TSDF meshes and the
    viewer's camera list need from it."""

    def split_cameras(self) -> dict[str, Cameras]:
        """Split name -> its cameras (``train`` first when present)."""

    def scene_box(self) -> Tensor:
        """``[2, 3]`` bounding box (orbit centre, point-cloud voxel size)."""

    def background_color(self) -> Tensor:
        """``[3]`` colour the targets are composited on."""


@runtime_checkable
class FrameCameraData(Protocol):
    """Data whose frames each come with the camera that filmed them (avatar videos): the camera
    ``render --frame`` / ``render --poses`` and the viewer's pose playback start from."""

    def frame_camera(self, identity: int | None = None, frame: int | None = None) -> Cameras:
        """One camera: the one that filmed global ``frame`` when given, else the one of
        ``identity``'s first frame (else of frame 0)."""

    def split_frames(self, split: str) -> Tensor:
        """``[V]`` global frames of ``split``, in the order of ``split_cameras()[split]``."""
