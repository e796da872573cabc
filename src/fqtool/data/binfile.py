"""Verification sets: insightface ``.bin`` files (lfw.bin, cfp_fp.bin, agedb_30.bin …) and folders.

A ``.bin`` is ``pickle.dump((images, issame))``: 2·P encoded images (pair i = images 2i, 2i+1) as
``bytes`` (or uint8 numpy arrays) and P booleans. Pickle can run arbitrary code, so these files are
loaded with a restricted unpickler that only builds what such a file contains; anything else raises
:class:`UnsafePickleError` before it is called.

Folder form: ``images/NNNNNN.<ext>`` plus ``pairs.txt`` with ``<image a> <image b> <0|1>`` per pair.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fqtool.data.decode import decode_image, image_extension, read_image_file, resize_if_needed
from fqtool.errors import BadInputError, FormatError, UnsafePickleError
from fqtool.fsutil import atomic_write_bytes, atomic_write_text, ensure_dir

if TYPE_CHECKING:
    import torch

__all__ = [
    "VerificationSet",
    "decode_pairs",
    "folder_to_bin",
    "load_bin",
    "load_verification_folder",
    "put_file",
    "save_bin",
    "write_verification_folder",
]

_ALLOWED_DTYPES = (np.dtype(np.uint8), np.dtype(np.bool_))


@dataclass
class VerificationSet:
    """``images[2i]`` and ``images[2i+1]`` form pair ``i``; ``issame[i]`` says if they are one person."""

    name: str
    images: list[bytes]
    issame: np.ndarray
    path: Path | None = None  # the file it was read from, for error messages

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else self.name

    @property
    def num_pairs(self) -> int:
        return len(self.issame)


# -- restricted unpickling ----------------------------------------------------------------------------

def _checked_dtype(dtype: np.dtype) -> np.dtype:
    if np.dtype(dtype) not in _ALLOWED_DTYPES:
        raise UnsafePickleError(f"pickle holds an array of dtype {np.dtype(dtype)}, not uint8/bool")
    return dtype


def _safe_dtype(obj: object, align: bool = False, copy: bool = False) -> np.dtype:
    if not isinstance(obj, str | bytes):
        raise UnsafePickleError("pickle builds a numpy dtype from something other than a type code")
    return _checked_dtype(np.dtype(obj.decode("ascii") if isinstance(obj, bytes) else obj, align, copy))


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` inside a pickle: usable only as ``_reconstruct``'s first argument,
    not callable (so a pickle cannot call ``ndarray(...)`` itself)."""


_NDARRAY = _NdarrayToken()


def _ndarray_reconstruct(cls: object, shape: object, dtype_code: object) -> np.ndarray:
    if cls is not _NDARRAY:
        raise UnsafePickleError("pickle reconstructs something that is not a numpy array")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _safe_frombuffer(buf: object, dtype: np.dtype, shape: tuple, order: str) -> np.ndarray:
    _checked_dtype(dtype)
    if not isinstance(buf, bytes | bytearray | memoryview | pickle.PickleBuffer):
        raise UnsafePickleError("pickle builds an array from something that is not a buffer")
    arr = np.frombuffer(buf, dtype=dtype)
    return arr.reshape(shape, order=order)


