"""The viewer on Einstein fields, headless (pytest-qt, offscreen): a tiny einfield run opens on
the lensed view and switches to the slice mode (quantity, log, plane, colour bar), a gw_tt field's
slice follows the time slider while a static one's does not, the lensed view of a flat field (the
shadow at the centre, the Christoffel grid kept across frames), and live training."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

pytest.importorskip("PyQt6.QtWidgets")
pytest.importorskip("pytestqt")

from tensorfield.app.cli import main
from tensorfield.app.commands import packaged_config
from tensorfield.app.viewer.families import SHOW_SLICE, SHOW_VIEW, SliceControls
from tensorfield.app.viewer.session import load_session, session_from_model, session_from_trainer
from tensorfield.app.viewer.window import ViewerWindow
from tensorfield.engine.colormap import BAR_WIDTH, MARGIN, TITLE_HEIGHT
from tensorfield.engine.config import load_config
from tensorfield.engine.render import render_image, render_slice
from tensorfield.fields.einfield import build_einfield
from tensorfield.fields.einfield_targets import EinFieldData

WAIT_MS = 20000
# rays of an untrained network wander for up to render_max_steps steps: cap them so a frame of
# the lensed view stays well under a second here (rays not finished by then are drawn black)
TINY = ["steps=20", "grid_size=5", "eval_points=64", "render_max_steps=60", "checkpoint_every=20"]
GW_TT = ["spacetime=gw_tt", "amplitude=0.1", "frequency=2.0", "domain_min=[0.0,-1.0,-1.0,-1.0]",
         "domain_max=[3.0,1.0,1.0,1.0]", "target=full", "grid_size=3", "time_samples=3", "render_max_steps=60"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread (tiny networks on a shared 2-core machine: two threads spin-wait)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def einfield_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("viewer_einfield") / "run"
    assert main(["train", "einfield_small", "--out", str(run), "--no-progress", *TINY]) == 0
    return run


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


def bar_column(figure: np.ndarray, resolution: int) -> np.ndarray:
    """The colour bar's middle column (``[R, 3]``) of a :func:`colorbar_figure` of an ``R x R`` map."""
    top, left = MARGIN + TITLE_HEIGHT, 2 * MARGIN + resolution
    return figure[top : top + resolution, left + BAR_WIDTH // 2]


def test_axis_aligned_slices_of_the_domain_by_hand():
    from tensorfield.fields.base import SliceDomain

    domain = SliceDomain(("t", "x", "y", "z"), (0.0, -3.0, -2.0, 1.0), (2.0, 3.0, 2.0, 3.0), time_axis=0)
    plane = domain.axis_aligned(normal=2, offset=0.5, resolution=3)  # y = 0.5: the x-z plane
    assert plane.origin == (1.0, 0.0, 0.5, 2.0) and plane.axis_u == (0.0, 3.0, 0.0, 0.0) and plane.axis_v == (0.0, 0.0, 0.0, 1.0)
    points = plane.points()
    assert torch.equal(points[0, 0], torch.tensor([1.0, -3.0, 0.5, 3.0], dtype=torch.float64))  # row 0: v = +1
    assert torch.equal(points[2, 2], torch.tensor([1.0, 3.0, 0.5, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="not one of the spatial axes"):
        domain.axis_aligned(normal=0, offset=0.0)  # time is the slider's, not a plane normal
    # an Einstein field's default slice is its box's z mid-plane
    config = load_config(str(packaged_config("einfield_small.yaml")), [])
    model = build_einfield(config, EinFieldData(config).scene_info())
    assert model.slice_domain().axis_aligned(3, 2.0) == model.default_slice()


def test_einfield_run_opens_on_the_lensed_view_and_shows_slices(qtbot, window, einfield_run):
    window.open_run(einfield_run)
    qtbot.waitUntil(lambda: window.session is not None, timeout=WAIT_MS)
    assert isinstance(window.family, SliceControls) and window.family_box.isVisibleTo(window)
    assert window.full_size == (128, 128) and window.preview_scale is None  # the family's defaults
    assert not window.time_box.isVisibleTo(window)  # one time slice: no time controls
    window.height_spin.setValue(32)
    lensed = settle(qtbot, window)
    assert lensed.shape == (32, 32, 3) and window.last_result.request.slice is None
    assert np.array_equal(lensed, render_image(window.session.model, window.last_result.request.render_request()))

    family = window.family
    assert family.components == window.session.model.slice_components()
    family.show_combo.setCurrentText(SHOW_SLICE)
    family.quantity_combo.setCurrentText("kretschmann")
    family.log_check.setChecked(True)
    figure = settle(qtbot, window)
    request = window.last_result.request
    assert request.slice.log and request.slice_request().component == "kretschmann"
    assert request.slice_request().resolution == 32 and request.slice_request().time is None
    model = window.session.model
    # the view is the engine's figure of the log slice (map, colour bar with labels, title)
    expected = render_slice(model, request.slice_request(), log=True, colorbar=True)
    assert np.array_equal(figure, expected)
    assert figure.shape[0] > 32 and figure.shape[1] > 32 + BAR_WIDTH
    # the colour bar: the turbo ramp from the maximum (top) to the minimum (bottom)
    bar = bar_column(figure, 32).astype(int)
    assert np.abs(bar[0] - bar[-1]).sum() > 100 and len({tuple(c) for c in bar}) > 8
    # the map is the default plane (the z mid-plane) of the model, coloured log10 |K|
    plain = render_slice(model, dataclasses.replace(model.default_slice(), resolution=32, component="kretschmann"), log=True)
    top, left = MARGIN + TITLE_HEIGHT, MARGIN
    assert np.array_equal(figure[top : top + 32, left : left + 32], plain)

    # a static spacetime: moving the (hidden) time changes nothing
    window.set_time(0.7)
    assert np.array_equal(settle(qtbot, window), figure) and window.last_result.request.time is None

    # the plane: normal x through the centre, then an offset
    family.normal_combo.setCurrentIndex(0)  # x (y-z plane)
    across = settle(qtbot, window)
    plane = window.last_result.request.slice_request()
    assert plane.origin[1] == pytest.approx(0.0) and plane.axis_u == (0.0, 0.0, 3.0, 0.0) and plane.axis_v == (0.0, 0.0, 0.0, 1.0)
    assert not np.array_equal(across, figure)
    family.offset_slider.setValue(150)  # x = -3 + 6 * 0.75
    shifted = settle(qtbot, window)
    assert window.last_result.request.slice_request().origin[1] == pytest.approx(1.5)
    assert not np.array_equal(shifted, across)
    assert "x = 1.5" in family.offset_label.text()

    # back to the camera view: the lensed frame again
    family.show_combo.setCurrentText(SHOW_VIEW)
    assert np.array_equal(settle(qtbot, window), lensed)


def test_gw_tt_slice_follows_the_time_slider(qtbot, window):
    config = load_config(str(packaged_config("einfield_small.yaml")), GW_TT)
    data = EinFieldData(config)
    model = build_einfield(config, data.scene_info()).eval()
    window.set_session(session_from_model(model, data.split_cameras(), background=(0.0, 0.0, 0.0), name="gw", method="einfield"))
    assert window.time_box.isVisibleTo(window)
    family = window.family
    assert isinstance(family, SliceControls)
    family.show_combo.setCurrentText(SHOW_SLICE)
    assert family.normal_combo.count() == 3  # x, y, z: time is the slider's
    window.height_spin.setValue(24)
    family.quantity_combo.setCurrentText("g_xx")
    window.set_time(0.0)
    early = settle(qtbot, window)
    window.set_time(0.5)
    later = settle(qtbot, window)
    request = window.last_result.request
    assert request.slice_request().time == pytest.approx(0.5)
    assert not np.array_equal(early, later)  # h_xx = A cos(w (t - z)) moves with t
    assert np.array_equal(later, render_slice(model, request.slice_request(), colorbar=True))
    # the slice's values at t = 0.5: the network's g_xx there (not the analytic wave: untrained)
    values = model.field_slice(request.slice_request())
    assert not torch.equal(values, model.field_slice(dataclasses.replace(request.slice_request(), time=0.0)))


def test_lensed_view_of_a_flat_field_keeps_its_christoffel_grid(qtbot, window, einfield_run):
    session = load_session(einfield_run)
    model = session.model
    with torch.no_grad():  # zero distortion: flat space with the configured capture radius 2M
        model.net[-1].weight.zero_()
        model.net[-1].bias.zero_()
    window.set_session(session)
    window.height_spin.setValue(16)
    window.fov_spin.setValue(12.0)  # the 2M capture sphere seen from 20M: 11.5 degrees across
    first = settle(qtbot, window)
    assert first[7:9, 7:9].max() == 0  # the shadow at the centre
    assert first[[0, 0, -1, -1], [0, -1, 0, -1]].max() > 0  # the sky at the corners
    grid = model._lensing_grid
    assert grid is not None
    window.orbit(0.3, 0.0)
    settle(qtbot, window)
    assert model._lensing_grid is grid  # built once, reused by every frame of the static spacetime
    assert np.array_equal(window.current_frame, render_image(model, window.last_result.request.render_request()))


def test_live_training_of_an_einfield(qtbot, tmp_path):
    from tensorfield.engine.trainer import Trainer

    config = load_config(str(packaged_config("einfield_small.yaml")), ["steps=100000", "checkpoint_every=0", "render_max_steps=60"])
    trainer = Trainer.from_config(config, tmp_path / "live")
    win = ViewerWindow(session_from_trainer(trainer), live=True)
    qtbot.addWidget(win)
    win.show()
    win.family.show_combo.setCurrentText(SHOW_SLICE)
    win.family.quantity_combo.setCurrentText("g_tt")
    win.height_spin.setValue(16)
    qtbot.waitUntil(lambda: win.last_progress is not None and win.last_progress.step > 1, timeout=WAIT_MS)
    first_step = win.last_progress.step
    qtbot.waitUntil(lambda: win.last_progress.step > first_step, timeout=WAIT_MS)  # the counter advances
    assert f"step {win.last_progress.step} / 100000" in win.training_label.text()
    qtbot.waitUntil(lambda: win.shown_frame is not None and win.last_result.request.slice is not None, timeout=WAIT_MS)
    shown_model = win.worker.model
    assert shown_model is not trainer.model and not shown_model.training
    assert shown_model.allow_render_cache  # the Christoffel grid: once per snapshot, not per frame
    before = win.shown_frame.copy()
    snapshot = win.worker.model
    qtbot.waitUntil(lambda: win.worker.model is not snapshot and win.shown_frame is not None
                    and not np.array_equal(win.shown_frame, before), timeout=WAIT_MS)  # the view follows training
    training_thread = win.live.thread
    win.close()
    assert not training_thread.is_alive() and win.training_state == "stopped"
    assert sorted((tmp_path / "live" / "checkpoints").glob("*.ckpt"))
