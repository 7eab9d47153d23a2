"""Native CPU kernels for factor-grid features: fused interpolation, products and their adjoints.

TensoRF spends its CPU time interpolating factor planes and lines at ~10^5 samples per step and
scattering the gradients back. In pure torch that is a chain of ``grid_sample``, ``mul``, ``cat``
and ``index_add_`` calls, each a full pass over memory, and the scatter costs 40-70 ns per row.
The C kernels (``cuda/csrc/factor_grid.c``) fuse one VM mode (plane x line, per component) or
one CP product (three lines) into a single pass, forward and backward:

* forward, threads split the samples: ``out[s, off + k] = P_k(s) L_k(s)`` (or, with ``reduce``,
  ``out[s] += sum_k P_k(s) L_k(s)``, the density feature);
* backward, threads split the components ``k`` (so no two threads write the same float and the
  result does not depend on the thread count): with ``g = grad[s, off + k]`` (or ``grad[s]``),
  ``dP_k[corner] += w_corner g L_k(s)`` and ``dL_k[corner] += w_corner g P_k(s)``, re-interpolating
  ``P`` and ``L`` instead of storing them.

Convention: ``align_corners=True``, zero padding, as :mod:`tensorfield.fields.factor_grids`
(whose pure-torch path is the fallback and the reference these kernels are tested against).

The source is compiled on first use by :mod:`tensorfield.cuda.native` (cached under
``$TENSORFIELD_CACHE/kernels``) and called through :mod:`ctypes`: no torch headers, no
extension build, about a second to compile. Every
entry point returns ``None``/``False`` when the kernels cannot be used (no compiler, failed
build, ``TENSORFIELD_NATIVE=0``, tensors that are not contiguous float32 on the CPU); nothing is
compiled or probed at import time.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensorfield.cuda.native import NativeLibrary, box_affine
from torch import Tensor

VM, CP = 0, 1


class _Group(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_int),
        ("axis", ctypes.c_int * 3),
        ("table", ctypes.c_void_p * 3),
        ("dtable", ctypes.c_void_p * 3),
        ("size", ctypes.c_int64 * 3),
        ("channels", ctypes.c_int64),
        ("off", ctypes.c_int64),
    ]

def _declare(library: ctypes.CDLL) -> None:
    group_array = ctypes.POINTER(_Group)
    arguments = [ctypes.c_void_p, ctypes.c_int64, group_array, ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int]
    library.tf_features.restype = ctypes.c_int
    library.tf_features.argtypes = arguments
    library.tf_features_backward.restype = ctypes.c_int
    library.tf_features_backward.argtypes = arguments
    library.tf_trilinear.restype = ctypes.c_int
    library.tf_trilinear.argtypes = [ctypes.c_void_p] + [ctypes.c_int64] * 4 + [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_float]
    library.tf_add_sign.restype = None
    library.tf_add_sign.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float]


# -O3 vectorises the per-component loops; no -ffast-math, so results stay IEEE.
_LIBRARY = NativeLibrary("factor_features", "factor_grid.c", ["-pthread"], _declare)


def native_library() -> ctypes.CDLL | None:
    """The compiled kernel library, or ``None`` if unavailable (built once per process)."""
    return _LIBRARY.get()


def usable(*tensors: Tensor) -> bool:
    """Whether the kernels can take these tensors (contiguous float32 CPU) and are available."""
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors):
        return False
    return native_library() is not None


def _threads(work: int) -> int:
    # below ~16k samples a thread costs more than it saves
    return max(1, min(torch.get_num_threads(), 32, work // 16384 + 1))


@dataclass
class Product:
    """One product of interpolated factors (a ``group_t`` of the C source).

    Attributes:
        kind: :data:`VM` (tables: plane ``[H, W, C]``, line ``[L, C]``; axes: plane width axis,
            plane height axis, line axis; sizes: ``H, W, L``) or :data:`CP` (three lines
            ``[L_m, C]``, their axes and lengths).
        axes: the coordinate (0, 1, 2 = x, y, z) each table is indexed by.
        tables: contiguous float32 factor tables.
        sizes: as described for ``kind``.
    """

    kind: int
    axes: tuple[int, int, int]
    tables: Sequence[Tensor]
    sizes: tuple[int, int, int]

    @property
    def channels(self) -> int:
        return int(self.tables[0].shape[-1])


def _groups(products: Sequence[Product], grads: Sequence[Sequence[Tensor]] | None = None):
    groups = (_Group * len(products))()
    offset = 0
    for i, product in enumerate(products):
        group = groups[i]
        group.kind = product.kind
        group.axis[:] = list(product.axes)
        group.size[:] = list(product.sizes)
        group.channels = product.channels
        group.off = offset
        for t, table in enumerate(product.tables):
            group.table[t] = table.data_ptr()
            if grads is not None:
                group.dtable[t] = grads[i][t].data_ptr()
        offset += product.channels
    return groups


def features_forward(xyz: Tensor, products: Sequence[Product], reduce: bool) -> Tensor:
    """Interpolate and multiply the factors of every product at ``xyz``.

    Args:
        xyz: ``[S, 3]`` contiguous float32 normalised positions.
        products: the products; their components form consecutive column blocks.
        reduce: sum everything into one value per sample.

    Returns:
        ``[S, sum of C]`` products, or ``[S]`` sums with ``reduce``.
    """
    width = sum(p.channels for p in products)
    out = xyz.new_empty(xyz.shape[0]) if reduce else xyz.new_empty(xyz.shape[0], width)
    groups = _groups(products)
    status = native_library().tf_features(
        xyz.data_ptr(), xyz.shape[0], groups, len(products), out.data_ptr(), 1 if reduce else width,
        int(reduce), _threads(xyz.shape[0]),
    )
    if status != 0:
        raise RuntimeError("native factor-grid kernel refused its arguments")
    return out


def features_backward(
    xyz: Tensor, products: Sequence[Product], grad: Tensor, reduce: bool, into: Sequence[Sequence[Tensor | None]] | None = None
) -> list[list[Tensor]]:
    """Gradients of :func:`features_forward` w.r.t. every table, for the output gradient ``grad``.

    ``into`` (per product, per table) may name contiguous float32 buffers the gradients are *added*
    to in place (``None`` entries: a fresh zero tensor); the returned lists hold the buffers used.
    """
    grads = [
        [(into[i][j] if into is not None and into[i][j] is not None else torch.zeros_like(t)) for j, t in enumerate(p.tables)]
        for i, p in enumerate(products)
    ]
    groups = _groups(products, grads)
    width = sum(p.channels for p in products)
    status = native_library().tf_features_backward(
        xyz.data_ptr(), xyz.shape[0], groups, len(products), grad.data_ptr(), 1 if reduce else width,
        int(reduce), max(1, min(torch.get_num_threads(), 32)),
    )
    if status != 0:
        raise RuntimeError("native factor-grid kernel refused its arguments")
    return grads


def add_sign_(grad: Tensor, x: Tensor, scale: float) -> bool:
    """``grad += scale * sign(x)`` in place (contiguous float32 CPU); ``False`` if not possible."""
    if not (usable(grad, x) and grad.shape == x.shape):
        return False
    native_library().tf_add_sign(x.numel(), x.data_ptr(), grad.data_ptr(), float(scale))
    return True


def trilinear(grid: Tensor, xyz: Tensor, box: Tensor | None = None, softplus_shift: float | None = None) -> Tensor | None:
    """Trilinear interpolation of a dense ``[Z, Y, X, C]`` grid at ``xyz [S, 3]``.

    Inference only (no gradient). ``align_corners=True`` with zero padding, the factors' own
    convention. ``xyz`` are normalised coordinates, or world points inside ``box`` (``[2, 3]``:
    normalised in the kernel as ``(p - lo) * 2 / (hi - lo) - 1``). With ``softplus_shift`` (one
    channel only) the kernel returns ``softplus(value + shift)`` as ``[S]``. Returns ``[S, C]``,
    or ``None`` when the kernels cannot take these tensors.
    """
    if grid.dim() != 4 or not usable(grid, xyz) or xyz.dim() != 2 or xyz.shape[1] != 3:
        return None
    depth, height, width, channels = (int(v) for v in grid.shape)
    if softplus_shift is not None and channels != 1:
        return None
    affine = None
    if box is not None:
        affine = box_affine(box)
    out = xyz.new_empty(xyz.shape[0], channels)
    status = native_library().tf_trilinear(
        grid.data_ptr(), width, height, depth, channels, xyz.data_ptr(), xyz.shape[0], out.data_ptr(),
        _threads(xyz.shape[0]), None if affine is None else affine.data_ptr(),
        int(softplus_shift is not None), float(softplus_shift or 0.0),
    )
    if status != 0:
        raise RuntimeError("native trilinear kernel refused its arguments")
    return out[:, 0] if softplus_shift is not None else out
