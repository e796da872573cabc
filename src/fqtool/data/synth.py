"""Synthetic aligned "faces" with controlled degradations, for tests, the demo and smoke runs.

Each identity is a set of structural parameters (face oval and jaw, skin tone, hair and hairline, eyes,
brows, nose, mouth, ears, optional beard / glasses, identity-specific marks and a stripe texture).
Every image of an identity is rendered with numpy from those parameters plus per-image nuisance: a
small pose change (shift, rotation, scale), expression (mouth and eye opening, gaze), lighting (gain,
colour cast, gradient illumination), a random background and sensor noise. Skin, hair and eye colours
come from small shared palettes, so identities overlap in low-level statistics and a network has to
learn the structure.

A fraction of the images is degraded with a ground-truth level in ``(0, 1]`` (blur, noise,
down-scaling, occlusion or low contrast; level 0 = clean). The level maps are calibrated so that a
level of about 1 destroys the identity for every kind: ``1 - level`` is a ground-truth quality.

:func:`write_synthetic_dataset` writes a training set in insightface's RecordIO layout, a ``.bin``
verification set of held-out identities, the per-image levels as CSV and a manifest.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from fqtool.data.binfile import save_bin
from fqtool.data.recordio import RecordIOWriter, pack_record
from fqtool.errors import FqtoolError
from fqtool.fsutil import atomic_write_text, ensure_dir

SIZE = 112
DEGRADATION_KINDS: tuple[str, ...] = ("blur", "noise", "downscale", "occlusion", "contrast")
CLEAN = "none"

# Shared palettes (RGB): identities draw from them with a little noise, so colours overlap.
_SKIN = np.array(
    [[236, 204, 178], [224, 180, 148], [198, 148, 112], [168, 118, 84], [124, 86, 60], [244, 220, 196]],
    dtype=np.float32,
)
_HAIR = np.array(
    [[28, 24, 22], [64, 44, 30], [110, 76, 46], [196, 160, 104], [150, 70, 40], [150, 150, 150]],
    dtype=np.float32,
)
_IRIS = np.array(
    [[70, 46, 28], [60, 100, 150], [70, 110, 70], [110, 110, 120], [150, 110, 50], [30, 24, 24]],
    dtype=np.float32,
)
_LIPS = np.array([[180, 90, 90], [150, 70, 70], [200, 120, 110], [120, 60, 60]], dtype=np.float32)
_MARKS = np.array([[90, 50, 40], [160, 60, 60], [60, 40, 80], [40, 80, 60], [20, 20, 20]], dtype=np.float32)

#: (side, y) of the canvas point that the canonical face centre maps to.
_CENTRE = (SIZE / 2.0, SIZE / 2.0 + 2.0)


@dataclass(frozen=True)
class IdentityParams:
    """Structural parameters of one synthetic identity, in canonical pixels (face centre at 0, 0)."""

    face_ax: float
    face_ay: float
    jaw: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_volume: float
    hairline: float
    hair_wave: float
    bald: bool
    eye_y: float
    eye_dx: float
    eye_rx: float
    eye_ry: float
    eye_tilt: float
    iris: tuple[float, float, float]
    brow_dy: float
    brow_len: float
    brow_thick: float
    brow_tilt: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip: float
    lips: tuple[float, float, float]
    smile: float
    ear: float
    beard: float
    glasses: bool
    marks: tuple[tuple[float, ...], ...] = field(default_factory=tuple)
    stripes: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def _pick(rng: np.random.Generator, palette: np.ndarray, spread: float) -> tuple[float, float, float]:
    colour = palette[rng.integers(len(palette))] + rng.normal(0.0, spread, 3)
    return tuple(float(c) for c in np.clip(colour, 0, 255))


def sample_identity(rng: np.random.Generator) -> IdentityParams:
    """Draw a random identity (structure, colours, marks) from ``rng``."""
    face_ay = rng.uniform(36, 45)
    eye_y = rng.uniform(-13, -4)
    eye_rx = rng.uniform(5.0, 8.0)
    nose_len = rng.uniform(12, 21)
    marks = tuple(
        (rng.uniform(-0.65, 0.65), rng.uniform(-0.3, 0.75), rng.uniform(1.5, 4.5), rng.uniform(0.5, 0.95),
         *_pick(rng, _MARKS, 15))
        for _ in range(int(rng.integers(1, 4)))
    )
    stripes = (rng.uniform(0, math.pi), rng.uniform(0.25, 0.6), rng.uniform(0.12, 0.25), rng.uniform(0, 6.3),
               rng.uniform(-0.4, 0.4), rng.uniform(0.3, 0.7)) if rng.random() < 0.6 else ()
    return IdentityParams(
        face_ax=rng.uniform(28, 37),
        face_ay=face_ay,
        jaw=rng.uniform(0.72, 1.02),
        skin=_pick(rng, _SKIN, 8),
        hair=_pick(rng, _HAIR, 10),
        hair_volume=rng.uniform(1.03, 1.22),
        hairline=rng.uniform(-0.78, -0.42) * face_ay,
        hair_wave=rng.uniform(0.0, 5.0),
        bald=bool(rng.random() < 0.15),
        eye_y=eye_y,
        eye_dx=rng.uniform(11.5, 18.0),
        eye_rx=eye_rx,
        eye_ry=eye_rx * rng.uniform(0.42, 0.7),
        eye_tilt=rng.uniform(-0.25, 0.25),
        iris=_pick(rng, _IRIS, 12),
        brow_dy=rng.uniform(5.5, 10.5),
        brow_len=eye_rx * rng.uniform(1.05, 1.6),
        brow_thick=rng.uniform(1.4, 3.8),
        brow_tilt=rng.uniform(-0.35, 0.3),
        nose_len=nose_len,
        nose_w=rng.uniform(3.5, 8.5),
        mouth_y=eye_y + nose_len + rng.uniform(6, 10),
        mouth_w=rng.uniform(8.5, 16.0),
        lip=rng.uniform(1.8, 4.5),
        lips=_pick(rng, _LIPS, 12),
        smile=rng.uniform(-0.04, 0.06),
        ear=rng.uniform(4.5, 9.0),
        beard=float(rng.uniform(0.45, 0.85)) if rng.random() < 0.3 else 0.0,
        glasses=bool(rng.random() < 0.2),
        marks=marks,
        stripes=stripes,
    )


# ----------------------------------------------------------------------------------------- rendering


def _soft(signed: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from an (approximate) signed distance in pixels (negative inside)."""
    return np.clip(0.5 - signed, 0.0, 1.0)


