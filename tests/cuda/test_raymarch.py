"""Tests of :mod:`tensorfield.cuda.raymarch`: hand-worked cases, then fast vs float64 reference."""

from __future__ import annotations

import math

import pytest
import torch
from tensorfield.cuda.raymarch import (
    OccupancyGrid,
    march_rays,
    march_rays_chunked,
    ray_aabb_intersect,
    rays_hit_occupancy,
)
from tensorfield.cuda.raymarch_reference import march_rays_reference
from torch import Tensor, nn

F64 = torch.float64


# ------------------------------------------------------------------------------ helpers
def assert_close(actual, expected, rtol=1e-9, atol=1e-9, msg=""):
    """|actual - expected| <= atol + rtol |expected| elementwise (``torch.testing.assert_close``
    pulls in torch.distributed on first use, seconds of import time)."""
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape, (msg, actual.shape, expected.shape)
    error = (actual - expected).abs()
    bound = atol + rtol * expected.abs()
    assert bool((error <= bound).all()), (
        f"{msg}: max error {error.max():.3g}, worst excess {(error - bound).max():.3g}"
    )


class BlobField(nn.Module):
    """Smooth random field: a sum of moving Gaussian blobs and an affine-sigmoid colour."""

    def __init__(self, num_blobs: int = 6, amplitude: float = 4.0, seed: int = 0, dtype=F64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        rand = lambda *s: torch.rand(*s, generator=g, dtype=dtype)
        self.centers = nn.Parameter(rand(num_blobs, 3) * 1.4 - 0.7)
        self.widths = nn.Parameter(0.15 + 0.25 * rand(num_blobs))
        self.amplitudes = nn.Parameter(amplitude * (0.3 + rand(num_blobs)))
        self.velocities = nn.Parameter(rand(num_blobs, 3) - 0.5)
        self.colour_weight = nn.Parameter(2 * rand(6, 3) - 1)
        self.colour_bias = nn.Parameter(rand(3) - 0.5)
        self.density_points: list[torch.Tensor] = []  # every point density() was called on

    def density(self, points, times):
        self.density_points.append(points.detach())
        assert points.shape[0] == times.shape[0]
        shift = torch.nan_to_num(times, nan=0.0)[:, None, None] * self.velocities
        d2 = ((points[:, None, :] - self.centers - shift) ** 2).sum(-1)
        return (self.amplitudes**2 * torch.exp(-d2 / (2 * self.widths**2))).sum(-1)

    def colour(self, points, dirs, times):
        assert points.shape == dirs.shape and times.shape == points.shape[:1]
        feature = torch.cat([points, dirs], dim=-1)
        # an explicit sum rather than a matmul: tiny threaded BLAS calls stall on a busy machine
        return torch.sigmoid((feature[:, :, None] * self.colour_weight).sum(1) + self.colour_bias)


def random_rays(num_rays: int, seed: int = 0, dtype=F64):
    """Rays from a sphere of radius 3 towards the unit box, plus some misses and inside starts."""
    g = torch.Generator().manual_seed(seed)
    origins = torch.randn(num_rays, 3, generator=g, dtype=dtype)
    origins = 3 * origins / origins.norm(dim=-1, keepdim=True)
    targets = torch.rand(num_rays, 3, generator=g, dtype=dtype) * 1.6 - 0.8
    targets[:2] = torch.tensor([[4.0, 4.0, 0.0], [-4.0, 0.0, 5.0]], dtype=dtype)  # misses
    origins[2:4] = torch.rand(2, 3, generator=g, dtype=dtype) - 0.5  # start inside the box
    directions = targets - origins
    directions[2:4] = torch.randn(2, 3, generator=g, dtype=dtype)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    return origins, directions


AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], dtype=F64)


def random_grid(resolution=(6, 5, 7), fraction=0.5, seed=1) -> OccupancyGrid:
    g = torch.Generator().manual_seed(seed)
    return OccupancyGrid(AABB.clone(), torch.rand(resolution, generator=g) < fraction)


def run_both(field: BlobField, origins, directions, **kwargs):
    """Values and parameter gradients of the fast and the reference marcher."""
    results = []
    for fn in (march_rays, march_rays_reference):
        field.zero_grad()
        field.density_points.clear()
        if kwargs.get("generator_seed") is not None:
            kwargs["generator"] = torch.Generator().manual_seed(kwargs["generator_seed"])
        call = {k: v for k, v in kwargs.items() if k != "generator_seed"}
        out = fn(origins, directions, field.density, field.colour, **call)
        g = torch.Generator().manual_seed(123)
        loss = (
            (out.rgb * torch.randn(out.rgb.shape, generator=g, dtype=F64)).sum()
            + (out.depth * torch.randn(out.depth.shape, generator=g, dtype=F64)).sum()
            + (out.alpha * torch.randn(out.alpha.shape, generator=g, dtype=F64)).sum()
        )
        loss.backward()
        grads = {n: p.grad.clone() for n, p in field.named_parameters()}
        results.append((out, grads))
    return results


