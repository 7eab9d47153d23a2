"""The common, model-agnostic trainer and its services.

* :mod:`~tensorfield.engine.config` — load/override/validate/save method configs (omegaconf);
* :mod:`~tensorfield.engine.trainer` — :class:`~tensorfield.engine.trainer.Trainer`: the loop,
  optimiser and schedules, evaluation, logging, checkpoints and exact resume;
* :mod:`~tensorfield.engine.sampling` — batch sources for ray-, image- and coordinate-batch models;
* :mod:`~tensorfield.engine.optim` — Adam over a model's parameter groups, exponential decay;
* :mod:`~tensorfield.engine.checkpoint` — atomic, code-free checkpoints;
* :mod:`~tensorfield.engine.metrics` — PSNR, SSIM, optional LPIPS;
* :mod:`~tensorfield.engine.logger` — ``metrics.jsonl`` and optional TensorBoard;
* :mod:`~tensorfield.engine.render` / :mod:`~tensorfield.engine.export` — rendering and export.

Submodules are imported explicitly (``from tensorfield.engine.trainer import Trainer``) so that
importing the package stays cheap.
"""
