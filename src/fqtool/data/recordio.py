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

import contextlib
import io
import os
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from numbers import Number
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np

from fqtool.errors import FormatError, OutputError
from fqtool.fsutil import ensure_dir, temp_file_for

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
_LEN_MASK = (1 << 29) - 1
_MAX_RECORD = 1 << 29
_PART = struct.Struct("<II")
_IR = struct.Struct("<IfQQ")
IR_HEADER_SIZE = _IR.size  # 24
_MAX_SINGLE_READ = 1 << 20

__all__ = [
    "IR_HEADER_SIZE",
    "MAGIC",
    "MAGIC_BYTES",
    "IRHeader",
    "RecordIOReader",
    "RecordIOWriter",
    "default_idx_path",
    "iter_records",
    "pack_record",
    "read_record_at",
    "rebuild_index",
    "unpack_record",
]


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


def _encode_parts(payload: bytes) -> list[bytes]:
    """Frame ``payload`` as dmlc does: split at aligned magic words, pad the last part to 4 bytes."""
    n = len(payload)
    if n >= _MAX_RECORD:
        raise ValueError(f"record of {n} bytes is too large for RecordIO (limit {_MAX_RECORD - 1})")
    limit = n - n % 4
    out: list[bytes] = []
    start = 0
    pos = payload.find(MAGIC_BYTES, 0, limit)
    while pos != -1:
        if pos % 4 == 0:
            out.append(_PART.pack(MAGIC, ((1 if start == 0 else 2) << 29) | (pos - start)))
            out.append(payload[start:pos])
            start = pos + 4
            pos = payload.find(MAGIC_BYTES, start, limit)
        else:
            pos = payload.find(MAGIC_BYTES, pos + 1, limit)
    out.append(_PART.pack(MAGIC, ((3 if start else 0) << 29) | (n - start)))
    out.append(payload[start:] if start else payload)
    pad = -n % 4
    if pad:
        out.append(b"\0" * pad)
    return out


class RecordIOWriter:
    """Write a ``.rec`` and its ``.idx`` under temporary names; both are renamed into place on close.

    Used as a context manager, an exception inside the block discards both files.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else default_idx_path(rec_path)
        self._tmp: list[Path] = []
        ensure_dir(self.rec_path.parent)
        ensure_dir(self.idx_path.parent)
        self._rec = self._open_tmp(self.rec_path, "wb")
        self._idx = self._open_tmp(self.idx_path, "w")
        self._offset = 0
        self._closed = False

    def _open_tmp(self, final: Path, mode: str) -> IO:
        try:
            fd, name = temp_file_for(final)
        except OSError as exc:
            raise OutputError(f"cannot write ({exc.strerror or exc})", final) from None
        self._tmp.append(Path(name))
        if "b" in mode:
            return os.fdopen(fd, mode, buffering=1 << 20)
        return os.fdopen(fd, mode, encoding="ascii", newline="\n")

    def write(self, key: int, payload: bytes) -> None:
        """Append one record under ``key``."""
        if self._closed:
            raise ValueError("write to a closed RecordIOWriter")
        parts = _encode_parts(bytes(payload))
        self._rec.writelines(parts)
        self._idx.write(f"{int(key)}\t{self._offset}\n")
        self._offset += sum(map(len, parts))

    def close(self) -> None:
        """Flush and rename both files into place."""
        if self._closed:
            return
        self._closed = True
        for handle in (self._rec, self._idx):
            handle.flush()
            with contextlib.suppress(OSError):
                os.fsync(handle.fileno())
            handle.close()
        os.replace(self._tmp[0], self.rec_path)
        os.replace(self._tmp[1], self.idx_path)

    def abort(self) -> None:
        """Close and delete the temporary files; nothing appears under the final names."""
        if self._closed:
            return
        self._closed = True
        for handle in (self._rec, self._idx):
            with contextlib.suppress(OSError):
                handle.close()
        for tmp in self._tmp:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _parse_idx(idx_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``key\toffset`` lines into two int64 arrays (file order)."""
    try:
        text = idx_path.read_bytes()
    except OSError as exc:
        raise FormatError(f"cannot read index ({exc.strerror or exc})", idx_path) from None
    table = _parse_idx_fast(text)
    if table is None:
        table = _parse_idx_checked(text, idx_path)
    return table[:, 0].copy(), table[:, 1].copy()


