"""Aligned crops as a face dataset, for ``score --align``: names are the source photos' names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fqtool.align.pipeline import AlignOptions, AlignResult, align_input
from fqtool.data.datasets import FileImageDataset

__all__ = ["AlignedCrops", "align_pair_images", "aligned_dataset", "missed_faces_note"]


class AlignedCrops(FileImageDataset):
    """Crops in a work folder, each named after the photo it came from (``photo.jpg``, ``photo.jpg#1``)."""

    def __init__(self, source: str | Path, workdir: str | Path, result: AlignResult, size: int) -> None:
        crops = [f.out for f in result.faces]
        super().__init__(source, workdir, crops, np.full(len(crops), -1), 0, size=(size, size))
        self.display = [f.source if f.face == 0 else f"{f.source}#{f.face}" for f in result.faces]

    def name(self, i: int) -> str:
        return self.display[i]


def aligned_dataset(
    input_path: str | Path,
    workdir: str | Path,
    size: int = 112,
    *,
    detector: str | Path | None = None,
    workers: int = 2,
    on_progress: Callable[[int], None] | None = None,
    margin: float | None = None,
) -> tuple[AlignedCrops, AlignResult]:
    """Align ``input_path`` into ``workdir`` (largest face per image); the crops as a dataset + the run.
    ``margin``: loose crops (box + margin) instead of aligned ones, for models trained on those."""
    options = AlignOptions(size=size, workers=max(1, workers), detector=str(detector) if detector else None,
                           margin=margin)
    result = align_input(input_path, workdir, options, on_progress=on_progress)
    return AlignedCrops(input_path, workdir, result, size), result


def align_pair_images(
    images, size: tuple[int, int], *, detector: str | Path | None = None,
    on_progress: Callable[[int], None] | None = None, margin: float | None = None,
):
    """``verify --align``: each pair image's largest face aligned → ``(uint8 N×3×H×W tensor, missed)``.

    An image with no face (or unreadable) is used whole and resized, exactly as without ``--align``
    (black when it cannot be decoded), so the pairs stay complete; ``missed`` lists those indices.
    ``margin``: loose crops (box + margin), for models trained on those."""
    import torch

    from fqtool.align.pipeline import Aligner, align_images, crop_size_for
    from fqtool.data.decode import decode_image, resize_if_needed
    from fqtool.errors import BadInputError

    side = crop_size_for(size)
    aligner = Aligner(AlignOptions(size=side, detector=str(detector) if detector else None, margin=margin))
    crops, missed = align_images(images, side, aligner, on_progress=on_progress)
    tensor = resize_if_needed(torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous(), tuple(size))
    for i in missed:
        try:
            tensor[i] = resize_if_needed(decode_image(images[i], f"image {i}"), tuple(size))
        except BadInputError:
            tensor[i] = 0
    return tensor, missed


def missed_faces_note(missed: list[str], total: int, what: str) -> str | None:
    """One warning line for the images in which no face was found (None when there are none)."""
    if not missed:
        return None
    names = ", ".join(missed[:5]) + (", …" if len(missed) > 5 else "")
    return f"no face found in {len(missed)} of {total} images ({what}): {names}"
