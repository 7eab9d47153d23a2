"""Where Strivec puts its local tensors: voxelised geometry, one voxel size per scale.

Strivec (Gao et al., ICCV 2023, Sec. 3.3 "Initialization") places the tensors of each scale at
the centres of the occupied voxels of a coarse geometry voxelised at that scale's spacing (the
official lego config: ``vox_range`` 0.4 / 0.2 / 0.1 with half-extents 0.3 / 0.15 / 0.075, so
neighbouring cubes overlap by half a voxel). The geometry is a point cloud: SfM points when the
data has them, else the vertices of a coarse density grid whose alpha exceeds a threshold (the
official code takes DVGO's coarse stage; :class:`~tensorfield.fields.strivec.Strivec` trains its
own coarse grid as the first phase of the same run). Voxels are anchored at the cloud's lower
corner (official ``construct_voxrange_points_mean`` with ``vox_center``), so only voxels that
hold points get a tensor: empty space gets none.

Sizes are given in NeRF-Synthetic units and scaled by :func:`scene_scale` (the box's mean side
over 3, the side of the Blender box ``[-1.5, 1.5]^3``).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Side of the NeRF-Synthetic box in which the paper's sizes are given.
SYNTHETIC_BOX_SIDE = 3.0


def scene_scale(aabb: Tensor) -> float:
    """Mean side of ``aabb [2, 3]`` over :data:`SYNTHETIC_BOX_SIDE` (1 for the Blender box)."""
    return float((aabb[1] - aabb[0]).float().mean()) / SYNTHETIC_BOX_SIDE


def voxel_centres(points: Tensor, voxel_size: float) -> Tensor:
    """Centres ``[T, 3]`` of the voxels of side ``voxel_size`` that hold at least one point.

    The voxel grid starts at the cloud's lower corner ``min(points)``: voxel ``v`` (integer
    ``[3]``) spans ``min + v * size`` to ``min + (v + 1) * size``, and its centre is
    ``min + (v + 1/2) * size``. Centres come sorted by voxel (x-major), one per occupied voxel.

    Args:
        points: ``[P, 3]`` the geometry (``P >= 1``).
        voxel_size: the voxel side, > 0.
    """
    if points.shape[0] == 0:
        return points.new_zeros(0, 3)
    points = points.float()
    origin = points.amin(0)
    voxels = torch.unique(torch.floor((points - origin) / voxel_size).long(), dim=0)
    return origin + (voxels.float() + 0.5) * voxel_size


def points_in_box(points: Tensor, aabb: Tensor) -> Tensor:
    """The rows of ``points [P, 3]`` inside the closed box ``aabb [2, 3]``."""
    inside = ((points >= aabb[0]) & (points <= aabb[1])).all(-1)
    return points[inside]


def occupied_vertices(alpha: Tensor, aabb: Tensor, threshold: float) -> Tensor:
    """World positions ``[P, 3]`` of the vertices of a dense ``alpha [X, Y, Z]`` above ``threshold``.

    Vertex ``(i, j, k)`` sits at ``aabb[0] + (i, j, k) / (shape - 1) * size`` (the grids'
    ``align_corners`` convention; official ``get_density_pnts`` keeps ``alpha > 1e-4``).
    """
    index = (alpha > threshold).nonzero().to(aabb)
    size = torch.tensor(tuple(alpha.shape), dtype=aabb.dtype, device=aabb.device) - 1
    return aabb[0] + index / size.clamp_min(1) * (aabb[1] - aabb[0])


def place_tensors(points: Tensor, aabb: Tensor, voxel_sizes: list[float]) -> list[Tensor]:
    """Centres ``[T_l, 3]`` of every scale ``l`` from ``points [P, 3]`` (voxel sizes already scaled).

    Points outside ``aabb`` are ignored (SfM outliers, far background).
    """
    inside = points_in_box(points.float(), aabb.float())
    return [voxel_centres(inside, size) for size in voxel_sizes]
