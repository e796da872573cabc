"""``fqtool calibrate``: fit the 0-100 quality scale to a representative image set; save it in a copy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fqtool.cli.console import console
from fqtool.cli.options import (
    Arch,
    BatchSize,
    Device,
    PreprocessSpec,
    QualityWeights,
    Quiet,
    Weights,
    Workers,
)
from fqtool.cli.progress import progress_bar
from fqtool.errors import FqtoolError
from fqtool.quality_methods import method_help, names_for

METHODS = names_for("calibrate")


def command(
    images: Annotated[
        Path,
        typer.Argument(help="Representative aligned face images: a folder (recursive), list file or .rec.",
                       show_default=False),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Calibrated copy of the weights: .safetensors (torch weights) or "
                     ".onnx (an .onnx model; graph unchanged).", show_default=False),
    ],
    weights: Weights = None,
    quality_weights: QualityWeights = None,
    arch: Arch = None,
    preprocess: PreprocessSpec = None,
    percentiles: Annotated[
        tuple[float, float],
        typer.Option("--percentiles", metavar="LOW HIGH", help="Percentiles of the set's raw quality mapped "
                     "to 0 and 100."),
    ] = (1.0, 99.0),
    method: Annotated[
        str,
        typer.Option("--method", help=f"Quality the scale is for: {method_help('calibrate')}; it becomes the "
                     "copy's default method."),
    ] = "auto",
    batch_size: BatchSize = 64,
    workers: Workers = 0,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Fit the 0-100 quality scale from a representative set and write it into a copy of the weights.

    The set's LOW/HIGH percentiles (p1/p99 by default) of the raw quality become 0 and 100; later
    `score` runs with the copy use that scale. Pick images like the ones you will score (same cameras,
    same alignment), a few hundred or more; see docs/quality-calibration.md.
    """
    from fqtool.api import load_model
    from fqtool.eval.calibrate import check_percentiles, check_writable
    from fqtool.models.loading import resolve_weights

    if method not in METHODS:
        raise FqtoolError(f"--method {method!r}: use {', '.join(METHODS)}")
    check_percentiles(*percentiles)
    weights_path = resolve_weights(weights)
    if not images.exists():
        raise FqtoolError("no such file or folder", images)
    model = load_model(weights_path, quality_weights=quality_weights, device=device, arch=arch,
                       preprocess=preprocess)
    check_writable(model.network, weights_path, output)
    dataset = model.open(images)
    with progress_bar("calibrate", len(dataset), quiet=quiet) as advance:
        fit = model.calibrate(dataset, percentiles=percentiles, method=method, output=output,
                              batch_size=batch_size, workers=workers, on_progress=advance)
    cal = fit.calibration
    skipped = f" ({fit.unreadable} unreadable, skipped)" if fit.unreadable else ""
    console.print(
        f"quality ({fit.method}) of {fit.images} images{skipped}: p{percentiles[0]:g} = {cal.low:.6g} -> 0, "
        f"p{percentiles[1]:g} = {cal.high:.6g} -> 100",
        highlight=False, soft_wrap=True,
    )
    console.print(f"wrote {output}", highlight=False, soft_wrap=True)
