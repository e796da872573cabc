"""``fqtool verify``: 1:1 verification accuracy on .bin sets (insightface or MagFace protocol) and IJB-B/C
template verification (TAR@FAR, insightface / magface / quality-weighted pooling)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fqtool.cli.console import console, err_console, warn
from fqtool.cli.eval_options import DataDir, EmbedOptions, features_for_target, load_model_for_eval
from fqtool.cli.ijb_eval import IjbRun, ijb_table, report_ijb, split_features, split_targets
from fqtool.cli.options import (
    AlignFlag,
    BatchSize,
    DetectorFile,
    Device,
    PreprocessSpec,
    QualityWeights,
    Quiet,
    Weights,
    Workers,
    check_output_file,
)
from fqtool.errors import FqtoolError
from fqtool.eval.features import FeatureSet, load_features, save_features
from fqtool.eval.verification import (
    DEFAULT_FARS,
    PROTOCOLS,
    VerificationResult,
    evaluate_verification,
    far_key,
)
from fqtool.fsutil import atomic_open


def _features_path(base: Path, name: str, several: bool) -> Path:
    if not several:
        return base
    stem = base.name[: -len(".npz")] if base.name.endswith(".npz") else base.name
    return base.with_name(f"{stem}_{name}.npz")


def _collect_features(
    targets: list[str],
    features: list[Path],
    opts: EmbedOptions,
    flip: bool,
    save: Path | None,
    model_and_path=None,
    several: bool = False,
) -> list[FeatureSet]:
    if features:
        return [load_features(path) for path in features]
    if not targets:
        return []
    model, weights_path = model_and_path or load_model_for_eval(opts)
    out = []
    for target in targets:
        fs = features_for_target(model, target, opts, flip=flip, meta={"weights": weights_path.name})
        if save is not None:
            written = save_features(_features_path(save, fs.name, several or len(targets) > 1), fs)
            err_console.print(f"features: {written}", highlight=False, soft_wrap=True)
        out.append(fs)
    return out


def _table(results: list[VerificationResult], fars: tuple[float, ...]) -> Table:
    res0 = results[0]
    flip = "flip" if res0.flip else "no flip"
    table = Table(title=f"Verification ({res0.protocol} protocol, {res0.folds}-fold, {flip})")
    for column in ("target", "pairs", "accuracy %", "thr", "XNorm"):
        table.add_column(column, justify="left" if column == "target" else "right", no_wrap=True)
    for far in fars:
        table.add_column(f"TAR@{far:.0e}", justify="right", no_wrap=True)
    for res in results:
        tars = [res.tar_at_far.get(far_key(f)) for f in fars]
        table.add_row(
            res.name,
            str(res.num_pairs),
            f"{100 * res.accuracy:.2f}±{100 * res.accuracy_std:.2f}",
            f"{res.threshold:.3f}",
            "-" if res.xnorm is None else f"{res.xnorm:.3f}",
            *["-" if t is None else f"{t:.4f}" for t in tars],
        )
    return table


def _write_csv(path: Path, results: list[VerificationResult], fars: tuple[float, ...]) -> None:
    header = ["target", "protocol", "flip", "pairs", "accuracy", "accuracy_std", "threshold", "xnorm"]
    header += [f"tar_at_far_{far_key(f)}" for f in fars]
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in results:
            tars = [r.tar_at_far.get(far_key(f)) for f in fars]
            writer.writerow(
                [
                    r.name,
                    r.protocol,
                    r.flip,
                    r.num_pairs,
                    f"{r.accuracy:.6f}",
                    f"{r.accuracy_std:.6f}",
                    f"{r.threshold:.4f}",
                    "" if r.xnorm is None else f"{r.xnorm:.6f}",
                    *["" if t is None else f"{t:.6f}" for t in tars],
                ]
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
    batch_size: BatchSize = 64,
    device: Device = "auto",
    workers: Workers = 0,
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
    protocols = list(dict.fromkeys(protocol or ["insightface"]))
    check_output_file(csv_path, "--csv")
    opts = EmbedOptions(weights, quality_weights, data_dir, device, batch_size, workers, quiet)
    opts.preprocess = preprocess
    opts.align, opts.detector = align, detector
    ijb_targets, bin_targets = split_targets(list(targets or []), data_dir)
    ijb_files, bin_files = split_features(list(features or []))
    if (ijb_targets or bin_targets) and (ijb_files or bin_files):
        raise FqtoolError("give TARGETs (with --weights) or --features files, not both")
    if not (ijb_targets or bin_targets or ijb_files or bin_files):
        raise FqtoolError(
            "nothing to evaluate: give one or more TARGETs (lfw, path/to/set.bin, IJBC, …) or --features"
        )
    if (ijb_targets or ijb_files) and (bin_targets or bin_files) and (csv_path or plot):
        raise FqtoolError("--csv and --plot take either .bin sets or IJB sets; run them separately")
    if (bin_targets or bin_files) and (len(protocols) > 1 or protocols[0] not in PROTOCOLS):
        raise FqtoolError(
            f"unknown --protocol {','.join(protocols)!r} for .bin sets; use one of {' or '.join(PROTOCOLS)}"
        )
    ijb = IjbRun(protocols, flip, norm_score, detector_score) if ijb_targets or ijb_files else None
    model_and_path = load_model_for_eval(opts) if ijb_targets or bin_targets else None
    several = len(ijb_targets) + len(bin_targets) > 1
    ijb_results = []
    if ijb is not None:
        save_to = (lambda name: _features_path(save_features_to, name, several)) if save_features_to else None
        ijb_results = ijb.evaluate(ijb_targets, ijb_files, opts, save_to, model_and_path)
    if ijb_results is None:  # a torchrun rank other than 0: its shard is embedded and saved
        return
    if not (bin_targets or bin_files):
        report_ijb(ijb_results, json_out, csv_path, plot)
        return
    protocol_name = protocols[0]
    use_flip = (protocol_name == "insightface") if flip is None else flip
    sets = _collect_features(
        bin_targets, bin_files, opts, use_flip, save_features_to, model_and_path, several
    )
    results = []
    for fs in sets:
        emb, norms = fs.verification_inputs(use_flip)
        res = evaluate_verification(
            emb,
            fs.issame,
            protocol=protocol_name,
            folds=folds,
            xnorm_norms=norms,
            name=fs.name,
            flip=use_flip,
        )
        for note in res.warnings:
            warn(f"{fs.name}: {note}")
        results.append(res)
    if ijb_results and not json_out:
        console.print(ijb_table(ijb_results))
    _report(results, json_out, csv_path, plot, extra=[r.to_dict() for r in ijb_results])


def _report(
    results: list[VerificationResult],
    json_out: bool,
    csv_path: Path | None,
    plot: Path | None,
    extra: list[dict] | None = None,
) -> None:
    if csv_path is not None:
        _write_csv(csv_path, results, DEFAULT_FARS)
    if plot is not None:
        from fqtool.eval.plots import plot_roc

        written = plot_roc(results, plot)
        err_console.print("plot: " + ", ".join(str(p) for p in written), highlight=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps({"results": [r.to_dict() for r in results] + (extra or [])}, indent=2))
    else:
        console.print(_table(results, DEFAULT_FARS))
