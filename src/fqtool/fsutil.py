"""Small file-system helpers: atomic writes and writable-folder checks.

Outputs are written under a temporary name in the destination folder and renamed into place, so an
interrupted run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from fqtool.errors import OutputError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Permissions of finished files: what ``open()`` would give (0666 minus the umask), not mkstemp's 0600.
FILE_MODE = 0o666 & ~_read_umask()


#: Longest file name (bytes) most file systems allow; a temporary name must fit it too.
NAME_MAX = 255
#: What mkstemp adds to the prefix: 8 random characters and the ``.tmp`` suffix.
_TEMP_EXTRA = 8 + len(".tmp")


def _temp_prefix(name: str) -> str:
    """``.<name>.``, the name shortened (on a character boundary) so the whole temporary name fits
    :data:`NAME_MAX` bytes: a legal 244-character file name still gets a legal temporary name."""
    room = NAME_MAX - _TEMP_EXTRA - 2
    encoded = os.fsencode(name)
    if len(encoded) > room:
        name = os.fsdecode(encoded[:room])
        while name and "\udc80" <= name[-1] <= "\udcff":  # half a multi-byte character cut off
            name = name[:-1]
    return f".{name}."


def temp_file_for(path: str | Path) -> tuple[int, Path]:
    """An open temporary file (fd, path) next to ``path``, with the permissions a normal file would get."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    with contextlib.suppress(OSError):
        os.fchmod(fd, FILE_MODE)
    return fd, Path(name)


def ensure_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) and check that files can be written in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder ({exc.strerror or exc})", path) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError("folder is not writable", path)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    An ``OSError`` in the block (a full disk while writing) becomes an :class:`OutputError` naming
    ``path``; the temporary file is removed and a previous ``path`` is left as it was.
    """
    path = Path(path)
    ensure_dir(path.parent if str(path.parent) else Path("."))
    fd, tmp = temp_file_for(path)
    os.close(fd)
    try:
        yield tmp
        with contextlib.suppress(OSError):  # writers that recreate the file (safetensors) leave it 0600
            os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:  # full disk, quota, read-only...: one line naming the file, old file untouched
        _discard(tmp)
        raise OutputError(f"cannot write ({exc.strerror or exc}); nothing was written", path) from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()
        _fsync(handle)


def _fsync(handle: IO) -> None:
    """fsync where the file system supports it; a full disk reported only now is still an error."""
    try:
        os.fsync(handle.fileno())
    except (AttributeError, ValueError):
        pass
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def source_identity(path: str | Path, head: int = 1 << 16) -> str:
    """What a resumable step remembers of an input file: size, modification time and a hash of its first
    ``head`` bytes; another file (or the same name replaced in place) gives another identity."""
    st = os.stat(path)
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read(head)).hexdigest()[:16]
    return f"{st.st_size}:{st.st_mtime_ns}:{digest}"


def check_regular_file(path: str | Path) -> None:
    """Raise ``OSError`` for a special file (FIFO, device, socket): reading ``/dev/zero`` as a list or a
    scores file would never end, a FIFO would block. Callers turn it into their one-line message."""
    import stat

    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file (a pipe, device or socket)")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (checkpoints can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
