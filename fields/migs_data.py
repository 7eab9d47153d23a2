"""Training data of MIGS: a multi-identity avatar capture served as (identity, frame) views.

:func:`migs_data` (the registry's data factory) wraps an
:class:`~tensorfield.datasets.avatars.AvatarDataset` (``load_avatars`` of ``config.data``) as
:class:`~tensorfield.fields.base.TrainingData` and
:class:`~tensorfield.fields.base.CameraData`.

**Identities.** The model's identity ``k`` is row ``k`` of the identity factor. Identities with
frames in the ``train`` split come first, in ``avatars.json`` order, then the others (held out:
``novel_identity`` ...), so the first held-out identity is the row a later
:meth:`~tensorfield.fields.migs.MIGS.add_identity` appends. The order does not depend on
``train_split`` (the split batches come from: ``novel_identity`` when fitting an added row);
only a data set without a ``train`` split orders by ``train_split``.

**Fitting on top of a trained model** (``identity_rows``, written by ``tensorfield
fit-identity``): the model's rows keep their names and order, whether the data shows them or not;
the subjects with frames in ``train_split`` that are not among them follow (the new rows), then
the rest. Batches come only from the new rows' frames (:meth:`AvatarTrainingData.training_frames`)
and the splits that show them are evaluated first.

**Frames.** Every frame of every identity has one global index (identity-major, identities in
model order, each identity's frames in sequence order): what
:attr:`~tensorfield.fields.base.RenderRequest.frame` and ``extras["frame"]`` hold. The model
learns the per-frame inputs from :attr:`SceneInfo.frame_inputs` (all ``[F, ...]``):

============== ================= ==========================================================
name           shape             meaning
============== ================= ==========================================================
rotations      ``[F, J, 3]`` f64 axis-angle joint rotations (:mod:`tensorfield.fields.skeleton`)
root           ``[F, 4, 4]`` f64 world-from-body transform
identity       ``[F]`` long      model identity of the frame's subject
local_frame    ``[F]`` long      index of the frame in its subject's sequence
in_training    ``[F]`` bool      the frame is in the training split
rest_joints    ``[F, J, 3]`` f64 rest joints of the frame's subject (its skeleton)
parents        ``[F, J]`` long   the kinematic tree (the same for every subject)
============== ================= ==========================================================

(The skeleton travels per frame because ``SceneInfo`` has no per-identity field; see the
report of issue 16.)

**Batches** (:class:`AvatarViewSource`): ``batch_size`` distinct views of the training split,
drawn with the trainer's generator, as an :class:`~tensorfield.fields.base.ImageBatch` with
``alphas`` = the data's masks (``None`` without masks) and ``extras`` ``identity [B]``, ``frame
[B]``, ``rotations [B, J, 3]`` and ``root [B, 4, 4]``.

**Background.** ``data`` (default): the colour of ``avatars.json``, the images as stored;
``white`` / ``black``: recomposited with the masks; ``random``: a new random colour per batch
(training only; evaluation uses the data's).

**Evaluation** (:meth:`AvatarTrainingData.evaluate`): every view of a split rendered through
:func:`tensorfield.engine.render.render_frame` at its own identity and frame (PSNR, SSIM, LPIPS
when available; ``NNN.png`` renders). Splits whose identity has no row in the model (held-out
identities before fitting) are a one-line :class:`~tensorfield.engine.data.DataError`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tensorfield.datasets.avatars import AVATARS_FILE, AvatarDataset, load_avatars
from tensorfield.datasets.cameras import Cameras
from tensorfield.datasets.errors import DatasetError
from tensorfield.datasets.zju_mocap import is_zju_mocap, load_zju_mocap
from tensorfield.fields.base import (
    Field,
    HasIdentities,
    ImageBatch,
    RenderRequest,
    SceneInfo,
    StatelessSource,
)
from torch import Tensor

BACKGROUND_CHOICES = ("data", "white", "black", "random")
FRAME_INPUTS = ("rotations", "root", "identity", "local_frame", "in_training", "rest_joints", "parents")


def _concat_cameras(cameras: list[Cameras]) -> Cameras:
    first = cameras[0]
    cat = lambda name: torch.cat([getattr(c, name) for c in cameras])
    return Cameras(c2w=cat("c2w"), fx=cat("fx"), fy=cat("fy"), cx=cat("cx"), cy=cat("cy"),
                   width=first.width, height=first.height, times=cat("times"))  # fmt: skip


def _downscaled(images: Tensor, factor: int) -> Tensor:
    """``[T, H, W, C]`` averaged over ``factor x factor`` blocks (exact for the camera scaling)."""
    if factor == 1:
        return images
    return F.avg_pool2d(images.permute(0, 3, 1, 2), factor).permute(0, 2, 3, 1).contiguous()


class AvatarViewSource(StatelessSource):
    """Random distinct views of :meth:`AvatarTrainingData.training_frames` (module docstring);
    stateless: every batch comes from the trainer's checkpointed generator."""

    def __init__(self, data: AvatarTrainingData, device: torch.device, random_background: bool) -> None:
        self.data = data
        self.frames = data.training_frames()
        if self.frames.numel() == 0:
            raise DatasetError(data.root / AVATARS_FILE, f"split {data.train_split!r} has no frames to train on", root=data.root)
        self.device = device
        self.random_background = random_background
        if random_background and not data.has_masks:
            raise DatasetError(data.root / AVATARS_FILE, "background=random needs masks (masks/ or RGBA images)", root=data.root)

    def sample(self, batch_size: int, generator: torch.Generator) -> ImageBatch:
        picks = torch.randperm(len(self.frames), generator=generator)[: min(batch_size, len(self.frames))]
        frames = self.frames[picks]
        images, masks, cameras = self.data.views(frames)
        background = self.data.background
        if self.random_background:
            new = torch.rand(3, generator=generator)
            images = (images + (1.0 - masks)[..., None] * (new - background)).clamp(0.0, 1.0)
            background = new
        table = self.data.frame_table
        extras = {
            "identity": table["identity"][frames],
            "frame": frames,
            "rotations": table["rotations"][frames],
            "root": table["root"][frames],
        }
        return ImageBatch(
            cameras=cameras.to(self.device),
            images=images.to(self.device),
            alphas=masks.to(self.device) if masks is not None else None,
            background=background.to(self.device),
            indices=picks.to(self.device),
            extras={name: value.to(self.device) for name, value in extras.items()},
        )