def _safe_scalar(dtype: np.dtype, data: bytes) -> np.generic:
    _checked_dtype(dtype)
    if not isinstance(data, bytes):
        raise UnsafePickleError("pickle builds a numpy scalar from something that is not bytes")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _safe_codecs_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"pickle calls _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_ALLOWED: dict[tuple[str, str], object] = {
    **{(m, "_reconstruct"): _ndarray_reconstruct for m in _NUMPY_CORE},
    **{(m, "scalar"): _safe_scalar for m in _NUMPY_CORE},
    **{(m, "_frombuffer"): _safe_frombuffer for m in _NUMPY_NUMERIC},
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _safe_codecs_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the few globals a verification ``.bin`` needs; refuses everything else."""

    def find_class(self, module: str, name: str) -> object:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafePickleError(f"refusing to load: the pickle asks for {module}.{name}, "
                                    "which a verification .bin never contains")
        return found


def _restricted_load(data: bytes, path: Path) -> object:
    def load(**kw: str) -> object:
        return _RestrictedUnpickler(io.BytesIO(data), **kw).load()

    try:
        try:
            return load()
        except UnicodeDecodeError:  # a Python 2 pickle of str: the images are raw bytes
            return load(encoding="bytes")
    except UnsafePickleError as exc:
        raise UnsafePickleError(str(exc), path) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError) as exc:
        raise FormatError(f"not a verification .bin (unpickling failed: {exc})", path) from None


def _as_bytes(item: object, i: int, path: Path) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, bytearray | memoryview):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8:
        return item.tobytes()
    raise FormatError(f"image {i} is a {type(item).__name__}, not encoded image bytes", path)


def _validate(obj: object, path: Path) -> VerificationSet:
    if not isinstance(obj, tuple | list) or len(obj) != 2:
        raise FormatError("expected a pickled (images, issame) pair", path)
    images, issame = obj
    if not isinstance(images, list | tuple):
        raise FormatError("the images entry is not a list", path)
    if isinstance(issame, np.ndarray):
        if issame.dtype not in _ALLOWED_DTYPES:
            raise FormatError(f"issame has dtype {issame.dtype}, not bool", path)
        values = issame.ravel()
    elif isinstance(issame, list | tuple) and all(isinstance(x, bool | int | np.bool_) for x in issame):
        values = np.array([int(x) for x in issame], dtype=object)
    else:
        raise FormatError("issame is not a list of booleans", path)
    odd = [x for x in values.tolist() if int(x) not in (0, 1)]
    if odd:
        raise FormatError(f"issame holds {odd[0]!r}; each entry must be true/false (or 1/0)", path)
    same = np.array([bool(x) for x in values.tolist()], dtype=bool)
    _check_expansion(images, path)
    vset = VerificationSet(path.stem, [_as_bytes(x, i, path) for i, x in enumerate(images)], same, path)
    _check_counts(vset, path)
    return vset


#: Image bytes a .bin may hold per byte of file (pairs share images, so a little over 1 is normal; a
#: pickle of references to one image can claim a million times its size) and at least this many bytes.
_MAX_EXPANSION = 64
_MIN_EXPANSION_BYTES = 2 << 30


def _check_expansion(images: Sequence, path: Path) -> None:
    """A small file may not stand for more image data than it could plausibly hold."""
    try:
        size = path.stat().st_size
    except OSError:
        return
    limit = max(_MAX_EXPANSION * size, _MIN_EXPANSION_BYTES)
    total = 0
    for item in images:
        total += len(item) if isinstance(item, bytes | bytearray | memoryview | np.ndarray) else 0
        if total > limit:
            raise FormatError(f"{len(images)} images that repeat the same data stand for more than "
                              f"{limit >> 20} MiB of images in a {size >> 10} KiB file; refused", path)


def _check_counts(vset: VerificationSet, path: Path) -> None:
    n = len(vset.images)
    if n % 2:
        raise FormatError(f"odd number of images ({n}); a verification set holds pairs", path)
    if len(vset.issame) != n // 2:
        raise FormatError(f"{n} images make {n // 2} pairs but issame has {len(vset.issame)} entries", path)


def load_bin(path: str | Path) -> VerificationSet:
    """Load an insightface verification ``.bin`` safely (restricted unpickler, Python 2 files too)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read ({exc.strerror or exc})", path) from None
    return _validate(_restricted_load(data, path), path)


