"""The SMPL body model (Loper et al., SIGGRAPH Asia 2015) through the ``smplx`` package.

SMPL's model files are licensed (https://smpl.is.tue.mpg.de) and **not shipped**: the user points
at them with the ``smpl_model_path`` config option (a folder or one file) or the
``TENSORFIELD_SMPL`` environment variable. Nothing is ever downloaded. ``smplx`` is the optional
extra ``pip install 'tensorfield[avatars]'``.

**Model files** (:func:`find_smpl_model`): a file path is used as it is; in a folder the file of
the requested gender is looked for as ``SMPL_{NEUTRAL,FEMALE,MALE}.{pkl,npz}`` (smplx's names),
then under ``smpl/`` (the layout of ``smplx.create``), then under the names of the SMPL download
(``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl``, ``basicmodel_{f,m}_lbs_10_207_0_v1.0.0.pkl``).
A file holds ``v_template [V, 3]``, ``shapedirs [V, 3, B]``, ``J_regressor [24, V]``,
``kintree_table [2, 24]``, ``weights [V, 24]``, ``posedirs [V, 3, 207]`` and ``f [F, 3]``.
The original ``.pkl`` files pickle chumpy arrays: without ``chumpy`` they do not unpickle, and
the error says so (smplx's ``tools/clean_ch.py`` writes a chumpy-free copy).

**Rest skeleton** (:func:`smpl_skeleton`): the shaped template
:math:`\\bar T + S \\beta` (smplx's ``blend_shapes``), its joints regressed by ``J_regressor``
(smplx's ``vertices2joints``), the kinematic tree from ``kintree_table`` (the model's ``parents``)
and the 24 joint names of :data:`SMPL_JOINT_NAMES`.

**Poses** (:func:`smpl_pose`): SMPL's 72 numbers are the global orientation (axis-angle of joint
0, the pelvis, about its rest position :math:`x_0`) then 23 local joint rotations, in joint order;
smplx adds ``transl`` to every vertex; ZJU-MoCap fits (EasyMocap) then map the SMPL body into the
world by :math:`x_w = R(R_h) x + T_h`. In the generic skeleton of :mod:`tensorfield.fields.skeleton`
the global orientation moves into the root transform (so the joint rotations, which condition the
non-rigid network, do not depend on where the subject faces, as 3DGS-Avatar's pose code):

.. math::

    M = T(T_h)\\, R(R_h)\\, T(t)\\, T(x_0)\\, R(\\theta_0)\\, T(-x_0), \\qquad
    \\text{rotations} = (0, \\theta_1, \\dots, \\theta_{23}).

Then :math:`G_j = T_j (T^{rest}_j)^{-1}` of :class:`~tensorfield.fields.skeleton.Skeleton` equals
smplx's ``A`` (``batch_rigid_transform``'s relative transforms) with the same translation and
world map, so LBS of the shaped template with SMPL's weights gives smplx's vertices (without the
pose-corrective blend shapes, which a Gaussian avatar does not use). Every problem is a one-line
:class:`~.errors.DatasetError` naming the file at fault.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from tensorfield.fields.skeleton import (
    Skeleton,
    axis_angle_to_matrix,
    check_rotations,
    rigid_transform,
    translation_matrix,
)
from torch import Tensor

from .errors import DatasetError, one_line

SMPL_ENV = "TENSORFIELD_SMPL"
GENDERS = ("neutral", "female", "male")
SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
NUM_JOINTS = len(SMPL_JOINT_NAMES)
MODEL_KEYS = ("v_template", "shapedirs", "J_regressor", "kintree_table", "weights", "posedirs", "f")
_DOWNLOAD_NAMES = {
    "neutral": "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl",
    "female": "basicmodel_f_lbs_10_207_0_v1.0.0.pkl",
    "male": "basicmodel_m_lbs_10_207_0_v1.0.0.pkl",
}
LICENCE = "the SMPL files are licensed and not shipped: download them from https://smpl.is.tue.mpg.de"


# ====================================================================== model files
def smpl_model_location(model_path: str | Path | None = None) -> Path | None:
    """``model_path`` when given (non-empty), else ``$TENSORFIELD_SMPL``, else ``None``."""
    if model_path is not None and str(model_path):
        return Path(model_path).expanduser()
    value = os.environ.get(SMPL_ENV, "")
    return Path(value).expanduser() if value else None


def find_smpl_model(
    model_path: str | Path | None,
    gender: str = "neutral",
    requested_by: str | Path = "SMPL",
    root: str | Path | None = None,
) -> Path:
    """The SMPL model file of ``gender`` (search order in the module docstring).

    Args:
        model_path: a folder or a model file; ``None`` or empty: ``$TENSORFIELD_SMPL``.
        gender: ``neutral``, ``female`` or ``male``.
        requested_by: the data file that asked for SMPL (named when no location is set).
        root: data set root, to shorten ``requested_by`` in messages.

    Returns:
        The model file.

    Raises:
        DatasetError: one line: no location set (naming ``requested_by``), or the file not
            found (naming the folder and the names looked for).
    """
    if gender not in GENDERS:
        raise DatasetError(requested_by, f"SMPL gender must be one of {', '.join(GENDERS)}, got {gender!r}", root=root)
    location = smpl_model_location(model_path)
    if location is None:
        raise DatasetError(
            requested_by,
            f"needs the SMPL model files: set smpl_model_path=FOLDER (config or command line) or {SMPL_ENV}=FOLDER ({LICENCE})",
            root=root,
        )
    if location.is_file():
        return location
    if not location.exists():
        raise DatasetError(location, f"SMPL model path does not exist (from smpl_model_path or {SMPL_ENV}; {LICENCE})")
    names = [f"SMPL_{gender.upper()}.pkl", f"SMPL_{gender.upper()}.npz"]
    candidates = [folder / name for folder in (location, location / "smpl") for name in names]
    candidates += [location / _DOWNLOAD_NAMES[gender], location / "smpl" / _DOWNLOAD_NAMES[gender]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c.relative_to(location)) for c in candidates)
    raise DatasetError(location, f"no SMPL model file of gender {gender} (looked for {looked}; {LICENCE})")


def read_smpl_model(path: Path) -> dict:
    """The arrays of an SMPL model file (``.pkl`` or ``.npz``), checked for :data:`MODEL_KEYS`.

    Raises:
        DatasetError: one line naming ``path``: unreadable, pickled chumpy arrays without chumpy,
            a key missing, or not a 24-joint model.
    """
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                data = {key: archive[key] for key in archive.files}
        else:
            with open(path, "rb") as handle:
                data = pickle.load(handle, encoding="latin1")  # noqa: S301 - the user's own model file
    except ModuleNotFoundError as error:
        raise DatasetError(
            path,
            f"the SMPL file pickles {error.name} objects and {error.name} is not installed: pip install {error.name}, "
            "or write a chumpy-free copy with smplx's tools/clean_ch.py",
        ) from None
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, AttributeError, TypeError) as error:
        raise DatasetError(path, f"unreadable SMPL model file ({one_line(error)[:120]})") from None
    if not isinstance(data, dict):
        raise DatasetError(path, f"not an SMPL model file (holds a {type(data).__name__}, expected a dict of arrays)")
    missing = [key for key in MODEL_KEYS if key not in data]
    if missing:
        raise DatasetError(path, f"not an SMPL model file: no {missing[0]!r} ({len(missing)} of {', '.join(MODEL_KEYS)} missing)")
    kintree = np.asarray(data["kintree_table"])
    if kintree.ndim != 2 or kintree.shape != (2, NUM_JOINTS):
        raise DatasetError(path, f"kintree_table must be [2, {NUM_JOINTS}] (SMPL's 24 joints), got {list(kintree.shape)}")
    return data


def load_smpl(path: Path, num_betas: int, gender: str = "neutral"):
    """An ``smplx.SMPL`` module (float64) built from the model file at ``path``.

    Raises:
        DatasetError: ``smplx`` not installed (naming ``path`` and the interpreter it was looked
            for in) or the file unusable.
    """
    try:
        import smplx
        from smplx.utils import Struct
    except ImportError as error:
        raise DatasetError(
            path,
            f"the SMPL body model needs the smplx package, not importable by {sys.executable} ({one_line(error)}): "
            "pip install 'tensorfield[avatars]'",
        ) from None
    data = read_smpl_model(path)
    available = int(np.asarray(data["shapedirs"]).shape[-1])
    if num_betas > available:
        raise DatasetError(path, f"{num_betas} betas given but the model has {available} shape components")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning for 10-beta models
            return smplx.SMPL(str(path), data_struct=Struct(**data), num_betas=max(num_betas, 1), gender=gender, dtype=torch.float64)
    except (ValueError, TypeError, IndexError, RuntimeError) as error:
        raise DatasetError(path, f"smplx cannot build the SMPL model ({one_line(error)[:120]})") from None


# ====================================================================== skeleton and poses
def smpl_skeleton(
    betas,
    *,
    gender: str = "neutral",
    model_path: str | Path | None = None,
    requested_by: str | Path = "SMPL",
    root: str | Path | None = None,
) -> Skeleton:
    """The rest skeleton of an SMPL body of shape ``betas`` (module docstring).

    Args:
        betas: ``[B]`` shape coefficients (``B`` up to the model's components; empty: mean shape).
        gender: which model file.
        model_path: folder or file of the SMPL model (default ``$TENSORFIELD_SMPL``).
        requested_by: the data file asking (for messages).
        root: data set root, to shorten paths in messages.

    Returns:
        :class:`~tensorfield.fields.skeleton.Skeleton` with 24 joints (float64 rest joints in the
        model's units, metres), SMPL's parents and :data:`SMPL_JOINT_NAMES`.
    """
    betas = np.asarray(betas, dtype=np.float64).reshape(-1)
    if not np.isfinite(betas).all():
        raise DatasetError(requested_by, "SMPL betas hold NaN/inf", root=root)
    path = find_smpl_model(model_path, gender, requested_by, root)
    model = load_smpl(path, len(betas), gender)
    from smplx.lbs import blend_shapes, vertices2joints

    coefficients = torch.zeros(1, model.num_betas, dtype=torch.float64)
    coefficients[0, : len(betas)] = torch.from_numpy(betas)
    with torch.no_grad():
        shaped = model.v_template[None] + blend_shapes(coefficients, model.shapedirs)
        joints = vertices2joints(model.J_regressor, shaped)[0]
    parents = [int(p) for p in model.parents.tolist()]
    try:
        return Skeleton(parents, joints, SMPL_JOINT_NAMES)
    except ValueError as error:
        raise DatasetError(path, f"kintree_table is not a usable tree ({one_line(error)})") from None


def smpl_pose(
    poses: Tensor,
    rest_root: Tensor,
    transl: Tensor | None = None,
    Rh: Tensor | None = None,  # noqa: N803 - ZJU-MoCap's names
    Th: Tensor | None = None,  # noqa: N803
) -> tuple[Tensor, Tensor]:
    """SMPL pose parameters as the generic skeleton's ``(rotations, root)`` (module docstring).

    Args:
        poses: ``[T, 72]`` (or ``[T, 24, 3]``) axis-angle: global orientation, then 23 joints.
        rest_root: ``[3]`` the rest position of joint 0 (the pelvis) of the subject's skeleton.
        transl: ``[T, 3]`` smplx's translation (default 0).
        Rh: ``[T, 3]`` axis-angle of the world-from-SMPL rotation (ZJU-MoCap; default 0).
        Th: ``[T, 3]`` world-from-SMPL translation (ZJU-MoCap; default 0).

    Returns:
        ``(rotations [T, 24, 3], root [T, 4, 4])`` float64, joint 0's rotation zero.

    Raises:
        ValueError: shapes that do not fit, or a NaN/inf rotation (naming frame and joint).
    """
    poses = torch.as_tensor(poses, dtype=torch.float64)
    count = poses.shape[0]
    if poses.shape[1:] not in ((72,), (NUM_JOINTS, 3)):
        raise ValueError(f"SMPL poses must be [T, 72] (or [T, 24, 3]), got {list(poses.shape)}")
    rotations = poses.reshape(count, NUM_JOINTS, 3).clone()
    check_rotations(rotations, NUM_JOINTS, "axis_angle", SMPL_JOINT_NAMES)
    vectors = {}
    for key, value in (("transl", transl), ("Rh", Rh), ("Th", Th)):
        value = torch.zeros(count, 3, dtype=torch.float64) if value is None else torch.as_tensor(value, dtype=torch.float64)
        if tuple(value.shape) != (count, 3):
            raise ValueError(f"{key} must be [{count}, 3], got {list(value.shape)}")
        bad = ~torch.isfinite(value).all(-1)
        if bad.any():
            raise ValueError(f"{key} of frame {int(bad.nonzero()[0])} is NaN/inf")
        vectors[key] = value
    pivot = torch.as_tensor(rest_root, dtype=torch.float64).reshape(3)
    zero = torch.zeros(3, dtype=torch.float64)
    orient = rigid_transform(axis_angle_to_matrix(rotations[:, 0]), zero)
    world = rigid_transform(axis_angle_to_matrix(vectors["Rh"]), zero)
    root = (
        translation_matrix(vectors["Th"]) @ world @ translation_matrix(vectors["transl"] + pivot)
        @ orient @ translation_matrix(-pivot)
    )  # fmt: skip
    rotations[:, 0] = 0.0
    return rotations, root
