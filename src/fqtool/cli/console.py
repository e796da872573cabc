"""Consoles shared by every command: results on stdout, progress and messages on stderr."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 image``, ``2 images`` (``many`` for irregular plurals: ``plural(n, "identity", "identities")``)."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def warn(message: str) -> None:
    """One yellow ``warning:`` line on stderr (fqtool's style for every warning)."""
    from rich.markup import escape

    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
