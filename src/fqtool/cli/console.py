"""Consoles shared by every command: results on stdout, progress and messages on stderr; :func:`warn`."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


def warn(message: str, on: Console | None = None) -> None:
    """One warning line in fqtool's style, ``warning: MESSAGE``, on stderr (or the console ``on``); the
    message is not markup: a file name with brackets prints as it is."""
    (on or err_console).print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 image``, ``2 images`` (``many`` for irregular plurals: ``plural(n, "identity", "identities")``)."""
    return f"{count} {word if count == 1 else many or word + 's'}"
