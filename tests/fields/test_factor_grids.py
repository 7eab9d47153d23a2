"""Tests of :mod:`tensorfield.fields.factor_grids` (and its native kernels).

Fast paths are checked against ``F.grid_sample(align_corners=True)`` and the plain references in
float64 (values and gradients), hand-worked cases pin the convention, and the factor modules are
checked for shapes, parameter counts, upsampling and cropping.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tensorfield.cuda import grid_kernels
from tensorfield.fields.factor_grids import (
    MATRIX_AXES,
    VECTOR_AXES,
    CandecompGrids,
    VectorMatrixGrids,
    bilinear_corners,
    off_diagonal_gram,
    sample_dense,
    sample_line,
    sample_line_reference,
    sample_plane,
    sample_plane_reference,
    total_variation,
)

F64 = torch.float64


def grid_sample_plane(table: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """The official layout: ``[1, C, H, W]`` sampled at ``(u, v)`` -> ``[S, C]``."""
    image = table.permute(2, 0, 1).unsqueeze(0)
    return F.grid_sample(image, uv.view(1, -1, 1, 2), align_corners=True)[0, :, :, 0].t()


def grid_sample_line(table: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """The official line layout ``[1, C, L, 1]`` sampled at ``(0, w)``."""
    image = table.t().unsqueeze(0).unsqueeze(-1)
    grid = torch.stack([torch.zeros_like(coord), coord], dim=-1).view(1, -1, 1, 2)
    return F.grid_sample(image, grid, align_corners=True)[0, :, :, 0].t()


def random_coords(n: int, dims: int, generator: torch.Generator, spread: float = 1.1) -> torch.Tensor:
    """Coordinates mostly inside [-1, 1], some outside (zero padding), plus the exact ends."""
    coords = (torch.rand(n, dims, generator=generator, dtype=F64) * 2 - 1) * spread
    coords[0] = -1.0
    coords[1] = 1.0
    return coords if dims > 1 else coords[:, 0]


@pytest.mark.parametrize("shape", [(2, 2, 1), (5, 7, 3), (9, 4, 6)])
def test_plane_sampling_matches_grid_sample_float64(shape):
    g = torch.Generator().manual_seed(sum(shape))
    table = torch.randn(*shape, generator=g, dtype=F64, requires_grad=True)
    uv = random_coords(200, 2, g)
    grad = torch.randn(200, shape[-1], generator=g, dtype=F64)
    fast = sample_plane(table, uv)
    for expected in (grid_sample_plane(table, uv), sample_plane_reference(table, uv)):
        torch.testing.assert_close(fast, expected, rtol=1e-12, atol=1e-12)
        (g_fast,) = torch.autograd.grad(fast, table, grad, retain_graph=True)
        (g_ref,) = torch.autograd.grad(expected, table, grad)
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length,channels", [(2, 1), (6, 4), (17, 5)])
def test_line_sampling_matches_grid_sample_float64(length, channels):
    g = torch.Generator().manual_seed(length)
    table = torch.randn(length, channels, generator=g, dtype=F64, requires_grad=True)
    coord = random_coords(150, 1, g)
    grad = torch.randn(150, channels, generator=g, dtype=F64)
    fast = sample_line(table, coord)
    for expected in (grid_sample_line(table, coord), sample_line_reference(table, coord)):
        torch.testing.assert_close(fast, expected, rtol=1e-12, atol=1e-12)
        (g_fast,) = torch.autograd.grad(fast, table, grad, retain_graph=True)
        (g_ref,) = torch.autograd.grad(expected, table, grad)
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-12, atol=1e-12)


def test_float32_sampling_matches_float64_reference():
    g = torch.Generator().manual_seed(3)
    plane = torch.randn(13, 11, 16, generator=g, requires_grad=True)
    line = torch.randn(13, 16, generator=g, requires_grad=True)
    uv = random_coords(3000, 2, g).float()
    w = random_coords(3000, 1, g).float()
    grad = torch.randn(3000, 16, generator=g)
    for table, sample, reference, coord in (
        (plane, sample_plane, sample_plane_reference, uv),
        (line, sample_line, sample_line_reference, w),
    ):
        out = sample(table, coord)
        (g_out,) = torch.autograd.grad(out, table, grad)
        table64 = table.detach().double().requires_grad_()
        ref = reference(table64, coord.double())
        (g_ref,) = torch.autograd.grad(ref, table64, grad.double())
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(g_out.double(), g_ref, rtol=1e-4, atol=1e-4)


needs_native = pytest.mark.skipif(grid_kernels.native_library() is None, reason="no C compiler")


def factor_modules(seed: int):
    g = torch.Generator().manual_seed(seed)
    return [
        VectorMatrixGrids([3, 5, 70], (7, 9, 11), generator=g),  # 70 > one 64-wide block
        VectorMatrixGrids([16, 16, 16], (2, 3, 2), generator=g),
        CandecompGrids(6, (7, 9, 11), generator=g),
        CandecompGrids(130, (5, 4, 3), generator=g),
    ]


@needs_native
@pytest.mark.parametrize("reduce", [False, True])
@pytest.mark.parametrize("threads", [1, 3])
def test_native_kernels_match_torch_path_and_float64(reduce, threads, monkeypatch):
    """Values and gradients of the fused C kernels vs the pure-torch composition (float32) and
    the float64 grid_sample path, on points inside, outside and on the box."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    for seed, module in enumerate(factor_modules(0)):
        g = torch.Generator().manual_seed(seed)
        xyz = (torch.rand(5000, 3, generator=g) * 2.4 - 1.2).contiguous()
        xyz[:2] = torch.tensor([[-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])
        fn = module.feature_sum if reduce else module.features
        params = list(module.parameters())
        assert grid_kernels.usable(xyz, *params)
        out = fn(xyz)
        grad = torch.randn(out.shape, generator=g)
        grads = torch.autograd.grad(out, params, grad)
        with monkeypatch.context() as patch:
            patch.setattr(grid_kernels, "usable", lambda *tensors: False)
            torch_out = fn(xyz)
            torch_grads = torch.autograd.grad(torch_out, params, grad)
            module64 = module.double()
            out64 = (module64.feature_sum if reduce else module64.features)(xyz.double())
            grads64 = torch.autograd.grad(out64, list(module64.parameters()), grad.double())
            module.float()
        torch.testing.assert_close(out, torch_out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.double(), out64, rtol=1e-5, atol=1e-5)
        for a, b, c in zip(grads, torch_grads, grads64):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(a.double(), c, rtol=1e-4, atol=1e-4)


@needs_native
def test_native_kernels_are_deterministic_across_thread_counts(monkeypatch):
    module = VectorMatrixGrids([16, 16, 16], (20, 30, 25), generator=torch.Generator().manual_seed(1))
    xyz = torch.rand(40000, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1
    results = []
    for threads in (1, 2, 5):
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        out = module.feature_sum(xyz)
        results.append([out.detach()] + list(torch.autograd.grad(out.sum(), list(module.parameters()))))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@needs_native
def test_native_kernels_ignore_non_finite_and_far_points():
    module = VectorMatrixGrids([2, 2, 2], (3, 3, 3), generator=torch.Generator().manual_seed(0))
    xyz = torch.tensor([[float("nan"), 0.0, 0.0], [0.0, float("inf"), 0.0], [9.0, 0.0, 0.0]])
    out = module.feature_sum(xyz)
    assert torch.equal(out.detach(), torch.zeros(3))
    grads = torch.autograd.grad(out.sum(), list(module.parameters()))
    assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_hand_worked_bilinear_weights():
    """A point a quarter of the way across cell (0, 0) of a 3x3 plane."""
    uv = torch.tensor([[-0.75, -0.5]], dtype=F64)  # pixel x = 0.25, y = 0.5
    index, weight = bilinear_corners(uv, 3, 3)
    assert index.tolist() == [[0, 1, 3, 4]]
    torch.testing.assert_close(weight, torch.tensor([[0.375, 0.125, 0.375, 0.125]], dtype=F64))
    table = torch.arange(9, dtype=F64).view(3, 3, 1)  # value = 3 y + x
    assert float(sample_plane(table, uv)) == pytest.approx(3 * 0.5 + 0.25)


def test_total_variation_matches_official_formula():
    g = torch.Generator().manual_seed(0)
    plane = torch.randn(5, 6, 3, generator=g, dtype=F64)
    x = plane.permute(2, 0, 1).unsqueeze(0)  # official [1, C, H, W]
    h_tv = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).sum()
    w_tv = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).sum()
    official = 2 * (h_tv / (3 * 4 * 6) + w_tv / (3 * 5 * 5))
    torch.testing.assert_close(total_variation(plane), official)
    line = torch.randn(7, 3, generator=g, dtype=F64)
    official_line = 2 * (line[1:] - line[:-1]).pow(2).sum() / (3 * 6)
    torch.testing.assert_close(total_variation(line), official_line)


