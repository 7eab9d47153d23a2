"""Similarity alignment of recovered cameras to reference cameras (for SfM evaluation).

Structure from motion recovers cameras only up to a similarity (scale, rotation, translation) of
the world. :func:`umeyama` finds the least-squares similarity between two point sets (Umeyama,
"Least-squares estimation of transformation parameters between two point patterns", PAMI 1991,
eqs. 34-42) and :func:`camera_errors` applies it to camera centres and rotations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Similarity:
    """``x -> scale * rotation @ x + translation``.

    Attributes:
        scale: positive factor.
        rotation: ``[3, 3]`` proper rotation.
        translation: ``[3]``.
    """

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map ``points [N, 3]``."""
        return self.scale * np.asarray(points) @ self.rotation.T + self.translation


def umeyama(source: np.ndarray, target: np.ndarray, with_scale: bool = True) -> Similarity:
    """The similarity minimising ``sum_i |target_i - (s R source_i + t)|^2``.

    With ``mu, sigma^2`` the means and source variance and ``Sigma = cov(target, source)`` with SVD
    ``U D V^T``: ``R = U S V^T`` where ``S = diag(1, 1, det(U V^T))`` keeps ``R`` a rotation,
    ``s = tr(D S) / sigma^2`` and ``t = mu_target - s R mu_source``.

    Args:
        source, target: ``[N, 3]`` corresponding points, ``N >= 3`` and not all collinear.
        with_scale: estimate ``s`` (else ``s = 1``, a rigid fit).

    Raises:
        ValueError: shapes differ, fewer than 3 points, or the source has no spread.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3:
        raise ValueError(f"need two [N, 3] arrays, got {source.shape} and {target.shape}")
    if source.shape[0] < 3:
        raise ValueError(f"need at least 3 point pairs, got {source.shape[0]}")
    mean_source, mean_target = source.mean(0), target.mean(0)
    centred_source, centred_target = source - mean_source, target - mean_target
    variance = float((centred_source**2).sum(1).mean())
    if variance <= 1e-24:
        raise ValueError("source points all coincide")
    covariance = centred_target.T @ centred_source / source.shape[0]
    u, d, vt = np.linalg.svd(covariance)
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / variance) if with_scale else 1.0
    return Similarity(scale, rotation, mean_target - scale * rotation @ mean_source)


@dataclass
class CameraErrors:
    """Per-camera errors after alignment.

    Attributes:
        similarity: the fitted map from the estimated to the reference world.
        rotation_deg: ``[N]`` angle of ``R_ref^T R_aligned`` in degrees.
        position: ``[N]`` distance between aligned and reference centres (reference units).
    """

    similarity: Similarity
    rotation_deg: np.ndarray
    position: np.ndarray


def camera_errors(estimated_c2w: np.ndarray, reference_c2w: np.ndarray) -> CameraErrors:
    """Align estimated cameras to reference ones by their centres and measure what is left.

    Both sets must use the same camera axes convention (e.g. OpenCV); the world frames may differ
    by any similarity.

    Args:
        estimated_c2w, reference_c2w: ``[N, 3, 4]`` camera-to-world matrices of the same cameras.
    """
    estimated = np.asarray(estimated_c2w, dtype=np.float64)
    reference = np.asarray(reference_c2w, dtype=np.float64)
    similarity = umeyama(estimated[:, :, 3], reference[:, :, 3])
    aligned_rotations = similarity.rotation[None] @ estimated[:, :, :3]
    relative = np.swapaxes(reference[:, :, :3], 1, 2) @ aligned_rotations
    # angle = atan2(sin, cos) with sin from the skew part: arccos of the trace alone loses
    # precision near 0, exactly the small errors this measures
    cosine = (np.trace(relative, axis1=1, axis2=2) - 1.0) / 2.0
    skew = relative - np.swapaxes(relative, 1, 2)
    sine = 0.5 * np.linalg.norm(np.stack([skew[:, 2, 1], skew[:, 0, 2], skew[:, 1, 0]], axis=1), axis=1)
    position = np.linalg.norm(similarity.apply(estimated[:, :, 3]) - reference[:, :, 3], axis=1)
    return CameraErrors(similarity, np.degrees(np.arctan2(sine, cosine)), position)
