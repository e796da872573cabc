"""Face image datasets over an insightface folder / ``.rec``, a list file or an image folder.

Every dataset yields ``(uint8 RGB tensor 3×H×W, int label)``; labels are known up front
(``.labels``) without decoding any image. Per-item state is kept in numpy arrays and one bytes blob,
not millions of Python objects, so DataLoader workers (fork) share it cheaply.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fqtool.data.decode import decode_image, resize_if_needed
from fqtool.data.lists import classes_file_for, read_classes, read_list, scan_folder
from fqtool.data.rec_layout import image_layout
from fqtool.data.recordio import RecordIOReader, unpack_record
from fqtool.errors import BadInputError, FormatError, FqtoolError

__all__ = ["FaceImageDataset", "FileImageDataset", "RecordImageDataset", "open_dataset"]

Size = tuple[int, int] | None


class FaceImageDataset(Dataset):
    """Base class: subclasses provide ``_load(i) -> bytes`` and ``name(i)``.

    ``size`` (H, W): images of another size are resized (None keeps them as decoded).
    ``skip_bad``: an unreadable image gives a zero image and label -1 instead of an error.
    """

    def __init__(self, source: str | Path, labels: np.ndarray, num_classes: int, *,
                 size: Size = (112, 112), skip_bad: bool = False) -> None:
        self.source = Path(source)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_classes = int(num_classes)
        self.size = tuple(size) if size is not None else None
        self.skip_bad = skip_bad
        self.notes: list[str] = []  # one-line warnings for the user (images or links left out)

    def __len__(self) -> int:
        return len(self.labels)

    def name(self, i: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_bytes(self, i: int) -> bytes:
        """The encoded image bytes of item ``i``, exactly as stored."""
        return self._load(i)

    def _load(self, i: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        try:
            data = self._load(i)
            try:
                img = decode_image(data)
            except BadInputError as exc:  # name the image only on failure (cheaper per item)
                raise BadInputError(str(exc), self.describe(i)) from None
        except BadInputError:
            if not self.skip_bad:
                raise
            h, w = self.size or (112, 112)
            return torch.zeros(3, h, w, dtype=torch.uint8), -1
        return resize_if_needed(img, self.size), int(self.labels[i])

    def describe(self, i: int) -> str:
        """Where item ``i`` comes from, for error messages."""
        return self.name(i)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source.name!r}, images={len(self)}, classes={self.num_classes})"


_SHARED_MEMORY_FAILURES = ("unable to resize file", "File too large", "No space left on device",
                           "shared memory", "/dev/shm", "unable to write to file", "unable to mmap")


def guarded_batches(loader):  # noqa: ANN001, ANN201 - a torch DataLoader and its batches
    """Iterate ``loader``; DataLoader workers that cannot share memory (``ulimit -f``, a full or small
    ``/dev/shm``) end in one line with the fix instead of torch's traceback."""
    try:
        yield from loader
    except RuntimeError as exc:
        text = str(exc)
        if not any(marker in text for marker in _SHARED_MEMORY_FAILURES):
            raise
        first = next(line for line in text.splitlines() if any(m in line for m in _SHARED_MEMORY_FAILURES))
        first = first.strip()[:160]
        raise FqtoolError(f"the data-loading workers cannot share memory ({first}); use --workers 0, or "
                          "raise the file-size limit (ulimit -f) / free space in /dev/shm") from None


def _utf8(name: str) -> bytes:
    """A name as UTF-8; a file name that is not UTF-8 (the OS gave it as surrogates) is one line naming it
    (score's CSV and every list are UTF-8 text, so such a name could not be written anyway)."""
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInputError(f"image name {name!r} is not valid UTF-8; rename it") from None


class _Strings:
    """Many strings in one UTF-8 blob plus offsets (no per-string Python objects)."""

    def __init__(self, items: list[str]) -> None:
        encoded = [_utf8(s) for s in items]
        self.blob = b"".join(encoded)
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self.offsets[1:])

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i]:self.offsets[i + 1]].decode("utf-8")

    def __len__(self) -> int:
        return len(self.offsets) - 1


