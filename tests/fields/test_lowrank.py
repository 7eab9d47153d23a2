"""Tests of fields/lowrank.py: CP / Tucker multi-identity tensors, their initialisers and the
attribute column layout, against float64 loops and autograd on the dense einsum."""

from __future__ import annotations

import itertools

import pytest
import torch
from tensorfield.fields.lowrank import (
    ATTRIBUTE_NAMES,
    CPTensor,
    GaussianAttributes,
    TuckerTensor,
    attribute_sizes,
    attribute_slices,
    cp_als,
    cp_dense,
    cp_from_table,
    cp_identity_table,
    merge_attributes,
    num_attributes,
    split_attributes,
    tucker_dense,
    tucker_hosvd,
    tucker_identity_table,
)

DOUBLE = torch.float64


def _factors(shape: tuple[int, ...], rank: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(size, rank, generator=generator, dtype=DOUBLE) for size in shape]


def _cp_loop(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """W[k, f, n] = sum_r A[k, r] B[f, r] C[n, r], one entry at a time."""
    out = torch.zeros(a.shape[0], b.shape[0], c.shape[0], dtype=DOUBLE)
    for k, f, n in itertools.product(range(a.shape[0]), range(b.shape[0]), range(c.shape[0])):
        out[k, f, n] = sum(float(a[k, r] * b[f, r] * c[n, r]) for r in range(a.shape[1]))
    return out


def _tucker_loop(core, a, b, c) -> torch.Tensor:
    out = torch.zeros(a.shape[0], b.shape[0], c.shape[0], dtype=DOUBLE)
    for k, f, n in itertools.product(range(a.shape[0]), range(b.shape[0]), range(c.shape[0])):
        total = 0.0
        for p, q, s in itertools.product(*(range(r) for r in core.shape)):
            total += float(core[p, q, s] * a[k, p] * b[f, q] * c[n, s])
        out[k, f, n] = total
    return out


# ====================================================================== CP values and gradients
@pytest.mark.parametrize("shape,rank", [((3, 5, 4), 2), ((1, 7, 6), 4), ((4, 2, 9), 3)])
def test_cp_identity_and_dense_match_a_triple_loop(shape, rank):
    a, b, c = _factors(shape, rank, seed=sum(shape) + rank)
    cp = CPTensor(a, b, c)
    expected = _cp_loop(a, b, c)
    assert cp.dense().shape == shape
    torch.testing.assert_close(cp.dense(), expected, rtol=1e-12, atol=1e-12)
    for k in range(shape[0]):
        table = cp.identity(k)
        assert table.shape == (shape[2], shape[1])  # [N, F]
        torch.testing.assert_close(table, expected[k].T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cp.identity(-1), expected[-1].T, rtol=1e-12, atol=1e-12)


def test_cp_identity_gradcheck():
    a, b, c = _factors((3, 4, 5), 2, seed=1)
    inputs = (a[1].clone().requires_grad_(), b.clone().requires_grad_(), c.clone().requires_grad_())
    assert torch.autograd.gradcheck(cp_identity_table, inputs)


def test_cp_identity_gradients_equal_autograd_of_the_dense_einsum():
    shape, rank, k = (4, 6, 7), 3, 2
    a, b, c = _factors(shape, rank, seed=2)
    weight = torch.randn(
        shape[2], shape[1], generator=torch.Generator().manual_seed(3), dtype=DOUBLE
    )

    cp = CPTensor(a, b, c, feature_blocks={"first": 2, "second": 4})
    (cp.identity(k) * weight).sum().backward()

    leaves = [t.clone().requires_grad_() for t in (a, b, c)]
    dense = torch.einsum("kr,fr,nr->kfn", *leaves)
    (dense[k].T * weight).sum().backward()

    torch.testing.assert_close(cp.identity_rows[k].grad, leaves[0].grad[k], rtol=1e-12, atol=1e-12)
    for other in (0, 1, 3):  # only row k is touched
        assert cp.identity_rows[other].grad is None
    assert torch.count_nonzero(leaves[0].grad[[0, 1, 3]]) == 0
    grad_b = torch.cat([cp.feature_blocks["first"].grad, cp.feature_blocks["second"].grad])
    torch.testing.assert_close(grad_b, leaves[1].grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cp.gaussian_factors.grad, leaves[2].grad, rtol=1e-12, atol=1e-12)


def test_cp_dense_gradients_equal_the_loop_formula():
    """dL/dA[k, r] = sum_{f,n} G[k,f,n] B[f,r] C[n,r] for L = <G, W>, written out by hand."""
    a, b, c = _factors((2, 3, 4), 2, seed=4)
    upstream = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(5), dtype=DOUBLE)
    cp = CPTensor(a, b, c)
    (cp.dense() * upstream).sum().backward()
    expected = torch.zeros(2, 2, dtype=DOUBLE)
    for k, r, f, n in itertools.product(range(2), range(2), range(3), range(4)):
        expected[k, r] += upstream[k, f, n] * b[f, r] * c[n, r]
    grad_a = torch.stack([row.grad for row in cp.identity_rows])
    torch.testing.assert_close(grad_a, expected, rtol=1e-12, atol=1e-12)


