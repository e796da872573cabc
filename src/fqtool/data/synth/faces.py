"""Drawing synthetic aligned faces with numpy: identity parameters, per-image nuisance, rendering.

Each identity is a set of structural parameters (face oval and jaw, skin tone, hair and hairline, eyes,
brows, nose, mouth, ears, optional beard / glasses, identity-specific marks and a stripe texture).
Every image of an identity is rendered from those parameters plus per-image nuisance: a small pose
change (shift, rotation, scale), expression (mouth and eye opening, gaze), lighting (gain, colour cast,
gradient illumination), a random background and sensor noise. Skin, hair and eye colours come from
small shared palettes, so identities overlap in low-level statistics and a network has to learn the
structure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

SIZE = 112

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