def save_bin(path: str | Path, images: Sequence[bytes], issame: Sequence[bool] | np.ndarray) -> None:
    """Write a ``.bin`` that insightface's ``load_bin`` reads (atomic)."""
    vset = VerificationSet(Path(path).stem, [bytes(x) for x in images], np.asarray(issame, dtype=bool))
    _check_counts(vset, Path(path))
    payload = pickle.dumps((vset.images, [bool(x) for x in vset.issame]), protocol=4)
    atomic_write_bytes(path, payload)


def decode_pairs(vset: VerificationSet, size: tuple[int, int] | None = (112, 112),
                 workers: int | None = None) -> torch.Tensor:
    """Decode all images to one uint8 tensor (2P, 3, H, W) in pair order (threads; decoders drop the GIL)."""
    import torch

    if not vset.images:
        h, w = size or (112, 112)
        return torch.zeros(0, 3, h, w, dtype=torch.uint8)

    def one(i: int) -> torch.Tensor:
        try:
            return resize_if_needed(decode_image(vset.images[i]), size)
        except BadInputError as exc:
            raise BadInputError(f"image {i}: {exc}", vset.where) from None

    first = one(0)
    out = torch.empty((len(vset.images), *first.shape), dtype=torch.uint8)
    out[0] = first
    workers = workers or min(4, os.cpu_count() or 1)

    def fill(i: int) -> None:
        img = one(i)
        if img.shape != first.shape:
            raise BadInputError(f"image {i}: size {tuple(img.shape[1:])} differs from the first image's "
                                f"{tuple(first.shape[1:])}; pass a size", vset.where)
        out[i] = img

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fill, range(1, len(vset.images))))
    return out


# -- folder form ----------------------------------------------------------------------------------

def put_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via ``.<name>.tmp`` + rename: never a partial file under ``path``.

    Cheaper than :func:`fqtool.fsutil.atomic_write_bytes` (no random name, no fsync) for the
    thousands of small images a conversion writes; the name is deterministic, so a rerun overwrites
    a leftover temporary file.
    """
    head, tail = os.path.split(path)
    tmp = os.path.join(head, f".{tail}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)

def write_verification_folder(vset: VerificationSet, folder: str | Path) -> Path:
    """Write ``images/NNNNNN.<ext>`` (original bytes) and ``pairs.txt`` (written last)."""
    folder = Path(folder)
    images_dir = ensure_dir(folder / "images")
    names = []
    for i, data in enumerate(vset.images):
        ext = image_extension(data)
        if not ext:
            raise BadInputError(f"image {i} is not a recognised image format", vset.where)
        name = f"{i:06d}{ext}"
        target = images_dir / name
        if not (target.is_file() and target.stat().st_size == len(data)):
            put_file(str(target), data)
        names.append(f"images/{name}")
    lines = [f"{names[2 * i]} {names[2 * i + 1]} {int(s)}\n" for i, s in enumerate(vset.issame.tolist())]
    atomic_write_text(folder / "pairs.txt", "".join(lines))
    return folder


def load_verification_folder(folder: str | Path) -> VerificationSet:
    """Read a folder with ``pairs.txt`` (paths relative to the folder) back into a set."""
    folder = Path(folder)
    pairs = folder / "pairs.txt"
    if not pairs.is_file():
        raise BadInputError("no pairs.txt in the verification folder", folder)
    images: list[bytes] = []
    same: list[bool] = []
    for n, line in enumerate(pairs.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3 or fields[2] not in ("0", "1"):
            raise FormatError(f"line {n} is not '<image a> <image b> <0|1>'", pairs)
        for rel in fields[:2]:
            images.append(read_image_file(folder / rel))
        same.append(fields[2] == "1")
    if not same:
        raise BadInputError("pairs.txt lists no pairs", pairs)
    return VerificationSet(folder.name, images, np.array(same, dtype=bool), pairs)


def folder_to_bin(folder: str | Path, out: str | Path) -> VerificationSet:
    """Pack a verification folder into a ``.bin``."""
    vset = load_verification_folder(folder)
    save_bin(out, vset.images, vset.issame)
    return vset
