"""Run logging: ``metrics.jsonl`` (always) and TensorBoard (optional).

``metrics.jsonl`` holds one JSON object per line. Training lines carry ``step`` (steps done),
``loss``, ``psnr``, ``lr`` (first group) and ``lr/<group>``, ``elapsed_s``, ``it_per_s`` and the
model's own metrics; evaluation lines carry ``split`` plus ``psnr``/``ssim`` (and ``lpips``);
ray-filter events carry ``event: "ray_filter"``. Non-finite numbers are written as ``null`` so
every line is strict JSON.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from tensorfield.engine.config import ConfigError

METRICS_FILE = "metrics.jsonl"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    return value


class MetricsLogger:
    """Appends records to ``run_dir/metrics.jsonl`` and mirrors scalars to TensorBoard.

    Args:
        run_dir: the run directory.
        tensorboard: also write TensorBoard events to ``run_dir/tensorboard``.

    Raises:
        ConfigError: ``tensorboard`` requested but the package is not installed.
    """

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = False):
        self.path = Path(run_dir) / METRICS_FILE
        self._writer = None
        if tensorboard:
            self._writer = open_tensorboard(Path(run_dir) / "tensorboard")

    def write(self, record: dict[str, Any], tag: str = "train") -> None:
        """Append ``record`` (must contain ``step``) and log its numbers under ``tag/``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(_clean(record)) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{tag}/{key}", value, int(record["step"]))
            self._writer.flush()

    def truncate_after(self, step: int) -> None:
        """Drop the lines logged after ``step`` (a resumed run redoes those steps)."""
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record_step = json.loads(line).get("step", 0)
            except (json.JSONDecodeError, AttributeError):
                continue  # a line cut short by a crash
            if record_step is None or record_step <= step:
                kept.append(line)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def open_tensorboard(log_dir: Path):
    """A TensorBoard ``SummaryWriter``; :class:`ConfigError` if tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "tensorboard=true but the tensorboard package is not installed (pip install tensorboard)"
        ) from None
    return SummaryWriter(log_dir=str(log_dir))


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of ``run_dir/metrics.jsonl`` (skipping a truncated last line)."""
    path = Path(run_dir) / METRICS_FILE
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
