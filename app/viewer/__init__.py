"""The desktop viewer (PyQt6): ``tensorfield view RUN`` and ``tensorfield train ... --view``.

Modules: :mod:`.camera` (camera math, keyframe paths; no Qt), :mod:`.worker` (the render
thread; no Qt), :mod:`.session` (a model with its scene's cameras; no Qt), :mod:`.live` (training
in a background thread; no Qt), :mod:`.families` (per-family controls hook) and :mod:`.window`
(the Qt window). Importing this package does not import Qt.
"""

from __future__ import annotations


def run_viewer(*args, **kwargs):
    """See :func:`tensorfield.app.viewer.window.run_viewer` (imports Qt on first call)."""
    from tensorfield.app.viewer.window import run_viewer as run

    return run(*args, **kwargs)
