"""``fqtool align``: detect faces in photos and warp them to insightface's five-point template."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fqtool.cli.console import console, plural, warn
from fqtool.cli.jsonout import JsonFlag, emit_json
from fqtool.cli.options import DetectorFile, Quiet
from fqtool.cli.progress import progress_bar


class FacePolicy(StrEnum):
    largest = "largest"
    best = "best"
    all = "all"


class CropFormat(StrEnum):
    png = "png"
    jpg = "jpg"


def _report(result, json_out: bool = False) -> None:
    if result.unreadable:
        shown = ", ".join(s for s, _ in result.unreadable[:5]) + (", …" if len(result.unreadable) > 5 else "")
        count = plural(len(result.unreadable), "file")
        warn(f"{count} could not be read (listed in unreadable.txt): {shown}")
    if json_out:
        emit_json({"output": result.output, "faces_csv": result.output / "faces.csv", "images": result.images,
                   "faces": len(result.faces), "no_face": len(result.no_face), "resumed": result.resumed,
                   "unreadable": [source for source, _ in result.unreadable], "detector": result.detector,
                   "images_per_second": result.images_per_second})
        return
    resumed = f" ({result.resumed} kept from an interrupted run)" if result.resumed else ""
    console.print(
        f"aligned {plural(len(result.faces), 'face')} from {plural(result.images, 'image')}{resumed} with "
        f"{result.detector}; "
        f"{len(result.no_face)} without a face (no_face.txt); {result.images_per_second:.1f} img/s",
        highlight=False, soft_wrap=True,
    )
    console.print(f"wrote {result.output / 'faces.csv'}", highlight=False, soft_wrap=True)


def command(
    input: Annotated[Path, typer.Argument(help="Image folder (recursive), list file or one image.",
                                          show_default=False)],
    output: Annotated[Path, typer.Argument(help="Output folder: crops mirroring INPUT, faces.csv, "
                                           "no_face.txt.", show_default=False)],
    detector: DetectorFile = None,
    landmarks: Annotated[
        Path | None,
        typer.Option("--landmarks", help="Use given landmarks instead of a detector: lines "
                     "'name x1 y1 … x5 y5' and an optional score (insightface/IJB), or a CSV like faces.csv.",
                     show_default=False),
    ] = None,
    size: Annotated[int, typer.Option(
        "--size", help="Crop side in pixels (16-1024): the five-point template scaled to it (multiples of "
        "128 follow insightface's 128 rule), e.g. 160 for FaceNet-style models.")] = 112,
    margin: Annotated[
        float | None,
        typer.Option("--margin", min=0.0, help="Loose crops instead of aligned ones: the detector box plus "
                     "this many pixels (half each side), resized to --size, as MTCNN/FaceNet pipelines cut "
                     "(e.g. --size 160 --margin 32).", show_default=False),
    ] = None,
    faces: Annotated[FacePolicy, typer.Option("--faces", help="Which faces per image: the largest, the best "
                                              "scored, or all.")] = FacePolicy.largest,
    min_size: Annotated[float, typer.Option("--min-size", min=0, help="Ignore faces whose box is smaller "
                                            "(pixels, shorter side).")] = 0.0,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", min=0.0, max=1.0, help="Detector score threshold. Default: 0.6 for "
                     "RetinaFace, 0.5 for SCRFD.", show_default=False),
    ] = None,
    max_side: Annotated[int, typer.Option("--max-side", min=32, help="Longest side of the detector input "
                                          "(larger photos are scaled down for detection only).")] = 640,
    upscale: Annotated[float, typer.Option("--upscale", help="Enlarge the detector input this many times "
                                           "(1-4) to find very small faces; costs upscale² in time.")] = 1.0,
    refine: Annotated[bool, typer.Option("--refine/--no-refine", help="Detect landmarks a second time on "
                                         "the roughly aligned face: more exact for small or tilted faces; "
                                         "one more detector run per kept face.")] = True,
    fmt: Annotated[CropFormat, typer.Option("--format", help="Crop format: png (lossless) or jpg.")] = (
        CropFormat.png
    ),
    workers: Annotated[int, typer.Option("--workers", "-j", min=1, help="Images processed in parallel "
                                         "(threads).")] = 2,
    quiet: Quiet = False,
    json_out: JsonFlag = False,
) -> None:
    """Detect faces in photos and align them to 112×112 (insightface's five-point template), or --size.

    --margin cuts loose crops (box + margin, not rotated) instead, for models trained on MTCNN-style crops.

    Writes one crop per face into OUTPUT (same sub-folders as INPUT), faces.csv (source, face, out, score,
    box, five landmarks) and no_face.txt. An interrupted run resumes where it stopped.
    """
    from fqtool.align.pipeline import AlignOptions, align_input

    options = AlignOptions(
        size=size, faces=faces.value, min_size=min_size, threshold=threshold, max_side=max_side,
        upscale=upscale, fmt=fmt.value, workers=workers, refine=refine, margin=margin,
        detector=str(detector) if detector else None, landmarks=str(landmarks) if landmarks else None,
    )
    with progress_bar("align", None, quiet=quiet) as advance:
        result = align_input(input, output, options, on_progress=advance)
    _report(result, json_out)
