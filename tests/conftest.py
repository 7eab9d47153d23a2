"""Fixtures shared by every test folder."""

from __future__ import annotations

import inspect

import pytest
import torch


@pytest.fixture
def gsplat_stand_in(monkeypatch):
    """Replace ``gsplat.rasterization`` (CUDA only) by a stand-in for the CPU.

    The stand-in is bound to gsplat's real signature, so a keyword that gsplat does not have fails
    as it would on the GPU; it checks the modes tensorfield relies on and renders with the torch
    backend in gsplat's output layout: ``render [C, H, W, D + 1]`` ("RGB+ED": colour channels,
    then the expected depth), ``alphas [C, H, W, 1]`` and ``info`` with ``radii [C, N, 2]`` and
    ``means2d [C, N, 2]`` (part of the graph, as gsplat's). Returns the list of bound arguments
    of every call.
    """
    gsplat = pytest.importorskip("gsplat", reason="gsplat (test extra) is not installed")
    from tensorfield.cuda.rasterize import GaussianBatch, rasterize

    real = inspect.signature(gsplat.rasterization)
    calls = []

    def rasterization(*args, **kwargs):
        bound = real.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        calls.append(a)
        assert a["render_mode"] == "RGB+ED" and a["backgrounds"] is None and not a["packed"]
        assert (a["covars"] is None) == (a["quats"] is not None and a["scales"] is not None)
        batch = GaussianBatch(means=a["means"], opacities=a["opacities"], colors=a["colors"], scales=a["scales"],
                              quats=a["quats"], covars=a["covars"], sh_degree=a["sh_degree"])
        out = rasterize(batch, a["viewmats"], a["Ks"], a["width"], a["height"], near_plane=a["near_plane"],
                        far_plane=a["far_plane"], eps2d=a["eps2d"], antialiased=a["rasterize_mode"] == "antialiased",
                        tile_size=a["tile_size"], backend="torch")
        render = torch.cat([out.rgb, out.depth[..., None]], dim=-1)
        return render, out.alpha[..., None], {"radii": out.radii, "means2d": out.means2d}

    monkeypatch.setattr(gsplat, "rasterization", rasterization)
    return calls
