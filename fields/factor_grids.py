"""Factorised feature grids: TensoRF's vector-matrix (VM) and CANDECOMP/PARAFAC (CP) tensors.

A 4D feature tensor :math:`\\mathcal{G} \\in \\mathbb{R}^{X \\times Y \\times Z \\times C}` is never
stored; it is represented by low-rank factors (TensoRF, Chen et al. ECCV 2022, Sec. 3.1-3.2):

* **VM** (Sec. 3.2): for each of the three modes ``m`` a plane :math:`M_m` over two axes and a
  line :math:`v_m` over the third,

  .. math:: f_m(x) = M_m(x_{a_m}, x_{b_m}) \\odot v_m(x_{c_m}) \\in \\mathbb{R}^{C_m},

  with ``(a_m, b_m)`` from :data:`MATRIX_AXES` and ``c_m`` from :data:`VECTOR_AXES` (the
  official pairing: xy-plane x z-line, xz x y, yz x x). The feature is the concatenation
  :math:`[f_0, f_1, f_2]`; a density feature is its sum over everything.
* **CP** (Sec. 3.1): three lines per component, :math:`f(x) = v_0(z) \\odot v_1(y) \\odot v_2(x)`.

Factors are sampled with bilinear / linear interpolation in the ``align_corners=True``
convention (value ``i`` sits exactly on grid vertex ``i``; normalised coordinate ``-1`` is
vertex 0 and ``+1`` the last vertex) with zero padding, as ``F.grid_sample`` in the official
code.

Storage is **channel-last** (planes ``[H, W, C]``, lines ``[L, C]``) so that one sample's
components are contiguous. Two implementations, chosen per call:

* **native** (float32 CPU tensors, a C compiler available): :mod:`tensorfield.cuda.grid_kernels` fuses a whole
  VM mode (plane x line) or the CP product into one pass, forward and backward, about 5-10x
  faster than the torch composition on a 2-core CPU;
* **torch** (any device / dtype, and the reference for the native path): interpolation by a
  custom autograd function whose forward pass is ``F.grid_sample`` and whose backward pass
  scatters ``weight * grad`` into the four (two) corner rows with ``index_add_`` (on CPU ~8x
  faster than ``grid_sample``'s own backward, which parallelises over the batch dimension only).

Neither path differentiates w.r.t. the sample positions (the official code detaches them too).
:func:`sample_plane_reference` / :func:`sample_line_reference` are the plain float64 references
that the tests check values and gradients against.
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tensorfield.cuda import grid_kernels
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

#: Plane axes ``(u, v)`` per mode: ``u`` runs along a plane's width, ``v`` along its height.
MATRIX_AXES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))
#: Line axis per mode, paired with :data:`MATRIX_AXES` (the official ``vecMode``).
VECTOR_AXES: tuple[int, ...] = (2, 1, 0)


# ====================================================================== interpolation kernels
def _pixel(coord: Tensor, size: int) -> Tensor:
    """``align_corners=True`` map from ``[-1, 1]`` to ``[0, size - 1]``."""
    return (coord + 1) * (0.5 * (size - 1))


def linear_corners(coord: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The two vertices and weights of linear interpolation on a line of ``size`` vertices.

    Args:
        coord: ``[S]`` normalised coordinates (``-1`` = vertex 0, ``+1`` = vertex ``size-1``).
        size: number of vertices.

    Returns:
        ``index [S, 2]`` (long, clamped into range) and ``weight [S, 2]``, with
        :math:`w = (1 - f, f)` for :math:`p = i_0 + f`; vertices outside the line get weight 0
        (zero padding).
    """
    p = _pixel(coord, size)
    i0 = torch.floor(p)
    frac = p - i0
    i0 = i0.long()
    index = torch.stack([i0, i0 + 1], dim=-1)
    weight = torch.stack([1 - frac, frac], dim=-1)
    valid = (index >= 0) & (index < size)
    return index.clamp(0, size - 1), weight * valid


