"""Encoded image bytes → RGB uint8 tensors (3×H×W).

torchvision's native decoders (libjpeg-turbo, libpng, libwebp) are used first; PIL is the fallback
for what they do not read (BMP, unusual JPEG/PNG variants).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING

from fqtool.errors import BadInputError

if TYPE_CHECKING:
    import torch

# torch / torchvision are imported on first use, so that light users (image_extension, the
# convert-rec workers, ``fqtool --help``) do not pay for them.

__all__ = ["IMAGE_EXTENSIONS", "decode_image", "image_extension", "resize_if_needed"]

#: File suffixes treated as images when scanning folders (compared lower-case).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


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
    import torch

    if not data:
        raise BadInputError("empty image data", source or None)
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        img = _native_decoder()(buf)
    except (RuntimeError, ValueError):
        return _decode_pil(data, source)
    if img.ndim != 3 or img.shape[0] != 3:  # e.g. an animated image decoded as a stack
        return _decode_pil(data, source)
    if img.dtype != torch.uint8:  # 16-bit PNG
        img = (img.to(torch.int32) >> 8).to(torch.uint8)
    return img


_native: Callable | None = None


def _native_decoder() -> Callable:
    """torchvision's decoder op, called directly: torchvision 0.29 deprecates its image I/O in favour
    of TorchCodec and warns on every public call; the op itself is unchanged. Falls back to the
    public function (warning silenced) where the op is not exposed."""
    global _native
    if _native is None:
        import warnings

        import torch
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_image as public

        rgb = ImageReadMode.RGB
        try:
            op = torch.ops.image.decode_image

            def native(buf: torch.Tensor) -> torch.Tensor:
                return op(buf, rgb.value, False)

        except (AttributeError, RuntimeError):  # pragma: no cover - other torchvision builds

            def native(buf: torch.Tensor) -> torch.Tensor:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    return public(buf, mode=rgb)

        _native = native
    return _native


def _decode_pil(data: bytes, source: str) -> torch.Tensor:
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as pil:
            rgb = pil.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        kind = "not an image" if isinstance(exc, UnidentifiedImageError) else f"unreadable image ({exc})"
        raise BadInputError(kind, source or None) from None
    arr = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return arr.view(rgb.height, rgb.width, 3).permute(2, 0, 1).contiguous()


def resize_if_needed(img: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Resize a (…, 3, H, W) uint8 tensor to ``size`` = (H, W) with antialiasing, if it differs."""
    if size is None or tuple(img.shape[-2:]) == tuple(size):
        return img
    from torchvision.transforms.v2 import functional as F

    return F.resize(img, list(size), antialias=True)
