"""The ``.idx`` of a RecordIO file: parsing ``key\toffset`` lines, checking them, and the key → offset table
the reader looks records up in."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from fqtool.errors import FormatError


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