def assert_match(fast, reference, rtol=1e-6, grad_rtol=1e-5):
    (out, grads), (ref, ref_grads) = fast, reference
    for name in ("rgb", "depth", "alpha"):
        assert_close(getattr(out, name), getattr(ref, name), rtol=rtol, atol=1e-10)
    for name, grad in grads.items():
        assert_close(grad, ref_grads[name], rtol=grad_rtol, atol=1e-9, msg=name)


BASE = {"aabb": AABB, "step_size": 0.05, "near": 0.2, "far": 4.5}


# ------------------------------------------------------------------------------ (a) by hand
def slab_field(sigma_value: float):
    """sigma = sigma_value for 1 <= x < 3, else 0; red for x < 2, green for x >= 2."""
    colour_calls = []

    def density(points, times):
        x = points[:, 0]
        return torch.where((x >= 1) & (x < 3), torch.full_like(x, sigma_value), torch.zeros_like(x))

    def colour(points, dirs, times):
        colour_calls.append(points.clone())
        red = torch.tensor([1.0, 0.0, 0.0], dtype=points.dtype)
        green = torch.tensor([0.0, 1.0, 0.0], dtype=points.dtype)
        return torch.where(points[:, :1] < 2, red, green)

    return density, colour, colour_calls


SLAB_BOX = torch.tensor([[0.0, -1.0, -1.0], [4.0, 1.0, 1.0]], dtype=F64)
SLAB_RAY = (torch.tensor([[-1.0, 0.0, 0.0]], dtype=F64), torch.tensor([[1.0, 0.0, 0.0]], dtype=F64))


@pytest.mark.parametrize("fn", [march_rays, march_rays_reference])
def test_hand_worked_slab(fn):
    # The ray enters the box at t=1 and leaves at t=5; step 1 with midpoint offsets puts samples
    # at t = 1.5, 2.5, 3.5, 4.5 (x = 0.5, 1.5, 2.5, 3.5). sigma = ln 2 in the slab gives
    #   alpha = [0, 1/2, 1/2, 0], T = [1, 1, 1/2, 1/4], w = [0, 1/2, 1/4, 0],
    #   rgb = 1/2 red + 1/4 green + (1 - 3/4) background, depth = 1/2*2.5 + 1/4*3.5 = 2.125.
    density, colour, calls = slab_field(math.log(2.0))
    background = torch.tensor([0.2, 0.4, 1.0], dtype=F64)
    out = fn(
        *SLAB_RAY,
        density,
        colour,
        aabb=SLAB_BOX,
        step_size=1.0,
        near=0.0,
        far=10.0,
        background=background,
    )
    expected_rgb = torch.tensor([[0.5 + 0.25 * 0.2, 0.25 + 0.25 * 0.4, 0.25 * 1.0]], dtype=F64)
    assert_close(out.rgb, expected_rgb, rtol=0, atol=1e-12)
    assert_close(out.depth, torch.tensor([2.125], dtype=F64), rtol=0, atol=1e-12)
    assert_close(out.alpha, torch.tensor([0.75], dtype=F64), rtol=0, atol=1e-12)
    assert out.num_samples == 4
    # colour is only evaluated where w > 1e-4: the two slab samples
    assert torch.cat(calls)[:, 0].tolist() == [1.5, 2.5]
    if fn is march_rays:
        assert out.distances.tolist() == [1.5, 2.5, 3.5, 4.5]
        assert_close(out.weights, torch.tensor([0, 0.5, 0.25, 0], dtype=F64))
        assert out.ray_indices.tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("fn", [march_rays, march_rays_reference])
def test_hand_worked_thresholds(fn):
    # sigma = ln 4: alpha = [0, 3/4, 3/4, 0], T = [1, 1, 1/4, 1/16], w = [0, 3/4, 3/16, 0].
    # transmittance_threshold 0.1 keeps samples with T >= 0.1 (the first three);
    # weight_threshold 0.2 colours only the second (w = 3/4), the third (3/16) still counts in
    # alpha and depth: rgb = 3/4 red + (1 - 15/16) background.
    density, colour, calls = slab_field(math.log(4.0))
    background = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    out = fn(
        *SLAB_RAY,
        density,
        colour,
        aabb=SLAB_BOX,
        step_size=1.0,
        near=0.0,
        far=10.0,
        background=background,
        weight_threshold=0.2,
        transmittance_threshold=0.1,
    )
    alpha = 3 / 4 + 3 / 16
    assert_close(out.alpha, torch.tensor([alpha], dtype=F64), rtol=0, atol=1e-12)
    depth = 3 / 4 * 2.5 + 3 / 16 * 3.5
    assert_close(out.depth, torch.tensor([depth], dtype=F64), rtol=0, atol=1e-12)
    expected_rgb = torch.tensor([[3 / 4, 0.0, 1 - alpha]], dtype=F64)
    assert_close(out.rgb, expected_rgb, rtol=0, atol=1e-12)
    assert torch.cat(calls)[:, 0].tolist() == [1.5]


