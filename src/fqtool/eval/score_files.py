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

One reader policy for every format, the fqtool CSVs of pair sets and IJB included (the CSV readers of
:mod:`fqtool.eval.erc` and :mod:`fqtool.eval.ijb` call this module): every value a finite number, every
image exactly once, the format unambiguous (a ``path score extra`` line is an error, not a 2-D feat.list;
a feat.list has the same number of values on every line), or one line naming the file and the line.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fqtool.errors import FormatError, FqtoolError
from fqtool.fsutil import atomic_open, check_regular_file

FORMATS = ("csv", "path-score", "feat-list", "ofiq")
#: A feat.list line has a path and at least this many values (two numbers are a 'path score extra' line).
FEAT_LIST_MIN_DIM = 3
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
    if len(fields) > FEAT_LIST_MIN_DIM and all(_is_number(f) for f in fields[1:]):
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
    if stem.isascii() and stem.isdigit() and int(stem) < num_images:
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
        if len(parts[0].split()) > 1 and _is_number(parts[0].split()[-1]):
            raise FormatError(f"line {n}: expected '<path> <score>', found more than one number", path)
        name, score = parts
        triples.append((n, index_from_path(name, num_images, path, n), _number(score, path, n)))
    return _fill(triples, num_images, path)


def _feat_list(text: str, num_images: int, path: Path) -> np.ndarray:
    lines = _lines(text)
    if len(lines) != num_images:
        raise FqtoolError(f"has {len(lines)} feature lines but the set has {num_images} images "
                          "(feat.list lines are matched to images in order)", path)
    triples = []
    dim = len(lines[0][1].split()) - 1
    names: dict[str, int] = {}
    for i, (n, line) in enumerate(lines):
        fields = line.split()
        if len(fields) - 1 != dim:
            raise FormatError(f"line {n}: {len(fields) - 1} feature values, the first line has {dim}", path)
        if fields[0] in names:
            raise FormatError(f"line {n}: {fields[0]!r} is listed twice (also line {names[fields[0]]})", path)
        names[fields[0]] = n
        feature = np.array([_number(f, path, n, "feature value") for f in fields[1:]])
        triples.append((n, i, _norm(feature, path, n)))
    return _fill(triples, num_images, path)


def _norm(feature: np.ndarray, path: Path, line: int) -> float:
    """The Euclidean norm without overflow (scaled by the largest value); one beyond float64 is an error."""
    scale = float(np.abs(feature).max(initial=0.0))
    norm = scale * float(np.linalg.norm(feature / scale)) if scale > 0 else 0.0
    if not math.isfinite(norm):
        raise FormatError(f"line {line}: the feature's norm is not a finite number", path)
    return norm


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


def _csv_rows(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return list(csv.DictReader(handle))
    except OSError as exc:
        raise FqtoolError(f"cannot read scores ({exc.strerror or exc})", path) from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FqtoolError(f"not a CSV file ({exc})", path) from None


def _csv_index(row: dict, column: str, num_images: int, path: Path, line: int) -> int:
    raw = (row.get(column) or "").strip()
    text = Path(raw).stem if column == "path" else raw
    if not (text.isascii() and text.lstrip("-").isdigit()):
        what = "file stem" if column == "path" else "index"
        raise FqtoolError(f"line {line}: {what} {text!r} is not an integer image index", path)
    index = int(text)
    if not 0 <= index < num_images:
        raise FqtoolError(f"line {line}: image index {index} is outside 0..{num_images - 1}", path)
    return index


def read_quality_csv(path: str | Path, num_images: int) -> np.ndarray:
    """Per-image quality from an fqtool CSV with ``quality`` and ``index`` (0-based) or ``path`` (file
    stem = index): every image exactly once, every value finite."""
    path = Path(path)
    rows = _csv_rows(path)
    fields = rows[0].keys() if rows else []
    column = "index" if "index" in fields else "path" if "path" in fields else None
    if column is None or "quality" not in fields:
        raise FqtoolError("scores CSV needs a 'quality' column and an 'index' or 'path' column", path)
    triples = [(n, _csv_index(row, column, num_images, path, n),
                _number((row.get("quality") or "").strip(), path, n, "quality"))
               for n, row in enumerate(rows, start=2)]
    return _fill(triples, num_images, path)


def read_ijb_quality_csv(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Per-image quality for an IJB set: ``index`` rows as :func:`read_quality_csv`, or ``path`` matched
    by file name to the IJB image list (``fqtool score`` over ``loose_crop/``); same policy."""
    path = Path(path)
    rows = _csv_rows(path)
    fields = rows[0].keys() if rows else []
    if "path" not in fields or "index" in fields:
        return read_quality_csv(path, len(images))
    if "quality" not in fields:
        raise FqtoolError("scores CSV needs a 'quality' column and an 'index' or 'path' column", path)
    row_of = {Path(str(name)).name: row for row, name in enumerate(images)}
    triples = []
    for n, row in enumerate(rows, start=2):
        name = Path((row.get("path") or "").strip()).name
        if name not in row_of:
            raise FqtoolError(f"line {n}: image {name!r} is not in the IJB image list", path)
        triples.append((n, row_of[name], _number((row.get("quality") or "").strip(), path, n, "quality")))
    return _fill(triples, len(images), path)


def load_scores(path: str | Path, num_images: int) -> np.ndarray:
    """One quality per image (``num_images`` of a verification set) from any format in :data:`FORMATS`."""
    path = Path(path)
    try:
        check_regular_file(path)
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
        return read_quality_csv(path, num_images)
    reader = {"path-score": _path_score, "feat-list": _feat_list, "ofiq": _ofiq}[kind]
    return reader(text, num_images, path)


def write_path_scores(names: Sequence[str], quality: np.ndarray, path: str | Path) -> Path:
    """CR-FIQA's form: ``<path> <score>`` per line (atomically); paths must not contain line breaks."""
    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as handle:
        for name, value in zip(names, np.asarray(quality).tolist(), strict=True):
            handle.write(f"{name} {value:.6g}\n")
    return path