def test_off_diagonal_gram():
    line = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    # Gram [[2, 1], [1, 5]] -> off-diagonal mean |.| = 1
    assert float(off_diagonal_gram(line)) == pytest.approx(1.0)


# ------------------------------------------------------------------------------ factor modules
def test_vm_shapes_follow_official_mode_pairing():
    vm = VectorMatrixGrids([2, 3, 4], (5, 6, 7), generator=torch.Generator().manual_seed(0))
    assert MATRIX_AXES == ((0, 1), (0, 2), (1, 2)) and VECTOR_AXES == (2, 1, 0)
    assert [tuple(p.shape) for p in vm.planes] == [(6, 5, 2), (7, 5, 3), (7, 6, 4)]
    assert [tuple(l.shape) for l in vm.lines] == [(7, 2), (6, 3), (5, 4)]
    assert vm.features(torch.zeros(10, 3)).shape == (10, 9)


def test_vm_features_equal_explicit_plane_times_line():
    g = torch.Generator().manual_seed(1)
    vm = VectorMatrixGrids([3, 3, 3], (4, 5, 6), generator=g).double()
    xyz = torch.rand(50, 3, generator=g, dtype=F64) * 2 - 1
    expected = []
    for m, ((a, b), c) in enumerate(zip(MATRIX_AXES, VECTOR_AXES)):
        plane = grid_sample_plane(vm.planes[m], xyz[:, [a, b]])
        line = grid_sample_line(vm.lines[m], xyz[:, c])
        expected.append(plane * line)
    expected = torch.cat(expected, dim=-1)
    torch.testing.assert_close(vm.features(xyz), expected)
    torch.testing.assert_close(vm.feature_sum(xyz), expected.sum(-1))


