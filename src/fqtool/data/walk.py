"""The one folder walker: image files below a folder, for score, make-list, make-pairs and align.

One rule for everyone: names starting with ``.`` (files and folders) are hidden and skipped; only regular
files with an image suffix count (a FIFO, device or socket named ``x.jpg`` is skipped, never opened);
symbolic links to files are followed, links to folders are not; a link that loops or points nowhere and
a folder that cannot be read are reported in ``skipped``. Paths come back sorted, relative, with ``/``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fqtool.data.decode import IMAGE_EXTENSIONS

__all__ = ["is_hidden", "is_image_name", "name_problem", "walk_images"]


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_image_name(name: str) -> bool:
    return not is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def walk_images(folder: str | Path, prefix: str = "", skipped: list[str] | None = None,
                skip_dir: str | Path | None = None) -> list[str]:
    """Image files below ``folder`` (recursively) as sorted ``prefix + relative path`` strings.

    ``skip_dir``: a folder not to descend into (an output folder inside the input)."""
    skipped = [] if skipped is None else skipped
    avoid = Path(skip_dir).resolve() if skip_dir is not None else None
    found: list[str] = []
    stack = [(os.fspath(folder), prefix)]
    while stack:
        path, rel = stack.pop()
        try:
            with os.scandir(path) as listing:
                entries = list(listing)
        except OSError:
            skipped.append(rel.rstrip("/") or ".")
            continue
        for entry in entries:
            if is_hidden(entry.name):
                continue
            name = rel + entry.name
            kind = _kind(entry)
            if kind == "broken":
                skipped.append(name)
            elif kind == "dir":
                if avoid is None or Path(entry.path).resolve() != avoid:
                    stack.append((entry.path, name + "/"))
            elif kind == "file" and is_image_name(entry.name):
                found.append(name)
            elif kind == "special" and is_image_name(entry.name):
                skipped.append(name)
    found.sort()
    return found


def _kind(entry: os.DirEntry) -> str:
    """``dir`` (a real folder), ``file`` (a regular file or a link to one), ``special`` (FIFO, device,
    socket, a link to a folder) or ``broken`` (a link that loops or points nowhere)."""
    try:
        if entry.is_symlink():
            mode = os.stat(entry.path).st_mode
            return "file" if stat.S_ISREG(mode) else "special"
        mode = entry.stat(follow_symlinks=False).st_mode
    except OSError:
        return "broken"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "special"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be written as one line of a UTF-8 text file (lists, CSVs), or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if len(name.splitlines()) > 1 or name.endswith(("\n", "\r")):
        return "contains a line break"
    if any(ord(c) < 32 and c != "\t" for c in name):
        return "contains a control character"
    return None