def bilinear_corners(uv: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """The four vertices and weights of bilinear interpolation on a ``height x width`` plane.

    Args:
        uv: ``[S, 2]`` normalised coordinates; ``u = uv[:, 0]`` runs along the width (x of
            ``grid_sample``), ``v = uv[:, 1]`` along the height.
        height, width: plane size in vertices.

    Returns:
        ``index [S, 4]`` into the flattened ``[height * width]`` plane (row-major, clamped) and
        ``weight [S, 4]`` for the corners ``(v0,u0), (v0,u1), (v1,u0), (v1,u1)``; corners outside
        the plane get weight 0.
    """
    iu, wu = linear_corners(uv[:, 0], width)
    iv, wv = linear_corners(uv[:, 1], height)
    index = (iv[:, :, None] * width + iu[:, None, :]).reshape(-1, 4)
    weight = (wv[:, :, None] * wu[:, None, :]).reshape(-1, 4)
    return index, weight


def _scatter_rows(num_rows: int, index: Tensor, weight: Tensor, grad: Tensor) -> Tensor:
    """``out[index[s, k]] += weight[s, k] * grad[s]`` for a ``[num_rows, C]`` table."""
    channels = grad.shape[-1]
    src = (weight.to(grad.dtype).unsqueeze(-1) * grad.unsqueeze(1)).reshape(-1, channels)
    out = torch.zeros(num_rows, channels, dtype=grad.dtype, device=grad.device)
    return out.index_add_(0, index.reshape(-1), src)


class _PlaneSample(torch.autograd.Function):
    """Bilinear sampling of a channel-last plane: grid_sample forward, index_add backward."""

    @staticmethod
    def forward(ctx, table: Tensor, uv: Tensor) -> Tensor:
        height, width, channels = table.shape
        image = table.permute(2, 0, 1).unsqueeze(0)  # [1, C, H, W] view, channels-last strides
        out = F.grid_sample(image, uv.view(1, -1, 1, 2), mode="bilinear", padding_mode="zeros", align_corners=True)
        ctx.save_for_backward(uv)
        ctx.plane_shape = (height, width, channels)
        return out[0, :, :, 0].t()  # [S, C]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (uv,) = ctx.saved_tensors
        height, width, channels = ctx.plane_shape
        index, weight = bilinear_corners(uv, height, width)
        grad = _scatter_rows(height * width, index, weight, grad_out.contiguous())
        return grad.view(height, width, channels), None


class _LineSample(torch.autograd.Function):
    """Linear sampling of a channel-last line: grid_sample forward, index_add backward."""

    @staticmethod
    def forward(ctx, table: Tensor, coord: Tensor) -> Tensor:
        length, channels = table.shape
        image = table.t().unsqueeze(0).unsqueeze(-1)  # [1, C, L, 1]
        grid = torch.stack([torch.zeros_like(coord), coord], dim=-1).view(1, -1, 1, 2)
        out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        ctx.save_for_backward(coord)
        ctx.line_shape = (length, channels)
        return out[0, :, :, 0].t()  # [S, C]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (coord,) = ctx.saved_tensors
        length, channels = ctx.line_shape
        index, weight = linear_corners(coord, length)
        return _scatter_rows(length, index, weight, grad_out.contiguous()), None


def sample_plane(table: Tensor, uv: Tensor) -> Tensor:
    """Bilinearly interpolate a channel-last plane at normalised coordinates.

    Equivalent to ``F.grid_sample(table.permute(2, 0, 1)[None], uv.view(1, -1, 1, 2),
    align_corners=True)`` (zero padding), with a fast backward pass.

    Args:
        table: ``[H, W, C]`` plane (differentiable).
        uv: ``[S, 2]`` coordinates in ``[-1, 1]``: ``uv[:, 0]`` along ``W``, ``uv[:, 1]`` along
            ``H`` (not differentiated).

    Returns:
        ``[S, C]`` features.
    """
    return _PlaneSample.apply(table, uv.detach().contiguous())


def sample_line(table: Tensor, coord: Tensor) -> Tensor:
    """Linearly interpolate a channel-last line at normalised coordinates.

    Args:
        table: ``[L, C]`` line (differentiable).
        coord: ``[S]`` coordinates in ``[-1, 1]`` (not differentiated).

    Returns:
        ``[S, C]`` features.
    """
    return _LineSample.apply(table, coord.detach().contiguous())


def sample_dense(grid: Tensor, xyz: Tensor, box: Tensor | None = None, softplus_shift: float | None = None) -> Tensor:
    """Trilinearly interpolate a dense ``[Z, Y, X, C]`` grid at normalised ``xyz [S, 3]`` -> ``[S, C]``.

    The factors' convention (``align_corners=True``, zero padding). With ``box`` (``[2, 3]``),
    ``xyz`` are world points normalised as ``(p - lo) * 2 / (hi - lo) - 1``; with
    ``softplus_shift`` (one channel) the result is ``softplus(value + shift)`` of shape ``[S]``.
    Inference only: the native kernel on float32 CPU tensors (normalisation and activation
    fused), else ``F.grid_sample`` (5D), which is also differentiable.
    """
    xyz = xyz.contiguous()
    native = grid_kernels.trilinear(grid, xyz, box, softplus_shift)
    if native is not None:
        return native
    if box is not None:
        lo, hi = box[0].to(xyz), box[1].to(xyz)
        xyz = (xyz - lo) * (2.0 / (hi - lo)) - 1.0
    values = _grid_sample_dense(grid, xyz)
    if softplus_shift is not None:
        return F.softplus(values[:, 0] + softplus_shift)
    return values


def _grid_sample_dense(grid: Tensor, xyz: Tensor) -> Tensor:
    volume = grid.permute(3, 0, 1, 2).unsqueeze(0)  # [1, C, Z, Y, X]; grid_sample's (x, y, z) = (W, H, D)
    out = F.grid_sample(volume, xyz.to(grid.dtype).view(1, -1, 1, 1, 3), mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0, :, :, 0, 0].t()


def sample_plane_reference(table: Tensor, uv: Tensor) -> Tensor:
    """Obviously-right bilinear interpolation (loops over the four corners), for tests.

    Same convention as :func:`sample_plane`; differentiable w.r.t. ``table`` by autograd.
    """
    height, width, _ = table.shape
    x = (uv[:, 0].double() + 1) / 2 * (width - 1)
    y = (uv[:, 1].double() + 1) / 2 * (height - 1)
    x0, y0 = torch.floor(x), torch.floor(y)
    out = torch.zeros(uv.shape[0], table.shape[-1], dtype=table.dtype, device=table.device)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            inside = (xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1)
            rows = table[yi.clamp(0, height - 1).long(), xi.clamp(0, width - 1).long()]
            out = out + rows * (weight * inside).to(table.dtype)[:, None]
    return out


def sample_line_reference(table: Tensor, coord: Tensor) -> Tensor:
    """Obviously-right linear interpolation on a ``[L, C]`` line, for tests."""
    length = table.shape[0]
    p = (coord.double() + 1) / 2 * (length - 1)
    p0 = torch.floor(p)
    out = torch.zeros(coord.shape[0], table.shape[-1], dtype=table.dtype, device=table.device)
    for d in (0, 1):
        pi = p0 + d
        weight = (1 - (p - pi).abs()) * ((pi >= 0) & (pi <= length - 1))
        out = out + table[pi.clamp(0, length - 1).long()] * weight.to(table.dtype)[:, None]
    return out


_ACCUMULATE = threading.local()


@contextlib.contextmanager
def accumulate_into_grad():
    """Within this context, native factor features add their table gradients straight into the
    tables' ``.grad`` during ``backward()`` instead of returning them to autograd.

    A ray marcher evaluates the density several times per step (once per early-termination
    round); returned gradients would each be a fresh full-size zero table that autograd then adds
    into ``.grad``. Accumulating in place touches each table once. Only for leaf parameters and a
    plain ``loss.backward()`` (as the trainer does): ``torch.autograd.grad`` would not see these
    gradients, so tests and functional code leave this off.
    """
    previous = getattr(_ACCUMULATE, "on", False)
    _ACCUMULATE.on = True
    try:
        yield
    finally:
        _ACCUMULATE.on = previous


class _FusedFeatures(torch.autograd.Function):
    """Products of interpolated factors through the native kernels (:mod:`tensorfield.cuda.grid_kernels`).

    ``layout`` gives, per product (a VM mode or the CP product), its kind, the indices of its
    tables in ``tables``, their axes and sizes; the outputs are consecutive column blocks, or all
    summed into one value per sample with ``reduce``.
    """

    @staticmethod
    def forward(ctx, xyz: Tensor, reduce: bool, layout, *tables: Tensor) -> Tensor:
        ctx.save_for_backward(xyz, *tables)
        ctx.reduce, ctx.layout = reduce, layout
        # leaf parameters whose gradient goes straight into .grad (see accumulate_into_grad)
        ctx.direct = tuple(t if getattr(_ACCUMULATE, "on", False) and t.is_leaf and t.requires_grad else None for t in tables)
        return grid_kernels.features_forward(xyz, _products(layout, tables), reduce)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        xyz, *tables = ctx.saved_tensors
        into = []
        for _, indices, _, _ in ctx.layout:
            row = []
            for i in indices:
                param = ctx.direct[i]
                if param is not None and param.grad is None:
                    param.grad = torch.zeros_like(param)
                usable = param is not None and param.grad.is_contiguous() and param.grad.dtype == torch.float32
                row.append(param.grad if usable else None)
            into.append(row)
        per_product = grid_kernels.features_backward(xyz, _products(ctx.layout, tables), grad.contiguous(), ctx.reduce, into)
        grads: list[Tensor | None] = [None] * len(tables)
        for (_, indices, _, _), product_grads, row in zip(ctx.layout, per_product, into):
            for i, g, target in zip(indices, product_grads, row):
                grads[i] = None if target is not None else g
        return (None, None, None, *grads)


class _L1Mean(torch.autograd.Function):
    """:math:`\\mathrm{mean}|x|` of a factor table in one pass; inside :func:`accumulate_into_grad`
    its backward adds ``g sign(x) / n`` straight into the table's ``.grad`` (one pass, no
    temporaries) like the fused features do."""

    @staticmethod
    def forward(ctx, table: Tensor) -> Tensor:
        ctx.save_for_backward(table)
        ctx.direct = table if getattr(_ACCUMULATE, "on", False) and table.is_leaf and table.requires_grad else None
        return torch.linalg.vector_norm(table, 1) / table.numel()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        (table,) = ctx.saved_tensors
        scale = float(grad) / table.numel()
        param = ctx.direct
        if param is not None:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            if grid_kernels.add_sign_(param.grad, table, scale):
                return None
        return torch.sign(table) * scale


def l1_mean(table: Tensor) -> Tensor:
    """:math:`\\mathrm{mean}|x|` (the official ``density_L1`` term), fused when the kernels are available."""
    if grid_kernels.usable(table):
        return _L1Mean.apply(table)
    return table.abs().mean()


def _products(layout, tables) -> list[grid_kernels.Product]:
    return [grid_kernels.Product(kind, axes, [tables[i] for i in indices], sizes) for kind, indices, axes, sizes in layout]


# ====================================================================== regularisers
def total_variation(table: Tensor) -> Tensor:
    """The official ``TVLoss`` of a channel-last plane ``[H, W, C]`` or line ``[L, C]``.

    .. math:: 2 \\Big(\\frac{\\sum (\\Delta_h M)^2}{C (H-1) W} + \\frac{\\sum (\\Delta_w M)^2}{\\max(C H (W-1), 1)}\\Big)
    """
    if table.dim() == 2:
        table = table.unsqueeze(1)
    height, width, channels = table.shape
    tv_h = (table[1:] - table[:-1]).square().sum() / max(channels * (height - 1) * width, 1)
    tv_w = (table[:, 1:] - table[:, :-1]).square().sum() / max(channels * height * (width - 1), 1)
    return 2 * (tv_h + tv_w)


def off_diagonal_gram(line: Tensor) -> Tensor:
    """Mean absolute off-diagonal entry of the ``[C, C]`` Gram matrix of a ``[L, C]`` line.

    The official ``vectorDiffs`` orthogonality penalty between a mode's vector components.
    """
    gram = line.t() @ line
    channels = gram.shape[0]
    if channels < 2:
        return gram.new_zeros(())
    off = ~torch.eye(channels, dtype=torch.bool, device=gram.device)
    return gram[off].abs().mean()


# ====================================================================== factor modules
def _resize_channel_last(table: Tensor, size: Sequence[int]) -> Tensor:
    """Resample ``[H, W, C]`` (bilinear) or ``[L, C]`` (linear), ``align_corners=True``."""
    if table.dim() == 3:
        image = table.permute(2, 0, 1).unsqueeze(0)
        out = F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=True)
        return out[0].permute(1, 2, 0).contiguous()
    image = table.t().unsqueeze(0).unsqueeze(-1)  # [1, C, L, 1], like the official line layout
    out = F.interpolate(image, size=(size[0], 1), mode="bilinear", align_corners=True)
    return out[0, :, :, 0].t().contiguous()


