"""Image list files: read the formats other face tools use, write three of them, and build lists.

Written formats (``fmt``):

* ``space``     — ``<path> <label>`` (ronghuaiyang/arcface-pytorch and most PyTorch loaders)
* ``semicolon`` — ``<path>;<label>`` (EQFace ``generate_file_list.py``)
* ``lst``       — ``<idx>\\t<label as %f>\\t<path>`` (MXNet im2rec / insightface)

Also read: MagFace training lists ``<path> 0 <label> 0`` (label = third column) and bare path lists
(one path per line, label -1). Relative paths are relative to the list file's folder.
``classes.tsv`` holds ``<label>\\t<folder name>`` per class.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fqtool.data.walk import is_hidden, is_image_name, name_problem, walk_images
from fqtool.errors import BadInputError, FormatError
from fqtool.fsutil import atomic_open, check_regular_file

__all__ = [
    "LIST_FORMATS",
    "ImageList",
    "FolderScan",
    "MakeListResult",
    "check_names",
    "classes_file_for",
    "default_list_name",
    "format_list",
    "make_list",
    "read_classes",
    "read_list",
    "scan_folder",
    "scan_image_folder",
    "write_classes",
    "write_list",
]

LIST_FORMATS = ("space", "semicolon", "lst")
#: Largest class label accepted in a list (16.7 M classes; WebFace260M has 4 M identities).
MAX_LABEL = (1 << 24) - 1


@dataclass
class ImageList:
    """Paths (as written in the list) with integer labels (-1 = unlabelled)."""

    paths: list[str]
    labels: np.ndarray
    fmt: str = "space"
    root: Path = field(default_factory=lambda: Path("."))


def default_list_name(fmt: str) -> str:
    """``train.lst`` for the im2rec format, ``train.txt`` otherwise."""
    return "train.lst" if fmt == "lst" else "train.txt"


def _check_fmt(fmt: str) -> None:
    if fmt not in LIST_FORMATS:
        raise BadInputError(f"unknown list format {fmt!r}; use one of {', '.join(LIST_FORMATS)}")


def format_list(paths: Sequence[str], labels: Sequence[int] | np.ndarray, fmt: str = "space") -> str:
    """The text of a list file (one line per image); every line is checked to read back as written.

    A name that would read back wrong in ``fmt`` (a line break, spaces where the format splits on them,
    a ``;`` or a tab in the first line, leading ``#``…) is a :class:`FormatError` naming it."""
    _check_fmt(fmt)
    labels = np.asarray(labels, dtype=np.int64).tolist()
    if fmt == "space":
        lines = [f"{p} {lab}" for p, lab in zip(paths, labels, strict=True)]
    elif fmt == "semicolon":
        lines = [f"{p};{lab}" for p, lab in zip(paths, labels, strict=True)]
    else:
        lines = [f"{i}\t{lab:f}\t{p}" for i, (p, lab) in enumerate(zip(paths, labels, strict=True))]
    _check_round_trip(lines, paths, labels, fmt)
    return "".join(line + "\n" for line in lines)


def _check_round_trip(lines: list[str], paths: Sequence[str], labels: list[int], fmt: str) -> None:
    """Each written line, read as :func:`read_list` reads it, gives back its path and label."""
    for i, (line, path, label) in enumerate(zip(lines, paths, labels, strict=True)):
        why = name_problem(path)
        why = why and why.removeprefix("contains ").removeprefix("is ")
        if why is None and (not line.strip() or line.lstrip().startswith("#")):
            why = "the line would read as a comment"
        if why is None and i == 0 and _detect(line) != fmt:
            why = f"the first line would read as the {_detect(line)} format"
        if why is None:
            try:
                if _parse_line(line, fmt) != (path, label):
                    why = "it would not read back as written"
            except (ValueError, IndexError):
                why = "it would not read back as written"
        if why is not None:
            hint = "rename it" + ("" if fmt == "lst" else " or use another --format")
            raise FormatError(f"image name {path!r} cannot be written in a {fmt} list ({why}); {hint}")


def check_names(names: Sequence[str], what: str = "image name") -> None:
    """Names bound for a text file (a CSV, ``classes.tsv``, ``sources.txt``) must be one UTF-8 line."""
    for name in names:
        why = name_problem(name)
        if why is not None:
            raise FormatError(f"{what} {name!r} {why}; rename it")


def write_list(
    path: str | Path, paths: Sequence[str], labels: Sequence[int] | np.ndarray, fmt: str = "space"
) -> None:
    """Write a list file atomically."""
    text = format_list(paths, labels, fmt)
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def _detect(line: str) -> str:
    if "\t" in line and len(line.split("\t")) >= 3:
        return "lst"
    if ";" in line:
        return "semicolon"
    n = len(line.split())
    return {1: "bare", 2: "space"}.get(n, "magface")


class _LabelError(ValueError):
    """A label that is not an integer ≥ -1 (the message says why)."""


def _label(text: str) -> int:
    """An integer label; ``3.000000`` (im2rec's ``%f``) is accepted, ``1.5`` and ``-2`` are not."""
    text = text.strip()
    try:
        value = int(text)
    except ValueError:
        number = float(text)  # ValueError for non-numbers: the line does not match the format
        if not number.is_integer():
            raise _LabelError(f"label {text!r} is not an integer") from None
        value = int(number)
    if value < -1:
        raise _LabelError(f"negative label {value} (only -1, unlabelled, is allowed)")
    if value > MAX_LABEL:  # a label of 1e9 would make training allocate a billion-class head
        raise _LabelError(f"label {value} is beyond {MAX_LABEL} (more classes than any data set has)")
    return value


def _parse_line(line: str, kind: str) -> tuple[str, int]:
    if kind == "lst":
        fields = line.split("\t")
        return fields[-1].strip(), _label(fields[1])
    if kind == "semicolon":
        path, label = line.rsplit(";", 1)
        return path.strip(), _label(label)
    if kind == "space":
        path, label = line.rsplit(None, 1)
        return path.strip(), _label(label)
    if kind == "bare":
        return line.strip(), -1
    fields = line.split()
    return fields[0], _label(fields[2])


def read_list(path: str | Path) -> ImageList:
    """Read any supported list format (detected from the first line)."""
    path = Path(path)
    try:
        check_regular_file(path)
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not part of a path
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise BadInputError(f"cannot read list file ({reason})", path) from None
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1)
             if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise BadInputError("list file has no entries", path)
    kind = _detect(lines[0][1])
    paths: list[str] = []
    labels = np.empty(len(lines), dtype=np.int64)
    for i, (n, line) in enumerate(lines):
        try:
            p, labels[i] = _parse_line(line, kind)
        except _LabelError as exc:
            raise FormatError(f"line {n}: {exc}", path) from None
        except (ValueError, IndexError):
            msg = f"line {n} does not match the {kind} list format: {line[:80]!r}"
            raise FormatError(msg, path) from None
        paths.append(p)
    _check_repeats(paths, path)
    fmt = kind if kind in LIST_FORMATS else "space"
    return ImageList(paths, labels, fmt, path.parent)


