"""Face image datasets over an insightface folder / ``.rec``, a list file or an image folder.

Every dataset yields ``(uint8 RGB tensor 3×H×W, int label)``; labels are known up front
(``.labels``) without decoding any image. Per-item state is kept in numpy arrays and one bytes blob,
not millions of Python objects, so DataLoader workers (fork) share it cheaply.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fqtool.data.decode import decode_image, resize_if_needed
from fqtool.data.lists import read_list, scan_image_folder
from fqtool.data.recordio import IR_HEADER_SIZE, RecordIOReader, unpack_record
from fqtool.errors import BadInputError, FormatError

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
            img = decode_image(self._load(i), self.describe(i))
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


class _Strings:
    """Many strings in one UTF-8 blob plus offsets (no per-string Python objects)."""

    def __init__(self, items: list[str]) -> None:
        encoded = [s.encode("utf-8") for s in items]
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
        self._paths = _Strings(paths)
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
        path = self.path(i)
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise BadInputError(f"cannot read image ({exc.strerror or exc})", path) from None

    def describe(self, i: int) -> str:
        return self.path(i)


class RecordImageDataset(FaceImageDataset):
    """Images in a RecordIO file (insightface layout with header record 0, or im2rec without one)."""

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None, **kwargs) -> None:
        self.reader = RecordIOReader(rec_path, idx_path)
        keys, labels, num_classes = _record_layout(self.reader)
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


def _header_label(prefix: bytes) -> int | None:
    """Class of an image record from its first bytes: scalar label, or label[0] when flag > 0."""
    if len(prefix) < IR_HEADER_SIZE:
        return None
    flag, label = struct.unpack_from("<If", prefix)
    if flag > 0:
        if len(prefix) < IR_HEADER_SIZE + 4:
            return None
        (label,) = struct.unpack_from("<f", prefix, IR_HEADER_SIZE)
    return int(label) if math.isfinite(label) else None


def _labels_from_headers(reader: RecordIOReader, keys: np.ndarray, source: Path) -> np.ndarray:
    labels = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys.tolist()):
        label = _header_label(reader.read_prefix(key, IR_HEADER_SIZE + 4))
        if label is None:
            msg = f"record {key} is not an image record (header too short or label invalid)"
            raise FormatError(msg, source)
        labels[i] = label
    return labels


def _record_layout(reader: RecordIOReader) -> tuple[np.ndarray, np.ndarray, int]:
    """(image keys, labels, num_classes) for a ``.rec``, reading only headers."""
    src = reader.rec_path
    header = _insightface_header(reader)
    if header is None:
        keys = reader.key_array.copy()
        labels = _labels_from_headers(reader, keys, src)
        return keys, labels, _num_classes(src, labels, None)
    first, end = header
    keys = np.arange(1, first, dtype=np.int64)
    missing = ~reader.has_keys(keys)
    if missing.any():
        raise FormatError(
            f"header record says images are keys 1..{first - 1} but key {int(keys[missing][0])} "
            "is not in the index",
            src,
        )
    labels = _labels_from_identities(reader, first, end) if end > first else None
    if labels is None or not _sample_agrees(reader, keys, labels):
        labels = _labels_from_headers(reader, keys, src)
    return keys, labels, _num_classes(src, labels, end - first if end > first else None)


def _insightface_header(reader: RecordIOReader) -> tuple[int, int] | None:
    """``(first identity key, end)`` from record 0 when it is an insightface header, else None."""
    if 0 not in reader:
        return None
    head, image = unpack_record(reader.read(0))
    if head.flag == 0 or len(image) > 0:
        return None  # an image record (im2rec numbers images from 0)
    first = int(head.label[0])
    end = int(head.label[1]) if head.flag > 1 else first
    if first < 1:
        raise FormatError(f"header record 0 has an invalid image range end {first}", reader.rec_path)
    return first, end


def _labels_from_identities(reader: RecordIOReader, first: int, end: int) -> np.ndarray | None:
    """Class per image from the identity records ``[first, end)``; None if they do not cover all."""
    ident = np.arange(first, end, dtype=np.int64)
    if not reader.has_keys(ident).all():
        return None
    labels = np.full(first - 1, -1, dtype=np.int64)
    for cls, key in enumerate(ident.tolist()):
        head, _ = unpack_record(reader.read(key))
        if head.flag < 2:
            return None
        start, stop = int(head.label[0]), int(head.label[1])
        if not 1 <= start <= stop <= first:
            return None
        labels[start - 1:stop - 1] = cls
    return None if (labels < 0).any() else labels


def _sample_agrees(reader: RecordIOReader, keys: np.ndarray, labels: np.ndarray, n: int = 32) -> bool:
    """Spot-check identity-record labels against the image headers."""
    picks = np.unique(np.linspace(0, len(keys) - 1, num=min(n, len(keys))).astype(np.int64))
    for i in picks.tolist():
        prefix = reader.read_prefix(int(keys[i]), IR_HEADER_SIZE + 4)
        if _header_label(prefix) != labels[i]:
            return False
    return True


def _num_classes(rec_path: Path, labels: np.ndarray, identities: int | None) -> int:
    from_labels = int(labels.max()) + 1 if len(labels) else 0
    if identities is not None:
        return max(identities, from_labels)
    prop = rec_path.parent / "property"
    if prop.is_file():
        try:
            return max(int(prop.read_text().split(",")[0].strip()), from_labels)
        except (ValueError, OSError):
            pass
    return from_labels


def open_dataset(path: str | Path, *, size: Size = (112, 112), skip_bad: bool = False) -> FaceImageDataset:
    """Open whatever ``path`` is: an insightface folder (``train.rec``), a ``.rec`` file, a list file,
    or an image folder (identity sub-folders, or a flat folder of images labelled -1)."""
    path = Path(path)
    kwargs = {"size": size, "skip_bad": skip_bad}
    if path.is_dir():
        if (path / "train.rec").is_file():
            return RecordImageDataset(path / "train.rec", **kwargs)
        paths, labels, classes = scan_image_folder(path)
        return FileImageDataset(path, path, paths, labels, len(classes), **kwargs)
    if not path.exists():
        raise BadInputError("no such file or folder", path)
    if path.suffix.lower() == ".rec":
        return RecordImageDataset(path, **kwargs)
    if path.suffix.lower() in (".idx", ".bin"):
        msg = f"a {path.suffix} file is not a training data set; pass the .rec or its folder"
        raise BadInputError(msg, path)
    entries = read_list(path)
    return FileImageDataset(path, entries.root, entries.paths, entries.labels, **kwargs)