def _parse_idx_fast(text: bytes) -> np.ndarray | None:
    """numpy's text parser (about 4× faster than splitting, for multi-million-line files); None when
    the text is not cleanly two integers per line."""
    lines = text.count(b"\n") + (1 if text and not text.endswith(b"\n") else 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            values = np.fromstring(text.translate(_WS), sep=" ", dtype=np.int64)
    except (ValueError, DeprecationWarning):
        return None
    if len(values) != 2 * lines:
        return None
    return values.reshape(-1, 2)


_WS = bytes.maketrans(b"\t\r\n", b"   ")


def _parse_idx_checked(text: bytes, idx_path: Path) -> np.ndarray:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 2:
                raise ValueError
            rows.append((int(fields[0]), int(fields[1])))
        except ValueError:
            raise FormatError(f"line {n} is not '<key>\\t<offset>': {line[:60]!r}", idx_path) from None
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def _check_distinct(keys: np.ndarray, offsets: np.ndarray, idx_path: Path | None) -> None:
    """Each key once and each record under one key: a damaged (or hostile) index that names one record
    many times would make a conversion write it once per line."""
    for values, what in ((keys, "key"), (offsets, "byte offset")):
        ordered = np.sort(values, kind="stable")
        twice = np.flatnonzero(ordered[1:] == ordered[:-1])
        if len(twice):
            value = int(ordered[twice[0]])
            count = int((values == value).sum())
            raise FormatError(f"the index names {what} {value} {count} times (each record has one line); "
                              "the index is damaged: rebuild it (fqtool.data.recordio.rebuild_index)",
                              idx_path)


def record_fits(head: bytes | memoryview, pos: int, length: int, span: int) -> bool:
    """Whether a whole record's length field agrees with where the next record starts: ``span`` bytes
    from ``pos`` (0 = unknown). A length cut short (a damaged header) leaves image bytes where the next
    record's magic number should be."""
    end = _PART.size + length + (-length % 4)
    if span <= 0 or span == end or span < end:
        return True
    after = bytes(head[pos + end:pos + end + 4])
    return len(after) < 4 or after == MAGIC_BYTES


def _is_sorted(a: np.ndarray) -> bool:
    return bool((a[1:] >= a[:-1]).all())


class _KeyTable:
    """Maps record keys to offsets with numpy arrays (a dict of millions of ints costs gigabytes)."""

    def __init__(self, keys: np.ndarray, offsets: np.ndarray, file_size: int) -> None:
        self.keys = keys
        self.offsets = offsets
        n = len(keys)
        # Bytes from each record's offset to the next record start: one read fetches a whole record.
        ends = np.append(offsets, file_size)
        if not _is_sorted(ends):
            ends.sort()
        self.spans = ends[np.searchsorted(ends, offsets, side="right").clip(max=len(ends) - 1)] - offsets
        self.spans[self.spans <= 0] = 0
        self.dense = n > 0 and keys.min() >= 0 and keys.max() < 2 * n + 16
        if self.dense:
            self.slot = np.full(int(keys.max()) + 1, -1, dtype=np.int64)
            self.slot[keys] = np.arange(n)
        else:
            self.order = np.argsort(keys, kind="stable")
            self.sorted_keys = keys[self.order]

    def index_of(self, key: int) -> int:
        if self.dense:
            if 0 <= key < len(self.slot):
                i = int(self.slot[key])
                if i >= 0:
                    return i
            raise KeyError(key)
        pos = int(np.searchsorted(self.sorted_keys, key))
        if pos < len(self.sorted_keys) and self.sorted_keys[pos] == key:
            return int(self.order[pos])
        raise KeyError(key)


_pread = getattr(os, "pread", None)


def _magic_msg(offset: int, magic: int) -> str:
    return f"not a RecordIO record at byte offset {offset} (magic {magic:#010x}, expected {MAGIC:#010x})"


def _cut_short_msg(offset: int, length: int, span: int) -> str:
    return (f"record at byte offset {offset} says it holds {length} bytes but the next record starts "
            f"{span - _PART.size} bytes later (damaged length field)")


def _continuation_msg(offset: int) -> str:
    return f"record at byte offset {offset} starts with a continuation part (corrupt file)"


def _broken_split_msg(offset: int, cflag: int) -> str:
    return f"split record broken at byte offset {offset} (part flag {cflag})"


class RecordIOReader:
    """Random and sequential access to a ``.rec`` file.

    ``idx_path=None`` uses the sibling ``.idx`` when it exists; without one the file is scanned once
    to build the index in memory. Safe to pickle and to use from DataLoader worker processes (the file
    is re-opened lazily in each process) and from threads (reads use ``pread``).
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise FormatError("record file not found", self.rec_path)
        self.file_size = self.rec_path.stat().st_size
        if idx_path is None and default_idx_path(self.rec_path).is_file():
            idx_path = default_idx_path(self.rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else None
        if self.idx_path is not None:
            keys, offsets = _parse_idx(self.idx_path)
            self._check_offsets(keys, offsets)
        else:
            keys, offsets = _scan_index(self.rec_path)
        self._table = _KeyTable(keys, offsets, self.file_size)
        self._keys_list: list[int] | None = None
        self._fh: IO[bytes] | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def _check_offsets(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        if len(offsets) == 0:
            return
        bad = np.flatnonzero((offsets < 0) | (offsets + _PART.size > self.file_size))
        if len(bad):
            i = int(bad[0])
            raise FormatError(
                f"index entry for key {int(keys[i])} points to byte offset {int(offsets[i])}, "
                f"past the end of {self.rec_path.name} ({self.file_size} bytes)",
                self.idx_path,
            )
        _check_distinct(keys, offsets, self.idx_path)

    # -- pickling / per-process file handles -------------------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fh"] = None
        state["_pid"] = -1
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _handle(self) -> IO[bytes]:
        fh = self._fh
        if fh is None or self._pid != os.getpid():
            with self._lock:  # threads of one process share one handle (reads use pread)
                if self._fh is None or self._pid != os.getpid():
                    self._fh = open(self.rec_path, "rb", buffering=0)  # noqa: SIM115 - kept for reuse
                    self._pid = os.getpid()
                fh = self._fh
        return fh

    def _read_at(self, offset: int, size: int) -> bytes:
        fh = self._handle()
        if _pread is not None:
            return _pread(fh.fileno(), size, offset)
        with self._lock:
            fh.seek(offset)
            return fh.read(size)

    def close(self) -> None:
        if self._fh is not None and self._pid == os.getpid():
            self._fh.close()
        self._fh = None

    def __enter__(self) -> RecordIOReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- access -------------------------------------------------------------------------------------
    @property
    def keys(self) -> list[int]:
        """Record keys in file (index) order."""
        if self._keys_list is None:
            self._keys_list = self._table.keys.tolist()
        return self._keys_list

    @property
    def key_array(self) -> np.ndarray:
        """Record keys as an int64 array (index order), cheaper than :attr:`keys` for big files."""
        return self._table.keys

    @property
    def offset_array(self) -> np.ndarray:
        """Byte offsets of the records, aligned with :attr:`key_array`."""
        return self._table.offsets

    def __len__(self) -> int:
        return len(self._table.keys)

    def __contains__(self, key: int) -> bool:
        try:
            self._table.index_of(int(key))
        except KeyError:
            return False
        return True

    def has_keys(self, keys: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``keys`` the index holds (vectorised)."""
        keys = np.asarray(keys, dtype=np.int64)
        t = self._table
        if t.dense:
            inside = (keys >= 0) & (keys < len(t.slot))
            out = np.zeros(len(keys), dtype=bool)
            out[inside] = t.slot[keys[inside]] >= 0
            return out
        pos = np.searchsorted(t.sorted_keys, keys).clip(max=max(len(t.sorted_keys) - 1, 0))
        return (t.sorted_keys[pos] == keys) if len(t.sorted_keys) else np.zeros(len(keys), dtype=bool)

    def locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Byte offsets and spans (bytes to the next record) of ``keys`` (vectorised; all must exist)."""
        keys = np.asarray(keys, dtype=np.int64)
        if not self.has_keys(keys).all():
            missing = keys[~self.has_keys(keys)][0]
            raise KeyError(f"{self.rec_path.name}: no record with key {int(missing)}")
        t = self._table
        pos = t.slot[keys] if t.dense else t.order[np.searchsorted(t.sorted_keys, keys)]
        return t.offsets[pos], t.spans[pos]

    def read_prefix(self, key: int, size: int) -> bytes:
        """At least the first ``size`` bytes of a record's payload (fewer if it is shorter), in one read
        when the record is not split; used to read image headers without the image."""
        i = self._table.index_of(int(key))
        offset = int(self._table.offsets[i])
        head = self._read_at(offset, _PART.size + size)
        _, lrec = self._unpack_part(head, offset)
        if lrec >> 29 != 0:
            return self.read_at(offset, int(self._table.spans[i]))[:size]
        return head[_PART.size:_PART.size + min(size, lrec & _LEN_MASK)]

    def read(self, key: int) -> bytes:
        """The payload stored under ``key``."""
        try:
            i = self._table.index_of(int(key))
        except KeyError:
            raise KeyError(f"{self.rec_path.name}: no record with key {key}") from None
        return self.read_at(int(self._table.offsets[i]), int(self._table.spans[i]))

    def read_at(self, offset: int, span: int = 0) -> bytes:
        """The record starting at byte ``offset``; ``span`` = bytes to the next record, if known."""
        head = self._read_at(offset, min(max(span, _PART.size), _MAX_SINGLE_READ))
        magic, lrec = self._unpack_part(head, offset)
        cflag, length = lrec >> 29, lrec & _LEN_MASK
        if cflag not in (0, 1):
            raise FormatError(_continuation_msg(offset), self.rec_path)
        end = _PART.size + length
        data = head[_PART.size:end] if len(head) >= end else self._read_exact(offset + _PART.size, length)
        if cflag == 0:
            if not record_fits(head, 0, length, span):
                raise FormatError(_cut_short_msg(offset, length, span), self.rec_path)
            return data
        chunks = [data]
        pos = offset + _PART.size + length + (-length % 4)
        while True:
            magic, lrec = self._unpack_part(self._read_at(pos, _PART.size), pos)
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            if cflag not in (2, 3):
                raise FormatError(_broken_split_msg(pos, cflag), self.rec_path)
            chunks.append(MAGIC_BYTES)
            chunks.append(self._read_exact(pos + _PART.size, length))
            pos += _PART.size + length + (-length % 4)
            if cflag == 3:
                return b"".join(chunks)

    def _unpack_part(self, head: bytes, offset: int) -> tuple[int, int]:
        if len(head) < _PART.size:
            raise FormatError(f"truncated record at byte offset {offset} (file ends)", self.rec_path)
        magic, lrec = _PART.unpack_from(head)
        if magic != MAGIC:
            raise FormatError(_magic_msg(offset, magic), self.rec_path)
        return magic, lrec

    def _read_exact(self, offset: int, size: int) -> bytes:
        data = self._read_at(offset, size)
        if len(data) != size:
            raise FormatError(
                f"truncated record at byte offset {offset - _PART.size}: needs {size} bytes, "
                f"file has {len(data)}",
                self.rec_path,
            )
        return data

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, payload)`` for every record, reading the file sequentially."""
        return iter_records(self.rec_path)


def iter_records(rec_path: str | Path, buffer_size: int = 4 << 20) -> Iterator[tuple[int, bytes]]:
    """Sequentially yield ``(byte offset, payload)`` of each record; split records are reassembled."""
    rec_path = Path(rec_path)
    try:
        fh = open(rec_path, "rb", buffering=buffer_size)  # noqa: SIM115 - closed in finally
    except OSError as exc:
        raise FormatError(f"cannot read ({exc.strerror or exc})", rec_path) from None
    try:
        yield from _iter_stream(fh, rec_path)
    finally:
        fh.close()


def read_record_at(rec_path: str | Path, offset: int) -> bytes:
    """The record at byte ``offset`` of ``rec_path`` (opens the file; for occasional reads)."""
    rec_path = Path(rec_path)
    with open(rec_path, "rb") as fh:
        fh.seek(offset)
        for _, payload in _iter_stream(fh, rec_path, offset):
            return payload
    raise FormatError(f"truncated record at byte offset {offset} (file ends)", rec_path)


def _iter_stream(fh: io.BufferedReader, rec_path: Path, pos: int = 0) -> Iterator[tuple[int, bytes]]:
    read = fh.read
    unpack = _PART.unpack
    while True:
        head = read(8)
        if not head:
            return
        start = pos
        chunks: list[bytes] | None = None
        while True:
            if len(head) < 8:
                raise FormatError(f"truncated record at byte offset {pos} (file ends)", rec_path)
            magic, lrec = unpack(head)
            if magic != MAGIC:
                raise FormatError(_magic_msg(pos, magic), rec_path)
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            padded = length + (-length % 4)
            body = read(padded)
            if len(body) < length:
                raise FormatError(
                    f"truncated record at byte offset {pos}: needs {length} bytes, file has {len(body)}",
                    rec_path,
                )
            pos += 8 + len(body)
            data = body[:length] if padded != length else body
            if chunks is None:
                if cflag == 0:
                    yield start, data
                    break
                if cflag != 1:
                    raise FormatError(_continuation_msg(start), rec_path)
                chunks = [data]
            else:
                if cflag not in (2, 3):
                    raise FormatError(_broken_split_msg(pos, cflag), rec_path)
                chunks.append(MAGIC_BYTES)
                chunks.append(data)
                if cflag == 3:
                    yield start, b"".join(chunks)
                    break
            head = read(8)


def _scan_index(rec_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Index a ``.rec`` without ``.idx``: keys are the image-header ids when they are all distinct
    (insightface and im2rec store the key there), else positions 0..N-1."""
    ids: list[int] = []
    offsets: list[int] = []
    for offset, payload in iter_records(rec_path):
        offsets.append(offset)
        ids.append(_IR.unpack_from(payload)[2] if len(payload) >= IR_HEADER_SIZE else -1)
    positions = np.arange(len(offsets), dtype=np.int64)
    keys = np.array(ids, dtype=np.int64) if ids else positions
    if len(ids) and (keys.min() < 0 or (np.diff(np.sort(keys)) == 0).any()):
        keys = positions
    return keys, np.array(offsets, dtype=np.int64)


def rebuild_index(rec_path: str | Path, idx_path: str | Path | None = None) -> int:
    """Scan ``rec_path`` and write its ``.idx`` (atomically); returns the number of records."""
    from fqtool.fsutil import atomic_write_text

    keys, offsets = _scan_index(Path(rec_path))
    target = Path(idx_path) if idx_path is not None else default_idx_path(rec_path)
    lines = (f"{k}\t{o}\n" for k, o in zip(keys.tolist(), offsets.tolist(), strict=True))
    atomic_write_text(target, "".join(lines))
    return len(keys)