#: A list longer than this whose entries are mostly one image is refused (a 10 M-line list of one image
#: would make score or training decode that image ten million times); oversampling lists repeat a few.
REPEAT_CHECK_ENTRIES = 100_000
MAX_SAME_IMAGE = 1000


def _check_repeats(paths: list[str], path: Path) -> None:
    if len(paths) <= REPEAT_CHECK_ENTRIES:
        return
    from collections import Counter

    sample = paths[:: max(1, len(paths) // 10_000)]
    name, seen = Counter(sample).most_common(1)[0]
    if 2 * seen <= len(sample):
        return
    count = sum(1 for p in paths if p == name)
    if count > MAX_SAME_IMAGE and 2 * count > len(paths):
        raise FormatError(f"{count:,} of its {len(paths):,} entries are the same image {name!r}; a list "
                          "names each image once (or a few times)", path)


def write_classes(path: str | Path, classes: Sequence[str] | Mapping[int, str]) -> None:
    """Write ``classes.tsv``: ``<label>\\t<folder>`` per class (a list: label = position)."""
    items = sorted(classes.items()) if isinstance(classes, Mapping) else list(enumerate(classes))
    check_names([name for _, name in items], "folder name")
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("".join(f"{label}\t{name}\n" for label, name in items))


def read_classes(path: str | Path) -> dict[int, str]:
    """Read ``classes.tsv`` back: label → folder name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise BadInputError(f"cannot read classes file ({reason})", path) from None
    out: dict[int, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            label, name = line.split("\t", 1)
            out[int(label)] = name
        except ValueError:
            raise FormatError(f"line {n} is not '<label>\\t<folder>'", path) from None
        if int(label) < 0:
            raise FormatError(f"line {n}: negative label {label}", path)
    return dict(sorted(out.items()))


def _is_image(name: str) -> bool:
    return is_image_name(name)


def _images_under(folder: str, prefix: str, skipped: list[str]) -> list[str]:
    """Image files below ``folder`` as sorted ``prefix + relative path`` (the one walker's rule)."""
    return walk_images(folder, prefix, skipped)


@dataclass
class FolderScan:
    """An image folder as :func:`scan_folder` found it.

    ``loose``: images at the top level next to identity folders, left out (``include_loose=False``).
    ``skipped``: symbolic links that loop or point nowhere, and folders that cannot be read.
    """

    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    loose: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def notes(self, root: str | Path) -> list[str]:
        """One-line warnings about what was left out, for the user."""
        out = []
        if self.loose:
            images = f"{len(self.loose)} image" + ("" if len(self.loose) == 1 else "s")
            out.append(f"{root}: left out {images} outside the identity folders "
                       f"(labels come from sub-folders): {_shorten(self.loose)}")
        if self.skipped:
            out.append(f"{root}: skipped {len(self.skipped)} symbolic links that loop or point nowhere, "
                       f"special files (pipes, devices) or unreadable folders: {_shorten(self.skipped)}")
        return out


def _shorten(names: list[str], show: int = 5) -> str:
    return ", ".join(names[:show]) + (", …" if len(names) > show else "")


def scan_folder(root: str | Path, *, include_loose: bool = False) -> FolderScan:
    """Scan an image folder: identity sub-folders give labels 0.. in sorted name order (folders
    without images get no label); a flat folder of images gives label -1 for each.

    Images at the top level next to identity folders are listed in ``loose`` and left out, or, with
    ``include_loose``, added at the end with label -1 (scoring needs no labels).
    """
    root = Path(root)
    if not root.is_dir():
        raise BadInputError("not a folder", root)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise BadInputError(f"cannot read folder ({exc.strerror or exc})", root) from None
    scan = FolderScan([], np.zeros(0, dtype=np.int64), [])
    labels: list[int] = []
    top_images: list[str] = []
    for entry in entries:
        if is_hidden(entry.name):
            continue
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError:  # a symbolic link that loops
            scan.skipped.append(entry.name)
            continue
        if is_file and _is_image(entry.name):
            top_images.append(entry.name)
        elif entry.is_symlink() and not (is_dir or is_file):
            scan.skipped.append(entry.name)  # points nowhere
        if not is_dir:
            continue
        files = _images_under(entry.path, entry.name + "/", scan.skipped)
        if files:
            labels.extend([len(scan.classes)] * len(files))
            scan.classes.append(entry.name)
            scan.paths.extend(files)
    if not scan.classes or include_loose:
        scan.paths.extend(top_images)
        labels.extend([-1] * len(top_images))
    else:
        scan.loose = top_images
    if not scan.paths:
        raise BadInputError("no images found (expected identity sub-folders or image files)", root)
    scan.labels = np.asarray(labels, dtype=np.int64)
    return scan


def scan_image_folder(root: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """:func:`scan_folder` as ``(paths relative to root with /, labels, class folder names)``."""
    scan = scan_folder(root)
    return scan.paths, scan.labels, scan.classes


@dataclass
class MakeListResult:
    """What :func:`make_list` found and wrote."""

    list_path: Path | None
    num_images: int
    num_classes: int
    skipped_classes: int = 0
    bad_images: list[str] = field(default_factory=list)
    classes_path: Path | None = None
    notes: list[str] = field(default_factory=list)  # images / links left out of the scan


def make_list(
    root: str | Path,
    *,
    fmt: str = "space",
    min_images: int = 1,
    absolute: bool = False,
    check: bool = False,
    output: str | Path | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> MakeListResult:
    """Write a list file (and ``classes.tsv`` beside it) for an image folder.

    Order is deterministic (sorted folders and files). Identities with fewer than ``min_images``
    images are left out and labels stay contiguous. ``check`` decodes every image and leaves out the
    unreadable ones (listed in ``bad_images``). Paths are relative to the list's folder unless
    ``absolute``.
    """
    _check_fmt(fmt)
    root = Path(root)
    scan = scan_folder(root)
    paths, labels, classes = scan.paths, scan.labels, scan.classes
    if check:
        keep, bad = _check_images(root, paths, on_progress)
        paths = [p for p, k in zip(paths, keep, strict=True) if k]
        labels = labels[keep]
    else:
        bad = []
    paths, labels, classes, skipped = _apply_min_images(paths, labels, classes, min_images)
    if not paths:
        raise BadInputError(f"no images left after filtering (min images per identity: {min_images})", root)
    out = Path(output) if output is not None else root / default_list_name(fmt)
    written = _list_paths(root, paths, out, absolute)
    write_list(out, written, labels, fmt)
    classes_path = None
    if classes:
        classes_path = classes_file_for(out)
        write_classes(classes_path, classes)
    return MakeListResult(out, len(paths), len(classes), skipped, bad, classes_path, scan.notes(root))


def classes_file_for(list_path: str | Path) -> Path:
    """``classes.tsv`` beside a ``train.*`` list, ``<stem>.classes.tsv`` beside any other list."""
    list_path = Path(list_path)
    if list_path.stem == "train":
        return list_path.with_name("classes.tsv")
    return list_path.with_name(f"{list_path.stem}.classes.tsv")


def _list_paths(root: Path, paths: list[str], out: Path, absolute: bool) -> list[str]:
    if absolute:
        base = root.resolve()
        return [(base / p).as_posix() for p in paths]
    rel = os.path.relpath(root.resolve(), out.parent.resolve()).replace(os.sep, "/")
    prefix = "" if rel == "." else rel + "/"
    return [prefix + p for p in paths]


def _apply_min_images(
    paths: list[str], labels: np.ndarray, classes: list[str], min_images: int
) -> tuple[list[str], np.ndarray, list[str], int]:
    if not classes or min_images <= 1:
        return paths, labels, classes, 0
    counts = np.bincount(labels, minlength=len(classes))
    kept = counts >= min_images
    remap = np.cumsum(kept) - 1
    mask = kept[labels]
    new_paths = [p for p, k in zip(paths, mask, strict=True) if k]
    new_classes = [c for c, k in zip(classes, kept, strict=True) if k]
    return new_paths, remap[labels[mask]], new_classes, int((~kept & (counts > 0)).sum())


def _check_images(
    root: Path, paths: list[str], on_progress: Callable[[int], None] | None
) -> tuple[np.ndarray, list[str]]:
    """Decode every image with a few threads (decoders release the GIL); returns (keep mask, bad)."""
    from concurrent.futures import ThreadPoolExecutor

    from fqtool.data.decode import decode_image, read_image_file

    def ok(rel: str) -> bool:
        try:
            decode_image(read_image_file(root / rel), rel)
        except (BadInputError, OSError):
            return False
        return True

    keep = np.ones(len(paths), dtype=bool)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, good in enumerate(pool.map(ok, paths, chunksize=64)):
            keep[i] = good
            if on_progress is not None:
                on_progress(1)
    return keep, [p for p, k in zip(paths, keep, strict=True) if not k]
