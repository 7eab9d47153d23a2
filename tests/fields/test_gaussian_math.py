"""Tests of :mod:`tensorfield.fields.gaussian_math` and :mod:`tensorfield.fields.gaussian_loss`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tensorfield.fields.gaussian_loss import photometric_loss, ssim, ssim_map
from tensorfield.fields.gaussian_math import (
    collapse_spherindrical,
    covariance_3d,
    covariance_4d,
    covariance_to_scales_quats,
    eval_spherindrical,
    left_isoclinic,
    mean_neighbour_distance,
    mean_velocity,
    nearest_neighbours,
    num_sh_bases,
    quat_to_rotmat,
    right_isoclinic,
    rotation_4d,
    rotmat_to_quat,
    sh_basis,
    slice_4d,
    temporal_variance,
)


def random_quats(n: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    q = torch.randn(n, 4, generator=generator, dtype=dtype)
    return q / q.norm(dim=-1, keepdim=True)


def quat_multiply(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Hamilton product of ``(w, x, y, z)`` quaternions, written out."""
    a1, b1, c1, d1 = p.unbind(-1)
    a2, b2, c2, d2 = q.unbind(-1)
    return torch.stack(
        [
            a1 * a2 - b1 * b2 - c1 * c2 - d1 * d2,
            a1 * b2 + b1 * a2 + c1 * d2 - d1 * c2,
            a1 * c2 - b1 * d2 + c1 * a2 + d1 * b2,
            a1 * d2 + b1 * c2 - c1 * b2 + d1 * a2,
        ],
        -1,
    )


def conjugate(q: torch.Tensor) -> torch.Tensor:
    return q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)


# ------------------------------------------------------------------------------ rotations
def test_quat_to_rotmat_hand_cases():
    # 90 degrees about z: x -> y
    q = torch.tensor([[math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]], dtype=torch.float64)
    R = quat_to_rotmat(q)[0]
    assert torch.allclose(R @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0.0, 1, 0], dtype=torch.float64), atol=1e-12)
    # identity, and scale invariance
    assert torch.allclose(quat_to_rotmat(torch.tensor([[3.0, 0, 0, 0]])), torch.eye(3)[None])


def test_rotmat_quat_round_trip():
    g = torch.Generator().manual_seed(0)
    q = random_quats(500, g)
    q = torch.where(q[:, :1] < 0, -q, q)
    back = rotmat_to_quat(quat_to_rotmat(q))
    assert torch.allclose(back, q, atol=1e-10)


def test_isoclinic_factors_are_quaternion_products():
    g = torch.Generator().manual_seed(1)
    ql, qr, v = random_quats(20, g), random_quats(20, g), torch.randn(20, 4, generator=g, dtype=torch.float64)
    assert torch.allclose((left_isoclinic(ql) @ v[..., None])[..., 0], quat_multiply(ql, v), atol=1e-12)
    assert torch.allclose((right_isoclinic(qr) @ v[..., None])[..., 0], quat_multiply(v, conjugate(qr)), atol=1e-12)


def test_rotation_4d_is_orthonormal_and_factors_commute():
    g = torch.Generator().manual_seed(2)
    ql, qr = random_quats(64, g), random_quats(64, g)
    R = rotation_4d(ql, qr)
    eye = torch.eye(4, dtype=torch.float64).expand(64, 4, 4)
    assert torch.allclose(R @ R.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(64, dtype=torch.float64), atol=1e-12)
    L, Rr = left_isoclinic(ql), right_isoclinic(qr)
    assert torch.allclose(L @ Rr, Rr @ L, atol=1e-12)  # left and right isoclinic rotations commute
    # isoclinic: every vector is turned by the same angle, cos = w of the quaternion
    v = torch.randn(64, 4, generator=g, dtype=torch.float64)
    cos_left = ((L @ v[..., None])[..., 0] * v).sum(-1) / (v * v).sum(-1)
    assert torch.allclose(cos_left, ql[:, 0], atol=1e-12)


