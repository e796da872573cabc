"""insightface's data-set layout on top of RecordIO: which records are images, and their classes.

insightface ``train.rec`` files start with a header record (flag > 0, no image) whose labels give the
first identity record key and the end; identity records ``[first, end)`` carry each class's image key
range. ``im2rec`` files have no header: every record is an image and its header label is the class. A
``property`` file beside the ``.rec`` (``classes,height,width``) declares the class count.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fqtool.data.recordio import IR_HEADER_SIZE, RecordIOReader, unpack_record
from fqtool.errors import FormatError

__all__ = ["RecordLayout", "image_layout"]


def _header_label(prefix: bytes) -> float | None:
    """Class of an image record from its first bytes: scalar label, or label[0] when flag > 0."""
    if len(prefix) < IR_HEADER_SIZE:
        return None
    flag, label = struct.unpack_from("<If", prefix)
    if flag > 0:
        if len(prefix) < IR_HEADER_SIZE + 4:
            return None
        (label,) = struct.unpack_from("<f", prefix, IR_HEADER_SIZE)
    return label if math.isfinite(label) else None


def _labels_from_headers(reader: RecordIOReader, keys: np.ndarray, source: Path) -> np.ndarray:
    labels = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys.tolist()):
        label = _header_label(reader.read_prefix(key, IR_HEADER_SIZE + 4))
        if label is None:
            msg = f"record {key} is not an image record (header too short or label invalid)"
            raise FormatError(msg, source)
        labels[i] = _class_label(label, key, source)
    return labels


def _class_label(label: float, key: int, source: Path) -> int:
    """An integer class ≥ -1 (-1 = unlabelled), or a FormatError naming the record."""
    if not label.is_integer():
        raise FormatError(f"record {key} has label {label:g}, not an integer class", source)
    if label < -1:
        raise FormatError(f"record {key} has negative label {label:g} (only -1, unlabelled, is allowed)",
                          source)
    return int(label)


@dataclass
class RecordLayout:
    """Which records are images and their classes (insightface header or im2rec)."""

    keys: np.ndarray  # image record keys, int64
    labels: np.ndarray  # class per image, int64
    num_classes: int
    header: tuple[int, int] | None  # insightface (first identity key, end) or None


def image_layout(reader: RecordIOReader) -> RecordLayout:
    """Image keys, labels and class count of a ``.rec``, reading headers only (no image bytes).

    insightface (record 0 is a header with flag > 0 and no image): images are keys 1..label[0]-1,
    classes from the identity records ``[label[0], label[1])`` (spot-checked against image headers).
    Otherwise (im2rec): every record is an image and its header label (``label[0]`` for flag > 0)
    is the class.
    """
    try:
        return _image_layout(reader)
    except FormatError as exc:
        if exc.path is not None:
            raise
        raise FormatError(str(exc), reader.rec_path) from None


def _image_layout(reader: RecordIOReader) -> RecordLayout:
    src = reader.rec_path
    header = _insightface_header(reader)
    if header is None:
        keys = reader.key_array.copy()
        labels = _labels_from_headers(reader, keys, src)
        return RecordLayout(keys, labels, _num_classes(src, labels, None), None)
    first, end = header
    if first - 1 > len(reader):
        raise FormatError(f"header record says images are keys 1..{first - 1}, but the index holds only "
                          f"{len(reader)} records", src)
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
    declared = (end - first, "the header record") if end > first else None
    return RecordLayout(keys, labels, _num_classes(src, labels, declared), header)


def _insightface_header(reader: RecordIOReader) -> tuple[int, int] | None:
    """``(first identity key, end)`` from record 0 when it is an insightface header, else None."""
    if 0 not in reader:
        return None
    head, image = unpack_record(reader.read(0))
    if head.flag == 0 or len(image) > 0:
        return None  # an image record (im2rec numbers images from 0)
    values = head.label[:2].astype(np.float64)
    if not np.isfinite(values).all() or not all(float(v).is_integer() for v in values):
        raise FormatError(f"header record 0 holds a non-integer image range {values.tolist()}",
                          reader.rec_path)
    first = int(values[0])
    end = int(values[1]) if head.flag > 1 else first
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


def _num_classes(rec_path: Path, labels: np.ndarray, declared: tuple[int, str] | None) -> int:
    """The class count: declared by the header record, else by a ``property`` file, else the labels.

    Labels must stay below a declared count (a bigger label would silently grow the classifier), and a
    declared count above the number of images is refused (every class has an image; a damaged
    ``property`` must not make the trainer allocate a terabyte-sized head).
    """
    if not len(labels):
        raise FormatError("holds no image records", rec_path)
    from_labels = int(labels.max()) + 1
    if declared is None:
        declared = _property_classes(rec_path)
    if declared is None:
        return from_labels
    count, where = declared
    if count > len(labels):
        raise FormatError(f"{where} declares {count:,} classes but the .rec holds only {len(labels):,} "
                          "images", rec_path)
    if from_labels > count:
        i = int(np.argmax(labels))
        raise FormatError(f"image {i + 1} has label {int(labels[i])}, but {where} declares {count} classes "
                          f"(labels 0..{count - 1})", rec_path)
    return count


def _property_classes(rec_path: Path) -> tuple[int, str] | None:
    """``(classes, "property")`` from the ``property`` file beside the ``.rec`` (``classes,h,w``)."""
    prop = rec_path.parent / "property"
    if not prop.is_file():
        return None
    try:
        text = prop.read_text(encoding="utf-8").strip()
        count = int(text.split(",")[0].strip())
    except (OSError, UnicodeDecodeError, ValueError):
        raise FormatError("is not 'classes,height,width'", prop) from None
    if count < 1:
        raise FormatError(f"declares {count} classes", prop)
    return count, f"{prop.name} ({prop})"
