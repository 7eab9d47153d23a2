"""Tests of fields/migs_parts.py: Gaussian skinning (posed means and covariances) against a
float64 per-Gaussian loop, values and gradients with respect to every input; quaternion products
and the pose code by hand."""

from __future__ import annotations

import math

import pytest
import torch
from tensorfield.fields.migs_parts import pose_code, quat_multiply, skin_gaussians
from tensorfield.fields.skeleton import axis_angle_to_matrix

DOUBLE = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``q v q*`` for a unit quaternion ``q`` (w, x, y, z) and a vector ``v``, by Hamilton products."""
    w, x, y, z = q

    def product(a, b):
        return (
            a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3],
            a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2],
            a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1],
            a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0],
        )

    turned = product(product((w, x, y, z), (0.0 * w, v[0], v[1], v[2])), (w, -x, -y, -z))
    return torch.stack(turned[1:])


def _reference_skin(means, log_scales, quats, logits, transforms):
    """Float64 loops: w = softmax(l); [A | b] = sum_j w_j G_j; mu' = A mu + b;
    Sigma' = sum_k s_k^2 (A R e_k)(A R e_k)^T with R e_k = q e_k q*."""
    out_means, out_covs = [], []
    for n in range(means.shape[0]):
        weights = torch.softmax(logits[n], dim=0)
        blended = sum(weights[j] * transforms[j] for j in range(transforms.shape[0]))
        linear, shift = blended[:3, :3], blended[:3, 3]
        out_means.append(linear @ means[n] + shift)
        unit = quats[n] / quats[n].norm()
        covariance = torch.zeros(3, 3, dtype=DOUBLE)
        for k in range(3):
            axis = linear @ _rotate(unit, torch.eye(3, dtype=DOUBLE)[k])
            covariance = covariance + torch.exp(2 * log_scales[n, k]) * torch.outer(axis, axis)
        out_covs.append(covariance)
    return torch.stack(out_means), torch.stack(out_covs)


@pytest.mark.parametrize("count, joints, seed", [(1, 2, 0), (6, 5, 1), (13, 19, 2)])
def test_skinned_means_and_covariances_match_the_float64_loop_with_gradients(count, joints, seed):
    g = torch.Generator().manual_seed(seed)
    transforms = torch.eye(4, dtype=DOUBLE).repeat(joints, 1, 1)
    transforms[:, :3, :3] = axis_angle_to_matrix(torch.randn(joints, 3, generator=g, dtype=DOUBLE))
    transforms[:, :3, 3] = torch.randn(joints, 3, generator=g, dtype=DOUBLE)
    inputs = {
        "means": torch.randn(count, 3, generator=g, dtype=DOUBLE),
        "log_scales": 0.3 * torch.randn(count, 3, generator=g, dtype=DOUBLE) - 1.0,
        "quats": torch.randn(count, 4, generator=g, dtype=DOUBLE),
        "logits": torch.randn(count, joints, generator=g, dtype=DOUBLE),
        "transforms": transforms,
    }
    upstream_means = torch.randn(count, 3, generator=g, dtype=DOUBLE)
    upstream_covs = torch.randn(count, 3, 3, generator=g, dtype=DOUBLE)

    def run(function, dtype):
        leaves = {name: value.to(dtype).clone().requires_grad_(True) for name, value in inputs.items()}
        means, covs = function(*leaves.values())[:2]
        ((means * upstream_means.to(dtype)).sum() + (covs * upstream_covs.to(dtype)).sum()).backward()
        return means.detach().double(), covs.detach().double(), {name: leaf.grad.double() for name, leaf in leaves.items()}

    fast_means, fast_covs, fast_grads = run(skin_gaussians, torch.float32)
    ref_means, ref_covs, ref_grads = run(_reference_skin, DOUBLE)
    torch.testing.assert_close(fast_means, ref_means, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_covs, ref_covs, rtol=1e-5, atol=1e-6)
    for name in inputs:
        torch.testing.assert_close(fast_grads[name], ref_grads[name], rtol=2e-4, atol=2e-5, msg=name)
    # the same code in float64 agrees to round-off
    exact_means, exact_covs, exact_grads = run(skin_gaussians, DOUBLE)
    torch.testing.assert_close(exact_covs, ref_covs, rtol=1e-11, atol=1e-13)
    for name in inputs:
        torch.testing.assert_close(exact_grads[name], ref_grads[name], rtol=1e-9, atol=1e-11, msg=name)


def test_quaternion_products_and_pose_code_by_hand():
    i, j, k = torch.eye(4)[1], torch.eye(4)[2], torch.eye(4)[3]
    torch.testing.assert_close(quat_multiply(i, j), k)  # i j = k
    torch.testing.assert_close(quat_multiply(j, i), -k)  # j i = -k
    torch.testing.assert_close(quat_multiply(k, k), -torch.eye(4)[0])  # k^2 = -1
    # a quarter turn about z composed with itself is a half turn: (cos 45, 0, 0, sin 45)^2 = (0, 0, 0, 1)
    quarter = torch.tensor([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])
    torch.testing.assert_close(quat_multiply(quarter, quarter), k, rtol=0, atol=1e-7)
    # the pose code is zero at rest and holds the first two columns of R - I per joint
    rest = torch.zeros(3, 3)
    assert pose_code(rest).shape == (18,) and float(pose_code(rest).abs().max()) == 0.0
    turned = torch.zeros(3, 3)
    turned[1, 2] = math.pi / 2  # joint 1, quarter turn about z: R e_x = e_y, R e_y = -e_x
    code = pose_code(turned).reshape(3, 3, 2)
    torch.testing.assert_close(code[1], torch.tensor([[-1.0, -1.0], [1.0, -1.0], [0.0, 0.0]]), rtol=0, atol=1e-6)
    assert float(code[[0, 2]].abs().max()) == 0.0
