"""Factorised multi-identity tensors: the shared Gaussian tables of MIGS.

MIGS (Chatziagapi et al., "MIGS: Multi-Identity Gaussian Splatting via Tensor Decomposition",
ECCV 2024, Sec. 3.2) stores the canonical Gaussians of ``K`` subjects in one third-order tensor

.. math:: \\mathcal{W} \\in \\mathbb{R}^{K \\times F \\times N}, \\qquad
          \\mathcal{W}[k, :, n] = \\text{attributes of Gaussian } n \\text{ of identity } k,

(``F`` attribute columns: position, log-scale, quaternion, opacity logit, SH colour; ``N``
Gaussians) and never forms it: it is a low-rank tensor.

* **CP** (CANDECOMP/PARAFAC, the paper's default, rank 100):

  .. math:: \\mathcal{W}[k, f, n] = \\sum_{r=1}^{R} A[k, r]\\, B[f, r]\\, C[n, r]

  with identity factors ``A [K, R]``, attribute factors ``B [F, R]`` and Gaussian factors
  ``C [N, R]``. The canonical table of one identity is a product of two thin matrices,
  :math:`\\mathcal{W}[k]^T = C \\operatorname{diag}(A[k]) B^T \\in \\mathbb{R}^{N \\times F}`,
  which costs ``O(N R F)`` and touches only row ``k`` of ``A``.
* **Tucker** (the paper's variant): a core ``G [R1, R2, R3]`` and three factors,

  .. math:: \\mathcal{W}[k, f, n] = \\sum_{p, q, s} G[p, q, s]\\, A[k, p]\\, B[f, q]\\, C[n, s],

  so :math:`\\mathcal{W}[k]^T = C\\, (A[k] \\times_1 G)^T B^T`.

Both are :class:`torch.nn.Module` s whose factors are the trainable parameters. Identity rows are
stored one parameter per identity (an :class:`~torch.nn.ParameterList`), so fitting a new subject
against frozen shared factors (the paper's few-shot / unseen-identity setting) is one
``add_identity`` plus ``train_only_identity`` and an optimiser over that single row. The attribute
factor ``B`` can be stored in named row blocks (one per attribute, :func:`attribute_sizes`), so a
model can give each attribute its own learning rate as 3DGS does.

Initialisers (all computed in float64, returned in the input's dtype):

* :func:`cp_als` -- CP by alternating least squares from a dense tensor (HOSVD start, a few
  dozen sweeps; exact for a tensor of CP rank ``<= R`` in generic position);
* :func:`cp_from_table` -- the official initialisation: every identity starts as the same table
  (the point cloud's attributes), factorised by a truncated SVD with ``A`` all ones;
* :func:`tucker_hosvd` -- Tucker by the higher-order SVD (exact for a tensor whose multilinear
  rank is at most the requested ranks).

Attribute columns: :func:`split_attributes` / :func:`merge_attributes` convert an ``[..., F]``
table to named blocks and back; the column order is :data:`ATTRIBUTE_NAMES`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

# ====================================================================== attribute columns
#: Column blocks of a Gaussian attribute table, in order.
ATTRIBUTE_NAMES: tuple[str, ...] = ("xyz", "log_scale", "quat", "opacity_logit", "sh")


def attribute_sizes(sh_degree: int) -> dict[str, int]:
    """Widths of the attribute blocks (ordered as :data:`ATTRIBUTE_NAMES`).

    ``xyz`` 3, ``log_scale`` 3, ``quat`` 4 (``w, x, y, z``), ``opacity_logit`` 1 and ``sh``
    :math:`3 (d + 1)^2` for SH degree ``d``.
    """
    if not isinstance(sh_degree, int) or sh_degree < 0:
        raise ValueError(f"sh_degree must be an integer >= 0, got {sh_degree!r}")
    return {"xyz": 3, "log_scale": 3, "quat": 4, "opacity_logit": 1, "sh": 3 * (sh_degree + 1) ** 2}


def attribute_slices(sh_degree: int) -> dict[str, slice]:
    """Column range of every attribute block in a table of :func:`num_attributes` columns."""
    out, start = {}, 0
    for name, size in attribute_sizes(sh_degree).items():
        out[name] = slice(start, start + size)
        start += size
    return out


def num_attributes(sh_degree: int) -> int:
    """``F``: total attribute columns, :math:`11 + 3 (d + 1)^2` (59 for degree 3)."""
    return sum(attribute_sizes(sh_degree).values())


@dataclass
class GaussianAttributes:
    """One table of Gaussian attributes split into named blocks (raw, before activations).

    Attributes:
        xyz: ``[..., 3]`` means.
        log_scale: ``[..., 3]`` logarithms of the scales.
        quat: ``[..., 4]`` unnormalised quaternions ``(w, x, y, z)``.
        opacity_logit: ``[..., 1]`` opacities before the sigmoid.
        sh: ``[..., (d + 1)^2, 3]`` SH coefficients (coefficient 0 is the DC term).
    """

    xyz: Tensor
    log_scale: Tensor
    quat: Tensor
    opacity_logit: Tensor
    sh: Tensor

    @property
    def sh_degree(self) -> int:
        """SH degree ``d`` from the ``(d + 1)^2`` coefficients of :attr:`sh`."""
        return math.isqrt(self.sh.shape[-2]) - 1


def split_attributes(table: Tensor, sh_degree: int) -> GaussianAttributes:
    """Split the last axis of an attribute table into named blocks.

    Column layout (:func:`attribute_slices`): ``[xyz 3 | log_scale 3 | quat 4 | opacity_logit 1 |
    sh 3 (d+1)^2]``; the SH block is coefficient-major, column ``11 + 3 j + c`` holding
    coefficient ``j`` of colour channel ``c`` (so it reshapes to the ``[N, (d+1)^2, 3]`` tables
    of :mod:`tensorfield.fields.gaussians`).

    Args:
        table: ``[..., F]`` with ``F = num_attributes(sh_degree)``.
        sh_degree: SH degree ``d``.

    Returns:
        Views of ``table`` (no copy), differentiable.
    """
    width = num_attributes(sh_degree)
    if table.shape[-1] != width:
        raise ValueError(
            f"attribute table has {table.shape[-1]} columns, SH degree {sh_degree} needs {width}"
        )
    s = attribute_slices(sh_degree)
    sh = table[..., s["sh"]].reshape(*table.shape[:-1], (sh_degree + 1) ** 2, 3)
    return GaussianAttributes(
        xyz=table[..., s["xyz"]],
        log_scale=table[..., s["log_scale"]],
        quat=table[..., s["quat"]],
        opacity_logit=table[..., s["opacity_logit"]],
        sh=sh,
    )


def merge_attributes(attributes: GaussianAttributes) -> Tensor:
    """Inverse of :func:`split_attributes`: concatenate the blocks into ``[..., F]``."""
    sh = attributes.sh
    if sh.shape[-1] != 3 or math.isqrt(sh.shape[-2]) ** 2 != sh.shape[-2]:
        raise ValueError(f"sh must be [..., (d + 1)^2, 3], got {tuple(sh.shape)}")
    blocks = {
        "xyz": attributes.xyz,
        "log_scale": attributes.log_scale,
        "quat": attributes.quat,
        "opacity_logit": attributes.opacity_logit,
    }
    for name, size in attribute_sizes(attributes.sh_degree).items():
        if name != "sh" and blocks[name].shape[-1] != size:
            raise ValueError(f"{name} must have {size} columns, got {blocks[name].shape[-1]}")
    flat_sh = sh.reshape(*sh.shape[:-2], sh.shape[-2] * 3)
    return torch.cat([*blocks.values(), flat_sh], dim=-1)


# ====================================================================== pure tensor functions
def cp_dense(identity_factors: Tensor, feature_factors: Tensor, gaussian_factors: Tensor) -> Tensor:
    """``[K, F, N]``: :math:`W[k, f, n] = \\sum_r A[k, r] B[f, r] C[n, r]`."""
    return torch.einsum("kr,fr,nr->kfn", identity_factors, feature_factors, gaussian_factors)


def cp_identity_table(
    identity_row: Tensor, feature_factors: Tensor, gaussian_factors: Tensor
) -> Tensor:
    """``[N, F]``: one identity's table :math:`C \\operatorname{diag}(a) B^T` (``a = A[k]`` ``[R]``)."""
    return (gaussian_factors * identity_row) @ feature_factors.T


