"""Five-point landmarks given by the user (``fqtool align --landmarks FILE``).

Two forms, told apart by the first line:

* insightface / IJB ``*_name_5pts_score.txt``: ``name x1 y1 x2 y2 … x5 y5 [score]`` separated by spaces;
* the CSV that ``fqtool align`` writes (``faces.csv``): a header with ``source`` and ``l0x … l4y``
  (``score`` and ``x1 y1 x2 y2`` used when present).

Several lines for one image are several faces. Every problem is reported as one line naming the file
and the line number.
"""

from __future__ import annotations

import csv
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fqtool.errors import BadInputError, FormatError
from fqtool.fsutil import check_regular_file

__all__ = ["GivenFace", "LANDMARK_COLUMNS", "read_landmarks"]

LANDMARK_COLUMNS = [f"l{i}{axis}" for i in range(5) for axis in "xy"]
BOX_COLUMNS = ["x1", "y1", "x2", "y2"]


@dataclass
class GivenFace:
    """One face's landmarks (5×2), its score (1.0 when not given) and box (from the points when not given)."""

    landmarks: np.ndarray
    score: float = 1.0
    box: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.box is None:
            self.box = np.concatenate([self.landmarks.min(axis=0), self.landmarks.max(axis=0)])


def _numbers(values: list[str], path: Path, line: int, what: str) -> np.ndarray:
    try:
        numbers = np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        raise FormatError(f"line {line}: {what} must be numbers", path) from None
    if not np.isfinite(numbers).all():
        raise FormatError(f"line {line}: {what} must be finite numbers (found NaN or infinity)", path)
    return numbers


#: Landmarks further than this from the origin (pixels) are no image's; closer than this to each other
#: (pixels, largest distance between two of the five) they describe no face: both are refused.
MAX_COORDINATE = 1e6
MIN_SPREAD = 1.0


def landmarks_problem(points: np.ndarray) -> str | None:
    """Why five (x, y) landmarks cannot be warped to the template (None when they can)."""
    points = np.asarray(points, dtype=np.float64).reshape(5, 2)
    if not np.isfinite(points).all():
        return "landmarks must be finite numbers"
    if np.abs(points).max() > MAX_COORDINATE:
        return f"landmarks beyond ±{MAX_COORDINATE:g} pixels"
    spread = float(np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1).max())
    if spread < MIN_SPREAD:
        return f"the five landmarks lie within {MIN_SPREAD:g} pixel of each other (no face)"
    return None


def _check_points(points: np.ndarray, path: Path, line: int) -> np.ndarray:
    why = landmarks_problem(points)
    if why is not None:
        raise FormatError(f"line {line}: {why}", path)
    return points


def _check_name(name: str, known: Collection[str] | None, path: Path, line: int) -> str:
    name = name.strip().replace("\\", "/")
    if name.startswith("./"):
        name = name[2:]
    if not name:
        raise FormatError(f"line {line}: the image name is empty", path)
    if known is not None and name not in known:
        raise FormatError(f"line {line}: {name!r} is not an image in the input", path)
    return name


def _read_text(path: Path, known, out: dict[str, list[GivenFace]], lines: list[str]) -> None:
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) not in (11, 12):
            raise FormatError(f"line {number}: expected 'name x1 y1 … x5 y5 [score]' (11 or 12 columns), "
                              f"found {len(fields)}", path)
        name = _check_name(fields[0], known, path, number)
        values = _numbers(fields[1:], path, number, "landmarks and score")
        score = float(values[10]) if len(values) == 11 else 1.0
        points = _check_points(values[:10].reshape(5, 2), path, number)
        out.setdefault(name, []).append(GivenFace(points, score))


def _read_csv(path: Path, known, out: dict[str, list[GivenFace]], lines: list[str]) -> None:
    reader = csv.reader(lines)
    header = [h.strip() for h in next(reader)]
    missing = [c for c in ["source", *LANDMARK_COLUMNS] if c not in header]
    if missing:
        raise FormatError(f"line 1: the CSV header lacks {', '.join(missing)}", path)
    col = {name: header.index(name) for name in header}
    has_box = all(c in col for c in BOX_COLUMNS)
    for number, row in enumerate(reader, 2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise FormatError(f"line {number}: {len(row)} columns, the header has {len(header)}", path)
        name = _check_name(row[col["source"]], known, path, number)
        points = _numbers([row[col[c]] for c in LANDMARK_COLUMNS], path, number, "l0x … l4y")
        score = 1.0
        if "score" in col and row[col["score"]].strip():
            score = float(_numbers([row[col["score"]]], path, number, "score")[0])
        box = None
        if has_box and all(row[col[c]].strip() for c in BOX_COLUMNS):
            box = _numbers([row[col[c]] for c in BOX_COLUMNS], path, number, "x1 y1 x2 y2")
        points = _check_points(points.reshape(5, 2), path, number)
        out.setdefault(name, []).append(GivenFace(points, score, box))


def read_landmarks(path: str | Path, known: Collection[str] | None = None) -> dict[str, list[GivenFace]]:
    """Faces per image name (names as relative paths with ``/``); ``known`` = the input's image names."""
    path = Path(path)
    try:
        check_regular_file(path)
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BadInputError("no such landmarks file", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read the landmarks file ({exc})", path) from None
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    out: dict[str, list[GivenFace]] = {}
    if "," in first and "source" in [c.strip() for c in first.split(",")]:
        _read_csv(path, known, out, lines)
    else:
        _read_text(path, known, out, lines)
    if not out:
        raise FormatError("no landmarks in the file", path)
    return out

