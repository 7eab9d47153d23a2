"""The input frame of a run: where its scene transform is recorded and how exports return to it.

Loaders normalise COLMAP and nerfstudio scenes into the model's box
(:mod:`tensorfield.datasets.normalize`): ``x_model = s R x_input + t``. A run records that
similarity in ``RUN/scene_transform.json`` (``matrix`` ``[4, 4]``, ``scale``, ``mode``) when
training starts, so exports need not trust the data folder to be unchanged.
``tensorfield export`` maps its output back with the inverse (``x_input = R^T (x_model - t) / s``)
unless ``--normalized`` is given:

* mesh vertices and point clouds: :func:`tensorfield.engine.export.apply_similarity`;
* Gaussian splats: means as points, log-scales ``+ log(1/s)``, rotations composed with ``R^T``
  and the view-dependent colour (SH degree >= 1) rotated with the frame (:func:`rotate_sh`),
  so a splat viewer shows the same colours from the same (input-frame) viewpoints;
* cameras (``export cameras``): :mod:`.camera_export`.

Runs from before the record existed, or whose data has no input frame (coordinate models), fall
back to the transform of the loaded data (:attr:`SceneInfo.scene_transform`), else none.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tensorfield.datasets.normalize import SceneTransform
from tensorfield.fields.base import SceneInfo

TRANSFORM_FILE = "scene_transform.json"


def record_scene_transform(run_dir: str | os.PathLike, info: SceneInfo) -> Path | None:
    """Write ``RUN/scene_transform.json`` from the data's :class:`SceneInfo` (nothing when the
    data has no input frame). Returns the file written, or ``None``."""
    if info.scene_transform is None:
        return None
    matrix = info.scene_transform.detach().cpu().double().numpy()
    mode = "none" if np.array_equal(matrix, np.eye(4)) else "normalized"
    path = Path(run_dir) / TRANSFORM_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return SceneTransform(matrix, mode).save(path)


def run_scene_transform(run_dir: str | os.PathLike, info: SceneInfo | None = None) -> SceneTransform | None:
    """The run's input -> model similarity: the recorded file, else ``info``'s, else ``None``.

    Raises:
        ValueError: a malformed ``scene_transform.json`` (one line naming it).
    """
    path = Path(run_dir) / TRANSFORM_FILE
    if path.is_file():
        return SceneTransform.load(path)
    if info is not None and info.scene_transform is not None:
        return SceneTransform(info.scene_transform.detach().cpu().double().numpy(), "data")
    return None


def to_input_frame(run_dir: str | os.PathLike, info: SceneInfo | None, normalized: bool = False) -> np.ndarray | None:
    """``[4, 4]`` model -> input similarity for an export, ``None`` when there is nothing to undo
    (``normalized`` asked for, no transform, or the identity)."""
    if normalized:
        return None
    transform = run_scene_transform(run_dir, info)
    if transform is None or transform.is_identity:
        return None
    return transform.inverse()


def rotate_sh(sh_rest: torch.Tensor | np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """SH coefficients of degree >= 1 for the world turned by ``rotation``.

    A colour ``f(d) = sum_k c_k Y_k(d)`` seen along ``d`` must read ``f'(R d) = f(d)``. Each band
    ``l`` is closed under rotations, ``Y_l(R^T d) = D_l Y_l(d)``, so ``c'_l = D_l^T c_l``; ``D_l^T``
    is solved by least squares on sample directions (exact up to rounding: the band is closed).

    Args:
        sh_rest: ``[N, K - 1, 3]`` coefficients after the DC term, ``K = (degree + 1)^2``.
        rotation: ``[3, 3]`` rotation from the frame they are in to the new frame.

    Returns:
        ``[N, K - 1, 3]`` float32 coefficients in the new frame.
    """
    from tensorfield.cuda.rasterize import sh_basis

    coefficients = torch.as_tensor(np.asarray(sh_rest), dtype=torch.float64)
    count = coefficients.shape[1] + 1
    degree = int(round(count**0.5)) - 1
    if (degree + 1) ** 2 != count:
        raise ValueError(f"sh_rest has {count - 1} coefficients per channel, not (degree + 1)^2 - 1")
    if degree == 0:
        return coefficients.float().numpy()
    generator = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(256, 3, dtype=torch.float64, generator=generator), dim=-1)
    turned = directions @ torch.as_tensor(rotation, dtype=torch.float64)  # rows are R^T d
    basis, basis_turned = sh_basis(degree, directions), sh_basis(degree, turned)
    out = coefficients.clone()
    for band in range(1, degree + 1):
        columns = slice(band * band, (band + 1) * (band + 1))
        d_transposed = torch.linalg.lstsq(basis[:, columns], basis_turned[:, columns]).solution
        # coefficients are indexed from 1 (the DC term is not in sh_rest)
        rows = slice(band * band - 1, (band + 1) * (band + 1) - 1)
        out[:, rows] = torch.einsum("ij,njc->nic", d_transposed, coefficients[:, rows])
    return out.float().numpy()


def splats_to_frame(matrix: np.ndarray, means, sh_rest, log_scales, quats):
    """Gaussian splats moved by the similarity ``matrix`` ``[4, 4]`` (see the module docstring).

    Args:
        means: ``[N, 3]``; sh_rest: ``[N, K - 1, 3]`` or ``None``; log_scales: ``[N, 3]``;
            quats: ``[N, 4]`` ``(w, x, y, z)``.

    Returns:
        ``(means, sh_rest, log_scales, quats)`` as float32 numpy (``sh_rest`` ``None`` if given so).
    """
    from tensorfield.engine.export import apply_similarity

    as_numpy = lambda a: a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    moved, scales, turned = apply_similarity(matrix, as_numpy(means), as_numpy(log_scales), as_numpy(quats))
    if sh_rest is not None:
        rotation = np.asarray(matrix, dtype=np.float64)[:3, :3]
        sh_rest = rotate_sh(as_numpy(sh_rest), rotation / np.cbrt(np.linalg.det(rotation)))
    return moved, sh_rest, scales, turned


__all__ = ["TRANSFORM_FILE", "record_scene_transform", "rotate_sh", "run_scene_transform", "splats_to_frame", "to_input_frame"]
