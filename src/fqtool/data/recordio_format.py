"""MXNet RecordIO (``.rec`` + ``.idx``) in pure Python: no mxnet needed to read or write.

Layout (dmlc-core ``recordio``, little-endian)::

    record := part+ ; part := u32 magic | u32 lrec | payload[len] | zero pad to 4 bytes
    magic  := 0xCED7230A (bytes 0A 23 D7 CE)
    lrec   := cflag << 29 | len      cflag: 0 whole, 1 first, 2 middle, 3 last part

A writer splits a payload wherever the magic appears at a 4-byte-aligned position (the magic itself
is dropped and put back by the reader), so a reader that resynchronises on the magic never mistakes
image bytes for a record start. The ``.idx`` file is text, ``"<key>\\t<byte offset>\\n"`` per record.

Image records (``pack_record``) start with ``IRHeader`` = struct ``'IfQQ'`` (flag, label, id, id2);
``flag > 0`` means ``flag`` float32 labels follow the header and the header label is unused.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from numbers import Number
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fqtool.errors import FormatError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
_LEN_MASK = (1 << 29) - 1
_MAX_RECORD = 1 << 29
_PART = struct.Struct("<II")
_IR = struct.Struct("<IfQQ")
IR_HEADER_SIZE = _IR.size  # 24


class IRHeader(NamedTuple):
    """Header of an image record. ``label`` is a float, or a float32 array when ``flag > 0``."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def pack_record(label: float | Sequence[float], image: bytes, id: int = 0, id2: int = 0) -> bytes:
    """Build an image-record payload the way ``mx.recordio.pack`` does."""
    if isinstance(label, Number):
        return _IR.pack(0, float(label), id, id2) + bytes(image)
    values = np.asarray(label, dtype="<f4").ravel()
    return _IR.pack(values.size, 0.0, id, id2) + values.tobytes() + bytes(image)


def unpack_record(payload: bytes) -> tuple[IRHeader, bytes]:
    """Split an image-record payload into its header and the remaining (encoded image) bytes."""
    if len(payload) < IR_HEADER_SIZE:
        raise FormatError(f"record of {len(payload)} bytes is too short for an image header")
    flag, label, id_, id2 = _IR.unpack_from(payload)
    start = IR_HEADER_SIZE
    if flag > 0:
        end = start + 4 * flag
        if end > len(payload):
            raise FormatError(
                f"record header announces {flag} labels but the record has only {len(payload)} bytes"
            )
        label = np.frombuffer(payload, dtype="<f4", count=flag, offset=start).astype(np.float32)
        start = end
    return IRHeader(flag, label, id_, id2), payload[start:]


def default_idx_path(rec_path: str | Path) -> Path:
    """``train.rec`` → ``train.idx``."""
    return Path(rec_path).with_suffix(".idx")


def record_fits(head: bytes | memoryview, pos: int, length: int, span: int) -> bool:
    """Whether a whole record's length field agrees with where the next record starts: ``span`` bytes
    from ``pos`` (0 = unknown). A length cut short (a damaged header) leaves image bytes where the next
    record's magic number should be."""
    end = _PART.size + length + (-length % 4)
    if span <= 0 or span == end or span < end:
        return True
    after = bytes(head[pos + end:pos + end + 4])
    return len(after) < 4 or after == MAGIC_BYTES
