"""How much ``--refine`` improves the embedded detector's crops (the numbers in docs/align.md).

    python benchmarks/align_refine.py

Seven frontal test faces (tests/data/faces) are pasted one at a time into a 360×480 photo at scales
0.5/0.75/1/1.5/2 and angles −30/0/+30°; each photo is aligned with and without the second landmark pass,
and the crop is compared with the original 112×112 face (Pearson correlation of the grey levels).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _photos import Placement, correlation, load_face, make_photo  # noqa: E402
from fqtool.align.pipeline import Aligner, AlignOptions  # noqa: E402

FACES = [1, 3, 6, 9, 10, 16, 19]
SCALES = (0.5, 0.75, 1.0, 1.5, 2.0)
ANGLES = (-30, 0, 30)


def main() -> None:
    aligners = {refine: Aligner(AlignOptions(faces="all", refine=refine)) for refine in (False, True)}
    scores: dict[bool, list[float]] = {False: [], True: []}
    for face in FACES:
        for scale in SCALES:
            for angle in ANGLES:
                placement = Placement(face, 100, 60, scale, angle)
                photo, (truth,) = make_photo([placement], size=(360, 480), seed=face)
                for refine, aligner in aligners.items():
                    found, crops = aligner.crops(photo)
                    if not crops:
                        scores[refine].append(0.0)  # a miss counts as no match
                        continue
                    offsets = found.landmarks.mean(axis=1) - truth.mean(axis=0)
                    k = int(np.argmin(np.linalg.norm(offsets, axis=1)))
                    scores[refine].append(correlation(crops[k], load_face(face)))
    for refine, values in scores.items():
        v = np.array(values)
        name = "--refine" if refine else "--no-refine"
        print(f"{name:<12} {len(v)} crops: median correlation {np.median(v):.3f}, "
              f"mean {v.mean():.3f}, under 0.9: {(v < 0.9).sum()} ({(v < 0.9).mean():.0%}), "
              f"missed: {(v == 0).sum()}")


if __name__ == "__main__":
    main()
