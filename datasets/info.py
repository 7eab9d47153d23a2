"""What a model learns about its training data at construction time (:class:`SceneInfo`).

It lives with the data, not the models: loaders and data sources build it, every model family
reads it (:mod:`tensorfield.fields.base` re-exports it), and nothing here imports a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class SceneInfo:
    """What a model needs to know about the scene at construction time.

    Attributes:
        aabb: ``[2, 3]`` scene bounding box (min, max corners).
        near, far: default ray distance range.
        is_dynamic: whether images carry different times.
        num_train_images: number of training images (per-image embeddings, etc.).
        points: optional ``[P, 3]`` initial point cloud (SfM points); ``points_rgb`` its colours.
        camera_centers: optional ``[C, 3]`` training camera positions (Gaussian models derive
            the scene extent from them, as 3DGS's ``getNerfppNorm``).
        source_format: the data layout it was loaded from (``"blender"``, ``"dnerf"``,
            ``"nerfstudio"``, ``"n3v"``; empty when not from a loader).
        white_background: the training targets are composited on white (3DGS resets opacities
            once more at the start of densification then, as the original's ``white_background``).
        frame_inputs: per-frame inputs of every frame (name -> ``[F, ...]``), for models driven
            by them (an avatar's skeleton poses); what :attr:`RenderRequest.frame` indexes.
        joint_names: names of the skeleton's joints in the order of the per-frame rotations
            (models driven by skeleton poses; empty otherwise), so that pose files naming their
            joints can be matched to the model.
        scene_transform: optional ``[4, 4]`` float64 similarity from the data's input frame to
            this (model) frame (:class:`tensorfield.datasets.normalize.SceneTransform`); exports
            map back with its inverse. ``None``: the data has no input frame of its own.
    """

    aabb: Tensor
    near: float
    far: float
    is_dynamic: bool = False
    num_train_images: int = 0
    points: Tensor | None = None
    points_rgb: Tensor | None = None
    camera_centers: Tensor | None = None
    source_format: str = ""
    white_background: bool = True
    frame_inputs: dict[str, Tensor] = field(default_factory=dict)
    scene_transform: Tensor | None = None
    joint_names: tuple[str, ...] = ()
