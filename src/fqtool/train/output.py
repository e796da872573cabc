"""The run folder before training starts: refuse to mix two runs, clear the old one on request, and drop
temporary files a killed process left behind.

A run writes ``model.safetensors``, ``head.safetensors``, ``config.toml``, ``metrics.jsonl``, ``state/``
and ``tb/``. Starting a new run over a finished one would rewrite ``config.toml`` and append to
``metrics.jsonl`` while the old model stays until the new one is done, so a non-empty folder needs
``--resume`` (continue it) or ``--overwrite`` (remove the previous run's files first).
"""

from __future__ import annotations

from pathlib import Path

from fqtool.errors import FqtoolError, OutputError

#: Files of a run in its folder, and the patterns of what a run writes into its sub-folders.
RUN_FILES = ("model.safetensors", "head.safetensors", "config.toml", "metrics.jsonl")
RUN_PATTERNS = {"state": ("last.pt", "epoch-*.pt", ".*.tmp"), "tb": ("events.out.tfevents.*",)}


def check_output(output: Path, *, resume: str | None, overwrite: bool) -> None:
    """Refuse a non-empty ``output`` unless the run resumes or overwrites it."""
    if resume and overwrite:
        raise FqtoolError("--resume continues the run in the output folder and --overwrite deletes it; "
                          "pass one of them")
    if resume or overwrite or not output.is_dir():
        return
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in output.iterdir())
    if entries:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise OutputError(f"output folder is not empty ({shown}); pass --resume auto to continue that "
                          "run, --overwrite to replace it, or another --output", output)


def clear_previous_run(output: Path) -> list[Path]:
    """Delete what an earlier run wrote in ``output`` (only fqtool's own files); return what went."""
    gone = [output / name for name in RUN_FILES if (output / name).is_file()]
    gone += _temporaries(output)
    for folder, patterns in RUN_PATTERNS.items():
        for pattern in patterns:
            gone += [p for p in (output / folder).glob(pattern) if p.is_file()]
    for path in gone:
        _remove(path)
    return gone


def remove_stale_temporaries(output: Path) -> list[Path]:
    """Delete ``.NAME.*.tmp`` files (an atomic write cut short by kill -9) in ``output`` and ``state/``."""
    stale = _temporaries(output) + _temporaries(output / "state")
    for path in stale:
        _remove(path)
    return stale


def _temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(".*.tmp") if p.is_file()) if folder.is_dir() else []


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot remove ({exc.strerror or exc})", path) from None
