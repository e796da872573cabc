"""Test photos: the real aligned faces of tests/data/faces pasted into larger canvases at known positions,
scales and rotations, with the true five landmarks of each face (the 112×112 template, moved along)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fqtool.data.warp import TEMPLATE_112, warp_affine

FACES = Path(__file__).parent / "data" / "faces"


def face_paths() -> list[Path]:
    return sorted(FACES.glob("*.jpg"))


def load_face(index: int) -> np.ndarray:
    return np.asarray(Image.open(face_paths()[index]).convert("RGB"))


@dataclass
class Placement:
    face: int  # index into face_paths()
    x: float  # top-left of the pasted face before rotation
    y: float
    scale: float = 1.0
    angle: float = 0.0  # degrees, counter-clockwise on screen, around the face centre


def _background(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth, low-contrast clutter (a blurred noise field), not a flat colour."""
    rng = np.random.default_rng(seed)
    small = rng.integers(60, 200, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


def _similarity(p: Placement) -> np.ndarray:
    """2×3 matrix: face pixel (112×112 frame) → canvas pixel."""
    theta = np.deg2rad(-p.angle)  # image y points down: screen-counter-clockwise is a negative angle here
    c, s = np.cos(theta) * p.scale, np.sin(theta) * p.scale
    centre = np.array([56.0, 56.0])
    target = np.array([p.x, p.y]) + centre * p.scale
    rot = np.array([[c, -s], [s, c]])
    return np.hstack([rot, (target - rot @ centre)[:, None]])


def make_photo(placements: list[Placement], size: tuple[int, int] = (480, 640), seed: int = 0):
    """(H×W×3 uint8 photo, list of true 5×2 landmarks per placement)."""
    height, width = size
    photo = _background(height, width, seed).astype(np.float64)
    truths = []
    for p in placements:
        face = load_face(p.face)
        matrix = _similarity(p)
        pasted = _warp_into(face, matrix, height, width)
        mask = _warp_into(np.full((112, 112, 3), 255, np.uint8), matrix, height, width) / 255.0
        photo = photo * (1 - mask) + pasted * mask
        truths.append(TEMPLATE_112.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2])
    return np.clip(np.rint(photo), 0, 255).astype(np.uint8), truths


def _warp_into(image: np.ndarray, matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """warp_affine for a non-square output: pad to a square and cut."""
    side = max(height, width)
    return warp_affine(image, matrix, side)[:height, :width].astype(np.float64)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images' grey levels."""
    ga = np.asarray(a, np.float64).mean(axis=2).ravel()
    gb = np.asarray(b, np.float64).mean(axis=2).ravel()
    return float(np.corrcoef(ga, gb)[0, 1])
