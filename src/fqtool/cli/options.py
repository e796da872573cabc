"""Options shared by several commands, defined once so that ``--device`` means the same everywhere."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fqtool.errors import FqtoolError

Weights = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        "-w",
        envvar="FQTOOL_WEIGHTS",
        help="Model weights: an fqtool checkpoint (.safetensors), a MagFace / arcface_torch / EQFace .pth, "
        "or an exported .onnx. Default: $FQTOOL_WEIGHTS.",
        show_default=False,
    ),
]
#: The weights a conversion reads (export, convert-weights, calibrate): no $FQTOOL_WEIGHTS fallback there,
#: so that an environment variable never turns into a command's input by surprise.
ModelFile = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        "-w",
        help="Model weights to read (the positional argument is an alias).",
        show_default=False,
    ),
]
PreprocessSpec = Annotated[
    str | None,
    typer.Option(
        "--preprocess",
        metavar="SPEC",
        help="The model's input, overriding what the file says: a preset (arcface/insightface, magface, "
        "eqface, crfiqa, facenet; see `fqtool models --families`) or size=160,mean=127.5,std=128,colour=rgb "
        "(pixel units; mean/std one or three values; colour rgb|bgr; layout nchw|nhwc for ONNX; margin=32 "
        "for models trained on loose MTCNN crops).",
        show_default=False,
    ),
]
QualityWeights = Annotated[
    Path | None,
    typer.Option(
        "--quality-weights",
        help="EQFace quality-head weights (quality.pth) to pair with an EQFace backbone.",
        show_default=False,
    ),
]
Arch = Annotated[
    str | None,
    typer.Option("--arch", help="Architecture name from the registry (see `fqtool models`); "
                 "normally read from the checkpoint."),
]
Device = Annotated[
    str,
    typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N."),
]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per batch (per GPU).")]
Workers = Annotated[int, typer.Option("--workers", "-j", min=0, help="DataLoader worker processes.")]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the result.")]
OutputDir = Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
SerfiqPasses = Annotated[
    int, typer.Option("--serfiq-passes", help="SER-FIQ: stochastic dropout passes per image (m, at least 2).")
]
SerfiqDropout = Annotated[
    float,
    typer.Option("--serfiq-dropout", help="SER-FIQ: dropout probability on the embedding layer's input."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


class ListFormat(StrEnum):
    """List file formats: ``path label``, ``path;label`` (EQFace), im2rec ``idx<TAB>label<TAB>path``."""

    space = "space"
    semicolon = "semicolon"
    lst = "lst"


# --- face alignment (align, score --align, verify --align) ---
DetectorFile = Annotated[
    Path | None,
    typer.Option(
        "--detector",
        help="Face detector ONNX file: an insightface SCRFD (det_500m.onnx, det_10g.onnx, …) or a "
        "RetinaFace graph. Default: the embedded RetinaFace-MobileNet0.25.",
        show_default=False,
    ),
]
AlignFlag = Annotated[
    bool,
    typer.Option("--align", help="Detect and align faces first (largest face per image, five-point "
                 "template), for photos that are not aligned crops."),
]


def check_output_file(path: Path | None, option: str) -> None:
    """Refuse an output FILE path that is an existing folder, before any work starts."""
    if path is not None and path.is_dir():
        raise FqtoolError(f"{option} is a folder; give a file name", path)
