"""``make-pairs``: identity folders → an LFW-style verification set (``.bin`` or a pairs folder).

Genuine pairs are two different images of one identity, impostor pairs one image each of two
identities, each drawn uniformly from all distinct pairs of its kind (no pair twice) with a seeded
generator, so the same folder and seed give the same set. Pairs are ordered so that genuine and impostor
pairs are spread evenly: every block of the 10-fold protocol gets the same share of each, as in LFW.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fqtool.data.binfile import VerificationSet, save_bin, write_verification_folder
from fqtool.data.decode import image_extension, read_image_file
from fqtool.data.lists import check_names, scan_image_folder
from fqtool.errors import BadInputError, FqtoolError
from fqtool.fsutil import atomic_write_text

#: Above this many possible pairs, pairs are drawn by rejection instead of from the full enumeration.
_ENUMERATE_LIMIT = 2_000_000


@dataclass
class PairsResult:
    output: Path
    genuine: int
    impostor: int
    identities: int
    images: int


def _genuine_space(groups: list[np.ndarray]) -> int:
    return int(sum(len(g) * (len(g) - 1) // 2 for g in groups))


def _impostor_space(groups: list[np.ndarray]) -> int:
    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    return int((sizes.sum() ** 2 - (sizes**2).sum()) // 2)


Pair = tuple[int, int]


def _draw(rng: np.random.Generator, count: int, possible: int,
          one: Callable[[], Pair], every: Callable[[], list[Pair]]) -> list[Pair]:
    """``count`` distinct unordered pairs: from the full list when it is small or most of it is wanted,
    else by rejection (fast while ``count`` is well below ``possible``)."""
    if possible <= _ENUMERATE_LIMIT or 2 * count > possible:
        pool = every()
        return [pool[i] for i in rng.choice(len(pool), size=count, replace=False)]
    seen: set[tuple[int, int]] = set()
    out = []
    while len(out) < count:
        a, b = one()
        key = (min(a, b), max(a, b))
        if key not in seen:
            seen.add(key)
            out.append((a, b))
    return out


def _genuine(rng: np.random.Generator, groups: list[np.ndarray], count: int) -> list[tuple[int, int]]:
    eligible = [g for g in groups if len(g) > 1]
    weights = np.array([len(g) * (len(g) - 1) / 2 for g in eligible], dtype=np.float64)
    weights /= max(weights.sum(), 1.0)

    def one() -> tuple[int, int]:
        group = eligible[rng.choice(len(eligible), p=weights)]
        a, b = rng.choice(len(group), size=2, replace=False)
        return int(group[a]), int(group[b])

    def every() -> list[tuple[int, int]]:
        return [(int(g[i]), int(g[j])) for g in eligible for i in range(len(g)) for j in range(i + 1, len(g))]

    return _draw(rng, count, _genuine_space(groups), one, every)


def _impostor(rng: np.random.Generator, groups: list[np.ndarray], labels: np.ndarray,
              count: int) -> list[tuple[int, int]]:
    def one() -> tuple[int, int]:
        while True:
            a, b = rng.integers(len(labels), size=2)
            if labels[a] != labels[b]:
                return int(a), int(b)

    def every() -> list[tuple[int, int]]:
        return [(int(a), int(b))
                for i, ga in enumerate(groups) for gb in groups[i + 1:] for a in ga for b in gb]

    return _draw(rng, count, _impostor_space(groups), one, every)


def _spread(rng: np.random.Generator, genuine: list, impostor: list) -> list[tuple[int, int, bool]]:
    """Shuffle each kind, then interleave by relative rank so every fold gets the same share of both."""
    tagged = [(a, b, True) for a, b in genuine] + [(a, b, False) for a, b in impostor]
    keys = np.concatenate([(rng.permutation(len(genuine)) + 0.5) / max(len(genuine), 1),
                           (rng.permutation(len(impostor)) + 0.25) / max(len(impostor), 1)])
    order = np.argsort(keys, kind="stable")
    out = []
    for i in order.tolist():
        a, b, same = tagged[i]
        out.append((b, a, same) if rng.random() < 0.5 else (a, b, same))
    return out


def draw_pairs(labels: np.ndarray, genuine: int, impostor: int, seed: int = 0,
               source: str | Path | None = None) -> list[tuple[int, int, bool]]:
    """``(image a, image b, same)`` index triples for images with identity ``labels``."""
    if genuine < 0 or impostor < 0 or genuine + impostor == 0:
        raise FqtoolError("ask for at least one pair (--genuine / --impostor)")
    labels = np.asarray(labels)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for kind, wanted, possible, need in (
        ("genuine", genuine, _genuine_space(groups), "identities with two or more images"),
        ("impostor", impostor, _impostor_space(groups), "two or more identities"),
    ):
        if wanted > possible:
            raise FqtoolError(
                f"cannot draw {wanted} distinct {kind} pairs from {len(groups)} identities and {len(labels)} "
                f"images (at most {possible}; {kind} pairs need {need}); lower --{kind}", source
            )
    rng = np.random.default_rng(seed)
    return _spread(rng, _genuine(rng, groups, genuine), _impostor(rng, groups, labels, impostor))


def _read_images(root: Path, paths: list[str], used: list[int]) -> dict[int, bytes]:
    data = {}
    for i in sorted(set(used)):
        file = root / paths[i]
        raw = read_image_file(file)
        if not image_extension(raw):
            raise BadInputError("not a JPEG/PNG/BMP/WebP image", file)
        data[i] = raw
    return data


def make_pairs(root: str | Path, output: str | Path, *, genuine: int = 3000, impostor: int = 3000,
               seed: int = 0) -> PairsResult:
    """Draw pairs from ``root``'s identity folders and write ``output``: a ``.bin`` (insightface's form)
    or a pairs folder (``images/NNNNNN.<ext>`` + ``pairs.txt`` + ``sources.txt``). Everything is read
    and checked before anything is written; the ``.bin`` and ``pairs.txt`` are written atomically."""
    root, output = Path(root), Path(output)
    paths, labels, classes = scan_image_folder(root)
    if not classes:
        raise BadInputError("needs one sub-folder per identity, found only loose images", root)
    as_bin = output.suffix.lower() == ".bin"
    if not as_bin and output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise FqtoolError("output folder exists and is not empty (give a new folder or a .bin)", output)
    pairs = draw_pairs(labels, genuine, impostor, seed, root)
    order = [i for a, b, _ in pairs for i in (a, b)]
    if not as_bin:
        check_names([paths[i] for i in sorted(set(order))])  # sources.txt: one name per line
    data = _read_images(root, paths, order)
    images = [data[i] for i in order]
    issame = np.array([same for _, _, same in pairs], dtype=bool)
    if as_bin:
        save_bin(output, images, issame)
    else:
        vset = VerificationSet(output.name, images, issame)
        output.mkdir(parents=True, exist_ok=True)
        sources = "".join(f"{i:06d} {paths[j]}\n" for i, j in enumerate(order))
        atomic_write_text(output / "sources.txt", sources)
        write_verification_folder(vset, output)  # pairs.txt last: the set exists only when complete
    return PairsResult(output, int(issame.sum()), int((~issame).sum()), len(classes), len(set(order)))
