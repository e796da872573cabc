"""``fqtool verify``: 1:1 verification accuracy on .bin sets (insightface or MagFace protocol) and IJB-B/C
template verification (TAR@FAR, insightface / magface / quality-weighted pooling)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fqtool.cli.console import console
from fqtool.cli.eval_options import (
    DataDir,
    EvalBatchSize,
    EvalWorkers,
    model_loader,
    progress_for,
    rich_table,
    say,
    warn_all,
)
from fqtool.cli.options import (
    AlignFlag,
    DetectorFile,
    Device,
    PreprocessSpec,
    QualityWeights,
    Quiet,
    Weights,
    check_output_file,
)


def command(
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help="Sets to evaluate: names looked up as <name>.bin in --data-dir / $FQTOOL_DATA "
            "(lfw, cfp_fp, agedb_30, …), .bin paths, or folders with a pairs file; IJBB / IJBC "
            "(in --data-dir IJB_release) or a path to an IJB set folder.",
            show_default=False,
        ),
    ] = None,
    weights: Weights = None,
    quality_weights: QualityWeights = None,
    preprocess: PreprocessSpec = None,
    data_dir: DataDir = None,
    flip: Annotated[
        bool | None,
        typer.Option(
            "--flip/--no-flip",
            help="Add the horizontally flipped image's embedding. Default: on for "
            "the insightface protocol, off for magface.",
            show_default=False,
        ),
    ] = None,
    protocol: Annotated[
        list[str] | None,
        typer.Option(
            "--protocol",
            help="insightface (squared L2 of l2norm(e+e_flip)) or magface "
            "(angular distance, train-fold mean subtracted). IJB sets: insightface, magface or quality "
            "(quality-weighted pooling), repeatable for one table. Default insightface.",
            show_default=False,
        ),
    ] = None,
    norm_score: Annotated[
        bool,
        typer.Option(
            "--norm-score",
            help="IJB: keep the feature magnitude (insightface: image features; "
            "magface: media features, MagFace's quality-aware pooling).",
        ),
    ] = False,
    detector_score: Annotated[
        bool,
        typer.Option(
            "--detector-score", help="IJB insightface/quality: weight each image by its detector score."
        ),
    ] = False,
    folds: Annotated[int, typer.Option("--folds", min=1, help="Cross-validation folds.")] = 10,
    batch_size: EvalBatchSize = None,
    device: Device = "auto",
    workers: EvalWorkers = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write a ROC plot (FILE.png + FILE.svg).", show_default=False),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the results as JSON instead of a table.")
    ] = False,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Also write the results as CSV.", show_default=False)
    ] = None,
    save_features_to: Annotated[
        Path | None,
        typer.Option(
            "--save-features",
            help="Save embeddings, norms, quality and labels (.npz); "
            "with several targets one file each, FILE_<name>.npz. IJB: an interrupted embedding "
            "resumes from FILE.parts/.",
            show_default=False,
        ),
    ] = None,
    features: Annotated[
        list[Path] | None,
        typer.Option(
            "--features", help="Evaluate saved features (.npz) instead of a model.", show_default=False
        ),
    ] = None,
    align: AlignFlag = False,
    detector: DetectorFile = None,
    quiet: Quiet = False,
) -> None:
    """Verification accuracy (10-fold, mean ± std), threshold, XNorm and TAR@FAR on .bin pair sets;
    TAR@FAR 1e-6 … 1e-1 on IJB-B / IJB-C template pairs."""
    from fqtool.api import verify
    from fqtool.eval.benchmark import VerifyOptions, check_verify, resolve_benchmarks

    check_output_file(csv_path, "--csv")
    options = VerifyOptions(list(dict.fromkeys(protocol or ["insightface"])), flip, folds, norm_score,
                            detector_score)
    benchmarks = resolve_benchmarks(targets, features, data_dir)
    outputs = tuple(o for o, v in (("--csv", csv_path), ("--plot", plot)) if v)
    check_verify(benchmarks, options, outputs)
    report = verify(
        model_loader(weights, quality_weights, device, preprocess) if targets else list(features or []),
        targets, protocols=options.protocols, flip=flip, folds=folds, norm_score=norm_score,
        detector_score=detector_score, align=align, detector=detector, data_dir=data_dir,
        batch_size=batch_size, workers=workers, save_features=save_features_to, progress=progress_for(quiet),
        notify=say,
    )
    if report is None:  # a torchrun rank other than 0: its shard is embedded and saved
        return
    warn_all(report.warnings)
    if csv_path is not None:
        report.to_csv(csv_path)
    if plot is not None:
        say("plot: " + ", ".join(str(p) for p in report.plot(plot)))
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    for table in report.tables():
        console.print(rich_table(table))