def tucker_dense(
    identity_factors: Tensor, core: Tensor, feature_factors: Tensor, gaussian_factors: Tensor
) -> Tensor:
    """``[K, F, N]``: :math:`W[k, f, n] = \\sum_{pqs} G[p, q, s] A[k, p] B[f, q] C[n, s]`."""
    return torch.einsum(
        "pqs,kp,fq,ns->kfn", core, identity_factors, feature_factors, gaussian_factors
    )


def tucker_identity_table(
    identity_row: Tensor, core: Tensor, feature_factors: Tensor, gaussian_factors: Tensor
) -> Tensor:
    """``[N, F]``: :math:`C M^T B^T` with :math:`M = \\sum_p a_p G[p]` ``[R2, R3]``."""
    mixed = torch.einsum("p,pqs->qs", identity_row, core)
    return (gaussian_factors @ mixed.T) @ feature_factors.T


def unfold(tensor: Tensor, mode: int) -> Tensor:
    """Mode-``m`` unfolding ``[I_m, prod of the other sizes]`` (the other axes in order)."""
    return tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)


# ====================================================================== decompositions
@dataclass
class CPDecomposition:
    """Result of :func:`cp_als` / :func:`cp_from_table`.

    Attributes:
        identity_factors: ``A [K, R]``.
        feature_factors: ``B [F, R]``.
        gaussian_factors: ``C [N, R]``.
        relative_error: :math:`\\|W - [\\![A, B, C]\\!]\\|_F / \\|W\\|_F` of the result.
        iterations: ALS sweeps run (0 for closed forms).
    """

    identity_factors: Tensor
    feature_factors: Tensor
    gaussian_factors: Tensor
    relative_error: float
    iterations: int


