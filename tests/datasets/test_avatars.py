"""Tests of datasets/avatars.py (layout writer and loader) and datasets/synthetic_avatars.py
(generated humanoids): round trips, one-line errors naming the file, ground-truth skinning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from tensorfield.datasets.avatars import AVATARS_FILE, load_avatars, write_avatars
from tensorfield.datasets.errors import DatasetError
from tensorfield.datasets.synthetic_avatars import (
    HUMANOID_JOINTS,
    SyntheticAvatar,
    avatar_camera,
    generate_avatars,
    joint_limits,
    make_avatars,
    rest_surface_residual,
)
from tensorfield.fields.skeleton import axis_angle_to_matrix, linear_blend_skinning

RESOLUTION = 32
QUANTUM = 0.5 / 255 + 1e-6  # 8-bit rounding


@pytest.fixture(scope="module")
def generated():
    """Two subjects (the second held out), 3 training + 2 novel-pose frames each, 32x32."""
    return generate_avatars(
        n_identities=2, n_train=3, n_novel_pose=2, n_held_out=1, resolution=RESOLUTION, seed=3
    )


@pytest.fixture(scope="module")
def written(generated, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("avatars")
    return write_avatars(
        root, generated.sequences, generated.splits, background=generated.background
    )


@pytest.fixture
def copy_of(written, tmp_path) -> Path:
    return Path(shutil.copytree(written, tmp_path / "data"))


# ====================================================================== generator
def test_generated_splits_identities_and_motion(generated):
    assert [s.name for s in generated.sequences] == ["subject_0", "subject_1"]
    assert generated.splits == {
        "train": {"subject_0": [0, 1, 2]},
        "novel_pose": {"subject_0": [3, 4]},
        "novel_identity": {"subject_1": [0, 1, 2]},
        "novel_identity_pose": {"subject_1": [3, 4]},
    }
    limits = joint_limits()
    for sequence in generated.sequences:
        assert sequence.skeleton.names == HUMANOID_JOINTS and len(HUMANOID_JOINTS) == 19
        rotations = sequence.rotations.numpy()
        assert (rotations >= limits[..., 0] - 1e-12).all() and (
            rotations <= limits[..., 1] + 1e-12
        ).all()
        # held-out poses are not training poses
        for novel in rotations[3:]:
            assert np.abs(rotations[:3] - novel).max(axis=(1, 2)).min() > 0.05
        assert sequence.images.shape == (5, RESOLUTION, RESOLUTION, 3) and sequence.masks.shape == (
            5,
            RESOLUTION,
            RESOLUTION,
        )
        assert 0.03 < float(sequence.masks.mean()) < 0.5  # the subject is in view, not filling it
        # one fixed camera for the whole sequence; the subject turns instead
        assert torch.equal(sequence.cameras.c2w, sequence.cameras.c2w[:1].expand(5, 3, 4))
    a, b = generated.avatars
    assert a.shape.height != b.shape.height and a.appearance.shirt != b.appearance.shirt
    again = generate_avatars(
        n_identities=2, n_train=3, n_novel_pose=2, n_held_out=1, resolution=RESOLUTION, seed=3
    )
    assert torch.equal(again.sequences[1].images, generated.sequences[1].images)


def test_rest_pose_body_stands_on_the_ground_facing_the_camera():
    avatar = SyntheticAvatar.random("s", np.random.default_rng(0))
    rest = np.tile(np.eye(4), (19, 1, 1))
    c2w, intrinsics = avatar_camera(48)
    rgba, _, part = avatar.render(c2w, intrinsics, 48, 48, rest)
    assert rgba.shape == (48, 48, 4) and ((rgba[..., 3] == 0) == (part == -1)).mean() > 0.95
    # the lowest point of the rest body is close to z = 0 (feet), the highest near the height
    points, owner = avatar.sample_surface(4000, np.random.default_rng(1))
    assert abs(points[:, 2].min()) < 0.02 * avatar.shape.height
    assert abs(points[:, 2].max() - avatar.shape.height) < 0.03 * avatar.shape.height
    np.testing.assert_allclose(rest_surface_residual(avatar, points, owner), 0.0, atol=1e-12)
    # the camera sees the front: the face's skin, not the hair, at the head's pixel nearest the middle
    head = [p.name for p in avatar.parts].index("head")
    rows, cols = np.nonzero(part == head)
    assert rows.size > 0
    centre = np.argmin(np.abs(cols - cols.mean()) + np.abs(rows - rows.mean()))
    colour = rgba[rows[centre], cols[centre], :3]
    skin, hair = np.asarray(avatar.appearance.skin), np.asarray(avatar.appearance.hair)
    assert (
        np.abs(colour / colour.max() - skin / skin.max()).sum()
        < np.abs(colour / colour.max() - hair / hair.max()).sum()
    )


# ====================================================================== round trips
def test_write_load_round_trip(generated, written):
    data = load_avatars(written)
    assert data.identities == ["subject_0", "subject_1"]
    assert data.splits == generated.splits and data.background == (0.0, 0.0, 0.0)
    assert data.split_frames("novel_pose") == [("subject_0", 3), ("subject_0", 4)]
    for original in generated.sequences:
        loaded = data.sequences[original.name]
        assert len(loaded) == 5
        torch.testing.assert_close(loaded.images, original.images, rtol=0, atol=QUANTUM)
        # masks are the generator's exact alpha coverage, up to 8-bit rounding
        torch.testing.assert_close(loaded.masks, original.masks, rtol=0, atol=QUANTUM)
        assert torch.equal(loaded.root, original.root) and torch.equal(
            loaded.rotations, original.rotations
        )
        assert (
            loaded.skeleton.parents == original.skeleton.parents
            and loaded.skeleton.names == original.skeleton.names
        )
        assert torch.equal(loaded.skeleton.rest_joints, original.skeleton.rest_joints)
        cams, ref = loaded.cameras, original.cameras
        torch.testing.assert_close(cams.c2w, ref.c2w, rtol=0, atol=1e-6)
        for key in ("fx", "fy", "cx", "cy", "times"):
            torch.testing.assert_close(getattr(cams, key), getattr(ref, key))
        assert (cams.width, cams.height) == (RESOLUTION, RESOLUTION)
    # layout on disk
    files = sorted(
        p.relative_to(written).as_posix() for p in (written / "subject_0").rglob("*") if p.is_file()
    )
    assert files[:4] == ["subject_0/cameras.json", "subject_0/images/000000.png", "subject_0/images/000001.png",
                         "subject_0/images/000002.png"]  # fmt: skip
    assert (
        "subject_0/masks/000004.png" in files
        and "subject_0/poses.npz" in files
        and "subject_0/skeleton.json" in files
    )
    only = load_avatars(written / AVATARS_FILE, identities=["subject_1"])
    assert only.identities == ["subject_1"] and only.splits["train"] == {}


def test_make_avatars_records_the_generator_and_bodies(tmp_path):
    root = make_avatars(
        tmp_path / "made",
        n_identities=2,
        n_train=2,
        n_novel_pose=0,
        n_held_out=0,
        resolution=16,
        seed=1,
    )
    meta = json.loads((root / AVATARS_FILE).read_text())
    assert meta["format"] == "tensorfield-avatars" and meta["generator"]["seed"] == 1
    assert len(meta["bodies"]["subject_1"]["parts"]) == 17
    assert set(meta["splits"]) == {"train"}
    assert load_avatars(root).sequences["subject_0"].images.shape == (2, 16, 16, 3)


def test_video_round_trip(generated, tmp_path):
    root = write_avatars(
        tmp_path / "video", generated.sequences[:1], {"train": {"subject_0": [0, 1]}}, video=True
    )
    assert (root / "subject_0" / "video.mp4").is_file() and not (
        root / "subject_0" / "images"
    ).exists()
    loaded = load_avatars(root).sequences["subject_0"]
    assert loaded.images.shape == (5, RESOLUTION, RESOLUTION, 3)
    assert (
        float((loaded.images - generated.sequences[0].images).abs().max()) < 4 / 255
    )  # YUV 4:4:4 rounding
    torch.testing.assert_close(loaded.masks, generated.sequences[0].masks, rtol=0, atol=QUANTUM)


def test_rgba_images_give_the_mask_and_smpl_root_convention(generated, copy_of):
    folder = copy_of / "subject_0"
    shutil.rmtree(folder / "masks")
    sequence = generated.sequences[0]
    for i in range(5):
        rgba = np.concatenate(
            [sequence.images[i].numpy(), sequence.masks[i].numpy()[..., None]], -1
        )
        iio.imwrite(folder / "images" / f"{i:06d}.png", np.round(rgba * 255).astype(np.uint8))
    # SMPL's global orientation + translation instead of a root matrix
    rng = np.random.default_rng(0)
    orient, transl = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    np.savez(
        folder / "poses.npz",
        rotations=sequence.rotations.numpy(),
        root_orient=orient,
        transl=transl,
    )
    loaded = load_avatars(copy_of).sequences["subject_0"]
    torch.testing.assert_close(loaded.masks, sequence.masks, rtol=0, atol=QUANTUM)
    # rotation about the rest root joint x0, then the translation: x0 lands at x0 + transl
    rest_root = sequence.skeleton.rest_joints[0]
    torch.testing.assert_close(
        loaded.root[:, :3, :3], axis_angle_to_matrix(torch.from_numpy(orient)), rtol=0, atol=1e-14
    )
    posed_root = loaded.root[:, :3, :3] @ rest_root + loaded.root[:, :3, 3]
    torch.testing.assert_close(posed_root, rest_root + torch.from_numpy(transl), rtol=0, atol=1e-14)


# ====================================================================== bad input
def _expect(root: Path, message: str) -> str:
    with pytest.raises(DatasetError) as error:
        load_avatars(root)
    text = str(error.value)
    assert "\n" not in text
    assert message in text, text
    return text


def _rewrite_poses(folder: Path, **changes) -> None:
    with np.load(folder / "poses.npz") as data:
        arrays = {key: data[key] for key in data.files}
    arrays.update(changes)
    np.savez(folder / "poses.npz", **{k: v for k, v in arrays.items() if v is not None})


def test_an_image_missing(copy_of):
    (copy_of / "subject_1" / "images" / "000004.png").unlink()
    (copy_of / "subject_1" / "masks" / "000004.png").unlink()
    _expect(copy_of, "subject_1/images: 4 frames but cameras.json and poses.npz have 5")


def test_a_camera_frame_missing(copy_of):
    path = copy_of / "subject_0" / "cameras.json"
    meta = json.loads(path.read_text())
    meta["frames"].pop()
    path.write_text(json.dumps(meta))
    _expect(copy_of, "subject_0/cameras.json: 4 frames but images/ has 5")


def test_pose_frames_missing(copy_of):
    folder = copy_of / "subject_0"
    with np.load(folder / "poses.npz") as data:
        _rewrite_poses(
            folder, rotations=data["rotations"][:4], root=data["root"][:4], times=data["times"][:4]
        )
    _expect(copy_of, "subject_0/poses.npz: 4 frames but images/ has 5")


def test_a_joint_missing_by_count(copy_of):
    folder = copy_of / "subject_0"
    with np.load(folder / "poses.npz") as data:
        _rewrite_poses(folder, rotations=data["rotations"][:, :18], joint_names=None)
    _expect(copy_of, "subject_0/poses.npz: rotations have 18 joints but skeleton.json has 19")


def test_a_joint_missing_by_name(copy_of):
    folder = copy_of / "subject_1"
    keep = [i for i, name in enumerate(HUMANOID_JOINTS) if name != "l_wrist"]
    with np.load(folder / "poses.npz") as data:
        _rewrite_poses(
            folder,
            rotations=data["rotations"][:, keep],
            joint_names=np.asarray(HUMANOID_JOINTS)[keep],
        )
    _expect(
        copy_of, "subject_1/poses.npz: joint 'l_wrist' of skeleton.json is missing from joint_names"
    )


def test_joint_names_reorder_the_rotations(generated, copy_of):
    folder = copy_of / "subject_0"
    order = np.random.default_rng(2).permutation(19)
    with np.load(folder / "poses.npz") as data:
        _rewrite_poses(
            folder,
            rotations=data["rotations"][:, order],
            joint_names=np.asarray(HUMANOID_JOINTS)[order],
        )
    assert torch.equal(
        load_avatars(copy_of).sequences["subject_0"].rotations, generated.sequences[0].rotations
    )


def test_a_nan_rotation_names_the_frame(copy_of):
    folder = copy_of / "subject_0"
    with np.load(folder / "poses.npz") as data:
        rotations = data["rotations"].copy()
    rotations[3, 6, 1] = np.nan
    _rewrite_poses(folder, rotations=rotations)
    _expect(copy_of, "subject_0/poses.npz: rotation of joint 6 ('l_elbow') in frame 3 is NaN/inf")


def test_a_mask_of_another_size(copy_of):
    iio.imwrite(
        copy_of / "subject_1" / "masks" / "000002.png", np.zeros((16, RESOLUTION), dtype=np.uint8)
    )
    _expect(copy_of, "subject_1/masks/000002.png: mask is 32x16 but the images are 32x32")


@pytest.mark.parametrize(
    "target,corrupt,message",
    [
        ("subject_0/skeleton.json", lambda m: m["parents"].__setitem__(3, 7),
         "subject_0/skeleton.json: parents[3] = 7 is not an earlier joint"),
        ("subject_0/skeleton.json", lambda m: m.pop("rest_joints"), "subject_0/skeleton.json: no 'rest_joints' key"),
        ("subject_0/cameras.json", lambda m: m["frames"][2].__setitem__("fx", -1.0),
         "subject_0/cameras.json: frame 2 fx must be positive"),
        ("subject_0/cameras.json", lambda m: m["frames"][1].__setitem__("c2w", [[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
         "subject_0/cameras.json: frame 1 c2w is not 4x4 (got 3x3)"),
        (AVATARS_FILE, lambda m: m["splits"]["train"].__setitem__("subject_0", [0, 9]),
         "avatars.json: split 'train' frame 9 of 'subject_0' is out of range (5 frames)"),
        (AVATARS_FILE, lambda m: m["identities"].append("nobody"), "nobody: missing identity folder"),
    ],
)  # fmt: skip
def test_bad_json(copy_of, target, corrupt, message):
    path = copy_of / target
    meta = json.loads(path.read_text())
    corrupt(meta)
    path.write_text(json.dumps(meta))
    _expect(copy_of, message)


def test_unreadable_files(copy_of):
    (copy_of / "subject_0" / "poses.npz").write_bytes(b"not a zip")
    _expect(copy_of, "subject_0/poses.npz: unreadable file")
    (copy_of / AVATARS_FILE).write_text("{")
    _expect(copy_of, "avatars.json: invalid JSON")


# ====================================================================== ground-truth skinning
def test_posed_surface_points_are_lbs_of_their_rest_positions(generated, written):
    """Rest surface points, posed by LBS (one-hot on their part's bone) with the bone transforms of
    the loaded poses (fields/skeleton.py), lie on the surface the generator rendered."""
    loaded = load_avatars(written).sequences["subject_0"]
    avatar = generated.avatars[0]
    bones = loaded.bone_transforms()  # [T, J, 4, 4] from poses.npz + skeleton.json
    rng = np.random.default_rng(4)
    rest, part = avatar.sample_surface(3000, rng)
    weights = torch.nn.functional.one_hot(torch.from_numpy(avatar.part_bones[part]), 19).double()
    camera = loaded.cameras.c2w[0, :, 3].double().numpy()
    for frame in (0, 4):
        posed = linear_blend_skinning(torch.from_numpy(rest), weights, bones[frame]).points.numpy()
        offset = posed - camera
        distance = np.linalg.norm(offset, axis=-1)
        hits = avatar.cast_rays(camera[None], offset, bones[frame].numpy())
        # every posed point is on the body: its ray hits the body at or before it
        assert hits.hit.all()
        assert (hits.depth <= distance + 1e-9).all()
        visible = hits.depth >= distance - 1e-7
        assert visible.mean() > 0.2
        # where the point itself is what the camera sees, the renderer found that very point
        same = visible & (avatar.part_bones[hits.part] == avatar.part_bones[part])
        assert same.mean() > 0.9 * visible.mean()
        np.testing.assert_allclose(hits.rest_points[same], rest[same], atol=1e-7)
        # and the rendered hits map back onto their part's rest surface
        np.testing.assert_allclose(
            rest_surface_residual(avatar, hits.rest_points, hits.part), 0.0, atol=1e-9
        )


def test_rendered_pixels_are_lbs_of_rest_surface_points(generated, written):
    """Through every foreground pixel centre: the hit, mapped to the rest pose by the inverse bone
    transform of its part (from the loaded poses), lies on the rest surface; LBS brings it back."""
    loaded = load_avatars(written).sequences["subject_1"]
    avatar = generated.avatars[1]
    frame = 2
    bones = loaded.bone_transforms()[frame]
    part = generated.parts["subject_1"][frame]
    depth = generated.depths["subject_1"][frame]
    origins, directions = loaded.cameras[frame].generate_rays(0)
    rows = part >= 0
    assert rows.sum() > 20
    directions = directions.double().numpy()[rows]
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    world = origins.double().numpy()[rows] + depth[rows][:, None] * directions
    owner = avatar.part_bones[part[rows]]
    inverse = torch.linalg.inv(bones[owner])
    rest = (inverse[:, :3, :3] @ torch.from_numpy(world)[:, :, None])[:, :, 0] + inverse[:, :3, 3]
    np.testing.assert_allclose(
        rest_surface_residual(avatar, rest.numpy(), part[rows]), 0.0, atol=1e-5
    )
    weights = torch.nn.functional.one_hot(torch.from_numpy(owner), 19).double()
    back = linear_blend_skinning(rest, weights, bones).points.numpy()
    np.testing.assert_allclose(back, world, atol=1e-9)
    # the mask agrees with the pixel-centre hits
    assert (loaded.masks[frame].numpy()[rows] > 0).all()
