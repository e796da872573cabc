"""fqtool's five-point warp against insightface's ``face_align.norm_crop`` (development check, not CI).

    pip install opencv-python-headless scikit-image   # only for this script
    python benchmarks/align_warp_parity.py -n 200

insightface's ``norm_crop`` = scikit-image ``SimilarityTransform`` estimated from the five landmarks to
the (scaled) template, then ``cv2.warpAffine`` (bilinear, border 0). The reference is rebuilt here from
those two libraries; fqtool's own code uses neither. Images are random face photos: the test faces pasted
at random scales and positions on noise; half of the landmark sets are random (crops partly outside the
image), half near a face. Sizes cycle through 112, 128, 224, 256. Prints the matrix difference and the
mean / worst |grey-level difference| per pixel.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from fqtool.data.warp import estimate_norm, norm_crop, template, warp_affine_fast

FACES = sorted((Path(__file__).resolve().parents[1] / "tests" / "data" / "faces").glob("*.jpg"))


def reference(image: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2
    from skimage import transform

    tform = transform.SimilarityTransform()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-image ≥ 0.26 renames estimate()
        tform.estimate(landmarks, template(size))
    matrix = tform.params[0:2, :]
    return cv2.warpAffine(image, matrix, (size, size), borderValue=0.0), matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    matrix_diff, exact, fast, worst = [], [], [], 0
    for k in range(args.n):
        face = Image.open(FACES[k % len(FACES)]).convert("RGB")
        canvas = rng.integers(0, 255, (400, 500, 3), dtype=np.uint8)
        scale = rng.uniform(0.5, 2.0)
        pasted = np.asarray(face.resize((int(112 * scale),) * 2, Image.BILINEAR))
        x, y = rng.integers(0, 100, 2)
        canvas[y:y + pasted.shape[0], x:x + pasted.shape[1]] = pasted
        if k % 2:
            landmarks = rng.uniform(50, 350, (5, 2))
        else:
            landmarks = template(112) * scale + [x, y] + rng.normal(0, 3, (5, 2))
        size = (112, 128, 224, 256)[k % 4]
        ref, matrix = reference(canvas, landmarks, size)
        matrix_diff.append(np.abs(matrix - estimate_norm(landmarks, size)).max())
        diff = np.abs(ref.astype(int) - norm_crop(canvas, landmarks, size).astype(int))
        exact.append(diff.mean())
        worst = max(worst, int(diff.max()))
        quick = warp_affine_fast(canvas, estimate_norm(landmarks, size), size)
        fast.append(np.abs(ref.astype(int) - quick.astype(int)).mean())
    print(f"{args.n} crops; matrix max |diff| {max(matrix_diff):.2e}")
    print(f"norm_crop (numpy): mean |grey diff| per pixel {np.mean(exact):.4f}, worst crop {max(exact):.4f}, "
          f"worst pixel {worst}")
    print(f"warp_affine_fast (Pillow, refinement only): mean {np.mean(fast):.4f}, worst crop {max(fast):.4f}")


if __name__ == "__main__":
    main()
