"""Umeyama similarity and camera errors (datasets/alignment.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from tensorfield.datasets.alignment import camera_errors, umeyama


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(20, 3))
    rotation = Rotation.from_euler("xyz", [30, -50, 120], degrees=True).as_matrix()
    target = 2.5 * source @ rotation.T + np.array([1.0, -2.0, 0.5])
    fit = umeyama(source, target)
    assert fit.scale == pytest.approx(2.5, rel=1e-9)
    np.testing.assert_allclose(fit.rotation, rotation, atol=1e-9)
    np.testing.assert_allclose(fit.apply(source), target, atol=1e-9)


def test_umeyama_never_returns_a_reflection():
    # a mirrored target: the best proper rotation, not the reflection, must come back
    source = np.random.default_rng(1).normal(size=(10, 3))
    fit = umeyama(source, source * np.array([1.0, 1.0, -1.0]))
    assert np.linalg.det(fit.rotation) == pytest.approx(1.0)


def test_umeyama_rejects_degenerate_input():
    with pytest.raises(ValueError, match="at least 3"):
        umeyama(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="coincide"):
        umeyama(np.ones((4, 3)), np.zeros((4, 3)))


def test_camera_errors_are_zero_for_a_similar_copy_and_see_a_tilted_camera():
    rng = np.random.default_rng(2)
    rotations = Rotation.random(6, random_state=3).as_matrix()
    reference = np.concatenate([rotations, rng.normal(size=(6, 3, 1)) * 3.0], axis=2)
    world = Rotation.from_euler("z", 70, degrees=True).as_matrix()
    estimated = np.concatenate([world @ rotations, 0.5 * (reference[:, :, 3] @ world.T)[..., None] + 1.0], axis=2)
    errors = camera_errors(estimated, reference)
    assert errors.rotation_deg.max() < 1e-6 and errors.position.max() < 1e-9
    tilted = estimated.copy()
    tilted[0, :, :3] = tilted[0, :, :3] @ Rotation.from_euler("x", 2.0, degrees=True).as_matrix()
    errors = camera_errors(tilted, reference)
    assert errors.rotation_deg[0] == pytest.approx(2.0, abs=1e-6)
    assert errors.rotation_deg[1:].max() < 1e-6
