"""Encoded image bytes → RGB uint8 tensors (3×H×W): the one image decoder of fqtool.

Policy, the same for every command (training, score, verify, align, ``--align``): the EXIF orientation
tag is applied (a photo is read upright, as a viewer shows it; images without the tag, such as the
crops of insightface data sets, are unaffected); grey, palette, CMYK and RGBA become RGB; 16-bit images
keep their high byte; images over :data:`MAX_PIXELS` and files over :data:`MAX_FILE_BYTES` are refused.
Image files are read through :func:`read_image_file` (regular files only: a FIFO or ``/dev/zero`` is
refused instead of blocking or filling memory).

JPEG and WebP go to torchvision's native decoders (libjpeg-turbo, libwebp), 2–3× faster than PIL,
after their headers are parsed here (size at most :data:`MAX_PIXELS`); both survive damaged data (the
fuzz test in ``tests/test_data_fuzz.py`` checks this in a child process). Everything else — PNG, BMP,
odd or damaged headers — is decoded by PIL: torchvision's native PNG decoder crashes the whole process
(SIGSEGV) on some damaged PNGs, and a crash cannot be caught. libjpeg prints "Corrupt JPEG data: …"
warnings straight to C ``stderr``; they are silenced while a native decoder runs (a bad image raises
:class:`BadInputError` instead, or decodes silently).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import stat
import struct
import sys
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from fqtool.errors import BadInputError

if TYPE_CHECKING:
    import torch

# torch / torchvision are imported on first use, so that light users (image_extension, the
# convert-rec workers, ``fqtool --help``) do not pay for them.

__all__ = ["IMAGE_EXTENSIONS", "MAX_FILE_BYTES", "MAX_PIXELS", "decode_image", "decode_rgb_array",
           "image_extension", "read_image_file", "resize_if_needed"]

#: File suffixes treated as images when scanning folders (compared lower-case).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

#: Largest image (width × height) decoded; a damaged header can claim 65535×65535 (12 GB of pixels).
MAX_PIXELS = 64 << 20

#: Largest image file read (bytes): far above any real photo's, far below what fills memory.
MAX_FILE_BYTES = 256 << 20


def read_image_file(path: str | os.PathLike) -> bytes:
    """The bytes of an image file; a special file (FIFO, device), an empty or an oversized file is a
    :class:`BadInputError` naming it (read in one call, so nothing blocks on a pipe)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise BadInputError(f"cannot read image ({exc.strerror or exc})", path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadInputError("not a regular file (a pipe, device or socket); images must be files", path)
        if st.st_size > MAX_FILE_BYTES:
            raise BadInputError(f"image file of {st.st_size} bytes is too large (at most {MAX_FILE_BYTES})",
                                path)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BadInputError(f"cannot read image ({exc.strerror or exc})", path) from None
    finally:
        os.close(fd)
    if not data:
        raise BadInputError("empty file", path)
    return data


def image_extension(data: bytes) -> str:
    """File suffix for encoded image bytes, from their magic number; ``""`` when not recognised."""
    head = bytes(data[:12])
    if head[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if head[:2] == b"BM":
        return ".bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    return ""


def decode_image(data: bytes, source: str = "") -> torch.Tensor:
    """Decode to a uint8 RGB tensor of shape (3, H, W); grayscale and RGBA become 3 channels.

    Raises :class:`BadInputError` naming ``source`` when the bytes are not a readable image.
    """
    if not data:
        raise BadInputError("empty image data", source or None)
    kind, size = _native_header(data)
    if kind and size is not None and 0 < size[0] * size[1] <= MAX_PIXELS:
        img = _decode_native(kind, data)
        if img is not None:
            return upright(img, _orientation(kind, data))
    return _decode_pil(data, source)


def decode_rgb_array(data: bytes, source: str = ""):  # noqa: ANN201 - numpy is imported lazily
    """Decode to an (H, W, 3) uint8 numpy array (the same pixels as :func:`decode_image`)."""
    return decode_image(data, source).permute(1, 2, 0).numpy()


def _orientation(kind: str, data: bytes) -> int:
    """The EXIF orientation (1..8) of a JPEG or WebP, 1 when it has none; PIL reads the tag only when an
    EXIF block is there (cheap test first: most data-set images have none)."""
    if kind == "jpeg" and b"Exif\x00\x00" not in bytes(data[:65536]):
        return 1
    if kind == "webp" and not (bytes(data[12:16]) == b"VP8X" and data[20] & 0x08):
        return 1
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as pil:
                value = pil.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block is ignored, as PIL does when decoding
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(img: torch.Tensor, orientation: int) -> torch.Tensor:
    """A (3, H, W) tensor turned as EXIF ``orientation`` says (what PIL's ``exif_transpose`` does)."""
    import torch

    if orientation == 2:
        return img.flip(-1)
    if orientation == 3:
        return img.flip(-1, -2)
    if orientation == 4:
        return img.flip(-2)
    if orientation == 5:
        return img.transpose(-1, -2).contiguous()
    if orientation == 6:
        return torch.rot90(img, -1, dims=(-2, -1)).contiguous()
    if orientation == 7:
        return img.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return torch.rot90(img, 1, dims=(-2, -1)).contiguous()
    return img


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _native_header(data: bytes) -> tuple[str, tuple[int, int] | None]:
    """``("jpeg" | "webp", (height, width))`` for the formats decoded natively; ``("", None)`` otherwise
    and ``(kind, None)`` when the header is not well formed (then PIL decides)."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg", _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", _webp_size(data)
    return "", None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header, walking the marker segments up to the first SOF."""
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            return None
        if marker in _SOF_MARKERS:
            if length < 8 or pos + 9 > n:
                return None
            return (data[pos + 5] << 8) | data[pos + 6], (data[pos + 7] << 8) | data[pos + 8]
        if marker in (0xD9, 0xDA):  # end of image / scan before any frame header
            return None
        pos += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a still WebP (lossy ``VP8 ``, lossless ``VP8L``, extended ``VP8X``); None for
    animations and malformed headers."""
    if len(data) < 30:
        return None
    chunk = bytes(data[12:16])
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
        return height, width
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X" and not data[20] & 0x02:  # 0x02: animation
        return int.from_bytes(data[27:30], "little") + 1, int.from_bytes(data[24:27], "little") + 1
    return None


def _decode_native(kind: str, data: bytes) -> torch.Tensor | None:
    """torchvision's decode (RGB), or None when it refuses the data (PIL retries and explains)."""
    import torch

    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    decode = _native_decoders()[kind]
    guard = _c_stderr or _make_c_stderr()
    guard.enter()
    try:
        img = decode(buf)
    except (RuntimeError, ValueError):
        return None
    finally:
        guard.leave()
    if img.ndim != 3 or img.shape[0] != 3 or img.dtype != torch.uint8:
        return None
    return img


_native: dict[str, Callable] | None = None


def _native_decoders() -> dict[str, Callable]:
    """torchvision's JPEG and WebP decoder ops, called directly: torchvision 0.29 deprecates its image
    I/O in favour of TorchCodec and warns on every public call; the ops themselves are unchanged.
    Falls back to the public functions (warning silenced) where the ops are not exposed."""
    global _native
    if _native is None:
        import torch
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_jpeg as public_jpeg
        from torchvision.io import decode_webp as public_webp

        rgb = ImageReadMode.RGB
        try:
            jpeg_op, webp_op = torch.ops.image.decode_jpeg, torch.ops.image.decode_webp
            _native = {"jpeg": lambda buf: jpeg_op(buf, rgb.value, False),
                       "webp": lambda buf: webp_op(buf, rgb.value)}
        except (AttributeError, RuntimeError):  # pragma: no cover - other torchvision builds

            def quiet(fn: Callable) -> Callable:
                def call(buf: torch.Tensor) -> torch.Tensor:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)
                        return fn(buf, mode=rgb)

                return call

            _native = {"jpeg": quiet(public_jpeg), "webp": quiet(public_webp)}
    return _native


# -- silencing libjpeg's warnings ----------------------------------------------------------------------
# libjpeg reports recoverable damage ("Corrupt JPEG data: 13 extraneous bytes before marker 0xd9") with
# fprintf(stderr, …). While a native decode runs, the C library's ``stderr`` pointer is pointed at
# /dev/null. Only C stdio is affected: Python's own output (sys.stderr, rich) writes to file descriptor
# 2 directly and is never lost. Done only where the C library exposes a writable ``stderr`` variable
# (glibc, macOS); elsewhere the warning may still appear.


class _CStderr:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.var: ctypes.c_void_p | None = None
        self.null: int | None = None
        self.saved: int | None = None
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self._bind()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        """A child forked while another thread was decoding (DataLoader workers) starts clean."""
        self.lock = threading.Lock()
        if self.depth and self.var is not None:
            self.var.value = self.saved
        self.depth = 0

    def _bind(self) -> None:
        if sys.platform == "darwin":
            name = "__stderrp"
        elif sys.platform.startswith("linux") and _is_glibc():
            name = "stderr"
        else:
            return
        libc = ctypes.CDLL(None)
        fopen = libc.fopen
        fopen.restype, fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
        null = fopen(b"/dev/null", b"w")
        if null:
            self.var, self.null = ctypes.c_void_p.in_dll(libc, name), null

    def enter(self) -> None:
        if self.var is None:
            return
        with self.lock:
            if self.depth == 0:
                self.saved = self.var.value
                self.var.value = self.null
            self.depth += 1

    def leave(self) -> None:
        if self.var is None:
            return
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                self.var.value = self.saved


def _is_glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


_c_stderr: _CStderr | None = None
_c_stderr_made = threading.Lock()


def _make_c_stderr() -> _CStderr:
    """The one process-wide silencer (two would save and restore each other's /dev/null)."""
    global _c_stderr
    with _c_stderr_made:
        if _c_stderr is None:
            _c_stderr = _CStderr()
    return _c_stderr


# -- PIL ---------------------------------------------------------------------------------------------

_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def _decode_pil(data: bytes, source: str) -> torch.Tensor:
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # PIL's warnings (odd EXIF, palette transparency) are not ours to
            warnings.simplefilter("ignore")  # print: the image decodes, or one BadInputError explains
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as pil:
                if pil.width * pil.height > MAX_PIXELS:
                    raise BadInputError(f"image of {pil.width}×{pil.height} pixels is too large",
                                        source or None)
                arr = _pil_rgb_array(_exif_upright(pil), np)
    except BadInputError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadInputError(f"image is too large ({exc})", source or None) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError,
            KeyError, struct.error, MemoryError, ZeroDivisionError, OverflowError) as exc:
        kind = "not an image" if isinstance(exc, UnidentifiedImageError) else f"unreadable image ({exc})"
        raise BadInputError(kind, source or None) from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _exif_upright(pil):  # noqa: ANN001, ANN202 - PIL is imported lazily
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(pil)
    except Exception:  # a damaged EXIF block: the image as stored
        return pil


