"""One camera model for the whole package.

Convention (documented once, converted to at load time by every loader):

* **Intrinsics**: pinhole ``fx, fy, cx, cy`` in pixels, image ``width`` x ``height``. Pixel
  ``(u, v)`` (column, row) covers ``[u, u+1) x [v, v+1)``; its centre is ``(u + 0.5, v + 0.5)``.
* **Extrinsics**: camera-to-world ``c2w`` (3x4, rotation | translation) in the **OpenCV**
  camera frame: +x right, +y down, +z forward (the camera looks along +z). This is gsplat's and
  COLMAP's convention. Blender / nerfstudio / OpenGL poses (+y up, looking down -z) are converted
  by flipping the camera's y and z axes: ``c2w_cv = c2w_gl @ diag(1, -1, -1, 1)``.
* **Rays**: ``origins`` are camera centres, ``directions`` are unit-norm world vectors, so a ray
  parameter ``t`` is a Euclidean distance and "depth" in this package means distance along the
  ray (not z-depth) unless a function says otherwise.
* **Time**: every camera carries a time in [0, 1] (``nan`` = static / no time).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """Convert camera-to-world poses from the OpenGL/Blender to the OpenCV camera frame.

    Args:
        c2w: ``[..., 3 or 4, 4]`` poses whose cameras look down -z with +y up.

    Returns:
        Poses of the same shape whose cameras look down +z with +y down.
    """
    flip = torch.tensor([1.0, -1.0, -1.0], dtype=c2w.dtype, device=c2w.device)
    out = c2w.clone()
    out[..., :3, :3] = c2w[..., :3, :3] * flip
    return out


@dataclass
class Cameras:
    """A batch of pinhole cameras sharing one image size.

    Attributes:
        c2w: ``[N, 3, 4]`` camera-to-world, OpenCV frame.
        fx, fy, cx, cy: ``[N]`` intrinsics in pixels.
        width, height: image size in pixels (shared by the batch).
        times: ``[N]`` normalised time in [0, 1]; ``nan`` for static captures.
    """

    c2w: Tensor
    fx: Tensor
    fy: Tensor
    cx: Tensor
    cy: Tensor
    width: int
    height: int
    times: Tensor

    def __post_init__(self) -> None:
        n = self.c2w.shape[0]
        if self.c2w.shape[1:] != (3, 4):
            raise ValueError(f"c2w must be [N, 3, 4], got {tuple(self.c2w.shape)}")
        for name in ("fx", "fy", "cx", "cy", "times"):
            value = getattr(self, name)
            if value.shape != (n,):
                raise ValueError(f"{name} must be [{n}], got {tuple(value.shape)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_fov(
        cls,
        c2w: Tensor,
        width: int,
        height: int,
        fov_x: float,
        times: Tensor | None = None,
    ) -> Cameras:
        """Cameras with the principal point at the image centre and a horizontal FOV (radians)."""
        c2w = c2w.reshape(-1, *c2w.shape[-2:])[:, :3, :4].float()
        n = c2w.shape[0]
        focal = 0.5 * width / torch.tan(torch.tensor(0.5 * fov_x, dtype=torch.float64))
        full = lambda v: torch.full((n,), float(v))
        return cls(
            c2w=c2w,
            fx=full(focal),
            fy=full(focal),
            cx=full(width / 2.0),
            cy=full(height / 2.0),
            width=int(width),
            height=int(height),
            times=times.float() if times is not None else torch.full((n,), float("nan")),
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index) -> Cameras:
        """Select cameras by int, slice, list or tensor index (always returns a batch)."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return replace(
            self,
            c2w=self.c2w[index],
            fx=self.fx[index],
            fy=self.fy[index],
            cx=self.cx[index],
            cy=self.cy[index],
            times=self.times[index],
        )

    def to(self, device: torch.device | str) -> Cameras:
        return replace(
            self,
            c2w=self.c2w.to(device),
            fx=self.fx.to(device),
            fy=self.fy.to(device),
            cx=self.cx.to(device),
            cy=self.cy.to(device),
            times=self.times.to(device),
        )

    @property
    def is_dynamic(self) -> bool:
        return bool(torch.isfinite(self.times).any())

    def scaled(self, factor: float) -> Cameras:
        """Cameras for images resized by ``factor`` (e.g. 0.5 halves the resolution).

        Pixel-centre convention makes this exact: a pixel edge at ``x`` maps to ``x * factor``.
        """
        width = int(round(self.width * factor))
        height = int(round(self.height * factor))
        sx, sy = width / self.width, height / self.height
        return replace(
            self,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=self.cx * sx,
            cy=self.cy * sy,
            width=width,
            height=height,
        )

    def intrinsics_matrix(self) -> Tensor:
        """``[N, 3, 3]`` K matrices."""
        n = len(self)
        K = torch.zeros(n, 3, 3, dtype=self.fx.dtype, device=self.fx.device)
        K[:, 0, 0], K[:, 1, 1] = self.fx, self.fy
        K[:, 0, 2], K[:, 1, 2] = self.cx, self.cy
        K[:, 2, 2] = 1.0
        return K

    def world_to_camera(self) -> Tensor:
        """``[N, 4, 4]`` world-to-camera (OpenCV) matrices, gsplat's ``viewmats``."""
        R = self.c2w[:, :, :3]
        t = self.c2w[:, :, 3:]
        w2c = torch.zeros(len(self), 4, 4, dtype=self.c2w.dtype, device=self.c2w.device)
        w2c[:, :3, :3] = R.transpose(1, 2)
        w2c[:, :3, 3:] = -R.transpose(1, 2) @ t
        w2c[:, 3, 3] = 1.0
        return w2c

    # ------------------------------------------------------------------ rays
    def generate_rays(self, index: int, pixels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Rays of camera ``index`` through pixel centres.

        Args:
            index: which camera.
            pixels: optional ``[..., 2]`` (u, v) integer pixel coordinates; default all pixels.

        Returns:
            ``origins, directions``: ``[H, W, 3]`` each (or ``[..., 3]`` for ``pixels``);
            directions have unit norm.
        """
        device = self.c2w.device
        if pixels is None:
            v, u = torch.meshgrid(
                torch.arange(self.height, device=device, dtype=torch.float32),
                torch.arange(self.width, device=device, dtype=torch.float32),
                indexing="ij",
            )
        else:
            u = pixels[..., 0].to(torch.float32)
            v = pixels[..., 1].to(torch.float32)
        x = (u + 0.5 - self.cx[index]) / self.fx[index]
        y = (v + 0.5 - self.cy[index]) / self.fy[index]
        dirs_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)
        rotation = self.c2w[index, :, :3]
        directions = dirs_cam @ rotation.T
        directions = directions / directions.norm(dim=-1, keepdim=True)
        origins = self.c2w[index, :, 3].expand_as(directions)
        return origins.contiguous(), directions

    def generate_all_rays(self) -> tuple[Tensor, Tensor]:
        """Rays of every camera, ``[N, H, W, 3]`` origins and unit directions."""
        origins, directions = zip(*(self.generate_rays(i) for i in range(len(self))))
        return torch.stack(origins), torch.stack(directions)


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """Camera-to-world (OpenCV frame, ``[3, 4]``) of a camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that should appear upwards in the image.
    """
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    return torch.stack([right, down, forward, eye], dim=1)


def orbit_poses(
    n: int,
    radius: float,
    elevation_deg: float = 30.0,
    center: Tensor | None = None,
    up_axis: int = 2,
) -> Tensor:
    """``[n, 3, 4]`` OpenCV camera-to-world poses on a circle around ``center``, looking at it.

    The circle lies in the plane orthogonal to world axis ``up_axis`` (z for Blender scenes).
    """
    center = torch.zeros(3) if center is None else center.float()
    up = torch.zeros(3)
    up[up_axis] = 1.0
    a, b = [i for i in range(3) if i != up_axis]
    elevation = torch.deg2rad(torch.tensor(elevation_deg))
    poses = []
    for angle in torch.linspace(0, 2 * torch.pi, n + 1)[:-1]:
        eye = torch.zeros(3)
        eye[a] = radius * torch.cos(elevation) * torch.cos(angle)
        eye[b] = radius * torch.cos(elevation) * torch.sin(angle)
        eye[up_axis] = radius * torch.sin(elevation)
        poses.append(look_at(eye + center, center, up))
    return torch.stack(poses)
