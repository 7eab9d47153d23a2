"""Adam (or SOAP, when a model asks for it) over a model's parameter groups, with per-group
exponential learning-rate decay.

Each :class:`~tensorfield.fields.base.ParamGroup` decays as

    lr(step) = lr * decay_ratio ** ((step - base_step) / decay_steps)

where ``base_step`` is the first step taken by the current optimiser: 0 at the start, and the
step after a hook that asked for ``rebuild_optimizer`` (TensoRF's "reset the learning rate at
each upsampling"). So the first optimiser step after a rebuild uses the undecayed ``lr``.

:func:`apply_param_surgery` is the other way a model can change its parameters: Gaussians added or
removed row by row (:class:`~tensorfield.fields.base.ParamSurgery`). The optimiser is kept; each
replaced parameter takes over its predecessor's group and per-row state.
"""

from __future__ import annotations

import torch
from tensorfield.fields.base import Field, ParamGroup, ParamSurgery
from torch import nn, optim



def scheduled_lr(group: ParamGroup, step: int, base_step: int) -> float:
    """Learning rate of ``group`` at ``step`` for an optimiser built before ``base_step``."""
    return group.lr * group.decay_ratio ** ((step - base_step) / max(group.decay_steps, 1))


def build_optimizer(model: nn.Module, config) -> tuple[optim.Optimizer, list[ParamGroup]]:
    """A fresh Adam over ``model.param_groups()`` (empty groups are skipped), or the optimiser
    :meth:`~tensorfield.fields.base.Field.optimizer_settings` names (``"soap"``: pytorch-optimizer's
    SOAP with the model's keyword arguments; Einstein fields).

    Betas and epsilon come from the model (:meth:`~tensorfield.fields.base.Field.adam_settings`,
    by default ``(0.9, 0.99)``, TensoRF's choice, and ``1e-8``).

    The fused Adam kernel is used where torch has one for the parameters' device and dtype
    (CPU and CUDA floating point): the same update rule, about 5x faster than the ``foreach``
    path on CPU for TensoRF's 4M-parameter grids.

    Returns:
        The optimiser and the :class:`ParamGroup` list aligned with its ``param_groups``.
    """
    groups = [group for group in model.param_groups() if len(group.params) > 0]
    if not groups:
        raise ValueError(f"{type(model).__name__}.param_groups() returned no parameters to optimise")
    kind, settings = model.optimizer_settings() if isinstance(model, Field) else Field.optimizer_settings(model)
    betas, eps = model.adam_settings() if isinstance(model, Field) else Field.adam_settings(model)
    betas, eps = tuple(float(b) for b in betas), float(eps)
    param_groups = [{"params": list(group.params), "lr": group.lr, "name": group.name} for group in groups]
    if kind == "soap":
        from pytorch_optimizer import SOAP

        return SOAP(param_groups, **{"eps": eps, **settings}), groups
    if kind != "adam":
        raise ValueError(f"{type(model).__name__}.optimizer_settings(): unknown optimiser '{kind}' (use adam or soap)")
    params = [p for group in groups for p in group.params]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    try:
        optimizer = optim.Adam(param_groups, betas=betas, eps=eps, fused=fused or None)
    except (RuntimeError, ValueError):  # no fused kernel for this device/dtype in this torch
        optimizer = optim.Adam(param_groups, betas=betas, eps=eps)
    return optimizer, groups


def apply_lr_schedule(optimizer: optim.Optimizer, groups: list[ParamGroup], step: int, base_step: int) -> dict[str, float]:
    """Set every group's learning rate for ``step``; returns ``{group name: lr}``."""
    rates = {}
    for torch_group, group in zip(optimizer.param_groups, groups):
        torch_group["lr"] = scheduled_lr(group, step, base_step)
        rates[group.name] = torch_group["lr"]
    return rates


def apply_param_surgery(optimizer: optim.Optimizer, groups: list[ParamGroup], surgery: tuple[ParamSurgery, ...] | list[ParamSurgery]) -> None:
    """Move the optimiser to the replaced parameters of ``surgery``, keeping the surviving state.

    For each :class:`ParamSurgery`, in order: ``new`` takes ``old``'s place in its optimiser group
    (and in the matching :class:`ParamGroup`); every state tensor shaped like ``old`` (Adam's
    ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) is gathered along rows with ``rows``, zero
    where ``rows == -1``; other state (Adam's ``step`` counter) is kept as it is. A parameter
    without state yet (no step taken) just gets swapped.

    Raises:
        ValueError: ``old`` is not in the optimiser, or ``rows`` does not match ``new``.
    """
    for change in surgery:
        old, new, rows = change.old, change.new, change.rows
        if rows.ndim != 1 or rows.shape[0] != new.shape[0] or new.shape[1:] != old.shape[1:]:
            raise ValueError(
                f"parameter surgery: rows {tuple(rows.shape)} / shapes {tuple(old.shape)} -> {tuple(new.shape)} do not fit"
            )
        placed = False
        for torch_group in optimizer.param_groups:
            for i, param in enumerate(torch_group["params"]):
                if param is old:
                    torch_group["params"][i] = new
                    placed = True
        if not placed:
            raise ValueError(f"parameter surgery: a {tuple(old.shape)} parameter is not in the optimiser")
        for group in groups:
            group.params = [new if param is old else param for param in group.params]
        state = optimizer.state.pop(old, None)
        if not state:
            continue
        rows = rows.to(new.device)
        keep = rows >= 0
        source = rows.clamp_min(0)
        moved = {}
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == old.shape:
                gathered = value.index_select(0, source)
                moved[key] = torch.where(keep.view(-1, *([1] * (value.ndim - 1))), gathered, torch.zeros_like(gathered))
            else:
                moved[key] = value
        optimizer.state[new] = moved