def _ellipse(u: np.ndarray, v: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    r = np.sqrt(((u - cx) / ax) ** 2 + ((v - cy) / ay) ** 2)
    return _soft((r - 1.0) * min(ax, ay))


def _rotate(u: np.ndarray, v: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(angle), math.sin(angle)
    return c * u + s * v, -s * u + c * v


def _paint(img: np.ndarray, alpha: np.ndarray, colour: Sequence[float] | np.ndarray) -> None:
    """Alpha-blend a flat colour into a channels-first float image, in place."""
    delta = np.asarray(colour, dtype=np.float32).reshape(3, 1, 1) - img
    delta *= alpha
    img += delta


@dataclass(frozen=True)
class _Nuisance:
    shift: tuple[float, float]
    angle: float
    scale: float
    mouth_open: float
    eye_open: float
    gaze: tuple[float, float]
    brightness: float
    gain: tuple[float, float, float]
    gradient: tuple[float, float]
    noise: float


def _sample_nuisance(rng: np.random.Generator, jitter: float) -> _Nuisance:
    return _Nuisance(
        shift=tuple(float(x) for x in np.clip(rng.normal(0, 2.5 * jitter, 2), -6, 6)),
        angle=float(np.clip(rng.normal(0, 0.1 * jitter), -0.22, 0.22)),
        scale=float(np.clip(rng.normal(1.0, 0.04 * jitter), 0.9, 1.1)),
        mouth_open=float(rng.uniform(0, 3.0) * jitter),
        eye_open=float(1.0 - rng.uniform(0, 0.35) * jitter),
        gaze=tuple(float(x) for x in rng.uniform(-1.5, 1.5, 2) * jitter),
        brightness=float(1.0 + rng.uniform(-0.3, 0.2) * jitter),
        gain=tuple(float(x) for x in 1.0 + rng.normal(0, 0.09 * jitter, 3)),
        gradient=(float(rng.uniform(0, 0.4) * jitter), float(rng.uniform(0, 2 * math.pi))),
        noise=float(rng.uniform(1.0, 3.0)),
    )


_GRID_Y, _GRID_X = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5


def _background(rng: np.random.Generator) -> np.ndarray:
    """Two random colours blended along a random direction, plus a few soft blobs."""
    c0, c1 = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    theta = rng.uniform(0, 2 * math.pi)
    t = ((_GRID_X - SIZE / 2) * math.cos(theta) + (_GRID_Y - SIZE / 2) * math.sin(theta)) / SIZE + 0.5
    t = np.clip(t, 0, 1)
    img = (c0.reshape(3, 1, 1) * (1 - t) + c1.reshape(3, 1, 1) * t).astype(np.float32)
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(0, SIZE, 2)
        r = rng.uniform(8, 30)
        blob = np.exp(-((_GRID_X - cx) ** 2 + (_GRID_Y - cy) ** 2) / (2 * r * r))
        _paint(img, blob * rng.uniform(0.3, 0.8), rng.uniform(20, 235, 3))
    return img


def _canonical(nz: _Nuisance) -> tuple[np.ndarray, np.ndarray]:
    """Canonical face coordinates of every canvas pixel (inverse of the per-image similarity)."""
    x = (_GRID_X - _CENTRE[0] - nz.shift[0]) / nz.scale
    y = (_GRID_Y - _CENTRE[1] - nz.shift[1]) / nz.scale
    return _rotate(x, y, nz.angle)


def _draw_head(img: np.ndarray, p: IdentityParams, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Hair, ears, face oval with shading; returns the face mask."""
    if not p.bald:
        _paint(img, _ellipse(u, v, 0, -p.face_ay * 0.18, p.face_ax * p.hair_volume, p.face_ay * 0.95), p.hair)
    ears = _ellipse(np.abs(u), v, p.face_ax * 0.97, p.eye_y + 4, p.ear * 0.6, p.ear)
    _paint(img, ears, np.array(p.skin) * 0.85)
    ax = np.where(v > 0, p.face_ax * (1.0 - (1.0 - p.jaw) * np.clip(v / p.face_ay, 0, 1)), p.face_ax)
    r = np.sqrt((u / ax) ** 2 + (v / p.face_ay) ** 2)
    face = _soft((r - 1.0) * p.face_ax)
    shade = 1.0 - 0.28 * np.clip(r, 0, 1) ** 3
    delta = np.asarray(p.skin, dtype=np.float32).reshape(3, 1, 1) * shade - img
    delta *= face
    img += delta
    if not p.bald:
        line = p.hairline + p.hair_wave * np.sin(u * 0.22 + p.face_ax)
        fringe = _soft(v - line) * face
        _paint(img, fringe, p.hair)
    return face


def _draw_texture(img: np.ndarray, p: IdentityParams, u: np.ndarray, v: np.ndarray, face: np.ndarray) -> None:
    """Identity marks (soft blobs) and an optional stripe pattern on one side of the face."""
    for mx, my, sigma, strength, *colour in p.marks:
        cx, cy = mx * p.face_ax, my * p.face_ay
        blob = np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * sigma * sigma)) * strength * face
        _paint(img, blob, colour)
    if p.stripes:
        theta, freq, amp, phase, cx, radius = p.stripes
        wave = np.sin((u * math.cos(theta) + v * math.sin(theta)) * freq + phase)
        region = np.exp(-((u - cx * p.face_ax) ** 2 + (v - 0.35 * p.face_ay) ** 2)
                        / (2 * (radius * p.face_ax) ** 2)) * face
        img *= 1.0 + amp * wave * region


def _draw_eyes(img: np.ndarray, p: IdentityParams, u: np.ndarray, v: np.ndarray, nz: _Nuisance) -> None:
    side = np.sign(u)
    eu, ev = _rotate(np.abs(u) - p.eye_dx, v - p.eye_y, p.eye_tilt)
    ry = p.eye_ry * nz.eye_open
    _paint(img, _ellipse(eu, ev, 0, 0, p.eye_rx, ry), (238, 236, 230))
    iris = _ellipse(eu, ev, nz.gaze[0] * side, nz.gaze[1] * 0.5, p.eye_ry * 0.95, p.eye_ry * 0.95)
    inside = _ellipse(eu, ev, 0, 0, p.eye_rx, ry)
    _paint(img, iris * inside, p.iris)
    pupil = _ellipse(eu, ev, nz.gaze[0] * side, nz.gaze[1] * 0.5, p.eye_ry * 0.4, p.eye_ry * 0.4)
    _paint(img, pupil * inside, (12, 10, 10))
    bu, bv = _rotate(np.abs(u) - p.eye_dx, v - p.eye_y + p.brow_dy, p.brow_tilt)
    _paint(img, _ellipse(bu, bv, 0, 0, p.brow_len, p.brow_thick), np.array(p.hair) * 0.8)
    if p.glasses:
        ring = np.sqrt((np.abs(u) - p.eye_dx) ** 2 + (v - p.eye_y) ** 2)
        _paint(img, _soft(np.abs(ring - p.eye_rx * 1.45) - 0.9), (30, 30, 35))
        _paint(img, _soft(np.maximum(np.abs(v - p.eye_y) - 0.9, np.abs(u) - (p.eye_dx - p.eye_rx * 1.45))),
               (30, 30, 35))


def _draw_lower(img: np.ndarray, p: IdentityParams, u: np.ndarray, v: np.ndarray, nz: _Nuisance,
                face: np.ndarray) -> None:
    """Nose (shading and nostrils), beard and mouth."""
    t = np.clip((v - p.eye_y) / p.nose_len, 0, 1)
    nose = _soft(np.abs(u) - p.nose_w * (0.35 + 0.65 * t))
    nose *= _soft(v - p.eye_y - p.nose_len) * _soft(p.eye_y - v)
    _paint(img, nose * 0.45, np.array(p.skin) * 0.72)
    nostrils = _ellipse(np.abs(u), v, p.nose_w * 0.55, p.eye_y + p.nose_len - 1.0, 1.8, 1.2)
    _paint(img, nostrils, np.array(p.skin) * 0.35)
    if p.beard:
        beard = _soft(p.mouth_y - 3.0 - v) * face
        _paint(img, beard * p.beard, p.hair)
    mv = v - p.mouth_y - p.smile * u * u
    half = p.lip * 0.5 + nz.mouth_open * 0.5
    mouth = _soft(np.abs(mv) - half) * _soft(np.abs(u) - p.mouth_w)
    _paint(img, mouth, p.lips)
    if nz.mouth_open > 0.6:
        inner = _soft(np.abs(mv) - nz.mouth_open * 0.45) * _soft(np.abs(u) - p.mouth_w * 0.8)
        _paint(img, inner, (40, 20, 20))


def _light(img: np.ndarray, rng: np.random.Generator, nz: _Nuisance) -> np.ndarray:
    amp, theta = nz.gradient
    along = (_GRID_X - SIZE / 2) * math.cos(theta) + (_GRID_Y - SIZE / 2) * math.sin(theta)
    ramp = 1.0 + amp * along / SIZE
    img = img * (ramp * nz.brightness) * np.asarray(nz.gain, dtype=np.float32).reshape(3, 1, 1)
    img += rng.standard_normal(img.shape, dtype=np.float32) * nz.noise
    return img


def render_face(identity: IdentityParams, rng: np.random.Generator, *, jitter: float = 1.0) -> np.ndarray:
    """A clean face of ``identity`` as float32 RGB, channels first (3×112×112, 0..255, not clipped)."""
    nz = _sample_nuisance(rng, jitter)
    img = _background(rng)
    u, v = _canonical(nz)
    face = _draw_head(img, identity, u, v)
    _draw_texture(img, identity, u, v, face)
    _draw_eyes(img, identity, u, v, nz)
    _draw_lower(img, identity, u, v, nz, face)
    return _light(img, rng, nz)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Channels-first float image → HWC uint8."""
    return np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()


def generate_face(
    identity: IdentityParams,
    rng: np.random.Generator,
    *,
    level: float = 0.0,
    kind: str = CLEAN,
    jitter: float = 1.0,
) -> np.ndarray:
    """One aligned face of ``identity``: RGB uint8, 112×112×3, degraded by ``kind`` at ``level``."""
    img = render_face(identity, rng, jitter=jitter)
    if level > 0 and kind != CLEAN:
        img = degrade(img, kind, level, rng)
    return to_uint8(img)


# -------------------------------------------------------------------------------------- degradations


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


# ------------------------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class SynthSample:
    """One generated image with its class (identity index) and ground-truth degradation."""

    label: int
    image: np.ndarray
    kind: str
    level: float


_TRAIN, _VAL = 0, 1


def identity_params(seed: int, index: int) -> IdentityParams:
    """Identity ``index`` of the universe defined by ``seed`` (training and held-out ids share it)."""
    return sample_identity(np.random.default_rng([seed, 0, index]))


def make_sample(identity: IdentityParams, label: int, rng: np.random.Generator, fraction: float
                ) -> SynthSample:
    """Draw a degradation (clean with probability ``1 - fraction``) and render one image."""
    kind, level = sample_degradation(rng, fraction)
    return SynthSample(label, generate_face(identity, rng, level=level, kind=kind), kind, level)


def iter_train_samples(
    num_identities: int, images_per_identity: int, *, degraded_fraction: float = 0.5, seed: int = 0
) -> Iterator[SynthSample]:
    """Training images, class by class; each image has its own random stream (order-independent)."""
    for label in range(num_identities):
        identity = identity_params(seed, label)
        for n in range(images_per_identity):
            rng = np.random.default_rng([seed, 1, _TRAIN, label, n])
            yield make_sample(identity, label, rng, degraded_fraction)


def iter_val_pairs(
    num_pairs: int, *, first_identity: int, num_identities: int, degraded_fraction: float = 0.5, seed: int = 0
) -> Iterator[tuple[SynthSample, SynthSample, bool]]:
    """Verification pairs over identities ``first_identity .. first_identity + num_identities - 1``.

    Even pairs are same-identity, odd pairs different-identity; both images are fresh renders.
    """
    if num_identities < 2:
        raise FqtoolError("a verification set needs at least 2 held-out identities")
    cache: dict[int, IdentityParams] = {}
    for p in range(num_pairs):
        rng = np.random.default_rng([seed, 2, p])
        same = p % 2 == 0
        a = int(rng.integers(num_identities))
        b = a if same else (a + 1 + int(rng.integers(num_identities - 1))) % num_identities
        pair = []
        for k, idx in enumerate((a, b)):
            label = first_identity + idx
            identity = cache.setdefault(label, identity_params(seed, label))
            rng_k = np.random.default_rng([seed, 1, _VAL, p, k])
            pair.append(make_sample(identity, label, rng_k, degraded_fraction))
        yield pair[0], pair[1], same


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """RGB uint8 HWC → JPEG bytes (deterministic for a given Pillow build)."""
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_image(image: np.ndarray, image_format: str = "jpg") -> bytes:
    """RGB uint8 HWC → ``jpg`` (quality 95) or ``png`` bytes."""
    if image_format == "jpg":
        return encode_jpeg(image, JPEG_QUALITY)
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="PNG")
    return buf.getvalue()


# -------------------------------------------------------------------------------------------- writer


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and options of a synthetic data set (validated on construction)."""

    num_identities: int = 24
    images_per_identity: int = 24
    val_identities: int = 10
    val_pairs: int = 200
    degraded_fraction: float = 0.5
    seed: int = 0
    image_format: str = "jpg"
    write_folder: bool = False

    def __post_init__(self) -> None:
        if self.num_identities < 1 or self.images_per_identity < 1:
            raise FqtoolError("need at least 1 identity and 1 image per identity")
        if self.val_pairs < 0:
            raise FqtoolError("the number of verification pairs cannot be negative")
        if self.val_pairs and self.val_identities < 2:
            raise FqtoolError("a verification set needs at least 2 held-out identities")
        if not 0.0 <= self.degraded_fraction <= 1.0:
            raise FqtoolError(f"degraded fraction must be in [0, 1], not {self.degraded_fraction}")
        if self.image_format not in IMAGE_FORMATS:
            known = ", ".join(IMAGE_FORMATS)
            raise FqtoolError(f"image format must be one of {known}, not {self.image_format!r}")

    @property
    def num_train_images(self) -> int:
        return self.num_identities * self.images_per_identity

    @property
    def total_images(self) -> int:
        """Images to generate: training images plus two per verification pair."""
        return self.num_train_images + 2 * self.val_pairs


@dataclass
class SynthResult:
    """What :func:`write_synthetic_dataset` wrote."""

    out_dir: Path
    config: SynthConfig
    files: list[str]
    degraded_train: int
    degraded_val: int

    @property
    def num_train_images(self) -> int:
        return self.config.num_train_images

    @property
    def num_val_images(self) -> int:
        return 2 * self.config.val_pairs


JPEG_QUALITY = 95
IMAGE_FORMATS = ("jpg", "png")
Progress = Callable[[int], None] | None


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _write_train(out: Path, cfg: SynthConfig, on_progress: Progress) -> tuple[list[list[object]], dict]:
    """``train.rec`` / ``train.idx`` in insightface's layout (and the image folder); returns CSV rows."""
    n, classes = cfg.num_train_images, cfg.num_identities
    rows: list[list[object]] = []
    folder: dict[str, bytes] = {}
    with RecordIOWriter(out / "train.rec", out / "train.idx") as writer:
        writer.write(0, pack_record([float(n + 1), float(n + 1 + classes)], b"", id=0))
        samples = iter_train_samples(classes, cfg.images_per_identity,
                                     degraded_fraction=cfg.degraded_fraction, seed=cfg.seed)
        for key, sample in enumerate(samples, start=1):
            data = encode_image(sample.image, cfg.image_format)
            writer.write(key, pack_record(float(sample.label), data, id=key))
            rows.append([f"train:{key}", sample.label, f"{sample.level:.6f}", sample.kind])
            if cfg.write_folder:
                n_in_class = (key - 1) % cfg.images_per_identity
                folder[f"{sample.label:04d}/{n_in_class:04d}.{cfg.image_format}"] = data
            if on_progress:
                on_progress(1)
        for label in range(classes):
            start = 1 + label * cfg.images_per_identity
            key = n + 1 + label
            span = [float(start), float(start + cfg.images_per_identity)]
            writer.write(key, pack_record(span, b"", id=key))
    return rows, folder


def _write_val(out: Path, cfg: SynthConfig, on_progress: Progress) -> list[list[object]]:
    """``val.bin`` (insightface pickle) from held-out identities; returns the quality CSV rows."""
    images: list[bytes] = []
    issame: list[bool] = []
    rows: list[list[object]] = []
    pairs = iter_val_pairs(cfg.val_pairs, first_identity=cfg.num_identities,
                           num_identities=cfg.val_identities, degraded_fraction=cfg.degraded_fraction,
                           seed=cfg.seed)
    for first, second, same in pairs:
        for sample in (first, second):
            rows.append([len(images), f"{sample.level:.6f}", sample.kind, f"{1.0 - sample.level:.6f}"])
            images.append(encode_image(sample.image, cfg.image_format))
            if on_progress:
                on_progress(1)
        issame.append(same)
    save_bin(out / "val.bin", images, issame)
    return rows


def _write_folder(out: Path, files: dict[str, bytes]) -> None:
    """``images/<class>/<n>.<ext>``, built in a temporary folder and renamed into place."""
    final = out / "images"
    tmp = Path(tempfile.mkdtemp(prefix=".images.", suffix=".tmp", dir=out))
    try:
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=".images.", suffix=".old", dir=out))
            os.replace(final, old / "images")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _manifest(cfg: SynthConfig, files: list[str], degraded_train: int, degraded_val: int) -> dict:
    from fqtool import __version__

    return {
        "generator": "fqtool.data.synth",
        "fqtool_version": __version__,
        "seed": cfg.seed,
        "image_size": [SIZE, SIZE],
        "image_format": cfg.image_format,
        "jpeg_quality": JPEG_QUALITY if cfg.image_format == "jpg" else None,
        "train": {
            "num_identities": cfg.num_identities,
            "images_per_identity": cfg.images_per_identity,
            "num_images": cfg.num_train_images,
            "degraded_images": degraded_train,
            "layout": "insightface: record 0 header [first identity key, end], images 1..N, identities",
        },
        "val": {
            "identities": [cfg.num_identities, cfg.num_identities + cfg.val_identities]
            if cfg.val_pairs else [],
            "num_pairs": cfg.val_pairs,
            "num_images": 2 * cfg.val_pairs,
            "degraded_images": degraded_val,
        },
        "degraded_fraction": cfg.degraded_fraction,
        "degradation_kinds": list(DEGRADATION_KINDS),
        "files": files,
    }


