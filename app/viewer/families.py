"""Per-family viewer controls: the extension point for model families with their own inputs.

Every family is viewed through the same render service (camera, time, identity, mode -> image).
A family that needs more than the common controls (camera, time, render mode, background)
registers a :class:`FamilyControls` subclass under its method name:

* **avatars** (planned): an identity chooser and a pose-sequence player; ``identity()`` returns
  the chosen subject, which the render service passes to ``render_view(..., identity=)``;
* **Einstein fields** (planned): a metric-component / curvature-scalar chooser and colour bar
  for a slice view at the slider's time (a new render mode of the service).

The families present now (TensoRF, 3D/4D Gaussians) need nothing beyond the common controls, so
they use the default, which adds no widget.
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


FAMILY_CONTROLS: dict[str, type[FamilyControls]] = {}
"""Method name -> controls class; a family adds one line here (see the module docstring)."""


def controls_for(session) -> FamilyControls:
    return FAMILY_CONTROLS.get(session.method, FamilyControls)(session)