class FileImageDataset(FaceImageDataset):
    """Images stored as files: an image folder or the entries of a list file."""

    def __init__(self, source: str | Path, root: str | Path, paths: list[str], labels: np.ndarray,
                 num_classes: int | None = None, **kwargs) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if num_classes is None:
            num_classes = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
        super().__init__(source, labels, num_classes, **kwargs)
        self.root = str(Path(root))
        try:
            self._paths = _Strings(paths)
        except BadInputError as exc:
            raise BadInputError(str(exc), source) from None
        self._root_abs = os.path.abspath(self.root)

    def path(self, i: int) -> str:
        """Path of item ``i`` on disk (list entries are relative to the list's folder)."""
        return os.path.join(self.root, self._paths[i])

    def name(self, i: int) -> str:
        p = self._paths[i]
        if os.path.isabs(p):
            rel = os.path.relpath(p, self._root_abs)
            if not rel.startswith(".."):
                return rel.replace(os.sep, "/")
        return p

    def _load(self, i: int) -> bytes:
        from fqtool.data.decode import read_image_file

        return read_image_file(self.path(i))

    def describe(self, i: int) -> str:
        return self.path(i)


class RecordImageDataset(FaceImageDataset):
    """Images in a RecordIO file (insightface layout with header record 0, or im2rec without one)."""

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None, **kwargs) -> None:
        self.reader = RecordIOReader(rec_path, idx_path)
        layout = image_layout(self.reader)
        keys, labels, num_classes = layout.keys, layout.labels, layout.num_classes
        super().__init__(rec_path, labels, num_classes, **kwargs)
        self.keys = keys
        self._stem = Path(rec_path).stem

    def name(self, i: int) -> str:
        return f"{self._stem}:{int(self.keys[i])}"

    def describe(self, i: int) -> str:
        return f"{self.source}:{int(self.keys[i])}"

    def _load(self, i: int) -> bytes:
        key = int(self.keys[i])
        try:
            _, image = unpack_record(self.reader.read(key))
        except FormatError as exc:
            if exc.path:
                raise
            raise FormatError(f"record {key}: {exc}", self.source) from None
        return image


def open_dataset(path: str | Path, *, size: Size = (112, 112), skip_bad: bool = False,
                 include_loose: bool = False) -> FaceImageDataset:
    """Open whatever ``path`` is: an insightface folder (``train.rec``), a ``.rec`` file, a list file,
    or an image folder (identity sub-folders, or a flat folder of images labelled -1).

    ``include_loose``: images at the top of an image folder next to identity folders are included
    with label -1 (scoring); otherwise they are left out and named in ``notes`` (training).
    """
    path = Path(path)
    kwargs = {"size": size, "skip_bad": skip_bad}
    if path.is_dir():
        if (path / "train.rec").is_file():
            return RecordImageDataset(path / "train.rec", **kwargs)
        scan = scan_folder(path, include_loose=include_loose)
        dataset = FileImageDataset(path, path, scan.paths, scan.labels, len(scan.classes), **kwargs)
        dataset.notes = scan.notes(path)
        return dataset
    if not path.exists():
        raise BadInputError("no such file or folder", path)
    if path.suffix.lower() == ".rec":
        return RecordImageDataset(path, **kwargs)
    if path.suffix.lower() in (".idx", ".bin"):
        msg = f"a {path.suffix} file is not a training data set; pass the .rec or its folder"
        raise BadInputError(msg, path)
    entries = read_list(path)
    return FileImageDataset(path, entries.root, entries.paths, entries.labels,
                            _declared_classes(path, entries.labels), **kwargs)


def _declared_classes(list_path: Path, labels: np.ndarray) -> int | None:
    """The class count of the ``classes.tsv`` beside a list file (None without one); a label the file
    does not declare is an error, not a bigger classifier."""
    classes_path = classes_file_for(list_path)
    if not classes_path.is_file():
        return None
    declared = max(read_classes(classes_path), default=-1) + 1
    above = np.flatnonzero(labels >= declared)
    if len(above):
        i = int(above[0])
        raise FormatError(f"entry {i + 1} has label {int(labels[i])}, but {classes_path.name} declares "
                          f"{declared} classes (labels 0..{declared - 1})", list_path)
    return declared
