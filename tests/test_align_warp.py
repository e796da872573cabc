"""The five-point warp against straightforward re-implementations written here (no OpenCV, no skimage)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from _photos import Placement, correlation, load_face, make_photo
from fqtool.data.warp import (
    TEMPLATE_112,
    estimate_norm,
    norm_crop,
    template,
    umeyama,
    warp_affine,
    warp_affine_fast,
)
from fqtool.errors import FqtoolError


def _similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Similarity (no reflection) by plain linear least squares on (a, b, tx, ty):
    x' = a·x − b·y + tx, y' = b·x + a·y + ty. Same optimum as Umeyama's closed form."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def _warp_loop(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Bilinear inverse mapping, one pixel at a time, outside pixels black."""
    inv = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))
    h, w = image.shape[:2]
    out = np.zeros((size, size, image.shape[2]))

    def px(yy: int, xx: int) -> np.ndarray:
        return image[yy, xx].astype(np.float64) if 0 <= yy < h and 0 <= xx < w else np.zeros(image.shape[2])

    for y in range(size):
        for x in range(size):
            sx, sy, _ = inv @ [x, y, 1]
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            fx, fy = sx - x0, sy - y0
            out[y, x] = ((1 - fy) * ((1 - fx) * px(y0, x0) + fx * px(y0, x0 + 1))
                         + fy * ((1 - fx) * px(y0 + 1, x0) + fx * px(y0 + 1, x0 + 1)))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_umeyama_equals_least_squares_on_random_landmarks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 5)
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = rng.uniform(0, 500, (5, 2))
    noisy_dst = src @ rot.T + rng.uniform(-100, 100, 2) + rng.normal(0, 3, (5, 2))
    np.testing.assert_allclose(umeyama(src, noisy_dst)[:2], _similarity_lstsq(src, noisy_dst), atol=1e-8)
    np.testing.assert_allclose(umeyama(src, noisy_dst)[2], [0, 0, 1])


def test_estimate_norm_maps_landmarks_onto_the_template() -> None:
    rng = np.random.default_rng(1)
    points = TEMPLATE_112 * 2.3 + [200, 150] + rng.normal(0, 0.01, (5, 2))
    matrix = estimate_norm(points, 112)
    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, TEMPLATE_112, atol=0.05)


def test_template_sizes_follow_insightface() -> None:
    np.testing.assert_allclose(template(224), TEMPLATE_112 * 2, rtol=1e-6)
    expected_128 = TEMPLATE_112.astype(np.float64).copy()
    expected_128[:, 0] += 8.0
    np.testing.assert_allclose(template(128), expected_128, rtol=1e-6)
    expected_256 = TEMPLATE_112 * 2.0
    expected_256[:, 0] += 16.0
    np.testing.assert_allclose(template(256), expected_256, rtol=1e-6)
    np.testing.assert_allclose(template(160), TEMPLATE_112 * (160 / 112), rtol=1e-6)  # other sizes: scaled
    for bad in (0, 8, 5000):
        with pytest.raises(FqtoolError, match=f"--size {bad}: use a crop side between 16 and"):
            template(bad)


@pytest.mark.parametrize(("seed", "low", "high"), [(0, -20, 140), (1, -20, 140), (2, 10, 60), (3, 400, 900),
                                                   (4, -900, -300)])
def test_warp_equals_pixel_loop(seed: int, low: float, high: float) -> None:
    """Crops partly outside the image (black border), inside it (upscaled), and far off it (all black)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    landmarks = rng.uniform(low, high, (5, 2))
    matrix = estimate_norm(landmarks, 112)
    ours = warp_affine(image, matrix, 112).astype(int)
    loop = _warp_loop(image, matrix, 112).astype(int)
    assert np.abs(ours - loop).max() <= 1  # rounding of exact halves only
    assert np.abs(ours - loop).mean() < 0.01


def test_fast_warp_is_the_same_geometry() -> None:
    rng = np.random.default_rng(7)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(small).resize((320, 240), Image.BICUBIC))
    matrix = estimate_norm(rng.uniform(40, 200, (5, 2)), 112)
    fast, exact = warp_affine_fast(image, matrix, 112), warp_affine(image, matrix, 112)
    assert np.abs(fast.astype(int) - exact.astype(int)).mean() < 0.5


def test_norm_crop_of_a_pasted_face_gives_it_back() -> None:
    face = load_face(0)
    canvas = np.zeros((300, 400, 3), np.uint8)
    canvas[50:162, 70:182] = face
    crop = norm_crop(canvas, TEMPLATE_112 + [70, 50], 112)
    np.testing.assert_array_equal(crop, face)


@pytest.mark.parametrize(("scale", "angle"), [(0.5, 30.0), (1.0, -30.0), (2.0, 12.0)])
def test_norm_crop_with_true_landmarks_undoes_scale_and_rotation(scale: float, angle: float) -> None:
    photo, truths = make_photo([Placement(1, 150, 100, scale, angle)], size=(480, 640))
    crop = norm_crop(photo, truths[0], 112)
    assert correlation(crop[8:-8, 8:-8], load_face(1)[8:-8, 8:-8]) > 0.97
