"""Frame selection and decoding of captures (datasets/capture_frames.py, datasets/capture.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageFilter
from tensorfield.datasets.capture import CaptureSettings, classify_inputs
from tensorfield.datasets.capture_frames import (
    CaptureError,
    decode_video,
    keep_sharpest,
    relative_sharpness,
    sharpness,
)
from tensorfield.datasets.synthetic_capture import (
    _write_video,
    capture_primitives,
    make_capture_video,
    orbit_capture_poses,
    render_capture,
)


def test_sharpness_ranks_a_blurred_image_below_the_original():
    image = render_capture(capture_primitives(), orbit_capture_poses(1)[0], 96, 72, 80.0, supersample=False)
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(1.5)))
    assert sharpness(blurred) < 0.5 * sharpness(image)


def test_keep_sharpest_drops_frames_blurry_relative_to_their_neighbours():
    # a soft stretch (frames 6-9) is not emptied: only frames worse than their neighbours go
    values = np.array([10.0, 10, 2, 10, 10, 10, 3, 3, 1, 3, 10, 10])
    relative = relative_sharpness(values, neighbours=2)
    assert relative[2] < 0.3 and relative[8] < 0.5
    kept = keep_sharpest(values, 10, neighbours=2)
    assert list(kept) == [0, 1, 3, 4, 5, 6, 7, 9, 10, 11]
    assert list(keep_sharpest(values, 20)) == list(range(12))


def test_decode_video_picks_the_sharpest_frame_of_each_window(tmp_path):
    poses = orbit_capture_poses(12, arc_deg=30.0)
    frames = []
    for k, pose in enumerate(poses):
        image = render_capture(capture_primitives(), pose, 96, 72, 80.0, supersample=False)
        if k % 2 == 0:  # even frames are shaken: the odd one of each pair must win
            image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(2.0)))
        frames.append(image)
    video = tmp_path / "shaky.mp4"
    _write_video(video, frames, fps=12.0, crf=12)
    infos = decode_video(video, tmp_path / "images", frames=6, blur_keep=1.0, downscale=2)
    assert [info.index for info in infos] == [1, 3, 5, 7, 9, 11]
    assert [info.name for info in infos] == [f"frame_{k:05d}.png" for k in range(6)]
    assert Image.open(tmp_path / "images" / "frame_00000.png").size == (48, 36)
    assert infos[2].seconds == pytest.approx(5 / 12.0)


def test_a_corrupt_video_is_one_line_naming_the_file(tmp_path):
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(CaptureError, match=r"broken\.mp4: (unreadable|video is corrupt)") as caught:
        decode_video(video, tmp_path / "images", frames=4)
    assert "\n" not in str(caught.value)


def test_classify_inputs(tmp_path):
    video = make_capture_video(tmp_path / "a.mp4", frames=2, size=(32, 24), blank=True)
    assert classify_inputs([video])[0] == "video"
    (tmp_path / "b.mp4").write_bytes(video.read_bytes())
    assert classify_inputs([tmp_path])[0] == "rig"
    with pytest.raises(CaptureError, match="a_cameras.json: not a video"):
        classify_inputs([video, tmp_path / "a_cameras.json"])
    with pytest.raises(CaptureError, match="nope: no such file"):
        classify_inputs([tmp_path / "nope"])


def test_settings_name_the_bad_option():
    with pytest.raises(CaptureError, match="--blur-keep must be in"):
        CaptureSettings(blur_keep=0.0).check()
    with pytest.raises(CaptureError, match="--camera-model must be one of"):
        CaptureSettings(camera_model="FISHEYE").check()


def test_synthetic_capture_cameras_match_the_video(tmp_path):
    video = make_capture_video(tmp_path / "o.mp4", frames=4, size=(64, 48), supersample=False)
    cameras = json.loads((tmp_path / "o_cameras.json").read_text())["cameras"]
    assert len(cameras) == 1 and len(cameras[0]["frames"]) == 4
    assert cameras[0]["width"] == 64 and cameras[0]["cx"] == 32.0
    # deterministic: the same call writes the same ground truth
    make_capture_video(tmp_path / "p.mp4", frames=4, size=(64, 48), supersample=False)
    assert json.loads((tmp_path / "p_cameras.json").read_text())["cameras"] == cameras
    assert video.stat().st_size > 0
