"""The trainer passes the video config keys (frame_stride, max_frames, time_range, test_cameras) to the N3V loader."""

from __future__ import annotations

import pytest
from tensorfield.datasets.synthetic import make_video_scene
from tensorfield.engine.config import ConfigError
from tensorfield.engine.trainer import load_scene_for
from tensorfield.fields.config import ImageMethodConfig


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video_scene(tmp_path_factory.mktemp("n3v") / "scene", n_cameras=3, n_frames=6, resolution=16)


def test_video_keys_select_frames_and_test_camera(video):
    scene = load_scene_for(ImageMethodConfig(data=str(video), frame_stride=2, test_cameras=["cam01"]))
    train, test = scene.split("train"), scene.split("test")
    assert len(test) == 3 and len(train) == 6  # 3 frames (0, 2, 4) x (1 test camera, 2 training cameras)
    assert sorted(set(test.cameras.times.tolist())) == pytest.approx([0.0, 0.5, 1.0])
    assert len(load_scene_for(ImageMethodConfig(data=str(video), max_frames=2)).split("train")) == 4


def test_video_keys_on_an_image_scene_and_bad_time_range_are_config_errors(tmp_path, video):
    from tensorfield.datasets.synthetic import make_scene

    images = make_scene(tmp_path / "img", resolution=8, n_train=2, n_test=1, n_val=0)
    with pytest.raises(ConfigError, match="video scenes"):
        load_scene_for(ImageMethodConfig(data=str(images), frame_stride=2))
    with pytest.raises(ConfigError, match="time_range"):
        load_scene_for(ImageMethodConfig(data=str(video), time_range=[0.5]))