def test_equal_quaternions_rotate_space_only():
    """q_l = q_r = q: v -> q v q̄ keeps the real part (time) and rotates (i, j, k) = (z, y, x)."""
    g = torch.Generator().manual_seed(3)
    q = random_quats(10, g)
    R = rotation_4d(q, q)
    assert torch.allclose(R[:, 3, :3], torch.zeros(10, 3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(R[:, :3, 3], torch.zeros(10, 3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(R[:, 3, 3], torch.ones(10, dtype=torch.float64), atol=1e-12)
    reverse = torch.eye(3, dtype=torch.float64).flip(0)
    assert torch.allclose(R[:, :3, :3], reverse @ quat_to_rotmat(q) @ reverse, atol=1e-12)


# ------------------------------------------------------------------------------ 4D slicing
def conditional_by_precision(mean: torch.Tensor, cov: torch.Tensor, t: float):
    """Independent route: condition through the precision matrix (float64)."""
    precision = torch.linalg.inv(cov)
    cond_cov = torch.linalg.inv(precision[:3, :3])
    cond_mean = mean[:3] - cond_cov @ precision[:3, 3] * (t - mean[3])
    return cond_mean, cond_cov


def test_slice_matches_conditional_gaussian_float64():
    g = torch.Generator().manual_seed(4)
    n = 32
    scales = torch.exp(torch.randn(n, 4, generator=g, dtype=torch.float64) * 0.5)
    ql, qr = random_quats(n, g), random_quats(n, g)
    means = torch.randn(n, 4, generator=g, dtype=torch.float64)
    cov = covariance_4d(scales, ql, qr)
    # covariance = R S S R^T, checked against a direct product
    R = rotation_4d(ql, qr)
    assert torch.allclose(cov, R @ torch.diag_embed(scales**2) @ R.transpose(1, 2), atol=1e-12)
    t = 0.37
    m3, c3, marginal = slice_4d(means, cov, t)
    for i in range(n):
        ref_mean, ref_cov = conditional_by_precision(means[i], cov[i], t)
        assert torch.allclose(m3[i], ref_mean, atol=1e-9, rtol=1e-9)
        assert torch.allclose(c3[i], ref_cov, atol=1e-9, rtol=1e-9)
        # marginal: ratio of the integrated 4D density at t to that at mu_t, via the precision
        # (Schur complement of the spatial block gives 1 / Sigma_44)
        precision = torch.linalg.inv(cov[i])
        schur = precision[3, 3] - precision[3, :3] @ torch.linalg.solve(precision[:3, :3], precision[:3, 3])
        assert torch.isclose(marginal[i], torch.exp(-0.5 * schur * (t - means[i, 3]) ** 2), rtol=1e-9)
    assert torch.allclose(temporal_variance(scales, ql, qr), cov[:, 3, 3], atol=1e-12)


def test_temporal_marginal_by_quadrature():
    """Integrate one 4D Gaussian over space on a grid: the t-profile is exp(-(t - mu)^2 / (2 S44))."""
    scales = torch.tensor([[0.3, 0.2, 0.25, 0.3]], dtype=torch.float64)
    ql = torch.tensor([[0.9, 0.2, -0.3, 0.1]], dtype=torch.float64)
    qr = torch.tensor([[0.8, -0.1, 0.4, 0.3]], dtype=torch.float64)
    cov = covariance_4d(scales, ql, qr)[0]
    precision = torch.linalg.inv(cov)
    axis = torch.linspace(-2.0, 2.0, 61, dtype=torch.float64)
    xyz = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)

    def mass(t: float) -> float:
        x = torch.cat([xyz, torch.full((xyz.shape[0], 1), t, dtype=torch.float64)], 1)
        return float(torch.exp(-0.5 * ((x @ precision) * x).sum(-1)).sum())

    _, _, marginal = slice_4d(torch.zeros(1, 4, dtype=torch.float64), cov[None], 0.35)
    assert mass(0.35) / mass(0.0) == pytest.approx(float(marginal[0]), rel=1e-6)


def test_static_limit_has_no_motion():
    """q_l = q_r: space and time decouple, the slice is the 3D Gaussian at every time."""
    g = torch.Generator().manual_seed(5)
    q = random_quats(8, g)
    scales = torch.exp(torch.randn(8, 4, generator=g, dtype=torch.float64))
    means = torch.randn(8, 4, generator=g, dtype=torch.float64)
    cov = covariance_4d(scales, q, q)
    m_a, c_a, _ = slice_4d(means, cov, -1.0)
    m_b, c_b, _ = slice_4d(means, cov, 2.0)
    assert torch.allclose(m_a, means[:, :3], atol=1e-12) and torch.allclose(m_a, m_b, atol=1e-12)
    assert torch.allclose(c_a, c_b, atol=1e-12)


def test_covariance_to_scales_quats_round_trip():
    g = torch.Generator().manual_seed(6)
    scales = torch.exp(torch.randn(50, 3, generator=g, dtype=torch.float64))
    quats = random_quats(50, g)
    cov = covariance_3d(scales, quats)
    s2, q2 = covariance_to_scales_quats(cov)
    assert torch.allclose(covariance_3d(s2, q2), cov, atol=1e-9, rtol=1e-9)


# ------------------------------------------------------------------------------ harmonics
def test_sh_basis_is_orthonormal():
    """∫ Y_i Y_j dΩ = δ_ij on a fine (θ, φ) grid: catches a wrong constant or polynomial."""
    theta = (torch.arange(200, dtype=torch.float64) + 0.5) * math.pi / 200
    phi = (torch.arange(400, dtype=torch.float64) + 0.5) * 2 * math.pi / 400
    th, ph = torch.meshgrid(theta, phi, indexing="ij")
    dirs = torch.stack([th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()], -1).reshape(-1, 3)
    weights = (th.sin() * (math.pi / 200) * (2 * math.pi / 400)).reshape(-1)
    Y = sh_basis(3, dirs)
    gram = Y.T @ (Y * weights[:, None])
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=2e-4)


def test_sh_hand_values():
    # +z: only m = 0 bases are non-zero; Y_10 = C1, Y_20 = 2 C2[2], Y_30 = 2 C3[3]
    Y = sh_basis(3, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))[0]
    expected = torch.zeros(16, dtype=torch.float64)
    expected[0], expected[2], expected[6], expected[12] = 0.28209479177387814, 0.4886025119029199, 2 * 0.31539156525252005, 2 * 0.3731763325901154
    assert torch.allclose(Y, expected, atol=1e-12)


def test_spherindrical_reduces_to_sh():
    g = torch.Generator().manual_seed(7)
    n = 40
    table = torch.randn(n, 16 * 3, 3, generator=g, dtype=torch.float64)
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    dt = torch.randn(n, generator=g, dtype=torch.float64)
    plain = eval_spherindrical(table[:, :16], dirs, 3)
    # temporal degree 0: the first block only, whatever dt
    assert torch.allclose(eval_spherindrical(table, dirs, 3, dt, time_degree=0), plain)
    # at the reference time (dt = 0) every cosine is 1: SH of the summed blocks
    summed = table[:, :16] + table[:, 16:32] + table[:, 32:48]
    at_ref = eval_spherindrical(table, dirs, 3, torch.zeros(n, dtype=torch.float64), time_degree=2, period=3.0)
    assert torch.allclose(at_ref, eval_spherindrical(summed, dirs, 3), atol=1e-12)
    # elsewhere: hand-written cos(2 pi n dt / T) weights, and the collapsed table agrees
    T = 2.5
    full = eval_spherindrical(table, dirs, 3, dt, time_degree=2, period=T)
    by_hand = sum(
        torch.cos(2 * math.pi * k * dt / T)[:, None] * eval_spherindrical(table[:, 16 * k : 16 * (k + 1)], dirs, 3)
        for k in range(3)
    )
    assert torch.allclose(full, by_hand, atol=1e-12)
    collapsed = collapse_spherindrical(table, dt, 2, T)
    assert torch.allclose(eval_spherindrical(collapsed, dirs, 3), full, atol=1e-12)
    # periodic in dt with period T, even in dt
    assert torch.allclose(eval_spherindrical(table, dirs, 3, dt + T, time_degree=2, period=T), full, atol=1e-9)
    assert torch.allclose(eval_spherindrical(table, dirs, 3, -dt, time_degree=2, period=T), full, atol=1e-12)


def test_active_degree_uses_leading_coefficients():
    g = torch.Generator().manual_seed(8)
    table = torch.randn(5, 16, 3, generator=g)
    dirs = torch.nn.functional.normalize(torch.randn(5, 3, generator=g), dim=-1)
    assert torch.allclose(eval_spherindrical(table, dirs, 0), 0.28209479177387814 * table[:, 0])
    assert num_sh_bases(2) == 9


# ------------------------------------------------------------------------------ neighbours, SSIM
def test_mean_neighbour_distance():
    points = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [10.0, 10, 10]])
    d = mean_neighbour_distance(points)
    assert d[0] == pytest.approx(math.sqrt((1 + 4 + 9) / 3), rel=1e-6)


