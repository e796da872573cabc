"""Five-point similarity alignment, numerically equal to insightface's ``face_align.norm_crop``.

insightface estimates a similarity transform (rotation, uniform scale, translation) from the five
detected landmarks to a fixed template by least squares (Umeyama's method, as scikit-image's
``SimilarityTransform.estimate``) and resamples with ``cv2.warpAffine`` (bilinear, black border).
Here both steps are numpy: no OpenCV, no scikit-image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fqtool.errors import FqtoolError

__all__ = [
    "MAX_SIZE", "TEMPLATE_112", "estimate_norm", "loose_box", "loose_crop", "norm_crop", "template",
    "umeyama",
    "warp_affine", "warp_affine_fast",
]

#: insightface's ``arcface_dst`` (112×112): eyes, nose tip, mouth corners (x, y), image-left first.
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


#: Largest crop side fqtool makes (a bigger one only allocates; face models take 96–224 pixels).
MAX_SIZE = 1024


def template(size: int = 112) -> np.ndarray:
    """The template for a ``size``×``size`` crop. Multiples of 128 follow insightface's ``estimate_norm``
    (scaled by size/128, x shifted by 8·ratio); every other size scales the 112 template by size/112, so
    that a 160×160 crop holds the same face as a 112×112 one, only larger (e.g. FaceNet-style models)."""
    if not isinstance(size, int | np.integer) or not 16 <= size <= MAX_SIZE:
        raise FqtoolError(f"--size {size}: use a crop side between 16 and {MAX_SIZE} pixels")
    if size % 128 == 0 and size % 112 != 0:
        ratio = size / 128.0
        shift_x = 8.0 * ratio
    else:
        ratio, shift_x = size / 112.0, 0.0
    dst = TEMPLATE_112 * np.float32(ratio)  # float32 like insightface, so the numbers match bit for bit
    dst[:, 0] += np.float32(shift_x)
    return dst


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3×3 similarity matrix mapping ``src`` (N×2) onto ``dst`` in the least-squares sense (Umeyama 1991,
    with scale; a reflection is never chosen)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n, dim = src.shape
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    signs = np.ones(dim)
    if np.linalg.det(cov) < 0:
        signs[-1] = -1.0
    u, s, vt = np.linalg.svd(cov)
    matrix = np.eye(dim + 1)
    rank = np.linalg.matrix_rank(cov)
    if rank == 0:
        return np.full((dim + 1, dim + 1), np.nan)
    if rank == dim - 1:  # collinear points: any proper rotation fits; keep scikit-image's choice
        flip = np.linalg.det(u) * np.linalg.det(vt) <= 0
        rotation = u @ np.diag(np.r_[np.ones(dim - 1), -1.0 if flip else 1.0]) @ vt
    else:
        rotation = u @ np.diag(signs) @ vt
    scale = (s @ signs) / src_c.var(axis=0).sum()
    matrix[:dim, :dim] = scale * rotation
    matrix[:dim, dim] = dst_mean - scale * rotation @ src_mean
    return matrix


def estimate_norm(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The 2×3 affine matrix (image → crop) for five landmarks (5×2, x y)."""
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    return umeyama(landmarks, template(size))[:2]


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``cv2.warpAffine(image, matrix, (size, size))``: bilinear, pixel centres on integers, black border.

    ``image`` is H×W×C uint8; each output pixel samples the source at the inverse-mapped point; source
    pixels outside the image count as 0, so edges fade to black exactly as OpenCV's constant border does.
    """
    forward = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)[:2]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    x0, src_x, window_x = _window(src_x, image.shape[1])
    y0, src_y, window_y = _window(src_y, image.shape[0])
    padded = np.zeros((len(window_y), len(window_x)) + image.shape[2:], dtype=np.float32)
    inside_y = (window_y >= 0) & (window_y < image.shape[0])
    inside_x = (window_x >= 0) & (window_x < image.shape[1])
    padded[np.ix_(inside_y, inside_x)] = image[window_y[inside_y][:, None], window_x[inside_x][None, :]]
    fx = (src_x - x0)[..., None] if image.ndim == 3 else src_x - x0
    fy = (src_y - y0)[..., None] if image.ndim == 3 else src_y - y0
    x0 -= window_x[0]
    y0 -= window_y[0]
    top = padded[y0, x0] * (1 - fx) + padded[y0, x0 + 1] * fx
    bottom = padded[y0 + 1, x0] * (1 - fx) + padded[y0 + 1, x0 + 1] * fx
    out = top * (1 - fy) + bottom * fy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def warp_affine_fast(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The same warp by Pillow's affine transform (C, ~20× faster, within ~0.1 grey level of OpenCV on
    average; Pillow treats the image edge slightly differently). Used where only the geometry matters:
    the detector's second look at a face. Pillow's pixel centres sit at +0.5, hence the shifted offset."""
    inverse = np.linalg.inv(np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]]))[:2]
    a, b, t = inverse[:, 0], inverse[:, 1], inverse[:, 2]
    c = t - 0.5 * a - 0.5 * b + 0.5
    data = (a[0], b[0], c[0], a[1], b[1], c[1])
    pil = Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(pil.transform((size, size), Image.Transform.AFFINE, data=data, resample=Image.BILINEAR))


def _window(coords: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source pixels a set of sample coordinates needs along one axis, one zero pixel beyond each image
    edge at most: (left neighbour per sample, coordinates clipped into the window, window pixel indices).

    Only this window is copied (a crop needs a few thousand pixels of a multi-megapixel photo)."""
    low = max(int(np.floor(coords.min())), -1)
    high = min(int(np.floor(coords.max())) + 1, length)
    high = max(high, low + 1)
    clipped = np.clip(coords, low, high)
    left = np.minimum(np.floor(clipped).astype(np.int64), high - 1)
    return left, clipped, np.arange(low, high + 1)


def norm_crop(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The aligned ``size``×``size`` crop of ``image`` (H×W×3 uint8) for five landmarks."""
    return warp_affine(image, estimate_norm(landmarks, size), size)


def loose_box(box: np.ndarray, margin: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The detector box grown by ``margin`` pixels (half on each side), clipped to the image and cut to
    whole pixels as FaceNet's ``align_dataset_mtcnn`` does: ``(x1, y1, x2, y2)``."""
    height, width = shape[:2]
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64).ravel()[:4])
    half = margin / 2.0
    left, top = int(max(x1 - half, 0.0)), int(max(y1 - half, 0.0))
    right, bottom = int(min(x2 + half, width)), int(min(y2 + half, height))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def loose_crop(image: np.ndarray, box: np.ndarray, margin: float, size: int) -> np.ndarray:
    """``size``×``size`` crop of the box plus ``margin`` (MTCNN/FaceNet style: not rotated, resized
    bilinearly, the aspect ratio not kept), for models trained on such crops instead of aligned ones."""
    left, top, right, bottom = loose_box(box, margin, image.shape)
    crop = np.ascontiguousarray(image[top:bottom, left:right])
    if crop.shape[:2] == (size, size):
        return crop
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
