"""Tests of fields/skeleton.py: forward kinematics written out by hand, LBS against a float64
loop reference (values and gradients), nearest-bone weights and the validation messages."""

from __future__ import annotations

import math

import pytest
import torch
from tensorfield.cuda.rasterize import quat_to_rotmat
from tensorfield.fields.skeleton import (
    Skeleton,
    axis_angle_to_matrix,
    bone_distances,
    check_rotations,
    linear_blend_skinning,
    nearest_bone_weights,
    skew,
    skin_orientations,
    validate_parents,
)

DOUBLE = torch.float64
HALF_PI = math.pi / 2


def _chain() -> Skeleton:
    return Skeleton(
        [-1, 0, 1], [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 2.0]], ["base", "middle", "tip"]
    )


def _branching(seed: int = 0) -> Skeleton:
    """Five joints: root -> a -> b, root -> c -> d, jittered rest positions."""
    generator = torch.Generator().manual_seed(seed)
    rest = torch.tensor(
        [[0, 0, 0], [0, 0, 1], [0, 0.2, 2], [0.8, 0, 0.1], [1.6, 0.1, 0.0]], dtype=DOUBLE
    )
    rest = rest + 0.05 * torch.randn(5, 3, generator=generator, dtype=DOUBLE)
    return Skeleton([-1, 0, 1, 0, 3], rest)


# ====================================================================== rotations
def test_axis_angle_matches_the_matrix_exponential_and_is_smooth_at_zero():
    generator = torch.Generator().manual_seed(1)
    vectors = torch.cat([torch.randn(6, 3, generator=generator, dtype=DOUBLE) * 1.5,
                         torch.randn(3, 3, generator=generator, dtype=DOUBLE) * 1e-6,
                         torch.zeros(1, 3, dtype=DOUBLE)])  # fmt: skip
    torch.testing.assert_close(
        axis_angle_to_matrix(vectors), torch.linalg.matrix_exp(skew(vectors)), rtol=0, atol=1e-13
    )
    torch.testing.assert_close(
        axis_angle_to_matrix(torch.tensor([0.0, 0.0, HALF_PI], dtype=DOUBLE)),
        torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=DOUBLE), rtol=0, atol=1e-15,
    )  # fmt: skip
    for point in (vectors[0], vectors[7], vectors[9]):  # large, tiny, exactly zero
        assert torch.autograd.gradcheck(axis_angle_to_matrix, (point.clone().requires_grad_(),))