class FactorGrids(nn.Module, abc.ABC):
    """Common interface of :class:`VectorMatrixGrids` and :class:`CandecompGrids`.

    Attributes:
        resolution: ``(X, Y, Z)`` number of grid vertices per world axis.
        feature_dim: length of the vector :meth:`features` returns.
    """

    resolution: tuple[int, int, int]

    @property
    @abc.abstractmethod
    def feature_dim(self) -> int:
        """Length of the feature vector."""

    @abc.abstractmethod
    def features(self, xyz: Tensor) -> Tensor:
        """``[S, feature_dim]`` features at normalised positions ``xyz [S, 3]`` in ``[-1, 1]``."""

    def feature_sum(self, xyz: Tensor) -> Tensor:
        """``[S]`` sum of :meth:`features` (the density feature), without materialising them."""
        return self.features(xyz).sum(-1)

    def tables(self) -> list[Tensor]:
        """All factor parameters."""
        return list(self.parameters())

    @torch.no_grad()
    def dense(self, weights: Tensor | None = None) -> Tensor:
        """The represented tensor, mixed by ``weights``, as a dense ``[Z, Y, X, C]`` grid.

        ``dense(W)[z, y, x] = W @ G[x, y, z]`` for the ``[C, feature_dim]`` matrix ``W``
        (``None``: a row of ones, i.e. the density feature sum, ``C = 1``). Interpolating a
        product of interpolated factors is interpolating their outer product, so
        :func:`sample_dense` of this grid equals ``features(xyz) @ W.T`` (the render cache of
        TensoRF: 8 taps of C channels per sample instead of every component of every factor).
        Built slice by slice from small matrix products; never materialises ``G``.
        """
        if weights is None:
            weights = self.tables()[0].new_ones(1, self.feature_dim)
        if weights.dim() != 2 or weights.shape[1] != self.feature_dim:
            raise ValueError(f"weights must be [C, {self.feature_dim}], got {tuple(weights.shape)}")
        size_x, size_y, size_z = self.resolution
        weights = weights.to(self.tables()[0])
        out = weights.new_empty(size_z, size_y, size_x, weights.shape[0])
        self._dense_into(out, weights)
        return out

    @abc.abstractmethod
    def _dense_into(self, out: Tensor, weights: Tensor) -> None:
        """Fill ``out [Z, Y, X, C]`` (see :meth:`dense`)."""

    # resampling -------------------------------------------------------------
    @torch.no_grad()
    def upsample(self, resolution: Sequence[int]) -> None:
        """Resample every factor to ``resolution`` vertices (the official ``upsample_volume_grid``)."""
        self._apply_to_tables(lambda table, size: _resize_channel_last(table, size), resolution)

    @torch.no_grad()
    def crop(self, lower: Sequence[int], upper: Sequence[int]) -> None:
        """Keep vertices ``lower[a] <= i < upper[a]`` per axis (the official ``shrink``)."""
        resolution = [int(u) - int(l) for l, u in zip(lower, upper)]

        def cut(table: Tensor, size: Sequence[int], axes: Sequence[int]) -> Tensor:
            slices = tuple(slice(int(lower[a]), int(upper[a])) for a in axes)
            return table[slices].contiguous()

        self._apply_to_tables(cut, resolution, with_axes=True)

    @torch.no_grad()
    def resize_empty(self, resolution: Sequence[int]) -> None:
        """Give every factor the shape for ``resolution`` (uninitialised; for checkpoint loading)."""
        self._apply_to_tables(
            lambda table, size: table.new_empty(*size, table.shape[-1]), resolution
        )

    @abc.abstractmethod
    def _apply_to_tables(self, fn, resolution: Sequence[int], with_axes: bool = False) -> None:
        """Replace every factor table by ``fn(table, new_size[, axes])``."""