def write_synthetic_dataset(
    out_dir: str | Path, config: SynthConfig | None = None, *, on_progress: Progress = None, **options
) -> SynthResult:
    """Write a synthetic face data set to ``out_dir`` (deterministic for a given ``seed``).

    Files: ``train.rec``/``train.idx``/``property`` (insightface layout), ``val.bin`` (held-out identities,
    half same-identity pairs), ``degradations.csv`` (``name,label,level,kind`` per training image),
    ``val_quality.csv`` (``index,level,kind,quality`` per ``val.bin`` image, quality = 1 - level),
    ``synth.json`` and, with ``write_folder``, ``images/<class>/<n>.<ext>``. ``on_progress(n)`` is called
    as images are generated (:attr:`SynthConfig.total_images` in all).

    Sizes and options come from ``config`` or, field by field, from ``options`` (the fields of
    :class:`SynthConfig`, e.g. ``num_identities=24, seed=3``), so the defaults live in one place.
    """
    cfg = config if config is not None else SynthConfig(**options)
    out = ensure_dir(out_dir)
    train_rows, folder = _write_train(out, cfg, on_progress)
    atomic_write_text(out / "property", f"{cfg.num_identities},{SIZE},{SIZE}")
    atomic_write_text(out / "degradations.csv", _csv_text(("name", "label", "level", "kind"), train_rows))
    files = ["train.rec", "train.idx", "property", "degradations.csv"]
    val_rows: list[list[object]] = []
    if cfg.val_pairs:
        val_rows = _write_val(out, cfg, on_progress)
        atomic_write_text(out / "val_quality.csv", _csv_text(("index", "level", "kind", "quality"), val_rows))
        files += ["val.bin", "val_quality.csv"]
    if cfg.write_folder:
        _write_folder(out, folder)
        files.append("images")
    degraded_train = sum(row[3] != CLEAN for row in train_rows)
    degraded_val = sum(row[2] != CLEAN for row in val_rows)
    files.append("synth.json")
    manifest = _manifest(cfg, files, degraded_train, degraded_val)
    atomic_write_text(out / "synth.json", json.dumps(manifest, indent=1) + "\n")
    return SynthResult(out, cfg, files, degraded_train, degraded_val)
