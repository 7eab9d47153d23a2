"""Hand-worked checks of the camera convention in ``datasets/cameras.py``."""

from __future__ import annotations

import math

import pytest
import torch
from tensorfield.datasets.cameras import Cameras, look_at, opengl_to_opencv, orbit_poses


def assert_close(actual, expected, atol: float = 1e-6, rtol: float = 1e-6) -> None:
    """Cheap stand-in for ``torch.testing.assert_close`` (whose first call costs seconds here)."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    difference = (actual.double() - expected.double()).abs()
    bound = atol + rtol * expected.double().abs()
    assert bool((difference <= bound).all()), f"max abs difference {float(difference.max()):.3g}"


def identity_cameras(
    width: int, height: int, fx: float, fy: float, cx: float | None = None, cy: float | None = None
) -> Cameras:
    c2w = torch.eye(4)[:3].unsqueeze(0)
    value = lambda v: torch.tensor([float(v)])
    return Cameras(
        c2w=c2w,
        fx=value(fx),
        fy=value(fy),
        cx=value(width / 2 if cx is None else cx),
        cy=value(height / 2 if cy is None else cy),
        width=width,
        height=height,
        times=torch.tensor([math.nan]),
    )


def test_principal_ray_through_centre_pixel_of_odd_image():
    cameras = identity_cameras(5, 3, fx=10.0, fy=10.0)  # cx = 2.5, cy = 1.5: centre of pixel (2, 1)
    origins, directions = cameras.generate_rays(0)
    assert directions.shape == (3, 5, 3) and origins.shape == (3, 5, 3)
    assert_close(directions[1, 2], torch.tensor([0.0, 0.0, 1.0]))
    assert_close(origins[1, 2], torch.zeros(3))


def test_even_image_has_no_pixel_on_the_axis_and_is_symmetric():
    cameras = identity_cameras(4, 4, fx=8.0, fy=8.0)  # cx = cy = 2: pixel centres at 1.5 and 2.5
    _, directions = cameras.generate_rays(0)
    expected = torch.tensor([-0.5 / 8.0, -0.5 / 8.0, 1.0])
    assert_close(directions[1, 1], expected / expected.norm())
    flipped = directions[2, 2] * torch.tensor([-1.0, -1.0, 1.0])
    assert_close(flipped, directions[1, 1])
    assert not torch.any((directions[..., 0] == 0) & (directions[..., 1] == 0))


def test_corner_pixel_direction_and_unit_norm():
    cameras = identity_cameras(6, 4, fx=5.0, fy=4.0, cx=3.0, cy=2.0)
    _, directions = cameras.generate_rays(0)
    x, y = (0.5 - 3.0) / 5.0, (0.5 - 2.0) / 4.0  # pixel (0, 0) centre, up-left of the axis
    expected = torch.tensor([x, y, 1.0])
    assert_close(directions[0, 0], expected / expected.norm())
    x, y = (5.5 - 3.0) / 5.0, (3.5 - 2.0) / 4.0  # last pixel: right and down (OpenCV: +y is down)
    expected = torch.tensor([x, y, 1.0])
    assert_close(directions[-1, -1], expected / expected.norm())
    assert_close(directions.norm(dim=-1), torch.ones(4, 6))


def test_pixels_argument_matches_full_grid():
    cameras = Cameras.from_fov(orbit_poses(2, 3.0), 7, 5, fov_x=0.8)
    _, full = cameras.generate_rays(1)
    pixels = torch.tensor([[0, 0], [6, 4], [3, 2]])
    _, some = cameras.generate_rays(1, pixels)
    assert_close(some, full[pixels[:, 1], pixels[:, 0]])


def test_blender_pose_to_opencv():
    # A Blender camera at (0, -4, 0) looking at the origin (+y) with world z up:
    # its local -z axis is world +y, its local +y is world +z.
    c2w_gl = torch.tensor(
        [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, -4.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    )
    c2w = opengl_to_opencv(c2w_gl)
    assert_close(c2w[:3, 0], torch.tensor([1.0, 0.0, 0.0]))  # right stays right
    assert_close(c2w[:3, 1], torch.tensor([0.0, 0.0, -1.0]))  # image down = world -z
    assert_close(c2w[:3, 2], torch.tensor([0.0, 1.0, 0.0]))  # looks at the origin
    assert_close(c2w[:, 3], c2w_gl[:, 3])  # the centre does not move
    cameras = Cameras.from_fov(c2w, 9, 9, fov_x=1.0)
    _, directions = cameras.generate_rays(0)
    assert_close(directions[4, 4], torch.tensor([0.0, 1.0, 0.0]))
    assert directions[0, 4, 2] > 0  # the top image row sees upwards (world +z)


def test_from_fov_focal():
    cameras = Cameras.from_fov(orbit_poses(1, 4.0), 100, 80, fov_x=0.6911112070083618)
    focal = 0.5 * 100 / math.tan(0.5 * 0.6911112070083618)
    assert_close(cameras.fx, torch.tensor([focal]))
    assert_close(cameras.fy, torch.tensor([focal]))
    assert (cameras.cx.item(), cameras.cy.item()) == (50.0, 40.0)
    assert torch.isnan(cameras.times).all() and not cameras.is_dynamic


def test_scaled_halves_intrinsics_and_keeps_pixel_edges():
    cameras = Cameras.from_fov(orbit_poses(1, 4.0), 8, 6, fov_x=0.9)
    half = cameras.scaled(0.5)
    assert (half.width, half.height) == (4, 3)
    assert_close(half.fx, cameras.fx / 2)
    assert_close(half.cx, cameras.cx / 2)
    # centre of small pixel (0, 0) is at (0.5, 0.5); in the big image that is the corner (1, 1)
    # shared by pixels 0 and 1, i.e. the mean of the big pixels' normalised coordinates.
    _, small = half.generate_rays(0)
    _, big = cameras.generate_rays(0)
    x_cam = big[:2, :2] @ cameras.c2w[0, :, :3]  # back to camera frame
    x_cam = x_cam / x_cam[..., 2:]
    mean = x_cam.mean(dim=(0, 1))
    expected = cameras.c2w[0, :, :3] @ (mean / mean.norm())
    assert_close(small[0, 0], expected, atol=1e-6, rtol=1e-6)


def test_world_to_camera_inverts_c2w():
    cameras = Cameras.from_fov(orbit_poses(5, 3.0, elevation_deg=20.0), 4, 4, fov_x=0.7)
    w2c = cameras.world_to_camera()
    c2w = torch.cat([cameras.c2w, torch.tensor([[[0.0, 0.0, 0.0, 1.0]]]).expand(5, 1, 4)], dim=1)
    assert_close(w2c @ c2w, torch.eye(4).expand(5, 4, 4), atol=1e-5, rtol=0)


@pytest.mark.parametrize("eye", [(3.0, 1.0, 2.0), (-1.0, -4.0, 0.5), (0.2, 0.1, -3.0)])
def test_look_at_looks_at_target(eye):
    eye, target, up = (
        torch.tensor(eye),
        torch.tensor([0.1, -0.2, 0.3]),
        torch.tensor([0.0, 0.0, 1.0]),
    )
    c2w = look_at(eye, target, up)
    assert_close(c2w[:, 3], eye)
    rotation = c2w[:, :3]
    assert_close(rotation.T @ rotation, torch.eye(3), atol=1e-6, rtol=0)
    assert torch.det(rotation) > 0.999  # right-handed
    in_camera = rotation.T @ (target - eye)
    assert_close(in_camera[:2], torch.zeros(2), atol=1e-6, rtol=0)
    assert in_camera[2] > 0  # in front
    assert (rotation.T @ up)[1] < 0  # world up points up in the image (-y in OpenCV)
    cameras = Cameras.from_fov(c2w, 5, 5, fov_x=0.5)
    _, directions = cameras.generate_rays(0)
    assert_close(directions[2, 2], (target - eye) / (target - eye).norm(), atol=1e-6, rtol=0)
