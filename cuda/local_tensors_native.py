"""Native CPU kernels of Strivec's CP aggregation (:mod:`tensorfield.cuda.local_tensors`).

``tf_local_query`` / ``tf_local_query_backward`` are the fused path the model uses: per sample,
lookup, weights, interpolation and CP product in one pass, without the (sample, tensor) pair list;
the forward keeps only ``ids [S, K]`` and ``weights [S, K]`` for the backward. The pair kernels
below (``tf_local_neighbours``, ``tf_local_cp_*``) serve :func:`~tensorfield.cuda.local_tensors.find_neighbours`
and :func:`~tensorfield.cuda.local_tensors.aggregate_features` on their own.

``tf_local_cp_forward`` / ``tf_local_cp_backward`` (``cuda/csrc/local_tensors.c``) gather,
interpolate, multiply and scatter the pairs of one scale in one pass each; the backward
re-interpolates the factors instead of storing them (no ``[P, R]`` temporaries kept between the
passes) and splits the components over threads, so its result does not depend on the thread
count. Compiled on first use by :mod:`tensorfield.cuda.native`; the entry points return ``None``
when the kernels cannot take the tensors (not contiguous float32 on the CPU, no compiler,
``TENSORFIELD_NATIVE=0``), and the caller falls back to the torch path.
"""

from __future__ import annotations

import ctypes

import torch
from tensorfield.cuda.native import NativeLibrary
from torch import Tensor

_POINTER, _INT64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int


def _declare(library: ctypes.CDLL) -> None:
    common = [_INT64, _INT64, _POINTER, _POINTER, _POINTER, _POINTER, _POINTER, _POINTER, _POINTER, _INT]
    library.tf_local_cp_forward.restype = _INT
    library.tf_local_cp_forward.argtypes = common + [_POINTER, _INT]
    library.tf_local_cp_backward.restype = _INT
    library.tf_local_cp_backward.argtypes = common + [_POINTER, _POINTER, _POINTER, _POINTER, _INT]
    library.tf_local_neighbours.restype = _INT
    library.tf_local_neighbours.argtypes = [
        _POINTER, _INT64, _POINTER, ctypes.c_float, _POINTER, _POINTER, _INT64, _POINTER, ctypes.c_float, _INT64,
        _POINTER, _POINTER, _INT,
    ]
    library.tf_local_query.restype = _INT
    library.tf_local_query.argtypes = [
        _POINTER, _INT64, _POINTER, ctypes.c_float, _POINTER, _POINTER, _INT64, _POINTER, ctypes.c_float, _INT64,
        ctypes.c_float, _INT64, _INT64, _POINTER, _POINTER, _POINTER, _INT, _POINTER, _POINTER, _POINTER, _INT,
    ]
    library.tf_local_query_backward.restype = _INT
    library.tf_local_query_backward.argtypes = [
        _POINTER, _INT64, _POINTER, ctypes.c_float, _INT64, _INT64, _INT64, _POINTER, _POINTER, _POINTER, _INT,
        _POINTER, _POINTER, _POINTER, _POINTER, _POINTER, _POINTER, _INT,
    ]


# no -ffast-math: results stay IEEE
_LIBRARY = NativeLibrary("local_tensors", "local_tensors.c", ["-pthread"], _declare)


def native_library() -> ctypes.CDLL | None:
    """The compiled library, or ``None`` (built once per process)."""
    return _LIBRARY.get()


