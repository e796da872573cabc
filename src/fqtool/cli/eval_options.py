"""What ``verify`` and ``erc-curve`` share: the ``--data-dir`` option, progress bars and user lines for
the core's benchmarks, and drawing a result's table with rich."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fqtool.cli.console import err_console, warn
from fqtool.cli.progress import progress_bar

if TYPE_CHECKING:
    from rich.table import Table

    from fqtool.eval.results import TableData

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        "-d",
        help="Folder with <name>.bin sets or IJB_release (IJBB/, IJBC/); also $FQTOOL_DATA.",
        show_default=False,
    ),
]
EvalBatchSize = Annotated[
    int | None,
    typer.Option("--batch-size", "-b", min=1, help="Images per batch. Default: 64 on the CPU, 256 on CUDA.",
                 show_default=False),
]
EvalWorkers = Annotated[
    int | None,
    typer.Option("--workers", "-j", min=0, help="DataLoader worker processes. Default: none on the CPU, "
                 "one per core (up to 8) on CUDA.", show_default=False),
]


def progress_for(quiet: bool):
    """The core's ``progress(label, total)``: the CLI's progress bar (silent with --quiet)."""
    return lambda label, total: progress_bar(label, total, quiet=quiet)


def say(line: str) -> None:
    """A line from the core for the user (a file written), on stderr."""
    err_console.print(line, highlight=False, soft_wrap=True)


def warn_all(notes: list[str]) -> None:
    for note in notes:
        warn(note)


def model_loader(
    weights: Path | None, quality_weights: Path | None, device: str, preprocess: str | None = None
):
    """Open ``--weights`` on ``--device`` only once the inputs are checked (the Python API's model);
    ``--preprocess`` overrides the file's preprocessing."""
    from fqtool.api import load_model

    return lambda: load_model(weights, quality_weights=quality_weights, device=device, preprocess=preprocess)


def rich_table(data: TableData) -> Table:
    """A result's :class:`~fqtool.eval.results.TableData` as a rich table."""
    from rich import box
    from rich.table import Table

    style = ({"box": box.SIMPLE_HEAD, "padding": (0, 1), "collapse_padding": True, "pad_edge": False}
             if data.compact else {})
    table = Table(title=data.title, **style)
    for column in data.columns:
        table.add_column(column, justify="left" if column in data.left else "right",
                         no_wrap=column in data.no_wrap)
    for row in data.rows:
        table.add_row(*row)
    return table