# ====================================================================== Tucker
def test_tucker_identity_and_dense_match_a_loop_and_gradcheck():
    generator = torch.Generator().manual_seed(6)
    core = torch.randn(2, 3, 2, generator=generator, dtype=DOUBLE)
    a, b, c = (
        torch.randn(s, r, generator=generator, dtype=DOUBLE) for s, r in ((3, 2), (4, 3), (5, 2))
    )
    tucker = TuckerTensor(core, a, b, c)
    expected = _tucker_loop(core, a, b, c)
    torch.testing.assert_close(tucker.dense(), expected, rtol=1e-12, atol=1e-12)
    for k in range(3):
        torch.testing.assert_close(tucker.identity(k), expected[k].T, rtol=1e-12, atol=1e-12)
    inputs = tuple(t.clone().requires_grad_() for t in (a[0], core, b, c))
    assert torch.autograd.gradcheck(tucker_identity_table, inputs)


def test_tucker_hosvd_reconstructs_a_low_multilinear_rank_tensor():
    generator = torch.Generator().manual_seed(7)
    ranks = (2, 3, 4)
    core = torch.randn(*ranks, generator=generator, dtype=DOUBLE)
    a, b, c = (
        torch.randn(s, r, generator=generator, dtype=DOUBLE) for s, r in zip((5, 8, 11), ranks)
    )
    dense = tucker_dense(a, core, b, c)
    fit = tucker_hosvd(dense, ranks)
    assert fit.relative_error < 1e-12
    for factor in (fit.identity_factors, fit.feature_factors, fit.gaussian_factors):
        torch.testing.assert_close(
            factor.T @ factor, torch.eye(factor.shape[1], dtype=DOUBLE), atol=1e-12, rtol=0
        )
    tucker = TuckerTensor.from_dense(dense, ranks)
    torch.testing.assert_close(tucker.dense(), dense, rtol=0, atol=1e-10 * float(dense.abs().max()))
    # one rank too few on the Gaussian mode can no longer be exact
    assert tucker_hosvd(dense, (2, 3, 3)).relative_error > 1e-3
    with pytest.raises(ValueError, match="R3=12"):
        tucker_hosvd(dense, (2, 3, 12))


# ====================================================================== initialisers
@pytest.mark.parametrize("shape,rank", [((4, 7, 9), 3), ((3, 11, 20), 4), ((2, 6, 5), 5)])
def test_cp_als_recovers_an_exactly_low_rank_tensor(shape, rank):
    a, b, c = _factors(shape, rank, seed=8 + rank)
    dense = cp_dense(a, b, c)
    fit = cp_als(dense, rank)
    approx = cp_dense(fit.identity_factors, fit.feature_factors, fit.gaussian_factors)
    relative = float((approx - dense).norm() / dense.norm())
    assert relative < 1e-6 and fit.relative_error == pytest.approx(relative, abs=1e-12)
    cp = CPTensor.from_dense(dense.float(), rank)
    assert cp.gaussian_factors.dtype == torch.float32
    assert float((cp.dense().detach().double() - dense).norm() / dense.norm()) < 1e-5


