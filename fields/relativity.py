"""Geometry of a spacetime metric by automatic differentiation (torch.func), batched.

The same code serves an analytic chart (:mod:`tensorfield.datasets.spacetimes`) and a neural
field (:mod:`tensorfield.fields.einfield`): both are a function ``coords [4] -> g [4, 4]`` that
:func:`metric_jets` differentiates with forward-mode :func:`torch.func.jacfwd` (twice for the
Hessian) and :func:`torch.func.vmap` over points. Everything else is tensor algebra on the jets
(no further differentiation), so the curvature of a network is as cheap as its Hessian.

Conventions (Misner, Thorne & Wheeler; Carroll, *Spacetime and Geometry*, ch. 3):

* ``dg[..., i, j, k] = d_k g_ij`` and ``ddg[..., i, j, k, l] = d_l d_k g_ij`` (derivative
  indices last, as :func:`torch.func.jacfwd` appends them);
* Christoffel symbols ``Gamma[..., a, b, c] = Gamma^a_bc = 1/2 g^ad (d_b g_dc + d_c g_db - d_d g_bc)``;
* Riemann ``R[..., a, b, c, d] = R^a_bcd = d_c Gamma^a_db - d_d Gamma^a_cb
  + Gamma^a_ce Gamma^e_db - Gamma^a_de Gamma^e_cb``;
* Ricci ``R_bd = R^a_bad``, scalar ``R = g^bd R_bd``, Einstein ``G_bd = R_bd - R g_bd / 2``,
  Kretschmann ``K = R_abcd R^abcd``.

All of these are unchanged by flipping the metric's overall sign except the lowered Ricci scalar
and Einstein tensor's sign, so results compare directly with codes in the ``(+, -, -, -)``
signature (einsteinpy) for the Christoffels, Riemann ``R^a_bcd``, Ricci ``R_bd`` and Kretschmann.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jacfwd, vmap

MetricFunction = Callable[[Tensor], Tensor]
"""``coords [4] -> g [4, 4]`` for one point (also fine on a batch ``[..., 4]``)."""


@dataclass
class MetricJets:
    """A metric and its coordinate derivatives at ``N`` points.

    Attributes:
        metric: ``[N, 4, 4]`` ``g_ij``.
        jacobian: ``[N, 4, 4, 4]`` ``d_k g_ij`` (last index the derivative).
        hessian: ``[N, 4, 4, 4, 4]`` ``d_l d_k g_ij``, or ``None`` when only first order was asked.
    """

    metric: Tensor
    jacobian: Tensor
    hessian: Tensor | None = None


def metric_jets(metric_fn: MetricFunction, coords: Tensor, order: int = 2, chunk_size: int | None = None) -> MetricJets:
    """The metric and its first (and second) derivatives by forward-mode autodiff.

    Args:
        metric_fn: ``coords [4] -> g [4, 4]`` (an analytic chart or a network).
        coords: ``[N, 4]`` points.
        order: 1 for ``g, dg``; 2 adds the Hessian.
        chunk_size: points per vectorised chunk (bounds memory for large ``N``; ``None`` = all).

    Returns:
        :class:`MetricJets` in the dtype of ``metric_fn``'s output. Differentiable: gradients
        flow to any parameters ``metric_fn`` closes over (Sobolev training).
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")

    def first(point: Tensor) -> tuple[Tensor, Tensor]:
        g = metric_fn(point)
        return g, g

    jet1 = jacfwd(first, has_aux=True)  # point -> (dg, g)
    if order == 1:
        dg, g = vmap(jet1, chunk_size=chunk_size)(coords)
        return MetricJets(g, dg)

    def second(point: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        dg, g = jet1(point)
        return dg, (dg, g)

    ddg, (dg, g) = vmap(jacfwd(second, has_aux=True), chunk_size=chunk_size)(coords)
    return MetricJets(g, dg, ddg)


def _christoffel_bracket(dg: Tensor) -> Tensor:
    """``[..., d, b, c]`` ``d_b g_dc + d_c g_db - d_d g_bc`` (twice the first-kind symbols)."""
    return dg.transpose(-1, -2) + dg - dg.permute(*range(dg.ndim - 3), -1, -3, -2)


def christoffel_symbols(metric: Tensor, jacobian: Tensor, inverse: Tensor | None = None) -> Tensor:
    """``Gamma^a_bc`` ``[..., 4, 4, 4]`` from ``g [..., 4, 4]`` and ``d_k g_ij [..., 4, 4, 4]``."""
    inverse = torch.linalg.inv(metric) if inverse is None else inverse
    return 0.5 * torch.einsum("...ad,...dbc->...abc", inverse, _christoffel_bracket(jacobian))


def christoffel_derivatives(metric: Tensor, jacobian: Tensor, hessian: Tensor, inverse: Tensor | None = None) -> Tensor:
    """``d_e Gamma^a_bc`` ``[..., a, b, c, e]`` from the metric's jets, using
    ``d_e g^ad = -g^am (d_e g_mn) g^nd``."""
    inverse = torch.linalg.inv(metric) if inverse is None else inverse
    d_inverse = -torch.einsum("...am,...mne,...nd->...ade", inverse, jacobian, inverse)
    bracket = _christoffel_bracket(jacobian)
    # d_e of the bracket: the same index shuffle with the extra derivative index e kept last
    d_bracket = hessian.transpose(-2, -3) + hessian - hessian.permute(*range(hessian.ndim - 4), -2, -4, -3, -1)
    return 0.5 * (
        torch.einsum("...ade,...dbc->...abce", d_inverse, bracket)
        + torch.einsum("...ad,...dbce->...abce", inverse, d_bracket)
    )


def riemann_tensor(christoffel: Tensor, christoffel_derivative: Tensor) -> Tensor:
    """``R^a_bcd`` ``[..., 4, 4, 4, 4]`` from ``Gamma^a_bc`` and ``d_e Gamma^a_bc [..., a, b, c, e]``."""
    d_gamma = christoffel_derivative  # [a, b, c, e] = d_e Gamma^a_bc
    derivative = torch.einsum("...adbc->...abcd", d_gamma) - torch.einsum("...acbd->...abcd", d_gamma)
    quadratic = torch.einsum("...ace,...edb->...abcd", christoffel, christoffel) - torch.einsum(
        "...ade,...ecb->...abcd", christoffel, christoffel
    )
    return derivative + quadratic


@dataclass
class Curvature:
    """The geometry of a metric at ``N`` points (see the module docstring for the conventions).

    Attributes:
        metric: ``[N, 4, 4]``.
        jacobian: ``[N, 4, 4, 4]``.
        hessian: ``[N, 4, 4, 4, 4]``.
        christoffel: ``[N, 4, 4, 4]`` ``Gamma^a_bc``.
        riemann: ``[N, 4, 4, 4, 4]`` ``R^a_bcd``.
        ricci: ``[N, 4, 4]`` ``R_bd``.
        ricci_scalar: ``[N]``.
        einstein: ``[N, 4, 4]`` ``G_bd``.
        kretschmann: ``[N]`` ``R_abcd R^abcd``.
    """

    metric: Tensor
    jacobian: Tensor
    hessian: Tensor
    christoffel: Tensor
    riemann: Tensor
    ricci: Tensor
    ricci_scalar: Tensor
    einstein: Tensor
    kretschmann: Tensor


def curvature_from_jets(jets: MetricJets) -> Curvature:
    """Christoffels, Riemann, Ricci, Einstein and Kretschmann from second-order :class:`MetricJets`."""
    if jets.hessian is None:
        raise ValueError("curvature needs the metric's Hessian (metric_jets(..., order=2))")
    g, dg, ddg = jets.metric, jets.jacobian, jets.hessian
    inverse = torch.linalg.inv(g)
    gamma = christoffel_symbols(g, dg, inverse)
    riemann = riemann_tensor(gamma, christoffel_derivatives(g, dg, ddg, inverse))
    ricci = torch.einsum("...abad->...bd", riemann)
    scalar = torch.einsum("...bd,...bd->...", inverse, ricci)
    einstein = ricci - 0.5 * scalar[..., None, None] * g
    lowered = torch.einsum("...ae,...ebcd->...abcd", g, riemann)
    raised = torch.einsum("...abcd,...bf,...cg,...dh->...afgh", riemann, inverse, inverse, inverse)
    kretschmann = torch.einsum("...abcd,...abcd->...", lowered, raised)
    return Curvature(g, dg, ddg, gamma, riemann, ricci, scalar, einstein, kretschmann)


def curvature(metric_fn: MetricFunction, coords: Tensor, chunk_size: int | None = None) -> Curvature:
    """All of :class:`Curvature` for ``metric_fn`` at ``coords [N, 4]``."""
    return curvature_from_jets(metric_jets(metric_fn, coords, order=2, chunk_size=chunk_size))


def christoffels_at(metric_fn: MetricFunction, coords: Tensor, chunk_size: int | None = None) -> Tensor:
    """``Gamma^a_bc`` ``[N, 4, 4, 4]`` (first derivatives only: cheaper than :func:`curvature`)."""
    jets = metric_jets(metric_fn, coords, order=1, chunk_size=chunk_size)
    return christoffel_symbols(jets.metric, jets.jacobian)