def test_hand_worked_distance_scale_near_far_and_jitter():
    # near=2.2 starts inside the box; far=4.0 ends before t_far=5. delta = 0.5 * 2 = 1.
    density, colour, _ = slab_field(math.log(2.0))
    out = march_rays(
        *SLAB_RAY,
        density,
        colour,
        aabb=SLAB_BOX,
        step_size=0.5,
        near=2.2,
        far=4.0,
        distance_scale=2.0,
        weight_threshold=0.0,
        transmittance_threshold=0.0,
    )
    # samples t = 2.45, 2.95, 3.45, 3.95 (x = 1.45, 1.95, 2.45, 2.95: all in the slab)
    assert_close(out.distances, torch.tensor([2.45, 2.95, 3.45, 3.95], dtype=F64))
    assert_close(out.weights, torch.tensor([1 / 2, 1 / 4, 1 / 8, 1 / 16], dtype=F64))
    # jitter: t_k = t_start + (k + u) * step with u = torch.rand(1, float64, generator)
    u = torch.rand(1, dtype=F64, generator=torch.Generator().manual_seed(7)).item()
    out = march_rays(
        *SLAB_RAY,
        density,
        colour,
        aabb=SLAB_BOX,
        step_size=1.0,
        near=0.0,
        far=10.0,
        jitter=True,
        generator=torch.Generator().manual_seed(7),
    )
    assert_close(out.distances, 1.0 + torch.arange(4, dtype=F64) + u)
    # max_samples_per_ray keeps the first samples
    out = march_rays(
        *SLAB_RAY,
        density,
        colour,
        aabb=SLAB_BOX,
        step_size=1.0,
        near=0.0,
        far=10.0,
        max_samples_per_ray=2,
        transmittance_threshold=0.0,
    )
    assert out.distances.tolist() == [1.5, 2.5] and out.num_samples == 2


# ------------------------------------------------------------------------------ (b) intersection
def test_ray_aabb_intersect_known_values():
    box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], dtype=F64)
    s = 1 / math.sqrt(3)
    origins = torch.tensor(
        [
            [-3.0, 0.0, 0.0],  # straight through along +x
            [0.0, 0.0, 0.0],  # starts inside
            [-2.0, -2.0, -2.0],  # diagonal
            [-3.0, 0.5, 0.0],  # parallel to the y faces, between them
            [-3.0, 1.5, 0.0],  # parallel to the y faces, outside: miss
            [-3.0, 1.0, 0.0],  # parallel, exactly on the face plane: grazes (closed box)
            [-3.0, 3.0, 0.0],  # misses obliquely
            [3.0, 0.0, 0.0],  # box behind the origin
        ],
        dtype=F64,
    )
    directions = torch.tensor(
        [
            [1, 0, 0],
            [0, 0, 1],
            [s, s, s],
            [1, 0, 0],
            [1, 0, 0],
            [1, 0, 0],
            [0.8, 0.6, 0],
            [1, 0, 0],
        ],
        dtype=F64,
    )
    t_near, t_far = ray_aabb_intersect(origins, directions, box)
    assert not torch.isnan(t_near).any() and not torch.isnan(t_far).any()
    assert_close(t_near[:4], torch.tensor([2.0, -1.0, math.sqrt(3), 2.0], dtype=F64))
    assert_close(t_far[:4], torch.tensor([4.0, 1.0, 3 * math.sqrt(3), 4.0], dtype=F64))
    assert t_far[4] < t_near[4]
    assert (t_near[5].item(), t_far[5].item()) == (2.0, 4.0)
    assert t_far[6] < t_near[6]
    assert (t_near[7].item(), t_far[7].item()) == (-4.0, -2.0)
    # the marcher clamps to [near, far]: the box behind the ray and the misses give no samples
    out = march_rays(
        origins,
        directions,
        lambda p, t: torch.ones_like(p[:, 0]),
        lambda p, d, t: torch.ones_like(p),
        aabb=box,
        step_size=0.1,
        near=0.0,
        far=9.0,
    )
    assert out.alpha[4] == 0 and out.alpha[6] == 0 and out.alpha[7] == 0
    # sigma = 1, step 0.1: alpha = 1 - exp(-0.1 n) with n = 20, 10 (from t=0), 35, 20, 20 samples
    expected = 1 - torch.exp(-0.1 * torch.tensor([20.0, 10, 35, 20, 20], dtype=F64))
    assert_close(out.alpha[[0, 1, 2, 3, 5]], expected)