def _threads(work: int) -> int:
    # below ~8k pairs a thread costs more than it saves
    return max(1, min(torch.get_num_threads(), 32, work // 8192 + 1))


def usable(*tensors: Tensor) -> bool:
    """Whether the kernels can take these tensors (contiguous CPU, float32 or int64) and exist."""
    if not all(t.device.type == "cpu" and t.is_contiguous() and t.dtype in (torch.float32, torch.int64) for t in tensors):
        return False
    return native_library() is not None


def cp_forward(samples: Tensor, weights: Tensor, rows: Tensor, frac: Tensor, lines, num_samples: int, reduce: bool) -> Tensor:
    """``[S]`` (``reduce``) or ``[S, R]`` weighted CP products scattered to their samples.

    Args:
        samples: ``[P]`` int64, sorted.
        weights: ``[P]`` float32.
        rows: ``[3, P]`` int64 lower-vertex rows into the ``[T * V, R]`` tables.
        frac: ``[3, P]`` float32 positions between that vertex and the next.
        lines: the three contiguous float32 ``[T, V, R]`` tables.
    """
    components = int(lines[0].shape[2])
    out = torch.zeros((num_samples,) if reduce else (num_samples, components), dtype=torch.float32)
    status = native_library().tf_local_cp_forward(
        samples.shape[0], components, samples.data_ptr(), weights.data_ptr(), rows.data_ptr(), frac.data_ptr(),
        *(line.data_ptr() for line in lines), int(reduce), out.data_ptr(), _threads(samples.shape[0]),
    )
    if status != 0:
        raise RuntimeError("native local-tensor kernel refused its arguments")
    return out


def cp_backward(samples: Tensor, weights: Tensor, rows: Tensor, frac: Tensor, lines, grad: Tensor, reduce: bool, needs) -> list:
    """Gradients of the three tables (``None`` where ``needs[a]`` is false) for the upstream ``grad``."""
    components = int(lines[0].shape[2])
    grads = [torch.zeros_like(line) if need else None for line, need in zip(lines, needs)]
    pointers = [g.data_ptr() if g is not None else None for g in grads]
    status = native_library().tf_local_cp_backward(
        samples.shape[0], components, samples.data_ptr(), weights.data_ptr(), rows.data_ptr(), frac.data_ptr(),
        *(line.data_ptr() for line in lines), int(reduce), grad.contiguous().data_ptr(), *pointers, _threads(samples.shape[0]),
    )
    if status != 0:
        raise RuntimeError("native local-tensor kernel refused its arguments")
    return grads


def neighbours(points: Tensor, origin: Tensor, cell: float, shape, table: Tensor, centres: Tensor, half_extent: float, k: int):
    """``ids [S, K]`` (int64, ``-1`` padded) and ``distances [S, K]`` of the ``K`` nearest cubes
    containing each point, nearest first (see :func:`tensorfield.cuda.local_tensors.find_neighbours`),
    or ``None`` when the kernel cannot take the tensors."""
    points, origin, centres = points.contiguous(), origin.float().contiguous(), centres.float().contiguous()
    table = table.contiguous()
    if points.dtype != torch.float32 or not usable(points, origin, table, centres):
        return None
    num = points.shape[0]
    ids = torch.empty(num, k, dtype=torch.int64)
    distances = torch.empty(num, k, dtype=torch.float32)
    shape_tensor = torch.tensor(list(shape), dtype=torch.int64)
    status = native_library().tf_local_neighbours(
        points.data_ptr(), num, origin.data_ptr(), float(cell), shape_tensor.data_ptr(), table.data_ptr(),
        table.shape[1], centres.data_ptr(), float(half_extent), k, ids.data_ptr(), distances.data_ptr(), _threads(num),
    )
    if status != 0:
        raise RuntimeError("native local-tensor lookup refused its arguments")
    return ids, distances


#: The fused kernel's bound on K (a fixed-size list per sample).
MAX_QUERY_NEIGHBOURS = 64


def query(points: Tensor, index, lines, k: int, eps: float, reduce: bool, keep: bool):
    """Fused lookup + aggregation of one scale (:func:`~tensorfield.cuda.local_tensors.query_features`).

    Returns ``(out, ids, weights)``: ``out`` ``[S]`` (``reduce``) or ``[S, R]``, and, when ``keep``,
    the chosen tensors ``ids [S, K]`` (int64, ``-1`` padded) and normalised ``weights [S, K]`` for
    :func:`query_backward` (else ``None``); or ``None`` when the kernel cannot take the tensors.
    """
    if k > MAX_QUERY_NEIGHBOURS or points.dtype != torch.float32 or lines[0].dtype != torch.float32:
        return None
    points = points.contiguous()
    origin, centres, table = index.origin.float().contiguous(), index.centres.float().contiguous(), index.table.contiguous()
    if not usable(points, origin, table, centres, *lines):
        return None
    num = points.shape[0]
    cells, components = int(lines[0].shape[1]) - 1, int(lines[0].shape[2])
    out = torch.empty((num,) if reduce else (num, components), dtype=torch.float32)
    ids = torch.empty(num, k, dtype=torch.int64) if keep else None
    weights = torch.empty(num, k, dtype=torch.float32) if keep else None
    shape_tensor = torch.tensor(list(index.shape), dtype=torch.int64)
    status = native_library().tf_local_query(
        points.data_ptr(), num, origin.data_ptr(), float(index.cell), shape_tensor.data_ptr(), table.data_ptr(),
        table.shape[1], centres.data_ptr(), float(index.half_extent), k, float(eps), cells, components,
        *(line.data_ptr() for line in lines), int(reduce), out.data_ptr(),
        ids.data_ptr() if keep else None, weights.data_ptr() if keep else None, _threads(num * k),
    )
    if status != 0:
        raise RuntimeError("native local-tensor query refused its arguments")
    return out, ids, weights


def query_backward(points: Tensor, centres: Tensor, half_extent: float, lines, ids: Tensor, weights: Tensor, grad: Tensor, reduce: bool, needs) -> list:
    """Gradients of the three ``[T, V, R]`` tables for the upstream ``grad`` (``None`` where not needed)."""
    cells, components = int(lines[0].shape[1]) - 1, int(lines[0].shape[2])
    grads = [torch.zeros_like(line) if need else None for line, need in zip(lines, needs)]
    pointers = [g.data_ptr() if g is not None else None for g in grads]
    status = native_library().tf_local_query_backward(
        points.data_ptr(), points.shape[0], centres.data_ptr(), float(half_extent), ids.shape[1], cells, components,
        *(line.data_ptr() for line in lines), int(reduce), ids.data_ptr(), weights.data_ptr(),
        grad.contiguous().data_ptr(), *pointers, _threads(ids.numel()),
    )
    if status != 0:
        raise RuntimeError("native local-tensor query refused its arguments")
    return grads
