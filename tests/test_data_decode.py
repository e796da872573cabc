"""Image decoding: formats, channel handling, bad bytes."""

from __future__ import annotations

import pytest
import torch

from fqtool.data.decode import decode_image, image_extension, resize_if_needed
from fqtool.errors import BadInputError

FORMATS = [("JPEG", ".jpg"), ("PNG", ".png"), ("BMP", ".bmp"), ("WEBP", ".webp")]


@pytest.mark.parametrize(("fmt", "ext"), FORMATS)
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_formats_decode_to_rgb(make_image, fmt, ext, mode) -> None:
    data = make_image((200, 40, 10), size=(20, 30), fmt=fmt, mode=mode)
    assert image_extension(data) == ext
    img = decode_image(data, "x")
    assert img.dtype == torch.uint8 and img.shape == (3, 20, 30)
    mean = img.float().mean((1, 2))
    if mode == "RGB":
        assert mean[0] > 150 and mean[2] < 60  # red stays in channel 0: RGB, not BGR
    else:
        assert torch.allclose(mean, mean.mean().expand(3), atol=1.0)  # grey: channels (nearly) equal


def test_rgba_png_drops_alpha(make_image) -> None:
    img = decode_image(make_image(size=(8, 8), fmt="PNG", mode="RGBA"))
    assert img.shape == (3, 8, 8)


def test_garbage_names_source() -> None:
    with pytest.raises(BadInputError, match="faces/a.jpg"):
        decode_image(b"this is not an image at all", "faces/a.jpg")
    with pytest.raises(BadInputError, match="empty"):
        decode_image(b"", "e.jpg")
    assert image_extension(b"GIF89a....") == ""


def test_truncated_jpeg_raises(make_image) -> None:
    with pytest.raises(BadInputError, match="t.jpg"):
        decode_image(make_image()[:60], "t.jpg")


def test_16bit_png_becomes_uint8(tmp_path) -> None:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((6, 5), 40000, dtype=np.uint16)).save(buf, "PNG")
    img = decode_image(buf.getvalue())
    assert img.dtype == torch.uint8 and img.shape == (3, 6, 5)
    assert int(img[0, 0, 0]) == 40000 >> 8


def test_resize_if_needed(make_image) -> None:
    img = decode_image(make_image(size=(50, 40)))
    assert resize_if_needed(img, (50, 40)) is img
    assert resize_if_needed(img, (112, 112)).shape == (3, 112, 112)
    assert resize_if_needed(img, None) is img


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision's public decode_png
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_png_through_pil_matches_torchvision(make_image, mode) -> None:
    """PNGs are decoded by PIL (torchvision's native PNG decoder can segfault on damaged files); the
    pixels must be exactly what torchvision's decoder gives for an intact file."""
    from torchvision.io import ImageReadMode, decode_png

    data = make_image((30, 140, 220), size=(24, 20), fmt="PNG", mode=mode)
    want = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    assert torch.equal(decode_image(data), want)


def test_jpeg_header_claiming_a_huge_image_is_refused_quickly(make_image) -> None:
    import time

    data = bytearray(make_image())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = b"\xea\x60\xea\x60"  # 60000 × 60000 pixels: 10 GB as RGB
    began = time.perf_counter()
    with pytest.raises(BadInputError, match=r"big.jpg: image .*too large"):
        decode_image(bytes(data), "big.jpg")
    assert time.perf_counter() - began < 5


@pytest.mark.parametrize("options", [{"quality": 80}, {"lossless": True}])
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_webp_native_header_sizes(make_image, options, mode) -> None:
    """Lossy (VP8), lossless (VP8L) and alpha (VP8X) WebP headers give the right size to the native path,
    and the pixels equal PIL's."""
    import io

    import numpy as np
    from PIL import Image

    from fqtool.data.decode import _decode_pil, _native_header

    rgb = Image.open(io.BytesIO(make_image(size=(30, 46), fmt="PNG"))).convert(mode)
    buf = io.BytesIO()
    rgb.save(buf, "WEBP", **options)
    data = buf.getvalue()
    assert _native_header(data) == ("webp", (30, 46))
    img = decode_image(data)
    assert img.shape == (3, 30, 46)
    assert np.abs(img.int().numpy() - _decode_pil(data, "").int().numpy()).max() <= 1
