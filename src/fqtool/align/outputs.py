"""``fqtool align``'s outputs: crop names (unique, also case-folded), crops written atomically, the resume
journal of finished images, ``faces.csv`` and the ``no_face.txt``/``unreadable.txt`` lists."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fqtool.align.records import CSV_COLUMNS, JOURNAL, AlignedFace, AlignOptions, ImageOutcome
from fqtool.fsutil import atomic_open, atomic_path, source_identity


def _safe_stem(source: str) -> str:
    """The source path without its suffix, kept inside OUTPUT: ``..`` parts become ``_``, a root and ``.``
    parts are dropped (list files may name images outside their folder)."""
    stem = os.path.splitext(source.replace("\\", "/"))[0]
    parts = ["_" if p == ".." else p for p in stem.split("/") if p not in ("", ".")]
    return "/".join(parts) or "_"


def out_names(sources: Sequence[str], fmt: str) -> dict[str, str]:
    """Crop name stem per source, unique by construction, also where case does not count.

    The source's path without its suffix; sources whose stems collide (``a.jpg`` and ``a.png``) keep the
    suffix in the stem (``a_jpg``); a stem still taken after that (``a_jpg.png``, ``A.jpg`` next to
    ``A.JPG``) gets ``~2``, ``~3``… Crop names are the stem, or the stem plus ``_<face>``, so unique stems
    give unique crop names."""
    stems = {s: _safe_stem(s) for s in sources}
    counts: dict[str, int] = {}
    for stem in stems.values():
        counts[stem.casefold()] = counts.get(stem.casefold(), 0) + 1
    wanted = {}
    for source, stem in stems.items():
        if counts[stem.casefold()] > 1:
            stem = stem + "_" + os.path.splitext(source)[1].lstrip(".").lower()
        wanted[source] = stem
    return _uniquified(wanted)


def _uniquified(wanted: dict[str, str]) -> dict[str, str]:
    """Each value made unique (compared case-folded): the first keeps its name, the others get ``~k``."""
    taken = {stem.casefold() for stem in wanted.values()}
    used: set[str] = set()
    out = {}
    for source in sorted(wanted):
        stem = wanted[source]
        if stem.casefold() in used:
            k = 2
            while f"{stem}~{k}".casefold() in taken:
                k += 1
            stem = f"{stem}~{k}"
            taken.add(stem.casefold())
        used.add(stem.casefold())
        out[source] = stem
    return out


def _crop_name(stem: str, face: int, policy: str, fmt: str) -> str:
    return f"{stem}_{face}.{fmt}" if policy == "all" else f"{stem}.{fmt}"


def encode_crop(crop: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "png":
        Image.fromarray(crop).save(buffer, format="PNG", compress_level=1)
    else:
        Image.fromarray(crop).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _write_crop(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


class _Journal:
    """Finished images, one JSON line each, so an interrupted run resumes; removed once the CSV is written."""

    def __init__(self, output: Path, options: AlignOptions) -> None:
        self.path = output / JOURNAL
        self.key = options.journal_key()
        self.handle = None

    def load(self, output: Path, root: Path, stems: dict[str, str]) -> dict[str, ImageOutcome]:
        done: dict[str, ImageOutcome] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return done
        try:
            if not lines or json.loads(lines[0]).get("options") != self.key:
                return done  # another run's journal (other options): start afresh
        except (ValueError, AttributeError):
            return done
        for line in lines[1:]:
            try:
                entry = json.loads(line)
                outcome = ImageOutcome(entry["source"], [AlignedFace.from_row(r) for r in entry["faces"]],
                                       entry["status"], entry.get("reason", ""), str(entry["id"]))
            except (ValueError, KeyError, TypeError, IndexError):
                continue  # a line cut short by the interruption: that image is redone
            if _unchanged(root, outcome) and all(self._current(output, stems, f) for f in outcome.faces):
                done[outcome.source] = outcome
        return done

    def _current(self, output: Path, stems: dict[str, str], face: AlignedFace) -> bool:
        """The crop exists under the name this run gives it (names depend on the other inputs)."""
        name = _crop_name(stems.get(face.source, ""), face.face, self.key["faces"], self.key["fmt"])
        return face.out == name and (output / face.out).is_file()

    def open(self, keep: Iterable[ImageOutcome]) -> None:
        self.handle = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.handle.write(json.dumps({"options": self.key}) + "\n")
        for outcome in keep:
            self.add(outcome)

    def add(self, outcome: ImageOutcome) -> None:
        entry = {"source": outcome.source, "id": outcome.identity, "status": outcome.status,
                 "reason": outcome.reason, "faces": [f.row() for f in outcome.faces]}
        self.handle.write(json.dumps(entry) + "\n")
        self.handle.flush()

    def close(self, finished: bool) -> None:
        if self.handle is not None:
            self.handle.close()
        if finished:
            with contextlib.suppress(OSError):
                self.path.unlink()


def _identity(path: Path) -> str:
    try:
        return source_identity(path)
    except OSError:
        return ""


def _unchanged(root: Path, outcome: ImageOutcome) -> bool:
    """The journalled image is the same file as now (not another input's, not replaced in place)."""
    return bool(outcome.identity) and outcome.identity == _identity(root / outcome.source)


def write_faces_csv(path: Path, faces: Iterable[AlignedFace]) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for face in faces:
            writer.writerow(face.row())


def _write_lines(path: Path, lines: list[str]) -> None:
    if lines:
        with atomic_open(path, "w", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
