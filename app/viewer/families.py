"""Viewer controls that follow the capabilities a model implements.

Every model is viewed through the same render service (one
:class:`~tensorfield.fields.base.RenderRequest`: camera, time, identity, frame, mode). The common
controls (camera, render mode, background) are always there; the time slider appears for models
with :class:`~tensorfield.fields.base.HasTime` (the window checks it through the session), and
models with :class:`~tensorfield.fields.base.HasIdentities` (avatars) get an identity and a
frame chooser (:class:`IdentityControls`), whose values go into every request; those also
:class:`~tensorfield.fields.base.DrivenByPoses` get pose-sequence playback: a pose file (the
``poses.npz`` layout, e.g. another subject's motion, read as ``render --poses`` reads it), a pose
slider to scrub and play/pause, each shown pose going into the request as its ``pose``. Coordinate models
with :class:`~tensorfield.fields.base.ExportsSlices` (Einstein fields) get a slice mode
(:class:`SliceControls`): the frame is then the slice's colour map with a colour bar (a
:class:`~tensorfield.app.viewer.worker.SliceView` in the frame request), following the time slider;
models that also render views (the lensed black hole) switch between the two. Nothing here
looks at a method's name: a new family gets its controls by implementing the protocols.

A family's controls also say how its frames should start (:class:`ViewDefaults`): models whose
frames cost seconds on a CPU (lensed renders, curvature slices) start at a smaller full
resolution with the automatic preview scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tensorfield.app.viewer.worker import SliceView


@dataclass(frozen=True)
class ViewDefaults:
    """How the window starts on a family's model.

    Attributes:
        height: full-resolution height in pixels (``None``: the dataset cameras').
        auto_preview: start with the automatic preview scale (the largest that keeps the
            window's preview rate at the measured cost per pixel) instead of the fixed 0.25x.
    """

    height: int | None = None
    auto_preview: bool = False


class FamilyControls:
    """The default controls: none beyond the common ones.

    Args:
        session: the :class:`~tensorfield.app.viewer.session.ViewerSession` being shown.
    """

    title = ""

    def __init__(self, session) -> None:
        self.session = session

    def widget(self, on_change: Callable[[], None]):
        """A ``QWidget`` for the side panel (call ``on_change()`` when a value changes), or ``None``."""
        return

    def identity(self) -> int | None:
        """The identity to render (``None``: the model has none)."""
        return None

    def frame(self) -> int | None:
        """The pose / frame to render (``None``: the model has none)."""
        return None

    def pose(self):
        """An explicit :class:`~tensorfield.fields.base.BodyPose` to render (``None``: none)."""
        return None

    def slice_view(self) -> SliceView | None:
        """The slice to show instead of the camera's view (``None``: the camera's view)."""
        return None

    def view_defaults(self) -> ViewDefaults:
        """The resolution and preview settings to start with."""
        return ViewDefaults()


POSE_FPS = 10.0  # pose-sequence playback rate


class IdentityControls(FamilyControls):
    """Identity and frame choosers for a :class:`~tensorfield.fields.base.HasIdentities` model,
    and pose-sequence playback for one :class:`~tensorfield.fields.base.DrivenByPoses`.

    While a pose sequence is loaded, the shown pose (:meth:`pose`) replaces the frame's; the
    sequence is read again for each identity chosen (a root orientation pivots about that
    identity's rest root joint).
    """

    title = "Subject"

    def __init__(self, session) -> None:
        from tensorfield.fields.base import DrivenByPoses

        super().__init__(session)
        self.num_identities = int(session.model.num_identities())
        self.num_frames = int(session.model.num_frames())
        self._identity = 0
        self._frame = 0 if self.num_frames > 0 else None
        self.drives_poses = isinstance(session.model, DrivenByPoses)
        self.pose_path: str | None = None
        self.poses: list = []
        self.pose_index = 0

    # ------------------------------------------------------------------ state (no Qt)
    def set_identity(self, value: int) -> None:
        value = min(max(int(value), 0), self.num_identities - 1)
        if value != self._identity and self.pose_path is not None:
            self.poses = self._read_poses(self.pose_path, value)
        self._identity = value

    def set_frame(self, value: int) -> None:
        if self.num_frames > 0:
            self._frame = min(max(int(value), 0), self.num_frames - 1)

    def identity(self) -> int | None:
        return self._identity

    def frame(self) -> int | None:
        return self._frame

    def _read_poses(self, path: str, identity: int) -> list:
        from tensorfield.engine.render import load_pose_sequence

        return load_pose_sequence(self.session.model, identity, path)

    def load_poses(self, path) -> int:
        """Read a pose file for the current identity and show its first pose; returns the
        number of poses. A bad file raises the one-line error of ``render --poses`` and keeps
        what was loaded before."""
        if not self.drives_poses:
            raise ValueError(f"a {type(self.session.model).__name__} is not driven by skeleton poses")
        self.poses = self._read_poses(str(path), self._identity)
        self.pose_path = str(path)
        self.pose_index = 0
        return len(self.poses)

    def clear_poses(self) -> None:
        """Back to the frames' own poses."""
        self.pose_path, self.poses, self.pose_index = None, [], 0

    def set_pose_index(self, index: int) -> None:
        if self.poses:
            self.pose_index = min(max(int(index), 0), len(self.poses) - 1)

    def advance_pose(self) -> int:
        """The next pose of the sequence (after the last: the first again); returns its index."""
        if self.poses:
            self.pose_index = (self.pose_index + 1) % len(self.poses)
        return self.pose_index

    def pose(self):
        return self.poses[self.pose_index] if self.poses else None

    # ------------------------------------------------------------------ widgets
    def widget(self, on_change: Callable[[], None]):
        from PyQt6.QtWidgets import QFormLayout, QSpinBox, QWidget

        panel = QWidget()
        form = QFormLayout(panel)
        self.identity_spin = QSpinBox()
        self.identity_spin.setRange(0, max(self.num_identities - 1, 0))

        def identity_chosen(value: int) -> None:
            try:
                self.set_identity(value)
            except ValueError as err:  # the loaded file does not fit this identity
                self.clear_poses()
                self._sync_poses(str(err).splitlines()[0])
            on_change()

        self.identity_spin.valueChanged.connect(identity_chosen)
        form.addRow("identity", self.identity_spin)
        if self.num_frames > 0:
            self.frame_spin = QSpinBox()
            self.frame_spin.setRange(0, self.num_frames - 1)
            self.frame_spin.valueChanged.connect(lambda v: (self.set_frame(v), on_change()))
            form.addRow("frame", self.frame_spin)
        if self.drives_poses:
            self._pose_widgets(panel, form, on_change)
        return panel

    def _pose_widgets(self, panel, form, on_change: Callable[[], None]) -> None:
        from PyQt6.QtCore import Qt, QTimer
        from PyQt6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QSlider, QWidget

        row = QWidget(panel)
        buttons = QHBoxLayout(row)
        buttons.setContentsMargins(0, 0, 0, 0)
        self.poses_button = QPushButton("Poses…")
        self.pose_play_button = QPushButton("Play")
        self.pose_clear_button = QPushButton("Clear")
        for button in (self.poses_button, self.pose_play_button, self.pose_clear_button):
            buttons.addWidget(button)
        self.pose_slider = QSlider(Qt.Orientation.Horizontal)
        self.pose_status = QLabel("frames' own poses")
        self.pose_status.setWordWrap(True)
        self.pose_timer = QTimer(panel)
        self.pose_timer.setInterval(int(1000 / POSE_FPS))
        form.addRow("pose file", row)
        form.addRow("pose", self.pose_slider)
        form.addRow(self.pose_status)

        def play(playing: bool) -> None:
            playing = playing and bool(self.poses)
            self.pose_timer.start() if playing else self.pose_timer.stop()
            self.pose_play_button.setText("Pause" if playing else "Play")

        def tick() -> None:
            self.advance_pose()
            self._sync_poses()
            on_change()

        def choose() -> None:
            path, _ = QFileDialog.getOpenFileName(panel, "Pose sequence", "", "Pose files (*.npz)")
            if path:
                self.open_poses(path, on_change)

        def scrub(value: int) -> None:
            self.set_pose_index(value)
            self._sync_poses()
            on_change()

        def clear() -> None:
            play(False)
            self.clear_poses()
            self._sync_poses()
            on_change()

        self._play = play
        self.poses_button.clicked.connect(choose)
        self.pose_play_button.clicked.connect(lambda: play(not self.pose_timer.isActive()))
        self.pose_clear_button.clicked.connect(clear)
        self.pose_timer.timeout.connect(tick)
        self.pose_slider.valueChanged.connect(scrub)
        self._sync_poses()

    def open_poses(self, path, on_change: Callable[[], None]) -> bool:
        """The "Poses…" button's work: load ``path``, or show its one-line error in the panel."""
        from tensorfield.app.commands import USER_ERRORS

        try:
            self.load_poses(path)
        except USER_ERRORS + (ValueError,) as err:
            self._sync_poses(f"error: {str(err).splitlines()[0]}")
            return False
        self._sync_poses()
        on_change()
        return True

    def _sync_poses(self, message: str | None = None) -> None:
        """Slider range and position, play button and status line from the state."""
        if not hasattr(self, "pose_slider"):
            return
        self.pose_slider.blockSignals(True)
        self.pose_slider.setRange(0, max(len(self.poses) - 1, 0))
        self.pose_slider.setValue(self.pose_index)
        self.pose_slider.blockSignals(False)
        self.pose_slider.setEnabled(bool(self.poses))
        self.pose_play_button.setEnabled(bool(self.poses))
        if not self.poses and self.pose_timer.isActive():
            self._play(False)
        if message is None:
            message = f"pose {self.pose_index + 1} / {len(self.poses)} of {self.pose_path}" if self.poses else "frames' own poses"
        self.pose_status.setText(message)


SHOW_VIEW, SHOW_SLICE = "camera view", "slice"
OFFSET_STEPS = 200  # the offset slider's resolution across the box


class SliceControls(FamilyControls):
    """Slice mode for a coordinate model (:class:`~tensorfield.fields.base.ExportsSlices`).

    The quantity is any of the model's ``slice_components()`` (for Einstein fields the same names
    as ``export RUN slices``: metric components, ``det``, ``kretschmann``, ``ricci_scalar``,
    ``error_*``), optionally as ``log10 |value|``. The plane is the model's ``default_slice()``
    or, for models with :class:`~tensorfield.fields.base.HasSliceDomain`, the box's axis-aligned
    plane normal to the chosen axis at the chosen offset (:meth:`SliceDomain.axis_aligned`). Its
    resolution is the frame's height, so slices refine like camera views; its time is the time
    slider's.
    """

    title = "Field"

    def __init__(self, session) -> None:
        from tensorfield.fields.base import HasSliceDomain, RendersViews

        super().__init__(session)
        model = session.model
        self.components = tuple(model.slice_components())
        self.default = model.default_slice()
        self.component = self.default.component or self.components[0]
        self.log = False
        self.renders_views = isinstance(model, RendersViews)
        self.showing = SHOW_VIEW if self.renders_views else SHOW_SLICE
        self.domain = model.slice_domain() if isinstance(model, HasSliceDomain) else None
        self.normal: int | None = None
        self.offset = 0.0
        if self.domain is not None:
            spatial = self.spatial_axes()
            self.normal = spatial[-1]
            self.offset = float(self.default.origin[self.normal])

    # ------------------------------------------------------------------ state (no Qt)
    def spatial_axes(self) -> list[int]:
        """The axes a plane can be normal to (every coordinate but time)."""
        if self.domain is None:
            return []
        return [i for i in range(len(self.domain.coordinates)) if i != self.domain.time_axis]

    def set_showing(self, showing: str) -> None:
        if showing not in (SHOW_VIEW, SHOW_SLICE) or (showing == SHOW_VIEW and not self.renders_views):
            raise ValueError(f"cannot show '{showing}' for this model")
        self.showing = showing

    def set_component(self, name: str) -> None:
        if name not in self.components:
            raise ValueError(f"unknown slice component '{name}' (has: {', '.join(self.components)})")
        self.component = name

    def set_log(self, log: bool) -> None:
        self.log = bool(log)

    def offset_range(self) -> tuple[float, float]:
        """The chosen normal axis' extent in the box."""
        return float(self.domain.low[self.normal]), float(self.domain.high[self.normal])

    def set_normal(self, axis: int) -> None:
        """Slice normal to coordinate ``axis``, through the box's centre."""
        if axis not in self.spatial_axes():
            raise ValueError(f"axis {axis} is not a spatial axis of the slice domain")
        self.normal = int(axis)
        low, high = self.offset_range()
        self.offset = (low + high) / 2

    def set_offset(self, value: float) -> None:
        """The plane's coordinate along the normal axis (clamped to the box)."""
        low, high = self.offset_range()
        self.offset = min(max(float(value), low), high)

    def slice_request(self):
        """The :class:`~tensorfield.fields.base.SliceRequest` of the current choices."""
        import dataclasses

        plane = self.default if self.domain is None else self.domain.axis_aligned(self.normal, self.offset)
        return dataclasses.replace(plane, component=self.component)

    def slice_view(self) -> SliceView | None:
        if self.showing != SHOW_SLICE:
            return None
        return SliceView(self.slice_request(), self.log)

    def view_defaults(self) -> ViewDefaults:
        """Curvature slices (second derivatives of the network) and lensed renders (geodesics
        through it) take seconds per frame at 256 pixels on a CPU: start at 128 with the
        automatic preview scale."""
        return ViewDefaults(height=128, auto_preview=True)

    # ------------------------------------------------------------------ widgets
    def widget(self, on_change: Callable[[], None]):
        from PyQt6.QtCore import Qt
        from PyQt6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QSlider, QWidget

        panel = QWidget()
        form = QFormLayout(panel)
        self.show_combo = QComboBox()
        self.show_combo.addItems([SHOW_VIEW, SHOW_SLICE] if self.renders_views else [SHOW_SLICE])
        self.show_combo.setCurrentText(self.showing)
        self.show_combo.currentTextChanged.connect(lambda text: (self.set_showing(text), on_change()))
        form.addRow("Show", self.show_combo)
        self.quantity_combo = QComboBox()
        self.quantity_combo.addItems(list(self.components))
        self.quantity_combo.setCurrentText(self.component)
        self.quantity_combo.currentTextChanged.connect(lambda text: (self.set_component(text), on_change()))
        form.addRow("Quantity", self.quantity_combo)
        self.log_check = QCheckBox("log10 |value|")
        self.log_check.toggled.connect(lambda checked: (self.set_log(checked), on_change()))
        form.addRow(self.log_check)
        if self.domain is not None:
            names = self.domain.coordinates
            self.normal_combo = QComboBox()
            for axis in self.spatial_axes():
                others = [names[i] for i in self.spatial_axes() if i != axis]
                self.normal_combo.addItem(f"{names[axis]} ({'-'.join(others)} plane)", axis)
            self.normal_combo.setCurrentIndex(self.spatial_axes().index(self.normal))
            self.offset_slider = QSlider(Qt.Orientation.Horizontal)
            self.offset_slider.setRange(0, OFFSET_STEPS)
            self.offset_label = QLabel()

            def sync_offset() -> None:
                low, high = self.offset_range()
                fraction = 0.5 if high <= low else (self.offset - low) / (high - low)
                self.offset_slider.blockSignals(True)
                self.offset_slider.setValue(int(round(fraction * OFFSET_STEPS)))
                self.offset_slider.blockSignals(False)
                self.offset_label.setText(f"{names[self.normal]} = {self.offset:.4g}")

            def normal_chosen(index: int) -> None:
                self.set_normal(self.normal_combo.itemData(index))
                sync_offset()
                on_change()

            def offset_moved(value: int) -> None:
                low, high = self.offset_range()
                self.set_offset(low + (high - low) * value / OFFSET_STEPS)
                sync_offset()
                on_change()

            self.normal_combo.currentIndexChanged.connect(normal_chosen)
            self.offset_slider.valueChanged.connect(offset_moved)
            sync_offset()
            form.addRow("Normal", self.normal_combo)
            form.addRow(self.offset_label, self.offset_slider)
        return panel


def controls_for(session) -> FamilyControls:
    """The controls of the session's model, from the protocols it implements."""
    from tensorfield.fields.base import ExportsSlices, HasIdentities

    model = session.model
    if isinstance(model, HasIdentities):
        return IdentityControls(session)
    if isinstance(model, ExportsSlices):
        return SliceControls(session)
    return FamilyControls(session)
