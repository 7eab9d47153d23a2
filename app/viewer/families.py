"""Viewer controls that follow the capabilities a model implements.

Every model is viewed through the same render service (one
:class:`~tensorfield.fields.base.RenderRequest`: camera, time, identity, frame, mode). The common
controls (camera, render mode, background) are always there; the time slider appears for models
with :class:`~tensorfield.fields.base.HasTime` (the window checks it through the session), and
models with :class:`~tensorfield.fields.base.HasIdentities` (avatars) get an identity and a
frame chooser (:class:`IdentityControls`), whose values go into every request. Nothing here
looks at a method's name: a new family gets its controls by implementing the protocols.
"""

from __future__ import annotations

from collections.abc import Callable


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


class IdentityControls(FamilyControls):
    """Identity and frame choosers for a :class:`~tensorfield.fields.base.HasIdentities` model."""

    title = "Subject"

    def __init__(self, session) -> None:
        super().__init__(session)
        self.num_identities = int(session.model.num_identities())
        self.num_frames = int(session.model.num_frames())
        self._identity = 0
        self._frame = 0 if self.num_frames > 0 else None

    def set_identity(self, value: int) -> None:
        self._identity = min(max(int(value), 0), self.num_identities - 1)

    def set_frame(self, value: int) -> None:
        if self.num_frames > 0:
            self._frame = min(max(int(value), 0), self.num_frames - 1)

    def identity(self) -> int | None:
        return self._identity

    def frame(self) -> int | None:
        return self._frame

    def widget(self, on_change: Callable[[], None]):
        from PyQt6.QtWidgets import QFormLayout, QSpinBox, QWidget

        panel = QWidget()
        form = QFormLayout(panel)
        self.identity_spin = QSpinBox()
        self.identity_spin.setRange(0, max(self.num_identities - 1, 0))
        self.identity_spin.valueChanged.connect(lambda v: (self.set_identity(v), on_change()))
        form.addRow("identity", self.identity_spin)
        if self.num_frames > 0:
            self.frame_spin = QSpinBox()
            self.frame_spin.setRange(0, self.num_frames - 1)
            self.frame_spin.valueChanged.connect(lambda v: (self.set_frame(v), on_change()))
            form.addRow("frame", self.frame_spin)
        return panel


def controls_for(session) -> FamilyControls:
    """The controls of the session's model, from the protocols it implements."""
    from tensorfield.fields.base import HasIdentities

    return IdentityControls(session) if isinstance(session.model, HasIdentities) else FamilyControls(session)
