"""MIGS: multi-identity Gaussian splatting via tensor decomposition (Chatziagapi et al., ECCV 2024;
official code aggelinacha/migs, built on 3DGS-Avatar).

The canonical Gaussians of all ``K`` training subjects are one low-rank tensor
:math:`\\mathcal W \\in \\mathbb R^{K \\times F \\times N}` (:mod:`.lowrank`): a
:class:`~.lowrank.CPTensor` of rank ``rank`` (``decomposition=cp``, the paper's default) or a
:class:`~.lowrank.TuckerTensor` (``decomposition=tucker``), with the attribute factor ``B`` in
named blocks ``xyz | log_scale | quat | opacity_logit | sh_dc | sh_rest`` so each attribute has
its own learning rate, as in the official code. Identity ``k``'s canonical table
:math:`\\mathcal W[k]^T = C \\operatorname{diag}(A[k]) B^T` (``[N, F]``) is read from the factors
on the fly for every view; nothing dense is stored.

**Posing** identity ``k`` with joint rotations :math:`\\theta` and root transform ``M``
(:meth:`MIGS.pose`), in the order of the official deformer (non-rigid, then rigid):

1. *non-rigid* (:class:`NonRigidDeformer`): an MLP of the canonical position (normalised to the
   subject's rest box, with a sinusoidal encoding of ``nr_frequencies`` octaves; the official
   uses a hash grid), conditioned on the pose (the first two columns of every joint's rotation
   matrix minus the identity's, ``6 J`` numbers; the root transform is excluded) and the identity
   code (row ``A[k]`` of the identity factor, so an added identity needs no second parameter),
   returns offsets of the mean, the log-scales and a quaternion
   :math:`q \\leftarrow (1 + \\delta_w, \\delta_{xyz}) \\otimes q` (official ``scale_offset:
   logit``, ``rot_offset: mult``). Its last layer starts at zero, so training starts at pure LBS.
2. *rigid*: linear blend skinning (:func:`~.skeleton.linear_blend_skinning`) with identity ``k``'s
   bone transforms :math:`G_j` (forward kinematics of its own rest skeleton) and learned weights
   :math:`w = \\operatorname{softmax}(\\ell_n)`; the covariance follows the blended linear part,
   :math:`\\Sigma' = (A R S)(A R S)^T` (3DGS-Avatar's ``rotation_precomp``), handed to the
   rasteriser as covariances.

**Skinning weights** are per-Gaussian logits ``[N, J]`` shared by every identity, initialised
to the log of :func:`~.skeleton.nearest_bone_weights`. Why not the official skinning MLP over
canonical space: the CP tensor already puts Gaussian ``n`` of every subject on the same body
part (row ``n`` of ``C`` is shared), and ``N`` is fixed (below), so a weight per Gaussian is the
field evaluated exactly where it is used, costs nothing to evaluate and has exact gradients. The
official skinning loss (field vs SMPL weights on the canonical mesh) becomes the *skinning prior*
below: the weights against the nearest-bone weights at the Gaussian's current canonical position.

**Loss** per view: :math:`(1-\\lambda) L_1 + \\lambda (1 - \\mathrm{SSIM})` (3DGS, :mod:`.gaussian_loss`;
the official MIGS config uses ``lambda_dssim 0`` and an LPIPS term instead), plus
``mask_weight`` :math:`\\cdot L_1(\\alpha, \\text{mask})` (official ``mask_loss_type: l1``,
``lambda_mask 0.1``), plus the official regularisers:

* skinning prior :math:`\\frac1N \\sum_n \\|w_n - w^{bone}_n\\|^2` with weight
  ``skinning_prior_weight`` until ``skinning_prior_until`` then ``skinning_prior_final``
  (official ``lambda_skinning: [10, 1000, 0.1]``);
* as-isometric-as-possible (official ``full_aiap_loss``): with the ``aiap_neighbours`` nearest
  canonical neighbours of each Gaussian, L1 between canonical and posed neighbour distances of
  the means (``aiap_xyz_weight``, official 1) and of the 6 covariance entries
  (``aiap_cov_weight``, official 100);
* non-rigid offsets: mean L2 norm of the mean offset, mean L1 of the scale and rotation offsets
  (``nr_xyz_weight``, ``nr_scale_weight``, ``nr_rot_weight``; official 0 in its hash-grid config).

**Initialisation.** ``num_gaussians`` points are sampled along the rest skeleton (bone ``j ->
c`` chosen with probability proportional to its length, a uniform fraction along it, a random
direction at up to ``init_radius`` of the skeleton's height), at the *same* bone-relative place
for every identity, each in its own rest skeleton. The mean table over identities (3DGS's scales
from the neighbour distances, identity rotations, opacity ``init_opacity``, near-grey colours) is
factorised by :func:`~.lowrank.cp_from_table` (the official start: every subject the same table),
and each identity's deviation of the means from it (rank <= 3) is added as its own components
(``A`` one-hot on them), so every subject starts exactly on its skeleton; B and C columns are
balanced to equal RMS (``W`` unchanged). Tucker: the HOSVD of the same dense start.

**Densification: none; N is fixed.** The official MIGS keeps ``N_max = 50k`` and its 100k
schedule sets ``densify_until_iter: 0``. Splitting a Gaussian moves its mean and shrinks its scale
for one identity at a time, which a shared row of ``C`` cannot express; only cloning and pruning
would fit :class:`~.base.ParamSurgery`.

**Unseen identities**: :meth:`MIGS.add_identity` appends a row of ``A`` (the mean row by default)
and freezes everything else; its return value is the one parameter to optimise. Through the
common trainer (``tensorfield fit-identity``, :mod:`tensorfield.engine.fit`) a run is built with
``identity_rows`` (the trained rows' names): the model is frozen but for the rows after them,
:meth:`MIGS.start_identity_fit` copies the trained values in, and the fitted run keeps the trained
SH degree; its checkpoints rebuild the same frozen model, so it resumes, evaluates and renders
like any run. **Unseen poses**:
any identity with the pose of any frame (:attr:`RenderRequest.frame`, also another subject's) or
an explicit pose (:attr:`RenderRequest.pose`, e.g. read from a pose file by
:func:`~tensorfield.datasets.avatars.read_pose_file`).

Differences from the official code beyond those above: no pose correction, no texture MLP (SH
colours evaluated by the rasteriser along world view directions, as gaussians3d), no gradient
clipping (the trainer has no hook for it), one exponential decay per group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensorfield.cuda.rasterize import quat_to_rotmat
from tensorfield.fields.base import (
    BatchKind,
    BodyPose,
    Field,
    HookResult,
    ImageBatch,
    ParamGroup,
    RenderOutput,
    RenderRequest,
    SceneInfo,
    SplatAttributes,
    StepOutput,
)
from tensorfield.fields.config import MethodConfig, option
from tensorfield.fields.gaussian_loss import photometric_loss
from tensorfield.fields.gaussian_math import (
    covariance_to_scales_quats,
    mean_neighbour_distance,
    nearest_neighbours,
)
from tensorfield.fields.gaussian_producers import logit
from tensorfield.fields.lowrank import (
    CPTensor,
    IdentityTensor,
    TuckerTensor,
    attribute_slices,
    num_attributes,
    split_attributes,
)
from tensorfield.fields.migs_data import BACKGROUND_CHOICES, FRAME_INPUTS
from tensorfield.fields.migs_parts import (  # noqa: F401 - re-exported (tests, scripts)
    NonRigidDeformer,
    attribute_blocks,
    covariance_entries,
    cp_from_identity_tables,
    pose_code,
    quat_multiply,
    sample_along_bones,
    skin_gaussians,
)
from tensorfield.fields.skeleton import Skeleton, nearest_bone_weights
from torch import Tensor, nn


# ================================================================================== config
@dataclass
class MIGSConfig(MethodConfig):
    """MIGS options; defaults are the paper's / official ZJU-MoCap settings (``configs/migs.yaml``)."""

    steps: int = option(100000, "Number of optimisation steps (official: 100k).")
    batch_size: int = option(1, "Views (identity, frame) per step (official: 1).")
    # data
    background: str = option("data", "Background: data (the colour of avatars.json), white, black (recomposited with the masks) or random (per batch).", group="data", choices=BACKGROUND_CHOICES)
    downscale: int = option(1, "Average the images down by this integer factor (cameras scaled).", group="data", minimum=1)
    identities: list[str] = option([], "Load only these identities (empty = all).", group="data")
    train_split: str = option("train", "Split the batches come from (e.g. novel_identity to fit an added identity).", group="data")
    identity_rows: list[str] = option([], "Fit new identities on top of a trained model: the names of its identity rows, in order (fit-identity writes it; everything but the new rows is frozen). Empty: a model trained from scratch.", group="data")
    smpl_model_path: str = option("", "Folder (or file) of the SMPL model files SMPL_{NEUTRAL,FEMALE,MALE}.pkl for SMPL skeletons and ZJU-MoCap (licensed, not shipped); empty = $TENSORFIELD_SMPL.", group="data")
    smpl_gender: str = option("neutral", "Gender of the SMPL model file of ZJU-MoCap subjects.", group="data", choices=("neutral", "female", "male"))
    zju_camera: int = option(0, "ZJU-MoCap: the training camera's index in annots.npy (0 = Camera_B1, the view MIGS and 3DGS-Avatar train on).", group="data", minimum=0)
    zju_train_frames: list[int] = option([0, 0, 1], "ZJU-MoCap: [start, end, step] of the annotated frames to train on (end 0 = all).", group="data", minimum=0, lengths=(3, 3))
    zju_novel_pose_frames: list[int] = option([], "ZJU-MoCap: [start, end, step] seen by the training camera for the novel_pose split (empty = none).", group="data", minimum=0, lengths=(0, 3))
    zju_novel_view_cameras: list[int] = option([], "ZJU-MoCap: other cameras for the novel_view split (empty = none).", group="data", minimum=0)
    zju_novel_view_frames: list[int] = option([0, 0, 30], "ZJU-MoCap: [start, end, step] of the novel views (3DGS-Avatar: every 30th).", group="data", minimum=0, lengths=(3, 3))
    zju_held_out: list[str] = option([], "ZJU-MoCap: subjects whose frames form the novel_identity splits (fit-identity) instead of train.", group="data")
    # representation
    decomposition: str = option("cp", "Low-rank tensor of the identities' Gaussians: cp (paper) or tucker.", group="model", choices=("cp", "tucker"))
    rank: int = option(100, "CP rank R (Tucker: the Gaussian-mode rank R3).", group="model", minimum=1)
    tucker_ranks: list[int] = option([], "Tucker ranks [R1, R2, R3] (empty = identities, attributes, rank), each clipped to its mode size.", group="model", minimum=1, lengths=(0, 3))
    num_gaussians: int = option(50000, "Gaussians per identity N (fixed: no densification).", group="model", minimum=1)
    sh_degree: int = option(3, "Largest SH degree of the colour (0..3).", group="model", minimum=0, maximum=3)
    sh_increase_interval: int = option(1000, "Activate one more SH degree every N steps.", group="model", minimum=1)
    # initialisation
    init_radius: float = option(0.06, "Initial Gaussians lie up to this fraction of the skeleton's height from its bones.", group="initialisation", above=0)
    init_opacity: float = option(0.1, "Initial opacity.", group="initialisation", above=0, below=1)
    skinning_temperature: float = option(0.02, "Softmin temperature of the nearest-bone weights (init and prior), as a fraction of the skeleton's height.", group="initialisation", above=0)
    # non-rigid deformation
    non_rigid: bool = option(True, "Pose- and identity-conditioned non-rigid MLP before skinning.", group="non-rigid")
    nr_width: int = option(128, "Width of the non-rigid MLP (official 128).", group="non-rigid", minimum=1)
    nr_layers: int = option(3, "Hidden layers of the non-rigid MLP (official 3).", group="non-rigid", minimum=1)
    nr_frequencies: int = option(6, "Octaves of the sinusoidal encoding of the canonical position.", group="non-rigid", minimum=0)
    nr_identity_code: bool = option(True, "Condition the non-rigid MLP on the identity's row of the identity factor.", group="non-rigid")
    non_rigid_delay: int = option(0, "Steps of pure LBS before the non-rigid MLP is used (official 3000).", group="non-rigid", minimum=0)
    pose_noise: float = option(0.0, "Std of the noise added to the joint rotations the non-rigid MLP sees, on half of the training views (official 0.1).", group="non-rigid", minimum=0)
    # optimisation
    lr_identity: float = option(1e-3, "Learning rate of the identity rows A.", group="optimisation", minimum=0)
    lr_gaussian_factors: float = option(1e-3, "Learning rate of the Gaussian factor C (and the Tucker core).", group="optimisation", minimum=0)
    lr_xyz: float = option(1e-3, "Learning rate of the xyz block of B.", group="optimisation", minimum=0)
    lr_final_ratio: float = option(0.01, "A, C, B_xyz and the non-rigid MLP decay exponentially to this fraction of their rate.", group="optimisation", above=0, maximum=1)
    lr_decay_steps: int = option(-1, "Steps over which the decaying rates reach lr_final_ratio (-1 = steps).", group="optimisation", minimum=1, special=(-1,))
    lr_sh: float = option(2.5e-3, "Learning rate of the SH DC block of B (the rest: 1/20 of it; official feature_lr).", group="optimisation", minimum=0)
    lr_opacity: float = option(0.05, "Learning rate of the opacity block of B.", group="optimisation", minimum=0)
    lr_scales: float = option(5e-3, "Learning rate of the log-scale block of B.", group="optimisation", minimum=0)
    lr_quats: float = option(1e-3, "Learning rate of the quaternion block of B.", group="optimisation", minimum=0)
    lr_skinning: float = option(5e-3, "Learning rate of the skinning logits.", group="optimisation", minimum=0)
    lr_non_rigid: float = option(1e-3, "Learning rate of the non-rigid MLP (official 1e-3).", group="optimisation", minimum=0)
    adam_eps: float = option(1e-15, "Adam epsilon (official 1e-15).", group="optimisation", above=0)
    ssim_weight: float = option(0.2, "Weight lambda of (1 - SSIM) in the image loss (1 - lambda on L1).", group="optimisation", minimum=0, maximum=1)
    mask_weight: float = option(0.1, "Weight of L1(rendered alpha, mask) (official lambda_mask 0.1).", group="optimisation", minimum=0)
    skinning_prior_weight: float = option(10.0, "Weight of the skinning prior until skinning_prior_until (official 10).", group="optimisation", minimum=0)
    skinning_prior_until: int = option(1000, "Step at which the skinning prior drops to skinning_prior_final.", group="optimisation", minimum=0)
    skinning_prior_final: float = option(0.1, "Weight of the skinning prior afterwards (official 0.1).", group="optimisation", minimum=0)
    aiap_xyz_weight: float = option(1.0, "Weight of the as-isometric-as-possible loss of the means (official 1).", group="optimisation", minimum=0)
    aiap_cov_weight: float = option(100.0, "Weight of the as-isometric-as-possible loss of the covariances (official 100).", group="optimisation", minimum=0)
    aiap_neighbours: int = option(5, "Canonical neighbours of each Gaussian in the AIAP losses.", group="optimisation", minimum=1)
    nr_xyz_weight: float = option(0.0, "Weight of the mean L2 norm of the non-rigid mean offsets.", group="optimisation", minimum=0)
    nr_scale_weight: float = option(0.0, "Weight of the mean L1 norm of the non-rigid log-scale offsets.", group="optimisation", minimum=0)
    nr_rot_weight: float = option(0.0, "Weight of the mean L1 norm of the non-rigid quaternion offsets.", group="optimisation", minimum=0)
    # rasteriser (as gaussians3d)
    backend: str = option("auto", "Rasteriser backend: auto (gsplat on CUDA, else cpu), gsplat, cpu, torch or reference.", group="rasteriser", choices=("auto", "gsplat", "cpu", "torch", "reference"))
    near_plane: float = option(0.01, "Gaussians nearer than this (camera z) are culled.", group="rasteriser", above=0)
    far_plane: float = option(1e10, "Gaussians farther than this are culled.", group="rasteriser", above=0)
    eps2d: float = option(0.3, "Screen-space blur added to every projected covariance (pixels^2).", group="rasteriser", minimum=0)
    antialiased: bool = option(False, "gsplat's antialiased mode (opacity compensation for the blur).", group="rasteriser")
    tile_size: int = option(16, "Rasteriser tile size in pixels.", group="rasteriser", minimum=1)


