"""What the viewer shows, free of Qt: a model with the cameras and settings of its scene.

A :class:`ViewerSession` is built from a run folder or checkpoint (:func:`load_session`, the
same loader as ``tensorfield render``), from a live :class:`~tensorfield.engine.trainer.Trainer`
(:func:`session_from_trainer`), or from any :class:`~tensorfield.fields.base.Field` and cameras
(:func:`session_from_model`: tests, scripts, families without a scene).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tensorfield.app.viewer.camera import ViewCamera
from tensorfield.datasets.cameras import Cameras
from tensorfield.fields.base import CameraData, HasTime


@dataclass
class ViewerSession:
    """A model and what the viewer needs to look at it.

    Attributes:
        model: the field (any :class:`Field`; rendered through the engine's render service).
        name: shown in the title bar (run folder or checkpoint).
        method: registered method name (selects the family's controls).
        cameras: split name -> dataset cameras (for "snap to camera" and the default view).
        background: ``[3]`` default background colour.
        is_dynamic: show the time controls.
        center: ``[3]`` the point orbiting turns around by default (scene box centre).
        up: ``[3]`` world up for orbiting (mean up of the training cameras).
        trainer: the trainer when the session came from a run (live training, camera paths).
    """

    model: object
    name: str
    method: str
    cameras: dict[str, Cameras]
    background: torch.Tensor
    is_dynamic: bool
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    trainer: object | None = None

    @property
    def reference_cameras(self) -> Cameras | None:
        for split in ("train", "test", "val"):
            if split in self.cameras and len(self.cameras[split]) > 0:
                return self.cameras[split]
        return next(iter(self.cameras.values()), None)

    @property
    def resolution(self) -> tuple[int, int]:
        """Full render size: the dataset cameras' (width, height), else 256 x 256."""
        cams = self.reference_cameras
        return (cams.width, cams.height) if cams is not None else (256, 256)

    def camera_list(self) -> list[tuple[str, int]]:
        """``(split, index)`` of every dataset camera, train first."""
        order = sorted(self.cameras, key=lambda s: {"train": 0, "val": 1, "test": 2}.get(s, 3))
        return [(split, i) for split in order for i in range(len(self.cameras[split]))]

    def camera_time(self, split: str, index: int) -> float | None:
        value = float(self.cameras[split].times[index])
        return value if np.isfinite(value) else None

    def view_of(self, split: str, index: int) -> ViewCamera:
        """The viewer camera that reproduces dataset camera ``index`` of ``split``."""
        return ViewCamera.from_cameras(self.cameras[split], index, pivot=self.center, up=self.up)

    def default_view(self) -> ViewCamera:
        cams = self.reference_cameras
        if cams is None:
            return ViewCamera.looking_at(self.center + np.array([0.0, -4.0, 1.5]), self.center, self.up)
        split = next(s for s, c in self.cameras.items() if c is cams)
        return self.view_of(split, 0)


def mean_up(cameras: Cameras) -> np.ndarray:
    """The training cameras' mean up direction (``-y`` of the OpenCV frame), unit length."""
    up = -cameras.c2w[:, :, 1].double().mean(0).numpy()
    norm = np.linalg.norm(up)
    return up / norm if norm > 1e-9 else np.array([0.0, 0.0, 1.0])


def model_is_dynamic(model) -> bool:
    """Whether to show the time controls: the model has time (:class:`~tensorfield.fields.base.HasTime`)."""
    return isinstance(model, HasTime)


def session_from_model(
    model,
    cameras: dict[str, Cameras] | Cameras,
    background=(1.0, 1.0, 1.0),
    name: str = "model",
    method: str = "",
    is_dynamic: bool | None = None,
    center=None,
) -> ViewerSession:
    if isinstance(cameras, Cameras):
        cameras = {"train": cameras}
    reference = cameras["train"] if "train" in cameras else next(iter(cameras.values()), None)
    return ViewerSession(
        model=model,
        name=name,
        method=method,
        cameras=cameras,
        background=torch.as_tensor(background, dtype=torch.float32).reshape(3),
        is_dynamic=model_is_dynamic(model) if is_dynamic is None else is_dynamic,
        center=np.zeros(3) if center is None else np.asarray(center, dtype=np.float64),
        up=mean_up(reference) if reference is not None else np.array([0.0, 0.0, 1.0]),
    )


def session_from_trainer(trainer, name: str | None = None) -> ViewerSession:
    """The session of a trainer's model and data (cameras, box and background when the data
    is seen through cameras, :class:`~tensorfield.fields.base.CameraData`)."""
    data = trainer.data
    cameras, center, background = {}, np.zeros(3), (1.0, 1.0, 1.0)
    if isinstance(data, CameraData):
        cameras = data.split_cameras()
        center = data.scene_box().double().mean(0).numpy()
        background = data.background_color()
    session = session_from_model(
        trainer.model,
        cameras,
        background=background,
        name=name or str(trainer.run_dir),
        method=str(trainer.config.method),
        center=center,
    )
    session.trainer = trainer
    return session


def load_session(path: str | Path, device: str | None = None) -> ViewerSession:
    """Load a run folder or checkpoint the way ``tensorfield render`` does.

    Raises:
        the CLI's user errors (``CheckpointError``, ``ConfigError``, ``DatasetError``,
        ``CommandError``...) with one-line messages.
    """
    from tensorfield.engine.trainer import load_run

    trainer = load_run(path, device)
    trainer.model.eval()
    return session_from_trainer(trainer, name=str(path))
