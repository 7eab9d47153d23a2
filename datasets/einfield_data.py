"""User metric samples for Einstein fields: ``.npy`` / ``.npz`` / HDF5 files, validated on load.

Layout (documented in the README, "Einstein fields"):

* ``coords``: ``[N, 4]`` sample positions ``(x^0, x^1, x^2, x^3)`` in the chart of the metric
  (scattered points or a flattened grid);
* ``metric``: ``[N, 4, 4]`` symmetric ``g_ij``, or ``[N, 10]`` its independent components in the
  order of :data:`COMPONENTS` (upper triangle, row by row:
  ``g00 g01 g02 g03 g11 g12 g13 g22 g23 g33``);
* ``jacobian`` (optional): ``[N, 4, 4, 4]`` ``d_k g_ij`` (derivative index last) or
  ``[N, 10, 4]`` the same for the 10 components.

An ``.npz`` or HDF5 file holds these under the names above (HDF5: datasets at the root).
A ``.npy`` file holds one ``[N, 14]`` (or ``[N, 20]`` for the full matrix) float array: the four
coordinates followed by the 10 components (or the 16 entries of ``g`` row-major); no derivatives.

Every sample is checked: shapes, finite values, symmetry (``|g_ij - g_ji| <= 1e-6 max|g|``),
Lorentzian signature (one negative and three positive eigenvalues) and a non-degenerate
determinant (``|det g| > 1e-12 max|g|^4``). Each failure is one :class:`DatasetError` line naming
the file, the first bad sample's index and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tensorfield.datasets.errors import DatasetError, one_line
from torch import Tensor

COMPONENTS: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(4) for j in range(i, 4))
"""The 10 independent ``(i, j)`` entries of a symmetric 4x4 metric, in storage order."""

COMPONENT_NAMES: tuple[str, ...] = tuple(f"g{i}{j}" for i, j in COMPONENTS)

SYMMETRY_TOLERANCE = 1e-6
DETERMINANT_TOLERANCE = 1e-12


def to_components(matrix: Tensor) -> Tensor:
    """``[..., 4, 4]`` symmetric -> ``[..., 10]`` in :data:`COMPONENTS` order (any trailing
    derivative axes stay last: ``[..., 4, 4, D...]`` -> ``[..., 10, D...]`` via ``dims``)."""
    rows = torch.tensor([i for i, _ in COMPONENTS], device=matrix.device)
    cols = torch.tensor([j for _, j in COMPONENTS], device=matrix.device)
    return matrix[..., rows, cols]


def components_to_matrix(values: Tensor) -> Tensor:
    """``[..., 10]`` -> ``[..., 4, 4]`` symmetric (built with :func:`torch.stack`, so it works
    under :mod:`torch.func` transforms)."""
    index = {pair: k for k, pair in enumerate(COMPONENTS)}
    rows = [
        torch.stack([values[..., index[(min(i, j), max(i, j))]] for j in range(4)], dim=-1)
        for i in range(4)
    ]
    return torch.stack(rows, dim=-2)


def derivative_components(jacobian: Tensor) -> Tensor:
    """``[..., 4, 4, D]`` ``d_k g_ij`` -> ``[..., 10, D]`` (the derivative axis kept last)."""
    moved = jacobian.movedim(-1, -3)  # [..., D, 4, 4]
    return to_components(moved).movedim(-2, -1)


@dataclass
class MetricSamples:
    """Validated metric samples (float64).

    Attributes:
        coords: ``[N, 4]``.
        metric: ``[N, 4, 4]`` symmetric, Lorentzian.
        jacobian: ``[N, 4, 4, 4]`` ``d_k g_ij`` or ``None``.
        path: the file they came from.
    """

    coords: Tensor
    metric: Tensor
    jacobian: Tensor | None
    path: str


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            table = np.load(path, allow_pickle=False)
            if table.ndim != 2 or table.shape[1] not in (14, 20):
                raise DatasetError(
                    path,
                    f"a .npy sample table must be [N, 14] or [N, 20] (4 coordinates + 10 or 16 metric entries), got {list(table.shape)}",
                )
            metric = table[:, 4:] if table.shape[1] == 14 else table[:, 4:].reshape(-1, 4, 4)
            return {"coords": table[:, :4], "metric": metric}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        if suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as handle:
                return {
                    name: np.asarray(handle[name])
                    for name in handle
                    if isinstance(handle[name], h5py.Dataset)
                }
    except DatasetError:
        raise
    except Exception as err:  # noqa: BLE001 (unreadable or corrupt file: one line naming it)
        raise DatasetError(path, f"cannot read metric samples ({one_line(err)})") from None
    raise DatasetError(
        path, f"unsupported metric sample format '{suffix}' (use .npy, .npz, .h5 or .hdf5)"
    )


def _first_bad(mask: Tensor) -> int:
    return int(torch.nonzero(mask)[0, 0])


def validate_samples(
    coords: Tensor, metric: Tensor, jacobian: Tensor | None, path: str | Path
) -> None:
    """Raise a one-line :class:`DatasetError` for the first problem of the first bad sample.

    Args:
        coords: ``[N, 4]``; metric: ``[N, 4, 4]``; jacobian: ``[N, 4, 4, 4]`` or ``None``.
    """
    for name, array in (("coords", coords), ("metric", metric), ("jacobian", jacobian)):
        if array is None:
            continue
        bad = ~torch.isfinite(array.reshape(array.shape[0], -1)).all(dim=1)
        if bad.any():
            raise DatasetError(
                path, f"sample {_first_bad(bad)}: {name} holds NaN or infinite values"
            )
    scale = metric.abs().amax(dim=(-1, -2)).clamp_min(1e-300)
    asymmetry = (metric - metric.transpose(-1, -2)).abs().amax(dim=(-1, -2))
    bad = asymmetry > SYMMETRY_TOLERANCE * scale
    if bad.any():
        index = _first_bad(bad)
        raise DatasetError(
            path,
            f"sample {index}: metric is not symmetric (max |g_ij - g_ji| = {float(asymmetry[index]):.3g})",
        )
    determinant = torch.linalg.det(metric)
    bad = determinant.abs() <= DETERMINANT_TOLERANCE * scale**4
    if bad.any():
        index = _first_bad(bad)
        raise DatasetError(
            path, f"sample {index}: metric is degenerate (det g = {float(determinant[index]):.3g})"
        )
    eigenvalues = torch.linalg.eigvalsh(metric)
    negative = (eigenvalues < 0).sum(dim=-1)
    bad = negative != 1
    if bad.any():
        index = _first_bad(bad)
        values = ", ".join(f"{float(v):.3g}" for v in eigenvalues[index])
        raise DatasetError(
            path,
            f"sample {index}: metric is not Lorentzian (eigenvalues {values}; need one negative and three positive)",
        )
    if jacobian is not None:
        asymmetry = (jacobian - jacobian.transpose(-2, -3)).abs().amax(dim=(-1, -2, -3))
        bad = asymmetry > SYMMETRY_TOLERANCE * jacobian.abs().amax(dim=(-1, -2, -3)).clamp_min(
            1e-300
        )
        if bad.any():
            raise DatasetError(
                path,
                f"sample {_first_bad(bad)}: jacobian is not symmetric in its metric indices (d_k g_ij != d_k g_ji)",
            )


def load_metric_samples(path: str | Path) -> MetricSamples:
    """Read and validate user metric samples (layout in the module docstring).

    Raises:
        DatasetError: missing file, unsupported format, wrong shapes or a bad sample (one line).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "no such metric sample file")
    arrays = _read_arrays(path)
    for name in ("coords", "metric"):
        if name not in arrays:
            raise DatasetError(
                path, f"missing '{name}' (found: {', '.join(sorted(arrays)) or 'nothing'})"
            )
    try:
        coords = torch.as_tensor(np.asarray(arrays["coords"], dtype=np.float64))
        metric = torch.as_tensor(np.asarray(arrays["metric"], dtype=np.float64))
        jacobian = arrays.get("jacobian")
        jacobian = (
            None if jacobian is None else torch.as_tensor(np.asarray(jacobian, dtype=np.float64))
        )
    except (TypeError, ValueError) as err:
        raise DatasetError(path, f"metric samples are not numeric ({one_line(err)})") from None
    if coords.ndim != 2 or coords.shape[1] != 4 or coords.shape[0] == 0:
        raise DatasetError(path, f"coords must be [N, 4] with N >= 1, got {list(coords.shape)}")
    n = coords.shape[0]
    if tuple(metric.shape) == (n, 10):
        metric = components_to_matrix(metric)
    elif tuple(metric.shape) != (n, 4, 4):
        raise DatasetError(
            path,
            f"metric must be [N, 4, 4] or [N, 10] with N = {n} (the number of coords), got {list(metric.shape)}",
        )
    if jacobian is not None:
        if tuple(jacobian.shape) == (n, 10, 4):
            jacobian = components_to_matrix(jacobian.movedim(-1, -2)).movedim(-3, -1)
        elif tuple(jacobian.shape) != (n, 4, 4, 4):
            raise DatasetError(
                path,
                f"jacobian must be [N, 4, 4, 4] or [N, 10, 4] with N = {n}, got {list(jacobian.shape)}",
            )
    validate_samples(coords, metric, jacobian, path)
    return MetricSamples(coords, metric, jacobian, str(path))
