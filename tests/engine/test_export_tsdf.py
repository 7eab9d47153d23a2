"""TSDF mesh export (the path of models without a density grid) on an analytic sphere."""

from __future__ import annotations

import math

import numpy as np
import torch
from tensorfield.datasets.cameras import Cameras, orbit_poses
from tensorfield.engine.export import extract_mesh, tsdf_mesh
from tensorfield.fields.base import RenderOutput

RADIUS = 0.7


class AnalyticSphere(torch.nn.Module):
    """Renders a red sphere of radius 0.7 at the origin: exact alpha and expected distance x alpha."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # the render service reads the device from it

    def render_view(self, request):
        background = request.background
        origins, directions = request.cameras.generate_rays(request.index)
        b = (origins * directions).sum(-1)
        disc = b * b - ((origins * origins).sum(-1) - RADIUS**2)
        hit = disc > 0
        t = torch.where(hit, -b - disc.clamp_min(0).sqrt(), torch.zeros_like(b))
        alpha = hit.float()
        rgb = torch.where(hit[..., None], torch.tensor([1.0, 0.0, 0.0]), background.expand(*hit.shape, 3))
        return RenderOutput(rgb=rgb, depth=t * alpha, alpha=alpha)


def test_tsdf_mesh_of_a_sphere_lies_on_the_sphere():
    cameras = Cameras.from_fov(orbit_poses(24, 3.0, elevation_deg=20.0), 64, 64, math.radians(45.0))
    mesh = tsdf_mesh(AnalyticSphere(), cameras, torch.ones(3), voxel_length=0.03)
    assert len(mesh.faces) > 500
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(float(np.median(radii)) - RADIUS) < 0.03
    assert float(np.percentile(np.abs(radii - RADIUS), 90)) < 0.06
    assert mesh.colors is not None and float(np.median(mesh.colors[:, 0])) > 0.8


def test_extract_mesh_falls_back_to_tsdf_and_empty_renders_give_an_empty_mesh():
    cameras = Cameras.from_fov(orbit_poses(12, 3.0, elevation_deg=20.0), 48, 48, math.radians(45.0))
    mesh = extract_mesh(AnalyticSphere(), cameras=cameras, background=torch.ones(3), min_component_fraction=0.02)
    assert len(mesh.faces) > 100

    class Empty(AnalyticSphere):
        def render_view(self, request):
            out = super().render_view(request)
            return RenderOutput(out.rgb, out.depth * 0, out.alpha * 0)

    assert len(tsdf_mesh(Empty(), cameras, torch.ones(3), voxel_length=0.05).faces) == 0
