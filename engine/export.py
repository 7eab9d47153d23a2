"""Export trained fields as meshes and point clouds (open3d + scikit-image).

* :func:`extract_mesh` runs marching cubes on a model's dense alpha grid (models that expose
  ``density_grid``, e.g. TensoRF) and colours vertices from the radiance field, or falls back to
  TSDF fusion of rendered depth and colour (:func:`tsdf_mesh`) for models without a grid.
* :func:`extract_point_cloud` back-projects rendered depth of the training cameras.
* :func:`write_mesh` / :func:`write_point_cloud` pick the file format from the extension
  (``.ply``, ``.obj``, ``.glb``/``.gltf`` for meshes; ``.ply``, ``.pcd``, ``.xyz`` for points).

open3d is imported lazily: it is heavy and only needed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tensorfield.datasets.cameras import Cameras

MESH_SUFFIXES = (".ply", ".obj", ".glb", ".gltf", ".off", ".stl")
POINT_SUFFIXES = (".ply", ".pcd", ".xyz", ".xyzrgb", ".pts")


def _open3d():
    import open3d as o3d

    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    return o3d


class ExportError(ValueError):
    """An export that cannot be done (one-line message)."""


@dataclass
class Mesh:
    """A triangle mesh in world coordinates.

    Attributes:
        vertices: ``[V, 3]`` float32.
        faces: ``[F, 3]`` int64 vertex indices (counter-clockwise seen from outside).
        colors: ``[V, 3]`` float32 in [0, 1], or ``None``.
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None

    def to_open3d(self):
        o3d = _open3d()

        mesh = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(self.vertices.astype(np.float64)),
            o3d.utility.Vector3iVector(self.faces.astype(np.int32)),
        )
        if self.colors is not None:
            mesh.vertex_colors = o3d.utility.Vector3dVector(self.colors.astype(np.float64))
        return mesh

    @classmethod
    def from_open3d(cls, mesh) -> "Mesh":
        colors = np.asarray(mesh.vertex_colors, dtype=np.float32) if mesh.has_vertex_colors() else None
        return cls(
            np.asarray(mesh.vertices, dtype=np.float32),
            np.asarray(mesh.triangles, dtype=np.int64),
            colors,
        )


# ----------------------------------------------------------------------------- cleaning / io
def remove_small_components(mesh: Mesh, min_fraction: float = 0.02) -> Mesh:
    """Drop connected components with fewer than ``min_fraction`` of the largest one's triangles."""
    if len(mesh.faces) == 0:
        return mesh
    o3d_mesh = mesh.to_open3d()
    cluster_ids, cluster_sizes, _ = o3d_mesh.cluster_connected_triangles()
    cluster_ids = np.asarray(cluster_ids)
    cluster_sizes = np.asarray(cluster_sizes)
    keep_clusters = cluster_sizes >= min_fraction * cluster_sizes.max()
    o3d_mesh.remove_triangles_by_mask(~keep_clusters[cluster_ids])
    o3d_mesh.remove_unreferenced_vertices()
    return Mesh.from_open3d(o3d_mesh)


