"""Make docs/img/align-before-after.png with the command itself (run from the repository root):

    python docs/img/align_before_after.py

A 640×480 photo is composed from three of the test faces (tests/data/faces, EQFace's MIT test set) at
different sizes and tilts; ``fqtool align photo.jpg OUT --faces all`` aligns it; the picture shows the
photo with the boxes and landmarks from OUT/faces.csv (left) and the 112×112 crops (right).
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fqtool.data.warp import warp_affine

ROOT = Path(__file__).resolve().parents[2]
FACES = sorted((ROOT / "tests" / "data" / "faces").glob("*.jpg"))
OUT = Path(__file__).resolve().parent / "align-before-after.png"
#: (face file index, x, y, scale, degrees counter-clockwise)
PLACEMENTS = [(6, 40, 150, 0.8, 20), (10, 230, 60, 1.9, -8), (19, 470, 230, 1.1, -25)]


def compose() -> np.ndarray:
    rng = np.random.default_rng(3)
    grey = rng.integers(70, 190, (12, 16, 1)) + np.array([[[12, 4, -10]]])  # a muted, warm backdrop
    small = np.clip(grey, 0, 255).astype(np.uint8)
    photo = np.asarray(Image.fromarray(small).resize((640, 480), Image.BICUBIC)).astype(np.float64)
    for index, x, y, scale, degrees in PLACEMENTS:
        face = np.asarray(Image.open(FACES[index]).convert("RGB"))
        theta = np.deg2rad(-degrees)
        rot = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        matrix = np.hstack([rot, (np.array([x, y]) + 56 * scale - rot @ [56, 56])[:, None]])
        pasted = warp_affine(face, matrix, 640)[:480].astype(np.float64)
        mask = warp_affine(np.full_like(face, 255), matrix, 640)[:480] / 255.0
        photo = photo * (1 - mask) + pasted * mask
    return np.clip(np.rint(photo), 0, 255).astype(np.uint8)


def draw(photo_path: Path, out_dir: Path) -> Image.Image:
    with open(out_dir / "faces.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    photo = Image.open(photo_path).convert("RGB")
    pen = ImageDraw.Draw(photo)
    for row in rows:
        pen.rectangle([float(row[k]) for k in ("x1", "y1", "x2", "y2")], outline=(255, 220, 0), width=2)
        for i in range(5):
            px, py = float(row[f"l{i}x"]), float(row[f"l{i}y"])
            pen.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(255, 40, 40))
    crops = [Image.open(out_dir / row["out"]).convert("RGB") for row in rows]
    canvas = Image.new("RGB", (640 + 24 + 112 * 2 + 12, 480), (255, 255, 255))
    canvas.paste(photo, (0, 0))
    for k, crop in enumerate(crops):
        canvas.paste(crop, (640 + 24 + (k % 2) * 124, 20 + (k // 2) * 124))
    return canvas


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        photo_path = Path(tmp) / "photo.jpg"
        Image.fromarray(compose()).save(photo_path, quality=92)
        out_dir = Path(tmp) / "aligned"
        command = [sys.executable, "-m", "fqtool", "align", photo_path, out_dir, "--faces", "all", "-q"]
        subprocess.run(command, check=True)
        picture = draw(photo_path, out_dir)
    picture.save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
