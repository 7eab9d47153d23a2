"""Kinematic trees, forward kinematics and linear blend skinning (LBS) for articulated avatars.

Conventions (SMPL's, which 3DGS-Avatar and MIGS drive through a skinning field):

* A :class:`Skeleton` has ``J`` joints ordered parents first: ``parents[0] = -1`` (the root) and
  ``parents[j] < j`` otherwise. The **rest pose** places joint ``j`` at ``rest_joints[j]`` with no
  rotation, i.e. its rest transform is :math:`T^{rest}_j = [I \\mid x_j]`.
* A **pose** is one local rotation per joint, ``R_j`` (axis-angle ``[..., J, 3]`` or matrices
  ``[..., J, 3, 3]``), rotating joint ``j``'s children about ``x_j`` in the parent's frame, plus an
  optional **root transform** ``M`` (``[..., 4, 4]``, world from body) applied after the chain:

  .. math::

      T_0 = M\\, [R_0 \\mid x_0], \\qquad
      T_j = T_{p(j)}\\, [R_j \\mid x_j - x_{p(j)}] \\quad (j > 0).

  ``T_j`` is joint ``j``'s world transform (:attr:`PosedSkeleton.joint_transforms`); its
  translation is the posed joint position.
* **Bone transforms** (the LBS convention) map rest space to posed space:
  :math:`G_j = T_j\\, (T^{rest}_j)^{-1} = T_j\\, [I \\mid -x_j]`, so the rest pose with ``M = I``
  gives :math:`G_j = I` for every joint.
* **LBS** of a rest point ``x`` with weights :math:`w_j` (summing to 1):
  :math:`x' = \\sum_j w_j G_j x = A x + b` with the blended transform
  :math:`[A \\mid b] = \\sum_j w_j G_j`. A Gaussian's covariance follows the blended linear part,
  :math:`\\Sigma' = A \\Sigma A^T`, i.e. its rotation matrix becomes :math:`A R` (3DGS-Avatar's
  ``rotation_precomp``; ``A`` is a rotation only where one bone dominates).
* Which transform moves which part of the body: the segment from joint ``p`` to its child ``c``
  (a "bone") turns with ``R_p``, so it follows :math:`G_p`. A leaf joint (head, wrists, toes)
  drives what lies around its own position. :func:`nearest_bone_weights` uses exactly this map.

Validation raises :class:`ValueError` with a one-line message: parents that are not a tree in
order, a rotation tensor with a joint missing, a NaN rotation (naming the frame and the joint).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tensorfield.cuda.rasterize import quat_to_rotmat
from torch import Tensor

RotationFormat = Literal["axis_angle", "matrix"]


# ====================================================================== rotations
def skew(vectors: Tensor) -> Tensor:
    """``[..., 3] -> [..., 3, 3]`` cross-product matrices, :math:`[v]_\\times u = v \\times u`."""
    x, y, z = vectors.unbind(-1)
    zero = torch.zeros_like(x)
    rows = (zero, -z, y, z, zero, -x, -y, x, zero)
    return torch.stack(rows, dim=-1).reshape(*vectors.shape[:-1], 3, 3)


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues' formula: ``[..., 3]`` rotation vectors -> ``[..., 3, 3]`` rotation matrices.

    .. math:: R = I + \\frac{\\sin\\theta}{\\theta} K + \\frac{1 - \\cos\\theta}{\\theta^2} K^2,
              \\qquad K = [v]_\\times, \\ \\theta = \\|v\\|,

    with the Taylor series of the two coefficients below :math:`\\theta^2 = 10^{-8}`, so the
    value and the gradient are exact and finite at :math:`v = 0`.
    """
    theta2 = (axis_angle * axis_angle).sum(-1)
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    sine_term = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    cosine_term = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / safe2)
    k = skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sine_term[..., None, None] * k + cosine_term[..., None, None] * (k @ k)


