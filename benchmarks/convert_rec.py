"""Benchmark ``fqtool convert-rec``: images/s for a synthetic insightface-layout ``.rec``.

    python benchmarks/convert_rec.py [--images 20000] [--per-class 20] [--workers N] [--processes] [--dir D]

Builds a ``train.rec`` of small 112×112 JPEGs (a pool of distinct random-ish images, cycled) in a
temporary folder, times :func:`fqtool.data.convert.convert_rec` into another temporary folder, then
times a rerun (everything already present) and prints images/s. insightface's ``rec2image.py``
(decode + re-encode with OpenCV) manages about 1,250 images/s on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fqtool.data.convert import convert_rec, default_workers
from fqtool.data.recordio import RecordIOWriter, pack_record


def _jpeg_pool(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    pool = []
    yy, xx = np.mgrid[0:112, 0:112]
    for _ in range(n):
        base = rng.integers(0, 256, size=3)
        grad = (np.sin(xx / rng.uniform(5, 30)) + np.cos(yy / rng.uniform(5, 30))) * 40
        img = np.clip(base[None, None, :] + grad[..., None] + rng.normal(0, 12, (112, 112, 3)), 0, 255)
        buf = io.BytesIO()
        Image.fromarray(img.astype(np.uint8)).save(buf, "JPEG", quality=95)
        pool.append(buf.getvalue())
    return pool


def build_rec(folder: Path, images: int, per_class: int) -> Path:
    """Write an insightface-layout train.rec/.idx/property (images 1..N, identity records, header 0)."""
    pool = _jpeg_pool(min(256, images))
    classes = (images + per_class - 1) // per_class
    with RecordIOWriter(folder / "train.rec") as writer:
        for i in range(images):
            writer.write(i + 1, pack_record([float(i // per_class), 1.0], pool[i % len(pool)], id=i + 1))
        first = images + 1
        for c in range(classes):
            start = 1 + c * per_class
            stop = min(start + per_class, first)
            writer.write(first + c, pack_record([float(start), float(stop)], b"", id=first + c))
        writer.write(0, pack_record([float(first), float(first + classes)], b""))
    (folder / "property").write_text(f"{classes},112,112\n")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--processes", action="store_true", help="worker processes instead of threads")
    parser.add_argument("--dir", default=None, help="where to make the temporary folders (e.g. /dev/shm)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        src.mkdir()
        t0 = time.perf_counter()
        build_rec(src, args.images, args.per_class)
        size_mb = (src / "train.rec").stat().st_size / 2**20
        print(f"built {args.images} images ({size_mb:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
        kwargs = {"workers": args.workers, "use_processes": args.processes}
        first = convert_rec(src, out, **kwargs)
        mode = "processes" if args.processes else "threads"
        print(f"convert-rec: {first.num_images} images in {first.seconds:.2f} s = "
              f"{first.images_per_second:,.0f} images/s ({args.workers} {mode})")
        again = convert_rec(src, out, **kwargs)
        print(f"rerun (all present): {again.seconds:.2f} s = {again.images_per_second:,.0f} images/s")


if __name__ == "__main__":
    main()
