"""Aligned crops as a face dataset, for ``score --align``: names are the source photos' names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fqtool.align.pipeline import AlignOptions, AlignResult, align_input
from fqtool.data.datasets import FileImageDataset

__all__ = ["AlignedCrops", "aligned_dataset"]


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
