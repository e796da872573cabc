"""Training progress on the terminal: a rich bar (step, loss, lr, images/s, ETA) on a TTY; elsewhere (CI,
``nohup``, a cluster log) one plain line every ``log_every_s`` seconds, only when the numbers are new."""

from __future__ import annotations

import time

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fqtool.cli.console import warn
from fqtool.train.logging import TrainProgress


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"


class ConsoleProgress(TrainProgress):
    """The command line's :class:`TrainProgress` (messages and warnings printed on ``console``)."""

    def __init__(self, console: Console, log_every_s: float = 30.0) -> None:
        self.console, self.log_every_s = console, log_every_s
        self._bar: Progress | None = None
        self._task = None
        self._last_print = time.perf_counter()
        self._printed: dict[str, float] | None = None  # the numbers of the last plain line
        self._start, self._start_step = time.perf_counter(), 0

    def start(self, step: int, total_steps: int) -> None:
        self._start, self._start_step = time.perf_counter(), step
        if not self.console.is_terminal:
            return
        self._bar = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(), console=self.console, transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=total_steps, completed=step, info="")

    def update(self, step: int, total_steps: int, values: dict[str, float]) -> None:
        """Update the bar, or print a plain line when ``log_every_s`` has passed (and at the last step) and
        the numbers are new: between two ``log_every`` steps they repeat, and a log should not."""
        info = "  ".join(f"{k} {_fmt(v)}" for k, v in values.items())
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
            return
        now = time.perf_counter()
        if now - self._last_print < self.log_every_s and step < total_steps:
            return
        if values == self._printed:
            return
        self._last_print, self._printed = now, dict(values)
        rate = (step - self._start_step) / max(now - self._start, 1e-9)
        eta = (total_steps - step) / rate if rate > 0 else float("inf")
        eta_text = "?"
        if np.isfinite(eta) and eta < 86400 * 99:
            eta_text = f"{int(eta // 3600)}:{time.strftime('%M:%S', time.gmtime(eta))}"
        self.console.print(f"step {step}/{total_steps}  {info}  eta {eta_text}", highlight=False)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def warning(self, text: str) -> None:
        warn(text, on=self.console)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
