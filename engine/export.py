"""Export trained fields as meshes and point clouds.

* :func:`extract_mesh` runs marching cubes on a model's dense alpha grid (models that expose
  ``density_grid``, e.g. TensoRF) and colours vertices from the radiance field, or falls back to
  TSDF fusion of rendered depth and colour (:func:`tsdf_mesh`) for models without a grid.
* :func:`extract_point_cloud` back-projects rendered depth of the training cameras.
* :func:`write_mesh` / :func:`write_point_cloud` pick the file format from the extension
  (``.ply``, ``.obj``, ``.glb``, ``.off``, ``.stl`` for meshes; ``.ply``, ``.xyz``, ``.xyzrgb``,
  ``.pts``, ``.pcd`` for points).
* :func:`write_splat_ply` / :func:`read_splat_ply`: Gaussian splats in the PLY layout of the
  original 3DGS code, which splat viewers open.

Which library does what, and why: marching cubes is scikit-image's, mesh cleaning (connected
components), normals and mesh files are trimesh's, point files are written here (PLY, XYZ) —
all pure wheels that need no system library. open3d is used only for what nothing lighter does
well, TSDF fusion (Gaussian models' meshes) and ``.pcd`` files; its wheel links ``libusb-1.0``,
so it is imported lazily through :func:`tensorfield.engine.dependencies.require`, which turns a
missing library into a one-line error naming the package to install.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tensorfield.datasets.cameras import Cameras
from tensorfield.engine.dependencies import MissingDependency, require
from tensorfield.engine.files import publish
from tensorfield.fields.base import ExportsDensityGrid, RenderRequest
from torch import Tensor

MESH_SUFFIXES = (".ply", ".obj", ".glb", ".off", ".stl")
POINT_SUFFIXES = (".ply", ".pcd", ".xyz", ".xyzrgb", ".pts")


class ExportError(ValueError):
    """An export that cannot be done (one-line message)."""


def _open3d(purpose: str):
    """open3d, or an :class:`ExportError` naming the missing (system) library and its fix."""
    try:
        o3d = require("open3d", purpose)
    except MissingDependency as error:
        raise ExportError(str(error)) from None
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    return o3d


def _trimesh(mesh: Mesh, process: bool = False):
    import trimesh

    colors = None
    if mesh.colors is not None:
        colors = np.clip(np.round(mesh.colors * 255.0), 0, 255).astype(np.uint8)
    return trimesh.Trimesh(
        vertices=mesh.vertices.astype(np.float64),
        faces=mesh.faces.astype(np.int64),
        vertex_colors=colors,
        process=process,
    )


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

    def vertex_normals(self) -> np.ndarray:
        """``[V, 3]`` unit normals from the faces' winding (angle-weighted, trimesh)."""
        return np.asarray(_trimesh(self).vertex_normals, dtype=np.float32)


