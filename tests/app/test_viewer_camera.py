"""Viewer camera math (no Qt): hand-worked poses, orbit / pan / zoom / fly invariants, exact
snapping to dataset cameras, camera-path JSON round trips and keyframe interpolation."""

import math

import numpy as np
import pytest
import torch
from tensorfield.app.viewer.camera import (
    Keyframe,
    ViewCamera,
    focal_from_fov,
    interpolate_keyframes,
    quaternion_to_rotation,
    rotation_to_quaternion,
)
from tensorfield.datasets.cameras import Cameras, look_at, orbit_poses
from tensorfield.engine.render import CameraPath, load_camera_path, save_camera_path


def front_camera() -> ViewCamera:
    return ViewCamera.looking_at(eye=(0.0, -4.0, 0.0), target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0), fov_y=60.0)


def test_looking_at_by_hand():
    cam = front_camera()
    np.testing.assert_allclose(cam.forward, [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(cam.right, [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(cam.down, [0, 0, -1], atol=1e-12)  # image y points down = world -z
    np.testing.assert_allclose(cam.pivot, [0, 0, 0], atol=1e-12)
    assert cam.pivot_distance == pytest.approx(4.0)
    # the same pose as the package's look_at
    expected = look_at(torch.tensor([0.0, -4.0, 0.0]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(cam.c2w(), expected)


def test_intrinsics_follow_vertical_fov():
    cams = front_camera().cameras(40, 20, time=0.25)
    assert (cams.width, cams.height) == (40, 20)
    assert float(cams.fy[0]) == pytest.approx(10.0 / math.tan(math.radians(30.0)))
    assert float(cams.fx[0]) == float(cams.fy[0])
    assert (float(cams.cx[0]), float(cams.cy[0])) == (20.0, 10.0)
    assert float(cams.times[0]) == 0.25
    assert math.isnan(float(front_camera().cameras(4, 4).times[0]))


def test_orbit_turns_around_the_pivot_and_keeps_the_horizon_level():
    cam = front_camera()
    turned = cam.orbit(math.pi / 2, 0.0)
    # yaw right by 90 degrees: the camera moves to the left side of the object (turntable drag)
    np.testing.assert_allclose(turned.position, [-4, 0, 0], atol=1e-9)
    np.testing.assert_allclose(turned.pivot, cam.pivot, atol=1e-9)
    back = turned.orbit(-math.pi / 2, 0.0)
    np.testing.assert_allclose(back.rotation, cam.rotation, atol=1e-9)
    tilted = cam.orbit(0.3, 0.4)
    assert np.linalg.norm(tilted.position - tilted.pivot) == pytest.approx(4.0)
    assert abs(float(np.dot(tilted.right, cam.up))) < 1e-9  # no roll
    np.testing.assert_allclose(tilted.rotation.T @ tilted.rotation, np.eye(3), atol=1e-12)
    # positive pitch raises the camera (it then looks down)
    assert tilted.position[2] > 0 and tilted.forward[2] < 0


def test_orbit_pitch_stops_short_of_the_poles():
    cam = front_camera()
    for _ in range(50):
        cam = cam.orbit(0.0, 0.2)
    elevation = math.degrees(math.asin(-cam.forward[2]))
    assert 88.0 < elevation < 89.5
    assert np.isfinite(cam.rotation).all()


def test_pan_zoom_fly():
    cam = front_camera()
    panned = cam.pan(0.5, 0.0)  # drag right by half the view height
    shift = panned.position - cam.position
    extent = 2 * 4.0 * math.tan(math.radians(30.0))
    np.testing.assert_allclose(shift, [-0.5 * extent, 0, 0], atol=1e-12)
    np.testing.assert_allclose(panned.pivot - cam.pivot, shift, atol=1e-12)
    zoomed = cam.zoom(1.0)
    np.testing.assert_allclose(zoomed.pivot, cam.pivot, atol=1e-12)
    assert zoomed.pivot_distance == pytest.approx(3.6)
    assert cam.zoom(1000.0).pivot_distance > 0
    flown = cam.fly(forward=1.0, right=0.5, up=0.25)
    np.testing.assert_allclose(flown.position, [0.5, -3.0, 0.25], atol=1e-12)
    assert cam.with_fov(500.0).fov_y == 150.0


def test_snap_reproduces_a_dataset_camera_exactly():
    poses = orbit_poses(5, 4.0, elevation_deg=25.0)
    cams = Cameras.from_fov(poses, 48, 32, math.radians(50.0))
    view = ViewCamera.from_cameras(cams, 3, pivot=np.zeros(3))
    mine = view.cameras(48, 32)
    assert torch.equal(mine.c2w[0], cams.c2w[3])
    torch.testing.assert_close(mine.fy, cams.fy[3:4], rtol=1e-6, atol=0)
    assert float(mine.cx[0]) == float(cams.cx[3]) and float(mine.cy[0]) == float(cams.cy[3])
    assert np.linalg.norm(view.pivot) < 1e-5  # the orbit pivot is the origin the camera looks at


def test_camera_path_json_round_trip_is_bit_exact(tmp_path):
    cam = front_camera().orbit(0.7, -0.2).pan(0.1, 0.05).with_fov(47.3)
    cams = cam.cameras(64, 48, time=0.375)
    save_camera_path(tmp_path / "one.json", CameraPath(cams))
    loaded = load_camera_path(tmp_path / "one.json").cameras
    for name in ("c2w", "fx", "fy", "cx", "cy", "times"):
        assert torch.equal(getattr(loaded, name), getattr(cams, name)), name
    assert (loaded.width, loaded.height) == (64, 48)


def test_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        rotation = quaternion_to_rotation(q)
        back = rotation_to_quaternion(rotation)
        assert min(np.abs(back - q).max(), np.abs(back + q).max()) < 1e-9


def test_keyframe_interpolation():
    a = Keyframe.of(front_camera(), 0.0)
    b = Keyframe.of(front_camera().orbit(math.pi / 2, 0.0).with_fov(40.0), 1.0)
    path = interpolate_keyframes([a, b], 5, 32, 24).cameras
    assert len(path) == 5 and (path.width, path.height) == (32, 24)
    torch.testing.assert_close(path.times, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    np.testing.assert_allclose(path.c2w[0, :, 3].numpy(), a.position, atol=1e-6)
    np.testing.assert_allclose(path.c2w[-1, :, 3].numpy(), b.position, atol=1e-6)
    middle = path.c2w[2, :, :3].double().numpy()
    np.testing.assert_allclose(middle.T @ middle, np.eye(3), atol=1e-6)
    # halfway round the quarter turn: looking along (1, 1, 0) / sqrt(2)
    np.testing.assert_allclose(middle[:, 2], [math.sqrt(0.5), math.sqrt(0.5), 0.0], atol=1e-6)
    assert float(path.fy[-1]) == pytest.approx(focal_from_fov(40.0, 24))
    static = interpolate_keyframes([Keyframe.of(front_camera())], 3, 8, 8).cameras
    assert torch.isnan(static.times).all()
    assert Keyframe.from_json(b.to_json()).time == 1.0
