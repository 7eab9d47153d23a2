"""Mesh and point-cloud export without open3d: marching cubes, cleaning, writers, down-sampling,
and the one-line messages for a missing (system) dependency."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import trimesh
from tensorfield.datasets.ply import read_ply_points
from tensorfield.engine.export import (
    MESH_SUFFIXES,
    ExportError,
    Mesh,
    marching_cubes_mesh,
    remove_small_components,
    voxel_down_sample,
    write_mesh,
    write_point_cloud,
)


def _two_spheres_grid(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Alpha grid on [-1, 1]^3 with a big sphere (r 0.5 at -0.3) and a small one (r 0.12 at 0.7)."""
    axis = torch.linspace(-1, 1, n)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    big = ((x + 0.3) ** 2 + y**2 + z**2).sqrt() < 0.5
    small = ((x - 0.7) ** 2 + y**2 + z**2).sqrt() < 0.12
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    return (big | small).float(), aabb


def _components_brute_force(faces: np.ndarray) -> list[set[int]]:
    """Face sets connected through shared vertices, by repeated flooding (reference)."""
    unassigned = set(range(len(faces)))
    components = []
    while unassigned:
        seed = unassigned.pop()
        component, vertices = {seed}, set(faces[seed].tolist())
        grew = True
        while grew:
            grew = False
            for f in list(unassigned):
                if vertices & set(faces[f].tolist()):
                    unassigned.discard(f)
                    component.add(f)
                    vertices |= set(faces[f].tolist())
                    grew = True
        components.append(component)
    return components


def test_marching_cubes_and_cleaning_keep_the_big_component_only():
    alpha, aabb = _two_spheres_grid()
    mesh = marching_cubes_mesh(alpha, aabb, 0.5)
    components = _components_brute_force(mesh.faces)
    assert len(components) == 2
    sizes = sorted(len(c) for c in components)
    cleaned = remove_small_components(mesh, min_fraction=1.5 * sizes[0] / sizes[1])
    assert len(cleaned.faces) == sizes[1]
    assert cleaned.faces.max() == len(cleaned.vertices) - 1  # unreferenced vertices removed
    centre = cleaned.vertices.mean(0)
    np.testing.assert_allclose(centre, [-0.3, 0.0, 0.0], atol=0.03)
    kept = remove_small_components(mesh, min_fraction=0.5 * sizes[0] / sizes[1])
    assert len(kept.faces) == len(mesh.faces)


def test_vertex_normals_point_outwards():
    alpha, aabb = _two_spheres_grid()
    mesh = remove_small_components(marching_cubes_mesh(alpha, aabb, 0.5), 0.5)
    outward = mesh.vertices - np.array([-0.3, 0.0, 0.0], dtype=np.float32)
    cosine = (mesh.vertex_normals() * outward).sum(1) / np.linalg.norm(outward, axis=1)
    assert (cosine > 0.8).mean() > 0.95


@pytest.mark.parametrize("suffix", MESH_SUFFIXES)
def test_write_mesh_round_trips_through_trimesh(tmp_path, suffix):
    alpha, aabb = _two_spheres_grid(24)
    mesh = marching_cubes_mesh(alpha, aabb, 0.5)
    rng = np.random.default_rng(0)
    mesh = Mesh(mesh.vertices, mesh.faces, rng.random((len(mesh.vertices), 3)).astype(np.float32))
    path = write_mesh(mesh, tmp_path / f"m{suffix}")
    loaded = trimesh.load(path, force="mesh", process=False)
    if suffix == ".stl":  # STL stores triangle soup: compare the surface, not the indexing
        assert len(loaded.faces) == len(mesh.faces)
        assert abs(loaded.area - _trimesh_area(mesh)) < 1e-4 * loaded.area
        return
    np.testing.assert_allclose(np.asarray(loaded.vertices), mesh.vertices, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(loaded.faces), mesh.faces)
    if suffix in (".ply", ".glb"):  # OFF and STL carry no vertex colours
        colors = np.asarray(loaded.visual.vertex_colors)[:, :3]
        np.testing.assert_array_equal(colors, np.round(mesh.colors * 255).astype(np.uint8))
    assert not list(tmp_path.glob(".*partial*"))


def _trimesh_area(mesh: Mesh) -> float:
    a, b, c = (mesh.vertices[mesh.faces[:, k]].astype(np.float64) for k in range(3))
    return float(0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())