class AvatarTrainingData:
    """A multi-identity capture as training data (module docstring).

    Args:
        dataset: the loaded capture.
        background: ``data``, ``white``, ``black`` or ``random``.
        downscale: integer factor the images are averaged down by (cameras scaled to match).
        train_split: the split batches come from (``novel_identity`` to fit an added identity).

    Raises:
        DatasetError: subjects whose skeletons have other trees, images of different sizes, a
            training split that names no frames, a background that needs masks the data lacks.
    """

    def __init__(self, dataset: AvatarDataset, *, background: str = "data", downscale: int = 1, train_split: str = "train",
                 identity_rows: list[str] | tuple[str, ...] = ()) -> None:  # fmt: skip
        if background not in BACKGROUND_CHOICES:
            raise ValueError(f"background must be one of {', '.join(BACKGROUND_CHOICES)}, got {background!r}")
        self.dataset = dataset
        self.root = dataset.root
        self._lpips: tuple[str, Any] | None = None
        index = self.root / AVATARS_FILE
        if train_split not in dataset.splits:
            raise DatasetError(index, f"no split {train_split!r} to train on (has: {', '.join(dataset.splits) or 'none'})", root=self.root)
        if not any(dataset.splits[train_split].values()):
            raise DatasetError(index, f"split {train_split!r} names no frames", root=self.root)
        self.known_rows = [str(name) for name in identity_rows]
        if len(set(self.known_rows)) != len(self.known_rows):
            raise DatasetError(index, f"identity_rows names {next(n for n in self.known_rows if self.known_rows.count(n) > 1)!r} twice", root=self.root)
        if self.known_rows:
            # fitting new identities on top of a trained model: its rows first, then the subjects
            # with frames in the fit split (the new rows), then the rest (no rows)
            self.model_split = train_split
            others = [name for name in dataset.identities if name not in self.known_rows]
            new = [name for name in others if dataset.splits[train_split].get(name)]
            if not new:
                held = {name: [split for split, per in dataset.splits.items() if per.get(name)] for name in others}
                hint = "; ".join(f"{name} has frames in {', '.join(splits) or 'no split'}" for name, splits in held.items())
                hint = f"; {hint} (choose the split with train_split=SPLIT, fit-identity --split SPLIT)" if hint else ""
                raise DatasetError(index, f"split {train_split!r} shows no identity the model lacks (it has {', '.join(self.known_rows)}){hint}", root=self.root)
            self.identity_names = self.known_rows + new + [name for name in others if name not in new]
            self.new_identities = new
        else:
            self.new_identities = []
            # the model's rows: the subjects of the `train` split, whatever split the batches come from
            self.model_split = "train" if any(dataset.splits.get("train", {}).values()) else train_split
            trained = [name for name in dataset.identities if dataset.splits[self.model_split].get(name)]
            self.identity_names = trained + [name for name in dataset.identities if name not in trained]
        self.train_split = train_split
        self.random_background = background == "random"
        self.has_masks = all(seq.masks is not None for seq in dataset.sequences.values())
        data_background = torch.tensor(dataset.background, dtype=torch.float32)
        wanted = {"white": torch.ones(3), "black": torch.zeros(3)}.get(background, data_background)
        recomposite = not torch.equal(wanted, data_background)
        if recomposite and not self.has_masks:
            raise DatasetError(index, f"background={background} needs masks to recomposite the images (the data is on {dataset.background})", root=self.root)
        self.background = wanted
        present = [name for name in self.identity_names if name in dataset.sequences]
        first = dataset.sequences[present[0]]
        parents = first.skeleton.parents
        self.joint_names = tuple(first.skeleton.names)
        self.images: list[Tensor] = []
        self.masks: list[Tensor | None] = []
        self.cameras: list[Cameras] = []
        columns: dict[str, list[Tensor]] = {name: [] for name in FRAME_INPUTS}
        training = dataset.splits[self.model_split]
        size = None
        for k, name in enumerate(self.identity_names):
            if name not in dataset.sequences:  # a row of the fitted model this data does not show
                self.images.append(torch.zeros(0))
                self.masks.append(None)
                self.cameras.append(None)
                continue
            sequence = dataset.sequences[name]
            folder = self.root / name
            if sequence.skeleton.parents != parents:
                raise DatasetError(folder / "skeleton.json", f"parents {list(sequence.skeleton.parents)} differ from {present[0]!r}'s {list(parents)} (MIGS shares one skinning tree)", root=self.root)
            images, masks, cameras = sequence.images, sequence.masks, sequence.cameras
            if downscale > 1:
                if cameras.width % downscale or cameras.height % downscale:
                    raise DatasetError(folder, f"images are {cameras.width}x{cameras.height}, not divisible by downscale={downscale}", root=self.root)
                images = _downscaled(images, downscale)
                masks = _downscaled(masks[..., None], downscale)[..., 0] if masks is not None else None
                cameras = cameras.scaled(1.0 / downscale)
            if recomposite:
                images = (images + (1.0 - masks)[..., None] * (wanted - data_background)).clamp(0.0, 1.0)
            if size is not None and (cameras.width, cameras.height) != size:
                raise DatasetError(folder / "cameras.json", f"images are {cameras.width}x{cameras.height} but {present[0]!r}'s are {size[0]}x{size[1]}", root=self.root)
            size = (cameras.width, cameras.height)
            self.images.append(images)
            self.masks.append(masks)
            self.cameras.append(cameras)
            count = len(sequence)
            in_training = torch.zeros(count, dtype=torch.bool)
            in_training[list(training.get(name, []))] = True
            columns["rotations"].append(sequence.rotations.double())
            columns["root"].append(sequence.root.double())
            columns["identity"].append(torch.full((count,), k, dtype=torch.long))
            columns["local_frame"].append(torch.arange(count))
            columns["in_training"].append(in_training)
            columns["rest_joints"].append(sequence.skeleton.rest_joints.double().expand(count, -1, -1))
            columns["parents"].append(torch.tensor(parents, dtype=torch.long).expand(count, -1))
        self.frame_table: dict[str, Tensor] = {name: torch.cat(values).contiguous() for name, values in columns.items()}
        lengths = torch.tensor([len(dataset.sequences[name]) if name in dataset.sequences else 0 for name in self.identity_names])
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])

    # ------------------------------------------------------------------ frames and views
    @property
    def num_frames(self) -> int:
        return int(self.frame_table["identity"].shape[0])

    def global_frame(self, identity: int | str, local: int) -> int:
        """The global index of frame ``local`` of ``identity`` (model index or name)."""
        k = self.identity_names.index(identity) if isinstance(identity, str) else int(identity)
        return int(self.offsets[k]) + int(local)

    def split_frames(self, split: str) -> Tensor:
        """``[V]`` global frame indices of ``split``, identity-major in model order."""
        if split not in self.dataset.splits:
            from tensorfield.engine.data import DataError

            raise DataError(f"the avatars have no '{split}' split (has: {', '.join(self.dataset.splits) or 'none'})")
        per = self.dataset.splits[split]
        frames = [self.global_frame(k, i) for k, name in enumerate(self.identity_names) for i in per.get(name, [])]
        return torch.tensor(frames, dtype=torch.long)

    def views(self, frames: Tensor) -> tuple[Tensor, Tensor | None, Cameras]:
        """``(images [B, H, W, 3], masks [B, H, W] or None, cameras)`` of global ``frames``."""
        identity, local = self.frame_table["identity"][frames], self.frame_table["local_frame"][frames]
        pairs = list(zip(identity.tolist(), local.tolist()))
        images = torch.stack([self.images[k][i] for k, i in pairs])
        masks = torch.stack([self.masks[k][i] for k, i in pairs]) if self.has_masks else None
        cameras = _concat_cameras([self.cameras[k][i] for k, i in pairs])
        return images.float(), (masks.float() if masks is not None else None), cameras

    # ------------------------------------------------------------------ TrainingData
    def scene_info(self) -> SceneInfo:
        """Box of the posed joints (padded by a quarter of the body size), the training cameras'
        centres and the per-frame inputs (module docstring)."""
        from tensorfield.fields.skeleton import Skeleton

        joints = []
        for name in self.identity_names:
            if name not in self.dataset.sequences:
                continue
            sequence = self.dataset.sequences[name]
            skeleton = Skeleton(sequence.skeleton.parents, sequence.skeleton.rest_joints)
            joints.append(skeleton.forward_kinematics(sequence.rotations.double(), sequence.root.double()).joints.reshape(-1, 3))
        joints = torch.cat(joints)
        low, high = joints.min(0).values, joints.max(0).values
        pad = 0.25 * float((high - low).max())
        aabb = torch.stack([low - pad, high + pad]).float()
        train = self.split_frames(self.train_split)
        _, _, cameras = self.views(train)
        centres = cameras.c2w[:, :, 3].double()
        distance = (centres[:, None, :] - joints[None].mean(1, keepdim=True)).norm(dim=-1)
        near = max(float(distance.min()) - 2.0 * pad, 1e-2)
        return SceneInfo(
            aabb=aabb, near=near, far=float(distance.max()) + 2.0 * pad, num_train_images=len(train),
            camera_centers=centres.float(), source_format="avatars",
            white_background=bool(torch.equal(self.background, torch.ones(3))),
            frame_inputs={name: value.clone() for name, value in self.frame_table.items()},
            joint_names=self.joint_names,
        )

    def training_frames(self) -> Tensor:
        """``[V]`` global frames batches come from: the ``train_split`` frames, only those of the
        new identities when fitting on top of a trained model (``identity_rows``)."""
        frames = self.split_frames(self.train_split)
        return frames[self.frame_table["identity"][frames] >= len(self.known_rows)]

    def batch_source(self, model: Field, device: torch.device) -> AvatarViewSource:
        return AvatarViewSource(self, device, self.random_background)

    def eval_splits(self) -> tuple[str, ...]:
        """``novel_pose`` first (the end-of-training evaluation), then the others present. When
        fitting new identities (``identity_rows``), the splits that show them come first, the fit
        split after the others (``novel_identity_pose`` before ``novel_identity``)."""
        order = ("novel_pose", self.train_split, "train", "novel_identity", "novel_identity_pose")
        present = [name for name in order if name in self.dataset.splits]
        present += [name for name in self.dataset.splits if name not in present]
        if self.known_rows:
            shows = [name for name in present if set(self.new_identities) & {n for n, f in self.dataset.splits[name].items() if f}]
            first = [name for name in shows if name != self.train_split] + [self.train_split]
            present = first + [name for name in present if name not in first]
        return tuple(dict.fromkeys(present))

    def frame_camera(self, identity: int | None = None, frame: int | None = None) -> Cameras:
        """The camera of global ``frame``, else of ``identity``'s first frame, else of frame 0
        (:class:`~tensorfield.fields.base.FrameCameraData`)."""
        from tensorfield.engine.data import DataError

        if frame is None:
            owned = (self.frame_table["identity"] == int(identity)).nonzero() if identity is not None else None
            frame = int(owned[0]) if owned is not None and len(owned) else 0
        if not 0 <= frame < self.num_frames:
            raise DataError(f"frame {frame} out of range (the data has {self.num_frames} frames)")
        return self.views(torch.tensor([frame]))[2]

    def evaluate(self, model: Field, split: str, out_dir: Path | None, max_items: int = 0) -> dict[str, Any]:
        import imageio.v2 as imageio
        from tensorfield.engine.data import DataError
        from tensorfield.engine.metrics import load_lpips, psnr, ssim
        from tensorfield.engine.render import colorize_depth, render_frame, to_uint8

        frames = self.split_frames(split)
        if max_items > 0:
            frames = frames[:max_items]
        identities = self.frame_table["identity"][frames]
        known = int(model.num_identities()) if isinstance(model, HasIdentities) else 1
        if len(frames) and int(identities.max()) >= known:
            k = int(identities.max())
            raise DataError(f"split '{split}' shows identity {self.identity_names[k]!r} (row {k}) but the model has {known} identities: fit it first (tensorfield fit-identity)")
        device = next(iter(model.parameters())).device
        if self._lpips is None or self._lpips[0] != str(device):
            self._lpips = (str(device), load_lpips(device))  # the scorer is None unless its weights are local
        lpips = self._lpips[1]
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        per_image = []
        for position, frame in enumerate(frames.tolist()):
            images, masks, cameras = self.views(torch.tensor([frame]))
            k = int(self.frame_table["identity"][frame])
            tick = time.perf_counter()
            output = render_frame(model, RenderRequest(cameras, 0, self.background, identity=k, frame=frame))
            seconds = time.perf_counter() - tick
            prediction = output.rgb.detach().float().clamp(0.0, 1.0).cpu()
            target = images[0]
            record = {
                "index": position, "identity": self.identity_names[k], "frame": int(self.frame_table["local_frame"][frame]),
                "psnr": psnr(prediction, target), "ssim": ssim(prediction, target),
                "lpips": lpips(prediction, target) if lpips is not None else None, "render_s": seconds,
            }  # fmt: skip
            if masks is not None:
                record["mask_l1"] = float((output.alpha.detach().float().cpu() - masks[0]).abs().mean())
            per_image.append(record)
            if out_dir is not None:
                imageio.imwrite(out_dir / f"{position:03d}.png", to_uint8(prediction))
                imageio.imwrite(out_dir / f"{position:03d}_depth.png", colorize_depth(output.depth, output.alpha))

        def mean(key: str) -> float | None:
            values = [r[key] for r in per_image if r.get(key) is not None]
            return float(np.mean(values)) if values else None

        return {"num_images": len(per_image), "psnr": mean("psnr"), "ssim": mean("ssim"), "lpips": mean("lpips"),
                "mask_l1": mean("mask_l1"), "render_s": mean("render_s"), "per_image": per_image}  # fmt: skip

    # ------------------------------------------------------------------ CameraData
    def split_cameras(self) -> dict[str, Cameras]:
        names = [self.train_split] + [s for s in self.dataset.splits if s != self.train_split]
        out = {}
        for name in names:
            frames = self.split_frames(name)
            if len(frames):
                out[name] = self.views(frames)[2]
        return out

    def scene_box(self) -> Tensor:
        return self.scene_info().aabb

    def background_color(self) -> Tensor:
        return self.background.clone()