def rigid_transform(rotation: Tensor, translation: Tensor) -> Tensor:
    """``[..., 4, 4]`` homogeneous matrices :math:`[R \\mid t]` from ``[..., 3, 3]`` and ``[..., 3]``."""
    batch = torch.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
    top = torch.cat(
        [rotation.expand(*batch, 3, 3), translation.expand(*batch, 3)[..., None]], dim=-1
    )
    bottom = torch.zeros(*batch, 1, 4, dtype=top.dtype, device=top.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def translation_matrix(translation: Tensor) -> Tensor:
    """``[..., 4, 4]`` pure translations."""
    eye = torch.eye(3, dtype=translation.dtype, device=translation.device)
    return rigid_transform(eye, translation)


# ====================================================================== validation
def validate_parents(parents: Sequence[int], num_joints: int | None = None) -> None:
    """Check that ``parents`` is a tree ordered parents first (raises ``ValueError``).

    Rules: at least one joint; ``parents[0] == -1`` and no other root; ``0 <= parents[j] < j``
    for ``j > 0`` (so every joint's parent comes before it and there is no cycle); and, when
    ``num_joints`` is given, one entry per joint.
    """
    parents = list(parents)
    if not parents:
        raise ValueError("skeleton has no joints")
    if num_joints is not None and len(parents) != num_joints:
        raise ValueError(f"parents has {len(parents)} entries but there are {num_joints} joints")
    for j, parent in enumerate(parents):
        if isinstance(parent, bool) or not isinstance(parent, (int, np.integer)):
            raise ValueError(f"parents[{j}] must be an integer, got {parent!r}")  # noqa: TRY004 - bad data, one error type
        if j == 0 and parent != -1:
            raise ValueError(f"parents[0] must be -1 (joint 0 is the root), got {parent}")
        if j > 0 and parent == -1:
            raise ValueError(f"joint {j} has parent -1: only joint 0 may be the root (not a tree)")
        if j > 0 and not 0 <= parent < j:
            raise ValueError(
                f"parents[{j}] = {parent} is not an earlier joint (joints must be ordered parents first)"
            )


def check_rotations(
    rotations: Tensor,
    num_joints: int,
    rotation_format: RotationFormat = "axis_angle",
    names: Sequence[str] | None = None,
) -> None:
    """Check a pose tensor's shape and finiteness (raises ``ValueError``).

    Args:
        rotations: ``[..., J, 3]`` axis-angle or ``[..., J, 3, 3]`` matrices.
        num_joints: ``J`` of the skeleton.
        rotation_format: ``"axis_angle"`` or ``"matrix"``.
        names: joint names for the messages.

    Raises:
        ValueError: ``rotations have 18 joints but the skeleton has 19``;
            ``rotation of joint 7 ('l_elbow') in frame 3 is NaN/inf`` (the frame is the flat
            index over the leading axes, omitted for a single pose).
    """
    if rotation_format not in ("axis_angle", "matrix"):
        raise ValueError(
            f"rotation_format must be 'axis_angle' or 'matrix', got {rotation_format!r}"
        )
    tail = (3,) if rotation_format == "axis_angle" else (3, 3)
    if rotations.ndim < 1 + len(tail) or tuple(rotations.shape[-len(tail) :]) != tail:
        shape = "[..., J, 3]" if rotation_format == "axis_angle" else "[..., J, 3, 3]"
        raise ValueError(
            f"{rotation_format} rotations must be {shape}, got {tuple(rotations.shape)}"
        )
    count = rotations.shape[-1 - len(tail)]
    if count != num_joints:
        raise ValueError(f"rotations have {count} joints but the skeleton has {num_joints}")
    flat = rotations.reshape(-1, num_joints, int(np.prod(tail)))
    bad = ~torch.isfinite(flat).all(-1)
    if bad.any():
        frame, joint = (int(i) for i in bad.nonzero()[0])
        label = f"joint {joint}" + (f" ({names[joint]!r})" if names is not None else "")
        where = f" in frame {frame}" if rotations.ndim > 1 + len(tail) else ""
        raise ValueError(f"rotation of {label}{where} is NaN/inf")


# ====================================================================== skeleton
@dataclass
class PosedSkeleton:
    """Forward kinematics of one or more poses.

    Attributes:
        joint_transforms: ``[..., J, 4, 4]`` world transforms ``T_j`` of the joints.
        bone_transforms: ``[..., J, 4, 4]`` LBS transforms ``G_j = T_j (T_j^rest)^{-1}``.
        joints: ``[..., J, 3]`` posed joint positions (translations of ``T_j``).
    """

    joint_transforms: Tensor
    bone_transforms: Tensor
    joints: Tensor


class Skeleton:
    """A kinematic tree with a rest pose.

    Args:
        parents: ``[J]`` parent index per joint, ``-1`` for the root (see :func:`validate_parents`).
        rest_joints: ``[J, 3]`` rest positions (any array-like; kept as float64).
        names: ``[J]`` distinct joint names (default ``joint_0 ... joint_{J-1}``).

    Raises:
        ValueError: bad parents, rest joints of the wrong shape or not finite, names of the wrong
            count or repeated.
    """

    def __init__(
        self,
        parents: Sequence[int],
        rest_joints: Tensor | np.ndarray | Sequence[Sequence[float]],
        names: Sequence[str] | None = None,
    ):
        rest = torch.as_tensor(np.asarray(rest_joints, dtype=np.float64) if not isinstance(rest_joints, Tensor)
                               else rest_joints.detach().cpu().to(torch.float64))  # fmt: skip
        if rest.ndim != 2 or rest.shape[1] != 3:
            raise ValueError(f"rest joints must be [J, 3], got {tuple(rest.shape)}")
        validate_parents(parents, rest.shape[0])
        if not torch.isfinite(rest).all():
            joint = int((~torch.isfinite(rest).all(-1)).nonzero()[0])
            raise ValueError(f"rest position of joint {joint} is NaN/inf")
        names = (
            [f"joint_{j}" for j in range(rest.shape[0])]
            if names is None
            else [str(n) for n in names]
        )
        if len(names) != rest.shape[0]:
            raise ValueError(f"{len(names)} joint names for {rest.shape[0]} joints")
        if len(set(names)) != len(names):
            repeated = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"joint name {repeated!r} appears more than once")
        self.parents: tuple[int, ...] = tuple(int(p) for p in parents)
        self.rest_joints: Tensor = rest
        self.names: tuple[str, ...] = tuple(names)

    # ------------------------------------------------------------------ structure
    @property
    def num_joints(self) -> int:
        """``J``."""
        return len(self.parents)

    def index(self, name: str) -> int:
        """Index of the joint called ``name`` (``ValueError`` naming it when absent)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"skeleton has no joint {name!r}") from None

    def children(self, joint: int) -> list[int]:
        """Joints whose parent is ``joint``."""
        return [j for j, p in enumerate(self.parents) if p == joint]

    def bones(self) -> list[tuple[int, int]]:
        """``(parent, child)`` pairs, one per non-root joint, in joint order."""
        return [(p, j) for j, p in enumerate(self.parents) if p >= 0]

    def rest_transforms(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """``[J, 4, 4]`` rest transforms :math:`[I \\mid x_j]`."""
        return translation_matrix(self.rest_joints.to(dtype))

    def to_dict(self) -> dict:
        """JSON-ready ``{"names", "parents", "rest_joints"}``."""
        return {
            "names": list(self.names),
            "parents": list(self.parents),
            "rest_joints": self.rest_joints.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Skeleton:
        """Inverse of :meth:`to_dict` (``names`` optional)."""
        return cls(data["parents"], data["rest_joints"], data.get("names"))

    # ------------------------------------------------------------------ kinematics
    def forward_kinematics(
        self,
        rotations: Tensor,
        root: Tensor | None = None,
        *,
        rotation_format: RotationFormat = "axis_angle",
    ) -> PosedSkeleton:
        """World joint and bone transforms of ``rotations`` (module docstring).

        Args:
            rotations: ``[..., J, 3]`` axis-angle (``rotation_format="axis_angle"``) or
                ``[..., J, 3, 3]`` matrices (``"matrix"``), local to each joint.
            root: optional ``[..., 4, 4]`` world-from-body transform (broadcast over the batch).
            rotation_format: how ``rotations`` are given.

        Returns:
            :class:`PosedSkeleton` in ``rotations``' dtype and device; differentiable w.r.t.
            ``rotations`` and ``root``.
        """
        check_rotations(rotations, self.num_joints, rotation_format, self.names)
        matrices = axis_angle_to_matrix(rotations) if rotation_format == "axis_angle" else rotations
        rest = self.rest_joints.to(matrices.dtype).to(matrices.device)
        offsets = rest.clone()
        parent_index = torch.tensor([max(p, 0) for p in self.parents], device=rest.device)
        offsets[1:] = rest[1:] - rest[parent_index[1:]]
        local = rigid_transform(matrices, offsets)  # [..., J, 4, 4]
        if root is not None:
            if root.shape[-2:] != (4, 4):
                raise ValueError(f"root transform must be [..., 4, 4], got {tuple(root.shape)}")
            if not torch.isfinite(root).all():
                raise ValueError("root transform holds NaN/inf")
            local_root = root.to(matrices.dtype) @ local[..., 0, :, :]
        else:
            local_root = local[..., 0, :, :]
        world = [local_root]
        for j in range(1, self.num_joints):
            world.append(world[self.parents[j]] @ local[..., j, :, :])
        joint_transforms = torch.stack(world, dim=-3)
        inverse_rest = translation_matrix(-rest)  # [J, 4, 4]
        bone_transforms = joint_transforms @ inverse_rest
        return PosedSkeleton(joint_transforms, bone_transforms, joint_transforms[..., :3, 3])

    def bone_transforms(
        self,
        rotations: Tensor,
        root: Tensor | None = None,
        *,
        rotation_format: RotationFormat = "axis_angle",
    ) -> Tensor:
        """``[..., J, 4, 4]`` LBS transforms (:attr:`PosedSkeleton.bone_transforms`)."""
        return self.forward_kinematics(
            rotations, root, rotation_format=rotation_format
        ).bone_transforms


# ====================================================================== skinning
@dataclass
class SkinnedPoints:
    """Result of :func:`linear_blend_skinning`.

    Attributes:
        points: ``[N, 3]`` posed points :math:`A_i x_i + b_i`.
        linear: ``[N, 3, 3]`` blended linear parts :math:`A_i = \\sum_j w_{ij} R_j`.
        translation: ``[N, 3]`` blended translations :math:`b_i = \\sum_j w_{ij} t_j`.
    """

    points: Tensor
    linear: Tensor
    translation: Tensor


def linear_blend_skinning(
    points: Tensor, weights: Tensor, bone_transforms: Tensor
) -> SkinnedPoints:
    """Pose rest ``points`` by blending the bone transforms with per-point ``weights``.

    .. math:: [A_i \\mid b_i] = \\sum_j w_{ij} G_j, \\qquad x'_i = A_i x_i + b_i.

    Weights are used as given (normalise them beforehand; :func:`nearest_bone_weights` does).

    Args:
        points: ``[N, 3]`` rest positions.
        weights: ``[N, J]`` skinning weights.
        bone_transforms: ``[J, 4, 4]`` (or ``[J, 3, 4]``) transforms ``G_j``.

    Returns:
        :class:`SkinnedPoints`; differentiable w.r.t. all three inputs.
    """
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be [N, 3], got {tuple(points.shape)}")
    if (
        bone_transforms.ndim != 3
        or bone_transforms.shape[-1] != 4
        or bone_transforms.shape[-2] not in (3, 4)
    ):
        raise ValueError(f"bone transforms must be [J, 4, 4], got {tuple(bone_transforms.shape)}")
    if weights.shape != (points.shape[0], bone_transforms.shape[0]):
        raise ValueError(
            f"weights must be [{points.shape[0]}, {bone_transforms.shape[0]}] (points x bones), "
            f"got {tuple(weights.shape)}"
        )
    top = bone_transforms[:, :3, :].reshape(bone_transforms.shape[0], 12)
    blended = (weights @ top).reshape(-1, 3, 4)
    linear, translation = blended[:, :, :3], blended[:, :, 3]
    posed = (linear @ points[:, :, None])[:, :, 0] + translation
    return SkinnedPoints(posed, linear, translation)


def skin_orientations(linear: Tensor, quats: Tensor) -> Tensor:
    """``[N, 3, 3]``: Gaussian rotations :math:`A_i R(q_i)` after skinning.

    With :math:`\\Sigma = R S S^T R^T`, the posed covariance :math:`A \\Sigma A^T` equals
    :math:`(A R) S S^T (A R)^T`, so ``A R`` takes the place of the rotation in the covariance
    (exactly a rotation wherever one bone's weight is 1; otherwise use it as
    the matrix ``M`` of :math:`\\Sigma' = M S S^T M^T`).

    Args:
        linear: ``[N, 3, 3]`` from :attr:`SkinnedPoints.linear`.
        quats: ``[N, 4]`` ``(w, x, y, z)`` rest orientations (normalised here).
    """
    return linear @ quat_to_rotmat(quats)


def point_segment_distance(points: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """``[N, S]`` Euclidean distance from ``points [N, 3]`` to segments ``start -> end`` ``[S, 3]``.

    :math:`d = \\| x - (a + h (b - a)) \\|` with :math:`h = \\operatorname{clamp}((x - a) \\cdot
    (b - a) / \\|b - a\\|^2, 0, 1)`; a zero-length segment is the point ``a``.
    """
    axis = end - start  # [S, 3]
    length2 = (axis * axis).sum(-1)
    offset = points[:, None, :] - start[None]  # [N, S, 3]
    h = ((offset * axis).sum(-1) / length2.clamp_min(1e-30)).clamp(0.0, 1.0)
    return (offset - h[..., None] * axis).norm(dim=-1)


def bone_distances(points: Tensor, skeleton: Skeleton) -> Tensor:
    """``[N, J]``: distance of each point to the body part that joint ``j`` drives (rest pose).

    Joint ``j`` drives the segments from itself to each of its children; a leaf joint drives
    the point at its own position. The distance to joint ``j`` is the smallest over its segments.
    """
    rest = skeleton.rest_joints.to(points.dtype).to(points.device)
    segments = [(j, c) for j in range(skeleton.num_joints) for c in (skeleton.children(j) or [j])]
    owner = torch.tensor([j for j, _ in segments], device=points.device)
    start = rest[owner]
    end = rest[torch.tensor([c for _, c in segments], device=points.device)]
    distance = point_segment_distance(points, start, end)  # [N, S]
    out = torch.full(
        (points.shape[0], skeleton.num_joints),
        float("inf"),
        dtype=points.dtype,
        device=points.device,
    )
    return out.scatter_reduce(
        1, owner.expand(points.shape[0], -1), distance, reduce="amin", include_self=True
    )


def nearest_bone_weights(points: Tensor, skeleton: Skeleton, temperature: float) -> Tensor:
    """Initial skinning weights: a softmin over the distances to the bones.

    .. math:: w_{ij} = \\frac{\\exp(-d_{ij} / \\tau)}{\\sum_l \\exp(-d_{il} / \\tau)}

    with :math:`d_{ij}` from :func:`bone_distances` (the segments joint ``j`` drives, in the rest
    pose) and the temperature :math:`\\tau` a length: a point whose nearest bone is closer than
    the second nearest by several :math:`\\tau` gets weight ~1 on it; points near a joint, at
    similar distances to two bones, are blended. Rows sum to 1.

    Args:
        points: ``[N, 3]`` rest positions.
        skeleton: the tree and its rest joints.
        temperature: :math:`\\tau > 0`, in the units of the points (e.g. 2% of the body height).

    Returns:
        ``[N, J]`` weights.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.softmax(-bone_distances(points, skeleton) / temperature, dim=-1)
