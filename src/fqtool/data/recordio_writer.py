"""Writing MXNet RecordIO (``.rec`` + ``.idx``, layout in :mod:`fqtool.data.recordio_format`): both files
under temporary names, renamed into place on close."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

from fqtool.data.recordio_format import _MAX_RECORD, _PART, MAGIC, MAGIC_BYTES, default_idx_path
from fqtool.errors import OutputError
from fqtool.fsutil import ensure_dir, temp_file_for


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
