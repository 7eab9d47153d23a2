"""What a careless user runs into, through the CLI: damaged checkpoints, out-of-range options, bad
output paths, time on a static model, a scene without a test split. Each is one line on stderr
(exit 2) and nothing already written is lost."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
from tensorfield.app import commands
from tensorfield.app.cli import main
from tensorfield.datasets.synthetic import make_scene
from tensorfield.engine.checkpoint import load_checkpoint

TINY = [
    "steps=30",
    "batch_size=256",
    "voxels_init=4096",
    "voxels_final=8000",
    "upsample_steps=[10]",
    "alpha_mask_steps=[100]",
    "density_components=[2,2,2]",
    "app_components=[4,4,4]",
    "checkpoint_every=10",
    "keep_checkpoints=5",
    "log_every=10",
    "render_chunk=2048",
]


@pytest.fixture(scope="module")
def no_test_split(tmp_path_factory):
    """A 30-step TensoRF on a synthetic scene whose transforms_test.json was deleted (val only)."""
    root = tmp_path_factory.mktemp("careless")
    data = make_scene(root / "data", resolution=16, n_train=4, n_test=1, n_val=1)
    (data / "transforms_test.json").unlink()
    run = root / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", "tensorf_vm_small", "--data", str(data), "--out", str(run), "--no-progress", *TINY]) == 0
    return root, data, run, out.getvalue()


def _copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tensorfield: error: ")
    return err


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ split names
def test_train_and_eval_name_the_split_actually_used(no_test_split, capsys):
    _, _, run, printed = no_test_split
    assert "val_psnr" in printed and "test_" not in printed
    assert not (run / "eval.json").exists()
    stored = json.loads((run / "eval_val.json").read_text())
    assert stored["split"] == "val" and stored["step"] == 30
    assert (run / "renders" / "val").is_dir() and not (run / "renders" / "test").exists()
    assert main(["eval", str(run), "--no-renders"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{run}: val split at step 30"


# ------------------------------------------------------------------------------------ damaged newest
@pytest.fixture
def truncated(no_test_split, tmp_path):
    _, _, run, _ = no_test_split
    copy = _copy(run, tmp_path)
    newest = copy / "checkpoints" / "step_000030.ckpt"
    newest.write_bytes(newest.read_bytes()[:5000])
    return copy, newest


@pytest.mark.parametrize(
    "argv",
    [["eval", "{run}", "--no-renders"], ["render", "{run}", "--path", "val", "--out", "{tmp}/frames"], ["export", "{run}", "mesh", "--out", "{tmp}/m.ply"]],
)
def test_truncated_newest_checkpoint_names_the_intact_earlier_ones(truncated, tmp_path, capsys, argv):
    run, newest = truncated
    before = _tree(run)
    assert main([a.format(run=run, tmp=tmp_path) for a in argv]) == 2
    err = _one_error_line(capsys)
    assert str(newest) in err and "truncated or corrupt" in err
    assert "intact earlier: step_000020, step_000010 (use --checkpoint step_000020)" in err
    assert len(err) < 300, len(err)
    assert _tree(run) == before  # refusing touches nothing


def test_checkpoint_option_picks_an_earlier_one(truncated, tmp_path, capsys):
    run, _ = truncated
    lines_before = (run / "metrics.jsonl").read_text()
    assert main(["eval", str(run), "--checkpoint", "step_20", "--no-renders"]) == 0
    assert f"{run}: val split at step 20" in capsys.readouterr().out
    assert (run / "metrics.jsonl").read_text() == lines_before  # loading an earlier step drops no log line
    assert main(["render", str(run), "--checkpoint", str(run / "checkpoints" / "step_000010.ckpt"), "--path", "val", "--out", str(tmp_path / "f"), "--no-depth"]) == 0
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["00000.png"]
    capsys.readouterr()  # the render's progress bar
    assert main(["eval", str(run), "--checkpoint", "step_7"]) == 2
    err = _one_error_line(capsys)
    assert "no checkpoint step_7 (has: step_000010, step_000020, step_000030)" in err


def test_resume_falls_back_to_the_newest_readable_checkpoint(truncated, capsys):
    run, newest = truncated
    damaged = newest.read_bytes()
    assert main(["train", "tensorf_vm_small", "--out", str(run), "--resume", "--no-progress"]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.startswith("tensorfield: warning:")]
    assert warning == [
        "tensorfield: warning: step_000030.ckpt: truncated or corrupt checkpoint; resuming from step_000020.ckpt instead "
        "(kept as step_000030.ckpt.corrupt)"
    ]
    assert f"resuming {run} at step 20" in captured.out
    assert (run / "checkpoints" / "step_000030.ckpt.corrupt").read_bytes() == damaged  # kept, not lost
    assert load_checkpoint(newest)["trainer"]["step"] == 30  # written again by the resumed run


def test_an_explicit_bad_checkpoint_is_not_replaced(truncated, capsys):
    run, newest = truncated
    before = _tree(run)
    assert main(["train", "tensorf_vm_small", "--out", str(run), "--resume", "--checkpoint", "step_30", "--no-progress"]) == 2
    assert "intact earlier: step_000020" in _one_error_line(capsys)
    assert _tree(run) == before


def test_checkpoint_without_resume_and_resume_of_a_finished_run(no_test_split, tmp_path, capsys):
    _, data, run, _ = no_test_split
    assert main(["train", "tensorf_vm_small", "--data", str(data), "--out", str(tmp_path / "new"), "--checkpoint", "step_10"]) == 2
    assert "--checkpoint needs --resume" in _one_error_line(capsys)
    copy = _copy(run, tmp_path)
    before = _tree(copy)
    assert main(["train", "tensorf_vm_small", "--out", str(copy), "--resume", "--no-progress"]) == 2
    assert "already trained for 30 steps (steps=30); pass steps=N with N > 30" in _one_error_line(capsys)
    assert _tree(copy) == before


# ------------------------------------------------------------------------------------ config ranges
@pytest.mark.parametrize(
    "override, expected",
    [
        ("steps=-5", "override steps=-5: steps must be >= 1, got -5"),
        ("steps=0", "override steps=0: steps must be >= 1, got 0"),
        ("batch_size=0", "override batch_size=0: batch_size must be >= 1, got 0"),
        ("background=purple", "override background=purple: background must be one of 'white', 'black', 'random', got 'purple'"),
    ],
)
def test_out_of_range_options_stop_before_any_run_folder(no_test_split, tmp_path, capsys, override, expected):
    _, data, _, _ = no_test_split
    out = tmp_path / "never"
    assert main(["train", "tensorf_vm_small", "--data", str(data), "--out", str(out), "--no-progress", override]) == 2
    assert _one_error_line(capsys) == f"tensorfield: error: {expected}"
    assert not out.exists()


# ------------------------------------------------------------------------------------ time
@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--time", "1.7"], "--time 1.7: times are normalised to [0, 1]"),
        (["--time-range", "0", "2"], "--time-range 2.0: times are normalised to [0, 1]"),
        (["--time", "0.5"], "--time: {run} is a static TensoRF (no time to set); drop --time"),
        (["--time-range", "0", "1"], "--time-range: {run} is a static TensoRF (no time to set); drop --time-range"),
    ],
)
def test_time_on_a_static_model_or_outside_0_1(no_test_split, tmp_path, capsys, flags, expected):
    _, _, run, _ = no_test_split
    out = tmp_path / "frames"
    assert main(["render", str(run), "--path", "val", "--out", str(out), *flags]) == 2
    assert _one_error_line(capsys) == f"tensorfield: error: {expected.format(run=run)}"
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------------------------ output paths
@pytest.fixture
def no_load(monkeypatch):
    """Fail the test if a command loads the run: the output path is checked first."""
    monkeypatch.setattr(commands, "load_run", lambda *a, **k: pytest.fail("the run was loaded before --out was checked"))


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["export", "{run}", "mesh", "--out", "{file}/sub/mesh.ply"], "{file}/sub/mesh.ply: cannot write there: {file} is a file, not a folder"),
        (["export", "{run}", "pointcloud", "--out", "{file}/points.ply"], "{file}/points.ply: cannot write there: {file} is a file, not a folder"),
        (["export", "{run}", "mesh", "--out", "{tmp}/mesh.pcd"], "{tmp}/mesh.pcd: unsupported output format '.pcd' (use one of .ply, .obj, .glb, .off, .stl)"),
        (["export", "{run}", "splat", "--out", "{tmp}/splats"], "{tmp}/splats: unsupported output format no extension (use one of .ply)"),
        (["export", "{run}", "mesh", "--out", "{tmp}"], "{tmp}: unsupported output format no extension (use one of .ply, .obj, .glb, .off, .stl)"),
        (["render", "{run}", "--out", "{file}/orbit.mp4"], "{file}/orbit.mp4: cannot write there: {file} is a file, not a folder"),
        (["render", "{run}", "--out", "{file}"], "{file}: exists and is a file, not a folder for the output"),
    ],
)
def test_output_path_is_checked_before_any_work(no_test_split, tmp_path, capsys, no_load, argv, expected):
    _, _, run, _ = no_test_split
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    fill = {"run": run, "tmp": tmp_path, "file": blocker}
    assert main([a.format(**fill) for a in argv]) == 2
    assert _one_error_line(capsys) == f"tensorfield: error: {expected.format(**fill)}"
    assert blocker.read_text() == "keep me"


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="needs Linux /proc (a folder nobody can write)")
def test_unwritable_target_is_one_line_without_library_chatter(no_test_split, capfd, no_load):
    _, _, run, _ = no_test_split
    assert main(["export", str(run), "mesh", "--out", "/proc/mesh.ply"]) == 2
    captured = capfd.readouterr()  # file descriptors: C libraries write there, not to sys.stdout
    assert captured.out == "" and "RPly" not in captured.err
    assert captured.err.strip() == "tensorfield: error: /proc/mesh.ply: cannot write there: /proc is not writable (No such file or directory)"


# ------------------------------------------------------------------------------------ exact resume
def test_killed_tensorf_run_resumes_to_the_same_bits(no_test_split, tmp_path):
    """Killed after step 10's checkpoint (later ones never written), resumed through the CLI: the
    step-20 and step-30 checkpoints equal the uninterrupted run's, RNG states included."""
    import torch

    def flatten(prefix, value, out):
        if isinstance(value, dict):
            for key, item in value.items():
                flatten(f"{prefix}.{key}", item, out)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                flatten(f"{prefix}[{index}]", item, out)
        else:
            out[prefix] = value
        return out

    def assert_same_state(a, b):
        flat_a, flat_b = (flatten("", {k: c[k] for k in ("trainer", "model", "optimizer")}, {}) for c in (a, b))
        assert flat_a.keys() == flat_b.keys()
        same = lambda x, y: torch.equal(x, y) if torch.is_tensor(x) else x == y
        assert [k for k in flat_a if k not in (".trainer.elapsed_s", ".trainer.train_s") and not same(flat_a[k], flat_b[k])] == []
        return flat_a

    _, _, run, _ = no_test_split
    killed = _copy(run, tmp_path)
    for name in ("step_000020.ckpt", "step_000030.ckpt"):
        (killed / "checkpoints" / name).unlink()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "tensorf_vm_small", "--out", str(killed), "--resume", "--no-progress"]) == 0
    for name in ("step_000020.ckpt", "step_000030.ckpt"):
        state = assert_same_state(load_checkpoint(run / "checkpoints" / name), load_checkpoint(killed / "checkpoints" / name))
        assert ".trainer.model_rng" in state and ".trainer.batch_source.order_rng" in state
