"""Sparse local CP tri-vector tensors (Strivec): neighbour lookup and feature aggregation.

One *scale* is a set of ``T`` axis-aligned cubes of half-extent ``h`` centred at ``c_t``; each
holds, per component ``r``, three vectors ``v^x_t, v^y_t, v^z_t`` of ``V = n + 1`` values on the
vertices ``-h + i 2h / n`` (``i = 0..n``) of its local axes (the official layout: ``n``
"local dims" cells, ``n + 1`` vertices). For a point ``p``, with ``N_K(p)`` the (at most) ``K``
tensors nearest to ``p`` among those whose closed cube contains it,

.. math::

    f_r(p) = \\frac{\\sum_{t \\in N_K(p)} w_t\\, \\prod_{a \\in \\{x,y,z\\}} v^a_{t,r}\\big(p_a - c_{t,a}\\big)}
                  {\\max\\big(1, \\sum_{t \\in N_K(p)} w_t\\big)},\\qquad
    w_t = \\frac{1}{\\|p - c_t\\|_2 + 10^{-6}}

where ``v(.)`` is linear interpolation between vertices (Strivec, Gao et al. ICCV 2023, Sec. 3.2
Eq. 4-6; the official ``agg_tensoRF_at_samples`` divides by the weight sum clamped at 1). A point
inside no cube gets 0.

The lookup goes through a uniform grid of cells of side ``h`` over the scale's cubes
(:class:`LocalTensorIndex`): each cell lists the tensors whose cube meets it (at most
``M``, a small number fixed by how much the cubes overlap), so a query reads its cell's ``M``
candidates, tests containment and keeps the ``K`` nearest, all vectorised; its memory is
``samples x M`` during the test and ``samples x K`` after (no per-tensor term). Aggregation
compacts the (sample, tensor) pairs that exist, gathers the two vertices per axis of each pair,
and scatters the weighted products back (``index_add``), in one autograd node whose backward
scatters the vectors' gradients with ``index_add_`` too. The float64 brute-force reference is :mod:`tensorfield.cuda.local_tensors_reference`.

Differences from the official CUDA kernels, deliberate: the ``K`` neighbours are the nearest
*to the sample* among the cubes that contain it (the official code picks, per cell of a fine
global grid, the ``K`` tensors nearest to the cell centre whose cube grown by half a cell
contains that centre, so a sample can use a tensor whose cube it lies just outside, with linearly
extrapolated vectors); here a tensor never contributes outside its cube, so no extrapolation
happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from tensorfield.cuda import local_tensors_native

#: Added to the distance before inverting it (official ``agg_weight_func``, ``linear``).
DISTANCE_EPS = 1e-6


@dataclass
class LocalTensorIndex:
    """Uniform grid index of the cubes of one scale.

    Attributes:
        centres: ``[T, 3]`` cube centres.
        half_extent: ``h``, half the side of every cube.
        origin: ``[3]`` lower corner of the grid (of the cubes' union box).
        cell: side of a grid cell (``h``).
        shape: ``(X, Y, Z)`` cells.
        table: ``[X * Y * Z, M]`` int64 tensor ids per cell (x-major), ``-1`` padded.
    """

    centres: Tensor
    half_extent: float
    origin: Tensor
    cell: float
    shape: tuple[int, int, int]
    table: Tensor

    @classmethod
    def build(cls, centres: Tensor, half_extent: float) -> LocalTensorIndex:
        """Index ``centres [T, 3]`` (cubes of half-extent ``half_extent``); ``T`` may be 0."""
        centres = centres.detach()
        device = centres.device
        h = float(half_extent)
        if centres.shape[0] == 0:
            return cls(centres, h, torch.zeros(3, device=device), h, (1, 1, 1), torch.full((1, 1), -1, dtype=torch.long, device=device))
        lower = centres.amin(0) - h
        upper = centres.amax(0) + h
        # one cell more than the span: a point on the upper face still has a cell
        shape = tuple(int(v) for v in torch.floor((upper - lower) / h).long().cpu() + 1)
        first = _cell_coords(centres - h, lower, h, shape)  # [T, 3] first cell met per axis
        last = _cell_coords(centres + h, lower, h, shape)
        # a cube of side 2h meets at most 3 cells of side h per axis
        offsets = torch.stack(torch.meshgrid(*[torch.arange(3, device=device)] * 3, indexing="ij"), -1).reshape(-1, 3)
        cells = first[:, None, :] + offsets[None]  # [T, 27, 3]
        keep = (cells <= last[:, None, :]).all(-1)
        tensor_ids = torch.arange(centres.shape[0], device=device)[:, None].expand(-1, 27)[keep]
        flat = _flatten(cells[keep], shape)
        order = torch.argsort(flat, stable=True)
        flat, tensor_ids = flat[order], tensor_ids[order]
        counts = torch.bincount(flat, minlength=shape[0] * shape[1] * shape[2])
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(flat.shape[0], device=device) - starts[flat]
        width = int(counts.max())
        table = torch.full((shape[0] * shape[1] * shape[2], width), -1, dtype=torch.long, device=device)
        table[flat, rank] = tensor_ids
        return cls(centres, h, lower, h, shape, table)

    @property
    def num_tensors(self) -> int:
        return int(self.centres.shape[0])

    @property
    def max_candidates(self) -> int:
        """``M``: the most tensors any cell lists."""
        return int(self.table.shape[1])


def _cell_coords(points: Tensor, origin: Tensor, cell: float, shape) -> Tensor:
    coords = torch.floor((points - origin) / cell).long()
    upper = torch.tensor(shape, device=points.device) - 1
    return torch.minimum(coords.clamp_min(0), upper)


def _flatten(coords: Tensor, shape) -> Tensor:
    return (coords[..., 0] * shape[1] + coords[..., 1]) * shape[2] + coords[..., 2]


@dataclass
class Neighbours:
    """The (sample, tensor) pairs of one scale that take part in the aggregation.

    Attributes:
        samples: ``[P]`` int64 sample index of each pair.
        tensors: ``[P]`` int64 tensor index.
        offsets: ``[P, 3]`` ``p - c_t`` (inside ``[-h, h]^3``).
        weights: ``[P]`` normalised weights ``w_t / max(1, sum w)``.
        num_samples: ``S``.
    """

    samples: Tensor
    tensors: Tensor
    offsets: Tensor
    weights: Tensor
    num_samples: int


def find_neighbours(index: LocalTensorIndex, points: Tensor, k: int) -> Neighbours:
    """The ``K`` nearest containing tensors of each of ``points [S, 3]`` and their weights.

    Args:
        index: the scale's :class:`LocalTensorIndex`.
        points: ``[S, 3]`` world positions (no gradient flows to them).
        k: ``K``, the most tensors a sample aggregates.

    Returns:
        :class:`Neighbours` (pairs ordered by sample, then by distance).
    """
    points = points.detach()
    num = points.shape[0]
    device = points.device
    if index.num_tensors == 0 or num == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Neighbours(empty, empty, points.new_zeros(0, 3), points.new_zeros(0), num)
    centres = index.centres.to(points)
    origin = index.origin.to(points)
    found = local_tensors_native.neighbours(points, origin, index.cell, index.shape, index.table, centres, index.half_extent, k)
    if found is not None:
        ids, distance = found
        valid = ids >= 0
        weights = torch.where(valid, 1.0 / (distance + DISTANCE_EPS), torch.zeros_like(distance))
        weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
        sample_ids, slot_ids = valid.nonzero(as_tuple=True)
        tensors = ids[sample_ids, slot_ids]
        return Neighbours(sample_ids, tensors, points[sample_ids] - centres[tensors], weights[sample_ids, slot_ids], num)
    coords = torch.floor((points - origin) / index.cell).long()
    shape = torch.tensor(index.shape, device=device)
    inside_grid = ((coords >= 0) & (coords < shape)).all(-1)
    flat = _flatten(torch.minimum(coords.clamp_min(0), shape - 1), index.shape)
    candidates = index.table[flat]  # [S, M]
    candidates = torch.where(inside_grid[:, None], candidates, torch.full_like(candidates, -1))
    offsets = points[:, None, :] - centres[candidates.clamp_min(0)]  # [S, M, 3]
    h = index.half_extent
    contained = (candidates >= 0) & (offsets.abs() <= h).all(-1)
    distance = offsets.norm(dim=-1).masked_fill(~contained, float("inf"))
    if distance.shape[1] > k:
        distance, slot = torch.topk(distance, k, dim=1, largest=False, sorted=True)
        candidates = torch.gather(candidates, 1, slot)
        offsets = torch.gather(offsets, 1, slot[..., None].expand(-1, -1, 3))
    else:
        distance, slot = torch.sort(distance, dim=1)
        candidates = torch.gather(candidates, 1, slot)
        offsets = torch.gather(offsets, 1, slot[..., None].expand(-1, -1, 3))
    valid = torch.isfinite(distance)
    weights = torch.where(valid, 1.0 / (distance.clamp_max(1e30) + DISTANCE_EPS), torch.zeros_like(distance))
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
    sample_ids, slot_ids = valid.nonzero(as_tuple=True)
    return Neighbours(
        samples=sample_ids,
        tensors=candidates[sample_ids, slot_ids],
        offsets=offsets[sample_ids, slot_ids],
        weights=weights[sample_ids, slot_ids],
        num_samples=num,
    )


def _vertex_rows(neighbours: Neighbours, cells: int, half_extent: float) -> tuple[Tensor, Tensor]:
    """Per axis, the flat row of the lower vertex (``[3, P]`` int64, into ``[T * V, R]``) and the
    fractional position ``[3, P]`` between it and the next one."""
    position = (neighbours.offsets.t() + half_extent) * (cells / (2.0 * half_extent))  # [3, P] in [0, cells]
    lower = torch.floor(position).long().clamp(0, cells - 1)
    frac = position - lower.to(position)
    return neighbours.tensors[None, :] * (cells + 1) + lower, frac


class _AggregateCP(torch.autograd.Function):
    """Gather, interpolate, multiply and scatter the CP tri-vectors of every pair in one node.

    On contiguous float32 CPU tensors both passes run in the native kernels
    (:mod:`tensorfield.cuda.local_tensors_native`, nothing but the inputs kept). Otherwise forward keeps the three interpolated ``[P, R]`` factors; backward scatters
    ``g * (product of the two others) * (1 - f, f)`` into the vectors with ``index_add_``
    (several times faster on the CPU than the ``index_put`` that autograd of an indexing uses).
    """

    @staticmethod
    def forward(ctx, reduce: bool, samples: Tensor, weights: Tensor, rows: Tensor, frac: Tensor, num_samples: int, *lines: Tensor) -> Tensor:
        ctx.reduce = reduce
        ctx.line_shapes = [line.shape for line in lines]
        ctx.native = lines[0].dtype == torch.float32 and local_tensors_native.usable(samples, weights, rows, frac, *lines)
        if ctx.native:
            ctx.save_for_backward(samples, weights, rows, frac, *lines)
            return local_tensors_native.cp_forward(samples, weights, rows, frac, lines, num_samples, reduce)
        factors = []
        for axis, line in enumerate(lines):
            table = line.reshape(-1, line.shape[2])
            lower = F.embedding(rows[axis], table)
            upper = F.embedding(rows[axis] + 1, table)
            factors.append(torch.lerp(lower, upper, frac[axis][:, None].to(line.dtype)))
        product = factors[0] * factors[1] * factors[2]
        if reduce:
            out = lines[0].new_zeros(num_samples).index_add_(0, samples, product.sum(1) * weights)
        else:
            out = lines[0].new_zeros(num_samples, product.shape[1]).index_add_(0, samples, product * weights[:, None])
        ctx.save_for_backward(samples, weights, rows, frac, *factors)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        if ctx.native:
            samples, weights, rows, frac, *lines = ctx.saved_tensors
            grads = local_tensors_native.cp_backward(samples, weights, rows, frac, lines, grad, ctx.reduce, ctx.needs_input_grad[6:9])
            return (None, None, None, None, None, None, *grads)
        samples, weights, rows, frac, *factors = ctx.saved_tensors
        picked = grad[samples]
        scaled = (picked * weights)[:, None] if ctx.reduce else picked * weights[:, None]
        grads = []
        for axis, shape in enumerate(ctx.line_shapes):
            if not ctx.needs_input_grad[6 + axis]:
                grads.append(None)
                continue
            others = [factors[a] for a in range(3) if a != axis]
            g = scaled * others[0] * others[1]
            f = frac[axis][:, None].to(g.dtype)
            table = g.new_zeros(shape[0] * shape[1], shape[2])
            table.index_add_(0, rows[axis], g - g * f)
            table.index_add_(0, rows[axis] + 1, g * f)
            grads.append(table.view(shape))
        return (None, None, None, None, None, None, *grads)


def _aggregate(neighbours: Neighbours, lines: tuple[Tensor, Tensor, Tensor], half_extent: float, reduce: bool) -> Tensor:
    components = lines[0].shape[2]
    if neighbours.samples.numel() == 0:
        shape = (neighbours.num_samples,) if reduce else (neighbours.num_samples, components)
        return lines[0].new_zeros(shape) + 0.0 * sum(line.sum() for line in lines)  # keeps the graph
    rows, frac = _vertex_rows(neighbours, lines[0].shape[1] - 1, half_extent)
    rows = rows.contiguous()  # [3, P] from a transposed view: the native kernels need it dense
    weights = neighbours.weights.to(lines[0].dtype).contiguous()
    frac = frac.to(lines[0].dtype).contiguous()
    lines = tuple(line.contiguous() for line in lines)
    return _AggregateCP.apply(reduce, neighbours.samples, weights, rows, frac, neighbours.num_samples, *lines)


def aggregate_features(neighbours: Neighbours, lines: tuple[Tensor, Tensor, Tensor], half_extent: float) -> Tensor:
    """``[S, R]`` aggregated component features :math:`f_r(p)` of one scale.

    Args:
        neighbours: from :func:`find_neighbours`.
        lines: the scale's ``(x, y, z)`` vectors, each ``[T, V, R]``.
        half_extent: ``h``.
    """
    return _aggregate(neighbours, lines, half_extent, reduce=False)


def aggregate_sum(neighbours: Neighbours, lines: tuple[Tensor, Tensor, Tensor], half_extent: float) -> Tensor:
    """``[S]`` :math:`\\sum_r f_r(p)` (the density feature of one scale)."""
    return _aggregate(neighbours, lines, half_extent, reduce=True)


def box_coverage(lower: Tensor, upper: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """``[X, Y, Z]`` bool: cells covered by at least one of the integer boxes ``[lower, upper)``.

    ``lower, upper`` are ``[B, 3]`` int64 cell ranges (clipped to the grid here). Linear in the
    number of boxes plus cells: +1/-1 at the 8 corners of every box (inclusion-exclusion) and a
    cumulative sum along each axis.
    """
    device = lower.device
    size = torch.tensor(shape, device=device)
    lower = torch.minimum(lower.clamp_min(0), size)
    upper = torch.minimum(upper.clamp_min(0), size)
    keep = (upper > lower).all(-1)
    lower, upper = lower[keep], upper[keep]
    counts = torch.zeros(shape[0] + 1, shape[1] + 1, shape[2] + 1, dtype=torch.int32, device=device)
    for corner in range(8):
        pick = [(corner >> axis) & 1 for axis in range(3)]
        x = upper[:, 0] if pick[0] else lower[:, 0]
        y = upper[:, 1] if pick[1] else lower[:, 1]
        z = upper[:, 2] if pick[2] else lower[:, 2]
        sign = -1 if sum(pick) % 2 else 1
        flat = (x * (shape[1] + 1) + y) * (shape[2] + 1) + z
        counts.view(-1).index_add_(0, flat, torch.full_like(flat, sign, dtype=torch.int32))
    counts = counts.cumsum(0).cumsum(1).cumsum(2)
    return counts[: shape[0], : shape[1], : shape[2]] > 0


class _LocalQuery(torch.autograd.Function):
    """The fused native query of one scale (lookup, weights, interpolation and product per
    sample); backward scatters into the vectors from the kept ``ids`` / ``weights``."""

    @staticmethod
    def forward(ctx, reduce: bool, index: LocalTensorIndex, points: Tensor, k: int, *lines: Tensor) -> Tensor:
        out, ids, weights = local_tensors_native.query(points, index, lines, k, DISTANCE_EPS, reduce, keep=True)
        ctx.reduce, ctx.half_extent = reduce, index.half_extent
        ctx.save_for_backward(points, index.centres.float().contiguous(), ids, weights, *lines)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        points, centres, ids, weights, *lines = ctx.saved_tensors
        grads = local_tensors_native.query_backward(points, centres, ctx.half_extent, lines, ids, weights, grad, ctx.reduce, ctx.needs_input_grad[4:7])
        return (None, None, None, None, *grads)


def _fused_usable(index: LocalTensorIndex, points: Tensor, lines, k: int) -> bool:
    if index.num_tensors == 0 or points.shape[0] == 0 or k > local_tensors_native.MAX_QUERY_NEIGHBOURS:
        return False
    if points.dtype != torch.float32 or any(line.dtype != torch.float32 for line in lines):
        return False
    return local_tensors_native.usable(points.detach().contiguous(), index.table, *(line.detach() for line in lines))


def query_features(index: LocalTensorIndex, points: Tensor, lines: tuple[Tensor, Tensor, Tensor], k: int, reduce: bool = False) -> Tensor:
    """``[S, R]`` (or, ``reduce``, ``[S]`` summed over components) features of one scale at
    ``points [S, 3]``: :func:`find_neighbours` then :func:`aggregate_features` /
    :func:`aggregate_sum`, the same values and gradients (to float rounding).

    On contiguous float32 CPU tensors it runs as one fused native kernel per pass: no pair list,
    no ``[P, 3]`` temporaries, memory ``S x K`` for what the backward needs (nothing kept without
    gradients). Elsewhere (CUDA, float64, no compiler) it is the two-stage torch path.
    """
    if _fused_usable(index, points, lines, k):
        if not (torch.is_grad_enabled() and any(line.requires_grad for line in lines)):
            return local_tensors_native.query(points.detach(), index, lines, int(k), DISTANCE_EPS, bool(reduce), keep=False)[0]
        return _LocalQuery.apply(bool(reduce), index, points.detach().contiguous(), int(k), *(line.contiguous() for line in lines))
    neighbours = find_neighbours(index, points, k)
    return _aggregate(neighbours, lines, index.half_extent, reduce=reduce)
