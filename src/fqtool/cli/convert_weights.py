"""``fqtool convert-weights``: MagFace / arcface_torch / EQFace / CR-FIQA weights → fqtool .safetensors;
a foreign .onnx → a copy with fqtool metadata (preprocessing, calibration), the graph untouched."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from fqtool.cli.console import console
from fqtool.cli.models import describe_preprocess
from fqtool.cli.options import Arch, ModelFile, PreprocessSpec, QualityWeights, check_output_file
from fqtool.errors import FqtoolError


def _check_calibration(low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise FqtoolError(f"--calibration needs two finite numbers, got {low:g} {high:g}")
    if high <= low:
        raise FqtoolError("--calibration needs LOW < HIGH")


def input_and_output(
    weights: Path | None, first: Path | None, second: Path | None
) -> tuple[Path, Path | None]:
    """``IN [OUT]`` or ``--weights IN [OUT]`` (the positional IN is an alias of ``--weights``)."""
    if weights is None:
        if first is None:
            raise FqtoolError("give the weights to convert: --weights IN (or IN as the first argument)")
        return first, second
    if second is not None:
        raise FqtoolError("--weights gives the input; pass at most one argument (OUT)")
    return weights, first


def command(
    source: Annotated[
        Path | None,
        typer.Argument(help="Weights to convert (.pth/.pt/.safetensors/.onnx); the same as --weights.",
                       show_default=False),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Argument(help="File to write (default: SOURCE.safetensors; an .onnx input needs OUT.onnx).",
                       show_default=False),
    ] = None,
    weights: ModelFile = None,
    preprocess: PreprocessSpec = None,
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
    """Convert MagFace / arcface_torch / EQFace (+ quality.pth) / CR-FIQA weights to fqtool .safetensors,
    or stamp fqtool metadata into a copy of a foreign .onnx (IN.onnx OUT.onnx --preprocess SPEC).

    The output records the architecture, preprocessing, quality method, calibration and source sha256, so
    later commands need no flags. Weights holding NaN/inf are refused (nothing written).
    """
    from fqtool.fsutil import sha256_file
    from fqtool.models._state import sniff_format
    from fqtool.models.checkpoint import ensure_finite, save_checkpoint
    from fqtool.models.face_model import QualityCalibration
    from fqtool.models.loading import load_face_model
    from fqtool.models.preprocess import parse_preprocess

    source, out = input_and_output(weights, source, out)
    if not source.is_file():
        raise FqtoolError("no such file", source)
    declared = parse_preprocess(preprocess)
    if calibration is not None:
        _check_calibration(*calibration)
    is_onnx = sniff_format(source) == "onnx"
    if is_onnx:
        _stamp_onnx(source, out, declared, calibration, quality_weights, arch, family)
        return
    out = out or source.with_suffix(".safetensors")
    if out.resolve() == source.resolve():
        raise FqtoolError("output would overwrite the input; give OUT", out)
    check_output_file(out, "OUT")
    model = load_face_model(
        source, quality_weights=quality_weights, arch=arch, family=family, device="cpu", preprocess=declared,
    )
    ensure_finite(model, source)
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


def _stamp_onnx(source: Path, out: Path | None, declared, calibration, quality_weights, arch, family) -> None:
    """``convert-weights IN.onnx OUT.onnx --preprocess SPEC [--calibration LOW HIGH]``."""
    import json

    from fqtool.models.face_model import QualityCalibration
    from fqtool.models.preprocess import Preprocess
    from fqtool.models.stamp import output_kind, stamp_onnx

    for given, option in ((quality_weights, "--quality-weights"), (arch, "--arch"), (family, "--family")):
        if given is not None:
            raise FqtoolError(f"{option} does not apply to an .onnx model (its graph is copied as it is)")
    if out is None:
        raise FqtoolError("an .onnx input is copied with fqtool metadata: give OUT.onnx", source)
    output_kind(source, out)
    cal = QualityCalibration(*calibration, "convert-weights --calibration") if calibration else None
    meta = stamp_onnx(source, out, preprocess=declared, calibration=cal)
    preprocess = Preprocess.from_dict(json.loads(meta["preprocessing"]))
    console.print(
        f"{source.name}: ONNX, embedding {meta.get('embedding_size') or '?'}, quality "
        f"{meta.get('quality_method')}, input {describe_preprocess(preprocess)} ({meta['input_layout']}); "
        f"graph unchanged",
        highlight=False, soft_wrap=True,
    )
    console.print(f"wrote {out}", highlight=False, soft_wrap=True)
