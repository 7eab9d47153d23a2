"""The Blender loader on the real 100x100 lego views (``../shared/data/lego_100``)."""

from __future__ import annotations

import json
import math
import time

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from tensorfield.datasets import images as images_module
from tensorfield.datasets.cameras import opengl_to_opencv
from tensorfield.datasets.errors import DatasetError
from tensorfield.datasets.images import cache_dir, clear_image_cache
from tensorfield.datasets.scene import load_scene, recomposite


def assert_close(actual, expected, atol: float = 1e-6, rtol: float = 1e-6) -> None:
    """Cheap stand-in for ``torch.testing.assert_close`` (whose first call costs seconds here)."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    difference = (actual.double() - expected.double()).abs()
    bound = atol + rtol * expected.double().abs()
    assert bool((difference <= bound).all()), f"max abs difference {float(difference.max()):.3g}"


@pytest.fixture(scope="module")
def lego(ds_lego_path):
    return load_scene(ds_lego_path)


@pytest.fixture
def count_decodes(monkeypatch):
    """Counts calls of ``imageio.v3.imread`` made by the loader."""
    calls = []
    real = images_module.iio.imread

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(images_module.iio, "imread", counting)
    return calls


def test_lego_shapes_and_format(lego, ds_lego_path):
    assert lego.format == "blender" and not lego.is_dynamic
    assert set(lego.splits) == {"train", "val", "test"}
    train, test = lego.split("train"), lego.split("test")
    assert train.images.shape == (70, 100, 100, 3) and train.images.dtype == torch.float32
    assert test.images.shape == (10, 100, 100, 3)
    assert train.alphas.shape == (70, 100, 100)
    assert len(train.cameras) == 70 and (train.cameras.width, train.cameras.height) == (100, 100)
    assert train.image_paths[3].name == "r_3.png"
    assert train.depths is None
    assert torch.isnan(train.cameras.times).all()
    assert_close(lego.aabb, torch.tensor([[-1.5] * 3, [1.5] * 3]))
    assert (lego.near, lego.far) == (2.0, 6.0)
    info = lego.scene_info()
    assert info.num_train_images == 70 and not info.is_dynamic and info.near == 2.0


def test_lego_cameras_follow_the_file(lego, ds_lego_path):
    meta = json.loads((ds_lego_path / "transforms_train.json").read_text())
    focal = 0.5 * 100 / math.tan(0.5 * meta["camera_angle_x"])
    cameras = lego.split("train").cameras
    assert_close(cameras.fx, torch.full((70,), focal))
    assert_close(cameras.fy, torch.full((70,), focal))
    assert_close(cameras.cx, torch.full((70,), 50.0))
    pose = torch.tensor(meta["frames"][5]["transform_matrix"])
    assert_close(cameras.c2w[5], opengl_to_opencv(pose)[:3])
    # every lego camera looks roughly at the origin
    forward, centre = cameras.c2w[:, :, 2], cameras.c2w[:, :, 3]
    cosine = (forward * -centre).sum(-1) / centre.norm(dim=-1)
    assert bool((cosine > 0.99).all())


def test_lego_composited_on_white(lego, ds_lego_path):
    train = lego.split("train")
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0
    empty = train.alphas == 0
    assert empty.any() and (train.alphas == 1).any()
    assert bool((train.images[empty] == 1.0).all())
    raw = iio.imread(ds_lego_path / "train" / "r_0.png").astype(np.float32) / 255.0
    alpha = raw[..., 3:]
    expected = raw[..., :3] * alpha + (1.0 - alpha)
    assert_close(train.images[0], torch.from_numpy(expected), atol=1e-6, rtol=0)


def test_black_and_random_backgrounds(lego, ds_lego_path):
    black = load_scene(ds_lego_path, background="black", splits=("train",))
    train, white = black.split("train"), lego.split("train")
    assert bool((train.images[train.alphas == 0] == 0.0).all())
    moved = recomposite(white.images, white.alphas, lego.background, black.background)
    assert_close(moved, train.images, atol=1e-6, rtol=0)
    random = load_scene(ds_lego_path, background="random", splits=("train",))
    assert random.random_background and random.background.tolist() == [1.0, 1.0, 1.0]
    assert_close(random.split("train").images, white.images)
    grey = load_scene(ds_lego_path, background=(0.5, 0.5, 0.5), splits=("train",))
    assert bool((grey.split("train").images[train.alphas == 0] == 0.5).all())
    with pytest.raises(ValueError):
        load_scene(ds_lego_path, background="purple")


def test_downscale_two_halves_resolution_and_focal(lego, ds_lego_path):
    half = load_scene(ds_lego_path, downscale=2, splits=("train",))
    train, full = half.split("train"), lego.split("train")
    assert train.images.shape == (70, 50, 50, 3) and train.alphas.shape == (70, 50, 50)
    assert (train.cameras.width, train.cameras.height) == (50, 50)
    assert_close(train.cameras.fx, full.cameras.fx / 2)
    assert_close(train.cameras.cx, full.cameras.cx / 2)
    # an exact factor is a 2x2 box filter, and compositing commutes with it
    pooled = full.images.reshape(70, 50, 2, 50, 2, 3).mean(dim=(2, 4))
    assert_close(train.images, pooled, atol=1e-5, rtol=0)
    odd = load_scene(ds_lego_path, downscale=3, splits=("test",))
    assert odd.split("test").images.shape == (10, 33, 33, 3)
    assert odd.split("test").cameras.width == 33


def test_only_requested_splits_and_missing_split_error(ds_lego_path):
    scene = load_scene(ds_lego_path, splits=("train",))
    assert list(scene.splits) == ["train"]
    with pytest.raises(DatasetError) as error:
        scene.split("test")
    assert "lego_100" in str(error.value) and "test" in str(error.value)


def test_second_load_does_not_decode(ds_lego_path, count_decodes):
    clear_image_cache()
    start = time.perf_counter()
    first = load_scene(ds_lego_path)
    elapsed = time.perf_counter() - start
    assert len(count_decodes) == 80  # val lists the same files as test: decoded once
    second = load_scene(ds_lego_path)
    assert len(count_decodes) == 80
    assert_close(first.split("val").images, second.split("val").images)
    # the target is well under 2 s; the margin absorbs a busy shared CPU
    assert elapsed < 6.0, f"loading lego_100 took {elapsed:.2f} s"


def test_disk_cache_round_trip_and_corruption(ds_lego_path, count_decodes):
    clear_image_cache()
    first = load_scene(ds_lego_path, splits=("test",), disk_cache=True)
    files = list(cache_dir().glob("images-*.npz"))
    assert len(files) == 1 and len(count_decodes) == 10
    clear_image_cache()
    second = load_scene(ds_lego_path, splits=("test",), disk_cache=True)
    assert len(count_decodes) == 10  # served from disk
    assert torch.equal(first.split("test").images, second.split("test").images)
    files[0].write_bytes(b"not a zip file")
    clear_image_cache()
    third = load_scene(ds_lego_path, splits=("test",), disk_cache=True)
    assert len(count_decodes) == 20  # rebuilt
    assert torch.equal(first.split("test").images, third.split("test").images)
    clear_image_cache()
    load_scene(ds_lego_path, splits=("test",), disk_cache=True)
    assert len(count_decodes) == 20  # the rebuilt file is valid
    assert not list(cache_dir().glob("*.tmp"))