# ----------------------------------------------------------------------------- cleaning / io
def remove_small_components(mesh: Mesh, min_fraction: float = 0.02) -> Mesh:
    """Drop connected components with fewer than ``min_fraction`` of the largest one's triangles.

    Components are sets of faces connected through shared vertices (trimesh's face adjacency);
    vertices no face uses any more are removed and the faces re-indexed.
    """
    if len(mesh.faces) == 0:
        return mesh
    import trimesh

    labels = trimesh.graph.connected_component_labels(
        _trimesh(mesh).face_adjacency, node_count=len(mesh.faces)
    )
    sizes = np.bincount(labels)
    keep_faces = (sizes >= min_fraction * sizes.max())[labels]
    faces = mesh.faces[keep_faces]
    used = np.unique(faces)
    remap = np.full(len(mesh.vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    colors = mesh.colors[used] if mesh.colors is not None else None
    return Mesh(mesh.vertices[used], remap[faces], colors)


def _atomic_write(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".partial")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        publish(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_mesh(mesh: Mesh, path: str | Path) -> Path:
    """Write ``mesh`` with vertex normals (and colours); the format follows the extension
    (trimesh's writers). Written atomically: an existing file stays intact until the new one is
    complete."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ExportError(f"{path}: unsupported mesh format '{path.suffix}' (use one of {', '.join(MESH_SUFFIXES)})")
    if len(mesh.faces) == 0:
        raise ExportError(f"{path}: the mesh is empty (nothing above the density level; try a lower --level)")
    shape = _trimesh(mesh)
    _ = shape.vertex_normals  # computed now, so the PLY / OBJ writers include them
    data = shape.export(file_type=suffix[1:])
    return _atomic_write(path, data.encode("utf-8") if isinstance(data, str) else data)


def voxel_down_sample(points: np.ndarray, colors: np.ndarray | None, voxel_size: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Replace the points in each cube of side ``voxel_size`` by their mean (and mean colour).

    Cubes are aligned with the points' minimum corner; output order follows the first point of
    each cube in ``points``.
    """
    if len(points) == 0:
        return points, colors
    keys = np.floor((points - points.min(0)) / voxel_size).astype(np.int64)
    _, first, inverse, counts = np.unique(keys, axis=0, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(first)  # keep the input's order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    inverse = rank[inverse]
    counts = counts[order]

    def mean(values: np.ndarray) -> np.ndarray:
        total = np.zeros((len(counts), values.shape[1]), dtype=np.float64)
        np.add.at(total, inverse, values.astype(np.float64))
        return (total / counts[:, None]).astype(np.float32)

    return mean(points), (mean(colors) if colors is not None else None)


def write_point_cloud(points: np.ndarray, colors: np.ndarray | None, path: str | Path) -> Path:
    """Write ``points`` ``[P, 3]`` (and ``colors`` ``[P, 3]`` in [0, 1]); format by extension.

    ``.ply``: binary PLY with ``uchar red, green, blue`` (:func:`~tensorfield.datasets.ply.write_ply_points`);
    ``.xyz`` / ``.xyzrgb`` / ``.pts``: text, one point a line (``x y z`` then, with colours,
    ``r g b`` in [0, 1]); ``.pcd``: open3d. Written atomically.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in POINT_SUFFIXES:
        raise ExportError(f"{path}: unsupported point cloud format '{path.suffix}' (use one of {', '.join(POINT_SUFFIXES)})")
    if len(points) == 0:
        raise ExportError(f"{path}: the point cloud is empty")
    points = np.asarray(points, dtype=np.float32)
    colors = None if colors is None else np.clip(np.asarray(colors, dtype=np.float32), 0.0, 1.0)
    if suffix == ".pcd":
        o3d = _open3d(".pcd point clouds")
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
        if colors is not None:
            cloud.colors = o3d.utility.Vector3dVector(colors.astype(np.float64))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        if not o3d.io.write_point_cloud(str(tmp), cloud):
            raise ExportError(f"{path}: open3d could not write the point cloud")
        tmp.replace(path)
        return path
    if suffix == ".ply":
        from tensorfield.datasets.ply import write_ply_points

        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".partial.ply")
        os.close(descriptor)
        try:
            write_ply_points(Path(temporary), points, colors)
            publish(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path
    table = points if colors is None or suffix == ".xyz" else np.concatenate([points, colors], axis=1)
    text = "\n".join(" ".join(f"{v:.7g}" for v in row) for row in table.tolist()) + "\n"
    return _atomic_write(path, text.encode("ascii"))


# ----------------------------------------------------------------------------- meshes
def marching_cubes_mesh(alpha: Tensor, aabb: Tensor, level: float) -> Mesh:
    """Iso-surface of a dense grid ``alpha`` ``[X, Y, Z]`` sampled at the corners of ``aabb``.

    Grid sample ``(i, j, k)`` sits at ``aabb[0] + (i, j, k) * (aabb[1] - aabb[0]) / (shape - 1)``
    (align-corners), and the surface is oriented so that normals point to lower alpha (faces
    counter-clockwise seen from outside; the enclosed volume is positive).
    """
    from skimage import measure

    volume = alpha.detach().cpu().double().numpy()
    if volume.max() <= level or volume.min() >= level:
        return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))
    # Pad with empty space so surfaces touching the box are closed.
    volume = np.pad(volume, 1, mode="constant", constant_values=0.0)
    verts, faces, _, _ = measure.marching_cubes(volume, level=level, gradient_direction="descent")
    # scikit-image winds these triangles clockwise seen from the low-alpha side (its normals,
    # and any computed from the winding, point into the object); reverse them so faces are
    # counter-clockwise from outside, as mesh viewers and color_vertices expect.
    faces = faces[:, ::-1]
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
    normals = torch.from_numpy(mesh.vertex_normals())
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
    max_resolution: int = 512,
) -> Mesh:
    """TSDF fusion (open3d, the one mesh step that needs it) of the model's rendered depth and colour from ``cameras``.

    Pixels with accumulated alpha below 0.5 carry no depth. The volume is open3d's
    ``UniformTSDFVolume`` over the cube around every back-projected depth point (its voxel is
    ``voxel_length``, enlarged if needed so that at most ``max_resolution`` voxels span the cube);
    open3d 0.20's ``ScalableTSDFVolume`` was found to integrate nothing on this build.
    """
    o3d = _open3d("TSDF meshes of models without a density grid")

    from tensorfield.engine.render import render_frame, to_uint8

    views, lower, upper = [], None, None
    for i in range(len(cameras)):
        out = render_frame(model, RenderRequest(cameras, i, background, time))
        # render depth is the expected distance along the unit ray times alpha; TSDF wants z-depth
        origins, directions = cameras.generate_rays(i)
        alpha = out.alpha.cpu()
        distance = out.depth.cpu() / alpha.clamp_min(1e-6)
        z = distance * (directions @ cameras.c2w[i, :, :3])[..., 2]
        valid = (alpha >= 0.5) & torch.isfinite(z) & (z > 0) & (z < max_depth)
        z = torch.where(valid, z, torch.zeros_like(z))
        if bool(valid.any()):
            points = (origins + distance[..., None] * directions)[valid]
            lo, hi = points.amin(0), points.amax(0)
            lower = lo if lower is None else torch.minimum(lower, lo)
            upper = hi if upper is None else torch.maximum(upper, hi)
        views.append((i, to_uint8(out.rgb), z.numpy().astype(np.float32)))
    if lower is None:
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), None)
    trunc = sdf_trunc if sdf_trunc is not None else 4 * voxel_length
    length = float((upper - lower).max()) + 4 * trunc
    voxel = max(voxel_length, length / max_resolution)
    trunc = sdf_trunc if sdf_trunc is not None else 4 * voxel
    length = float((upper - lower).max()) + 4 * trunc
    origin = ((lower + upper) / 2 - length / 2).double().numpy()
    volume = o3d.pipelines.integration.UniformTSDFVolume(
        length=length,
        resolution=max(2, int(math.ceil(length / voxel))),
        sdf_trunc=trunc,
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8,
        origin=origin,
    )
    for i, rgb, z in views:
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(rgb)), o3d.geometry.Image(np.ascontiguousarray(z)),
            depth_scale=1.0, depth_trunc=max_depth, convert_rgb_to_intensity=False,
        )
        intrinsic = o3d.camera.PinholeCameraIntrinsic(
            cameras.width, cameras.height, float(cameras.fx[i]), float(cameras.fy[i]), float(cameras.cx[i]) - 0.5, float(cameras.cy[i]) - 0.5
        )
        w2c = cameras[i].world_to_camera()[0].double().numpy()
        volume.integrate(rgbd, intrinsic, w2c)
    fused = volume.extract_triangle_mesh()
    colors = np.asarray(fused.vertex_colors, dtype=np.float32) if fused.has_vertex_colors() else None
    return Mesh(np.asarray(fused.vertices, dtype=np.float32), np.asarray(fused.triangles, dtype=np.int64), colors)


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

    Grid models (:class:`~tensorfield.fields.base.ExportsDensityGrid`): marching cubes at ``level`` on the alpha grid (TensoRF's
    export uses alpha at level 0.005), vertex colours from ``radiance``. Other models: TSDF
    fusion of renders from ``cameras``. Components smaller than ``min_component_fraction`` of the
    largest are removed.
    """
    if isinstance(model, ExportsDensityGrid):
        grid_res = None if resolution is None else (resolution,) * 3
        alpha, aabb = model.density_grid(grid_res)
        mesh = marching_cubes_mesh(alpha, aabb, level)
        mesh = remove_small_components(mesh, min_component_fraction)
        return color_vertices(model, mesh)
    if cameras is None or background is None:
        raise ExportError("this model has no density grid; TSDF export needs cameras and a background")
    distance = cameras.c2w[:, :, 3].norm(dim=-1).mean().item()
    voxel = distance / 2 / (resolution or 256)
    if resolution is None:  # no finer than about a pixel's footprint at the scene: TSDF needs overlap
        voxel = max(voxel, distance / float(cameras.fx.float().mean()))
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
    down-sampled on a voxel grid (:func:`voxel_down_sample`).
    """
    from tensorfield.engine.render import render_frame

    points, colors = [], []
    for i in range(len(cameras)):
        out = render_frame(model, RenderRequest(cameras, i, background, time))
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
        pts, cols = voxel_down_sample(pts, cols, voxel_size)
    return pts, cols


# ----------------------------------------------------------------------------- Gaussian splats
@dataclass
class SplatArrays:
    """Gaussians as stored in a 3DGS PLY (pre-activation values, float32 numpy).

    Attributes:
        means: ``[N, 3]`` centres.
        sh_dc: ``[N, 3]`` degree-0 SH coefficients (RGB).
        sh_rest: ``[N, K - 1, 3]`` higher SH coefficients, ``K = (degree + 1)^2``
            (``[N, 0, 3]`` for degree 0).
        opacity_logits: ``[N]`` opacity before the sigmoid.
        log_scales: ``[N, 3]`` log of the axis scales.
        quats: ``[N, 4]`` rotations ``(w, x, y, z)``, not necessarily normalised.
    """

    means: np.ndarray
    sh_dc: np.ndarray
    sh_rest: np.ndarray
    opacity_logits: np.ndarray
    log_scales: np.ndarray
    quats: np.ndarray

    def __len__(self) -> int:
        return self.means.shape[0]


def splat_ply_properties(num_rest: int) -> list[str]:
    """Vertex property names of a 3DGS PLY with ``num_rest`` = ``K - 1`` higher SH coefficients
    per channel, in file order (the original ``construct_list_of_attributes``)."""
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * num_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def _as_float32(value, name: str, shape: tuple) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu()
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != len(shape) or any(s is not None and a != s for a, s in zip(array.shape, shape)):
        want = "x".join("N" if s is None else str(s) for s in shape)
        raise ExportError(f"{name} must be [{want}], got {list(array.shape)}")
    return array


def write_splat_ply(
    path: str | Path,
    means,
    sh_dc,
    sh_rest,
    opacity_logits,
    log_scales,
    quats,
) -> Path:
    """Write Gaussians as the standard 3DGS PLY (binary little endian, all properties float).

    Layout (graphdeco-inria/gaussian-splatting ``GaussianModel.save_ply``), one ``vertex`` per
    Gaussian with properties, in order: ``x, y, z``; ``nx, ny, nz`` (zeros); ``f_dc_0..2``;
    ``f_rest_0 .. f_rest_{3(K-1)-1}`` **channel-major**: ``f_rest_{c (K-1) + k} = sh_rest[:, k, c]``
    (the original transposes its ``[N, K-1, 3]`` features to ``[N, 3, K-1]`` before flattening);
    ``opacity`` (logit); ``scale_0..2`` (log); ``rot_0..3`` (quaternion ``w, x, y, z``).

    The file is written to a temporary file in the same folder, fsynced and renamed over
    ``path``, so a crash never leaves a half-written splat and an existing file stays intact
    until the new one is complete.

    Args:
        path: output ``.ply``.
        means: ``[N, 3]``; sh_dc: ``[N, 3]``; sh_rest: ``[N, K-1, 3]`` or ``None`` (degree 0);
        opacity_logits: ``[N]`` or ``[N, 1]``; log_scales: ``[N, 3]``; quats: ``[N, 4]`` wxyz.
            Tensors (any device) or arrays; stored as float32.

    Returns:
        ``path``.

    Raises:
        ExportError: inconsistent shapes or non-finite values (one line).
    """
    path = Path(path)
    means = _as_float32(means, "means", (None, 3))
    n = means.shape[0]
    sh_dc = _as_float32(sh_dc, "sh_dc", (n, 3))
    if sh_rest is None:
        sh_rest = np.zeros((n, 0, 3), dtype=np.float32)
    sh_rest = _as_float32(sh_rest, "sh_rest", (n, None, 3))
    opacity = _as_float32(opacity_logits, "opacity_logits", (n,) if np.ndim(opacity_logits) == 1 else (n, 1))
    log_scales = _as_float32(log_scales, "log_scales", (n, 3))
    quats = _as_float32(quats, "quats", (n, 4))
    columns = [means, np.zeros_like(means), sh_dc,
               sh_rest.transpose(0, 2, 1).reshape(n, -1),  # channel-major, as the original
               opacity.reshape(n, 1), log_scales, quats]  # fmt: skip
    table = np.concatenate(columns, axis=1)
    if not np.isfinite(table).all():
        raise ExportError(f"{path}: the splat holds NaN/inf values")
    names = splat_ply_properties(sh_rest.shape[1])
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names]
    header.append("end_header")
    data = ("\n".join(header) + "\n").encode("ascii") + table.astype("<f4").tobytes()
    return _atomic_write(path, data)


_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def read_splat_ply(path: str | Path) -> SplatArrays:
    """Read a 3DGS splat PLY (as written by :func:`write_splat_ply`, the original 3DGS code or
    other tools that follow it: binary, any scalar property types, properties in any order,
    normals optional, other elements without list properties allowed).

    ``K - 1`` is the number of ``f_rest_*`` properties divided by 3.

    Raises:
        ExportError: ``<path>: <problem>`` on one line (missing file, not a binary PLY, missing
            or list-typed properties, truncated data, ``f_rest`` count not a multiple of 3).
    """
    path = Path(path)

    def fail(problem: str) -> ExportError:
        return ExportError(f"{path}: {problem}")

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise fail("missing file") from None
    except OSError as error:
        raise fail(f"unreadable file ({error.strerror})") from None
    end = data.find(b"end_header")
    newline = data.find(b"\n", end) if end >= 0 else -1
    if not data.startswith(b"ply") or newline < 0:
        raise fail("not a PLY file (no 'ply' magic or no end_header line)")
    header = data[:end].decode("ascii", errors="replace").splitlines()
    fmt, elements = None, []  # elements: [name, count, [(property, dtype)]]
    for line in header[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append([words[1], int(words[2]), []])
        elif words[0] == "property" and elements and len(words) == 3 and words[1] in _PLY_TYPES:
            elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        elif words[0] == "property" and elements and words[1:2] == ["list"]:
            raise fail(f"element '{elements[-1][0]}' has a list property (not a splat PLY)")
        else:
            raise fail(f"malformed header line '{line.strip()[:60]}'")
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise fail(f"format {fmt} is not supported (splat PLYs are binary)")
    order = "<" if fmt == "binary_little_endian" else ">"
    offset = newline + 1
    vertex = None
    for name, count, props in elements:
        record = np.dtype([(p, order + t) for p, t in props])
        if len(data) < offset + count * record.itemsize:
            raise fail(f"truncated: element '{name}' needs {count * record.itemsize} bytes")
        if name == "vertex":
            vertex = np.frombuffer(data, dtype=record, count=count, offset=offset)
        offset += count * record.itemsize
    if vertex is None:
        raise fail("no vertex element")
    names = set(vertex.dtype.names or ())
    rest = sorted((p for p in names if p.startswith("f_rest_")), key=lambda p: int(p[7:]) if p[7:].isdigit() else -1)
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    missing = [p for p in required if p not in names]
    if missing:
        raise fail(f"not a Gaussian splat PLY: missing properties {', '.join(missing)}")
    if len(rest) % 3 or rest != [f"f_rest_{i}" for i in range(len(rest))]:
        raise fail(f"f_rest properties must be f_rest_0..f_rest_{{3m-1}}, found {len(rest)}")
    column = lambda *props: np.stack([vertex[p].astype(np.float32) for p in props], axis=1)
    n, num_rest = len(vertex), len(rest) // 3
    sh_rest = column(*rest) if rest else np.zeros((n, 0), dtype=np.float32)
    return SplatArrays(
        means=column("x", "y", "z"),
        sh_dc=column("f_dc_0", "f_dc_1", "f_dc_2"),
        sh_rest=np.ascontiguousarray(sh_rest.reshape(n, 3, num_rest).transpose(0, 2, 1)),
        opacity_logits=vertex["opacity"].astype(np.float32),
        log_scales=column("scale_0", "scale_1", "scale_2"),
        quats=column("rot_0", "rot_1", "rot_2", "rot_3"),
    )


def apply_similarity(
    matrix: np.ndarray, points, log_scales=None, quats=None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Move exported geometry by the similarity ``x' = s R x + t`` (e.g. back to the input frame,
    :mod:`tensorfield.engine.scene_frame`).

    Args:
        matrix: ``[4, 4]`` ``[[s R, t], [0, 0, 0, 1]]`` with ``s > 0`` (mesh winding is kept).
        points: ``[N, 3]`` vertices, points or splat means.
        log_scales: optional ``[N, 3]`` splat log-scales (``+ log s``).
        quats: optional ``[N, 4]`` splat rotations ``(w, x, y, z)`` (``q_R * q``).

    Returns:
        ``(points, log_scales, quats)`` float32, ``None`` where not given.
    """
    from tensorfield.datasets.colmap_model import rotmat_to_qvec

    matrix = np.asarray(matrix, dtype=np.float64)
    scale = float(np.cbrt(np.linalg.det(matrix[:3, :3])))
    moved = np.asarray(points, dtype=np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    scales = None if log_scales is None else (np.asarray(log_scales, dtype=np.float64) + math.log(scale)).astype(np.float32)
    turned = None
    if quats is not None:
        w1, x1, y1, z1 = rotmat_to_qvec(matrix[:3, :3] / scale)
        w2, x2, y2, z2 = np.asarray(quats, dtype=np.float64).T
        turned = np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                           w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], axis=1)  # fmt: skip
        turned = turned.astype(np.float32)
    return moved.astype(np.float32), scales, turned


# ------------------------------------------------------------------------------- output paths
SPLAT_SUFFIXES = (".ply",)
SLICE_SUFFIXES = (".png", ".npy")
EXPORT_SUFFIXES = {"mesh": MESH_SUFFIXES, "pointcloud": POINT_SUFFIXES, "splat": SPLAT_SUFFIXES, "slice": SLICE_SUFFIXES, "cameras": (".json",)}
"""File extensions of each ``tensorfield export`` kind."""


def check_output_path(path: str | os.PathLike, suffixes: tuple[str, ...] | None = None, folder: bool = False) -> Path:
    """Check, before any work, that an output can be written there; create missing parent folders.

    Writing is probed with a temporary file in the nearest existing folder, so a read-only
    folder is found here rather than by a library that prints to the terminal at the end of an
    export (open3d's ``RPly:`` lines).

    Args:
        path: the file (or, with ``folder``, the folder) to write.
        suffixes: accepted extensions (lower case, with the dot); ``None`` accepts any.
        folder: the output is a folder of files (e.g. rendered frames) rather than one file.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        ExportError: one line naming the path and the problem (a parent that is a file, a folder
            that is not writable, an unsupported extension, a folder where a file is meant).
    """
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        got = f"'{path.suffix}'" if path.suffix else "no extension"
        raise ExportError(f"{path}: unsupported output format {got} (use one of {', '.join(suffixes)})")
    if folder and path.exists() and not path.is_dir():
        raise ExportError(f"{path}: exists and is a file, not a folder for the output")
    if not folder and path.is_dir():
        raise ExportError(f"{path}: is a folder; give a file name")
    if not folder and path.exists() and not os.access(path, os.W_OK):
        raise ExportError(f"{path}: exists and is not writable")
    ancestor = path.parent if not folder else path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ExportError(f"{path}: cannot write there: {ancestor} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass  # creating (and at once deleting) a file is the only reliable writability test
    except OSError as error:
        raise ExportError(f"{path}: cannot write there: {ancestor} is not writable ({error.strerror or type(error).__name__})") from None
    target = path if folder else path.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"{path}: cannot create {target} ({error.strerror or type(error).__name__})") from None
    return path
