"""MIGS through the command line: train, eval, render a frame, render a pose sequence (another
subject's motion, a pose file with its joints in another order), export splats in a pose, fit a
new identity (same data folder, and a folder with only the new subject) and use the fitted run
like any run; bad pose files and bad requests give one-line errors naming the file."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from tensorfield.app.cli import main
from tensorfield.datasets.avatars import load_avatars, write_avatars
from tensorfield.datasets.synthetic_avatars import make_avatars
from tensorfield.engine.export import read_splat_ply
from tensorfield.engine.render import RenderError, load_pose_sequence, render_image
from tensorfield.engine.trainer import load_run
from tensorfield.fields.base import BodyPose, RenderRequest

TINY = [
    "steps=30", "num_gaussians=300", "rank=8", "sh_degree=1", "sh_increase_interval=10", "nr_width=16",
    "nr_layers=1", "nr_frequencies=2", "skinning_prior_until=10", "backend=cpu", "checkpoint_every=30",
    "log_every=10", "aiap_neighbours=3",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three subjects (subject_2 held out), 5 training + 2 novel-pose frames each, 32x32; a
    30-step run on the first two."""
    root = tmp_path_factory.mktemp("cli_migs")
    torch.set_num_threads(1)
    data = make_avatars(root / "data", n_identities=3, n_train=5, n_novel_pose=2, n_held_out=1, resolution=32, seed=2)
    run = root / "run"
    assert main(["train", "configs/migs_synthetic.yaml", "--data", str(data), "--out", str(run), "--no-progress", *TINY]) == 0
    return root, data, run


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error printed"
    return err[-1]


def frames_of(folder) -> list[np.ndarray]:
    return [iio.imread(path) for path in sorted(folder.glob("[0-9]*.png")) if "_depth" not in path.name]


# ====================================================================== train, eval, render a frame
def test_train_eval_and_a_frame_through_the_cli(trained, capsys):
    root, data, run = trained
    assert main(["eval", str(run), "--no-renders"]) == 0
    result = json.loads((run / "eval_novel_pose.json").read_text())
    assert result["split"] == "novel_pose" and result["num_images"] == 4 and result["psnr"] > 15
    # the held-out subject has no row yet: one line, pointing at fit-identity
    assert main(["eval", str(run), "--split", "novel_identity", "--no-renders"]) == 2
    assert error_line(capsys) == (
        "tensorfield: error: split 'novel_identity' shows identity 'subject_2' (row 2) but the model has 2 identities: "
        "fit it first (tensorfield fit-identity)"
    )
    # identity 1 in global frame 3 (subject_0's 4th frame), seen by that frame's camera
    assert main(["render", str(run), "--identity", "1", "--frame", "3", "--out", str(root / "frame")]) == 0
    image, = frames_of(root / "frame")
    trainer = load_run(run)
    camera = trainer.data.frame_camera(frame=3)
    expected = render_image(trainer.model, RenderRequest(camera, 0, trainer.data.background_color(), identity=1, frame=3))
    assert np.array_equal(image, expected) and image.shape == (32, 32, 3)
    # with no --path and no frame the data's evaluation split is the path (the avatars have no
    # test split), each view in its own frame's pose: the evaluation's renders
    assert main(["render", str(run), "--out", str(root / "split"), "--no-depth"]) == 0
    views = frames_of(root / "split")
    frames = trainer.data.split_frames("novel_pose").tolist()
    cameras = trainer.data.split_cameras()["novel_pose"]
    assert len(views) == len(frames) == 4
    for i, frame in enumerate(frames):
        assert np.array_equal(views[i], render_image(trainer.model, RenderRequest(cameras, i, trainer.data.background_color(), frame=frame)))
    assert not np.array_equal(views[0], views[3])
    assert main(["render", str(run), "--identity", "5", "--frame", "3", "--out", str(root / "bad")]) == 2
    assert error_line(capsys) == "tensorfield: error: identity 5 out of range (the model has 2)"