def test_cp_als_alone_converges_where_the_direct_start_does_not_apply():
    """R > F rules out simultaneous diagonalisation: the HOSVD start and ALS sweeps do the work."""
    a, b, c = _factors((8, 3, 9), 4, seed=11)
    dense = cp_dense(a, b, c)
    fit = cp_als(dense, 4, iterations=400)
    assert fit.iterations > 1
    assert fit.relative_error < 1e-6


def test_cp_als_error_is_honest_on_a_full_rank_tensor():
    dense = torch.randn(3, 6, 7, generator=torch.Generator().manual_seed(12), dtype=DOUBLE)
    fit = cp_als(dense, 2, iterations=30)
    approx = cp_dense(fit.identity_factors, fit.feature_factors, fit.gaussian_factors)
    assert fit.relative_error == pytest.approx(
        float((approx - dense).norm() / dense.norm()), rel=1e-10
    )
    assert 0.3 < fit.relative_error < 1.0


def test_cp_from_table_gives_every_identity_the_table():
    generator = torch.Generator().manual_seed(13)
    table = torch.randn(20, 6, generator=generator, dtype=DOUBLE)
    exact = cp_from_table(table, num_identities=3, rank=6, pad_scale=0.0)
    assert exact.relative_error < 1e-12
    cp = CPTensor.from_table(table, 3, rank=8, pad_scale=1e-4)  # 2 padded components
    for k in range(3):
        torch.testing.assert_close(cp.identity(k), table, atol=1e-6, rtol=0)
    assert torch.count_nonzero(cp.gaussian_factors[:, 6:]) > 0  # padded columns can learn
    truncated = cp_from_table(table, 2, rank=3)
    singular = torch.linalg.svdvals(table)
    assert truncated.relative_error == pytest.approx(
        float(singular[3:].norm() / singular.norm()), rel=1e-6
    )


# ====================================================================== identities
def test_add_identity_with_shared_factors_frozen_changes_only_the_new_row():
    torch.manual_seed(0)
    cp = CPTensor.random(
        3, 5, 12, rank=4, dtype=DOUBLE, generator=torch.Generator().manual_seed(14)
    )
    before = {name: p.detach().clone() for name, p in cp.named_parameters()}
    k = cp.add_identity()
    assert k == 3 and cp.num_identities == 4
    torch.testing.assert_close(
        cp.identity_rows[k].detach(), cp.identity_factors[:3].detach().mean(0)
    )
    row = cp.train_only_identity(k)
    assert [p.requires_grad for p in cp.parameters()].count(True) == 1 and row.requires_grad
    optimiser = torch.optim.Adam([p for p in cp.parameters() if p.requires_grad], lr=0.1)
    target = torch.randn(12, 5, dtype=DOUBLE)
    start = row.detach().clone()
    for _ in range(3):
        optimiser.zero_grad()
        ((cp.identity(k) - target) ** 2).mean().backward()
        optimiser.step()
    for name, p in cp.named_parameters():
        if name in before:
            assert torch.equal(p.detach(), before[name]), name
    assert not torch.equal(row.detach(), start)
    cp.unfreeze()
    assert all(p.requires_grad for p in cp.parameters())


def test_freeze_shared_keeps_identity_rows_trainable_and_tucker_core_frozen():
    generator = torch.Generator().manual_seed(15)
    tucker = TuckerTensor(torch.randn(2, 2, 2, generator=generator), torch.randn(3, 2, generator=generator),
                          torch.randn(4, 2, generator=generator), torch.randn(6, 2, generator=generator))  # fmt: skip
    tucker.freeze_shared()
    assert not tucker.core.requires_grad and not tucker.gaussian_factors.requires_grad
    assert all(not b.requires_grad for b in tucker.feature_blocks.values())
    assert all(r.requires_grad for r in tucker.identity_rows)
    k = tucker.add_identity(torch.tensor([1.0, -1.0]))
    assert tucker.identity(k).shape == (6, 4)
    with pytest.raises(ValueError, match=r"must be \[2\]"):
        tucker.add_identity(torch.zeros(3))
    with pytest.raises(IndexError):
        tucker.identity(7)


