"""IJB-B / IJB-C in insightface's ``IJB_release`` layout: meta files → arrays, loose crops → aligned faces.

A set folder (``IJBC/``) holds ``meta/ijbc_face_tid_mid.txt`` (``image template media`` per line),
``meta/ijbc_template_pair_label.txt`` (``t1 t2 label``), ``meta/ijbc_name_5pts_score.txt`` (``image
x1 y1 … x5 y5 detector_score``) and ``loose_crop/*.jpg``; IJB-B the same with ``ijbb_``. Image ``i`` is
line ``i`` of both image files (the reference scripts rely on it, so it is checked). Every problem is a
one-line :class:`~fqtool.errors.BadInputError` naming the file and line.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fqtool.errors import BadInputError, FqtoolError

SETS = ("IJBB", "IJBC")
LANDMARK_FIELDS = 12  # image name, 10 landmark numbers, detector score


def meta_files(root: Path, name: str) -> dict[str, Path]:
    """The three meta files of set ``name`` (``IJBC``) under ``root``."""
    prefix = name.lower()
    meta = Path(root) / "meta"
    return {
        "tid_mid": meta / f"{prefix}_face_tid_mid.txt",
        "pairs": meta / f"{prefix}_template_pair_label.txt",
        "landmarks": meta / f"{prefix}_name_5pts_score.txt",
    }


def set_name_of(folder: str | Path) -> str | None:
    """``IJBB``/``IJBC`` when ``folder`` is such a set folder (it has the set's tid_mid file), else None."""
    folder = Path(folder)
    for name in SETS:
        if meta_files(folder, name)["tid_mid"].is_file():
            return name
    return None


@dataclass
class IjbMeta:
    """One IJB set: per-image arrays (row ``i`` = line ``i`` of the image files) and the template pairs."""

    name: str
    root: Path
    images: np.ndarray  # (N,) str, file names under loose_crop/
    landmarks: np.ndarray  # (N, 5, 2) float32, x then y
    detector_scores: np.ndarray  # (N,) float32
    templates: np.ndarray  # (N,) int64
    medias: np.ndarray  # (N,) int64
    pair_t1: np.ndarray  # (P,) int64
    pair_t2: np.ndarray  # (P,) int64
    pair_label: np.ndarray  # (P,) int8, 1 = same identity

    @property
    def image_dir(self) -> Path:
        return self.root / "loose_crop"


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise BadInputError("IJB meta file not found", path)
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read ({exc})", path) from None


#: Ids are stored as int64: larger ones (a template id of 10²²) are refused, not overflowed.
ID_LIMIT = 2**63 - 1


def _int(text: str, what: str, path: Path, line: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadInputError(f"line {line}: {what} {text!r} is not an integer", path) from None
    if abs(value) > ID_LIMIT:
        raise BadInputError(f"line {line}: {what} {text} is out of range (at most {ID_LIMIT})", path)
    return value


def read_tid_mid(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``image template media`` lines → (names, templates, medias)."""
    names, templates, medias = [], [], []
    for line, text in enumerate(_read_lines(path), start=1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise BadInputError(
                f"line {line}: expected 'image template_id media_id', got {len(fields)} fields", path
            )
        names.append(fields[0])
        templates.append(_int(fields[1], "template id", path, line))
        medias.append(_int(fields[2], "media id", path, line))
    if not names:
        raise BadInputError("no images listed", path)
    return names, np.asarray(templates, np.int64), np.asarray(medias, np.int64)


def read_landmarks(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``image x1 y1 … x5 y5 score`` lines → (names, landmarks N×5×2, detector scores)."""
    names, points, scores = [], [], []
    for line, text in enumerate(_read_lines(path), start=1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != LANDMARK_FIELDS:
            raise BadInputError(
                f"line {line}: expected an image name, 10 landmark numbers and a detector score "
                f"({LANDMARK_FIELDS} fields), got {len(fields)} fields",
                path,
            )
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise BadInputError(f"line {line}: landmarks and score must be numbers", path) from None
        if not np.all(np.isfinite(values)):
            raise BadInputError(f"line {line}: landmarks and score must be finite numbers", path)
        names.append(fields[0])
        points.append(values[:10])
        scores.append(values[10])
    return names, np.asarray(points, np.float32).reshape(-1, 5, 2), np.asarray(scores, np.float32)


def _line_of_row(path: Path, row: int) -> int:
    """1-based line number of the ``row``-th non-blank line (for error messages only)."""
    seen = -1
    for line, text in enumerate(_read_lines(path), start=1):
        if text.strip():
            seen += 1
            if seen == row:
                return line
    return row + 1


def _first_bad_pair_line(path: Path) -> str:
    for line, text in enumerate(_read_lines(path), start=1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 3:
            return f"line {line}: expected 't1 t2 label', got {len(fields)} fields"
        for value, what in zip(fields, ("template id", "template id", "label"), strict=True):
            _int(value, what, path, line)
    return "not a list of 't1 t2 label' integer lines"


def read_pairs(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``t1 t2 label`` lines → three arrays (numpy's C reader: IJB-C has 15.7 M pairs)."""
    if not path.is_file():
        raise BadInputError("IJB meta file not found", path)
    try:
        with warnings.catch_warnings():  # numpy's "input contained no data" is said below, in one line
            warnings.simplefilter("ignore")
            table = np.loadtxt(path, dtype=np.int64, ndmin=2, comments=None)
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise BadInputError(_first_bad_pair_line(path), path) from None
    if table.size == 0:
        raise BadInputError("no template pairs listed", path)
    if table.shape[1] != 3:
        raise BadInputError(_first_bad_pair_line(path), path)
    labels = table[:, 2]
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if len(bad):
        raise BadInputError(
            f"line {_line_of_row(path, int(bad[0]))}: label {labels[bad[0]]} is not 0 or 1", path
        )
    return table[:, 0], table[:, 1], labels.astype(np.int8)


def _check_same_images(tid_names: list[str], lmk_names: list[str], files: dict[str, Path]) -> None:
    if len(tid_names) != len(lmk_names):
        raise BadInputError(
            f"lists {len(lmk_names)} images but {files['tid_mid'].name} lists {len(tid_names)}; "
            "the two files must list the same images in the same order",
            files["landmarks"],
        )
    for row, (a, b) in enumerate(zip(tid_names, lmk_names, strict=True)):
        if a != b:
            line = _line_of_row(files["landmarks"], row)
            raise BadInputError(
                f"line {line}: image {b!r}, but {files['tid_mid'].name} names {a!r} there; "
                "the two files must list the same images in the same order",
                files["landmarks"],
            )


def _check_images_exist(names: list[str], root: Path, tid_mid: Path) -> None:
    folder = root / "loose_crop"
    if not folder.is_dir():
        raise BadInputError("no loose_crop/ folder with the images", root)
    present = {entry.name for entry in _scan(folder)}
    for row, name in enumerate(names):
        if name not in present and not (folder / name).is_file():
            line = _line_of_row(tid_mid, row)
            raise BadInputError(f"line {line}: image {name!r} not found in {folder}", tid_mid)


def _scan(folder: Path):
    import os

    with os.scandir(folder) as entries:
        return [e for e in entries]


def _check_pair_templates(
    t1: np.ndarray, t2: np.ndarray, templates: np.ndarray, files: dict[str, Path]
) -> None:
    known = np.unique(templates)
    for side in (t1, t2):
        unknown = np.flatnonzero(~np.isin(side, known))
        if len(unknown):
            row = int(unknown[0])
            line = _line_of_row(files["pairs"], row)
            raise BadInputError(
                f"line {line}: template {side[row]} is not in {files['tid_mid'].name}", files["pairs"]
            )


def load_ijb(root: str | Path, name: str | None = None, *, check_images: bool = True) -> IjbMeta:
    """Read and cross-check one set folder (``…/IJB_release/IJBC``)."""
    root = Path(root)
    name = (name or set_name_of(root) or "").upper()
    if name not in SETS:
        raise BadInputError("not an IJB-B/IJB-C folder (no meta/ijbb_ or meta/ijbc_face_tid_mid.txt)", root)
    files = meta_files(root, name)
    tid_names, templates, medias = read_tid_mid(files["tid_mid"])
    lmk_names, landmarks, scores = read_landmarks(files["landmarks"])
    _check_same_images(tid_names, lmk_names, files)
    if check_images:
        _check_images_exist(tid_names, root, files["tid_mid"])
    t1, t2, labels = read_pairs(files["pairs"])
    _check_pair_templates(t1, t2, templates, files)
    return IjbMeta(name, root, np.asarray(tid_names), landmarks, scores, templates, medias, t1, t2, labels)


class IjbAlignedFaces:
    """Map-style dataset: ``ds[i]`` → ``(i, uint8 3×S×S tensor, error text or "")``.

    Decoding and alignment (insightface's ``norm_crop``, :mod:`fqtool.data.warp`) happen in DataLoader
    workers; a damaged image returns a black face and its error text, so the main process can stop with
    one line instead of a worker traceback.
    """

    def __init__(self, meta: IjbMeta, indices: np.ndarray, size: int = 112) -> None:
        self.folder = meta.image_dir
        self.names = meta.images
        self.landmarks = meta.landmarks
        self.indices = np.asarray(indices, np.int64)
        self.size = size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int):
        import torch

        from fqtool.data.decode import decode_image, read_image_file
        from fqtool.data.warp import norm_crop

        index = int(self.indices[item])
        path = self.folder / str(self.names[index])
        try:
            image = decode_image(read_image_file(path), str(path))
            aligned = norm_crop(image.permute(1, 2, 0).numpy(), self.landmarks[index], self.size)
            return index, torch.from_numpy(aligned).permute(2, 0, 1).contiguous(), ""
        except (OSError, FqtoolError, ValueError, np.linalg.LinAlgError) as exc:
            message = str(exc) if isinstance(exc, BadInputError) else f"{path}: cannot read or align ({exc})"
            return index, torch.zeros(3, self.size, self.size, dtype=torch.uint8), message