# ====================================================================== pose sequences
def test_render_another_subjects_motion(trained):
    root, data, run = trained
    motion = data / "subject_1" / "poses.npz"
    assert main(["render", str(run), "--identity", "0", "--poses", str(motion), "--out", str(root / "dance"), "--no-depth"]) == 0
    frames = frames_of(root / "dance")
    assert len(frames) == 7  # one per pose of the file
    trainer = load_run(run)
    model, background = trainer.model, trainer.data.background_color()
    poses = load_pose_sequence(model, 0, motion)
    camera = trainer.data.frame_camera(identity=0)
    sequence = load_avatars(data).sequences["subject_1"]
    for t in (0, 4, 6):
        torch.testing.assert_close(poses[t].rotations, sequence.rotations[t])
        expected = render_image(model, RenderRequest(camera, 0, background, identity=0, pose=poses[t]))
        assert np.array_equal(frames[t], expected)
    own = render_image(model, RenderRequest(camera, 0, background, identity=0, frame=4))  # subject_0's own frame 4
    assert np.abs(frames[4].astype(int) - own.astype(int)).max() > 30  # the motion is subject_1's
    # the pose of a frame of the data, given as a pose, renders as that frame
    frame = trainer.data.global_frame(1, 4)
    rotations, root_transform = model.frame_pose(frame)
    as_pose = render_image(model, RenderRequest(camera, 0, background, identity=0, pose=BodyPose(rotations, root_transform)))
    assert np.array_equal(as_pose, render_image(model, RenderRequest(camera, 0, background, identity=0, frame=frame)))
    # joints stored in another order are matched by name: the same video
    with np.load(motion) as stored:
        arrays = dict(stored)
    order = np.random.default_rng(0).permutation(len(arrays["joint_names"]))
    shuffled = {**arrays, "rotations": arrays["rotations"][:, order], "joint_names": arrays["joint_names"][order]}
    np.savez(root / "shuffled.npz", **shuffled)
    assert main(["render", str(run), "--identity", "0", "--poses", str(root / "shuffled.npz"), "--out", str(root / "dance2"), "--no-depth"]) == 0
    assert all(np.array_equal(a, b) for a, b in zip(frames, frames_of(root / "dance2")))
    # an orbit with the poses: one camera per pose
    assert main(["render", str(run), "--identity", "1", "--poses", str(motion), "--path", "orbit", "--out", str(root / "orbit.mp4"), "--no-depth"]) == 0
    assert (root / "orbit.mp4").stat().st_size > 0


def _bad_pose_file(root, motion, name, change):
    with np.load(motion) as stored:
        arrays = dict(stored)
    change(arrays)
    path = root / f"{name}.npz"
    np.savez(path, **arrays)
    return path


def _nan(arrays):
    arrays["rotations"][2, 5, 1] = np.nan


def _drop_joint(arrays):
    arrays["rotations"] = arrays["rotations"][:, :-1]
    arrays["joint_names"] = arrays["joint_names"][:-1]


def _short_root(arrays):
    arrays["root"] = arrays["root"][:-1]


def _no_rotations(arrays):
    del arrays["rotations"]


@pytest.mark.parametrize("name, change, problem", [
    ("nan", _nan, "rotation of joint 5 ('spine2') in frame 2 is NaN/inf"),
    ("dropped", _drop_joint, "joint 'right_ankle' of the model's skeleton (identity 0) is missing from joint_names (1 missing)"),
    ("short_root", _short_root, "root must be [7, 4, 4], got (6, 4, 4)"),
    ("no_rotations", _no_rotations, "no 'rotations' array (nor 'smpl_poses')"),
])  # fmt: skip
def test_bad_pose_files_are_one_line_errors_naming_the_file(trained, capsys, name, change, problem):
    root, data, run = trained
    joints = load_avatars(data).sequences["subject_0"].skeleton.names
    path = _bad_pose_file(root, data / "subject_1" / "poses.npz", name, change)
    problem = problem.replace("'spine2'", repr(joints[5])).replace("'right_ankle'", repr(joints[-1]))
    for command in (["render", str(run), "--poses", str(path), "--out", str(root / "x")],
                    ["export", str(run), "splat", "--poses", str(path), "--out", str(root / "x.ply")]):  # fmt: skip
        assert main(command) == 2
        assert error_line(capsys) == f"tensorfield: error: {path}: {problem}"