def write_mesh(mesh: Mesh, path: str | Path) -> Path:
    """Write ``mesh``; the format follows the extension. Written atomically."""
    o3d = _open3d()

    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise ExportError(f"{path}: unsupported mesh format '{path.suffix}' (use one of {', '.join(MESH_SUFFIXES)})")
    if len(mesh.faces) == 0:
        raise ExportError(f"{path}: the mesh is empty (nothing above the density level; try a lower --level)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    o3d_mesh = mesh.to_open3d()
    o3d_mesh.compute_vertex_normals()
    ok = o3d.io.write_triangle_mesh(str(tmp), o3d_mesh, write_vertex_colors=mesh.colors is not None)
    if not ok or not tmp.exists():
        raise ExportError(f"{path}: open3d could not write the mesh")
    if path.suffix.lower() == ".obj":  # open3d writes a sidecar .mtl named after the temp file
        mtl = tmp.with_suffix(".mtl")
        if mtl.exists():
            mtl.unlink()
    tmp.replace(path)
    return path


def write_point_cloud(points: np.ndarray, colors: np.ndarray | None, path: str | Path) -> Path:
    """Write ``points`` ``[P, 3]`` (and ``colors`` ``[P, 3]`` in [0, 1]); format by extension."""
    o3d = _open3d()

    path = Path(path)
    if path.suffix.lower() not in POINT_SUFFIXES:
        raise ExportError(f"{path}: unsupported point cloud format '{path.suffix}' (use one of {', '.join(POINT_SUFFIXES)})")
    if len(points) == 0:
        raise ExportError(f"{path}: the point cloud is empty")
    path.parent.mkdir(parents=True, exist_ok=True)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    if colors is not None:
        cloud.colors = o3d.utility.Vector3dVector(colors.astype(np.float64))
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    if not o3d.io.write_point_cloud(str(tmp), cloud):
        raise ExportError(f"{path}: open3d could not write the point cloud")
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------- meshes
def marching_cubes_mesh(alpha: Tensor, aabb: Tensor, level: float) -> Mesh:
    """Iso-surface of a dense grid ``alpha`` ``[X, Y, Z]`` sampled at the corners of ``aabb``.

    Grid sample ``(i, j, k)`` sits at ``aabb[0] + (i, j, k) * (aabb[1] - aabb[0]) / (shape - 1)``
    (align-corners), and the surface is oriented so that normals point to lower alpha.
    """
    from skimage import measure

    volume = alpha.detach().cpu().double().numpy()
    if volume.max() <= level or volume.min() >= level:
        return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))
    # Pad with empty space so surfaces touching the box are closed.
    volume = np.pad(volume, 1, mode="constant", constant_values=0.0)
    verts, faces, _, _ = measure.marching_cubes(volume, level=level, gradient_direction="descent")
    verts = verts - 1.0
    shape = torch.tensor(alpha.shape, dtype=torch.float64)
    lo, hi = aabb[0].double().cpu(), aabb[1].double().cpu()
    spacing = ((hi - lo) / (shape - 1)).numpy()
    world = lo.numpy() + verts * spacing
    return Mesh(world.astype(np.float32), faces.astype(np.int64))


@torch.no_grad()
def color_vertices(model, mesh: Mesh, chunk: int = 65536) -> Mesh:
    """Colour each vertex with the model's radiance seen from outside (along minus the normal)."""
    if len(mesh.vertices) == 0:
        return mesh
    o3d_mesh = mesh.to_open3d()
    o3d_mesh.compute_vertex_normals()
    normals = torch.from_numpy(np.asarray(o3d_mesh.vertex_normals, dtype=np.float32))
    device = next(iter(model.parameters())).device
    points = torch.from_numpy(mesh.vertices)
    colors = []
    for start in range(0, len(points), chunk):
        p = points[start : start + chunk].to(device)
        d = -normals[start : start + chunk].to(device)
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        colors.append(model.radiance(p, d).float().cpu())
    return Mesh(mesh.vertices, mesh.faces, torch.cat(colors).clamp(0, 1).numpy())


