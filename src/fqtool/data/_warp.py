"""A minimal 5-point similarity warp onto the ArcFace 112×112 template (numpy only).

The landmarks are mapped onto the template with the least-squares similarity transform (Umeyama 1991);
the output is sampled bilinearly with pixel centres at integer coordinates and black outside the image,
which is what ``cv2.warpAffine(..., borderValue=0)`` does in the insightface IJB scripts.
"""

from __future__ import annotations

import numpy as np

#: insightface's 112×112 five-point template (eyes, nose tip, mouth corners), x then y.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3×3 matrix of the similarity (rotation, uniform scale, shift) that best maps ``src`` onto ``dst``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    sign = np.ones(2)
    if np.linalg.det(cov) < 0:
        sign[-1] = -1.0
    u, s, vt = np.linalg.svd(cov)
    rotation = u @ np.diag(sign) @ vt
    variance = src_c.var(axis=0).sum()
    scale = float(s @ sign) / variance if variance > 0 else 1.0
    matrix = np.eye(3)
    matrix[:2, :2] = scale * rotation
    matrix[:2, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample ``image`` (H×W×C) at float coordinates; outside the image counts as black."""
    h, w = image.shape[:2]
    padded = np.zeros((h + 2, w + 2, image.shape[2]), dtype=np.float64)
    padded[1:-1, 1:-1] = image
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    xi = np.clip(x0.astype(np.int64) + 1, 0, w + 1)
    yi = np.clip(y0.astype(np.int64) + 1, 0, h + 1)
    xj, yj = np.clip(xi + 1, 0, w + 1), np.clip(yi + 1, 0, h + 1)
    top = padded[yi, xi] * (1 - fx) + padded[yi, xj] * fx
    bottom = padded[yj, xi] * (1 - fx) + padded[yj, xj] * fx
    return top * (1 - fy) + bottom * fy


def warp_face(image_uint8_hwc: np.ndarray, landmarks_5x2: np.ndarray, size: int = 112) -> np.ndarray:
    """Align a face with its five landmarks (x, y in image pixels) onto the ArcFace template (uint8 S×S×3)."""
    image = np.asarray(image_uint8_hwc)
    template = ARCFACE_TEMPLATE_112 * (size / 112.0)
    inverse = np.linalg.inv(
        similarity_transform(np.asarray(landmarks_5x2, np.float64).reshape(5, 2), template)
    )
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    out = _bilinear(image.reshape(image.shape[0], image.shape[1], -1), src_x, src_y)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
