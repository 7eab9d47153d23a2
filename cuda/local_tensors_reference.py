"""Brute-force float64 reference of :mod:`tensorfield.cuda.local_tensors`, for tests.

Every tensor of the scale is tested against every sample with explicit distances (no index),
its vectors are interpolated at every sample by the textbook formula, and the ``K`` nearest
containing tensors are chosen by a full sort of every tensor's distance. Obviously right and slow: ``O(S T)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tensorfield.cuda.local_tensors import DISTANCE_EPS


def interpolate_reference(line: Tensor, offset: Tensor, half_extent: float) -> Tensor:
    """``[S, T, R]`` value of every tensor's vector ``line [T, V, R]`` at offsets ``[S, T]``.

    Vertex ``i`` sits at ``-h + i * 2h / (V - 1)``; between vertices ``i`` and ``i + 1`` the value
    is ``(1 - f) v_i + f v_{i+1}`` with ``f`` the fractional position (the last cell is closed).
    """
    cells = line.shape[1] - 1
    unit = 2.0 * half_extent / cells
    position = (offset.double() + half_extent) / unit
    lower = torch.floor(position).clamp(0, cells - 1)
    frac = position - lower
    lower = lower.long()
    tensors = torch.arange(line.shape[0])[None, :].expand_as(lower)
    left = line.double()[tensors, lower]  # [S, T, R]
    right = line.double()[tensors, lower + 1]
    return left * (1 - frac)[..., None] + right * frac[..., None]


def aggregate_reference(
    points: Tensor, centres: Tensor, half_extent: float, lines: tuple[Tensor, Tensor, Tensor], k: int
) -> Tensor:
    """``[S, R]`` float64 aggregated features of one scale (see the module docstring of
    :mod:`tensorfield.cuda.local_tensors` for the formula); differentiable in ``lines``."""
    points, centres = points.double(), centres.double()
    num, components = points.shape[0], lines[0].shape[2]
    if centres.shape[0] == 0:
        return torch.zeros(num, components, dtype=torch.float64)
    offsets = points[:, None, :] - centres[None, :, :]  # [S, T, 3]
    distance = torch.sqrt((offsets**2).sum(-1))
    contained = (offsets.abs() <= half_extent).all(-1)
    values = torch.ones(num, centres.shape[0], components, dtype=torch.float64)
    for axis in range(3):
        values = values * interpolate_reference(lines[axis], offsets[..., axis], half_extent)
    # rank of every tensor among the sample's containing ones, nearest first (a full sort)
    order = torch.argsort(distance.masked_fill(~contained, float("inf")), dim=1)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
    chosen = contained & (rank < k)
    weights = torch.where(chosen, 1.0 / (distance + DISTANCE_EPS), torch.zeros_like(distance))
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
    return torch.einsum("st,str->sr", weights, values)