@dataclass
class TuckerDecomposition:
    """Result of :func:`tucker_hosvd`.

    Attributes:
        core: ``G [R1, R2, R3]``.
        identity_factors: ``A [K, R1]`` (orthonormal columns).
        feature_factors: ``B [F, R2]`` (orthonormal columns).
        gaussian_factors: ``C [N, R3]`` (orthonormal columns).
        relative_error: :math:`\\|W - G \\times_1 A \\times_2 B \\times_3 C\\|_F / \\|W\\|_F`.
    """

    core: Tensor
    identity_factors: Tensor
    feature_factors: Tensor
    gaussian_factors: Tensor
    relative_error: float


def _check_dense(dense: Tensor) -> None:
    if dense.ndim != 3 or min(dense.shape) < 1:
        raise ValueError(f"expected a dense [K, F, N] tensor, got shape {tuple(dense.shape)}")
    if not torch.isfinite(dense).all():
        raise ValueError("dense tensor holds NaN/inf")


def _leading_vectors(matrix: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``[I, count]``: the leading left singular vectors of ``matrix``, random columns beyond its rank."""
    u, _, _ = torch.linalg.svd(matrix, full_matrices=False)
    if u.shape[1] >= count:
        return u[:, :count]
    extra = torch.randn(
        matrix.shape[0], count - u.shape[1], generator=generator, dtype=matrix.dtype
    )
    return torch.cat([u, extra / math.sqrt(matrix.shape[0])], dim=1)


def _relative_error(dense: Tensor, approx: Tensor) -> float:
    """:math:`\\|W - \\hat W\\|_F / \\|W\\|_F` (the absolute error for an all-zero ``W``)."""
    residual, norm = float((dense - approx).norm()), float(dense.norm())
    return residual / norm if norm > 0 else residual


def _simultaneous_diagonalisation_start(
    dense: Tensor, rank: int, generator: torch.Generator
) -> list[Tensor] | None:
    """CP factors from two random mixtures of the identity slices (Jennrich's algorithm).

    With ``U [F, R]``, ``V [N, R]`` the leading singular vectors of the attribute and Gaussian
    unfoldings, the reduced slices :math:`T_k = U^T W[k] V = B' \\operatorname{diag}(A[k]) C'^T`
    (``B' = U^T B``, ``C' = V^T C``, both ``[R, R]``) give, for random mixtures ``x, y``,
    :math:`M_x M_y^{-1} = B' \\operatorname{diag}(A^T x / A^T y) B'^{-1}`: its eigenvectors are
    the columns of ``B'``, and :math:`(B'^{-1} M_y)^T = C' \\operatorname{diag}(A^T y)` gives
    ``C'`` up to column scales, which the first ALS update of ``A`` absorbs. Exact for a tensor of
    CP rank ``R`` in generic position; needs ``R <= min(F, N)`` and ``K >= 2``.

    Returns:
        ``[A, B, C]`` (``A`` a placeholder, overwritten by the first sweep), or ``None`` where the
        conditions fail or the eigenproblem is numerically unusable.
    """
    k, f, n = dense.shape
    if k < 2 or rank > min(f, n):
        return None
    u = torch.linalg.svd(unfold(dense, 1), full_matrices=False)[0][:, :rank]
    v = torch.linalg.svd(unfold(dense, 2), full_matrices=False)[0][:, :rank]
    reduced = torch.einsum("kfn,fr,ns->krs", dense, u, v)
    x, y = torch.randn(2, k, generator=generator, dtype=dense.dtype)
    mixed_x, mixed_y = torch.einsum("k,krs->rs", x, reduced), torch.einsum("k,krs->rs", y, reduced)
    try:
        _, vectors = torch.linalg.eig(mixed_x @ torch.linalg.inv(mixed_y))
        b_reduced = vectors.real
        c_reduced = torch.linalg.solve(b_reduced, mixed_y).T
    except RuntimeError:  # singular mixture: fall back to the HOSVD start
        return None
    start = [torch.ones(k, rank, dtype=dense.dtype), u @ b_reduced, v @ c_reduced]
    return start if all(torch.isfinite(t).all() for t in start) else None


def _als_sweeps(
    work: Tensor, factors: list[Tensor], iterations: int, tol: float
) -> tuple[float, list[Tensor], int]:
    """Run ALS sweeps from ``factors`` (float64, modified); return (relative error, factors, sweeps)."""
    specs = ("kfn,fr,nr->kr", "kfn,kr,nr->fr", "kfn,kr,fr->nr")
    rank = factors[0].shape[1]
    error, sweeps = math.inf, 0
    norms = torch.ones(rank, dtype=work.dtype)
    for sweeps in range(1, iterations + 1):
        for mode in range(3):
            others = [factors[m] for m in range(3) if m != mode]
            gram = (others[0].T @ others[0]) * (others[1].T @ others[1])
            rhs = torch.einsum(specs[mode], work, *others)
            update = rhs @ torch.linalg.pinv(gram, hermitian=True)
            norms = update.norm(dim=0).clamp_min(1e-300)
            factors[mode] = update / norms
        new_error = _relative_error(work, cp_dense(factors[0], factors[1], factors[2] * norms))
        converged = abs(error - new_error) < tol or new_error < tol
        error = new_error
        if converged:
            break
    share = norms.pow(1.0 / 3.0)  # the last update's column norms, spread over the factors
    return error, [f * share for f in factors], sweeps


def cp_als(
    dense: Tensor,
    rank: int,
    *,
    iterations: int = 100,
    tol: float = 1e-12,
    seed: int = 0,
) -> CPDecomposition:
    """CP decomposition of a dense ``[K, F, N]`` tensor by alternating least squares.

    Each sweep solves the three linear least-squares problems in turn, e.g. for ``A``

    .. math:: A \\leftarrow W_{(1)} (C \\odot B)\\, \\big(B^T B * C^T C\\big)^{+},

    written as ``einsum("kfn,fr,nr->kr", W, B, C) @ pinv((B^T B) * (C^T C))`` (``*`` the
    Hadamard product, ``+`` the pseudo-inverse, so ranks above a mode size, e.g. ``R > K``, are
    fine), then normalises the columns of the updated factor. Sweeps stop after ``iterations``
    or when the relative error changes by less than ``tol``; at the end the column norms are
    spread evenly over the three factors (balanced scales suit gradient training).

    Two starts are tried, the better result kept: simultaneous diagonalisation of two random
    mixtures of the identity slices (Jennrich's algorithm, when ``K >= 2`` and
    ``R <= min(F, N)``; it is exact for a tensor of CP rank ``R`` in generic position, so ALS
    then only polishes, and the second start is skipped once the error is below 1e-10), and the
    HOSVD (the ``R`` leading left singular vectors of each unfolding, random columns where a mode
    has fewer). ALS alone from the HOSVD can crawl through "swamps" for hundreds of sweeps even
    on exact low-rank data. For a general tensor the result is a local optimum (a best rank-R
    CP approximation need not exist).

    Args:
        dense: ``[K, F, N]``.
        rank: ``R >= 1``.
        iterations: most sweeps.
        tol: stop when the relative error improves by less than this.
        seed: random columns of the start.

    Returns:
        :class:`CPDecomposition` in ``dense``'s dtype and device.
    """
    _check_dense(dense)
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    generator = torch.Generator().manual_seed(seed)
    work = dense.detach().to("cpu", torch.float64)
    hosvd = [_leading_vectors(unfold(work, m), rank, generator) for m in range(3)]
    starts = [hosvd]
    diagonalised = _simultaneous_diagonalisation_start(work, rank, generator)
    if diagonalised is not None:
        starts.insert(0, diagonalised)
    best: tuple[float, list[Tensor], int] | None = None
    for start in starts:
        error, factors, sweeps = _als_sweeps(work, [t.clone() for t in start], iterations, tol)
        if best is None or error < best[0]:
            best = (error, factors, sweeps)
        if error < 1e-10:  # exact: no need to try the other start
            break
    error, (a, b, c), sweeps = best  # type: ignore[misc]
    cast = lambda t: t.to(dense.device, dense.dtype)
    return CPDecomposition(cast(a), cast(b), cast(c), error, sweeps)


def cp_from_table(
    table: Tensor, num_identities: int, rank: int, *, pad_scale: float = 1e-3, seed: int = 0
) -> CPDecomposition:
    """CP factors of the tensor whose ``K`` identities all equal one ``[N, F]`` table.

    The official initialisation (all subjects start from the same point cloud): with the SVD
    :math:`T = U S V^T` of the table, :math:`C = U_R S_R^{1/2}`, :math:`B = V_R S_R^{1/2}` and
    :math:`A = \\mathbf 1_{K \\times R}`, so every identity's table is the best rank-R
    approximation of ``T`` (Eckart-Young), exactly ``T`` when ``R >= rank(T)``. Components beyond
    ``min(N, F)`` get small random ``B`` and ``C`` columns (``pad_scale``; their product,
    ~``pad_scale^2``, barely changes the tables) so that training can use them: an all-zero
    component would receive zero gradient forever.

    Args:
        table: ``[N, F]`` attributes.
        num_identities: ``K >= 1``.
        rank: ``R >= 1``.
        pad_scale: size of the extra components' random entries.
        seed: their random numbers.

    Returns:
        :class:`CPDecomposition` (``relative_error`` w.r.t. the repeated table).
    """
    if table.ndim != 2:
        raise ValueError(f"table must be [N, F], got {tuple(table.shape)}")
    if num_identities < 1 or rank < 1:
        raise ValueError(f"need num_identities >= 1 and rank >= 1, got {num_identities}, {rank}")
    work = table.detach().to("cpu", torch.float64)
    u, s, vh = torch.linalg.svd(work, full_matrices=False)
    kept = min(rank, s.shape[0])
    root = s[:kept].sqrt()
    generator = torch.Generator().manual_seed(seed)
    n, f = work.shape
    c = torch.randn(n, rank, generator=generator, dtype=torch.float64) * pad_scale
    b = torch.randn(f, rank, generator=generator, dtype=torch.float64) * pad_scale
    c[:, :kept] = u[:, :kept] * root
    b[:, :kept] = vh[:kept].T * root
    a = torch.ones(num_identities, rank, dtype=torch.float64)
    approx = cp_identity_table(a[0], b, c)
    norm = float(work.norm())
    error = float((approx - work).norm()) / norm if norm > 0 else float((approx - work).norm())
    cast = lambda t: t.to(table.device, table.dtype)
    return CPDecomposition(cast(a), cast(b), cast(c), error, 0)


def tucker_hosvd(dense: Tensor, ranks: tuple[int, int, int]) -> TuckerDecomposition:
    """Tucker decomposition of a dense ``[K, F, N]`` tensor by the higher-order SVD.

    Factor ``m`` holds the ``R_m`` leading left singular vectors of the mode-``m`` unfolding
    :math:`W_{(m)}`; the core is the projection
    :math:`G = W \\times_1 A^T \\times_2 B^T \\times_3 C^T`. Exact (up to rounding) when the
    multilinear rank of ``W`` is at most ``ranks``; otherwise quasi-optimal (within
    :math:`\\sqrt{3}` of the best Tucker approximation).

    Args:
        dense: ``[K, F, N]``.
        ranks: ``(R1, R2, R3)``, each at most the corresponding mode size.

    Returns:
        :class:`TuckerDecomposition` in ``dense``'s dtype and device.
    """
    _check_dense(dense)
    if len(ranks) != 3:
        raise ValueError(f"ranks must be three integers (R1, R2, R3), got {ranks!r}")
    for mode, (r, size) in enumerate(zip(ranks, dense.shape)):
        if not 1 <= r <= size:
            raise ValueError(f"rank R{mode + 1}={r} must lie in [1, {size}] (mode {mode} size)")
    work = dense.detach().to("cpu", torch.float64)
    factors = [
        torch.linalg.svd(unfold(work, m), full_matrices=False)[0][:, :r]
        for m, r in enumerate(ranks)
    ]
    core = torch.einsum("kfn,kp,fq,ns->pqs", work, *factors)
    residual = work - tucker_dense(factors[0], core, factors[1], factors[2])
    norm = float(work.norm())
    error = float(residual.norm()) / norm if norm > 0 else float(residual.norm())
    cast = lambda t: t.to(dense.device, dense.dtype)
    return TuckerDecomposition(cast(core), *(cast(f) for f in factors), relative_error=error)


# ====================================================================== modules
class IdentityTensor(nn.Module, abc.ABC):
    """A low-rank ``[K, F, N]`` tensor of per-identity Gaussian tables (the storage they share).

    Parameters (all trainable unless frozen):

    * ``identity_rows``: one ``[R1]`` parameter per identity (rows of ``A``), so a single identity
      can be trained alone (:meth:`train_only_identity`);
    * ``feature_blocks``: ``B`` in named row blocks (``{"features": B}`` by default, or one block
      per attribute, e.g. ``feature_blocks=attribute_sizes(3)``), concatenated in the order given
      (kept in ``block_names``);
    * ``gaussian_factors``: ``C [N, R3]``;
    * the subclass's own shared parameters (the Tucker core).

    Args:
        identity_factors: ``A [K, R1]`` (``K >= 1``).
        feature_factors: ``B [F, R2]``.
        gaussian_factors: ``C [N, R3]``.
        feature_blocks: optional ``{name: rows}`` partition of ``B``'s ``F`` rows.
    """

    def __init__(
        self,
        identity_factors: Tensor,
        feature_factors: Tensor,
        gaussian_factors: Tensor,
        feature_blocks: Mapping[str, int] | None = None,
    ):
        super().__init__()
        if identity_factors.ndim != 2 or identity_factors.shape[0] < 1:
            raise ValueError(
                f"identity factors must be [K >= 1, R], got {tuple(identity_factors.shape)}"
            )
        if feature_factors.ndim != 2 or gaussian_factors.ndim != 2:
            raise ValueError(
                f"feature and Gaussian factors must be matrices, got {tuple(feature_factors.shape)} "
                f"and {tuple(gaussian_factors.shape)}"
            )
        blocks = (
            dict(feature_blocks)
            if feature_blocks is not None
            else {"features": feature_factors.shape[0]}
        )
        if sum(blocks.values()) != feature_factors.shape[0] or min(blocks.values()) < 1:
            raise ValueError(
                f"feature blocks {blocks} must be positive and sum to the {feature_factors.shape[0]} "
                "rows of the feature factors"
            )
        self.identity_rows = nn.ParameterList(
            [nn.Parameter(row.detach().clone()) for row in identity_factors]
        )
        parts = torch.split(feature_factors.detach(), list(blocks.values()), dim=0)
        # a list of pairs: nn.ParameterDict sorts the keys of a plain dict, and the order matters
        self.feature_blocks = nn.ParameterDict(
            [(name, nn.Parameter(part.clone())) for name, part in zip(blocks, parts)]
        )
        self.block_names: tuple[str, ...] = tuple(blocks)
        self.gaussian_factors = nn.Parameter(gaussian_factors.detach().clone())

    # ------------------------------------------------------------------ factors
    @property
    def identity_factors(self) -> Tensor:
        """``A [K, R1]`` (stacked identity rows, differentiable)."""
        return torch.stack(list(self.identity_rows))

    @property
    def feature_factors(self) -> Tensor:
        """``B [F, R2]`` (concatenated feature blocks, differentiable)."""
        return torch.cat([self.feature_blocks[name] for name in self.block_names], dim=0)

    @property
    def num_identities(self) -> int:
        """``K``."""
        return len(self.identity_rows)

    @property
    def num_features(self) -> int:
        """``F``: attribute columns of every table."""
        return sum(block.shape[0] for block in self.feature_blocks.values())

    @property
    def num_gaussians(self) -> int:
        """``N``."""
        return self.gaussian_factors.shape[0]

    def _row(self, k: int) -> Tensor:
        if not isinstance(k, int) or not -self.num_identities <= k < self.num_identities:
            raise IndexError(f"identity {k!r} out of range for {self.num_identities} identities")
        return self.identity_rows[k]

    @abc.abstractmethod
    def identity(self, k: int) -> Tensor:
        """``[N, F]``: canonical attribute table of identity ``k`` (row ``n`` = Gaussian ``n``)."""

    @abc.abstractmethod
    def dense(self) -> Tensor:
        """``[K, F, N]``: the full tensor (for tests and small exports; memory ``K F N``)."""

    @abc.abstractmethod
    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters shared by every identity (``B`` blocks, ``C``, core)."""

    # ------------------------------------------------------------------ identities
    def add_identity(self, init: Tensor | None = None) -> int:
        """Append a row to ``A`` as a new parameter and return its index.

        Args:
            init: ``[R1]`` initial row; default the mean of the existing rows (the "average
                subject", a neutral start for fitting an unseen identity).

        Returns:
            The new identity's index ``K`` (``num_identities`` grows by one). An optimiser made
            before the call does not see the new parameter: add a param group
            (``self.identity_rows[k]``) or build a new one.
        """
        reference = self.identity_rows[0]
        if init is None:
            row = self.identity_factors.detach().mean(0)
        else:
            row = torch.as_tensor(init, dtype=reference.dtype, device=reference.device).detach()
            if row.shape != reference.shape:
                raise ValueError(
                    f"identity row must be [{reference.shape[0]}], got {tuple(row.shape)}"
                )
        self.identity_rows.append(nn.Parameter(row.clone()))
        return self.num_identities - 1

    def freeze_shared(self) -> None:
        """Stop gradients to the shared factors (identity rows keep their setting)."""
        for parameter in self.shared_parameters():
            parameter.requires_grad_(False)

    def train_only_identity(self, k: int) -> nn.Parameter:
        """Freeze everything but identity ``k``'s row; return that row (to give an optimiser)."""
        self.freeze_shared()
        target = self._row(k)
        for row in self.identity_rows:
            row.requires_grad_(row is target)
        return target

    def unfreeze(self) -> None:
        """Make every parameter trainable again."""
        for parameter in self.parameters():
            parameter.requires_grad_(True)

    # ------------------------------------------------------------------ sizes
    def num_parameters(self) -> int:
        """Stored numbers (frozen ones included)."""
        return sum(p.numel() for p in self.parameters())

    def dense_numel(self) -> int:
        """``K F N``: numbers of the tensor the factors stand for."""
        return self.num_identities * self.num_features * self.num_gaussians

    def compression_ratio(self) -> float:
        """``K F N / num_parameters()``."""
        return self.dense_numel() / self.num_parameters()


class CPTensor(IdentityTensor):
    """CP (rank-R) multi-identity tensor :math:`W[k, f, n] = \\sum_r A[k,r] B[f,r] C[n,r]`.

    Args:
        identity_factors: ``A [K, R]``.
        feature_factors: ``B [F, R]``.
        gaussian_factors: ``C [N, R]``.
        feature_blocks: optional named partition of ``B``'s rows (see :class:`IdentityTensor`).

    Example:
        >>> cp = CPTensor.random(num_identities=4, num_features=59, num_gaussians=1000, rank=100)
        >>> cp.identity(2).shape
        torch.Size([1000, 59])
    """

    def __init__(
        self,
        identity_factors: Tensor,
        feature_factors: Tensor,
        gaussian_factors: Tensor,
        feature_blocks: Mapping[str, int] | None = None,
    ):
        rank = identity_factors.shape[-1]
        if feature_factors.shape[-1] != rank or gaussian_factors.shape[-1] != rank:
            raise ValueError(
                f"CP factors need one rank R, got A {tuple(identity_factors.shape)}, "
                f"B {tuple(feature_factors.shape)}, C {tuple(gaussian_factors.shape)}"
            )
        super().__init__(identity_factors, feature_factors, gaussian_factors, feature_blocks)

    # ------------------------------------------------------------------ construction
    @classmethod
    def random(
        cls,
        num_identities: int,
        num_features: int,
        num_gaussians: int,
        rank: int,
        *,
        scale: float = 1.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        feature_blocks: Mapping[str, int] | None = None,
    ) -> CPTensor:
        """Gaussian random factors with entries of std ``(scale^2 / R)^{1/6}``.

        Then every entry of ``W`` (a sum of ``R`` products of three such numbers) has std
        ``scale``.
        """
        std = (scale * scale / rank) ** (1.0 / 6.0)
        draw = lambda *shape: torch.randn(*shape, generator=generator, dtype=dtype) * std
        return cls(
            draw(num_identities, rank),
            draw(num_features, rank),
            draw(num_gaussians, rank),
            feature_blocks,
        )

    @classmethod
    def from_dense(
        cls,
        dense: Tensor,
        rank: int,
        *,
        iterations: int = 100,
        tol: float = 1e-12,
        seed: int = 0,
        feature_blocks: Mapping[str, int] | None = None,
    ) -> CPTensor:
        """Fit the factors of a dense ``[K, F, N]`` tensor by ALS (:func:`cp_als`)."""
        fit = cp_als(dense, rank, iterations=iterations, tol=tol, seed=seed)
        return cls(fit.identity_factors, fit.feature_factors, fit.gaussian_factors, feature_blocks)

    @classmethod
    def from_table(
        cls,
        table: Tensor,
        num_identities: int,
        rank: int,
        *,
        pad_scale: float = 1e-3,
        seed: int = 0,
        feature_blocks: Mapping[str, int] | None = None,
    ) -> CPTensor:
        """Every identity starts as the same ``[N, F]`` table (:func:`cp_from_table`)."""
        fit = cp_from_table(table, num_identities, rank, pad_scale=pad_scale, seed=seed)
        return cls(fit.identity_factors, fit.feature_factors, fit.gaussian_factors, feature_blocks)

    # ------------------------------------------------------------------ evaluation
    @property
    def rank(self) -> int:
        """``R``."""
        return self.gaussian_factors.shape[1]

    def identity(self, k: int) -> Tensor:
        """``[N, F]``: :math:`C \\operatorname{diag}(A[k]) B^T`, gradients to ``A[k]``, ``B``, ``C`` only."""
        return cp_identity_table(self._row(k), self.feature_factors, self.gaussian_factors)

    def dense(self) -> Tensor:
        """``[K, F, N]``: :math:`\\sum_r A[:, r] \\circ B[:, r] \\circ C[:, r]`."""
        return cp_dense(self.identity_factors, self.feature_factors, self.gaussian_factors)

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.feature_blocks.values(), self.gaussian_factors]


