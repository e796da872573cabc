"""What ``score --align`` and ``verify --align`` share: aligning inline, and the not-aligned warning."""

from __future__ import annotations

from pathlib import Path

from fqtool.cli.console import warn
from fqtool.cli.progress import progress_bar
from fqtool.errors import BadInputError, FqtoolError


def _warn_missed(missed: list[str], total: int, what: str) -> None:
    if missed:
        names = ", ".join(missed[:5]) + (", …" if len(missed) > 5 else "")
        warn(f"no face found in {len(missed)} of {total} images ({what}): {names}")


def aligned_input(input: Path, size: tuple, detector: Path | None, workers: int, quiet: bool,
                  margin: float | None = None):
    """``score --align``: detect and align into a temporary folder, removed when the dataset is."""
    import tempfile

    from fqtool.align.datasets import aligned_dataset
    from fqtool.align.pipeline import crop_size_for

    workdir = tempfile.TemporaryDirectory(prefix="fqtool-align-")
    with progress_bar("align", None, quiet=quiet) as advance:
        dataset, aligned = aligned_dataset(input, workdir.name, crop_size_for(size), detector=detector,
                                           workers=max(1, workers), on_progress=advance, margin=margin)
    dataset.workdir = workdir  # TemporaryDirectory deletes the folder once the dataset is gone
    _warn_missed(aligned.no_face + [s for s, _ in aligned.unreadable], aligned.images, "not scored")
    if not len(dataset):
        raise FqtoolError("no face found in any image", input)
    return dataset


def warn_if_not_aligned(dataset, size: tuple) -> None:
    """One warning when the input's images are not the model's size (photos squashed, not aligned)."""
    from fqtool.align.pipeline import first_off_size

    found = first_off_size(dataset, size)
    if found is None:
        return
    if found[0] == found[1] and found[0] <= 256:  # square and small: crops aligned for another input size
        advice = (f"they look like aligned crops for another model and are resized; re-align the photos "
                  f"at this model's size (`fqtool align --size {size[0]}` or --align), or check --preprocess")
    else:
        advice = "they are resized without face alignment; for photos use --align (or `fqtool align` first)"
    warn(f"images are {found[1]}×{found[0]}, not the model's {size[1]}×{size[0]}: {advice}")


def align_pair_images(images, size: tuple, detector: Path | None, name: str, quiet: bool,
                      margin: float | None = None):
    """``verify --align``: the pair images' largest faces aligned, as a uint8 N×3×H×W tensor."""
    import torch

    from fqtool.align.pipeline import Aligner, AlignOptions, align_images, crop_size_for
    from fqtool.data.decode import decode_image, resize_if_needed

    side = crop_size_for(size)
    aligner = Aligner(AlignOptions(size=side, detector=str(detector) if detector else None, margin=margin))
    with progress_bar(f"align {name}", len(images), quiet=quiet) as advance:
        crops, missed = align_images(images, side, aligner, on_progress=advance)
    _warn_missed([f"#{i}" for i in missed], len(images), f"{name}: used whole, resized")
    tensor = resize_if_needed(torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous(), tuple(size))
    for i in missed:  # exactly what verify does without --align
        try:
            tensor[i] = resize_if_needed(decode_image(images[i], f"{name} image {i}"), tuple(size))
        except BadInputError:
            tensor[i] = 0
    return tensor