# ====================================================================== forward kinematics
def test_forward_kinematics_of_a_three_joint_chain_by_hand():
    skeleton = _chain()
    rotations = torch.tensor(
        [[0.0, 0.0, HALF_PI], [HALF_PI, 0.0, 0.0], [0.0, HALF_PI, 0.0]], dtype=DOUBLE
    )
    root = torch.eye(4, dtype=DOUBLE)
    root[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    posed = skeleton.forward_kinematics(rotations, root)

    # T0 = root [Rz(90) | x0];  T1 = T0 [Rx(90) | x1 - x0];  T2 = T1 [Ry(90) | x2 - x1]
    expected_joint = torch.tensor([
        [[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]],
        [[0, 0, 1, 1], [1, 0, 0, 2], [0, 1, 0, 4], [0, 0, 0, 1]],
        [[-1, 0, 0, 2], [0, 0, 1, 2], [0, 1, 0, 4], [0, 0, 0, 1]],
    ], dtype=DOUBLE)  # fmt: skip
    # G_j = T_j [I | -x_j]
    expected_bone = torch.tensor([
        [[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]],
        [[0, 0, 1, 0], [1, 0, 0, 2], [0, 1, 0, 4], [0, 0, 0, 1]],
        [[-1, 0, 0, 2], [0, 0, 1, 0], [0, 1, 0, 4], [0, 0, 0, 1]],
    ], dtype=DOUBLE)  # fmt: skip
    torch.testing.assert_close(posed.joint_transforms, expected_joint, rtol=0, atol=1e-14)
    torch.testing.assert_close(posed.bone_transforms, expected_bone, rtol=0, atol=1e-14)
    torch.testing.assert_close(
        posed.joints,
        torch.tensor([[1, 2, 3], [1, 2, 4], [2, 2, 4]], dtype=DOUBLE),
        rtol=0,
        atol=1e-14,
    )
    # the middle of bone middle -> tip follows G_middle onto the middle of the posed bone
    middle = expected_bone[1] @ torch.tensor([0.0, 0.0, 1.5, 1.0], dtype=DOUBLE)
    torch.testing.assert_close(
        middle[:3], torch.tensor([1.5, 2.0, 4.0], dtype=DOUBLE), rtol=0, atol=1e-14
    )
    # matrices in give the same answer as axis-angle
    from_matrices = skeleton.bone_transforms(
        axis_angle_to_matrix(rotations), root, rotation_format="matrix"
    )
    torch.testing.assert_close(from_matrices, expected_bone, rtol=0, atol=1e-14)


def test_rest_pose_gives_identity_bone_transforms_in_batches():
    skeleton = _branching()
    posed = skeleton.forward_kinematics(torch.zeros(2, 4, 5, 3, dtype=DOUBLE))
    assert posed.bone_transforms.shape == (2, 4, 5, 4, 4)
    # exact up to the rounding of summing the parent offsets back up
    torch.testing.assert_close(
        posed.bone_transforms, torch.eye(4, dtype=DOUBLE).expand(2, 4, 5, 4, 4), rtol=0, atol=1e-15
    )
    torch.testing.assert_close(
        posed.joints, skeleton.rest_joints.expand(2, 4, 5, 3), rtol=0, atol=1e-15
    )
    torch.testing.assert_close(
        posed.joint_transforms, skeleton.rest_transforms().expand(2, 4, 5, 4, 4), rtol=0, atol=1e-15
    )


def _reference_bone_transforms(
    skeleton: Skeleton, rotations: torch.Tensor, root: torch.Tensor
) -> torch.Tensor:
    """Brute force: matrix exponentials, explicit 4x4 products and inverses, one joint at a time."""
    rest = skeleton.rest_joints
    world = []
    for j, parent in enumerate(skeleton.parents):
        local = torch.eye(4, dtype=DOUBLE)
        local = torch.cat([torch.cat([torch.linalg.matrix_exp(skew(rotations[j])),
                                      (rest[j] - (rest[parent] if parent >= 0 else 0.0))[:, None]], 1),
                           local[3:]], 0)  # fmt: skip
        world.append((root if parent < 0 else world[parent]) @ local)
    out = []
    for j in range(skeleton.num_joints):
        rest_transform = torch.eye(4, dtype=DOUBLE)
        rest_transform[:3, 3] = rest[j]
        out.append(world[j] @ torch.linalg.inv(rest_transform))
    return torch.stack(out)


def _reference_lbs(
    points: torch.Tensor, weights: torch.Tensor, bones: torch.Tensor
) -> torch.Tensor:
    rows = []
    for i in range(points.shape[0]):
        blended = sum(weights[i, j] * bones[j] for j in range(bones.shape[0]))
        rows.append(blended[:3, :3] @ points[i] + blended[:3, 3])
    return torch.stack(rows)


def _random_root(generator: torch.Generator) -> torch.Tensor:
    root = torch.eye(4, dtype=DOUBLE)
    root[:3, :3] = axis_angle_to_matrix(torch.randn(3, generator=generator, dtype=DOUBLE))
    root[:3, 3] = torch.randn(3, generator=generator, dtype=DOUBLE)
    return root


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_kinematics_matches_a_brute_force_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    skeleton = _branching(seed)
    rotations = torch.randn(5, 3, generator=generator, dtype=DOUBLE)
    root = _random_root(generator)
    torch.testing.assert_close(
        skeleton.bone_transforms(rotations, root),
        _reference_bone_transforms(skeleton, rotations, root),
        rtol=0,
        atol=1e-12,
    )


# ====================================================================== skinning
def test_lbs_with_one_hot_weights_applies_that_bone():
    generator = torch.Generator().manual_seed(2)
    skeleton = _branching()
    bones = skeleton.bone_transforms(
        torch.randn(5, 3, generator=generator, dtype=DOUBLE), _random_root(generator)
    )
    points = torch.randn(10, 3, generator=generator, dtype=DOUBLE)
    owner = torch.arange(10) % 5
    skinned = linear_blend_skinning(points, torch.nn.functional.one_hot(owner, 5).to(DOUBLE), bones)
    expected = torch.einsum("nij,nj->ni", bones[owner, :3, :3], points) + bones[owner, :3, 3]
    torch.testing.assert_close(skinned.points, expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(skinned.linear, bones[owner, :3, :3], rtol=0, atol=0)
    # a rigid bone moves the Gaussian's frame: A R(q) is a rotation, and A S A^T the covariance
    quats = torch.randn(10, 4, generator=generator, dtype=DOUBLE)
    frames = skin_orientations(skinned.linear, quats)
    torch.testing.assert_close(
        frames @ frames.transpose(1, 2),
        torch.eye(3, dtype=DOUBLE).expand(10, 3, 3),
        rtol=0,
        atol=1e-13,
    )
    scales = torch.rand(10, 3, generator=generator, dtype=DOUBLE) + 0.1
    rest_cov = (
        quat_to_rotmat(quats) @ torch.diag_embed(scales**2) @ quat_to_rotmat(quats).transpose(1, 2)
    )
    posed_cov = frames @ torch.diag_embed(scales**2) @ frames.transpose(1, 2)
    torch.testing.assert_close(
        posed_cov, skinned.linear @ rest_cov @ skinned.linear.transpose(1, 2), rtol=0, atol=1e-13
    )


@pytest.mark.parametrize("count,seed", [(1, 3), (17, 4)])
def test_lbs_values_and_gradients_match_the_loop_reference(count, seed):
    generator = torch.Generator().manual_seed(seed)
    skeleton = _branching(seed)
    rotations = torch.randn(5, 3, generator=generator, dtype=DOUBLE)
    root = _random_root(generator)
    points = torch.randn(count, 3, generator=generator, dtype=DOUBLE)
    weights = torch.softmax(torch.randn(count, 5, generator=generator, dtype=DOUBLE), -1)
    upstream = torch.randn(count, 3, generator=generator, dtype=DOUBLE)

    def run(fast: bool):
        leaves = [t.clone().requires_grad_() for t in (points, weights, rotations)]
        if fast:
            out = linear_blend_skinning(
                leaves[0], leaves[1], skeleton.bone_transforms(leaves[2], root)
            ).points
        else:
            out = _reference_lbs(
                leaves[0], leaves[1], _reference_bone_transforms(skeleton, leaves[2], root)
            )
        (out * upstream).sum().backward()
        return out.detach(), [leaf.grad for leaf in leaves]

    fast_out, fast_grads = run(True)
    ref_out, ref_grads = run(False)
    torch.testing.assert_close(fast_out, ref_out, rtol=0, atol=1e-12)
    for name, fast_grad, ref_grad in zip(("points", "weights", "rotations"), fast_grads, ref_grads):
        torch.testing.assert_close(fast_grad, ref_grad, rtol=1e-10, atol=1e-11, msg=name)


def test_lbs_gradcheck():
    generator = torch.Generator().manual_seed(5)
    points = torch.randn(4, 3, generator=generator, dtype=DOUBLE, requires_grad=True)
    weights = torch.rand(4, 3, generator=generator, dtype=DOUBLE, requires_grad=True)
    bones = torch.randn(3, 4, 4, generator=generator, dtype=DOUBLE, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda p, w, g: linear_blend_skinning(p, w, g).points, (points, weights, bones)
    )


# ====================================================================== nearest-bone weights
def test_nearest_bone_weights_are_one_hot_at_bone_middles_and_sum_to_one():
    skeleton = _branching()
    rest = skeleton.rest_joints
    middles = torch.stack(
        [0.5 * (rest[p] + rest[c]) for p, c in skeleton.bones()]
    )  # bones driven by 0, 1, 0, 3
    weights = nearest_bone_weights(middles, skeleton, temperature=0.02)
    assert weights.argmax(-1).tolist() == [0, 1, 0, 3]
    assert (weights.max(-1).values > 0.999).all()
    random_points = torch.randn(50, 3, generator=torch.Generator().manual_seed(6), dtype=DOUBLE)
    for temperature in (0.02, 0.5):
        w = nearest_bone_weights(random_points, skeleton, temperature)
        torch.testing.assert_close(w.sum(-1), torch.ones(50, dtype=DOUBLE), rtol=0, atol=1e-12)
        assert (w >= 0).all()
    # a point halfway between two bones at equal distance is blended 50/50
    chain = _chain()
    tip_side = nearest_bone_weights(torch.tensor([[0.0, 0.0, 2.3]], dtype=DOUBLE), chain, 0.05)
    torch.testing.assert_close(
        tip_side[0], torch.tensor([0.0, 0.5, 0.5], dtype=DOUBLE), rtol=0, atol=1e-6
    )
    with pytest.raises(ValueError, match="temperature"):
        nearest_bone_weights(random_points, skeleton, 0.0)


def test_bone_distances_by_hand():
    chain = _chain()
    points = torch.tensor([[1.0, 0.0, 0.5], [0.0, 0.0, -2.0], [0.0, 3.0, 2.0]], dtype=DOUBLE)
    expected = torch.tensor([
        [1.0, math.sqrt(1.25), math.sqrt(3.25)],   # beside base->middle; middle->tip from (0,0,1); tip point
        [2.0, 3.0, 4.0],                           # below the base
        [math.sqrt(9 + 1), 3.0, 3.0],              # level with the tip
    ], dtype=DOUBLE)  # fmt: skip
    torch.testing.assert_close(bone_distances(points, chain), expected, rtol=0, atol=1e-14)


# ====================================================================== validation
@pytest.mark.parametrize(
    "parents,message",
    [
        ([0, 0, 1], r"parents\[0\] must be -1"),
        ([-1, -1, 1], "joint 1 has parent -1: only joint 0 may be the root"),
        ([-1, 2, 0], r"parents\[1\] = 2 is not an earlier joint"),
        ([-1, 0, 7], r"parents\[2\] = 7 is not an earlier joint"),
        ([-1, 0], "parents has 2 entries but there are 3 joints"),
    ],
)
def test_bad_parents_raise_one_line_errors(parents, message):
    with pytest.raises(ValueError, match=message) as error:
        Skeleton(parents, torch.zeros(3, 3))
    assert "\n" not in str(error.value)


def test_validation_messages():
    with pytest.raises(ValueError, match="skeleton has no joints"):
        validate_parents([])
    with pytest.raises(ValueError, match=r"rest joints must be \[J, 3\]"):
        Skeleton([-1, 0], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="joint name 'a' appears more than once"):
        Skeleton([-1, 0], torch.zeros(2, 3), ["a", "a"])
    with pytest.raises(ValueError, match="rest position of joint 1 is NaN/inf"):
        Skeleton([-1, 0], [[0, 0, 0], [0, float("nan"), 0]])
    chain = _chain()
    with pytest.raises(ValueError, match="rotations have 2 joints but the skeleton has 3"):
        chain.forward_kinematics(torch.zeros(4, 2, 3))
    bad = torch.zeros(4, 3, 3)
    bad[2, 1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"rotation of joint 1 \('middle'\) in frame 2 is NaN/inf"):
        chain.forward_kinematics(bad)
    with pytest.raises(ValueError, match=r"rotation of joint 1 \('middle'\) is NaN/inf$"):
        chain.forward_kinematics(bad[2])
    with pytest.raises(ValueError, match=r"matrix rotations must be \[..., J, 3, 3\]"):
        check_rotations(torch.zeros(3, 3), 3, "matrix")
    with pytest.raises(ValueError, match="root transform holds NaN/inf"):
        chain.forward_kinematics(torch.zeros(3, 3), torch.full((4, 4), float("nan")))
    with pytest.raises(ValueError, match=r"weights must be \[2, 3\]"):
        linear_blend_skinning(torch.zeros(2, 3), torch.zeros(2, 4), torch.eye(4).expand(3, 4, 4))
    assert (
        chain.index("tip") == 2 and chain.children(0) == [1] and chain.bones() == [(0, 1), (1, 2)]
    )
    with pytest.raises(ValueError, match="no joint 'knee'"):
        chain.index("knee")
    assert Skeleton.from_dict(chain.to_dict()).names == chain.names