def test_other_bad_pose_requests(trained, capsys, tmp_path):
    root, data, run = trained
    motion = str(data / "subject_1" / "poses.npz")
    cases = [
        (["render", str(run), "--poses", str(tmp_path / "none.npz"), "--out", str(tmp_path / "x")], f"{tmp_path / 'none.npz'}: missing file"),
        (["render", str(run), "--poses", str(data / "subject_1" / "cameras.json"), "--out", str(tmp_path / "x")],
         f"{data / 'subject_1' / 'cameras.json'}: a pose file is an .npz archive (the poses.npz layout of tensorfield.datasets.avatars)"),
        (["render", str(run), "--poses", motion, "--frame", "2", "--out", str(tmp_path / "x")], "--poses renders every pose of the file; drop --frame (it picks a pose of the data)"),
        (["render", str(run), "--identity", "3", "--poses", motion, "--out", str(tmp_path / "x")], "identity 3 out of range (the model has 2)"),
        (["export", str(run), "splat", "--poses", motion, "--frame", "7", "--out", str(tmp_path / "x.ply")], f"--frame 7: {motion} has 7 poses"),
        (["export", str(run), "splat", "--frame", "99", "--out", str(tmp_path / "x.ply")], "--frame 99: out of range (the model has 21 frames)"),
    ]  # fmt: skip
    for command, message in cases:
        assert main(command) == 2, command
        assert error_line(capsys) == f"tensorfield: error: {message}"
    with pytest.raises(RenderError, match="is not driven by skeleton poses"):
        load_pose_sequence(torch.nn.Linear(1, 1), 0, motion)


def test_export_splat_in_a_pose_of_a_file(trained):
    root, data, run = trained
    motion = data / "subject_0" / "poses.npz"
    assert main(["export", str(run), "splat", "--identity", "1", "--poses", str(motion), "--frame", "3", "--out", str(root / "posed.ply")]) == 0
    splats = read_splat_ply(root / "posed.ply")
    model = load_run(run).model
    pose = load_pose_sequence(model, 1, motion)[3]
    expected = model.pose(1, pose.rotations, pose.root).means.detach()
    np.testing.assert_allclose(splats.means, expected.numpy(), rtol=0, atol=1e-6)
    # frame 3 of subject_0's file is global frame 3 of the data: the same Gaussians
    assert main(["export", str(run), "splat", "--identity", "1", "--frame", "3", "--out", str(root / "frame.ply")]) == 0
    np.testing.assert_allclose(read_splat_ply(root / "frame.ply").means, splats.means, rtol=0, atol=1e-6)


# ====================================================================== fit-identity
def _check_fitted(base_run, fitted_run, new_row):
    base, fitted = load_run(base_run).model, load_run(fitted_run).model
    assert fitted.num_identities() == new_row + 1
    frames = {"frame_rotations", "frame_root", "frame_identity", "identity_rest_joints"}
    mine = fitted.state_dict()
    for name, value in base.state_dict().items():
        if name not in frames:
            assert torch.equal(mine[name], value), name  # everything trained stays as it was
    average = base.tensor.identity_factors.detach().mean(0)
    assert float((fitted.tensor.identity_rows[new_row].detach() - average).abs().max()) > 1e-4  # the new row moved
    torch.testing.assert_close(fitted.identity_rest_joints[:new_row], base.identity_rest_joints[:new_row])
    return fitted