@dataclass
class PosedGaussians:
    """One identity in one pose (:meth:`MIGS.pose`).

    Attributes:
        means: ``[N, 3]`` posed (world) means.
        covariances: ``[N, 3, 3]`` posed covariances.
        opacities: ``[N]``.
        sh: ``[N, (d + 1)^2, 3]`` SH coefficients.
        canonical_means: ``[N, 3]`` means of the identity's canonical table.
        canonical_covariances: ``[N, 3, 3]`` its covariances (before the non-rigid step).
        weights: ``[N, J]`` skinning weights.
        offsets: ``[N, 10]`` non-rigid output (``None`` when not applied).
    """

    means: Tensor
    covariances: Tensor
    opacities: Tensor
    sh: Tensor
    canonical_means: Tensor
    canonical_covariances: Tensor
    weights: Tensor
    offsets: Tensor | None


@dataclass
class NewIdentity:
    """What :meth:`MIGS.add_identity` returns: the new row's index and the parameters to optimise."""

    index: int
    parameters: list[nn.Parameter]


# ================================================================================== model
class MIGS(Field):
    """Multi-identity Gaussian avatars (module docstring); implements ``RendersViews``,
    ``HasIdentities``, ``DrivenByPoses``, ``FitsIdentities`` and ``ExportsSplats``.

    Args:
        config: the method config.
        scene: from :func:`~tensorfield.fields.migs_data.migs_data` (``frame_inputs`` holds the
            poses and skeletons of every frame).

    Raises:
        ValueError: the scene has no avatar frame inputs, or no training frames.
    """

    batch_kind = BatchKind.IMAGES

    def __init__(self, config: MIGSConfig, scene: SceneInfo) -> None:
        super().__init__()
        self.config = config
        inputs = scene.frame_inputs
        missing = [name for name in FRAME_INPUTS if name not in inputs]
        if missing:
            raise ValueError(f"MIGS needs avatar data (SceneInfo.frame_inputs {missing[0]!r} missing): train it on an avatars folder (tensorfield.fields.migs_data)")
        if not bool(inputs["in_training"].any()):
            raise ValueError("MIGS: no frame of the data is in the training split")
        self.sh_degree = int(config.sh_degree)
        self.active_sh_degree = 0
        self.generator = torch.Generator().manual_seed(int(config.seed) + 1)
        identity = inputs["identity"].long()
        self.register_buffer("frame_rotations", inputs["rotations"].double().clone())
        self.register_buffer("frame_root", inputs["root"].double().clone())
        self.register_buffer("frame_identity", identity.clone())
        shown = [k for k in range(int(identity.max()) + 1) if bool((identity == k).any())]
        mean_rest = torch.stack([inputs["rest_joints"][identity == k][0] for k in shown]).double().mean(0)
        # a row of a fitted model the data does not show takes the mean skeleton until
        # start_identity_fit (or the checkpoint) brings its own
        rest = [inputs["rest_joints"][identity == k][0].double() if k in shown else mean_rest for k in range(int(identity.max()) + 1)]
        self.register_buffer("identity_rest_joints", torch.stack(rest).double())
        self.register_buffer("parents", inputs["parents"][0].long().clone())
        self.joint_names = tuple(scene.joint_names) or tuple(f"joint_{j}" for j in range(self.num_joints))
        count = int(identity[inputs["in_training"].bool()].max()) + 1  # training identities come first
        self.known_rows = len(config.identity_rows)
        if self.known_rows >= count:
            raise ValueError(f"MIGS: fitting on top of {self.known_rows} identity rows but the training frames show only {count} identities")
        init = torch.Generator().manual_seed(int(config.seed))

        skeleton = self.skeleton(0)
        rest_joints = self.identity_rest_joints[:count].float()
        radius = float(config.init_radius)
        points = sample_along_bones(rest_joints, skeleton, int(config.num_gaussians), radius, init)  # [K, N, 3]
        mean_points = points.mean(0)
        n = mean_points.shape[0]
        columns = attribute_slices(self.sh_degree)
        table = torch.zeros(n, num_attributes(self.sh_degree))
        table[:, columns["xyz"]] = mean_points
        table[:, columns["log_scale"]] = mean_neighbour_distance(mean_points).clamp_min(1e-4).log()[:, None]
        table[:, columns["quat"].start] = 1.0  # identity rotations (w, x, y, z)
        table[:, columns["opacity_logit"]] = float(logit(config.init_opacity))
        dc = columns["sh"].start  # coefficient 0 of the three channels; colour = 0.5 + C0 dc: near grey
        table[:, dc : dc + 3] = 0.1 * (torch.rand(n, 3, generator=init) - 0.5)
        tables = table.expand(count, -1, -1).clone()
        tables[:, :, columns["xyz"]] = points
        blocks = attribute_blocks(self.sh_degree)
        if config.decomposition == "tucker":
            dense = tables.permute(0, 2, 1)
            wanted = list(config.tucker_ranks) or [count, dense.shape[1], int(config.rank)]
            ranks = tuple(min(int(r), size) for r, size in zip(wanted, dense.shape))
            self.tensor: IdentityTensor = TuckerTensor.from_dense(dense, ranks, feature_blocks=blocks)
        else:
            a, b, c = cp_from_identity_tables(tables, int(config.rank), columns["xyz"], seed=int(config.seed))
            self.tensor = CPTensor(a, b, c, feature_blocks=blocks)

        mean_skeleton = Skeleton(self.parents.tolist(), self.identity_rest_joints[:count].mean(0))
        height = self._height(self.identity_rest_joints[:count].mean(0))
        weights = nearest_bone_weights(mean_points.double(), mean_skeleton, float(config.skinning_temperature) * height)
        self.skinning_logits = nn.Parameter(weights.clamp_min(1e-8).log().float())
        self.deformer: NonRigidDeformer | None = None
        if config.non_rigid:
            condition = 6 * skeleton.num_joints + (self._identity_dim() if config.nr_identity_code else 0)
            self.deformer = NonRigidDeformer(config.nr_frequencies, condition, config.nr_width, config.nr_layers, init)
        if self.known_rows:
            self._freeze_known_rows()

    # ------------------------------------------------------------------ structure
    def _identity_dim(self) -> int:
        return int(self.tensor.identity_rows[0].shape[0])

    @staticmethod
    def _height(rest_joints: Tensor) -> float:
        return float((rest_joints.max(0).values - rest_joints.min(0).values).max())

    def skeleton(self, identity: int) -> Skeleton:
        """Rest skeleton of identity ``identity`` (its row of ``identity_rest_joints``)."""
        if not 0 <= identity < self.identity_rest_joints.shape[0]:
            raise IndexError(f"identity {identity} has no skeleton (the model knows {self.identity_rest_joints.shape[0]})")
        return Skeleton(self.parents.tolist(), self.identity_rest_joints[identity].detach().cpu(), self.joint_names)

    def pose_skeleton(self, identity: int) -> Skeleton:
        """``DrivenByPoses``: identity ``identity``'s skeleton (joint names from the data), which a
        :class:`~.base.BodyPose` for it (a pose file, :func:`~tensorfield.datasets.avatars.read_pose_file`) refers to."""
        if not 0 <= identity < self.num_identities():
            raise IndexError(f"identity {identity} out of range (the model has {self.num_identities()})")
        return self.skeleton(identity)

    @property
    def num_gaussians(self) -> int:
        return self.tensor.num_gaussians

    @property
    def num_joints(self) -> int:
        return int(self.parents.shape[0])

    # HasIdentities
    def num_identities(self) -> int:
        """Identities with a row in the identity factor."""
        return self.tensor.num_identities

    def num_frames(self) -> int:
        """Frames of every subject of the data (global index, :mod:`.migs_data`)."""
        return int(self.frame_identity.shape[0])

    # ------------------------------------------------------------------ canonical and posed Gaussians
    def canonical(self, identity: int):
        """Identity ``identity``'s canonical attributes (:class:`~.lowrank.GaussianAttributes`), from the factors."""
        return split_attributes(self.tensor.identity(identity), self.sh_degree)

    def bone_transforms(self, identity: int, rotations: Tensor, root: Tensor | None = None) -> Tensor:
        """``[J, 4, 4]`` float32 LBS transforms of ``identity``'s skeleton in a pose (float64 kinematics)."""
        device = self.skinning_logits.device
        rotations = rotations.to(device=device, dtype=torch.float64)
        root = root.to(device=device, dtype=torch.float64) if root is not None else None
        return self.skeleton(identity).bone_transforms(rotations, root).float()

    def frame_pose(self, frame: int) -> tuple[Tensor, Tensor]:
        """``(rotations [J, 3], root [4, 4])`` of global frame ``frame``."""
        if not 0 <= frame < self.num_frames():
            raise IndexError(f"frame {frame} out of range (the model has {self.num_frames()} frames)")
        return self.frame_rotations[frame], self.frame_root[frame]

    def _box(self, identity: int) -> tuple[Tensor, Tensor]:
        rest = self.identity_rest_joints[identity].float()
        low, high = rest.min(0).values, rest.max(0).values
        return 0.5 * (low + high), 0.5 * float((high - low).max()) * 1.2 + 1e-6

    def _non_rigid_input(self, identity: int, rotations: Tensor) -> Tensor:
        parts = [pose_code(rotations.float())]
        if self.config.nr_identity_code:
            parts.append(self.tensor.identity_rows[identity])
        return torch.cat(parts)

    def pose(self, identity: int, rotations: Tensor | None = None, root: Tensor | None = None, *, step: int | None = None, non_rigid: bool = True) -> PosedGaussians:
        """Identity ``identity`` in a pose (module docstring), differentiable in every parameter.

        Args:
            identity: a row of the identity factor.
            rotations: ``[J, 3]`` axis-angle joint rotations (default: the rest pose).
            root: ``[4, 4]`` world-from-body transform (default: identity).
            step: training step (non-rigid delay, pose noise); ``None`` = inference.
            non_rigid: apply the non-rigid MLP (when the model has one).
        """
        device = self.skinning_logits.device
        if rotations is None:
            rotations = torch.zeros(self.num_joints, 3, dtype=torch.float64, device=device)
        attributes = self.canonical(identity)
        means, log_scales, quats = attributes.xyz, attributes.log_scale, attributes.quat
        canonical_factor = quat_to_rotmat(quats) * torch.exp(log_scales)[:, None, :]
        offsets = None
        delay = int(self.config.non_rigid_delay)
        if non_rigid and self.deformer is not None and (step is None or step >= delay):
            condition_rotations = rotations
            if step is not None and self.config.pose_noise > 0 and float(torch.rand((), generator=self.generator)) <= 0.5:
                noise = torch.randn(rotations.shape, generator=self.generator, dtype=torch.float64) * float(self.config.pose_noise)
                condition_rotations = rotations + noise.to(rotations.device, rotations.dtype)
            centre, half = self._box(identity)
            offsets = self.deformer((means - centre) / half, self._non_rigid_input(identity, condition_rotations))
            means = means + offsets[:, 0:3]
            log_scales = log_scales + offsets[:, 3:6]
            delta = offsets[:, 6:10] + torch.tensor([1.0, 0.0, 0.0, 0.0], device=device)
            quats = quat_multiply(delta, quats)
        transforms = self.bone_transforms(identity, rotations, root)
        posed, covariances, weights = skin_gaussians(means, log_scales, quats, self.skinning_logits, transforms)
        return PosedGaussians(
            means=posed, covariances=covariances, opacities=torch.sigmoid(attributes.opacity_logit[:, 0]), sh=attributes.sh,
            canonical_means=attributes.xyz, canonical_covariances=canonical_factor @ canonical_factor.transpose(1, 2),
            weights=weights, offsets=offsets,
        )  # fmt: skip

    # ------------------------------------------------------------------ rendering
    def _rasterize(self, gaussians: PosedGaussians, cameras, index: int, background: Tensor) -> RenderOutput:
        """Rasterise posed Gaussians into camera ``index`` (the shared rasteriser, as gaussians3d)."""
        from tensorfield.cuda.rasterize import GaussianBatch, camera_matrices, rasterize

        config = self.config
        camera = cameras[index]
        device = gaussians.means.device
        batch = GaussianBatch(means=gaussians.means, opacities=gaussians.opacities, colors=gaussians.sh,
                              covars=gaussians.covariances, sh_degree=self.active_sh_degree)  # fmt: skip
        viewmats, Ks = camera_matrices(camera)
        raster = rasterize(
            batch, viewmats.to(device), Ks.to(device), int(cameras.width), int(cameras.height),
            background=background.to(device), near_plane=config.near_plane, far_plane=config.far_plane,
            eps2d=config.eps2d, antialiased=config.antialiased, tile_size=config.tile_size, backend=config.backend,
        )  # fmt: skip
        alpha = raster.alpha[0]
        depth = raster.depth[0] * alpha / self._ray_z(camera, device)  # z-depth -> distance along the unit ray
        return RenderOutput(rgb=raster.rgb[0], depth=depth, alpha=alpha)

    @staticmethod
    def _ray_z(camera, device) -> Tensor:
        v, u = torch.meshgrid(torch.arange(camera.height, device=device, dtype=torch.float32),
                              torch.arange(camera.width, device=device, dtype=torch.float32), indexing="ij")  # fmt: skip
        x = (u + 0.5 - float(camera.cx[0])) / float(camera.fx[0])
        y = (v + 0.5 - float(camera.cy[0])) / float(camera.fy[0])
        return torch.rsqrt(x * x + y * y + 1.0)

    def _request_identity(self, identity: int | None, frame: int | None) -> int:
        if identity is None:
            identity = int(self.frame_identity[frame]) if frame is not None else 0
            if identity >= self.num_identities():
                raise ValueError(f"frame {frame} shows identity {identity}, which has no row in the model: choose an identity (0..{self.num_identities() - 1})")
        if not 0 <= identity < self.num_identities():
            raise ValueError(f"identity {identity} out of range (the model has {self.num_identities()})")
        return identity

    def _resolve(self, identity: int | None, frame: int | None, pose: BodyPose | None) -> tuple[int, Tensor | None, Tensor | None]:
        """``(identity, rotations [J, 3] or None, root [4, 4] or None)`` of a request: an explicit
        ``pose`` wins over ``frame``'s; the identity defaults to the frame's subject, else 0."""
        if pose is not None:
            if tuple(pose.rotations.shape) != (self.num_joints, 3) or tuple(pose.root.shape) != (4, 4):
                raise ValueError(f"a pose must be rotations [{self.num_joints}, 3] and root [4, 4], got {tuple(pose.rotations.shape)} and {tuple(pose.root.shape)}")
            return self._request_identity(identity if identity is not None else 0, None), pose.rotations, pose.root
        identity = self._request_identity(identity if identity is not None or frame is not None else 0, frame)
        rotations, root = self.frame_pose(frame) if frame is not None else (None, None)
        return identity, rotations, root

    @torch.no_grad()
    def render_view(self, request: RenderRequest) -> RenderOutput:
        """Identity ``request.identity`` (default: the frame's own subject, else 0) in
        ``request.pose``, else the pose of global frame ``request.frame``, else the rest pose,
        seen by the request's camera."""
        identity, rotations, root = self._resolve(request.identity, request.frame, request.pose)
        background = request.background if request.background is not None else torch.ones(3)
        output = self._rasterize(self.pose(identity, rotations, root), request.cameras, request.index, background)
        return RenderOutput(rgb=output.rgb.clamp(0.0, 1.0), depth=output.depth, alpha=output.alpha)

    # ------------------------------------------------------------------ training
    def skinning_prior_weight(self, step: int) -> float:
        """``skinning_prior_weight`` before ``skinning_prior_until``, ``skinning_prior_final`` after."""
        config = self.config
        return float(config.skinning_prior_weight if step < config.skinning_prior_until else config.skinning_prior_final)

    def skinning_prior(self, identity: int, gaussians: PosedGaussians) -> Tensor:
        """:math:`\\frac1N \\sum_n \\|w_n - w^{bone}(\\mu_n)\\|^2` at the (detached) canonical means."""
        rest = self.identity_rest_joints[identity]
        temperature = float(self.config.skinning_temperature) * self._height(rest)
        target = nearest_bone_weights(gaussians.canonical_means.detach().double(), self.skeleton(identity), temperature)
        return (gaussians.weights - target.to(gaussians.weights)).pow(2).sum(-1).mean()

    def aiap_losses(self, gaussians: PosedGaussians) -> tuple[Tensor, Tensor]:
        """``(xyz, cov)`` as-isometric-as-possible losses (official ``full_aiap_loss``): L1 between
        canonical and posed distances to the ``aiap_neighbours`` nearest canonical neighbours,
        of the means and of the covariance entries."""
        k = int(self.config.aiap_neighbours) + 1
        index = nearest_neighbours(gaussians.canonical_means.detach(), k).to(gaussians.means.device)[:, 1:]

        def spread(values: Tensor) -> Tensor:
            return (values[index] - values[:, None]).norm(dim=-1)

        xyz = (spread(gaussians.canonical_means) - spread(gaussians.means)).abs().mean()
        cov = (spread(covariance_entries(gaussians.canonical_covariances)) - spread(covariance_entries(gaussians.covariances))).abs().mean()
        return xyz, cov

    def training_step(self, batch: ImageBatch, step: int) -> StepOutput:
        """Image loss, mask loss and regularisers over the batch's views (module docstring)."""
        config = self.config
        extras = batch.extras
        renders, alphas = [], []
        terms: dict[str, list[Tensor]] = {}
        weights = {
            "skinning": self.skinning_prior_weight(step), "aiap_xyz": float(config.aiap_xyz_weight),
            "aiap_cov": float(config.aiap_cov_weight), "nr_xyz": float(config.nr_xyz_weight),
            "nr_scale": float(config.nr_scale_weight), "nr_rot": float(config.nr_rot_weight),
        }  # fmt: skip
        for i in range(len(batch.cameras)):
            identity = int(extras["identity"][i])
            if identity >= self.num_identities():
                raise ValueError(f"training view of identity {identity}, which has no row in the model (add_identity first)")
            gaussians = self.pose(identity, extras["rotations"][i], extras["root"][i], step=step)
            output = self._rasterize(gaussians, batch.cameras, i, batch.background)
            renders.append(output.rgb)
            alphas.append(output.alpha)
            if weights["skinning"] > 0:
                terms.setdefault("skinning", []).append(self.skinning_prior(identity, gaussians))
            if weights["aiap_xyz"] > 0 or weights["aiap_cov"] > 0:
                xyz, cov = self.aiap_losses(gaussians)
                terms.setdefault("aiap_xyz", []).append(xyz)
                terms.setdefault("aiap_cov", []).append(cov)
            if gaussians.offsets is not None:
                offsets = gaussians.offsets
                terms.setdefault("nr_xyz", []).append(offsets[:, 0:3].norm(dim=-1).mean())
                terms.setdefault("nr_scale", []).append(offsets[:, 3:6].abs().sum(-1).mean())
                terms.setdefault("nr_rot", []).append(offsets[:, 6:10].abs().sum(-1).mean())
        prediction = torch.stack(renders)
        loss, l1, structural = photometric_loss(prediction, batch.images, config.ssim_weight)
        metrics = {"mse": float(F.mse_loss(prediction.detach(), batch.images)), "l1": float(l1.detach()), "ssim": float(structural.detach())}
        if batch.alphas is not None and config.mask_weight > 0:
            mask = (torch.stack(alphas) - batch.alphas).abs().mean()
            loss = loss + float(config.mask_weight) * mask
            metrics["mask"] = float(mask.detach())
        for name, values in terms.items():
            value = torch.stack(values).mean()
            if weights[name] > 0:
                loss = loss + weights[name] * value
            metrics[name] = float(value.detach())
        return StepOutput(loss, metrics)

    def adam_settings(self) -> tuple[tuple[float, float], float]:
        """Adam betas (0.9, 0.999) and the config's eps (official 1e-15)."""
        return (0.9, 0.999), float(self.config.adam_eps)

    def param_groups(self) -> list[ParamGroup]:
        """One group per factor / attribute block (rates in the config); frozen parameters
        (after :meth:`add_identity`) are left out."""
        config = self.config
        decay = float(config.lr_final_ratio)
        steps = int(config.lr_decay_steps) if config.lr_decay_steps > 0 else max(int(config.steps), 1)
        blocks = self.tensor.feature_blocks
        rates = {"log_scale": config.lr_scales, "quat": config.lr_quats, "opacity_logit": config.lr_opacity,
                 "sh_dc": config.lr_sh, "sh_rest": config.lr_sh / 20.0}  # fmt: skip
        groups = [
            ParamGroup("identity", list(self.tensor.identity_rows), config.lr_identity, decay, steps),
            ParamGroup("gaussian_factors", [self.tensor.gaussian_factors], config.lr_gaussian_factors, decay, steps),
            ParamGroup("xyz", [blocks["xyz"]], config.lr_xyz, decay, steps),
        ]
        if isinstance(self.tensor, TuckerTensor):
            groups.append(ParamGroup("core", [self.tensor.core], config.lr_gaussian_factors, decay, steps))
        groups += [ParamGroup(name, [blocks[name]], rate) for name, rate in rates.items() if name in blocks]
        groups.append(ParamGroup("skinning", [self.skinning_logits], config.lr_skinning))
        if self.deformer is not None:
            groups.append(ParamGroup("non_rigid", list(self.deformer.parameters()), config.lr_non_rigid, decay, steps))
        for group in groups:
            group.params = [p for p in group.params if p.requires_grad]
        return [group for group in groups if group.params]

    def before_step(self, step: int) -> HookResult:
        """One more SH degree every ``sh_increase_interval`` steps (as gaussians3d); a fit on top
        of a trained model keeps the trained model's degree."""
        if not self.known_rows:
            self.active_sh_degree = min((step + 1) // max(int(self.config.sh_increase_interval), 1), self.sh_degree)
        return HookResult()

    # ------------------------------------------------------------------ unseen identities
    def add_identity(self, init: Tensor | None = None, rest_joints: Tensor | None = None) -> NewIdentity:
        """Append one identity row and freeze everything else (the few-shot / unseen-identity fit).

        Args:
            init: ``[R1]`` initial row (default: the mean row, the "average subject").
            rest_joints: ``[J, 3]`` the new subject's rest skeleton; needed only when the data the
                model was built from had no subject at this index (held-out subjects' skeletons
                come with the data).

        Returns:
            :class:`NewIdentity`: its index ``K`` (its frames in the data: identity ``K``) and
            ``[row]``, the only parameter with ``requires_grad`` afterwards (shared factors,
            other rows, skinning logits and the non-rigid MLP are frozen;
            :meth:`param_groups` then holds that row alone). Undo with :meth:`unfreeze`.
        """
        index = self.tensor.num_identities
        known = self.identity_rest_joints.shape[0]
        if rest_joints is not None or index >= known:
            if rest_joints is None:
                raise ValueError(f"identity {index} has no skeleton in the data: pass rest_joints [{self.num_joints}, 3]")
            joints = torch.as_tensor(rest_joints, dtype=torch.float64, device=self.identity_rest_joints.device)
            if joints.shape != (self.num_joints, 3):
                raise ValueError(f"rest_joints must be [{self.num_joints}, 3], got {tuple(joints.shape)}")
            Skeleton(self.parents.tolist(), joints.cpu())  # validates
            if index < known:
                self.identity_rest_joints[index] = joints
            else:
                self.identity_rest_joints = torch.cat([self.identity_rest_joints, joints[None]])
        self.tensor.add_identity(init)
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        row = self.tensor.train_only_identity(index)
        return NewIdentity(index, [row])

    def unfreeze(self) -> None:
        """Make every parameter trainable again."""
        for parameter in self.parameters():
            parameter.requires_grad_(True)

    def _freeze_known_rows(self) -> None:
        """Everything but the identity rows from ``known_rows`` on stops taking gradients."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        for row in list(self.tensor.identity_rows)[self.known_rows :]:
            row.requires_grad_(True)

    # FitsIdentities
    def identity_fit_values(self, data) -> dict:
        """Config values of a run fitting new identities on this model (``tensorfield
        fit-identity``): the names of its rows (``identity_rows``; ``data`` is the
        :class:`~.migs_data.AvatarTrainingData` it was trained on), the Tucker ranks it has, no
        non-rigid delay (the deformer is trained)."""
        names = list(data.identity_names[: self.num_identities()])
        values: dict = {"identity_rows": names, "non_rigid_delay": 0}
        if isinstance(self.tensor, TuckerTensor):
            values["tucker_ranks"] = list(self.tensor.ranks)
        return values

    @torch.no_grad()
    def start_identity_fit(self, base: MIGS) -> list[int]:
        """Take the trained ``base``: shared factors, its identity rows and skeletons, skinning
        logits, non-rigid MLP and SH degree; this model's new rows start at the mean of
        ``base``'s rows (the "average subject"). Returns the new rows' indices.

        Raises:
            ValueError: this model is not a fit (``identity_rows`` empty), or ``base`` differs in
                structure (decomposition, ranks, Gaussians, SH degree, skeleton tree, rows).
        """
        if not self.known_rows:
            raise ValueError("start_identity_fit needs a model built with identity_rows (the base model's row names)")
        if base.num_identities() != self.known_rows:
            raise ValueError(f"the base model has {base.num_identities()} identity rows, identity_rows names {self.known_rows}")
        if type(base.tensor) is not type(self.tensor) or not torch.equal(base.parents.cpu(), self.parents.cpu()):
            raise ValueError("the base model has another decomposition or skeleton tree")
        mine, theirs = self.state_dict(), base.state_dict()
        rows = {f"tensor.identity_rows.{k}" for k in range(self.num_identities())}
        frames = {"frame_rotations", "frame_root", "frame_identity", "identity_rest_joints"}
        for name, value in theirs.items():
            if name in frames or name in rows:
                continue
            if name not in mine or mine[name].shape != value.shape:
                raise ValueError(f"the base model's {name} {tuple(value.shape)} does not fit this model's {tuple(mine[name].shape) if name in mine else 'nothing'}")
            mine[name].copy_(value)
        average = base.tensor.identity_factors.detach().mean(0)
        for k, row in enumerate(self.tensor.identity_rows):
            row.copy_(base.tensor.identity_rows[k] if k < self.known_rows else average)
        self.identity_rest_joints[: self.known_rows] = base.identity_rest_joints[: self.known_rows].to(self.identity_rest_joints)
        self.active_sh_degree = base.active_sh_degree
        self._freeze_known_rows()
        return list(range(self.known_rows, self.num_identities()))

    # ------------------------------------------------------------------ export
    @torch.no_grad()
    def splat_attributes(self, time: float | None = None, identity: int | None = None, frame: int | None = None,
                         pose: BodyPose | None = None) -> SplatAttributes:  # fmt: skip
        """Identity ``identity`` (default: ``frame``'s subject, else 0) in ``pose``, else the pose
        of ``frame``, else the rest pose, in the 3DGS PLY layout (covariances factored into scales
        and rotations); ``time`` is ignored."""
        identity, rotations, root = self._resolve(identity, frame, pose)
        gaussians = self.pose(identity, rotations, root)
        scales, quats = covariance_to_scales_quats(gaussians.covariances)
        table = gaussians.sh
        count = table.shape[0]
        rest = table[:, 1:].transpose(1, 2).reshape(count, -1)  # channel-major, as 3DGS's save_ply
        opacity_logits = logit(gaussians.opacities.clamp(1e-7, 1 - 1e-7))
        columns = [gaussians.means, torch.zeros_like(gaussians.means), table[:, 0], rest, opacity_logits[:, None], scales.log(), quats]
        names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        names += [f"f_rest_{i}" for i in range(rest.shape[1])]
        names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
        return SplatAttributes(names, torch.cat(columns, dim=1).float().cpu())

    # ------------------------------------------------------------------ checkpoints
    def shape_state(self) -> dict:
        return {
            "decomposition": "tucker" if isinstance(self.tensor, TuckerTensor) else "cp",
            "num_gaussians": self.num_gaussians,
            "num_identities": self.num_identities(),
            "num_skeletons": int(self.identity_rest_joints.shape[0]),
            "num_frames": self.num_frames(),
            "num_joints": self.num_joints,
            "active_sh_degree": self.active_sh_degree,
        }

    def prepare_for_state(self, shape_state: dict) -> None:
        """Add the identity rows and resize the frame buffers of the checkpoint."""
        decomposition = shape_state.get("decomposition", "cp")
        mine = "tucker" if isinstance(self.tensor, TuckerTensor) else "cp"
        if decomposition != mine:
            raise ValueError(f"checkpoint holds a {decomposition} tensor, this model a {mine} one")
        for key, value in (("num_gaussians", self.num_gaussians), ("num_joints", self.num_joints)):
            if int(shape_state.get(key, value)) != value:
                raise ValueError(f"checkpoint has {key}={shape_state[key]}, this model {value}")
        while self.tensor.num_identities < int(shape_state.get("num_identities", self.tensor.num_identities)):
            self.tensor.add_identity()
        device = self.frame_root.device
        skeletons = int(shape_state.get("num_skeletons", self.identity_rest_joints.shape[0]))
        if skeletons != self.identity_rest_joints.shape[0]:
            self.identity_rest_joints = torch.zeros(skeletons, self.num_joints, 3, dtype=torch.float64, device=device)
        frames = int(shape_state.get("num_frames", self.num_frames()))
        if frames != self.num_frames():
            self.frame_rotations = torch.zeros(frames, self.num_joints, 3, dtype=torch.float64, device=device)
            self.frame_root = torch.zeros(frames, 4, 4, dtype=torch.float64, device=device)
            self.frame_identity = torch.zeros(frames, dtype=torch.long, device=device)
        self.active_sh_degree = int(shape_state.get("active_sh_degree", 0))


def build_migs(config: MIGSConfig, scene: SceneInfo) -> MIGS:
    """The registry's model factory."""
    return MIGS(config, scene)
