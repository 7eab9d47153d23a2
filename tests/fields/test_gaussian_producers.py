"""Gaussian producers: what differs between static and 4D Gaussians, on hand-made parameter dicts."""

from __future__ import annotations

import inspect
import math

import torch
from tensorfield.fields.gaussian_producers import SpacetimeProducer, StaticProducer, make_producer
from tensorfield.fields.gaussians import GaussianConfig, GaussianSplatting


def values(producer, count=6):
    g = torch.Generator().manual_seed(0)
    points = torch.rand(count, 3, generator=g)
    return producer.initial_values(points, torch.zeros(count, 3), torch.full((count,), 0.1), g)


def test_names_shapes_and_groups():
    static, spacetime = make_producer(GaussianConfig(sh_degree=1), 3), make_producer(GaussianConfig(sh_degree=1, time_degree=2), 4)
    assert isinstance(static, StaticProducer) and isinstance(spacetime, SpacetimeProducer)
    s, t = values(static), values(spacetime)
    assert list(s) == list(static.names) and list(t) == list(spacetime.names)
    assert set(t) - set(s) == {"times", "log_scale_t", "quats_right"}
    assert s["sh_rest"].shape == (6, 3, 3) and t["sh_rest"].shape == (6, 4 * 3 - 1, 3)  # (L+1)^2 (N_t+1) - 1
    assert [g.name for g in spacetime.param_groups(t, 2.0)][-3:] == ["times", "scale_t", "quats_right"]
    assert len(static.param_groups(s, 2.0)) == 6
    assert static.extra_losses(s, 0, None) == []


def test_static_slice_is_everything_and_4d_slice_culls_in_time():
    static = StaticProducer(GaussianConfig())
    s = values(static)
    sliced = static.gaussians_at(s, 123.0)
    assert sliced.index is None and sliced.means is s["means"] and sliced.covariances is None
    table, degree = static.raster_colors(sliced, torch.zeros(3), 2, 0)
    assert degree == 2 and table.shape == (6, 16, 3)

    spacetime = SpacetimeProducer(GaussianConfig(time_degree=2))
    t = values(spacetime)
    t["times"] = torch.tensor([0.0, 0.0, 0.0, 5.0, 5.0, 5.0])
    t["log_scale_t"] = torch.full((6,), math.log(0.1))
    with torch.enable_grad():
        sliced = spacetime.gaussians_at(t, 0.0)
    assert sliced.index.tolist() == [0, 1, 2] and sliced.covariances.shape == (3, 3, 3)
    torch.testing.assert_close(sliced.dt, torch.zeros(3))


def test_4d_split_samples_in_time_too():
    spacetime = SpacetimeProducer(GaussianConfig())
    t = values(spacetime)
    out = spacetime.split_values(t, torch.tensor([2, 4]), 2, torch.Generator().manual_seed(1))
    assert out["times"].shape == (4,) and bool((out["times"] != t["times"][[2, 4, 2, 4]]).all())
    torch.testing.assert_close(out["log_scale_t"], t["log_scale_t"][[2, 4, 2, 4]] - math.log(1.6))
    static = StaticProducer(GaussianConfig())
    s = values(static)
    out = static.split_values(s, torch.tensor([2, 4]), 2, torch.Generator().manual_seed(1))
    assert set(out) == set(s) and torch.equal(out["quats"], s["quats"][[2, 4, 2, 4]])


def test_the_model_has_no_dimension_branches():
    source = inspect.getsource(GaussianSplatting)
    assert "dim == 3" not in source and "dim == 4" not in source
