"""New identities fitted on top of a trained multi-identity model (``tensorfield fit-identity``).

MIGS's unseen-identity experiment: the shared factors, the other identities' rows, the skinning
and the non-rigid network stay as trained; only the new subjects' rows of the identity factor
are optimised, from a short video of each. It runs through the common :class:`~.trainer.Trainer`
as a run of its own:

1. the base run is opened (:func:`~.trainer.load_run`); its model must implement
   :class:`~tensorfield.fields.base.FitsIdentities`;
2. the new run's config is the base's, with the new data, the values the model asks for
   (:meth:`~tensorfield.fields.base.FitsIdentities.identity_fit_values`: for MIGS the names of its
   rows, ``identity_rows``) and the user's overrides on top (e.g. ``steps=500``,
   ``train_split=novel_identity``);
3. the method's data factory and model are built from that config (so a later
   :func:`~.trainer.load_run` of the new run rebuilds them the same way), the model takes the
   base's trained values (:meth:`~tensorfield.fields.base.FitsIdentities.start_identity_fit`),
   and a fresh trainer optimises what is left trainable.

The new run folder then evaluates, renders, exports, resumes and opens in the viewer like any run.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from tensorfield.engine.checkpoint import latest_checkpoint
from tensorfield.engine.config import config_from_dict, config_to_dict
from tensorfield.engine.trainer import Trainer, build_data, build_model, load_run, seed_everything
from tensorfield.fields.base import FitsIdentities


class FitError(ValueError):
    """A fit of new identities that cannot start (one line)."""


@dataclasses.dataclass
class IdentityFit:
    """What :func:`identity_fit` prepares.

    Attributes:
        trainer: the new run's trainer, ready to :meth:`~.trainer.Trainer.train`.
        base_run: the run it was fitted from.
        rows: the new identities' indices in the model.
    """

    trainer: Trainer
    base_run: Path
    rows: list[int]


def identity_fit(
    run: str | os.PathLike,
    data_path: str | os.PathLike,
    out: str | os.PathLike,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    device: str | None = None,
    checkpoint: str | None = None,
) -> IdentityFit:
    """Prepare a run that fits the identities of ``data_path`` that ``run``'s model lacks.

    Args:
        run: the trained base run (folder or checkpoint).
        data_path: data showing the new subjects (for avatars: an avatars folder; subjects it
            shares with the base run by name keep their trained rows).
        out: the new run folder (must not hold a run yet).
        overrides: ``key=value`` config overrides on top of the base run's config.
        device: see :func:`~.trainer.resolve_device`.
        checkpoint: which checkpoint of ``run`` (default: the newest).

    Raises:
        FitError: the model cannot fit identities, ``out`` already holds a run, or the base
            model and the new one do not fit together.
        CheckpointError, ConfigError, DatasetError: from loading the run, the overrides, the data.
    """
    out = Path(out)
    if latest_checkpoint(out) is not None:
        raise FitError(f"{out}: already holds a run; use another --out (or train --resume --out {out} to continue it)")
    base = load_run(run, device, checkpoint=checkpoint)
    model = base.model
    if not isinstance(model, FitsIdentities):
        raise FitError(f"{run}: a {type(model).__name__} cannot fit new identities")
    values = {**config_to_dict(base.config), **model.identity_fit_values(base.data), "data": str(data_path)}
    config = config_from_dict(values, list(overrides), source=f"{run} (fit-identity)")
    seed_everything(config.seed)
    data = build_data(config)
    fitted = build_model(config, data.scene_info())
    try:
        rows = fitted.start_identity_fit(model)
    except ValueError as err:
        raise FitError(f"{run}: {err}") from None
    trainer = Trainer(config, data, fitted, out, device=base.device)
    base.close()
    return IdentityFit(trainer=trainer, base_run=Path(run), rows=rows)