def test_cp_features_are_products_of_three_lines():
    g = torch.Generator().manual_seed(2)
    cp = CandecompGrids(5, (4, 6, 8), generator=g).double()
    assert [tuple(l.shape) for l in cp.lines] == [(8, 5), (6, 5), (4, 5)]
    xyz = torch.rand(40, 3, generator=g, dtype=F64) * 2 - 1
    expected = grid_sample_line(cp.lines[0], xyz[:, 2]) * grid_sample_line(cp.lines[1], xyz[:, 1])
    expected = expected * grid_sample_line(cp.lines[2], xyz[:, 0])
    torch.testing.assert_close(cp.features(xyz), expected)


@pytest.mark.parametrize("factory", [
    lambda g: VectorMatrixGrids([2, 2, 2], (5, 5, 5), generator=g),
    lambda g: CandecompGrids(3, (5, 5, 5), generator=g),
])
def test_doubling_upsample_reproduces_the_field_exactly(factory):
    """5 -> 9 vertices with align_corners=True nests the grids: the interpolant is unchanged."""
    grids = factory(torch.Generator().manual_seed(4)).double()
    xyz = torch.rand(300, 3, generator=torch.Generator().manual_seed(5), dtype=F64) * 2 - 1
    before = grids.features(xyz)
    grids.upsample((9, 9, 9))
    assert grids.resolution == (9, 9, 9)
    torch.testing.assert_close(grids.features(xyz), before, rtol=1e-12, atol=1e-12)


def test_upsample_to_any_size_stays_close_and_keeps_vertices():
    grids = VectorMatrixGrids([4, 4, 4], (8, 10, 12), generator=torch.Generator().manual_seed(6)).double()
    # a smooth field: set every factor to a smooth function of its coordinates
    for table in grids.parameters():
        axes = [torch.linspace(-1, 1, n, dtype=F64) for n in table.shape[:-1]]
        mesh = torch.meshgrid(*axes, indexing="ij")
        phase = sum((k + 1) * m for k, m in enumerate(mesh))
        channels = torch.arange(table.shape[-1], dtype=F64)
        table.data = torch.cos(phase[..., None] + channels)
    xyz = torch.rand(500, 3, generator=torch.Generator().manual_seed(7), dtype=F64) * 2 - 1
    before = grids.features(xyz)
    corners = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], dtype=F64)
    at_corners = grids.features(corners)
    grids.upsample((13, 17, 19))
    assert [tuple(p.shape[:2]) for p in grids.planes] == [(17, 13), (19, 13), (19, 17)]
    torch.testing.assert_close(grids.features(corners), at_corners, rtol=1e-12, atol=1e-12)
    assert float((grids.features(xyz) - before).detach().abs().max()) < 0.1