class VectorMatrixGrids(FactorGrids):
    """VM decomposition (TensoRF Sec. 3.2): per mode a plane ``[H, W, C_m]`` and line ``[L, C_m]``.

    For mode ``m`` with plane axes ``(a, b) = MATRIX_AXES[m]`` and line axis
    ``c = VECTOR_AXES[m]``, the plane has ``H = res[b]``, ``W = res[a]`` and the line ``L = res[c]``
    (the official ``[1, C, res[b], res[a]]`` / ``[1, C, res[c], 1]``, stored channel-last).

    Args:
        components: ``C_m`` per mode (e.g. ``[16, 16, 16]``).
        resolution: ``(X, Y, Z)`` vertices.
        init_scale: factors start as ``init_scale * N(0, 1)`` (official: 0.1).
        generator: random generator for the initialisation.
    """

    def __init__(
        self,
        components: Sequence[int],
        resolution: Sequence[int],
        init_scale: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if len(components) != 3:
            raise ValueError(f"VM needs 3 component counts (one per mode), got {list(components)}")
        self.components = tuple(int(c) for c in components)
        self.resolution = tuple(int(r) for r in resolution)
        planes, lines = [], []
        for (a, b), c, n in zip(MATRIX_AXES, VECTOR_AXES, self.components):
            # drawn in the official [C, H, W] order, then stored channel-last
            plane = torch.randn(n, self.resolution[b], self.resolution[a], generator=generator)
            line = torch.randn(n, self.resolution[c], generator=generator)
            planes.append(nn.Parameter(init_scale * plane.permute(1, 2, 0).contiguous()))
            lines.append(nn.Parameter(init_scale * line.t().contiguous()))
        self.planes = nn.ParameterList(planes)
        self.lines = nn.ParameterList(lines)

    @property
    def feature_dim(self) -> int:
        return sum(self.components)

    def _dense_into(self, out: Tensor, weights: Tensor) -> None:
        # planes: 0 [Y, X, R0] x line [Z, R0]; 1 [Z, X, R1] x line [Y, R1]; 2 [Z, Y, R2] x line [X, R2]
        size_z, size_y, size_x, channels = out.shape
        w0, w1, w2 = (w.t() for w in weights.split(list(self.components), dim=1))  # [R_m, C]
        p0, p1, p2 = self.planes
        l0, l1, l2 = self.lines
        mix2 = (l2.t()[:, :, None] * w2[:, None, :]).reshape(-1, size_x * channels)  # [R2, X C]
        flat0 = p0.reshape(size_y * size_x, -1)
        for z in range(size_z):
            target = out[z].view(size_y, size_x * channels)
            torch.mm(p2[z], mix2, out=target)
            mix1 = (p1[z].t()[:, :, None] * w1[:, None, :]).reshape(-1, size_x * channels)  # [R1, X C]
            target.addmm_(l1, mix1)
            out[z].view(size_y * size_x, channels).addmm_(flat0, l0[z][:, None] * w0)

    def _mode_products(self, xyz: Tensor) -> list[Tensor]:
        out = []
        for m, ((a, b), c) in enumerate(zip(MATRIX_AXES, VECTOR_AXES)):
            plane = sample_plane(self.planes[m], xyz[:, [a, b]])
            line = sample_line(self.lines[m], xyz[:, c])
            out.append(plane * line)
        return out

    def _fused(self, xyz: Tensor, reduce: bool) -> Tensor | None:
        tables = [*self.planes, *self.lines]
        if not grid_kernels.usable(xyz, *tables):
            return None
        layout = tuple(
            (grid_kernels.VM, (m, 3 + m), (a, b, c), (self.resolution[b], self.resolution[a], self.resolution[c]))
            for m, ((a, b), c) in enumerate(zip(MATRIX_AXES, VECTOR_AXES))
        )
        return _FusedFeatures.apply(xyz, reduce, layout, *tables)

    def features(self, xyz: Tensor) -> Tensor:
        """``[S, C_0 + C_1 + C_2]``: :math:`[M_m(x_a, x_b) \\odot v_m(x_c)]_m` concatenated over modes."""
        fused = self._fused(xyz, reduce=False)
        return fused if fused is not None else torch.cat(self._mode_products(xyz), dim=-1)

    def feature_sum(self, xyz: Tensor) -> Tensor:
        """``[S]``: :math:`\\sum_m \\sum_k M_{m,k}(x_a, x_b)\\, v_{m,k}(x_c)` (the density feature)."""
        fused = self._fused(xyz, reduce=True)
        if fused is not None:
            return fused
        total = None
        for product in self._mode_products(xyz):
            total = product.sum(-1) if total is None else total + product.sum(-1)
        return total

    def l1(self) -> Tensor:
        """Official ``density_L1``: :math:`\\sum_m \\mathrm{mean}|M_m| + \\mathrm{mean}|v_m|`."""
        return sum(l1_mean(p) + l1_mean(l) for p, l in zip(self.planes, self.lines))

    def tv(self) -> Tensor:
        """Official ``TV_loss_*``: :math:`10^{-2} \\sum_m \\mathrm{TV}(M_m)` (planes only)."""
        return 1e-2 * sum(total_variation(p) for p in self.planes)

    def orthogonality(self) -> Tensor:
        """Official ``vectorDiffs`` over the lines: mean |off-diagonal Gram| summed over modes."""
        return sum(off_diagonal_gram(l) for l in self.lines)

    def _apply_to_tables(self, fn, resolution: Sequence[int], with_axes: bool = False) -> None:
        for m, ((a, b), c) in enumerate(zip(MATRIX_AXES, VECTOR_AXES)):
            plane_size, line_size = (resolution[b], resolution[a]), (resolution[c],)
            if with_axes:
                plane, line = fn(self.planes[m], plane_size, (b, a)), fn(self.lines[m], line_size, (c,))
            else:
                plane, line = fn(self.planes[m], plane_size), fn(self.lines[m], line_size)
            self.planes[m] = nn.Parameter(plane)
            self.lines[m] = nn.Parameter(line)
        self.resolution = tuple(int(r) for r in resolution)


class CandecompGrids(FactorGrids):
    """CP decomposition (TensoRF Sec. 3.1): per mode one line ``[L, C]``; feature = product.

    Lines are ordered by :data:`VECTOR_AXES` (z, y, x) like the official ``TensorCP``.

    Args:
        components: ``C``, the rank (e.g. 96 for density, 288 for appearance in CP-384).
        resolution: ``(X, Y, Z)`` vertices.
        init_scale: factors start as ``init_scale * N(0, 1)`` (official: 0.2).
        generator: random generator for the initialisation.
    """

    def __init__(
        self,
        components: int,
        resolution: Sequence[int],
        init_scale: float = 0.2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.components = int(components)
        self.resolution = tuple(int(r) for r in resolution)
        lines = []
        for c in VECTOR_AXES:
            line = torch.randn(self.components, self.resolution[c], generator=generator)
            lines.append(nn.Parameter(init_scale * line.t().contiguous()))
        self.lines = nn.ParameterList(lines)

    @property
    def feature_dim(self) -> int:
        return self.components

    def _fused(self, xyz: Tensor, reduce: bool) -> Tensor | None:
        tables = list(self.lines)
        if not grid_kernels.usable(xyz, *tables):
            return None
        layout = ((grid_kernels.CP, (0, 1, 2), VECTOR_AXES, tuple(self.resolution[c] for c in VECTOR_AXES)),)
        return _FusedFeatures.apply(xyz, reduce, layout, *tables)

    def _dense_into(self, out: Tensor, weights: Tensor) -> None:
        # lines: 0 over z, 1 over y, 2 over x (VECTOR_AXES)
        size_z, size_y, size_x, channels = out.shape
        lz, ly, lx = self.lines
        mix = lx.t()[:, :, None] * weights.t()[:, None, :]  # [R, X, C]
        for z in range(size_z):
            torch.mm(ly, (lz[z][:, None, None] * mix).reshape(-1, size_x * channels), out=out[z].view(size_y, size_x * channels))

    def feature_sum(self, xyz: Tensor) -> Tensor:
        """``[S]``: :math:`\\sum_k v_{0,k}(z) v_{1,k}(y) v_{2,k}(x)` (the density feature)."""
        fused = self._fused(xyz, reduce=True)
        return fused if fused is not None else self.features(xyz).sum(-1)

    def features(self, xyz: Tensor) -> Tensor:
        """``[S, C]``: :math:`v_0(z) \\odot v_1(y) \\odot v_2(x)`."""
        fused = self._fused(xyz, reduce=False)
        if fused is not None:
            return fused
        out = None
        for m, c in enumerate(VECTOR_AXES):
            line = sample_line(self.lines[m], xyz[:, c])
            out = line if out is None else out * line
        return out

    def l1(self) -> Tensor:
        """Official CP ``density_L1``: :math:`\\sum_m \\mathrm{mean}|v_m|`."""
        return sum(l1_mean(l) for l in self.lines)

    def tv(self) -> Tensor:
        """Official CP ``TV_loss_*``: :math:`10^{-3} \\sum_m \\mathrm{TV}(v_m)`."""
        return 1e-3 * sum(total_variation(l) for l in self.lines)

    def orthogonality(self) -> Tensor:
        """Mean |off-diagonal Gram| of each line, summed over modes."""
        return sum(off_diagonal_gram(l) for l in self.lines)

    def _apply_to_tables(self, fn, resolution: Sequence[int], with_axes: bool = False) -> None:
        for m, c in enumerate(VECTOR_AXES):
            size = (resolution[c],)
            line = fn(self.lines[m], size, (c,)) if with_axes else fn(self.lines[m], size)
            self.lines[m] = nn.Parameter(line)
        self.resolution = tuple(int(r) for r in resolution)
