"""Training logs, written by rank 0 only: ``metrics.jsonl``, TensorBoard, and the progress callback.

Every logged scalar goes both to ``metrics.jsonl`` (one JSON object per line: ``step``, ``epoch`` and the
scalars) and to TensorBoard event files under ``tb/``, with the same names. What a person watches (the
progress, messages, warnings) goes to a :class:`TrainProgress`: the command line passes one that draws
on the terminal; without one, messages and warnings go to Python's ``logging`` (logger ``fqtool.train``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

_LOG = logging.getLogger("fqtool.train")


class TrainProgress:
    """Receives the training's progress (rank 0 only). Override what you need; the default logs messages
    and warnings through ``logging`` and ignores the per-step progress."""

    def start(self, step: int, total_steps: int) -> None:
        """The loop begins at ``step`` (non-zero after a resume) of ``total_steps``."""

    def update(self, step: int, total_steps: int, values: dict[str, float]) -> None:
        """After every step: the latest shown numbers (loss, acc, lr, img/s; they change every log_every)."""

    def message(self, text: str) -> None:
        _LOG.info(text)

    def warning(self, text: str) -> None:
        _LOG.warning(text)

    def close(self) -> None:
        """The run ended (normally or not)."""


class TrainLogger:
    """Rank-0 logger; on other ranks every method is a no-op."""

    def __init__(
        self, output: Path, *, enabled: bool, total_steps: int, progress: TrainProgress | None = None,
        quiet: bool = False, tensorboard: bool = True,
    ) -> None:
        self.enabled, self.total_steps, self.quiet = enabled, total_steps, quiet
        self.report = progress or TrainProgress()
        self._writer = None
        self._jsonl = None
        if not enabled:
            return
        self._jsonl = open(output / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(output / "tb"))

    def start(self, step: int) -> None:
        """Begin the display at ``step`` (non-zero after a resume)."""
        if self.enabled and not self.quiet:
            self.report.start(step, self.total_steps)

    def scalars(self, step: int, values: dict[str, float], *, epoch: float | None = None) -> None:
        """Record scalars (metrics.jsonl + TensorBoard)."""
        if not self.enabled:
            return
        finite = {k: (v if np.isfinite(v) else None) for k, v in values.items()}  # NaN is not JSON
        record = {"step": step, **({"epoch": round(epoch, 4)} if epoch is not None else {}), **finite}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(name, value, step)

    def histogram(self, name: str, values: np.ndarray, step: int) -> None:
        """Histogram of the finite values (TensorBoard raises on NaN/inf; nothing finite → nothing logged)."""
        finite = np.asarray(values, dtype=np.float64).ravel()
        finite = finite[np.isfinite(finite)]
        if self.enabled and self._writer is not None and finite.size:
            self._writer.add_histogram(name, finite, step)

    def progress(self, step: int, values: dict[str, float]) -> None:
        if self.enabled and not self.quiet:
            self.report.update(step, self.total_steps, values)

    def message(self, text: str) -> None:
        if self.enabled:
            self.report.message(text)

    def warn(self, text: str) -> None:
        if self.enabled:
            self.report.warning(text)

    def close(self) -> None:
        if self.enabled:
            self.report.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