def test_crop_keeps_values_inside_the_kept_vertices():
    grids = VectorMatrixGrids([2, 3, 2], (9, 8, 7), generator=torch.Generator().manual_seed(8)).double()
    lower, upper = (2, 1, 3), (7, 8, 6)  # vertex ranges [2, 7), [1, 8), [3, 6)
    # world coordinates of the kept vertices in the old normalised box
    old = lambda i, n: -1 + 2 * i / (n - 1)
    lo = torch.tensor([old(l, n) for l, n in zip(lower, (9, 8, 7))], dtype=F64)
    hi = torch.tensor([old(u - 1, n) for u, n in zip(upper, (9, 8, 7))], dtype=F64)
    t = torch.rand(200, 3, generator=torch.Generator().manual_seed(9), dtype=F64)
    inside_old = lo + t * (hi - lo)
    before = grids.features(inside_old)
    grids.crop(lower, upper)
    assert grids.resolution == (5, 7, 3)
    torch.testing.assert_close(grids.features(t * 2 - 1), before, rtol=1e-12, atol=1e-12)


def test_resize_empty_gives_checkpoint_shapes():
    a = VectorMatrixGrids([2, 2, 2], (4, 5, 6))
    b = VectorMatrixGrids([2, 2, 2], (9, 9, 9))
    b.resize_empty(a.resolution)
    b.load_state_dict(a.state_dict())
    xyz = torch.rand(20, 3) * 2 - 1
    torch.testing.assert_close(a.features(xyz), b.features(xyz), rtol=0, atol=0)


def test_regularisers_follow_official_definitions():
    vm = VectorMatrixGrids([2, 2, 2], (3, 4, 5), generator=torch.Generator().manual_seed(10)).double()
    l1 = sum(p.abs().mean() + l.abs().mean() for p, l in zip(vm.planes, vm.lines))
    torch.testing.assert_close(vm.l1(), l1)
    torch.testing.assert_close(vm.tv(), 1e-2 * sum(total_variation(p) for p in vm.planes))
    cp = CandecompGrids(3, (3, 4, 5), generator=torch.Generator().manual_seed(11)).double()
    torch.testing.assert_close(cp.l1(), sum(l.abs().mean() for l in cp.lines))
    torch.testing.assert_close(cp.tv(), 1e-3 * sum(total_variation(l) for l in cp.lines))


@needs_native
def test_accumulate_into_grad_equals_autograd():
    """Several evaluations (a marcher's rounds) plus an ordinary autograd term: the in-place
    accumulation gives the same .grad as autograd's, and leaves non-native uses untouched."""
    from tensorfield.fields.factor_grids import accumulate_into_grad

    results = []
    for direct in (False, True):
        module = VectorMatrixGrids([4, 16, 20], (7, 9, 11), generator=torch.Generator().manual_seed(3))
        g = torch.Generator().manual_seed(4)
        with accumulate_into_grad() if direct else torch.enable_grad():
            parts = [module.feature_sum((torch.rand(300, 3, generator=g) * 2 - 1).contiguous()) for _ in range(3)]
            parts.append(module.features((torch.rand(200, 3, generator=g) * 2 - 1).contiguous()))
            l1 = module.l1() if direct else sum(p.abs().mean() for p in module.parameters())  # fused vs plain autograd
        weights = [torch.randn(p.shape, generator=g) for p in parts]
        loss = sum((w * p).sum() for w, p in zip(weights, parts)) + 0.1 * l1
        loss.backward()
        results.append([p.grad.clone() for p in module.parameters()])
    assert len(results[0]) == len(results[1]) == 6
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        assert float(a.abs().sum()) > 0


