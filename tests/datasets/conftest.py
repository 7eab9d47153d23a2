"""Fixtures of the dataset tests (all named ``ds_*``)."""

from __future__ import annotations

from pathlib import Path

import pytest

LEGO = Path(__file__).resolve().parents[2] / "../shared/data/lego_100"


@pytest.fixture(autouse=True)
def ds_isolated_disk_cache(tmp_path_factory, monkeypatch):
    """Point the on-disk image cache at a temporary folder so tests never write to ~/.cache."""
    monkeypatch.setenv("TENSORFIELD_CACHE", str(tmp_path_factory.mktemp("tensorfield_cache")))


@pytest.fixture(scope="session")
def ds_lego_path() -> Path:
    """The real 100x100 lego scene, or a skip when the shared data is absent."""
    if not (LEGO / "transforms_train.json").is_file():
        pytest.skip(f"real test data not found at {LEGO.resolve()}")
    return LEGO.resolve()


@pytest.fixture(scope="session")
def ds_static_scene(tmp_path_factory) -> Path:
    """A small generated static scene (32x32, 6 train / 2 test / 1 val views)."""
    from tensorfield.datasets.synthetic import make_scene

    return make_scene(
        tmp_path_factory.mktemp("static"), resolution=32, n_train=6, n_test=2, n_val=1, seed=0
    )


@pytest.fixture(scope="session")
def ds_dynamic_scene(tmp_path_factory) -> Path:
    """A small generated dynamic (D-NeRF layout) scene (32x32, 6 train / 3 test views)."""
    from tensorfield.datasets.synthetic import make_scene

    return make_scene(
        tmp_path_factory.mktemp("dynamic"),
        kind="dynamic",
        resolution=32,
        n_train=6,
        n_test=3,
        n_val=0,
        seed=1,
    )


# SMPL's kinematic tree (kintree_table[0] of the model files)
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def write_fake_smpl(folder: Path, *, per_joint: int = 10, num_betas: int = 10, seed: int = 0,
                    name: str = "SMPL_NEUTRAL.pkl") -> dict:
    """Write a tiny SMPL-like model (the keys and shapes smplx reads; 24 joints, ``24 * per_joint``
    vertices in clusters around a humanoid rest skeleton, each joint regressed as the mean of its
    cluster, no pose blend shapes) as ``folder / name`` (.pkl or .npz); returns its arrays."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    joints = np.zeros((24, 3))
    for j in range(1, 24):  # children below/above their parent, spread sideways by index
        step = np.array([0.08 * ((j % 3) - 1), 0.12 if j in (3, 6, 9, 12, 15) else -0.12, 0.01 * j])
        joints[j] = joints[SMPL_PARENTS[j]] + step
    vertices = (joints[:, None, :] + 0.02 * rng.standard_normal((24, per_joint, 3))).reshape(-1, 3)
    count = vertices.shape[0]
    regressor = np.zeros((24, count))
    weights = np.zeros((count, 24))
    for j in range(24):
        regressor[j, j * per_joint:(j + 1) * per_joint] = 1.0 / per_joint
        weights[j * per_joint:(j + 1) * per_joint, j] = 0.7
        weights[j * per_joint:(j + 1) * per_joint, max(SMPL_PARENTS[j], 0)] += 0.3
    arrays = {
        "v_template": vertices,
        "shapedirs": 0.01 * rng.standard_normal((count, 3, num_betas)),
        "J_regressor": regressor,
        "kintree_table": np.stack([np.array([4294967295] + SMPL_PARENTS[1:]), np.arange(24)]).astype(np.int64),
        "weights": weights,
        "posedirs": np.zeros((count, 3, 207)),
        "f": np.arange(3 * (count // 3)).reshape(-1, 3).astype(np.int64),
    }
    folder.mkdir(parents=True, exist_ok=True)
    if name.endswith(".npz"):
        np.savez(folder / name, **arrays)
    else:
        with open(folder / name, "wb") as handle:
            pickle.dump(arrays, handle)
    return arrays


@pytest.fixture
def ds_fake_smpl(tmp_path, monkeypatch):
    """``(folder, arrays)`` of a tiny fake SMPL model; TENSORFIELD_SMPL unset (tests pass it)."""
    monkeypatch.delenv("TENSORFIELD_SMPL", raising=False)
    folder = tmp_path / "smpl_models"
    return folder, write_fake_smpl(folder)


@pytest.fixture
def ds_smpl_writer():
    """:func:`write_fake_smpl`, for tests that write their own fake SMPL files."""
    return write_fake_smpl
