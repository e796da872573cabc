"""Graded degradations of synthetic faces: blur, noise, down-scaling, occlusion, low contrast.

A level in ``(0, 1]`` (0 = clean) is calibrated so that about 1 destroys the identity for every kind:
``1 - level`` is a ground-truth quality.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from fqtool.data.synth.faces import SIZE, to_uint8
from fqtool.errors import FqtoolError

DEGRADATION_KINDS: tuple[str, ...] = ("blur", "noise", "downscale", "occlusion", "contrast")
CLEAN = "none"

def _upsample_matrix(small: int, n: int = SIZE) -> np.ndarray:
    """Linear interpolation from ``small`` to ``n`` samples (pixel centres aligned), as an n×small matrix."""
    pos = np.clip((np.arange(n) + 0.5) * small / n - 0.5, 0, small - 1)
    left = np.floor(pos).astype(int)
    right = np.minimum(left + 1, small - 1)
    frac = pos - left
    up = np.zeros((n, small), dtype=np.float32)
    up[np.arange(n), left] += 1 - frac
    up[np.arange(n), right] += frac
    return up


_UP14 = _upsample_matrix(14)


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(to_uint8(img), "RGB")


def _from_pil(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1).copy()


def _blur(img: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, sigma 0.4 px (level → 0) to 26 px (level 1)."""
    return _from_pil(_pil(img).filter(ImageFilter.GaussianBlur(0.4 + 26.0 * level**1.7)))


def _downscale(img: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Box down-sampling to 104 px (level → 0) … 2 px (level 1), then bilinear back up to 112."""
    small = int(np.clip(round(2 + (SIZE - 2) * (1.0 - level) ** 3.5), 2, SIZE - 8))
    down = _pil(img).resize((small, small), Image.Resampling.BOX)
    return _from_pil(down.resize((SIZE, SIZE), Image.Resampling.BILINEAR))


def _noise(img: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Low-light noise: the signal dims (to 5 %) under pixel noise and blotchy 14×14 chroma noise."""
    coarse = _UP14 @ rng.standard_normal((3, 14, 14), dtype=np.float32) @ _UP14.T
    fine = rng.standard_normal(img.shape, dtype=np.float32)
    keep = 1.0 - 0.95 * level**2
    out = img * keep + float(img.mean()) * (1.0 - keep)
    return out + fine * (130.0 * level**2) + coarse * (170.0 * level**2)


def _contrast(img: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Squash towards a random grey (down to 1 % contrast) with a little extra noise."""
    grey = rng.uniform(60, 190)
    factor = 0.01 + 0.99 * (1.0 - level) ** 2
    out = grey + (img - img.mean()) * factor
    return out + rng.standard_normal(img.shape, dtype=np.float32) * (6.0 * level)


def degrade(img: np.ndarray, kind: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """Degrade a channels-first float RGB image at ``level`` in (0, 1]; returns a new float32 image."""
    try:
        apply = _DEGRADATIONS[kind]
    except KeyError:
        raise FqtoolError(f"unknown degradation {kind!r}; known: {', '.join(DEGRADATION_KINDS)}") from None
    return apply(np.asarray(img, dtype=np.float32), float(np.clip(level, 0.0, 1.0)), rng)


#: Canvas box (x0, y0, x1, y1) that holds the face in every pose.
_FACE_BOX = (18, 12, 94, 106)


def _occlude(img: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Cover 3 % (level → 0) … 100 % (level 1) of the face box with a flat, noisy rectangle."""
    x0, y0, x1, y1 = _FACE_BOX
    frac = 0.03 + 0.97 * level**2
    aspect = rng.uniform(0.6, 1.6)
    w = int(np.clip(round((x1 - x0) * math.sqrt(frac * aspect)), 4, x1 - x0))
    h = int(np.clip(round((y1 - y0) * frac / max(w / (x1 - x0), 1e-6)), 4, y1 - y0))
    left = x0 + int(rng.integers(0, x1 - x0 - w + 1))
    top = y0 + int(rng.integers(0, y1 - y0 - h + 1))
    out = img.copy()
    patch = out[:, top : top + h, left : left + w]
    colour = rng.uniform(0, 255, 3).astype(np.float32).reshape(3, 1, 1)
    patch[...] = colour + rng.standard_normal(patch.shape, dtype=np.float32) * 18.0
    return out


_DEGRADATIONS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "blur": _blur,
    "noise": _noise,
    "downscale": _downscale,
    "occlusion": _occlude,
    "contrast": _contrast,
}


def sample_degradation(rng: np.random.Generator, fraction: float) -> tuple[str, float]:
    """``(kind, level)``: clean (``"none"``, 0) with probability ``1 - fraction``, else a random kind and a
    level uniform in (0, 1]."""
    if rng.random() >= fraction:
        return CLEAN, 0.0
    kind = DEGRADATION_KINDS[int(rng.integers(len(DEGRADATION_KINDS)))]
    return kind, float(1.0 - rng.random())
