"""Image decoding speed of ``fqtool.data.decode.decode_image`` per format (one thread).

    python benchmarks/decode.py [--repeat 2000] [--json FILE]

Encodes the 112×112 test faces (``tests/data/faces``) as JPEG (q95), PNG, WebP and BMP, then decodes
each format ``--repeat`` times in a loop (best of 3 rounds, so a busy machine spoils less). Prints one
line per format (µs per image, images/s). ``fqtool score`` and training decode in DataLoader workers,
``verify`` and ``make-list --check`` in threads: multiply by the workers for a pipeline estimate.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
from pathlib import Path

import torch
from PIL import Image

from fqtool.data.decode import decode_image

FACES = Path(__file__).resolve().parent.parent / "tests" / "data" / "faces"
FORMATS = {"JPEG": {"quality": 95}, "PNG": {}, "WEBP": {"quality": 90}, "BMP": {}}


def encoded_faces(fmt: str) -> list[bytes]:
    """The test faces re-encoded as ``fmt``."""
    out = []
    for path in sorted(FACES.glob("*.jpg")):
        with Image.open(path) as img:
            buf = io.BytesIO()
            img.convert("RGB").save(buf, fmt, **FORMATS[fmt])
            out.append(buf.getvalue())
    return out


def time_decode(images: list[bytes], repeat: int) -> float:
    """Best-of-3 seconds per decoded image."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(repeat):
            decode_image(images[i % len(images)])
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for fmt in FORMATS:
        images = encoded_faces(fmt)
        decode_image(images[0])  # warm-up: imports, decoder set-up
        seconds = time_decode(images, args.repeat)
        results[fmt] = {"us_per_image": seconds * 1e6, "images_per_second": 1 / seconds,
                        "bytes": sum(map(len, images)) // len(images)}
        print(f"{fmt:5s} {results[fmt]['bytes']:6d} B  {seconds * 1e6:7.0f} µs/image  "
              f"{1 / seconds:8,.0f} img/s (1 thread, {platform.machine()})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
