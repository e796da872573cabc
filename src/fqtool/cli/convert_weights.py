"""``fqtool convert-weights``: MagFace / arcface_torch / EQFace / CR-FIQA weights → fqtool .safetensors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from fqtool.cli.console import console
from fqtool.cli.models import describe_preprocess
from fqtool.cli.options import Arch, QualityWeights, check_output_file
from fqtool.errors import FqtoolError


def _check_calibration(low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise FqtoolError(f"--calibration needs two finite numbers, got {low:g} {high:g}")
    if high <= low:
        raise FqtoolError("--calibration needs LOW < HIGH")


def command(
    source: Annotated[Path, typer.Argument(help="Checkpoint to convert (.pth/.pt/.safetensors).",
                                           show_default=False)],
    out: Annotated[
        Path | None,
        typer.Argument(help="fqtool checkpoint to write (default: SOURCE.safetensors).", show_default=False),
    ] = None,
    quality_weights: QualityWeights = None,
    arch: Arch = None,
    family: Annotated[
        str | None,
        typer.Option("--family", help="Override the detected family: magface, arcface_torch, eqface, crfiqa "
                     "(sets BatchNorm conventions and preprocessing).", show_default=False),
    ] = None,
    calibration: Annotated[
        tuple[float, float] | None,
        typer.Option("--calibration", metavar="LOW HIGH",
                     help="Raw quality mapped to 0 and 100 (see docs/quality-calibration.md).",
                     show_default=False),
    ] = None,
) -> None:
    """Convert MagFace / arcface_torch / EQFace (+ quality.pth) / CR-FIQA weights to fqtool .safetensors.

    The output records the architecture, preprocessing, quality method, calibration and source sha256.
    """
    from fqtool.fsutil import sha256_file
    from fqtool.models.checkpoint import save_checkpoint
    from fqtool.models.face_model import QualityCalibration
    from fqtool.models.loading import load_face_model

    if not source.is_file():
        raise FqtoolError("no such file", source)
    out = out or source.with_suffix(".safetensors")
    if out.resolve() == source.resolve():
        raise FqtoolError("output would overwrite the input; give OUT", out)
    check_output_file(out, "OUT")
    if calibration is not None:
        _check_calibration(*calibration)
    model = load_face_model(
        source, onnx_error="an .onnx model is already exported; there is nothing to convert",
        quality_weights=quality_weights, arch=arch, family=family, device="cpu",
    )
    files = [source] + ([quality_weights] if quality_weights is not None else [])
    origin = dict(model.info.source or {"family": model.info.family})
    origin["files"] = [p.name for p in files]
    origin["sha256"] = {p.name: sha256_file(p) for p in files}
    model.info.source = origin
    if calibration is not None:
        low, high = calibration
        model.info.calibration = QualityCalibration(low, high, "convert-weights --calibration")
    save_checkpoint(model, out)
    params = sum(p.numel() for p in model.parameters())
    console.print(
        f"{source.name}: {model.info.family} {model.info.arch} (embedding {model.embedding_size}, "
        f"{params / 1e6:.1f} M params), quality {model.quality_method}, "
        f"input {describe_preprocess(model.preprocess)}",
        highlight=False, soft_wrap=True,
    )
    if origin.get("dropped"):
        dropped = origin["dropped"]
        console.print(f"dropped (not part of the backbone): {dropped}", highlight=False, soft_wrap=True)
    console.print(f"wrote {out}", highlight=False, soft_wrap=True)
