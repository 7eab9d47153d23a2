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
