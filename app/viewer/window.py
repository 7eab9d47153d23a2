"""The PyQt6 viewer window.

The window holds the view state (camera, time, mode, background, resolution) and turns every
change into a :class:`~tensorfield.app.viewer.worker.FrameRequest` for the render thread. It
never renders itself: results come back as queued signals. While the view changes, frames are
requested at the preview scale (a fixed one, or "auto": the largest that keeps
``AUTO_PREVIEW_FPS`` at the last frame's cost per pixel); once it has been still for
``SETTLE_MS`` the same view is refined level by level (each doubling the scale) up to full
resolution.

Mouse: left drag orbits, right / middle (or shift + left) drag pans, the wheel zooms. Keys:
W/S forward/back, A/D left/right, Q/E down/up, R resets to the first dataset camera.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
from PyQt6.QtCore import QObject, QPointF, QRectF, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QColor, QImage, QKeySequence, QPainter
from PyQt6.QtWidgets import (
    QApplication,
    QCheckBox,
    QColorDialog,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from tensorfield.app.viewer.camera import (
    Keyframe,
    ViewCamera,
    fov_from_focal,
    interpolate_keyframes,
)
from tensorfield.app.viewer.families import controls_for
from tensorfield.app.viewer.live import LiveTraining
from tensorfield.app.viewer.session import ViewerSession, load_session, session_from_trainer
from tensorfield.app.viewer.worker import FrameRequest, FrameResult, RenderWorker
from tensorfield.engine.render import RENDER_MODES, load_camera_path, render_path, save_camera_path

SETTLE_MS = 150  # the view counts as still after this long without a change
TIME_STEPS = 1000  # time slider resolution
PLAY_INTERVAL_MS = 33
ORBIT_RADIANS_PER_PIXEL = 0.01
FLY_FRACTION = 0.05  # one fly key press moves this fraction of the pivot distance
PREVIEW_SCALES = (1.0, 0.5, 0.25, 0.125)
AUTO_PREVIEW = None  # preview-scale choice "auto": the largest scale that keeps AUTO_PREVIEW_FPS
AUTO_PREVIEW_FPS = 30.0


def auto_preview_scale(seconds_per_pixel: float | None, full_pixels: int, fps: float = AUTO_PREVIEW_FPS,
                       scales: tuple[float, ...] = PREVIEW_SCALES) -> float:
    """The largest of ``scales`` whose frame (``full_pixels * scale^2`` pixels at the measured
    ``seconds_per_pixel``) renders within ``1 / fps``; the smallest scale when none does, 0.25
    before anything was measured. Small frames carry the same fixed cost per frame, so the
    per-pixel estimate from a preview errs on the slow side (a smaller, not a larger, scale)."""
    if seconds_per_pixel is None or seconds_per_pixel <= 0:
        return 0.25 if 0.25 in scales else min(scales)
    budget = 1.0 / fps
    for scale in sorted(scales, reverse=True):
        if seconds_per_pixel * full_pixels * scale * scale <= budget:
            return scale
    return min(scales)


class _Bridge(QObject):
    """Signals emitted from worker threads, delivered queued in the UI thread."""

    frame = pyqtSignal(object)
    task = pyqtSignal(object, object, object)  # callback, result, error
    progress = pyqtSignal(object, object)  # TrainingProgress, model snapshot
    finished = pyqtSignal(object, object, bool)  # summary, error, stopped


class FrameView(QWidget):
    """Shows the latest frame scaled to fit (aspect kept) and turns input into camera moves."""

    def __init__(self, window: ViewerWindow):
        super().__init__(window)
        self._window = window
        self._image: QImage | None = None
        self._drag_start: QPointF | None = None
        self._drag_button = Qt.MouseButton.NoButton
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(320, 240)
        self.setMouseTracking(False)

    def set_image(self, image: np.ndarray) -> None:
        image = np.ascontiguousarray(image)
        h, w = image.shape[:2]
        self._image = QImage(image.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self.update()

    def paintEvent(self, event):
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(40, 40, 40))
        if self._image is not None:
            w, h = self._image.width(), self._image.height()
            scale = min(self.width() / w, self.height() / h)
            target = QRectF((self.width() - w * scale) / 2, (self.height() - h * scale) / 2, w * scale, h * scale)
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            painter.drawImage(target, self._image)
        painter.end()

    def mousePressEvent(self, event):
        self._drag_start = event.position()
        button = event.button()
        if button == Qt.MouseButton.LeftButton and event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            button = Qt.MouseButton.RightButton
        self._drag_button = button
        self.setFocus()

    def mouseMoveEvent(self, event):
        if self._drag_start is None:
            return
        delta = event.position() - self._drag_start
        self._drag_start = event.position()
        if self._drag_button == Qt.MouseButton.LeftButton:
            self._window.orbit(delta.x() * ORBIT_RADIANS_PER_PIXEL, delta.y() * ORBIT_RADIANS_PER_PIXEL)
        else:
            height = max(self.height(), 1)
            self._window.pan(delta.x() / height, delta.y() / height)

    def mouseReleaseEvent(self, event):
        self._drag_start = None
        self._drag_button = Qt.MouseButton.NoButton

    def wheelEvent(self, event):
        self._window.zoom(event.angleDelta().y() / 120.0)

    def keyPressEvent(self, event):
        moves = {
            Qt.Key.Key_W: (1, 0, 0), Qt.Key.Key_S: (-1, 0, 0),
            Qt.Key.Key_D: (0, 1, 0), Qt.Key.Key_A: (0, -1, 0),
            Qt.Key.Key_E: (0, 0, 1), Qt.Key.Key_Q: (0, 0, -1),
        }
        key = Qt.Key(event.key())
        if key in moves:
            self._window.fly(*moves[key])
        elif key == Qt.Key.Key_R:
            self._window.reset_view()
        else:
            super().keyPressEvent(event)


class ViewerWindow(QMainWindow):
    """The desktop viewer.

    Args:
        session: what to show first (``None``: an empty window; use :meth:`open_run`).
        live: train ``session.trainer`` in the background and show the model as it improves.
    """

    def __init__(self, session: ViewerSession | None = None, live: bool = False):
        super().__init__()
        self.setWindowTitle("tensorfield viewer")
        self.resize(1100, 720)
        self.session: ViewerSession | None = None
        self.camera: ViewCamera | None = None
        self.time_value = 0.0
        self.mode = "rgb"
        self.background = (1.0, 1.0, 1.0)
        self.preview_scale: float | None = 0.25  # None: auto (AUTO_PREVIEW)
        self.seconds_per_pixel: float | None = None  # of the last frame rendered (auto preview)
        self.full_size = (256, 256)
        self.keyframes: list[Keyframe] = []
        self.current_frame: np.ndarray | None = None  # last full-resolution frame
        self.shown_frame: np.ndarray | None = None  # last frame on screen (any level)
        self.last_result: FrameResult | None = None
        self.error_dialog: QMessageBox | None = None
        self.live: LiveTraining | None = None
        self.training_state = ""
        self.family = None
        self._generation = 0
        self._requested_level = -1
        self._arrived_level = -1
        self._shown_generation = -1
        self._moving = False
        self._frame_times: deque[float] = deque(maxlen=60)
        self._pending_callbacks: dict[int, object] = {}
        self._task_counter = 0
        self.last_progress = None
        self._closing = False

        self._bridge = _Bridge()
        self._bridge.frame.connect(self._on_frame)
        self._bridge.task.connect(self._on_task_done)
        self._bridge.progress.connect(self._on_training_progress)
        self._bridge.finished.connect(self._on_training_finished)
        self.worker = RenderWorker(self._bridge.frame.emit)

        self._settle_timer = QTimer(self)
        self._settle_timer.setSingleShot(True)
        self._settle_timer.timeout.connect(self._on_settled)
        self._play_timer = QTimer(self)
        self._play_timer.setInterval(PLAY_INTERVAL_MS)
        self._play_timer.timeout.connect(self._on_play_tick)
        self._last_tick = None

        self._build_ui()
        if session is not None:
            self.set_session(session)
            if live:
                self.start_training()

    # ================================================================== UI construction
    def _build_ui(self) -> None:
        self.view = FrameView(self)
        panel = QWidget()
        layout = QVBoxLayout(panel)

        # camera
        box = QGroupBox("Camera")
        form = QFormLayout(box)
        self.camera_combo = QComboBox()
        self.camera_combo.activated.connect(self._on_camera_chosen)
        form.addRow("Snap to", self.camera_combo)
        self.fov_spin = QDoubleSpinBox()
        self.fov_spin.setRange(5.0, 150.0)
        self.fov_spin.setSuffix("°")
        self.fov_spin.valueChanged.connect(self._on_fov)
        form.addRow("Field of view", self.fov_spin)
        self.reset_button = QPushButton("Reset view (R)")
        self.reset_button.clicked.connect(self.reset_view)
        form.addRow(self.reset_button)
        layout.addWidget(box)

        # time
        self.time_box = QGroupBox("Time")
        form = QFormLayout(self.time_box)
        self.time_slider = QSlider(Qt.Orientation.Horizontal)
        self.time_slider.setRange(0, TIME_STEPS)
        self.time_slider.valueChanged.connect(self._on_time_slider)
        self.time_label = QLabel("t = 0.000")
        form.addRow(self.time_label, self.time_slider)
        row = QHBoxLayout()
        self.play_button = QPushButton("Play")
        self.play_button.setCheckable(True)
        self.play_button.toggled.connect(self.set_playing)
        self.loop_check = QCheckBox("Loop")
        self.loop_check.setChecked(True)
        row.addWidget(self.play_button)
        row.addWidget(self.loop_check)
        form.addRow(row)
        self.speed_spin = QDoubleSpinBox()
        self.speed_spin.setRange(0.01, 5.0)
        self.speed_spin.setSingleStep(0.05)
        self.speed_spin.setValue(0.2)
        self.speed_spin.setSuffix(" /s")
        form.addRow("Speed", self.speed_spin)
        layout.addWidget(self.time_box)

        # render
        box = QGroupBox("Render")
        form = QFormLayout(box)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(RENDER_MODES)
        self.mode_combo.currentTextChanged.connect(self._on_mode)
        form.addRow("Mode", self.mode_combo)
        self.background_button = QPushButton("Background…")
        self.background_button.clicked.connect(self._choose_background)
        form.addRow(self.background_button)
        self.height_spin = QSpinBox()
        self.height_spin.setRange(16, 4096)
        self.height_spin.valueChanged.connect(self._on_resolution)
        form.addRow("Height (px)", self.height_spin)
        self.preview_combo = QComboBox()
        for scale in PREVIEW_SCALES:
            self.preview_combo.addItem(f"{scale:g}×", scale)
        self.preview_combo.addItem(f"auto ({AUTO_PREVIEW_FPS:g} FPS)", AUTO_PREVIEW)
        self.preview_combo.setCurrentIndex(PREVIEW_SCALES.index(0.25))
        self.preview_combo.currentIndexChanged.connect(self._on_preview_scale)
        form.addRow("Preview scale", self.preview_combo)
        layout.addWidget(box)

        self.family_box = QGroupBox("Model")
        self.family_layout = QVBoxLayout(self.family_box)
        self.family_box.hide()
        layout.addWidget(self.family_box)

        # camera path
        box = QGroupBox("Camera path")
        form = QFormLayout(box)
        row = QHBoxLayout()
        self.add_key_button = QPushButton("Add keyframe")
        self.add_key_button.clicked.connect(self.add_keyframe)
        self.clear_keys_button = QPushButton("Clear")
        self.clear_keys_button.clicked.connect(self.clear_keyframes)
        row.addWidget(self.add_key_button)
        row.addWidget(self.clear_keys_button)
        form.addRow(row)
        self.keyframe_label = QLabel("0 keyframes")
        form.addRow(self.keyframe_label)
        self.frames_spin = QSpinBox()
        self.frames_spin.setRange(2, 10000)
        self.frames_spin.setValue(90)
        form.addRow("Frames", self.frames_spin)
        self.fps_spin = QDoubleSpinBox()
        self.fps_spin.setRange(1, 120)
        self.fps_spin.setValue(30)
        form.addRow("FPS", self.fps_spin)
        row = QHBoxLayout()
        for text, slot in (("Save…", self._save_path_dialog), ("Load…", self._load_path_dialog), ("Render MP4…", self._render_video_dialog)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            row.addWidget(button)
        form.addRow(row)
        layout.addWidget(box)

        # training
        self.training_box = QGroupBox("Training")
        form = QFormLayout(self.training_box)
        self.training_label = QLabel("-")
        form.addRow(self.training_label)
        row = QHBoxLayout()
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.pause_training)
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(self.resume_training)
        self.resume_button.setEnabled(False)
        row.addWidget(self.pause_button)
        row.addWidget(self.resume_button)
        form.addRow(row)
        self.training_box.hide()
        layout.addWidget(self.training_box)

        self.snapshot_button = QPushButton("Snapshot PNG…")
        self.snapshot_button.clicked.connect(self._snapshot_dialog)
        layout.addWidget(self.snapshot_button)
        layout.addStretch(1)

        scroll = QScrollArea()
        scroll.setWidget(panel)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFixedWidth(310)
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.view, 1)
        row.addWidget(scroll)
        self.setCentralWidget(central)

        self.fps_label = QLabel("")
        self.statusBar().addPermanentWidget(self.fps_label)

        menu = self.menuBar().addMenu("&File")
        for text, shortcut, slot in (
            ("&Open run…", QKeySequence.StandardKey.Open, self._open_dialog),
            ("&Snapshot…", None, self._snapshot_dialog),
            ("&Quit", QKeySequence.StandardKey.Quit, self.close),
        ):
            action = QAction(text, self)
            if shortcut is not None:
                action.setShortcut(shortcut)
            action.triggered.connect(slot)
            menu.addAction(action)
        self._set_controls_enabled(False)

    def _set_controls_enabled(self, enabled: bool) -> None:
        for widget in (self.camera_combo, self.fov_spin, self.reset_button, self.time_box, self.mode_combo,
                       self.background_button, self.height_spin, self.add_key_button, self.snapshot_button):
            widget.setEnabled(enabled)

    # ================================================================== sessions
    def open_run(self, path: str | Path, device: str | None = None) -> None:
        """Load a run folder or checkpoint in the render thread; errors go to a dialog."""
        if self.live is not None and self.live.alive:
            self.show_error("Open run", "stop training (close the window) before opening another run")
            return
        self.statusBar().showMessage(f"loading {path}…")
        self._run_in_worker(lambda: load_session(path, device), self._on_loaded)

    def _on_loaded(self, session, error):
        if error is not None:
            self.statusBar().showMessage("loading failed", 5000)
            self.show_error("Cannot open run", error)
            return
        self.set_session(session)
        self.statusBar().showMessage(f"opened {session.name}", 5000)

    def set_session(self, session: ViewerSession) -> None:
        """Show ``session`` (resets the view to its first dataset camera)."""
        self.session = session
        self.worker.set_model(session.model)
        self.setWindowTitle(f"tensorfield viewer — {session.name} ({session.method or 'model'})")
        self.background = tuple(float(v) for v in session.background.reshape(3))
        width, height = session.resolution
        self.full_size = (width, height)
        self.height_spin.blockSignals(True)
        self.height_spin.setValue(height)
        self.height_spin.blockSignals(False)
        self.camera_combo.clear()
        for split, index in session.camera_list():
            self.camera_combo.addItem(f"{split} {index:03d}", (split, index))
        self.time_box.setVisible(session.is_dynamic)
        if not session.is_dynamic:
            self.set_playing(False)
        self._install_family_controls()
        self._apply_view_defaults(self.family.view_defaults())
        self._set_controls_enabled(True)
        self.keyframes = []
        self._update_keyframe_label()
        self.reset_view()

    def _install_family_controls(self) -> None:
        while self.family_layout.count():
            item = self.family_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.family = controls_for(self.session)
        widget = self.family.widget(self.request_frame)
        self.family_box.setVisible(widget is not None)
        if widget is not None:
            self.family_box.setTitle(self.family.title or "Model")
            self.family_layout.addWidget(widget)

    def _apply_view_defaults(self, defaults) -> None:
        """The family's starting resolution and preview scale (:class:`ViewDefaults`)."""
        if defaults.height is not None:
            self.height_spin.blockSignals(True)
            self.height_spin.setValue(defaults.height)
            self.height_spin.blockSignals(False)
            width0, height0 = self.session.resolution
            self.full_size = (max(1, int(round(defaults.height * width0 / height0))), int(defaults.height))
        if defaults.auto_preview:
            self.preview_combo.blockSignals(True)
            self.preview_combo.setCurrentIndex(self.preview_combo.count() - 1)  # "auto", the last item
            self.preview_combo.blockSignals(False)
            self.preview_scale = AUTO_PREVIEW

    # ================================================================== view state
    def set_camera(self, camera: ViewCamera) -> None:
        self.camera = camera
        self.fov_spin.blockSignals(True)
        self.fov_spin.setValue(camera.fov_y)
        self.fov_spin.blockSignals(False)
        self.request_frame()

    def reset_view(self) -> None:
        if self.session is not None:
            self.snap_to_camera(0)

    def snap_to_camera(self, position: int) -> None:
        """Jump to the dataset camera at ``position`` of the list (and its time, if any)."""
        if self.session is None or position >= self.camera_combo.count():
            return
        self.camera_combo.setCurrentIndex(position)
        split, index = self.camera_combo.itemData(position)
        camera_time = self.session.camera_time(split, index)
        if self.session.is_dynamic and camera_time is not None:
            self.set_time(camera_time, request=False)
        self.set_camera(self.session.view_of(split, index))

    def _on_camera_chosen(self, position: int) -> None:
        self.snap_to_camera(position)

    def orbit(self, yaw: float, pitch: float) -> None:
        if self.camera is not None:
            self.set_camera(self.camera.orbit(yaw, pitch))

    def pan(self, dx: float, dy: float) -> None:
        if self.camera is not None:
            self.set_camera(self.camera.pan(dx, dy))

    def zoom(self, steps: float) -> None:
        if self.camera is not None:
            self.set_camera(self.camera.zoom(steps))

    def fly(self, forward: int, right: int, up: int) -> None:
        if self.camera is not None:
            step = FLY_FRACTION * self.camera.pivot_distance
            self.set_camera(self.camera.fly(forward * step, right * step, up * step))

    def _on_fov(self, value: float) -> None:
        if self.camera is not None and abs(value - self.camera.fov_y) > 1e-9:
            self.set_camera(self.camera.with_fov(value))

    def set_time(self, value: float, request: bool = True) -> None:
        self.time_value = float(np.clip(value, 0.0, 1.0))
        self.time_label.setText(f"t = {self.time_value:.3f}")
        self.time_slider.blockSignals(True)
        self.time_slider.setValue(int(round(self.time_value * TIME_STEPS)))
        self.time_slider.blockSignals(False)
        if request:
            self.request_frame()

    def _on_time_slider(self, value: int) -> None:
        self.set_time(value / TIME_STEPS)

    def set_playing(self, playing: bool) -> None:
        if self.play_button.isChecked() != playing:
            self.play_button.setChecked(playing)  # re-enters through toggled
            return
        self.play_button.setText("Pause" if playing else "Play")
        if playing:
            self._last_tick = time.perf_counter()
            self._play_timer.start()
        else:
            self._play_timer.stop()

    def _on_play_tick(self) -> None:
        now = time.perf_counter()
        dt = now - (self._last_tick or now)
        self._last_tick = now
        value = self.time_value + dt * self.speed_spin.value()
        if value > 1.0:
            if self.loop_check.isChecked():
                value -= 1.0
            else:
                value = 1.0
                self.set_playing(False)
        self.set_time(value)

    def _on_mode(self, mode: str) -> None:
        self.mode = mode
        self.request_frame()

    def set_background(self, rgb) -> None:
        self.background = tuple(float(v) for v in rgb)
        self.request_frame()

    def _choose_background(self) -> None:
        r, g, b = (int(round(255 * v)) for v in self.background)
        color = QColorDialog.getColor(QColor(r, g, b), self, "Background colour")
        if color.isValid():
            self.set_background((color.redF(), color.greenF(), color.blueF()))

    def _on_resolution(self, height: int) -> None:
        if self.session is None:
            return
        width0, height0 = self.session.resolution
        self.full_size = (max(1, int(round(height * width0 / height0))), int(height))
        self.request_frame()

    def _on_preview_scale(self, index: int) -> None:
        data = self.preview_combo.itemData(index)
        self.preview_scale = None if data is AUTO_PREVIEW else float(data)
        self.request_frame()

    def effective_preview_scale(self) -> float:
        """The preview scale in use: the chosen one, or under "auto" the largest that keeps
        :data:`AUTO_PREVIEW_FPS` at the last measured cost per pixel."""
        if self.preview_scale is not None:
            return self.preview_scale
        return auto_preview_scale(self.seconds_per_pixel, self.full_size[0] * self.full_size[1])

    # ================================================================== frames
    def _levels(self) -> list[float]:
        scales = [1.0]
        preview = self.effective_preview_scale()
        while scales[-1] / 2 >= preview - 1e-9 and scales[-1] / 2 * self.full_size[1] >= 8:
            scales.append(scales[-1] / 2)
        return scales[::-1]

    def frame_request(self, level: int | None = None) -> FrameRequest:
        """The request for the current view at refinement ``level`` (default: full resolution)."""
        levels = self._levels()
        level = len(levels) - 1 if level is None else level
        scale = levels[level]
        width, height = self.full_size
        if scale < 1.0:
            width, height = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
        identity = self.family.identity() if self.family is not None else None
        frame = self.family.frame() if self.family is not None else None
        return FrameRequest(
            camera=self.camera,
            width=width,
            height=height,
            time=self.time_value if self.session is not None and self.session.is_dynamic else None,
            identity=identity,
            frame=frame,
            mode=self.mode,
            background=self.background,
            generation=self._generation,
            level=level,
            final=level == len(levels) - 1,
            slice=self.family.slice_view() if self.family is not None else None,
            pose=self.family.pose() if self.family is not None else None,
        )

    def request_frame(self) -> None:
        """The view changed: render a preview now and refine once it stays still."""
        if self.session is None or self.camera is None or self._closing:
            return
        self._generation += 1
        self._arrived_level = -1
        self._moving = True
        self._submit(0)
        self._settle_timer.start(SETTLE_MS)

    def _submit(self, level: int) -> None:
        self._requested_level = level
        self.worker.request(self.frame_request(level))

    def _next_level(self, request: FrameRequest) -> int:
        """The level to refine a shown preview ``request`` to: the first of the current levels
        with more rows. The levels follow the auto preview scale, which the frame that arrived
        has just re-measured, so they may have changed since ``request`` was made (a cheap frame
        collapses them to full resolution only): the index ``request.level + 1`` may not exist."""
        levels = self._levels()
        for index, scale in enumerate(levels):
            if scale >= 1.0 or int(round(self.full_size[1] * scale)) > request.height:
                return index
        return len(levels) - 1

    def _on_settled(self) -> None:
        self._moving = False
        shown = self.last_result.request if self.last_result is not None else None
        if (
            shown is not None
            and shown.generation == self._generation
            and not shown.final
            and self._requested_level == self._arrived_level
        ):
            self._submit(self._next_level(shown))

    def _on_frame(self, result: FrameResult) -> None:
        if self._closing:
            return
        request = result.request
        if result.error is not None:
            self.statusBar().showMessage(f"render failed: {result.error}", 8000)
            if request.generation == self._generation:
                self._arrived_level = request.level
            return
        if request.generation < self._shown_generation:
            return  # an older view finished after a newer one was shown
        self._shown_generation = request.generation
        self.last_result = result
        self.shown_frame = result.image
        if result.seconds > 0:
            self.seconds_per_pixel = result.seconds / max(1, request.width * request.height)
        if request.final:
            self.current_frame = result.image
        self.view.set_image(result.image)
        now = time.perf_counter()
        self._frame_times.append(now)
        recent = [t for t in self._frame_times if now - t <= 1.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        state = "full" if request.final else "preview"
        self.fps_label.setText(
            f"{fps:5.1f} FPS · {1000 * result.seconds:6.1f} ms/frame · {request.width}×{request.height} {state}"
        )
        if request.generation == self._generation:
            self._arrived_level = request.level
            if not self._moving and not request.final and self._requested_level == request.level:
                self._submit(self._next_level(request))

    def wait_idle(self) -> bool:
        """Whether the current view is shown at full resolution (for tests and scripts)."""
        return (
            self.last_result is not None
            and self._shown_generation == self._generation
            and self.last_result.request.final
            and self.worker.idle()
        )

    # ================================================================== worker tasks
    def _run_in_worker(self, task, callback) -> None:
        self._task_counter += 1
        key = self._task_counter
        self._pending_callbacks[key] = callback
        self.worker.run_task(task, lambda result, error: self._bridge.task.emit(key, result, error))

    def _on_task_done(self, key, result, error) -> None:
        callback = self._pending_callbacks.pop(key, None)
        if callback is not None and not self._closing:
            callback(result, error)

    # ================================================================== snapshot, paths, video
    def save_snapshot(self, path: str | Path) -> Path:
        """Write the current full-resolution frame (else the frame on screen) as a PNG."""
        import imageio.v2 as imageio

        frame = self.current_frame if self.current_frame is not None else self.shown_frame
        if frame is None:
            raise ValueError("nothing rendered yet")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        imageio.imwrite(path, frame)
        self.statusBar().showMessage(f"saved {path}", 5000)
        return path

    def add_keyframe(self) -> None:
        if self.camera is None:
            return
        time_value = self.time_value if self.session is not None and self.session.is_dynamic else None
        self.keyframes.append(Keyframe.of(self.camera, time_value))
        self._update_keyframe_label()

    def clear_keyframes(self) -> None:
        self.keyframes = []
        self._update_keyframe_label()

    def _update_keyframe_label(self) -> None:
        self.keyframe_label.setText(f"{len(self.keyframes)} keyframe{'s' if len(self.keyframes) != 1 else ''}")

    def camera_path(self, frames: int | None = None):
        """The recorded path (keyframes interpolated) at full resolution."""
        if not self.keyframes:
            raise ValueError("no keyframes recorded (press 'Add keyframe' first)")
        width, height = self.full_size
        return interpolate_keyframes(self.keyframes, frames or self.frames_spin.value(), width, height)

    def save_camera_path(self, path: str | Path) -> Path:
        """Write the path as nerfstudio-layout JSON (what ``tensorfield render --path`` reads),
        with the keyframes under ``keyframes`` so the viewer can load and edit it again."""
        path = Path(path)
        save_camera_path(path, self.camera_path(), fps=self.fps_spin.value())
        data = json.loads(path.read_text())
        data["keyframes"] = [k.to_json() for k in self.keyframes]
        path.write_text(json.dumps(data, indent=1))
        self.statusBar().showMessage(f"saved {path}", 5000)
        return path

    def load_camera_path(self, path: str | Path) -> None:
        """Read a camera-path JSON; its keyframes (or, without them, its frames) become the keyframes."""
        camera_path = load_camera_path(path)  # validates; CameraPathError names the file
        data = json.loads(Path(path).read_text())
        if isinstance(data.get("keyframes"), list) and data["keyframes"]:
            self.keyframes = [Keyframe.from_json(k) for k in data["keyframes"]]
        else:
            cams = camera_path.cameras
            self.keyframes = []
            for i in range(len(cams)):
                c2w = cams.c2w[i].double().numpy()
                t = float(cams.times[i])
                self.keyframes.append(Keyframe(c2w[:, :3].copy(), c2w[:, 3].copy(), fov_from_focal(float(cams.fy[i]), cams.height), t if np.isfinite(t) else None))
        self.frames_spin.setValue(max(2, len(camera_path)))
        self._update_keyframe_label()
        first = self.keyframes[0]
        if self.camera is not None:
            self.set_camera(ViewCamera(first.rotation, first.position, self.camera.pivot_distance, first.fov_y, self.camera.up))

    def render_video(self, out: str | Path, on_done=None) -> None:
        """Render the recorded path with :func:`render_path` (the code of ``tensorfield render``)
        in the render thread; ``on_done(files, error)`` follows in the UI thread."""
        camera_path = self.camera_path()
        model = self.session.model
        background = torch.tensor(self.background, dtype=torch.float32)
        fps = self.fps_spin.value()
        self.statusBar().showMessage(f"rendering {len(camera_path)} frames to {out}…")

        def finished(files, error):
            if error is not None:
                self.show_error("Render failed", error)
            else:
                self.statusBar().showMessage(f"wrote {out}", 8000)
            if on_done is not None:
                on_done(files, error)

        self._run_in_worker(lambda: render_path(model, camera_path, background, out, fps=fps, progress=False), finished)

    # dialogs
    def _open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open run (a checkpoint, or any file in the run folder)", "", "Checkpoints (*.ckpt);;Run config (config.yaml);;All files (*)")
        if path:
            self.open_run(Path(path).parent if Path(path).name == "config.yaml" else path)

    def _snapshot_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save snapshot", "snapshot.png", "PNG (*.png)")
        if path:
            self._guard("Snapshot", lambda: self.save_snapshot(path))

    def _save_path_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save camera path", "camera_path.json", "JSON (*.json)")
        if path:
            self._guard("Save camera path", lambda: self.save_camera_path(path))

    def _load_path_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load camera path", "", "JSON (*.json)")
        if path:
            self._guard("Load camera path", lambda: self.load_camera_path(path))

    def _render_video_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Render camera path", "path.mp4", "Video (*.mp4)")
        if path:
            self._guard("Render video", lambda: self.render_video(path))

    def _guard(self, title: str, action) -> None:
        try:
            action()
        except Exception as err:  # shown, the window stays usable
            lines = str(err).strip().splitlines()
            self.show_error(title, lines[0] if lines else type(err).__name__)

    def show_error(self, title: str, message: str) -> None:
        """A non-blocking error dialog; the window stays usable."""
        if self.error_dialog is not None:
            self.error_dialog.close()
        dialog = QMessageBox(QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok, self)
        dialog.setModal(False)
        dialog.show()
        self.error_dialog = dialog

    # ================================================================== live training
    def start_training(self) -> None:
        if self.session is None or self.session.trainer is None:
            raise ValueError("live training needs a session built from a trainer")
        self.live = LiveTraining(self.session.trainer, self._bridge.progress.emit, self._bridge.finished.emit)
        self.training_box.show()
        self.training_state = "training"
        self.training_label.setText(f"step {self.session.trainer.step} / {self.session.trainer.config.steps}")
        self.live.start()

    def pause_training(self) -> None:
        if self.live is not None and self.live.alive:
            self.live.pause()
            self.training_state = "paused"
            self.pause_button.setEnabled(False)
            self.resume_button.setEnabled(True)

    def resume_training(self) -> None:
        if self.live is not None:
            self.live.resume()
            self.training_state = "training"
            self.pause_button.setEnabled(True)
            self.resume_button.setEnabled(False)

    def _on_training_progress(self, progress, snapshot) -> None:
        if self._closing:
            return
        self.last_progress = progress
        loss = "-" if progress.loss is None else f"{progress.loss:.4g}"
        psnr = "-" if progress.psnr is None else f"{progress.psnr:.2f} dB"
        rate = "" if progress.steps_per_s is None else f" · {progress.steps_per_s:.1f} it/s"
        self.training_label.setText(f"step {progress.step} / {progress.total}\nloss {loss} · PSNR {psnr}{rate}")
        self.worker.set_model(snapshot)
        if self.session is not None:
            self.session.model = snapshot
        self.request_frame()

    def _on_training_finished(self, summary, error, stopped) -> None:
        self.pause_button.setEnabled(False)
        self.resume_button.setEnabled(False)
        self.training_state = "stopped" if stopped else ("failed" if error else "finished")
        if error is not None and not self._closing:
            self.show_error("Training stopped", error)
        if not self._closing:
            text = self.training_label.text().split("\n")
            self.training_label.setText("\n".join(text[:2] + [self.training_state]))

    # ================================================================== closing
    def shutdown(self) -> None:
        """Stop playback, training and the render thread (idempotent)."""
        if self._closing:
            return
        self._closing = True
        self._settle_timer.stop()
        self._play_timer.stop()
        if self.live is not None:
            self.live.stop()
            self.training_state = self.live.outcome or self.training_state
        self.worker.stop()

    def closeEvent(self, event):
        self.shutdown()
        super().closeEvent(event)


# ------------------------------------------------------------------------------- entry points
def _application() -> QApplication:
    return QApplication.instance() or QApplication(sys.argv[:1])


def run_viewer(run: str | Path | None = None, trainer=None, live: bool = False, device: str | None = None) -> ViewerWindow:
    """Open the window (on ``run``, or on ``trainer``'s model, training it when ``live``) and run
    the Qt event loop until it is closed. Returns the closed window."""
    app = _application()
    session = session_from_trainer(trainer) if trainer is not None else None
    window = ViewerWindow(session, live=live)
    window.show()
    if run is not None:
        window.open_run(run, device)
    app.exec()
    window.shutdown()
    return window
