"""Building blocks of MIGS (:mod:`.migs`): Gaussians skinned by blended bone transforms, the
initial placement along the rest bones, the CP start of the identities' tables and the
pose- and identity-conditioned non-rigid deformer. Each is a plain function or module with
shapes in its docstring; the model composes them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tensorfield.fields.gaussian_math import num_sh_bases
from tensorfield.fields.lowrank import cp_from_table
from tensorfield.fields.skeleton import (
    Skeleton,
    axis_angle_to_matrix,
    linear_blend_skinning,
    skin_orientations,
)
from torch import Tensor, nn

def attribute_blocks(sh_degree: int) -> dict[str, int]:
    """Row blocks of ``B`` (one learning rate each): the :func:`~.lowrank.attribute_sizes`
    layout with the SH block cut into its DC (first 3 columns) and the rest."""
    blocks = {"xyz": 3, "log_scale": 3, "quat": 4, "opacity_logit": 1, "sh_dc": 3}
    if sh_degree > 0:
        blocks["sh_rest"] = 3 * (num_sh_bases(sh_degree) - 1)
    return blocks


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a ⊗ b`` of ``[..., 4]`` ``(w, x, y, z)`` quaternions."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)  # fmt: skip


def covariance_entries(covariances: Tensor) -> Tensor:
    """``[N, 6]`` upper-triangle entries ``xx xy xz yy yz zz`` of ``[N, 3, 3]`` covariances."""
    rows, cols = (0, 0, 0, 1, 1, 2), (0, 1, 2, 1, 2, 2)
    return covariances[:, rows, cols]


def pose_code(rotations: Tensor) -> Tensor:
    """``[6 J]``: first two columns of each joint's rotation matrix minus the identity's (0 at rest)."""
    matrices = axis_angle_to_matrix(rotations)[..., :, :2]
    eye = torch.eye(3, 2, dtype=matrices.dtype, device=matrices.device)
    return (matrices - eye).reshape(-1)


def skin_gaussians(means: Tensor, log_scales: Tensor, quats: Tensor, skinning_logits: Tensor, bone_transforms: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """LBS of Gaussians: ``(posed means [N, 3], covariances [N, 3, 3], weights [N, J])``.

    :math:`w = \\operatorname{softmax}(\\ell)`, :math:`[A \\mid b] = \\sum_j w_j G_j`,
    :math:`\\mu' = A \\mu + b`, :math:`\\Sigma' = (A R(q) S)(A R(q) S)^T`.
    """
    weights = torch.softmax(skinning_logits, dim=-1)
    skinned = linear_blend_skinning(means, weights, bone_transforms)
    factor = skin_orientations(skinned.linear, quats) * torch.exp(log_scales)[:, None, :]
    return skinned.points, factor @ factor.transpose(1, 2), weights


def sample_along_bones(rest_joints: Tensor, skeleton: Skeleton, count: int, radius: float, generator: torch.Generator) -> Tensor:
    """``[K, N, 3]`` corresponding points along the bones of ``K`` rest skeletons (module docstring).

    Segments are those of :func:`~.skeleton.bone_distances` (joint -> child, a leaf's own point);
    the segment, fraction, direction and radius of point ``n`` are shared by every identity, the
    radius scaled by each skeleton's height (largest side of its rest-joint box).
    """
    segments = [(j, c) for j in range(skeleton.num_joints) for c in (skeleton.children(j) or [j])]
    start = rest_joints[:, [j for j, _ in segments]]
    end = rest_joints[:, [c for _, c in segments]]
    heights = (rest_joints.max(1).values - rest_joints.min(1).values).max(-1).values  # [K]
    lengths = (end - start).norm(dim=-1).mean(0) + radius * float(heights.mean())
    choice = torch.multinomial(lengths / lengths.sum(), count, replacement=True, generator=generator)
    along = torch.rand(count, 1, generator=generator, dtype=rest_joints.dtype)
    direction = F.normalize(torch.randn(count, 3, generator=generator, dtype=rest_joints.dtype), dim=-1)
    distance = radius * (0.25 + 0.75 * torch.rand(count, 1, generator=generator, dtype=rest_joints.dtype))
    on_bone = start[:, choice] + along * (end[:, choice] - start[:, choice])
    return on_bone + direction * distance * heights[:, None, None]


def _balanced(b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Rescale each column pair so that ``B`` and ``C`` columns have equal RMS (``B C^T`` unchanged)."""
    rms_b = b.pow(2).mean(0).sqrt().clamp_min(1e-12)
    rms_c = c.pow(2).mean(0).sqrt().clamp_min(1e-12)
    alpha = (rms_b / rms_c).sqrt()
    return b / alpha, c * alpha


def cp_from_identity_tables(tables: Tensor, rank: int, xyz: slice, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """CP factors ``(A [K, R], B [F, R], C [N, R])`` of tables ``[K, N, F]`` differing only in ``xyz``.

    The mean table takes :func:`~.lowrank.cp_from_table` (``A`` all ones); each identity's
    deviation of the ``xyz`` columns (rank <= 3) takes ``p = min(3, (R // 2) // K)`` components
    of its own (its truncated SVD; ``A`` one-hot), so the factors are exact when the mean table's
    rank is at most ``R - p K`` (and ``p = 3``). Columns balanced by :func:`_balanced`.
    """
    count, _, f = tables.shape
    work = tables.double()
    mean = work.mean(0)
    residual = work - mean
    if (residual[..., [i for i in range(f) if not xyz.start <= i < xyz.stop]]).abs().max() > 0:
        raise ValueError("identity tables may differ only in the xyz columns")
    per = min(3, (rank // 2) // count) if float(residual.abs().max()) > 0 else 0
    fit = cp_from_table(mean, count, rank - per * count, seed=seed)
    a, b, c = [fit.identity_factors], [fit.feature_factors], [fit.gaussian_factors]
    for k in range(count):
        if per == 0:
            break
        u, s, vh = torch.linalg.svd(residual[k][:, xyz], full_matrices=False)
        root = s[:per].sqrt()
        extra_b = torch.zeros(f, per, dtype=work.dtype)
        extra_b[xyz] = vh[:per].T * root
        extra_a = torch.zeros(count, per, dtype=work.dtype)
        extra_a[k] = 1.0
        a.append(extra_a)
        b.append(extra_b)
        c.append(u[:, :per] * root)
    b_all, c_all = _balanced(torch.cat(b, 1), torch.cat(c, 1))
    return torch.cat(a, 1).float(), b_all.float(), c_all.float()


def _init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """torch's default (Kaiming-uniform) initialisation, from ``generator``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.copy_((torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound)
        if layer.bias is not None:
            layer.bias.copy_((torch.rand(layer.bias.shape, generator=generator) * 2 - 1) * bound)


class NonRigidDeformer(nn.Module):
    """Conditioned MLP ``(canonical position, condition) -> [N, 10]`` offsets (mean 3, log-scale 3,
    quaternion 4); the condition enters the first layer once for all Gaussians (official
    ``cond_in: [0]``); the last layer is zero, so the offsets start at zero.

    Args:
        frequencies: octaves ``L`` of the encoding :math:`(x, \\sin 2^l \\pi x, \\cos 2^l \\pi x)`.
        condition_dim: pose code plus identity code.
        width, layers: hidden width and number of hidden layers.
        generator: initialisation.
    """

    def __init__(self, frequencies: int, condition_dim: int, width: int, layers: int, generator: torch.Generator) -> None:
        super().__init__()
        self.frequencies = int(frequencies)
        self.position = nn.Linear(3 + 6 * self.frequencies, width)
        self.condition = nn.Linear(condition_dim, width, bias=False) if condition_dim > 0 else None
        self.hidden = nn.ModuleList([nn.Linear(width, width) for _ in range(layers - 1)])
        self.out = nn.Linear(width, 10)
        for layer in [self.position, self.condition, *self.hidden]:
            if layer is not None:
                _init_linear(layer, generator)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def encode(self, positions: Tensor) -> Tensor:
        scales = (2.0 ** torch.arange(self.frequencies, device=positions.device, dtype=positions.dtype)) * math.pi
        angles = (positions[:, :, None] * scales).reshape(positions.shape[0], -1)
        return torch.cat([positions, torch.sin(angles), torch.cos(angles)], dim=-1)

    def forward(self, positions: Tensor, condition: Tensor | None) -> Tensor:
        hidden = self.position(self.encode(positions))
        if self.condition is not None and condition is not None:
            hidden = hidden + self.condition(condition)[None]
        hidden = F.silu(hidden)
        for layer in self.hidden:
            hidden = F.silu(layer(hidden))
        return self.out(hidden)