def test_parameter_count_and_compression():
    cp = CPTensor.random(5, 59, 1000, rank=10)
    assert cp.num_parameters() == 10 * (5 + 59 + 1000)
    assert cp.dense_numel() == 5 * 59 * 1000
    assert cp.compression_ratio() == pytest.approx(295000 / 10640)
    tucker = TuckerTensor(
        torch.zeros(2, 3, 4), torch.zeros(5, 2), torch.zeros(59, 3), torch.zeros(100, 4)
    )
    assert tucker.num_parameters() == 24 + 10 + 177 + 400
    assert tucker.ranks == (2, 3, 4)


def test_bad_factor_shapes_are_rejected():
    with pytest.raises(ValueError, match="one rank"):
        CPTensor(torch.zeros(2, 3), torch.zeros(4, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="sum to the 4 rows"):
        CPTensor(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(5, 3), feature_blocks={"a": 3})
    with pytest.raises(ValueError, match="core must be"):
        TuckerTensor(torch.zeros(2, 2, 2), torch.zeros(2, 2), torch.zeros(4, 3), torch.zeros(5, 2))


# ====================================================================== attribute blocks
@pytest.mark.parametrize("degree", [0, 1, 3])
def test_attribute_split_merge_round_trip(degree):
    width = num_attributes(degree)
    assert width == 11 + 3 * (degree + 1) ** 2
    assert list(attribute_sizes(degree)) == list(ATTRIBUTE_NAMES)
    table = torch.randn(2, 7, width, dtype=DOUBLE)
    blocks = split_attributes(table, degree)
    assert blocks.xyz.shape == (2, 7, 3) and blocks.log_scale.shape == (2, 7, 3)
    assert blocks.quat.shape == (2, 7, 4) and blocks.opacity_logit.shape == (2, 7, 1)
    assert blocks.sh.shape == (2, 7, (degree + 1) ** 2, 3) and blocks.sh_degree == degree
    torch.testing.assert_close(blocks.quat, table[..., 6:10])
    torch.testing.assert_close(blocks.opacity_logit[..., 0], table[..., 10])
    # coefficient-major SH: column 11 + 3 j + c is coefficient j of channel c
    for j in range((degree + 1) ** 2):
        for c in range(3):
            assert torch.equal(blocks.sh[..., j, c], table[..., 11 + 3 * j + c])
    assert torch.equal(merge_attributes(blocks), table)
    slices = attribute_slices(degree)
    assert slices["sh"].stop == width and slices["xyz"] == slice(0, 3)


def test_attribute_blocks_of_the_feature_factor_match_the_table_columns():
    degree = 1
    cp = CPTensor.random(
        2, num_attributes(degree), 6, rank=3, feature_blocks=attribute_sizes(degree)
    )
    assert cp.block_names == ATTRIBUTE_NAMES
    table = split_attributes(cp.identity(0), degree)
    # the xyz columns come from the xyz block of B only
    xyz = (cp.gaussian_factors * cp.identity_rows[0]) @ cp.feature_blocks["xyz"].T
    torch.testing.assert_close(table.xyz, xyz)


def test_attribute_errors():
    with pytest.raises(ValueError, match="has 20 columns, SH degree 1 needs 23"):
        split_attributes(torch.zeros(4, 20), 1)
    bad = GaussianAttributes(
        torch.zeros(2, 3),
        torch.zeros(2, 3),
        torch.zeros(2, 3),
        torch.zeros(2, 1),
        torch.zeros(2, 4, 3),
    )
    with pytest.raises(ValueError, match="quat must have 4 columns"):
        merge_attributes(bad)
    with pytest.raises(ValueError, match="sh_degree"):
        attribute_sizes(-1)
