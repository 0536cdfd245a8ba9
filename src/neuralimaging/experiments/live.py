"""Live progress of a training run: ``progress.json`` in the run folder and TensorBoard event logs.

A trainer makes one :class:`LiveLog` per call and reports every step (cheap: the file is rewritten at most
every :data:`WRITE_EVERY_S` seconds) and every validation (written at once, and added to TensorBoard when
``tensorboard`` is installed; without it the event logs are left out, nothing fails). ``sweep status`` and the
sweep executors read the file with :func:`read_progress`; ``tensorboard --logdir RUNS_DIR`` shows every run's
curves while they train.

``progress.json``::

    {"step": 120, "total": 1000, "updated": 1733500000.0, "values": {"loss": 1.31},
     "metrics": {"accuracy": 0.41, "psnr": 37.9, ...}}     # the last validation

Example::

    >>> live = LiveLog("runs/fn", total=1000)               # doctest: +SKIP
    >>> live.step(1, loss=1.6)                              # doctest: +SKIP
    >>> live.validation(200, {"accuracy": 0.5, "psnr": 38.0})  # doctest: +SKIP
    >>> live.close()                                        # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from neuralimaging.fsutil import atomic_write_text

__all__ = ["PROGRESS_FILE", "TENSORBOARD_DIR", "WRITE_EVERY_S", "LiveLog", "read_progress"]

PROGRESS_FILE = "progress.json"
TENSORBOARD_DIR = "tensorboard"
WRITE_EVERY_S = 5.0
"""Seconds between two writes of ``progress.json`` from :meth:`LiveLog.step`."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def _scalars(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among ``values`` (lists, dicts and strings are left out)."""
    return {str(k): n for k, v in values.items() if (n := _number(v)) is not None}


def _writer(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: event logs are optional
        return None
    return SummaryWriter(log_dir=str(folder))


class LiveLog:
    """Progress of one training call: ``progress.json`` (throttled) and TensorBoard scalars.

    Args:
        run_dir: the run folder.
        total: the step the run ends at.
        tensorboard: write event logs to ``run_dir/tensorboard`` when tensorboard is installed.
    """

    def __init__(self, run_dir: str | os.PathLike[str], total: int, *, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / PROGRESS_FILE
        self.total = int(total)
        self.writer = _writer(Path(run_dir) / TENSORBOARD_DIR) if tensorboard else None
        self._written = -math.inf
        self._state: dict[str, Any] = {"step": 0, "total": self.total, "values": {}, "metrics": {}}
        previous = read_progress(run_dir)
        if previous and isinstance(previous.get("metrics"), dict):
            self._state["metrics"] = previous["metrics"]

    def _write(self) -> None:
        self._state["updated"] = time.time()
        atomic_write_text(self.path, json.dumps(self._state) + "\n")
        self._written = time.monotonic()

    def step(self, step: int, **values: Any) -> None:
        """Report that ``step`` steps are done, with running values such as the training loss."""
        self._state.update(step=int(step), values=_scalars(values))
        if time.monotonic() - self._written >= WRITE_EVERY_S:
            self._write()

    def validation(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Report a validation at ``step``: written at once, and as TensorBoard scalars (the numbers among
        ``metrics``, but ``step``)."""
        scalars = {k: v for k, v in _scalars(metrics).items() if k != "step"}
        self._state.update(step=int(step), metrics=scalars)
        self._write()
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, int(step))
            self.writer.flush()

    def close(self) -> None:
        """Write the last state and close the event log."""
        self._write()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_progress(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's ``progress.json`` as a dict, or None when it is missing or unreadable."""
    try:
        value = json.loads((Path(run_dir) / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
