"""Options shared by several commands, declared once so that ``--device`` means the same everywhere.

Each shared option is a :class:`SharedOption` (flags + help) and, for the common case, a ready ``Annotated``
type (``Device``, ``Seed``, ``Arch``, ``Json``, ``Plot``, ``Flip``, ``Features``); a command whose option
means something narrower (``--seed`` of the SER-FIQ masks, ``--plot`` of a histogram) takes
``SEED.annotated(int, help=...)``, so the flag, its type and its spelling stay the same. The choices of
``--method``, ``--mode`` and ``--metric`` are enums (:class:`QualityMethod`, :class:`ErcMode`,
:class:`PairMetric`). The ``train-*`` commands declare their options in ``train_options`` from these.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from fqtool.errors import FqtoolError
from fqtool.eval.erc import METRICS, MODES
from fqtool.quality_methods import names_for


@dataclass(frozen=True)
class SharedOption:
    """An option several commands take: its flags and its help."""

    flags: tuple[str, ...]
    help: str

    def annotated(self, kind: Any, help: str | None = None, **kwargs: Any) -> Any:
        """``Annotated[kind, typer.Option(...)]`` with these flags (``help`` for a narrower meaning)."""
        return Annotated[kind, typer.Option(*self.flags, help=help or self.help, **kwargs)]


DEVICE = SharedOption(("--device",), "auto (CUDA when available), cpu, cuda or cuda:N (under torchrun each "
                      "process takes cuda:LOCAL_RANK).")
SEED = SharedOption(("--seed",), "Random seed.")
ARCH = SharedOption(("--arch",), "Backbone from the registry or an arcface_torch name (r50, mbf; see "
                    "`fqtool models`).")
JSON = SharedOption(("--json",), "Print the results as JSON instead of a table.")
PLOT = SharedOption(("--plot",), "Write a plot (FILE.png + FILE.svg).")
FLIP = SharedOption(("--flip/--no-flip",), "Embed each image and its mirror image and add the two.")
FEATURES = SharedOption(("--features",), "Use saved features (.npz) instead of a model.")

Device = DEVICE.annotated(str)
Seed = SEED.annotated(int)
Arch = ARCH.annotated(str | None, ARCH.help.removesuffix(".") + "; normally read from the checkpoint.")
Json = JSON.annotated(bool)
Plot = PLOT.annotated(Path | None, show_default=False)
Flip = FLIP.annotated(bool | None, show_default=False)
Features = FEATURES.annotated(Path | None, show_default=False)


#: ``score --method``: auto (the model's own), norm, head, crfiqa, serfiq, from the torch-free
#: quality-method table (``fqtool.quality_methods``).
QualityMethod = StrEnum("QualityMethod", {name: name for name in names_for("score")})


#: ``--mode`` of ``erc-curve``: erc or edc (``fqtool.eval.erc.MODES``).
ErcMode = StrEnum("ErcMode", {mode: mode for mode in MODES})
#: ``--metric``: the pair distance, angular or cosine (``fqtool.eval.erc.METRICS``).
PairMetric = StrEnum("PairMetric", {metric: metric for metric in METRICS})

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
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per batch (per GPU).")]
Workers = Annotated[int, typer.Option("--workers", "-j", min=0, help="DataLoader worker processes.")]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the result.")]
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
