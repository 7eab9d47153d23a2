"""COLMAP sparse models as data sets (datasets/colmap_model.py) and their normalisation."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from tensorfield.datasets.colmap_model import (
    ColmapCamera,
    camera_intrinsics,
    image_c2w,
    image_from_c2w,
    parse_colmap,
    qvec_to_rotmat,
    read_cameras,
    read_images,
    rotmat_to_qvec,
    write_model,
    write_scene_as_colmap,
)
from tensorfield.datasets.errors import DatasetError
from tensorfield.datasets.scene import load_scene


def similarity(scale: float, angle: float, axis, translation) -> np.ndarray:
    """``[4, 4]`` ``x' = s R x + t`` with ``R`` a turn of ``angle`` about ``axis``."""
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = scale * rotation, translation
    return out


# the COLMAP world of the test scene: off-centre, turned (so +z is not up) and scaled
WORLD = similarity(3.5, 2.0, (1.0, -2.0, 0.5), (10.0, -4.0, 7.0))


def as_colmap(blender_root, out, *, binary=True, world=WORLD, folder="sparse/0", points=None, camera=None):
    """The Blender scene ``blender_root`` (every split) as a COLMAP model whose world is
    ``world @ blender world`` (``points`` given in the Blender world); ``camera`` replaces the
    written one. Returns ``out``."""
    scene = load_scene(blender_root)
    scene.points = None if points is None else torch.from_numpy(np.asarray(points, dtype=np.float32))
    scene.points_rgb = None if points is None else torch.full((len(points), 3), 0.25)
    write_scene_as_colmap(scene, out, world, binary=binary, folder=folder)
    if camera is not None:
        name = f"cameras.{'bin' if binary else 'txt'}"
        spare = write_model(out.parent / f"{out.name}_camera", [camera], [], binary=binary)
        (spare / name).replace(out / folder / name)
    return out


def test_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for q in rng.normal(size=(20, 4)):
        q = q / np.linalg.norm(q) * np.sign(q[0])
        assert np.allclose(rotmat_to_qvec(qvec_to_rotmat(q)), q, atol=1e-12)
    # hand-worked: a quarter turn about z maps x to y
    rotation = qvec_to_rotmat((math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)))
    assert np.allclose(rotation @ [1, 0, 0], [0, 1, 0])


def test_pose_is_inverse_of_world_to_camera():
    image = image_from_c2w(1, np.concatenate([qvec_to_rotmat((0.9, 0.1, -0.3, 0.2)), [[1.0], [2.0], [3.0]]], 1), 1, "a.png")
    c2w = image_c2w(image)
    # x_cam = R x_world + t: the camera centre maps to 0, the optical axis to +z
    rotation = qvec_to_rotmat(image.qvec)
    assert np.allclose(rotation @ c2w[:, 3] + image.tvec, 0.0, atol=1e-12)
    assert np.allclose(rotation @ c2w[:, 2], [0, 0, 1], atol=1e-12)
    assert np.allclose(c2w[:, 3], [1.0, 2.0, 3.0])


def test_text_and_binary_load_identically(ds_static_scene, tmp_path):
    points = np.random.default_rng(1).uniform(-1, 1, size=(40, 3))
    scenes = [
        load_scene(as_colmap(ds_static_scene, tmp_path / kind, binary=kind == "bin", points=points))
        for kind in ("bin", "txt")
    ]
    a, b = scenes
    assert a.format == b.format == "colmap" and set(a.splits) == set(b.splits) == {"train", "test"}
    for name in a.splits:
        ca, cb = a.split(name).cameras, b.split(name).cameras
        for key in ("c2w", "fx", "fy", "cx", "cy"):
            assert torch.equal(getattr(ca, key), getattr(cb, key)), key
        assert torch.equal(a.split(name).images, b.split(name).images)
    assert torch.equal(a.points, b.points) and torch.equal(a.aabb, b.aabb) and (a.near, a.far) == (b.near, b.far)
    assert np.array_equal(a.transform.matrix, b.transform.matrix)


