"""convert-rec: an insightface / im2rec ``.rec`` → an image folder, a list file and verification folders.

Output layout (``OUT``)::

    images/<class>/<key>.<ext>    original encoded bytes (no re-encoding), extension from magic bytes
    verification/<name>/          each SRC/*.bin: images/NNNNNN.<ext> + pairs.txt
    classes.tsv                   <label>\\t<class folder>
    train.txt | train.lst         the list (written last: its presence means the run completed)
    source.json                   what OUT was converted from (name, size, mtime, index hash)
    .convert-rec.lock             held (flock) while a conversion writes into OUT

Class folders are the label zero-padded to a common width, so sorting them gives label order again.

Speed: the ``.rec`` is read sequentially in large blocks (records sorted by byte offset), class
folders are created once, and each image costs one open/write/close/rename. The work is split into
blocks of consecutive records handled by worker threads (or processes). Every file is written under
a ``.tmp`` name and renamed, so an interrupted run leaves no partial file; a rerun skips the images
already present (with the size their record says) and removes stale temporaries. A rerun from a
different ``.rec`` into the same OUT is refused, and so is a second conversion running into it.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fqtool.data.binfile import load_bin, write_verification_folder
from fqtool.data.convert_reruns import (
    _check_source,
    _existing_images,
    _output_lock,
    _source_record,
)
from fqtool.data.decode import image_extension
from fqtool.data.lists import LIST_FORMATS, default_list_name, write_classes, write_list
from fqtool.data.rec_layout import image_layout
from fqtool.data.recordio import MAGIC, RecordIOReader, read_record_at, record_fits
from fqtool.errors import BadInputError, FormatError, OutputError
from fqtool.fsutil import ensure_dir

__all__ = ["ConvertPlan", "ConvertResult", "convert_rec", "default_workers", "plan_conversion", "resolve_rec"]

_PART = struct.Struct("<II")
_FLAG = struct.Struct("<I")
_LEN_MASK = (1 << 29) - 1
_BLOCK_BYTES = 8 << 20
_MAX_SPAN = 4 << 20
_TASK_IMAGES = 4096


@dataclass
class ConvertResult:
    """Summary of a conversion."""

    out: Path
    num_images: int
    num_classes: int
    written: int
    skipped: int
    list_path: Path
    classes_path: Path
    verification: list[str] = field(default_factory=list)
    seconds: float = 0.0  # the whole call
    image_seconds: float = 0.0  # the images alone (no .bin, no list)

    @property
    def images_per_second(self) -> float:
        """Images (written or found present) per second of image work."""
        return self.num_images / self.image_seconds if self.image_seconds > 0 else 0.0


def default_workers() -> int:
    """Worker count used when none is given: the CPUs this process may use, at most 8."""
    from fqtool.runtime import usable_cpus

    return min(8, usable_cpus())


def resolve_rec(src: str | Path) -> tuple[Path, Path]:
    """``(rec file, folder holding the *.bin files)`` for an insightface folder or a ``.rec`` path."""
    src = Path(src)
    if src.is_dir():
        rec = src / "train.rec"
        if not rec.is_file():
            raise BadInputError("folder has no train.rec", src)
        return rec, src
    if src.is_file() and src.suffix.lower() == ".rec":
        return src, src.parent
    if not src.exists():
        raise BadInputError("no such file or folder", src)
    raise BadInputError("expected an insightface folder (train.rec, train.idx) or a .rec file", src)


def _class_dirnames(labels: np.ndarray, num_classes: int) -> dict[int, str]:
    width = len(str(max(num_classes - 1, int(labels.max()) if len(labels) else 0, 0)))
    return {c: (f"{c:0{width}d}" if c >= 0 else "unlabeled") for c in _distinct(labels)}


def _distinct(labels: np.ndarray) -> list[int]:
    """Sorted distinct labels (bincount: np.unique is slow on millions of values)."""
    present = np.flatnonzero(np.bincount(labels[labels >= 0])).tolist() if len(labels) else []
    return ([-1] if (labels < 0).any() else []) + present


@dataclass
class ConvertPlan:
    """What a conversion will read: the ``.rec`` (opened, layout known) and the ``.bin`` files."""

    rec_path: Path
    reader: RecordIOReader
    keys: np.ndarray
    labels: np.ndarray
    num_classes: int
    bins: list[Path]

    @property
    def total(self) -> int:
        return len(self.keys)


def plan_conversion(src: str | Path, *, include_bins: bool = True, limit: int | None = None) -> ConvertPlan:
    """Open ``src`` and check it (index, header, every ``.bin``) before anything is written."""
    rec_path, bin_dir = resolve_rec(src)
    reader = RecordIOReader(rec_path)
    layout = image_layout(reader)
    keys, labels = layout.keys, layout.labels
    if limit is not None:
        keys, labels = keys[: max(limit, 0)], labels[: max(limit, 0)]
    bins = sorted(bin_dir.glob("*.bin")) if include_bins else []
    for b in bins:  # fail on a bad or unsafe .bin, or an image of unknown format, before writing anything
        _check_bin_images(load_bin(b).images, b)
    return ConvertPlan(rec_path, reader, keys, labels, layout.num_classes, bins)


def _check_bin_images(images: list[bytes], path: Path) -> None:
    for i, data in enumerate(images):
        if not image_extension(data):
            raise BadInputError(f"image {i} is not a recognised image format (JPEG, PNG, BMP, WebP)", path)


def convert_rec(
    src: str | Path | ConvertPlan,
    out: str | Path,
    *,
    list_format: str = "space",
    include_bins: bool = True,
    workers: int | None = None,
    limit: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    use_processes: bool = False,
) -> ConvertResult:
    """Convert ``src`` (insightface folder or ``.rec``, or a :class:`ConvertPlan` made by
    :func:`plan_conversion`, which then fixes ``include_bins``/``limit``) into ``out``.

    ``workers`` (default: CPUs, ≤ 8) threads write the images (file-system calls release the GIL);
    ``use_processes`` uses worker processes instead. ``limit`` converts only the first N images (by
    key). Safe to rerun after an interruption. ``on_progress(n)`` is called as images are done
    (written or found present).
    """
    started = time.perf_counter()
    if list_format not in LIST_FORMATS:
        raise BadInputError(f"unknown list format {list_format!r}; use one of {', '.join(LIST_FORMATS)}")
    if isinstance(src, ConvertPlan):
        plan = src
    else:
        plan = plan_conversion(src, include_bins=include_bins, limit=limit)
    out = Path(out)
    images_dir = _prepare_output(out)
    with _output_lock(out):
        _check_source(out, _source_record(plan))
        return _convert_locked(plan, out, images_dir, list_format, workers, use_processes, on_progress,
                               started)


def _convert_locked(
    plan: ConvertPlan, out: Path, images_dir: Path, list_format: str, workers: int | None,
    use_processes: bool, on_progress: Callable[[int], None] | None, started: float,
) -> ConvertResult:
    rec_path, reader, keys, labels, bins = plan.rec_path, plan.reader, plan.keys, plan.labels, plan.bins
    dirnames = _class_dirnames(labels, plan.num_classes)
    exts = _existing_images(images_dir, keys, labels, dirnames, reader)
    todo = np.flatnonzero(exts == "")
    for name in {dirnames[c] for c in _distinct(labels[todo])}:
        (images_dir / name).mkdir(exist_ok=True)
    if on_progress is not None and len(keys) > len(todo):
        on_progress(len(keys) - len(todo))
    offsets, spans = reader.locate(keys[todo])
    order = np.argsort(offsets, kind="stable")
    todo, offsets, spans = todo[order], offsets[order], spans[order]
    folder_of = np.array([dirnames[int(c)] for c in labels[todo].tolist()], dtype=object)
    new_exts = _run_tasks(
        rec_path, str(images_dir), offsets, spans, keys[todo], folder_of,
        workers if workers is not None else default_workers(), use_processes, on_progress,
    )
    exts[todo] = new_exts
    image_seconds = time.perf_counter() - started
    verification = [_write_bin(b, out / "verification" / b.stem) for b in bins]
    classes = {c: name for c, name in sorted(dirnames.items()) if c >= 0}
    classes_path = out / "classes.tsv"
    write_classes(classes_path, classes)
    list_path = out / default_list_name(list_format)
    rows = zip(labels.tolist(), keys.tolist(), exts, strict=True)
    paths = [f"images/{dirnames[c]}/{k}{e}" for c, k, e in rows]
    write_list(list_path, paths, labels, list_format)
    return ConvertResult(
        out, len(keys), len(classes), len(todo), len(keys) - len(todo), list_path, classes_path,
        verification, time.perf_counter() - started, image_seconds,
    )


def _prepare_output(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise OutputError("output exists and is not a folder", out)
    ensure_dir(out)
    return ensure_dir(out / "images")


def _write_bin(path: Path, folder: Path) -> str:
    write_verification_folder(load_bin(path), folder)
    return path.stem


def _run_tasks(
    rec_path: Path,
    images_dir: str,
    offsets: np.ndarray,
    spans: np.ndarray,
    keys: np.ndarray,
    folders: np.ndarray,
    workers: int,
    use_processes: bool,
    on_progress: Callable[[int], None] | None,
) -> list[str]:
    n = len(keys)
    bounds = list(range(0, n, _TASK_IMAGES)) + [n]
    tasks = [
        (str(rec_path), images_dir, offsets[a:b], spans[a:b], keys[a:b], folders[a:b])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        if b > a
    ]
    results: list[list[str]] = [[] for _ in tasks]
    if workers <= 1 or len(tasks) <= 1:
        for t, args in enumerate(tasks):
            results[t] = _write_block(*args)
            if on_progress is not None:
                on_progress(len(results[t]))
        return [e for r in results for e in r]
    with _executor(min(workers, len(tasks)), use_processes) as pool:
        futures: dict[Future, int] = {pool.submit(_write_block, *args): t for t, args in enumerate(tasks)}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when="FIRST_COMPLETED")
                for fut in done:
                    results[futures[fut]] = fut.result()
                    if on_progress is not None:
                        on_progress(len(results[futures[fut]]))
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return [e for r in results for e in r]


def _executor(workers: int, use_processes: bool) -> Executor:
    if not use_processes:
        return ThreadPoolExecutor(max_workers=workers)
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def _write_block(
    rec_path: str,
    images_dir: str,
    offsets: np.ndarray,
    spans: np.ndarray,
    keys: np.ndarray,
    folders: np.ndarray,
) -> list[str]:
    """Write the images of one block of records (sorted by offset); returns their extensions."""
    exts: list[str] = []
    offs = offsets.tolist()
    lens = np.minimum(spans, _MAX_SPAN).tolist()
    key_list = keys.tolist()
    folder_list = folders.tolist()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    fd = os.open(rec_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        i, n = 0, len(offs)
        while i < n:
            base = offs[i]
            j, end = i, base
            while j < n and (j == i or offs[j] + lens[j] - base <= _BLOCK_BYTES):
                end = max(end, offs[j] + lens[j])
                j += 1
            buf = _pread(fd, end - base, base)
            for k in range(i, j):
                image = _image_bytes(buf, offs[k] - base, rec_path, offs[k], key_list[k], lens[k])
                ext = image_extension(image[:12])
                if not ext:
                    msg = f"record {key_list[k]} is not an encoded image (unknown format)"
                    raise BadInputError(msg, rec_path)
                final = f"{images_dir}/{folder_list[k]}/{key_list[k]}{ext}"
                tmp = f"{images_dir}/{folder_list[k]}/.{key_list[k]}{ext}.tmp"
                out_fd = os.open(tmp, flags, 0o644)
                try:
                    while image:
                        image = image[os.write(out_fd, image):]
                finally:
                    os.close(out_fd)
                os.replace(tmp, final)
                exts.append(ext)
            i = j
    except OSError as exc:
        where = exc.filename or images_dir
        raise OutputError(f"cannot write images ({exc.strerror or exc})", where) from None
    finally:
        os.close(fd)
    return exts


def _pread(fd: int, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
    return os.read(fd, size)


def _image_bytes(buf: bytes, pos: int, rec_path: str, offset: int, key: int, span: int = 0) -> memoryview:
    """The encoded image of the record at ``pos`` in ``buf`` (header and extra labels stripped)."""
    if pos + 8 > len(buf):
        raise FormatError(f"truncated record at byte offset {offset} (file ends)", rec_path)
    magic, lrec = _PART.unpack_from(buf, pos)
    if magic != MAGIC:
        raise FormatError(
            f"not a RecordIO record at byte offset {offset} (magic {magic:#010x}, expected {MAGIC:#010x})",
            rec_path,
        )
    length = lrec & _LEN_MASK
    if lrec >> 29 == 0 and not record_fits(buf, pos, length, span):
        raise FormatError(f"record {key} at byte offset {offset} says it holds {length} bytes but the next "
                          f"record starts {span - 8} bytes later (damaged length field)", rec_path)
    if lrec >> 29 != 0 or pos + 8 + length > len(buf):
        payload = memoryview(read_record_at(rec_path, offset))  # split record, or longer than the read
    else:
        payload = memoryview(buf)[pos + 8:pos + 8 + length]
    if len(payload) < 24:
        raise FormatError(f"record {key} is too short to be an image record", rec_path)
    (flag,) = _FLAG.unpack_from(payload)
    start = 24 + 4 * flag
    if start > len(payload):
        raise FormatError(f"record {key} header announces {flag} labels past its end", rec_path)
    return payload[start:]
