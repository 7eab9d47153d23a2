"""The contract between the common trainer (``engine``) and every model family (``fields``).

Three kinds of model share one trainer:

* **ray-batch** models (TensoRF, Strivec) consume random rays of the training images
  (:class:`RayBatch`) and are rendered by the shared ray marcher;
* **image-batch** models (4D Gaussians, MIGS avatars) consume whole images with their cameras
  (:class:`ImageBatch`) and are rendered by the shared rasteriser;
* **coordinate-batch** models (Einstein fields) learn a tensor field from samples of it
  (:class:`CoordinateBatch`), not from images.

A model declares its optimiser parameter groups (:class:`ParamGroup`, with learning rates and an
exponential schedule), turns a batch into a loss (:meth:`Field.training_step`), and reacts to
explicit hooks (:meth:`Field.before_step`, :meth:`Field.after_step`) whose :class:`HookResult`
tells the trainer what changed (new parameter tensors, a smaller training set, Gaussians added or
removed as :class:`ParamSurgery`). The trainer owns everything else: the loop, optimisers,
schedules, evaluation, logging and checkpoints.

Models whose number of primitives changes during training (Gaussian densification) never touch the
optimiser: ``after_step`` replaces the parameters and returns, per parameter, which old row each
new row continues (:class:`ParamSurgery`); the trainer carries the optimiser state over. The
gradients of the step just taken are still on the parameters (and on any tensor the model kept
from ``training_step``, e.g. screen-space means with ``retain_grad``) when ``after_step`` runs.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn


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
        cameras: a :class:`tensorfield.datasets.cameras.Cameras` batch of ``B`` cameras.
        images: ``[B, H, W, 3]`` targets composited on ``background``.
        alphas: ``[B, H, W]`` foreground masks, or ``None``.
        background: ``[3]``.
        indices: ``[B]`` indices of the images in the training split.
    """

    cameras: object
    images: Tensor
    alphas: Tensor | None
    background: Tensor
    indices: Tensor


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


@dataclass
class SceneInfo:
    """What a model needs to know about the scene at construction time.

    Attributes:
        aabb: ``[2, 3]`` scene bounding box (min, max corners).
        near, far: default ray distance range.
        is_dynamic: whether images carry different times.
        num_train_images: number of training images (per-image embeddings, etc.).
        points: optional ``[P, 3]`` initial point cloud (SfM points); ``points_rgb`` its colours.
        camera_centers: optional ``[C, 3]`` training camera positions (Gaussian models derive
            the scene extent from them, as 3DGS's ``getNerfppNorm``).
        source_format: the data layout it was loaded from (``"blender"``, ``"dnerf"``,
            ``"nerfstudio"``, ``"n3v"``; empty when not from a loader).
    """

    aabb: Tensor
    near: float
    far: float
    is_dynamic: bool = False
    num_train_images: int = 0
    points: Tensor | None = None
    points_rgb: Tensor | None = None
    camera_centers: Tensor | None = None
    source_format: str = ""


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

    @abc.abstractmethod
    def param_groups(self) -> list[ParamGroup]:
        """Optimiser groups with their learning rates and schedules."""

    @abc.abstractmethod
    def training_step(self, batch, step: int) -> StepOutput:
        """Loss (and logged metrics) for one batch."""

    @abc.abstractmethod
    def render_view(self, cameras, index: int, time: float | None, background: Tensor) -> RenderOutput:
        """Render camera ``index`` of ``cameras`` at ``time`` (``None`` = the camera's own)."""

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