# ------------------------------------------------------------------------------ (c) fast vs ref
CASES = {
    "plain": {"weight_threshold": 0.0, "transmittance_threshold": 0.0},
    "defaults": {},
    "occupancy": {"occupancy": random_grid()},
    "jitter": {"jitter": True, "generator_seed": 5},
    "background": {"background": torch.tensor([0.3, 0.9, 0.5], dtype=F64)},
    "times": {"times": "random"},
    "max_samples": {"max_samples_per_ray": 17},
    "distance_scale": {"distance_scale": 3.0, "step_size": 0.08},
    "everything": {
        "occupancy": random_grid(fraction=0.7, seed=3),
        "jitter": True,
        "generator_seed": 11,
        "background": torch.tensor([1.0, 1.0, 1.0], dtype=F64),
        "times": "random",
        "weight_threshold": 1e-3,
        "transmittance_threshold": 2e-2,
        "samples_per_round": 3,
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_fast_matches_reference(case):
    field = BlobField(seed=len(case))
    origins, directions = random_rays(20, seed=len(case))
    kwargs = {**BASE, **CASES[case]}
    if kwargs.get("times") == "random":
        kwargs["times"] = torch.rand(20, generator=torch.Generator().manual_seed(2), dtype=F64)
    fast, ref = run_both(field, origins, directions, **kwargs)
    assert fast[0].alpha.max() > 0.5  # the rays do see the field
    assert fast[0].num_samples <= ref[0].num_samples
    assert_match(fast, ref)


def test_thresholds_are_exercised_and_match():
    # dense blobs: transmittance falls below the threshold inside them; Gaussian tails give
    # plenty of weights below the weight threshold.
    field = BlobField(amplitude=12.0, seed=4)
    origins, directions = random_rays(24, seed=4)
    thresholds = {"weight_threshold": 2e-3, "transmittance_threshold": 3e-2, "samples_per_round": 4}
    fast, ref = run_both(field, origins, directions, **BASE, **thresholds)
    assert_match(fast, ref)
    out = fast[0]
    assert ((out.weights > 0) & (out.weights <= 2e-3)).any()  # uncoloured samples exist
    # early termination saved density evaluations and changed the result
    plain = march_rays(
        origins,
        directions,
        field.density,
        field.colour,
        **BASE,
        weight_threshold=0.0,
        transmittance_threshold=0.0,
    )
    assert out.num_samples < 0.8 * plain.num_samples
    assert (plain.alpha - out.alpha).abs().max() > 1e-3
    # the round size changes the number of evaluations only
    whole = march_rays(
        origins,
        directions,
        field.density,
        field.colour,
        **BASE,
        **{**thresholds, "samples_per_round": None},
    )
    assert_close(whole.rgb, out.rgb, rtol=1e-12, atol=1e-12)
    assert whole.num_samples > out.num_samples


def test_float32_fast_path_close_to_reference():
    field64 = BlobField(seed=9)
    field32 = BlobField(seed=9).float()
    origins, directions = random_rays(20, seed=9)
    kwargs = dict(BASE, occupancy=random_grid(), background=torch.ones(3))
    out = march_rays(origins.float(), directions.float(), field32.density, field32.colour, **kwargs)
    ref = march_rays_reference(origins, directions, field64.density, field64.colour, **kwargs)
    assert out.rgb.dtype == torch.float32
    assert_close(out.rgb.double(), ref.rgb, rtol=1e-4, atol=1e-5)
    assert_close(out.depth.double(), ref.depth, rtol=1e-4, atol=1e-5)


def test_chunked_equals_unchunked_and_empty_inputs():
    field = BlobField(seed=2)
    origins, directions = random_rays(20, seed=2)
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    whole = march_rays(origins, directions, field.density, field.colour, **BASE, background=bg)
    parts = march_rays_chunked(
        origins, directions, field.density, field.colour, chunk=7, **BASE, background=bg
    )
    for name in ("rgb", "depth", "alpha"):
        assert_close(getattr(parts, name), getattr(whole, name))
    assert parts.num_samples == whole.num_samples
    # no rays; only misses
    empty = march_rays(origins[:0], directions[:0], field.density, field.colour, **BASE)
    assert empty.rgb.shape == (0, 3) and empty.num_samples == 0
    missed = march_rays(
        origins[:2], directions[:2], field.density, field.colour, **BASE, background=bg
    )
    assert_close(missed.rgb, bg.expand(2, 3))
    assert missed.num_samples == 0 and (missed.depth == 0).all()


def test_callback_shapes_are_checked():
    field = BlobField(seed=2)
    origins, directions = random_rays(6, seed=2)
    with pytest.raises(ValueError, match="density_fn"):
        march_rays(
            origins, directions, lambda p, t: field.density(p, t)[:, None], field.colour, **BASE
        )
    with pytest.raises(ValueError, match="color_fn"):
        march_rays(origins, directions, field.density, lambda p, d, t: p[:, :1], **BASE)


# ------------------------------------------------------------------------------ (d) occupancy
def test_empty_voxels_never_reach_the_field():
    grid = random_grid(resolution=(8, 8, 8), fraction=0.3, seed=6)
    field = BlobField(seed=6)
    origins, directions = random_rays(40, seed=6)
    colour_points = []

    def colour(points, dirs, times):
        colour_points.append(points.detach())
        return field.colour(points, dirs, times)

    out = march_rays(
        origins,
        directions,
        field.density,
        colour,
        **BASE,
        occupancy=grid,
        jitter=True,
        generator=torch.Generator().manual_seed(0),
        samples_per_round=5,
    )
    evaluated = torch.cat(field.density_points)
    assert evaluated.shape[0] == out.num_samples > 0
    assert grid.query(evaluated).all()
    assert grid.query(torch.cat(colour_points)).all()
    # and every occupied sample of the plain march was evaluated (no early termination)
    field.density_points.clear()
    out = march_rays(
        origins,
        directions,
        field.density,
        field.colour,
        **BASE,
        occupancy=grid,
        transmittance_threshold=0.0,
    )
    free = march_rays(
        origins,
        directions,
        lambda p, t: torch.zeros_like(p[:, 0]),
        field.colour,
        **BASE,
        transmittance_threshold=0.0,
    )
    points = origins[free.ray_indices] + free.distances[:, None] * directions[free.ray_indices]
    assert out.num_samples == int(grid.query(points).sum())


@pytest.mark.parametrize("native", ["1", "0"], ids=["native", "torch"])
def test_rays_hit_occupancy(native, monkeypatch):
    monkeypatch.setenv("TENSORFIELD_NATIVE_MARCH", native)
    grid = random_grid(resolution=(8, 8, 8), fraction=0.02, seed=8)
    origins, directions = random_rays(60, seed=8)
    hits = rays_hit_occupancy(
        origins, directions, grid, step_size=0.05, near=0.2, far=4.5, chunk=16
    )
    free = march_rays(
        origins,
        directions,
        lambda p, t: torch.zeros_like(p[:, 0]),
        lambda p, d, t: p,
        **BASE,
        transmittance_threshold=0.0,
    )
    points = origins[free.ray_indices] + free.distances[:, None] * directions[free.ray_indices]
    expected = torch.zeros(60, dtype=torch.bool)
    expected[free.ray_indices[grid.query(points)]] = True
    assert torch.equal(hits, expected) and 0 < hits.sum() < 60


# ------------------------------------------------------------------------------ (e) the grid
def test_occupancy_grid_query_and_bounds_by_hand():
    # box [0,2] x [0,4] x [0,1] with 2 x 4 x 1 voxels of size 1: voxel (i, j, 0) = [i,i+1)x[j,j+1)
    aabb = torch.tensor([[0.0, 0.0, 0.0], [2.0, 4.0, 1.0]])
    mask = torch.zeros(2, 4, 1, dtype=torch.bool)
    mask[1, 2, 0] = True
    mask[0, 3, 0] = True
    grid = OccupancyGrid(aabb, mask)
    assert_close(grid.voxel_size, torch.ones(3))
    points = torch.tensor(
        [
            [1.5, 2.5, 0.5],  # voxel (1, 2): occupied
            [0.5, 2.5, 0.5],  # voxel (0, 2): empty
            [2.5, 1.5, 0.5],  # x and y swapped: voxel (2?, 1) is outside the box
            [1.0, 2.0, 0.0],  # lower faces belong to the voxel: (1, 2)
            [0.999, 2.5, 0.5],  # voxel (0, 2): empty
            [0.5, 4.0, 1.0],  # upper faces of the box belong to the last voxel: (0, 3)
            [0.5, 4.001, 0.5],  # outside
            [-0.001, 3.5, 0.5],  # outside
            [float("nan"), 3.5, 0.5],  # NaN
        ]
    )
    assert grid.query(points).tolist() == [
        True,
        False,
        False,
        True,
        False,
        True,
        False,
        False,
        False,
    ]
    assert_close(grid.bounds(), torch.tensor([[0.0, 2.0, 0.0], [2.0, 4.0, 1.0]]))
    single = torch.zeros(2, 4, 1, dtype=torch.bool)
    single[1, 1, 0] = True
    assert_close(
        OccupancyGrid(aabb, single).bounds(), torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 1.0]])
    )
    empty = OccupancyGrid(aabb, torch.zeros(2, 4, 1, dtype=torch.bool))
    assert_close(empty.bounds(), aabb)
    assert not empty.query(points).any()
    centres = grid.voxel_centers()
    assert centres.shape == (2, 4, 1, 3)
    assert_close(centres[1, 2, 0], torch.tensor([1.5, 2.5, 0.5]))
    assert grid.query(centres.reshape(-1, 3)).reshape(2, 4, 1).equal(mask)


