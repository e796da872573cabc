"""A progress bar that shows items/s on a terminal and prints periodic plain lines elsewhere (CI, logs)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fqtool.cli.console import err_console


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, unit: str = "img", quiet: bool = False, log_every_s: float = 10.0
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``: a rich bar with a rate on a TTY, else a plain line every ``log_every_s``."""
    start = time.perf_counter()
    done = 0
    if quiet:
        def advance(n: int = 1) -> None:
            nonlocal done
            done += n

        yield advance
        return
    if err_console.is_terminal:
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=err_console, transient=False) as bar:
            task = bar.add_task(description, total=total, rate="")

            def advance(n: int = 1) -> None:
                nonlocal done
                done += n
                rate = done / max(time.perf_counter() - start, 1e-9)
                bar.update(task, advance=n, rate=f"{rate:,.0f} {unit}/s")

            yield advance
        return
    last_log = start

    def advance(n: int = 1) -> None:
        nonlocal done, last_log
        done += n
        now = time.perf_counter()
        if now - last_log >= log_every_s:
            last_log = now
            rate = done / max(now - start, 1e-9)
            of_total = f"/{total}" if total else ""
            eta = f", ETA {_clock((total - done) / rate)}" if total and rate > 0 and done < total else ""
            line = f"{description}: {done}{of_total} {unit} ({rate:,.0f} {unit}/s{eta})"
            err_console.print(line, highlight=False)

    yield advance


def _clock(seconds: float) -> str:
    """``1:02:03`` / ``2:03``: a remaining time for plain progress lines."""
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
