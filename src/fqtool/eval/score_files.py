"""Per-image quality files of other tools, read for ``erc-curve --scores`` and written by ``score``.

Formats (told apart by their first line):

* ``csv``: fqtool's own CSV, a ``quality`` column and ``index`` or ``path`` (see :mod:`fqtool.eval.erc`);
* ``path-score``: CR-FIQA's ``<path> <score>`` lines;
* ``feat-list``: MagFace's ``feat.list``, ``<path> f1 … fD`` lines; the quality is the feature's norm;
* ``ofiq``: OFIQ's ``;``-separated CSV (``Filename;…;UnifiedQualityScore.scalar;…``).

Images are matched to a verification set's images by **path** (the file stem is the 0-based image
index, as ``convert-rec`` and CR-FIQA name a ``.bin``'s images: ``images/000042.jpg``) or, for MagFace's
``feat.list`` whose pairs are consecutive lines, by **line order**. A path that names no image of the
set, an image listed twice or missing, or an unknown format is a one-line error naming the file.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fqtool.errors import FormatError, FqtoolError
from fqtool.fsutil import atomic_open

FORMATS = ("csv", "path-score", "feat-list", "ofiq")
#: OFIQ columns read as the quality, first found wins.
OFIQ_QUALITY_COLUMNS = ("unifiedqualityscore.scalar", "unifiedqualityscore", "quality")
OFIQ_PATH_COLUMNS = ("filename", "path", "file", "image")


def _number(text: str, path: Path, line: int, what: str = "score") -> float:
    try:
        value = float(text)
    except ValueError:
        raise FormatError(f"line {line}: {what} {text!r} is not a number", path) from None
    if not math.isfinite(value):
        raise FormatError(f"line {line}: {what} {text!r} is not a finite number", path)
    return value


def detect_format(first_line: str, path: Path) -> str:
    """The format of a scores file from its first non-empty line."""
    if ";" in first_line:
        return "ofiq"
    if "," in first_line:
        return "csv"
    fields = first_line.split()
    if len(fields) > 2 and all(_is_number(f) for f in fields[1:]):
        return "feat-list"
    if len(fields) >= 2 and _is_number(fields[-1]) and not _is_number(fields[0]):
        return "path-score"
    raise FormatError(
        f"unknown scores format (first line {first_line[:60]!r}); expected an fqtool CSV (path or index, "
        "quality), CR-FIQA 'path score' lines, a MagFace feat.list or an OFIQ ';' CSV", path
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def index_from_path(name: str, num_images: int, path: Path, line: int) -> int:
    """The image index a listed path stands for: its file stem, a 0-based index into the set."""
    stem = Path(name.strip().replace("\\", "/")).stem
    if stem.isdigit() and int(stem) < num_images:
        return int(stem)
    raise FqtoolError(
        f"line {line}: path {name.strip()!r} matches no image of the set (its file name must be a 0-based "
        f"image index below {num_images}, e.g. images/{0:06d}.jpg)", path
    )


def _fill(pairs: Sequence[tuple[int, int, float]], num_images: int, path: Path) -> np.ndarray:
    """``(line, index, value)`` triples → one value per image, every image exactly once."""
    values = np.full(num_images, np.nan)
    for line, index, value in pairs:
        if not np.isnan(values[index]):
            raise FormatError(f"line {line}: image {index} is listed twice", path)
        values[index] = value
    missing = np.flatnonzero(np.isnan(values))
    if len(missing):
        shown = ", ".join(str(i) for i in missing[:5]) + (", …" if len(missing) > 5 else "")
        raise FqtoolError(f"{len(missing)} of {num_images} images have no quality (index {shown})", path)
    return values


def _lines(text: str) -> list[tuple[int, str]]:
    return [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _path_score(text: str, num_images: int, path: Path) -> np.ndarray:
    triples = []
    for n, line in _lines(text):
        parts = line.strip().rsplit(None, 1)
        if len(parts) != 2:
            raise FormatError(f"line {n}: expected '<path> <score>'", path)
        name, score = parts
        triples.append((n, index_from_path(name, num_images, path, n), _number(score, path, n)))
    return _fill(triples, num_images, path)


def _feat_list(text: str, num_images: int, path: Path) -> np.ndarray:
    lines = _lines(text)
    if len(lines) != num_images:
        raise FqtoolError(f"has {len(lines)} feature lines but the set has {num_images} images "
                          "(feat.list lines are matched to images in order)", path)
    triples = []
    for i, (n, line) in enumerate(lines):
        fields = line.split()
        if len(fields) < 3:
            raise FormatError(f"line {n}: expected '<path> f1 … fD'", path)
        feature = np.array([_number(f, path, n, "feature value") for f in fields[1:]])
        triples.append((n, i, float(np.linalg.norm(feature))))
    return _fill(triples, num_images, path)


def _column(fields: Sequence[str], wanted: Sequence[str]) -> str | None:
    lower = {f.strip().lower(): f for f in fields if f}
    return next((lower[name] for name in wanted if name in lower), None)


def _ofiq(text: str, num_images: int, path: Path) -> np.ndarray:
    reader = csv.DictReader(io.StringIO(text), delimiter=";")
    fields = reader.fieldnames or []
    name_col, quality_col = _column(fields, OFIQ_PATH_COLUMNS), _column(fields, OFIQ_QUALITY_COLUMNS)
    if name_col is None or quality_col is None:
        raise FormatError("';' CSV needs a 'Filename' column and 'UnifiedQualityScore.scalar' (or "
                          "'UnifiedQualityScore' / 'quality')", path)
    triples = []
    for n, row in enumerate(reader, start=2):
        if not (row.get(name_col) or "").strip():
            continue
        index = index_from_path(row[name_col], num_images, path, n)
        triples.append((n, index, _number((row.get(quality_col) or "").strip(), path, n)))
    return _fill(triples, num_images, path)


def load_scores(path: str | Path, num_images: int) -> np.ndarray:
    """One quality per image (``num_images`` of a verification set) from any format in :data:`FORMATS`."""
    from fqtool.eval.erc import load_quality_csv

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise FqtoolError(f"cannot read scores ({exc.strerror or exc})", path) from None
    except UnicodeDecodeError:
        raise FormatError("not a text scores file", path) from None
    lines = _lines(text)
    if not lines:
        raise FormatError("the scores file is empty", path)
    kind = detect_format(lines[0][1], path)
    if kind == "csv":
        return load_quality_csv(path, num_images)
    reader = {"path-score": _path_score, "feat-list": _feat_list, "ofiq": _ofiq}[kind]
    return reader(text, num_images, path)


def write_path_scores(names: Sequence[str], quality: np.ndarray, path: str | Path) -> Path:
    """CR-FIQA's form: ``<path> <score>`` per line (atomically); paths must not contain line breaks."""
    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as handle:
        for name, value in zip(names, np.asarray(quality).tolist(), strict=True):
            handle.write(f"{name} {value:.6g}\n")
    return path
