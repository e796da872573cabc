"""A small IJB-B/IJB-C ``IJB_release`` tree made from the real aligned faces in ``tests/data/faces``.

Each face is pasted into a larger "loose crop" with a random similarity transform (scale, rotation,
shift, background, some blur/darkening); its five landmarks are the ArcFace template points moved by
the same transform. An identity (the person in the file name) gets several templates, each with a few
media of one to three frames; the pair list holds every genuine template pair and random impostors.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

FACES = Path(__file__).parent / "data" / "faces"
TEMPLATE_POINTS = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
CANVAS = (150, 170)  # width, height of a loose crop


def identities() -> dict[str, list[Path]]:
    """Person name → their face files (``12-Corinne_Coman_1.jpg`` → ``Corinne_Coman``)."""
    people: dict[str, list[Path]] = {}
    for path in sorted(FACES.glob("*.jpg")):
        person = path.stem.split("-", 1)[1].rsplit("_", 1)[0]
        people.setdefault(person, []).append(path)
    return people


def _loose_crop(face: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    scale = rng.uniform(0.8, 1.25)
    angle = math.radians(rng.uniform(-15, 15))
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    shift = np.array([CANVAS[0] / 2, CANVAS[1] / 2]) + rng.uniform(-12, 12, 2)
    forward = np.array([[cos, -sin], [sin, cos]])
    offset = shift - forward @ np.array([56.0, 56.0])
    inverse = np.linalg.inv(forward)
    inv_offset = -inverse @ offset
    data = (inverse[0, 0], inverse[0, 1], inv_offset[0], inverse[1, 0], inverse[1, 1], inv_offset[1])
    grey = int(rng.integers(30, 220))
    crop = face.transform(
        CANVAS, Image.Transform.AFFINE, data, Image.Resampling.BILINEAR, fillcolor=(grey,) * 3
    )
    if rng.random() < 0.3:
        crop = crop.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 3.0)))
    if rng.random() < 0.2:
        crop = Image.eval(crop, lambda v: int(v * 0.45))
    landmarks = TEMPLATE_POINTS @ forward.T + offset
    return crop, landmarks


def write_ijb_release(
    release: str | Path, name: str = "IJBC", templates_per_id: int = 4, impostors: int = 300, seed: int = 0
) -> Path:
    """Write ``release/<name>/{meta,loose_crop}``; returns the set folder."""
    rng = np.random.default_rng(seed)
    root = Path(release) / name
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "loose_crop").mkdir(exist_ok=True)
    tid_mid, points, by_person = [], [], {}
    image_no, media_no = 1, 7000
    for person_no, (person, files) in enumerate(identities().items()):
        faces = [Image.open(f).convert("RGB") for f in files]
        for t in range(templates_per_id):
            template = 100 + 11 * (person_no * templates_per_id + t)
            by_person.setdefault(person, []).append(template)
            for _media in range(int(rng.integers(1, 4))):
                media_no += int(rng.integers(1, 5))
                face = faces[int(rng.integers(len(faces)))]
                for _frame in range(int(rng.integers(1, 4))):
                    crop, lmk = _loose_crop(face, rng)
                    file = f"{image_no}.jpg"
                    crop.save(root / "loose_crop" / file, quality=90)
                    tid_mid.append(f"{file} {template} {media_no}")
                    numbers = " ".join(f"{v:.3f}" for v in lmk.reshape(-1))
                    points.append(f"{file} {numbers} {rng.uniform(0.5, 1.0):.4f}")
                    image_no += 1
    pairs = []
    for templates in by_person.values():
        pairs += [(a, b, 1) for i, a in enumerate(templates) for b in templates[i + 1 :]]
    people = list(by_person.values())
    while len(pairs) < impostors + sum(1 for p in pairs if p[2] == 1):
        i, j = rng.choice(len(people), 2, replace=False)
        pairs.append((int(rng.choice(people[i])), int(rng.choice(people[j])), 0))
    order = rng.permutation(len(pairs))
    prefix = name.lower()
    (root / "meta" / f"{prefix}_face_tid_mid.txt").write_text("\n".join(tid_mid) + "\n")
    (root / "meta" / f"{prefix}_name_5pts_score.txt").write_text("\n".join(points) + "\n")
    lines = [f"{pairs[k][0]} {pairs[k][1]} {pairs[k][2]}" for k in order]
    (root / "meta" / f"{prefix}_template_pair_label.txt").write_text("\n".join(lines) + "\n")
    return root
