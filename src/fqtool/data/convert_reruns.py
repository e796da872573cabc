"""convert-rec reruns: what ``OUT`` was converted from (``source.json``: a different ``.rec`` is refused),
one writer at a time (``flock`` on ``.convert-rec.lock``), and the images already there checked against
the size their record says (a truncated or foreign file is written again)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fqtool.data.recordio import MAGIC, RecordIOReader, read_record_at
from fqtool.errors import FormatError, OutputError
from fqtool.fsutil import atomic_write_text

if TYPE_CHECKING:
    from fqtool.data.convert import ConvertPlan

_FLAG = struct.Struct("<I")
_LEN_MASK = (1 << 29) - 1
SOURCE_FILE = "source.json"
LOCK_FILE = ".convert-rec.lock"


def _source_record(plan: ConvertPlan) -> dict:
    """What identifies the source: its size and the hash of its index (keys and byte offsets, the
    ``.idx`` content); name and mtime are kept for the message."""
    st = plan.rec_path.stat()
    digest = hashlib.sha256(plan.reader.key_array.astype("<i8").tobytes())
    digest.update(plan.reader.offset_array.astype("<i8").tobytes())
    return {"rec": str(plan.rec_path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "index_sha256": digest.hexdigest()}


def _check_source(out: Path, record: dict) -> None:
    """Refuse to mix two sources in one OUT; record the source before the first image is written.

    Size and index hash decide (a copied ``.rec`` with a new mtime is still the same data)."""
    path = out / SOURCE_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            same = old["size"] == record["size"] and old["index_sha256"] == record["index_sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            raise OutputError(f"{SOURCE_FILE} is damaged; delete it to convert into this folder again",
                              out) from None
        if not same:
            raise OutputError(
                f"was converted from another .rec ({old.get('rec')}, {old['size']:,} bytes), not "
                f"{record['rec']} ({record['size']:,} bytes); convert into a new folder", out)
        if old == record:
            return
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


@contextlib.contextmanager
def _output_lock(out: Path) -> Iterator[None]:
    """An exclusive lock on ``OUT/.convert-rec.lock`` for the whole conversion. The kernel releases it
    when the process ends, so a killed run never leaves a stale lock behind."""
    path = out / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(f"cannot create the lock file ({exc.strerror or exc})", path) from None
    try:
        if not _try_lock(fd):
            raise OutputError("another convert-rec is writing into this folder; wait for it to finish or "
                              "choose another output", out)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race with a waiting run)


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _existing_images(
    images_dir: Path, keys: np.ndarray, labels: np.ndarray, dirnames: dict[int, str], reader: RecordIOReader
) -> np.ndarray:
    """Extension of each image already converted (``""`` when not yet); removes stale temporaries.

    A file counts as converted only if its size is the size of the image in its record: a truncated
    or empty file (a full disk, another tool) is removed and written again."""
    exts = np.full(len(keys), "", dtype=object)
    found: dict[tuple[str, str], int] = {}  # (class folder, key) → position in the lists below
    found_ext: list[str] = []
    found_size: list[int] = []
    found_path: list[str] = []
    for name in set(dirnames.values()):
        folder = images_dir / name
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if entry.name.startswith("."):
                if entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                continue
            stem, dot, ext = entry.name.rpartition(".")
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
            found[(name, stem if dot else ext)] = len(found_ext)
            found_ext.append(dot + ext if dot else "")
            found_size.append(size)
            found_path.append(entry.path)
    if not found:
        return exts
    where = np.array([found.get((dirnames[c], str(k)), -1)
                      for c, k in zip(labels.tolist(), keys.tolist(), strict=True)], dtype=np.int64)
    have = np.flatnonzero(where >= 0)
    offsets, _ = reader.locate(keys[have])
    ok = np.asarray(found_size, dtype=np.int64)[where[have]] == _image_sizes(reader.rec_path, offsets)
    exts[have[ok]] = np.asarray(found_ext, dtype=object)[where[have[ok]]]
    for i in where[have[~ok]].tolist():  # truncated, empty or foreign: written again
        with contextlib.suppress(OSError):
            os.unlink(found_path[i])
    return exts


def _image_sizes(rec_path: Path, offsets: np.ndarray) -> np.ndarray:
    """Size of the encoded image in each record at ``offsets`` (-1 when unreadable: rewritten).

    Reads each record's part header and image-header flag (12 bytes) through a memory map, all records
    at once; only split records (rare) are reassembled one by one."""
    sizes = np.full(len(offsets), -1, dtype=np.int64)
    if not len(offsets) or rec_path.stat().st_size < 12:
        return sizes
    with open(rec_path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        words = np.frombuffer(mm, dtype="<u4", count=len(mm) // 4)
        at = offsets // 4
        usable = np.flatnonzero((offsets % 4 == 0) & (at + 2 < len(words)))
        magic, lrec, flag = (words[at[usable] + k].astype(np.int64) for k in range(3))
        del words  # no view may outlive the map
    good = magic == MAGIC
    whole = good & (lrec >> 29 == 0)
    sizes[usable[whole]] = (lrec[whole] & _LEN_MASK) - 24 - 4 * flag[whole]
    for i in usable[good & (lrec >> 29 == 1)].tolist():  # split record: reassemble it
        with contextlib.suppress(FormatError, OSError, struct.error):
            payload = read_record_at(rec_path, int(offsets[i]))
            sizes[i] = len(payload) - 24 - 4 * _FLAG.unpack_from(payload)[0]
    return sizes
