"""The desktop viewer on a MIGS run, headless (pytest-qt, offscreen): identity and frame choosers,
pose-sequence playback (load, scrub, play, clear, a bad file's one-line error in the panel), and
every frame equal to `tensorfield render` of the same camera, identity, frame or pose."""

import imageio.v3 as iio
import numpy as np
import pytest
import torch

pytest.importorskip("PyQt6.QtWidgets")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import Qt
from tensorfield.app.cli import main
from tensorfield.app.viewer.window import ViewerWindow
from tensorfield.datasets.synthetic_avatars import make_avatars
from tensorfield.engine.render import CameraPath, save_camera_path

TINY = [
    "steps=20", "num_gaussians=300", "rank=8", "sh_degree=1", "sh_increase_interval=10", "nr_width=16",
    "nr_layers=1", "nr_frequencies=2", "skinning_prior_until=10", "backend=cpu", "checkpoint_every=20",
    "log_every=10", "aiap_neighbours=3",
]  # fmt: skip
WAIT_MS = 15000


@pytest.fixture(scope="module")
def avatar_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer_migs")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    data = make_avatars(root / "data", n_identities=3, n_train=5, n_novel_pose=2, n_held_out=0, resolution=32, seed=5)
    run = root / "run"
    assert main(["train", "configs/migs_synthetic.yaml", "--data", str(data), "--out", str(run), "--no-progress", *TINY]) == 0
    torch.set_num_threads(previous)
    return data, run


@pytest.fixture
def window(qtbot):
    win = ViewerWindow()
    qtbot.addWidget(win)
    win.resize(700, 500)
    win.show()
    yield win
    win.shutdown()


def settle(qtbot, win):
    qtbot.waitUntil(win.wait_idle, timeout=WAIT_MS)
    return win.current_frame.copy()


def cli_frames(run, request, tmp_path, name, *flags) -> list[np.ndarray]:
    """`tensorfield render` of the viewer's last camera with ``flags``; the colour frames."""
    save_camera_path(tmp_path / f"{name}.json", CameraPath(request.cameras()))
    assert main(["render", str(run), "--path", str(tmp_path / f"{name}.json"), "--out", str(tmp_path / name), "--no-depth", *flags]) == 0
    return [iio.imread(path) for path in sorted((tmp_path / name).glob("*.png"))]


def test_identity_frame_and_pose_playback_match_the_cli(qtbot, window, avatar_run, tmp_path):
    data, run = avatar_run
    window.open_run(run)
    first = settle(qtbot, window)
    family = window.family
    assert family.title == "Subject" and family.drives_poses and window.family_box.isVisibleTo(window)
    assert not window.time_box.isVisibleTo(window)

    # identity 1 in frame 3 (subject_0's pose) is the CLI's --identity 1 --frame 3
    family.identity_spin.setValue(1)
    family.frame_spin.setValue(3)
    framed = settle(qtbot, window)
    request = window.last_result.request
    assert (request.identity, request.frame, request.pose) == (1, 3, None)
    assert not np.array_equal(framed, first)
    assert np.array_equal(framed, cli_frames(run, request, tmp_path, "frame", "--identity", "1", "--frame", "3")[0])

    # another subject's motion: pose 4 of subject_2's file is frame 4 of `render --poses`
    motion = data / "subject_2" / "poses.npz"
    assert family.open_poses(motion, window.request_frame)
    assert family.pose_status.text() == f"pose 1 / 7 of {motion}" and family.pose_slider.isEnabled()
    family.pose_slider.setValue(4)
    posed = settle(qtbot, window)
    request = window.last_result.request
    assert request.pose is not None and family.pose_index == 4
    torch.testing.assert_close(request.pose.rotations, family.poses[4].rotations)
    video = cli_frames(run, request, tmp_path, "poses", "--identity", "1", "--poses", str(motion))
    assert len(video) == 7 and np.array_equal(posed, video[4])
    assert not np.array_equal(posed, framed)

    # play steps through the sequence, pause stops it
    qtbot.mouseClick(family.pose_play_button, Qt.MouseButton.LeftButton)
    assert family.pose_timer.isActive() and family.pose_play_button.text() == "Pause"
    qtbot.waitUntil(lambda: family.pose_index != 4, timeout=WAIT_MS)
    qtbot.mouseClick(family.pose_play_button, Qt.MouseButton.LeftButton)
    assert not family.pose_timer.isActive()
    shown = family.pose_index
    played = settle(qtbot, window)
    assert window.last_result.request.pose is family.poses[shown]
    assert np.array_equal(played, video[shown])

    # a bad file: one line in the panel, the loaded sequence kept
    with np.load(motion) as stored:
        arrays = dict(stored)
    arrays["rotations"][1, 2, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    assert not family.open_poses(tmp_path / "nan.npz", window.request_frame)
    names = family.session.model.joint_names
    assert family.pose_status.text() == f"error: {tmp_path / 'nan.npz'}: rotation of joint 2 ({names[2]!r}) in frame 1 is NaN/inf"
    assert family.pose_path == str(motion) and len(family.poses) == 7

    # clear: back to the frame's own pose, the same pixels as before
    qtbot.mouseClick(family.pose_clear_button, Qt.MouseButton.LeftButton)
    assert family.pose() is None and not family.pose_slider.isEnabled()
    assert np.array_equal(settle(qtbot, window), framed)
