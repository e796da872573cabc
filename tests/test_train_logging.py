"""Plain (non-TTY) training progress: a line only when there are new numbers; the core prints nothing."""

from __future__ import annotations

import io

from rich.console import Console

from fqtool.cli.train_progress import ConsoleProgress
from fqtool.train.logging import TrainLogger, TrainProgress


def _plain_logger(tmp_path, total_steps: int = 100) -> tuple[TrainLogger, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    log = TrainLogger(tmp_path, enabled=True, total_steps=total_steps,
                      progress=ConsoleProgress(console, log_every_s=0.0), tensorboard=False)
    log.start(0)
    return log, out


def test_plain_progress_does_not_repeat_stale_numbers(tmp_path) -> None:
    log, out = _plain_logger(tmp_path)
    stale = {"loss": 29.58, "acc": 0.4375, "img/s": 53.83}
    for step in (54, 75, 95):  # the numbers last changed before step 54
        log.progress(step, stale)
    log.progress(96, {"loss": 28.1, "acc": 0.5, "img/s": 55.0})
    log.progress(100, {"loss": 27.9, "acc": 0.52, "img/s": 54.0})
    log.close()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["54/100", "96/100", "100/100"]
    assert sum("29.58" in line for line in lines) == 1


def test_the_core_reports_through_the_callback_not_stdout(tmp_path, capsys, caplog) -> None:
    """Without a callback nothing is printed: warnings go to logging; with one, they go to it."""
    seen: list[tuple[str, object]] = []

    class Recorder(TrainProgress):
        def update(self, step, total_steps, values):
            seen.append(("update", step))

        def warning(self, text):
            seen.append(("warning", text))

    log = TrainLogger(tmp_path, enabled=True, total_steps=3, progress=Recorder(), tensorboard=False)
    log.progress(1, {"loss": 1.0})
    log.warn("careful")
    log.close()
    assert seen == [("update", 1), ("warning", "careful")]
    silent = TrainLogger(tmp_path, enabled=True, total_steps=3, tensorboard=False)
    with caplog.at_level("WARNING", logger="fqtool.train"):
        silent.warn("careful")
        silent.progress(1, {"loss": 1.0})
    silent.close()
    assert capsys.readouterr() == ("", "") and "careful" in caplog.text