def test_write_mesh_refuses_unknown_format_and_empty_mesh(tmp_path):
    alpha, aabb = _two_spheres_grid(16)
    mesh = marching_cubes_mesh(alpha, aabb, 0.5)
    with pytest.raises(ExportError, match=r"unsupported mesh format '\.gltf'"):
        write_mesh(mesh, tmp_path / "m.gltf")
    empty = Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))
    with pytest.raises(ExportError, match="the mesh is empty"):
        write_mesh(empty, tmp_path / "m.ply")


def test_voxel_down_sample_matches_brute_force():
    rng = np.random.default_rng(1)
    points = rng.random((500, 3)).astype(np.float32) * 2.0 - 1.0
    colors = rng.random((500, 3)).astype(np.float32)
    size = 0.37
    out_points, out_colors = voxel_down_sample(points, colors, size)
    keys = np.floor((points.astype(np.float64) - points.min(0)) / size).astype(int)
    expected = {}
    for key, p, c in zip(map(tuple, keys), points.astype(np.float64), colors.astype(np.float64)):
        expected.setdefault(key, []).append((p, c))
    assert len(out_points) == len(expected)
    for (key, members), p, c in zip(expected.items(), out_points, out_colors):  # insertion order
        np.testing.assert_allclose(p, np.mean([m[0] for m in members], axis=0), atol=1e-6)
        np.testing.assert_allclose(c, np.mean([m[1] for m in members], axis=0), atol=1e-6)


@pytest.mark.parametrize("suffix", [".ply", ".xyz", ".xyzrgb"])
def test_write_point_cloud_round_trips(tmp_path, suffix):
    rng = np.random.default_rng(2)
    points = rng.normal(size=(50, 3)).astype(np.float32)
    colors = rng.random((50, 3)).astype(np.float32)
    path = write_point_cloud(points, colors, tmp_path / f"p{suffix}")
    if suffix == ".ply":
        loaded, loaded_colors = read_ply_points(path)
        np.testing.assert_array_equal(loaded, points)
        np.testing.assert_allclose(loaded_colors, np.round(colors * 255) / 255, atol=1e-6)
    else:
        table = np.loadtxt(path)
        np.testing.assert_allclose(table[:, :3], points, rtol=1e-6, atol=1e-6)
        assert table.shape[1] == (3 if suffix == ".xyz" else 6)
    assert not list(tmp_path.glob(".*partial*"))


def test_grid_mesh_export_does_not_need_open3d(tmp_path):
    """With open3d unimportable (as when libusb is missing) marching cubes, cleaning, colouring
    and writing still work, and the TSDF path says in one line what to install."""
    script = f"""
import sys
sys.modules["open3d"] = None  # import open3d -> ImportError, like a wheel missing its libusb
import numpy as np, torch
from tensorfield.engine.export import ExportError, marching_cubes_mesh, remove_small_components, write_mesh, tsdf_mesh
axis = torch.linspace(-1, 1, 20)
x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
mesh = remove_small_components(marching_cubes_mesh(((x**2 + y**2 + z**2) < 0.5).float(), torch.tensor([[-1.0] * 3, [1.0] * 3]), 0.5))
write_mesh(mesh, r"{tmp_path / 'm.ply'}")
try:
    tsdf_mesh(None, None, torch.ones(3), 0.1)
except ExportError as error:
    print("ERROR:", error)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.ply").stat().st_size > 1000
    lines = [line for line in result.stdout.splitlines() if line.startswith("ERROR:")]
    assert len(lines) == 1 and "open3d (needed for TSDF meshes" in lines[0]
    assert "pip install open3d" in lines[0]


def test_marching_cubes_winding_encloses_a_positive_volume():
    alpha, aabb = _two_spheres_grid()
    mesh = remove_small_components(marching_cubes_mesh(alpha, aabb, 0.5), 0.5)
    volume = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).volume
    assert abs(volume - 4.0 / 3.0 * np.pi * 0.5**3) < 0.1 * volume


def test_exported_files_get_the_default_mode_not_mkstemps_private_one(tmp_path):
    import os

    alpha, aabb = _two_spheres_grid(16)
    mask = os.umask(0o022)
    try:
        path = write_mesh(marching_cubes_mesh(alpha, aabb, 0.5), tmp_path / "m.ply")
        cloud = write_point_cloud(np.zeros((3, 3), np.float32), None, tmp_path / "p.ply")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
    assert cloud.stat().st_mode & 0o777 == 0o644