def _pil_rgb_array(pil, np):  # noqa: ANN001, ANN202 - PIL and numpy are imported lazily
    """(H, W, 3) uint8 array; 16-bit grey keeps its high byte (as torchvision did), 32-bit integer and
    float grey are scaled from their own range."""
    if pil.mode in _SIXTEEN_BIT:
        wide = np.asarray(pil).astype(np.int64)
        if pil.mode == "I" and wide.max(initial=0) > 65535 or wide.min(initial=0) < 0:
            wide = _rescaled(wide.astype(np.float64), np) * 65535
        grey = (np.clip(wide, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if pil.mode == "F":
        grey = (_rescaled(np.asarray(pil, dtype=np.float64), np) * 255).round().astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    rgb = pil if pil.mode == "RGB" else pil.convert("RGB")
    return np.array(rgb, dtype=np.uint8)


def _rescaled(values, np):  # noqa: ANN001, ANN202
    """Finite values mapped onto [0, 1] (their minimum and maximum)."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def resize_if_needed(img: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Resize a (…, 3, H, W) uint8 tensor to ``size`` = (H, W) with antialiasing, if it differs."""
    if size is None or tuple(img.shape[-2:]) == tuple(size):
        return img
    from torchvision.transforms.v2 import functional as F

    return F.resize(img, list(size), antialias=True)