class TuckerTensor(IdentityTensor):
    """Tucker multi-identity tensor :math:`W = G \\times_1 A \\times_2 B \\times_3 C`.

    Args:
        core: ``G [R1, R2, R3]``.
        identity_factors: ``A [K, R1]``.
        feature_factors: ``B [F, R2]``.
        gaussian_factors: ``C [N, R3]``.
        feature_blocks: optional named partition of ``B``'s rows (see :class:`IdentityTensor`).
    """

    def __init__(
        self,
        core: Tensor,
        identity_factors: Tensor,
        feature_factors: Tensor,
        gaussian_factors: Tensor,
        feature_blocks: Mapping[str, int] | None = None,
    ):
        expected = (
            identity_factors.shape[-1],
            feature_factors.shape[-1],
            gaussian_factors.shape[-1],
        )
        if tuple(core.shape) != expected:
            raise ValueError(
                f"Tucker core must be {list(expected)} for these factors, got {list(core.shape)}"
            )
        super().__init__(identity_factors, feature_factors, gaussian_factors, feature_blocks)
        self.core = nn.Parameter(core.detach().clone())

    @classmethod
    def from_dense(
        cls,
        dense: Tensor,
        ranks: tuple[int, int, int],
        *,
        feature_blocks: Mapping[str, int] | None = None,
    ) -> TuckerTensor:
        """Factors of a dense ``[K, F, N]`` tensor by the HOSVD (:func:`tucker_hosvd`)."""
        fit = tucker_hosvd(dense, ranks)
        return cls(
            fit.core,
            fit.identity_factors,
            fit.feature_factors,
            fit.gaussian_factors,
            feature_blocks,
        )

    @property
    def ranks(self) -> tuple[int, int, int]:
        """``(R1, R2, R3)``."""
        return tuple(self.core.shape)  # type: ignore[return-value]

    def identity(self, k: int) -> Tensor:
        """``[N, F]``: :math:`C (\\sum_p A[k, p] G[p])^T B^T`."""
        return tucker_identity_table(
            self._row(k), self.core, self.feature_factors, self.gaussian_factors
        )

    def dense(self) -> Tensor:
        """``[K, F, N]``."""
        return tucker_dense(
            self.identity_factors, self.core, self.feature_factors, self.gaussian_factors
        )

    def shared_parameters(self) -> list[nn.Parameter]:
        return [self.core, *self.feature_blocks.values(), self.gaussian_factors]