def test_occupancy_grid_query_matches_brute_force():
    grid = random_grid(resolution=(5, 3, 4), fraction=0.4, seed=10)
    points = torch.rand(600, 3, generator=torch.Generator().manual_seed(0), dtype=F64) * 2.4 - 1.2
    size = (AABB[1] - AABB[0]) / torch.tensor([5, 3, 4])
    expected = []
    for p in points:
        inside = bool(((p >= AABB[0]) & (p <= AABB[1])).all())
        i = [min(int((p[a] - AABB[0, a]) // size[a]), grid.mask.shape[a] - 1) for a in range(3)]
        expected.append(inside and bool(grid.mask[i[0], i[1], i[2]]))
    assert grid.query(points).tolist() == expected


# ------------------------------------------------------------------------------ (f) gradcheck
def test_gradcheck_tiny():
    origins, directions = random_rays(6, seed=12)
    grid = random_grid(resolution=(3, 3, 3), fraction=0.8, seed=12)
    base = BlobField(num_blobs=2, seed=12)

    def render(amplitudes, colour_bias, background):
        def density(points, times):
            d2 = ((points[:, None, :] - base.centers.detach()) ** 2).sum(-1)
            return (amplitudes**2 * torch.exp(-d2 / (2 * base.widths.detach() ** 2))).sum(-1)

        def colour(points, dirs, times):
            feature = torch.cat([points, dirs], -1)[:, :, None]
            return torch.sigmoid((feature * base.colour_weight.detach()).sum(1) + colour_bias)

        out = march_rays(
            origins,
            directions,
            density,
            colour,
            aabb=AABB,
            step_size=0.2,
            near=0.2,
            far=4.5,
            occupancy=grid,
            background=background,
            samples_per_round=2,
            weight_threshold=0.0,
            transmittance_threshold=0.0,
        )
        return out.rgb, out.depth, out.alpha

    inputs = (
        base.amplitudes.detach()[:2].clone().requires_grad_(),
        base.colour_bias.detach().clone().requires_grad_(),
        torch.tensor([0.2, 0.5, 0.7], dtype=F64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(render, inputs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_native_packing_equals_the_torch_packing(seed, monkeypatch):
    """The native occupied-sample packing gives the torch path's rays and k exactly, and its t
    and points to float32 rounding; the marcher's outputs and gradients agree either way."""
    from tensorfield.cuda.raymarch import (
        _packed_indices,
        _RaySamples,
        _sample_range,
        sample_offsets,
    )
    from tensorfield.cuda.raymarch_native import native_library

    if native_library() is None:
        pytest.skip("no C compiler for the native kernel")
    g = torch.Generator().manual_seed(seed)
    count = 300
    origins = torch.randn(count, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, -3.0])
    directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    aabb = torch.tensor([[-1.0, -1.2, -0.9], [1.1, 1.0, 1.0]])
    grid = OccupancyGrid(aabb, torch.rand(13, 11, 9, generator=g) < 0.4)
    offsets = sample_offsets(count, jitter=True, generator=g)
    t_start, k_begin, k_end = _sample_range(origins, directions, aabb, 0.1, 10.0, offsets, 0.05, None, grid)
    sampler = _RaySamples(origins, directions, t_start, offsets, 0.05, grid)
    live = torch.nonzero(k_end > k_begin).flatten()
    take = (k_end - k_begin).index_select(0, live).clamp(max=40)
    native = sampler.pack_native(live, k_begin.index_select(0, live), take)
    assert native is not None
    rays, k = _packed_indices(live, k_begin.index_select(0, live), take)
    keep = torch.nonzero(sampler.occupied(rays, k)).flatten()
    rays, k = rays[keep], k[keep]
    t, points = sampler.positions(rays, k)
    assert rays.numel() > 1000 and rays.numel() < int(take.sum())  # some occupied, some skipped
    assert torch.equal(native[0], rays) and torch.equal(native[1], k)
    torch.testing.assert_close(native[2], t, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(native[3], points, rtol=1e-6, atol=1e-6)

    field = nn.Linear(3, 4)
    def density(points, times):
        return torch.nn.functional.softplus(field(points)[:, 0] * 3)

    def color(points, dirs, times):
        return torch.sigmoid(field(points)[:, 1:])

    for occupancy in (grid, None):  # without a grid the kernel packs every sample
        results = []
        for flag in ("0", "1"):
            monkeypatch.setenv("TENSORFIELD_NATIVE_MARCH", flag)
            field.zero_grad()
            out = march_rays(origins, directions, density, color, aabb=aabb, step_size=0.05, near=0.1, far=10.0,
                             occupancy=occupancy, background=torch.ones(3), samples_per_round=16)
            (out.rgb.sum() + out.depth.sum()).backward()
            results.append((out.rgb.detach(), out.depth.detach(), field.weight.grad.clone(), out.num_samples))
        assert results[0][3] == results[1][3] > 0
        for a, b in zip(results[0][:3], results[1][:3]):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_native_round_transmittance_values_and_gradients():
    """The fused per-round scan against a float64 loop: weights, transmittance, the carried
    optical depth, and the gradients of tau and of the incoming optical depth."""
    from tensorfield.cuda.raymarch_native import native_library, round_transmittance

    if native_library() is None:
        pytest.skip("no C compiler for the native kernel")
    g = torch.Generator().manual_seed(0)
    rays = torch.tensor([1, 1, 1, 4, 4, 0, 0, 0, 0, 2])
    tau = (torch.rand(rays.numel(), generator=g) * 0.8).requires_grad_(True)
    od = (torch.rand(5, generator=g, dtype=torch.float64) * 0.5).requires_grad_(True)
    weight, trans, od_out = round_transmittance(tau, rays, od)
    gw, gt, go = torch.randn(rays.numel(), generator=g), torch.randn(rays.numel(), generator=g), torch.randn(5, generator=g, dtype=torch.float64)
    (weight * gw).sum().backward(retain_graph=True)
    ((trans * gt).sum() + (od_out * go).sum()).backward()
    got = (weight.detach(), trans.detach(), od_out.detach(), tau.grad.clone(), od.grad.clone())

    tau64 = tau.detach().double().requires_grad_(True)
    od64 = od.detach().clone().requires_grad_(True)
    acc = {r: od64[r] for r in range(5)}
    w_ref, t_ref = [], []
    for i, r in enumerate(rays.tolist()):
        t = torch.exp(-acc[r])
        t_ref.append(t)
        w_ref.append(t * (1 - torch.exp(-tau64[i])))
        acc[r] = acc[r] + tau64[i]
    w_ref, t_ref, od_ref = torch.stack(w_ref), torch.stack(t_ref), torch.stack([acc[r] for r in range(5)])
    ((w_ref * gw.double()).sum() + (t_ref * gt.double()).sum() + (od_ref * go).sum()).backward()
    expected = (w_ref.detach(), t_ref.detach(), od_ref.detach(), tau64.grad, od64.grad)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)
    assert od_out[3] == od[3]  # a ray without samples keeps its depth


# ------------------------------------------------------------------------------ fused dense march
def _dense_reference_density(grid: Tensor, box: Tensor, shift: float | None):
    """float64 brute-force trilinear interpolation of a ``[Z, Y, X]`` vertex grid over ``box``
    (align_corners=True, zero outside), optionally ``softplus(value + shift)``: a density_fn."""
    values = grid.double()
    size = torch.tensor([grid.shape[2], grid.shape[1], grid.shape[0]], dtype=F64)  # (X, Y, Z)
    lo, hi = box[0].double(), box[1].double()

    def density(points, times):
        u = (points.double() - lo) / (hi - lo) * (size - 1)  # vertex coordinates (x, y, z)
        base = u.floor()
        total = torch.zeros(points.shape[0], dtype=F64)
        for corner in range(8):
            offset = torch.tensor([(corner >> a) & 1 for a in range(3)], dtype=F64)
            vertex = base + offset
            weight = (1 - (u - vertex).abs()).prod(-1)
            inside = ((vertex >= 0) & (vertex < size)).all(-1)
            idx = vertex.clamp(min=0).long()
            idx = torch.minimum(idx, (size - 1).long())
            value = values[idx[:, 2], idx[:, 1], idx[:, 0]]
            total += torch.where(inside, weight * value, torch.zeros_like(value))
        if shift is not None:
            total = torch.nn.functional.softplus(total + shift)
        return total.to(points.dtype)

    return density


def _slab_grid(sigma_value: float) -> Tensor:
    """``[Z=2, Y=2, X=5]`` vertices at x = 0..4 over SLAB_BOX: 2 sigma at x = 2, else 0, so the
    midpoint samples x = 0.5, 1.5, 2.5, 3.5 read sigma = 0, s, s, 0 (the slab of slab_field)."""
    grid = torch.zeros(2, 2, 5)
    grid[:, :, 2] = 2 * sigma_value
    return grid


def test_fused_dense_march_hand_worked():
    """The slab cases of test_hand_worked_slab / _thresholds through a dense grid, fused path."""
    from tensorfield.cuda.raymarch import DenseDensity
    from tensorfield.cuda.raymarch_native import native_library

    if native_library() is None:
        pytest.skip("no C compiler for the native kernel")
    origins, directions = (t.float() for t in SLAB_RAY)
    box = SLAB_BOX.float()

    def never(points, times):
        raise AssertionError("the fused march must not call density_fn")

    _, colour, calls = slab_field(math.log(2.0))
    with torch.no_grad():
        out = march_rays(origins, directions, never, colour, aabb=box, step_size=1.0, near=0.0, far=10.0,
                         background=torch.tensor([0.2, 0.4, 1.0]), dense_density=DenseDensity(_slab_grid(math.log(2.0)), box))
    assert_close(out.rgb, torch.tensor([[0.5 + 0.25 * 0.2, 0.25 + 0.25 * 0.4, 0.25]]), rtol=0, atol=1e-6)
    assert_close(out.depth, torch.tensor([2.125]), rtol=0, atol=1e-6)
    assert_close(out.alpha, torch.tensor([0.75]), rtol=0, atol=1e-6)
    assert out.num_samples == 4 and out.weights is None
    assert torch.cat(calls)[:, 0].tolist() == [1.5, 2.5]

    # thresholds: sigma = ln 4, T >= 0.1 keeps three samples, w > 0.2 colours only the second
    _, colour, calls = slab_field(math.log(4.0))
    with torch.no_grad():
        out = march_rays(origins, directions, never, colour, aabb=box, step_size=1.0, near=0.0, far=10.0,
                         background=torch.tensor([0.0, 0.0, 1.0]), weight_threshold=0.2, transmittance_threshold=0.1,
                         dense_density=DenseDensity(_slab_grid(math.log(4.0)), box))
    alpha = 3 / 4 + 3 / 16
    assert_close(out.alpha, torch.tensor([alpha]), rtol=0, atol=1e-6)
    assert_close(out.depth, torch.tensor([3 / 4 * 2.5 + 3 / 16 * 3.5]), rtol=0, atol=1e-6)
    assert_close(out.rgb, torch.tensor([[3 / 4, 0.0, 1 - alpha]]), rtol=0, atol=1e-6)
    assert torch.cat(calls)[:, 0].tolist() == [1.5]
    assert out.num_samples == 3  # the fourth sample (T = 1/16 < 0.1) is never evaluated


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("with_grid", [True, False], ids=["occupancy", "no-occupancy"])
@pytest.mark.parametrize("shift", [-2.0, None], ids=["softplus", "raw"])
def test_fused_dense_march_matches_round_march_and_reference(seed, with_grid, shift):
    """Fused march of a random dense grid against the round-by-round march of the same density
    (a float64 brute-force trilinear density_fn) and the float64 per-ray reference: colour,
    depth and alpha, with early termination and the colour threshold both active."""
    from tensorfield.cuda.raymarch import DenseDensity
    from tensorfield.cuda.raymarch_native import native_library

    if native_library() is None:
        pytest.skip("no C compiler for the native kernel")
    g = torch.Generator().manual_seed(seed)
    origins, directions = random_rays(400, seed=seed, dtype=torch.float32)
    box = torch.tensor([[-0.9, -1.1, -1.0], [1.2, 0.9, 1.05]])  # not the marching box: zero outside it
    grid = torch.rand(9, 11, 7, generator=g) * 12.0 - (4.0 if shift is not None else 0.0)
    density = _dense_reference_density(grid, box, shift)
    field = BlobField(seed=seed, dtype=torch.float32)
    occupancy = random_grid(fraction=0.6, seed=seed) if with_grid else None
    kwargs = dict(aabb=AABB.float(), step_size=0.03, near=0.2, far=4.5, occupancy=occupancy,
                  background=torch.tensor([0.3, 0.6, 0.9]), distance_scale=2.0, weight_threshold=1e-3,
                  transmittance_threshold=1e-2)
    with torch.no_grad():
        fused = march_rays(origins, directions, density, field.colour, dense_density=DenseDensity(grid[..., None], box, shift), **kwargs)
        rounds = march_rays(origins, directions, density, field.colour, **kwargs)
        reference = march_rays_reference(origins.double(), directions.double(), density, lambda p, d, t: field.colour(p.float(), d.float(), t).double(), **{**kwargs, "aabb": AABB, "background": kwargs["background"].double()})
    assert fused.weights is None and rounds.weights is not None  # the fused path ran
    terminated = rounds.alpha > 1 - 1e-2
    assert 0 < int(terminated.sum()) < origins.shape[0]  # early termination is exercised
    for name in ("rgb", "depth", "alpha"):
        torch.testing.assert_close(getattr(fused, name), getattr(rounds, name), rtol=2e-5, atol=2e-5)
        torch.testing.assert_close(getattr(fused, name).double(), getattr(reference, name), rtol=1e-4, atol=1e-4)
    assert 0 < fused.num_samples <= rounds.num_samples


def test_fused_dense_march_equals_round_march_with_native_density():
    """With the render cache's own lookup (the native trilinear kernel) as density_fn, the fused
    march reproduces the round-by-round march: alpha and depth bit for bit, colour to rounding."""
    from tensorfield.cuda.raymarch import DenseDensity
    from tensorfield.cuda.raymarch_native import native_library
    from tensorfield.fields.factor_grids import sample_dense

    if native_library() is None:
        pytest.skip("no C compiler for the native kernel")
    g = torch.Generator().manual_seed(3)
    origins, directions = random_rays(600, seed=3, dtype=torch.float32)
    box = AABB.float()
    grid = torch.rand(16, 12, 14, 1, generator=g) * 10.0 - 3.0

    def density(points, times):
        return sample_dense(grid, points, box=box, softplus_shift=-1.0)

    field = BlobField(seed=3, dtype=torch.float32)
    kwargs = dict(aabb=box, step_size=0.02, near=0.2, far=4.5, occupancy=random_grid(fraction=0.7, seed=4),
                  background=torch.ones(3), weight_threshold=1e-3, transmittance_threshold=1e-3)
    with torch.no_grad():
        fused = march_rays(origins, directions, density, field.colour, dense_density=DenseDensity(grid, box, -1.0), **kwargs)
        rounds = march_rays(origins, directions, density, field.colour, **kwargs)
    assert fused.weights is None
    assert torch.equal(fused.alpha, rounds.alpha) and torch.equal(fused.depth, rounds.depth)
    torch.testing.assert_close(fused.rgb, rounds.rgb, rtol=1e-6, atol=1e-6)


def test_fused_dense_march_not_used_with_gradients():
    """With gradients on, the marcher ignores the dense grid and differentiates density_fn."""
    from tensorfield.cuda.raymarch import DenseDensity

    origins, directions = (t.float() for t in SLAB_RAY)
    box = SLAB_BOX.float()
    sigma = torch.tensor(math.log(2.0), requires_grad=True)

    def density(points, times):
        x = points[:, 0]
        return torch.where((x >= 1) & (x < 3), sigma.expand_as(x), torch.zeros_like(x))

    _, colour, _ = slab_field(math.log(2.0))
    out = march_rays(origins, directions, density, colour, aabb=box, step_size=1.0, near=0.0, far=10.0,
                     dense_density=DenseDensity(torch.zeros(2, 2, 5), box))
    assert_close(out.alpha, torch.tensor([0.75]), rtol=0, atol=1e-6)  # from density_fn, not the zero grid
    out.alpha.sum().backward()
    assert sigma.grad is not None and float(sigma.grad) != 0.0