def tsdf_mesh(
    model,
    cameras: Cameras,
    background: Tensor,
    voxel_length: float,
    sdf_trunc: float | None = None,
    time: float | None = None,
    max_depth: float = 100.0,
) -> Mesh:
    """TSDF fusion (open3d) of the model's rendered depth and colour from ``cameras``."""
    o3d = _open3d()

    from tensorfield.engine.render import render_frame, to_uint8

    volume = o3d.pipelines.integration.ScalableTSDFVolume(
        voxel_length=voxel_length,
        sdf_trunc=sdf_trunc if sdf_trunc is not None else 4 * voxel_length,
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8,
    )
    for i in range(len(cameras)):
        out = render_frame(model, cameras, i, background, time)
        # render depth is distance along the unit ray; TSDF wants z-depth
        _, directions = cameras.generate_rays(i)
        cam_dirs = directions @ cameras.c2w[i, :, :3]
        z = (out.depth.cpu() / out.alpha.cpu().clamp_min(1e-6)) * cam_dirs[..., 2]
        z[out.alpha.cpu() < 0.5] = 0.0
        color = o3d.geometry.Image(np.ascontiguousarray(to_uint8(out.rgb)))
        depth = o3d.geometry.Image(np.ascontiguousarray(z.numpy().astype(np.float32)))
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            color, depth, depth_scale=1.0, depth_trunc=max_depth, convert_rgb_to_intensity=False
        )
        intrinsic = o3d.camera.PinholeCameraIntrinsic(
            cameras.width, cameras.height, float(cameras.fx[i]), float(cameras.fy[i]), float(cameras.cx[i]) - 0.5, float(cameras.cy[i]) - 0.5
        )
        w2c = cameras[i].world_to_camera()[0].double().numpy()
        volume.integrate(rgbd, intrinsic, w2c)
    return Mesh.from_open3d(volume.extract_triangle_mesh())


def extract_mesh(
    model,
    level: float = 0.005,
    resolution: int | None = None,
    min_component_fraction: float = 0.02,
    cameras: Cameras | None = None,
    background: Tensor | None = None,
    time: float | None = None,
) -> Mesh:
    """A cleaned, vertex-coloured mesh of ``model``.

    Grid models (``density_grid``): marching cubes at ``level`` on the alpha grid (TensoRF's
    export uses alpha at level 0.005), vertex colours from ``radiance``. Other models: TSDF
    fusion of renders from ``cameras``. Components smaller than ``min_component_fraction`` of the
    largest are removed.
    """
    if hasattr(model, "density_grid"):
        grid_res = None if resolution is None else (resolution,) * 3
        alpha, aabb = model.density_grid(grid_res)
        mesh = marching_cubes_mesh(alpha, aabb, level)
        mesh = remove_small_components(mesh, min_component_fraction)
        if hasattr(model, "radiance"):
            mesh = color_vertices(model, mesh)
        return mesh
    if cameras is None or background is None:
        raise ExportError("this model has no density grid; TSDF export needs cameras and a background")
    extent = (cameras.c2w[:, :, 3].norm(dim=-1).mean().item()) / 2
    voxel = extent / (resolution or 256)
    mesh = tsdf_mesh(model, cameras, background, voxel_length=voxel, time=time)
    return remove_small_components(mesh, min_component_fraction)


@torch.no_grad()
def extract_point_cloud(
    model,
    cameras: Cameras,
    background: Tensor,
    time: float | None = None,
    min_alpha: float = 0.5,
    voxel_size: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Points where rendered rays terminate (expected depth), coloured by the render.

    Returns ``points [P, 3]`` and ``colors [P, 3]``; with ``voxel_size`` the cloud is
    down-sampled on a voxel grid (open3d).
    """
    from tensorfield.engine.render import render_frame

    points, colors = [], []
    for i in range(len(cameras)):
        out = render_frame(model, cameras, i, background, time)
        origins, directions = cameras.generate_rays(i)
        alpha = out.alpha.cpu()
        mask = alpha > min_alpha
        distance = out.depth.cpu() / alpha.clamp_min(1e-6)
        p = origins + directions * distance[..., None]
        points.append(p[mask])
        colors.append(out.rgb.cpu()[mask])
    pts = torch.cat(points).numpy()
    cols = torch.cat(colors).clamp(0, 1).numpy()
    if voxel_size is not None and len(pts):
        o3d = _open3d()

        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.astype(np.float64)))
        cloud.colors = o3d.utility.Vector3dVector(cols.astype(np.float64))
        cloud = cloud.voxel_down_sample(voxel_size)
        pts = np.asarray(cloud.points, dtype=np.float32)
        cols = np.asarray(cloud.colors, dtype=np.float32)
    return pts, cols