def test_ssim_matches_reference_interior():
    """Our SSIM map agrees with scikit-image (same window) away from the zero-padded border."""
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(9)
    a = torch.rand(40, 40, 3, generator=g, dtype=torch.float64)
    b = (a + 0.1 * torch.randn(40, 40, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    _, full = structural_similarity(
        a.numpy(), b.numpy(), channel_axis=-1, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1.0, full=True,
    )
    ours = ssim_map(a, b)[0].permute(1, 2, 0).numpy()
    assert np.allclose(ours[5:-5, 5:-5], full[5:-5, 5:-5], atol=1e-6)
    assert float(ssim(a, b)) == pytest.approx(float(ours.mean()))
    assert float(ssim(a, a)) == pytest.approx(1.0)


def test_photometric_loss_gradient():
    g = torch.Generator().manual_seed(10)
    target = torch.rand(2, 16, 16, 3, generator=g)
    pred = torch.rand(2, 16, 16, 3, generator=g, requires_grad=True)
    loss, l1, s = photometric_loss(pred, target, 0.2)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.8 * float(l1.detach()) + 0.2 * (1 - float(s.detach())), rel=1e-6)
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_nearest_neighbours_tree_equals_brute_force():
    g = torch.Generator().manual_seed(4)
    points = torch.rand(700, 3, generator=g, dtype=torch.float64)
    tree = nearest_neighbours(points, 20)
    brute = nearest_neighbours(points, 20, chunk=128, use_tree=False)
    assert tree.shape == (700, 20) and tree.dtype == torch.long
    assert torch.equal(tree, brute)
    assert torch.equal(tree[:, 0], torch.arange(700))  # itself first
    d = torch.cdist(points, points)
    expected = d.argsort(dim=1)[:, :20]
    assert torch.equal(tree, expected)
    assert nearest_neighbours(points[:5], 20).shape == (5, 5)  # k capped at the count
    assert nearest_neighbours(points[:0], 20).shape == (0, 0)


def test_mean_velocity_is_the_conditional_mean_shift():
    """v = mean of the slice at t = mu_t + dt minus the spatial mean (slice_4d per Gaussian)."""
    g = torch.Generator().manual_seed(5)
    n = 50
    scales = torch.exp(torch.randn(n, 4, generator=g, dtype=torch.float64) * 0.5)
    ql, qr = torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randn(n, 4, generator=g, dtype=torch.float64)
    means = torch.randn(n, 4, generator=g, dtype=torch.float64)
    velocity = mean_velocity(scales, ql, qr, 0.1)
    shifted, _, _ = slice_4d(means, covariance_4d(scales, ql, qr), means[:, 3] + 0.1)
    assert torch.allclose(velocity, shifted - means[:, :3], atol=1e-12)
    # an unrotated Gaussian (identity quaternions) does not move
    identity = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64).expand(n, 4)
    assert torch.allclose(mean_velocity(scales, identity, identity, 0.1), torch.zeros(n, 3, dtype=torch.float64), atol=1e-12)
