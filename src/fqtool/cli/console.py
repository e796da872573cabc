"""Consoles shared by every command: results on stdout, progress and messages on stderr."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
