"""``fqtool score``: label-free face image quality for a folder, a list file or a ``.rec``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from fqtool.cli.console import console, err_console, plural, warn
from fqtool.cli.jsonout import JsonFlag, emit_json
from fqtool.cli.options import (
    AlignFlag,
    Arch,
    BatchSize,
    DetectorFile,
    Device,
    Output,
    PreprocessSpec,
    QualityMethod,
    QualityWeights,
    Quiet,
    SerfiqDropout,
    SerfiqPasses,
    Weights,
    Workers,
    check_output_file,
)
from fqtool.cli.progress import progress_bar
from fqtool.errors import FqtoolError
from fqtool.quality_methods import method_help


class Format(StrEnum):
    auto = "auto"
    csv = "csv"
    path_score = "path-score"


class Sort(StrEnum):
    none = "none"
    asc = "asc"
    desc = "desc"


def _report_unreadable(bad: list[str], total: int, show: int = 5) -> None:
    if not bad:
        return
    names = ", ".join(bad[:show]) + (", …" if len(bad) > show else "")
    warn(f"{len(bad)} of {plural(total, 'image')} could not be read and were skipped: {names}")


def _report_not_finite(result, weights: Path) -> None:
    """A model with NaN weights gives NaN quality: say so instead of writing a silent CSV of NaN."""
    bad = ~np.isfinite(np.asarray(result.quality, dtype=np.float64))
    if bad.any():
        warn(f"{weights}: {int(bad.sum())} of {len(bad)} images got a NaN or infinite quality (first: "
             f"{result.names[int(np.argmax(bad))]}); the model's weights are probably broken")


def _table(result, rows: np.ndarray, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column, justify in (("#", "right"), ("path", "left"), ("quality 0-100", "right"),
                            ("quality", "right"), ("norm", "right")):
        table.add_column(column, justify=justify)
    for rank, i in enumerate(rows.tolist(), start=1):
        table.add_row(str(rank), result.names[i], f"{result.quality_100[i]:.1f}",
                      f"{result.quality[i]:.4g}", f"{result.norms[i]:.2f}")
    return table


def _check_sanity(result, model, input: Path):
    """One-line warnings on the scores (constant quality, a saturated default scale, synthetic training)."""
    from fqtool.eval.sanity import check_scores

    info = model.network.info
    report = check_scores(result.quality, result.quality_100, result.calibration, result.method,
                          trained_on_synthetic=getattr(info, "trained_on_synthetic", False), input_path=input)
    for note in report.warnings:
        warn(note)
    return report


def _print_summary(result, csv_path: Path, meaningful: bool = True) -> None:
    s = result.summary()
    cal = result.calibration
    scale = (f"mean {s['mean_quality_100']:.1f}, median {s['median_quality_100']:.1f} on 0-100 (raw mean "
             f"{s['mean_quality']:.4g}); scale [{cal.low:g}, {cal.high:g}] from {cal.source}" if meaningful
             else f"constant (raw {s['mean_quality']:.6g}; quality_100 is not meaningful)")
    console.print(
        f"scored {plural(s['images'], 'image')} ({s['unreadable']} unreadable) in {s['seconds']:.1f} s, "
        f"{s['images_per_second']:,.0f} img/s; quality ({result.method}) {scale}",
        highlight=False, soft_wrap=True,
    )
    console.print(f"wrote {csv_path}", highlight=False, soft_wrap=True)


def _write_report(result, dataset, out_dir: Path, title: str) -> Path:
    """The HTML page, with the images read back from the scored dataset by name."""
    from fqtool.eval.report import write_score_report

    index = {dataset.name(i): i for i in range(len(dataset))}

    def load(name: str) -> bytes | None:
        return dataset.load_bytes(index[name]) if name in index else None

    return write_score_report(result, out_dir, load, title=title)


def _output_file(input: Path, output: Path | None, file_format: Format) -> tuple[Path, bool]:
    """Where the scores go and whether as '<path> <quality>' lines (a .txt --output, or --format)."""
    from fqtool.eval.scoring import default_output

    path_score = file_format == Format.path_score or (
        file_format == Format.auto and output is not None and output.suffix.lower() == ".txt"
    )
    csv_path = output or default_output(input)
    if path_score and output is None:
        csv_path = csv_path.with_suffix(".txt")
    if csv_path.resolve() == input.resolve():
        raise FqtoolError("--output would overwrite the input", csv_path)
    return csv_path, path_score


def _write_outputs(result, dataset, name: str, csv_path: Path, path_score: bool, order,
                   embeddings: Path | None, plot: Path | None, report: Path | None) -> Path | None:
    """The scores file, then the optional embeddings, histogram and HTML page; returns the page."""
    from fqtool.eval.score_files import write_path_scores
    from fqtool.eval.scoring import plot_histogram, write_csv
    from fqtool.eval.scoring import save_embeddings as write_embeddings

    if path_score:
        write_path_scores([result.names[i] for i in order.tolist()], result.quality[order], csv_path)
    else:
        write_csv(result, csv_path, order)
    if embeddings is not None:
        write_embeddings(result, embeddings, order)
        err_console.print(f"wrote {embeddings}", highlight=False, soft_wrap=True)
    if plot is not None:
        plot_histogram(result, plot, title=f"{name}: {plural(len(result), 'image')}")
        err_console.print(f"wrote {plot}", highlight=False, soft_wrap=True)
    page = None
    if report is not None:
        page = _write_report(result, dataset, report, f"{name}: quality of {plural(len(result), 'image')}")
        err_console.print(f"wrote {page}", highlight=False, soft_wrap=True)
    return page


def command(
    input: Annotated[
        Path,
        typer.Argument(help="Image folder (recursive), list file, .rec, insightface folder or one image.",
                       show_default=False),
    ],
    weights: Weights = None,
    quality_weights: QualityWeights = None,
    arch: Arch = None,
    preprocess: PreprocessSpec = None,
    output: Output = None,
    save_embeddings: Annotated[
        Path | None,
        typer.Option("--save-embeddings", help="Also save raw embeddings: .npy (rows = CSV rows) or .npz "
                     "(names, embeddings, quality).", show_default=False),
    ] = None,
    method: Annotated[
        QualityMethod, typer.Option("--method", help=f"Quality: {method_help('score')}.")
    ] = QualityMethod("auto"),
    file_format: Annotated[
        Format, typer.Option("--format", help="Output: csv (path, quality, quality_100, norm, label), "
                             "path-score (CR-FIQA's '<path> <quality>' lines, read by erc-curve --scores) "
                             "or auto (path-score for a .txt --output, else csv).")
    ] = Format.auto,
    serfiq_passes: SerfiqPasses = 100,
    serfiq_dropout: SerfiqDropout = 0.5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the SER-FIQ dropout masks.")] = 0,
    sort: Annotated[
        Sort, typer.Option("--sort", help="CSV row order: none (input order), asc (worst first), desc.")
    ] = Sort.none,
    top: Annotated[int, typer.Option("--top", min=0, help="Print the N best images.")] = 0,
    bottom: Annotated[int, typer.Option("--bottom", min=0, help="Print the N worst images.")] = 0,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a histogram of the 0-100 quality (.png).",
                                  show_default=False)
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write DIR/index.html: one self-contained page with the "
                                  "summary, the histogram and the 8 lowest and highest images.",
                                  show_default=False, metavar="DIR")
    ] = None,
    batch_size: BatchSize = 256,
    workers: Workers = 4,
    device: Device = "auto",
    align: AlignFlag = False,
    detector: DetectorFile = None,
    quiet: Quiet = False,
    json_out: JsonFlag = False,
) -> None:
    """Score face image quality (0-100) for a folder, list file, .rec or one image; writes a CSV.

    CSV columns: path, quality (raw norm or head score), quality_100 (calibrated), norm, label if known.

    --format path-score writes '<path> <quality>' lines instead (CR-FIQA's form).

    Unreadable images are listed on stderr and skipped. Default output: <INPUT name>_quality.csv (.txt for
    path-score) in the current folder.
    """
    from fqtool.api import load_model
    from fqtool.eval.scoring import SerfiqOptions
    from fqtool.models.loading import resolve_weights

    weights_path = resolve_weights(weights)
    if not input.exists():
        raise FqtoolError("no such file or folder", input)
    csv_path, path_score = _output_file(input, output, file_format)
    for path, option in ((csv_path, "--output"), (save_embeddings, "--save-embeddings"), (plot, "--plot")):
        check_output_file(path, option)
    model = load_model(weights_path, quality_weights=quality_weights, device=device, arch=arch,
                       preprocess=preprocess)
    if align:  # the crops live in a temporary folder that goes with the dataset
        with progress_bar("align", None, quiet=quiet) as advance:
            dataset = model.aligned(input, detector=detector, workers=workers, on_progress=advance)
    else:
        dataset = model.open(input)
    for note in getattr(dataset, "notes", []):
        warn(note)
    with progress_bar("score", len(dataset), quiet=quiet) as advance:
        result = model.score(
            dataset, batch_size=batch_size, workers=workers, method=method.value,
            keep_embeddings=save_embeddings is not None, on_progress=advance,
            serfiq=SerfiqOptions(serfiq_passes, serfiq_dropout, seed),
        )
    _report_unreadable(result.bad, result.total)
    _report_not_finite(result, weights_path)
    if not len(result):
        raise FqtoolError("none of the images could be read", input)
    sanity = _check_sanity(result, model, input)
    page = _write_outputs(result, dataset, input.name, csv_path, path_score, result.order(sort.value),
                          save_embeddings, plot, report)
    if json_out:
        emit_json({"output": csv_path, **result.summary(), "report": page})
        return
    ranked = result.order("desc")
    if top:
        console.print(_table(result, ranked[:top], f"best {min(top, len(result))}"))
    if bottom:
        console.print(_table(result, ranked[::-1][:bottom], f"worst {min(bottom, len(result))}"))
    _print_summary(result, csv_path, sanity.meaningful)