def dense_reference(grid: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation of ``[Z, Y, X, C]`` by looping over the 8 corners (float64, zero padding)."""
    size = [grid.shape[2], grid.shape[1], grid.shape[0]]
    out = torch.zeros(xyz.shape[0], grid.shape[3], dtype=F64)
    p = [(xyz[:, a].double() + 1) / 2 * (size[a] - 1) for a in range(3)]
    lo = [torch.floor(q) for q in p]
    for corner in range(8):
        bits = [(corner >> a) & 1 for a in range(3)]
        index = [(lo[a] + bits[a]).long() for a in range(3)]
        weight = torch.ones(xyz.shape[0], dtype=F64)
        inside = torch.ones(xyz.shape[0], dtype=torch.bool)
        for a in range(3):
            frac = p[a] - lo[a]
            weight = weight * (frac if bits[a] else 1 - frac)
            inside &= (index[a] >= 0) & (index[a] < size[a])
        ix, iy, iz = (index[a].clamp(0, size[a] - 1) for a in range(3))
        out += (weight * inside)[:, None] * grid.double()[iz, iy, ix]
    return out


@pytest.mark.parametrize("factory", [lambda g: VectorMatrixGrids([3, 4, 5], (7, 9, 11), 0.5, g), lambda g: CandecompGrids(6, (8, 5, 10), 0.5, g)])
def test_dense_grid_interpolates_to_the_factorised_features_float64(factory):
    g = torch.Generator().manual_seed(5)
    grids = factory(g).double()
    weights = torch.randn(4, grids.feature_dim, generator=g, dtype=F64)
    xyz = random_coords(500, 3, g)
    dense = grids.dense(weights)
    assert dense.shape == (grids.resolution[2], grids.resolution[1], grids.resolution[0], 4)
    with torch.no_grad():
        expected = grids.features(xyz) @ weights.t()
        torch.testing.assert_close(sample_dense(dense, xyz), expected, rtol=0, atol=1e-12)  # torch path
        torch.testing.assert_close(dense_reference(dense, xyz), expected, rtol=0, atol=1e-12)
        total = grids.dense()
        assert total.shape[-1] == 1
        torch.testing.assert_close(sample_dense(total, xyz)[:, 0], grids.feature_sum(xyz), rtol=0, atol=1e-12)


@pytest.mark.parametrize("channels", [1, 5, 27])
def test_native_trilinear_matches_float64_reference(channels):
    if grid_kernels.native_library() is None:
        pytest.skip("no C compiler")
    g = torch.Generator().manual_seed(channels)
    grid = torch.randn(6, 9, 7, channels, generator=g)
    xyz = random_coords(3000, 3, g).float()
    xyz[2] = float("nan")
    native = grid_kernels.trilinear(grid, xyz)
    assert native is not None and native.shape == (3000, channels)
    expected = dense_reference(grid, xyz)
    expected[2] = 0.0  # non-finite coordinates get no weight
    torch.testing.assert_close(native.double(), expected, rtol=2e-6, atol=2e-6)  # float32 rounding
    # the torch path (grid_sample) agrees too
    torch.testing.assert_close(sample_dense(grid.double(), xyz.double())[3:], expected[3:], rtol=0, atol=1e-12)
    assert grid_kernels.trilinear(grid.double(), xyz) is None  # float64 is not the kernel's


def test_trilinear_with_world_box_and_softplus_matches_torch_path():
    if grid_kernels.native_library() is None:
        pytest.skip("no C compiler")
    g = torch.Generator().manual_seed(11)
    box = torch.tensor([[-0.7, -1.2, 0.3], [0.9, 1.1, 2.0]])
    points = box[0] + torch.rand(2000, 3, generator=g) * (box[1] - box[0]) * 1.1 - 0.05 * (box[1] - box[0])
    grid = torch.randn(5, 8, 6, 1, generator=g) * 8
    normalised = (points.double() - box[0].double()) * (2.0 / (box[1].double() - box[0].double())) - 1.0
    expected = dense_reference(grid, normalised)[:, 0]
    # float32 normalisation moves a coordinate by ~1e-6 voxel; values here change by ~10 per voxel
    torch.testing.assert_close(grid_kernels.trilinear(grid, points, box)[:, 0].double(), expected, rtol=0, atol=5e-5)
    activated = grid_kernels.trilinear(grid, points, box, softplus_shift=-3.0)
    assert activated.shape == (2000,)
    torch.testing.assert_close(activated.double(), F.softplus(expected - 3.0), rtol=0, atol=5e-5)
    # the fall-back (torch) path applies the same box and activation
    torch.testing.assert_close(sample_dense(grid.double(), points.double(), box.double(), -3.0), F.softplus(expected - 3.0), rtol=1e-6, atol=1e-6)
    assert grid_kernels.trilinear(torch.randn(5, 8, 6, 2), points, box, softplus_shift=0.0) is None  # one channel only