def test_pycolmap_reads_our_model_and_we_read_pycolmaps(ds_static_scene, tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    root = as_colmap(ds_static_scene, tmp_path / "s", points=np.zeros((3, 3)))
    ours = {im.name: im for im in read_images(root / "sparse/0/images.bin")}
    reconstruction = pycolmap.Reconstruction(str(root / "sparse/0"))
    assert {im.name for im in reconstruction.images.values()} == set(ours)
    for image in reconstruction.images.values():
        pose = image.cam_from_world()
        assert np.allclose(pose.rotation.matrix(), qvec_to_rotmat(ours[image.name].qvec), atol=1e-12)
        assert np.allclose(pose.translation, ours[image.name].tvec)
    # pycolmap writes the model back (binary and text): we read the same cameras and poses
    for kind, write in (("bin", reconstruction.write_binary), ("txt", reconstruction.write_text)):
        folder = tmp_path / kind
        folder.mkdir()
        write(str(folder))
        again = {im.name: im for im in read_images(folder / f"images.{kind}")}
        for name, image in ours.items():
            assert np.allclose(qvec_to_rotmat(again[name].qvec), qvec_to_rotmat(image.qvec), atol=1e-12)
            assert np.allclose(again[name].tvec, image.tvec, atol=1e-12)
        assert read_cameras(folder / f"cameras.{kind}") == read_cameras(root / "sparse/0/cameras.bin")


def test_known_frame_loads_normalised_and_unnormalised(ds_static_scene, tmp_path):
    root = as_colmap(ds_static_scene, tmp_path / "s", folder="colmap/sparse/0")
    blender = load_scene(ds_static_scene)
    raw = load_scene(root, normalize="none")
    # normalize=none: COLMAP's world as written, i.e. WORLD applied to the Blender poses
    blender_c2w = torch.cat([blender.split(n).cameras.c2w for n in ("train", "val", "test")]).double().numpy()
    order = sorted(range(len(blender_c2w)), key=lambda i: [f"{n}_{p.name}" for n in ("train", "val", "test")
                                                         for p in blender.split(n).image_paths][i])  # fmt: skip
    expected = blender_c2w[order]
    loaded = np.concatenate([raw.split(n).cameras.c2w.double().numpy() for n in ("train", "test")])
    names = [p.name for n in ("train", "test") for p in raw.split(n).image_paths]
    loaded = loaded[np.argsort(names)]
    assert np.allclose(loaded[:, :, 3], expected[:, :, 3] @ WORLD[:3, :3].T + WORLD[:3, 3], atol=1e-4)

    scene = load_scene(root)  # auto: normalised
    centres = torch.cat([s.cameras.c2w[:, :, 3] for s in scene.splits.values()])
    assert centres.abs().max() <= 1.0 + 1e-5 and centres.abs().max() > 0.99
    up = -torch.cat([s.cameras.c2w[:, :, 1] for s in scene.splits.values()]).mean(0)
    assert torch.allclose(up / up.norm(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-5)
    # a similarity: distances between cameras are the Blender ones times 3.5 (WORLD) times s
    normalised = np.concatenate([scene.split(n).cameras.c2w[:, :, 3].double().numpy() for n in ("train", "test")])
    normalised = normalised[np.argsort(names)]
    distances = lambda c: np.linalg.norm(c[:, None] - c[None], axis=-1)
    assert np.allclose(distances(normalised), distances(expected[:, :, 3]) * 3.5 * scene.transform.scale, atol=1e-5)
    assert np.allclose(normalised.mean(0), 0.0, atol=1e-5)  # centre "poses": the mean camera
    assert torch.equal(scene.aabb, torch.tensor([[-1.0] * 3, [1.0] * 3]))
    assert 0 < scene.near < scene.far
    info = scene.scene_info()
    assert torch.equal(info.scene_transform, torch.from_numpy(scene.transform.matrix))
    # the same transform whatever splits are loaded
    assert np.array_equal(load_scene(root, splits=("test",)).transform.matrix, scene.transform.matrix)


def test_points_follow_and_tighten_the_box(ds_static_scene, tmp_path):
    points = np.random.default_rng(2).uniform(-0.5, 0.5, size=(200, 3))
    root = as_colmap(ds_static_scene, tmp_path / "s", points=points)
    scene = load_scene(root)
    back = (scene.points.double().numpy() - scene.transform.matrix[:3, 3]) @ np.linalg.inv(scene.transform.matrix[:3, :3]).T
    world_points = points @ WORLD[:3, :3].T + WORLD[:3, 3]
    assert np.allclose(back, world_points, atol=1e-4)
    inside = ((scene.points >= scene.aabb[0]) & (scene.points <= scene.aabb[1])).all(1).float().mean()
    assert inside > 0.97 and bool((scene.aabb[1] - scene.aabb[0] < 2.0).all())


def test_split_every_eighth_sorted_name(ds_static_scene, tmp_path):
    scene = load_scene(as_colmap(ds_static_scene, tmp_path / "s"), normalize="none")
    names = sorted(p.name for s in scene.splits.values() for p in s.image_paths)
    assert [p.name for p in scene.split("test").image_paths] == names[::8]
    assert len(scene.split("train")) == len(names) - len(names[::8])


@pytest.mark.parametrize(
    "model, params, expected, distortion",
    [
        ("SIMPLE_PINHOLE", (50.0, 16.0, 15.0), (50.0, 50.0, 16.0, 15.0), None),
        ("PINHOLE", (50.0, 52.0, 16.0, 15.0), (50.0, 52.0, 16.0, 15.0), None),
        ("SIMPLE_RADIAL", (50.0, 16.0, 15.0, 0.1), (50.0, 50.0, 16.0, 15.0), (0.1, 0, 0, 0, 0, 0)),
        ("RADIAL", (50.0, 16.0, 15.0, 0.1, -0.02), (50.0, 50.0, 16.0, 15.0), (0.1, -0.02, 0, 0, 0, 0)),
        ("OPENCV", (50.0, 52.0, 16.0, 15.0, 0.1, -0.02, 0.003, -0.004), (50.0, 52.0, 16.0, 15.0),
         (0.1, -0.02, 0, 0, 0.003, -0.004)),
    ],
)  # fmt: skip
def test_camera_models(model, params, expected, distortion, tmp_path):
    for binary in (True, False):
        folder = write_model(tmp_path / str(binary), [ColmapCamera(7, model, 32, 30, params)], [], binary=binary)
        camera = read_cameras(folder / f"cameras.{'bin' if binary else 'txt'}")[7]
        out = camera_intrinsics(camera, folder / "cameras.bin")
        assert (out["fx"], out["fy"], out["cx"], out["cy"]) == expected
        assert (out["width"], out["height"]) == (32, 30)
        if distortion is None:
            assert out["distortion"] is None
        else:
            assert np.allclose(out["distortion"], distortion)


@pytest.mark.parametrize("model, count", [("OPENCV_FISHEYE", 8), ("FULL_OPENCV", 12), ("FOV", 5)])
def test_unsupported_models_refused_by_name(model, count, ds_static_scene, tmp_path):
    root = as_colmap(ds_static_scene, tmp_path / "s", camera=ColmapCamera(1, model, 32, 32, (30.0, 30.0, 16.0, 16.0) + (0.0,) * (count - 4)))
    with pytest.raises(DatasetError, match=f"^sparse/0/cameras.bin: camera 1: camera model {model} is not supported"):
        load_scene(root)


def _one_line(error: DatasetError) -> str:
    text = str(error)
    assert "\n" not in text
    return text


def test_errors_name_the_file_and_record(ds_static_scene, tmp_path):
    root = as_colmap(ds_static_scene, tmp_path / "s")
    cameras, images = root / "sparse/0/cameras.bin", root / "sparse/0/images.bin"
    cameras_bytes, images_bytes = cameras.read_bytes(), images.read_bytes()

    cameras.write_bytes(cameras_bytes[:-5])
    with pytest.raises(DatasetError, match=r"^sparse/0/cameras.bin: truncated in the parameters of camera 1") as info:
        load_scene(root)
    _one_line(info.value)
    cameras.write_bytes(cameras_bytes[:8] + struct.pack("<i", 1) + struct.pack("<i", 42) + cameras_bytes[16:])
    with pytest.raises(DatasetError, match=r"^sparse/0/cameras.bin: camera 1: unknown camera model id 42"):
        load_scene(root)
    cameras.write_bytes(cameras_bytes)

    images.write_bytes(images_bytes[: len(images_bytes) // 2])
    with pytest.raises(DatasetError, match=r"^sparse/0/images.bin: truncated"):
        load_scene(root)
    nan_pose = bytearray(images_bytes)
    nan_pose[12:20] = struct.pack("<d", float("nan"))  # first image's qw
    images.write_bytes(bytes(nan_pose))
    with pytest.raises(DatasetError, match=r"^sparse/0/images.bin: image 1 \(.*\): pose holds NaN/inf"):
        load_scene(root)
    images.write_bytes(images_bytes)

    first = sorted((root / "images").iterdir())[0]
    first.unlink()
    with pytest.raises(DatasetError, match=rf"^images/{first.name}: missing image \(images.bin image \d+\)"):
        load_scene(root)


def test_text_errors(tmp_path):
    folder = tmp_path / "sparse/0"
    folder.mkdir(parents=True)
    (folder / "cameras.txt").write_text("# comment\n1 PINHOLE 32 32 30 30 16\n")
    with pytest.raises(DatasetError, match=r"cameras.txt: camera 1: PINHOLE has 4 parameters, got 3"):
        read_cameras(folder / "cameras.txt", tmp_path)
    (folder / "cameras.txt").write_text("1 FISHEYE_UNKNOWN 32 32 30\n")
    with pytest.raises(DatasetError, match=r"camera 1: unknown camera model FISHEYE_UNKNOWN"):
        read_cameras(folder / "cameras.txt", tmp_path)
    (folder / "images.txt").write_text("1 nan 0 0 0 0 0 0 1 a.png\n\n")
    with pytest.raises(DatasetError, match=r"^sparse/0/images.txt: image 1 \(a.png\): pose holds NaN/inf"):
        read_images(folder / "images.txt", tmp_path)
    (folder / "images.txt").write_text("1 1 0 0 0 0 0 0 1 my image.png\n1.0 2.0 -1\n2 1 0 0 0 0 0 1 1 b.png\n")
    assert [im.name for im in read_images(folder / "images.txt")] == ["my image.png", "b.png"]
    (folder / "cameras.txt").write_text("1 PINHOLE 32 32 30 30 16 16\n")
    with pytest.raises(DatasetError, match=r"^images: missing image folder"):
        parse_colmap(tmp_path, ("train",))
    (tmp_path / "images").mkdir()
    (folder / "images.txt").write_text("1 1 0 0 0 0 0 0 2 a.png\n\n")
    with pytest.raises(DatasetError, match=r"images.txt: image 1 \(a.png\) uses camera 2, which cameras.txt does not list"):
        parse_colmap(tmp_path, ("train",))