def migs_data(config, path: str | None = None, scene=None) -> AvatarTrainingData:
    """The registry's data factory: ``config.data`` (or ``path``) loaded with
    :func:`~tensorfield.datasets.avatars.load_avatars` (a folder with ``avatars.json``; SMPL
    skeletons read with ``smpl_model_path``) or, detected by its ``annots.npy``, with
    :func:`~tensorfield.datasets.zju_mocap.load_zju_mocap` (the ``zju_*`` options; images averaged
    down by ``downscale`` while loading), or ``scene`` (an already loaded
    :class:`~tensorfield.datasets.avatars.AvatarDataset`), as :class:`AvatarTrainingData`.

    Raises:
        ConfigError: no data path.
        DatasetError: from the loader or :class:`AvatarTrainingData` (one line naming the file).
    """
    from tensorfield.engine.config import ConfigError

    downscale = int(config.downscale)
    if scene is None:
        location = path or config.data
        if not location:
            raise ConfigError("no training data: pass --data PATH (an avatars folder, e.g. from tensorfield.datasets.synthetic_avatars.make_avatars)")
        identities = list(config.identities) or None
        if not (Path(location) / AVATARS_FILE).is_file() and is_zju_mocap(location):
            # averaged down while loading (ZJU frames are 1024x1024), not again below
            scene = load_zju_mocap(
                location, camera=int(config.zju_camera), train_frames=list(config.zju_train_frames),
                novel_pose_frames=list(config.zju_novel_pose_frames), novel_view_cameras=list(config.zju_novel_view_cameras),
                novel_view_frames=list(config.zju_novel_view_frames), held_out=list(config.zju_held_out), identities=identities,
                smpl_model_path=config.smpl_model_path or None, gender=config.smpl_gender, downscale=downscale,
                background=(1.0, 1.0, 1.0) if config.background == "white" else (0.0, 0.0, 0.0),
            )  # fmt: skip
            downscale = 1
        else:
            scene = load_avatars(location, identities, smpl_model_path=config.smpl_model_path or None)
    elif not isinstance(scene, AvatarDataset):
        raise ConfigError(f"method {config.method}: expected an AvatarDataset scene, got a {type(scene).__name__}")
    elif list(config.identities):
        kept = list(config.identities)
        scene = dataclasses.replace(
            scene, sequences={n: s for n, s in scene.sequences.items() if n in kept},
            splits={split: {n: f for n, f in per.items() if n in kept} for split, per in scene.splits.items()},
        )  # fmt: skip
    return AvatarTrainingData(scene, background=config.background, downscale=downscale, train_split=config.train_split,
                              identity_rows=list(config.identity_rows))  # fmt: skip
