"""What ``verify`` and ``erc-curve`` share: the ``--data-dir`` option and how a TARGET is embedded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fqtool.cli.progress import progress_bar

if TYPE_CHECKING:
    from fqtool.api import QualityModel
    from fqtool.eval.features import FeatureSet

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        "-d",
        help="Folder with <name>.bin sets or IJB_release (IJBB/, IJBC/); also $FQTOOL_DATA.",
        show_default=False,
    ),
]


@dataclass
class EmbedOptions:
    """How TARGETs are found, decoded and embedded."""

    weights: Path | None = None
    quality_weights: Path | None = None
    data_dir: Path | None = None
    device: str = "auto"
    batch_size: int = 64
    workers: int = 0
    quiet: bool = False
    align: bool = False  # detect + align each image first (verify --align)
    detector: Path | None = None
    preprocess: str | None = None  # --preprocess SPEC: overrides the file's preprocessing


def load_model_for_eval(opts: EmbedOptions) -> tuple[QualityModel, Path]:
    """Resolve ``--weights`` / $FQTOOL_WEIGHTS and open the model on the device (the Python API's)."""
    from fqtool.api import load_model

    model = load_model(opts.weights, quality_weights=opts.quality_weights, device=opts.device,
                       preprocess=opts.preprocess)
    return model, model.weights


def features_for_target(
    model: QualityModel, target: str, opts: EmbedOptions, *, flip: bool, meta: dict | None = None
) -> FeatureSet:
    """Decode and embed one TARGET with a progress bar."""
    return features_and_images(model, target, opts, flip=flip, meta=meta)[0]


def features_and_images(
    model: QualityModel, target: str, opts: EmbedOptions, *, flip: bool, meta: dict | None = None
) -> tuple[FeatureSet, object]:
    """Decode and embed one TARGET with a progress bar; also return the decoded uint8 images."""
    from fqtool.eval.targets import decode_target

    if opts.align:
        name, images, issame = _aligned_target(target, model.size, opts, model.preprocess.margin)
    else:
        name, images, issame = decode_target(target, model.size, opts.data_dir, opts.workers)
    total = len(images) * (2 if flip else 1)
    with progress_bar(f"embed {name}", total, quiet=opts.quiet) as advance:
        features = model.features(
            images, issame, name=name, flip=flip, batch_size=opts.batch_size, on_batch=advance, meta=meta
        )
    return features, images


def _aligned_target(target: str, size, opts: EmbedOptions, margin: float | None = None):
    """``--align``: the pairs' images detected and aligned instead of resized."""
    import numpy as np

    from fqtool.cli.align_options import align_pair_images
    from fqtool.eval.targets import load_target, resolve_target, target_name

    name = target_name(target, resolve_target(target, opts.data_dir))
    vset = load_target(target, opts.data_dir)
    images = align_pair_images(vset.images, tuple(size), opts.detector, name, opts.quiet, margin)
    return name, images, np.asarray(vset.issame)
