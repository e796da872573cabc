"""Training logs, written by rank 0 only: a progress display, ``metrics.jsonl`` and TensorBoard.

On a terminal a rich bar shows step, loss, lr, images/s and the ETA; elsewhere (CI, ``nohup``, a cluster
log) one plain line is printed every ``log_every_s`` seconds. Every logged scalar goes both to
``metrics.jsonl`` (one JSON object per line: ``step``, ``epoch`` and the scalars) and to TensorBoard
event files under ``tb/``, with the same names.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"


class TrainLogger:
    """Rank-0 logger; on other ranks every method is a no-op."""

    def __init__(
        self, output: Path, *, enabled: bool, total_steps: int, console: Console | None = None,
        quiet: bool = False, log_every_s: float = 30.0, tensorboard: bool = True,
    ) -> None:
        self.enabled, self.total_steps, self.quiet = enabled, total_steps, quiet
        self.console = console or Console(stderr=True)
        self.log_every_s = log_every_s
        self._writer = None
        self._jsonl = None
        self._bar: Progress | None = None
        self._task = None
        self._last_print = time.perf_counter()
        self._printed: dict[str, float] | None = None  # the numbers of the last plain line
        self._start = time.perf_counter()
        self._start_step = 0
        if not enabled:
            return
        self._jsonl = open(output / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(output / "tb"))

    def start(self, step: int) -> None:
        """Begin the display at ``step`` (non-zero after a resume)."""
        self._start, self._start_step = time.perf_counter(), step
        if not self.enabled or self.quiet or not self.console.is_terminal:
            return
        self._bar = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(), console=self.console, transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=self.total_steps, completed=step, info="")

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
        """Update the bar, or print a plain line when ``log_every_s`` has passed (and at the last step) and
        the numbers are new: between two ``log_every`` steps they repeat, and a log should not."""
        if not self.enabled or self.quiet:
            return
        info = "  ".join(f"{k} {_fmt(v)}" for k, v in values.items())
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
            return
        now = time.perf_counter()
        if now - self._last_print < self.log_every_s and step < self.total_steps:
            return
        if values == self._printed:
            return
        self._last_print, self._printed = now, dict(values)
        rate = (step - self._start_step) / max(now - self._start, 1e-9)
        eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
        eta_text = "?"
        if np.isfinite(eta) and eta < 86400 * 99:
            eta_text = f"{int(eta // 3600)}:{time.strftime('%M:%S', time.gmtime(eta))}"
        self.console.print(f"step {step}/{self.total_steps}  {info}  eta {eta_text}", highlight=False)

    def message(self, text: str, style: str = "") -> None:
        if self.enabled:
            self.console.print(text, style=style or None, highlight=False)

    def warn(self, text: str) -> None:
        if self.enabled:
            self.console.print(f"[yellow]warning:[/] {text}", highlight=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


