"""MXNet RecordIO (``.rec`` + ``.idx``) in pure Python: no mxnet needed to read or write.

This module reads; the format's constants and image records are in :mod:`~fqtool.data.recordio_format`,
the writer in :mod:`~fqtool.data.recordio_writer`, the ``.idx`` table in :mod:`~fqtool.data.recordio_index`;
all their public names are importable from here. The layout is described in ``recordio_format``.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from fqtool.data.recordio_format import (
    _IR,
    _LEN_MASK,
    _PART,
    IR_HEADER_SIZE,
    MAGIC,
    MAGIC_BYTES,
    IRHeader,
    default_idx_path,
    pack_record,
    record_fits,
    unpack_record,
)
from fqtool.data.recordio_index import _check_distinct, _KeyTable, _parse_idx
from fqtool.data.recordio_writer import RecordIOWriter
from fqtool.errors import FormatError

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
    "record_fits",
    "unpack_record",
]


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
