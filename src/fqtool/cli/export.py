"""``fqtool export``: weights → ONNX graph(s), checked against PyTorch in ONNX Runtime."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fqtool.cli.console import console, err_console
from fqtool.cli.jsonout import JsonFlag, emit_json
from fqtool.cli.options import Arch, ModelFile, Output, PreprocessSpec, QualityWeights, check_output_file
from fqtool.errors import FqtoolError

if TYPE_CHECKING:  # the export package imports torch, onnx and onnxruntime: only when the command runs
    from fqtool.export.parity import ParityReport


def _parity_table(report: ParityReport) -> Table:
    tol = report.tolerance
    table = Table(
        title=f"ONNX Runtime vs PyTorch ({tol.name}: cosine ≥ {tol.min_cosine}, "
        f"rel. Δquality ≤ {tol.max_quality_rel})"
    )
    for column in ("graph", "inputs", "batch", "max |Δemb|", "min cosine", "max |Δq|", "rel. Δq", ""):
        table.add_column(column, justify="right" if column not in ("graph", "inputs", "") else "left")
    for row in report.rows:
        table.add_row(
            row.graph,
            row.inputs,
            str(row.batch),
            f"{row.max_abs_diff:.2e}",
            f"{row.min_cosine:.7f}",
            f"{row.max_quality_diff:.2e}",
            f"{row.max_quality_rel:.2e}",
            "ok" if row.ok else "[red]FAIL[/]",
        )
    return table


@contextlib.contextmanager
def _status() -> Iterator[Callable[[str], None]]:
    """A spinner naming the current step on a terminal; silent elsewhere (CI logs)."""
    if not err_console.is_terminal:
        yield lambda step: None
        return
    with err_console.status("exporting…") as status:
        yield lambda step: status.update(step + "…")


def _default_output(weights: Path) -> Path:
    if weights.suffix.lower() == ".onnx":
        raise FqtoolError("is already an ONNX model", weights)
    return weights.with_suffix(".onnx")


def _input(weights: Path | None, positional: Path | None) -> Path:
    """``--weights FILE`` or FILE as the argument (an alias); both only when they agree."""
    if weights is not None and positional is not None and weights != positional:
        raise FqtoolError(f"two inputs given ({positional} and --weights {weights}); give one")
    found = weights or positional
    if found is None:
        raise FqtoolError("give the weights to export: --weights FILE (or FILE as the argument)")
    return found


def command(
    source: Annotated[
        Path | None,
        typer.Argument(
            help="Weights to export (anything `load_model` opens except .onnx); the same as --weights.",
            show_default=False,
        ),
    ] = None,
    weights: ModelFile = None,
    preprocess: PreprocessSpec = None,
    output: Output = None,
    quality_weights: QualityWeights = None,
    arch: Arch = None,
    include_preprocessing: Annotated[
        bool,
        typer.Option(
            "--include-preprocessing",
            help="Graph input: RGB uint8 NHWC at the model size; the graph does colour order and mean/std.",
        ),
    ] = False,
    fp16: Annotated[
        bool,
        typer.Option(
            "--fp16",
            help="Run the conv trunk in fp16 (inputs/outputs stay float32); looser parity tolerance.",
        ),
    ] = False,
    split: Annotated[
        bool,
        typer.Option(
            "--split",
            help="Also write EQFace-style <stem>_backbone.onnx and <stem>_quality.onnx (needs a head).",
        ),
    ] = False,
    opset: Annotated[int, typer.Option("--opset", min=18, help="ONNX opset (18 or newer).")] = 18,
    no_check: Annotated[
        bool,
        typer.Option(
            "--no-check",
            help="Skip the ONNX Runtime parity check (the ONNX checker still runs).",
        ),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Export weights to ONNX (dynamic batch; outputs `embedding` and `quality`), checked in ONNX Runtime."""
    from fqtool.runtime import require_onnxruntime

    require_onnxruntime("fqtool export")
    from fqtool.export.onnx import export_onnx
    from fqtool.export.parity import ParityError
    from fqtool.fsutil import sha256_file
    from fqtool.models.loading import load_face_model

    weights = _input(weights, source)
    output = output or _default_output(weights)
    check_output_file(output, "--output")
    model = load_face_model(
        weights, onnx_error="is already an ONNX model; nothing to export",
        quality_weights=quality_weights, arch=arch, device="cpu", preprocess=preprocess,
    )
    extra = {"quality_source_sha256": sha256_file(quality_weights)} if quality_weights else None
    try:
        with _status() as on_step:
            report = export_onnx(
                model,
                output,
                include_preprocessing=include_preprocessing,
                fp16=fp16,
                split=split,
                opset=opset,
                check=not no_check,
                source_hash=sha256_file(weights),
                extra_metadata=extra,
                on_step=on_step,
            )
    except ParityError as exc:
        if json_out:
            emit_json({"ok": False, "parity": exc.report.to_dict(), "error": str(exc)})
        else:
            console.print(_parity_table(exc.report))
        raise
    if json_out:
        emit_json({"ok": True, **report.to_dict()})
        return
    if report.parity is not None:
        console.print(_parity_table(report.parity))
    for path in report.paths:
        size = report.sizes.get(str(path), 0) / 2**20
        console.print(f"wrote {path} ({size:.1f} MiB)", highlight=False)
    console.print(
        f"input {report.metadata['input_layout']}, quality {report.metadata['quality_method']}, "
        f"{report.seconds:.1f} s",
        highlight=False,
    )