def test_fit_identity_from_the_same_folder_and_use_the_run(trained, capsys):
    root, data, run = trained
    fitted_run = root / "fitted"
    assert main(["fit-identity", str(run), "--data", str(data), "--out", str(fitted_run), "--split", "novel_identity",
                 "steps=12", "lr_identity=0.01", "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "fitting identity 2 of" in out
    fitted = _check_fitted(run, fitted_run, 2)
    assert fitted.known_rows == 2 and [p.requires_grad for p in fitted.parameters()].count(True) == 1
    # the new run evaluates (the new subject's novel poses first), renders and exports like any run
    assert main(["eval", str(fitted_run), "--no-renders"]) == 0
    result = json.loads((fitted_run / "eval_novel_identity_pose.json").read_text())
    assert result["num_images"] == 2 and result["psnr"] > 12
    assert main(["render", str(fitted_run), "--identity", "2", "--poses", str(data / "subject_0" / "poses.npz"), "--out", str(root / "fitted_dance"), "--no-depth"]) == 0
    assert len(frames_of(root / "fitted_dance")) == 7
    assert main(["export", str(fitted_run), "splat", "--identity", "2", "--out", str(root / "fitted.ply")]) == 0
    # resume continues the fit (the rest still frozen)
    assert main(["train", "migs", "--resume", "--out", str(fitted_run), "steps=14", "--no-progress"]) == 0
    _check_fitted(run, fitted_run, 2)
    # errors: the run folder is taken; a split without a new subject names where they are
    assert main(["fit-identity", str(run), "--data", str(data), "--out", str(fitted_run), "steps=2"]) == 2
    assert error_line(capsys).endswith("already holds a run; use another --out (or train --resume --out " + str(fitted_run) + " to continue it)")
    assert main(["fit-identity", str(run), "--data", str(data), "--out", str(root / "nothing"), "steps=2"]) == 2
    assert error_line(capsys) == (
        "tensorfield: error: avatars.json: split 'train' shows no identity the model lacks (it has subject_0, subject_1); "
        "subject_2 has frames in novel_identity, novel_identity_pose (choose the split with train_split=SPLIT, fit-identity --split SPLIT)"
    )
    assert main(["fit-identity", str(root / "missing_run"), "--data", str(data), "--out", str(root / "x")]) == 2
    assert error_line(capsys) == f"tensorfield: error: {root / 'missing_run'}: no such run folder or checkpoint"


def test_fit_identity_from_a_folder_with_only_the_new_subject(trained):
    root, data, run = trained
    dataset = load_avatars(data)
    sequence = dataset.sequences["subject_2"]
    new = write_avatars(root / "new_subject", [sequence], {"train": {"subject_2": list(range(5))}, "novel_pose": {"subject_2": [5, 6]}},
                        background=dataset.background)  # fmt: skip
    fitted_run = root / "fitted_alone"
    assert main(["fit-identity", str(run), "--data", str(new), "--out", str(fitted_run), "steps=8", "lr_identity=0.01", "--no-progress"]) == 0
    fitted = _check_fitted(run, fitted_run, 2)
    assert fitted.num_frames() == 7  # only the new subject's frames
    assert json.loads((fitted_run / "eval_novel_pose.json").read_text())["num_images"] == 2
    # the trained subjects are still there, driven by the new subject's frames
    assert main(["render", str(fitted_run), "--identity", "0", "--frame", "6", "--out", str(root / "old_subject")]) == 0
    image, = frames_of(root / "old_subject")
    trainer = load_run(fitted_run)
    request = RenderRequest(trainer.data.frame_camera(frame=6), 0, trainer.data.background_color(), identity=0, frame=6)
    assert np.array_equal(image, render_image(trainer.model, request)) and image.max() > 40  # the subject is drawn (black background)
