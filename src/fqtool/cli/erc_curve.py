"""``fqtool erc-curve``: error-versus-reject (MagFace ERC) or error-versus-discard (ISO EDC) curves."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fqtool.cli.console import console, err_console, warn
from fqtool.cli.eval_options import DataDir, EmbedOptions, features_and_images, load_model_for_eval
from fqtool.cli.ijb_eval import ijb_features_for_target, ijb_source
from fqtool.cli.options import (
    BatchSize,
    Device,
    PreprocessSpec,
    QualityWeights,
    Quiet,
    SerfiqDropout,
    SerfiqPasses,
    Weights,
    Workers,
)
from fqtool.cli.progress import progress_bar
from fqtool.errors import FqtoolError
from fqtool.eval.erc import (
    METRICS,
    MODES,
    PAIR_QUALITY,
    CurveReport,
    compute_curves,
    parse_scores_option,
)
from fqtool.eval.features import FeatureSet, load_features, save_features
from fqtool.eval.score_files import load_scores
from fqtool.fsutil import atomic_open, atomic_write_text, ensure_dir

CURVE_COLUMNS = ["method", "mode", "operating_point", "fraction", "fnmr", "threshold", "genuine", "impostor"]
SUMMARY_COLUMNS = [
    "method",
    "mode",
    "operating_point",
    "fnmr_at_0",
    "auc",
    "pauc",
    "pauc_limit",
    "pauc_corrected",
]


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise FqtoolError(f"unknown {option} {value!r}; use {', '.join(allowed)}")
    return value


def _load_set(
    target: str | None, features: Path | None, opts: EmbedOptions, save: Path | None
) -> tuple[FeatureSet, object, object]:
    """``(features, model, images)``; model and images are None with ``--features``."""
    if features is not None:
        if target is not None:
            raise FqtoolError("give a TARGET (with --weights) or --features, not both")
        return load_features(features), None, None
    if target is None:
        raise FqtoolError("nothing to evaluate: give a TARGET (lfw, path/to/set.bin, …) or --features F.npz")
    model, weights_path = load_model_for_eval(opts)
    fs, images = features_and_images(model, target, opts, flip=False, meta={"weights": weights_path.name})
    if save is not None:
        err_console.print(f"features: {save_features(save, fs)}", highlight=False, soft_wrap=True)
    return fs, model, images


def _method_qualities(fs: FeatureSet, methods: list[str], model, images, opts: EmbedOptions, serfiq) -> dict:
    """``--method`` qualities of the model on the target's images (SER-FIQ with a progress bar)."""
    from fqtool.eval.methods import NEEDS_MODEL, method_qualities

    work = len(fs.embeddings) * sum(m in NEEDS_MODEL for m in methods if m != fs.quality_method())
    with progress_bar("quality methods", work, quiet=opts.quiet or work == 0) as advance:
        return method_qualities(
            methods, fs, model=model.network if model else None, images=images,
            device=model.device if model else "cpu",
            batch_size=opts.batch_size, serfiq=serfiq, on_batch=advance,
        )


def _other_models(specs: list[str], fs: FeatureSet, images, opts: EmbedOptions) -> dict:
    """``--quality-model NAME=WEIGHTS``: each checkpoint's own quality on the target's images."""
    from fqtool.api import load_model
    from fqtool.eval.methods import own_quality, parse_quality_model

    out = {}
    for spec in specs:
        name, path = parse_quality_model(spec)
        if name in out:
            raise FqtoolError(f"two --quality-model entries are named {name!r}")
        model = load_model(Path(path), device=opts.device)
        with progress_bar(f"quality {name}", len(fs.embeddings), quiet=opts.quiet) as advance:
            out[name] = own_quality(
                model.network, images, device=model.device, batch_size=opts.batch_size, on_batch=advance
            )
    return out


def _qualities(fs: FeatureSet, scores: list[str], model_quality: bool, methods: dict | None = None) -> dict:
    qualities = {}
    if methods:
        qualities.update(methods)
    elif model_quality:
        qualities[f"model:{fs.quality_method()}"] = fs.quality
    for text in scores:
        name, path = parse_scores_option(text)
        if name in qualities:
            raise FqtoolError(f"two quality methods are named {name!r}; use NAME=FILE.csv to tell them apart")
        qualities[name] = load_scores(path, len(fs.embeddings))
    if not qualities:
        raise FqtoolError("no quality method left: drop --no-model-quality or add --scores NAME=FILE.csv")
    return qualities


def _fmt(value) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _write_outputs(report: CurveReport, out: Path, title: str) -> list[Path]:
    from fqtool.eval.plots import plot_curves

    ensure_dir(out)
    with atomic_open(out / "curves.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, CURVE_COLUMNS)
        writer.writeheader()
        for curve in report.ordered():
            writer.writerows({k: _fmt(v) for k, v in row.items()} for row in curve.rows())
    summary = report.summary()
    with atomic_open(out / "summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows({k: _fmt(v) for k, v in row.items()} for row in summary)
    doc = {
        "set": title,
        "mode": report.mode,
        "pauc_limit": report.pauc_limit,
        "summary": summary,
        "warnings": report.warnings,
    }
    atomic_write_text(out / "summary.json", json.dumps(doc, indent=2) + "\n")
    plots = plot_curves(report, out / report.mode, title=title)
    return [out / "curves.csv", out / "summary.csv", out / "summary.json", *plots]


def _table(report: CurveReport, title: str) -> Table:
    corrected = report.mode == "edc"
    table = Table(title=f"{report.mode.upper()} on {title} (pAUC up to {report.pauc_limit:g})")
    columns = ["method", "operating point", "FNMR@0", "AUC", "pAUC"] + (["pAUC − ideal"] if corrected else [])
    for column in columns:
        table.add_column(column, justify="left" if column in ("method", "operating point") else "right")
    for row in report.summary():
        cells = [row["method"], row["operating_point"], row["fnmr_at_0"], row["auc"], row["pauc"]]
        cells += [row["pauc_corrected"]] if corrected else []
        table.add_row(*[c if isinstance(c, str) else "-" if c is None else f"{c:.4f}" for c in cells])
    return table


def command(
    target: Annotated[
        str | None,
        typer.Argument(
            help="Set: a name looked up as <name>.bin in --data-dir / $FQTOOL_DATA, a .bin path, or "
            "a folder with a pairs file; IJBB / IJBC (in --data-dir IJB_release) or an IJB set folder.",
            show_default=False,
        ),
    ] = None,
    weights: Weights = None,
    quality_weights: QualityWeights = None,
    preprocess: PreprocessSpec = None,
    features: Annotated[
        Path | None,
        typer.Option("--features", help="Use saved features (.npz) instead of a model.", show_default=False),
    ] = None,
    scores: Annotated[
        list[str] | None,
        typer.Option(
            "--scores",
            help="Another quality method on the same images (higher = better): NAME=FILE, an fqtool CSV "
            "('quality' + 'index' or 'path'), CR-FIQA 'path score' lines, a MagFace feat.list (norm, "
            "lines in image order) or an OFIQ ';' CSV; paths match images by file stem = 0-based "
            "index. Repeatable.",
            show_default=False,
        ),
    ] = None,
    model_quality: Annotated[
        bool,
        typer.Option(
            "--model-quality/--no-model-quality",
            help="Include the model's own quality (norm, head or crfiqa).",
        ),
    ] = True,
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            help="Quality method of the model to draw (repeatable, replaces the model's own): norm "
            "(MagFace magnitude), head (the model's quality head), crfiqa (a CR-FIQA regressor), serfiq "
            "(SER-FIQ dropout robustness). IJB sets: norm and the model's own quality.",
            show_default=False,
        ),
    ] = None,
    quality_model: Annotated[
        list[str] | None,
        typer.Option(
            "--quality-model",
            help="Another checkpoint whose own quality (norm, head, CR-FIQA) is drawn too, on the same "
            "pairs and embeddings: NAME=WEIGHTS (repeatable; needs TARGET).",
            show_default=False,
        ),
    ] = None,
    serfiq_passes: SerfiqPasses = 100,
    serfiq_dropout: SerfiqDropout = 0.5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the SER-FIQ dropout masks.")] = 0,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="erc: MagFace ERC (threshold recomputed at each reject "
            "rate); edc: ISO/IEC 29794-1 EDC (threshold fixed once).",
        ),
    ] = "erc",
    fmr: Annotated[
        list[float] | None,
        typer.Option(
            "--fmr",
            help="Target FMR (repeatable). ERC default 1e-3; for EDC it fixes the threshold "
            "instead of --starting-fnmr.",
            show_default=False,
        ),
    ] = None,
    starting_fnmr: Annotated[
        float, typer.Option("--starting-fnmr", help="EDC: threshold giving this FNMR at 0 % discard.")
    ] = 0.05,
    pair_quality: Annotated[
        str, typer.Option("--pair-quality", help="Pair quality from the two images: min, mean or product.")
    ] = "min",
    metric: Annotated[
        str,
        typer.Option(
            "--metric", help="Pair distance: angular (arccos(cos)/pi, MagFace) or cosine (1 - cos)."
        ),
    ] = "angular",
    pauc_limit: Annotated[
        float, typer.Option("--pauc-limit", help="Partial AUC up to this reject/discard fraction.")
    ] = 0.2,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output folder. Default: <set>-<mode>.", show_default=False),
    ] = None,
    data_dir: DataDir = None,
    save_features_to: Annotated[
        Path | None, typer.Option("--save-features", help="Save the features (.npz).", show_default=False)
    ] = None,
    batch_size: BatchSize = 64,
    device: Device = "auto",
    workers: Workers = 0,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON instead of a table.")
    ] = False,
    flip: Annotated[
        bool | None,
        typer.Option(
            "--flip/--no-flip",
            help="IJB: template features from [e, e_flip] (CR-FIQA, the default).",
            show_default=False,
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """ERC / EDC curves of face image quality: FNMR vs rejected fraction, AUC and pAUC per method.

    On IJB-B / IJB-C (TARGET IJBC with --data-dir IJB_release, or IJB features) the pairs are template
    pairs, as CR-FIQA evaluates them."""
    mode = _choice(mode, MODES, "--mode")
    _choice(pair_quality, PAIR_QUALITY, "--pair-quality")
    _choice(metric, METRICS, "--metric")
    from fqtool.eval.methods import check_methods
    from fqtool.eval.serfiq import SerfiqOptions

    opts = EmbedOptions(weights, quality_weights, data_dir, device, batch_size, workers, quiet)
    opts.preprocess = preprocess
    ijb = ijb_source(target, features, data_dir)
    if ijb is not None:
        if mode != "erc" or pair_quality != "min" or metric != "angular":
            raise FqtoolError(
                "IJB sets use CR-FIQA's protocol: --mode erc, min pair quality, angular distance"
            )
        if quality_model:
            raise FqtoolError("--quality-model applies to pair sets (.bin, pairs folder), not IJB")
        run = IjbErcRun(ijb, opts, flip, save_features_to, methods=list(method or []))
        run.report(
            list(scores or []), model_quality, tuple(fmr) if fmr else None, pauc_limit, output, json_out
        )
        return
    if flip is not None:
        raise FqtoolError("--flip/--no-flip applies to IJB sets only")
    serfiq = SerfiqOptions(serfiq_passes, serfiq_dropout, seed)
    method = check_methods(method or [], have_model=features is None)
    if "serfiq" in method:
        serfiq.check()  # bad options fail before anything is embedded
    if quality_model and features is not None:
        raise FqtoolError("--quality-model needs a TARGET (the images), not --features")
    fs, model, images = _load_set(target, features, opts, save_features_to)
    methods = _method_qualities(fs, method, model, images, opts, serfiq) if method else None
    if quality_model:
        own = {f"model:{fs.quality_method()}": fs.quality} if model_quality else {}
        methods = {**(own if methods is None else methods), **_other_models(quality_model, fs, images, opts)}
    report = compute_curves(
        fs.embeddings,
        fs.issame,
        _qualities(fs, list(scores or []), model_quality, methods),
        mode=mode,
        fmrs=tuple(fmr) if fmr else None,
        starting_fnmr=starting_fnmr,
        pair_quality_rule=pair_quality,
        metric=metric,
        pauc_limit=pauc_limit,
    )
    for note in report.warnings:
        warn(note)
    written = _write_outputs(report, output or Path(f"{fs.name}-{mode}"), fs.name)
    if json_out:
        typer.echo(json.dumps({"set": fs.name, "mode": mode, "summary": report.summary()}, indent=2))
    else:
        console.print(_table(report, fs.name))
    err_console.print("wrote " + ", ".join(str(p) for p in written), highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- IJB-B / IJB-C (CR-FIQA protocol)


class IjbErcRun:
    """erc-curve on IJB template pairs: embed (or load) the set, then CR-FIQA's ERC per quality method."""

    def __init__(self, source, opts: EmbedOptions, flip: bool | None, save: Path | None,
                 methods: list[str] | None = None) -> None:
        from fqtool.eval.ijb import load_ijb_features
        from fqtool.eval.methods import held_quality

        self.flip = True if flip is None else flip
        self.methods = list(dict.fromkeys(methods or []))
        kind, value = source
        if kind == "features":
            self.features = load_ijb_features(value)
            return
        name, root = value
        model, weights_path = load_model_for_eval(opts)
        for method in self.methods:  # before the long embedding run
            held_quality(method, model.quality_method, name)
        self.features = ijb_features_for_target(
            model, name, root, opts, flip=self.flip, save=save, meta={"weights": weights_path.name}
        )

    def qualities(self, scores: list[str], model_quality: bool) -> dict:
        from fqtool.eval.ijb import load_ijb_quality_csv
        from fqtool.eval.methods import saved_qualities

        fs = self.features
        if self.methods:  # they replace the model's own quality, as on pair sets
            qualities = saved_qualities(self.methods, fs, fs.name)
        else:
            qualities = {f"model:{fs.quality_method()}": fs.quality} if model_quality else {}
        for text in scores:
            name, path = parse_scores_option(text)
            if name in qualities:
                raise FqtoolError(
                    f"two quality methods are named {name!r}; use NAME=FILE.csv to tell them apart"
                )
            qualities[name] = load_ijb_quality_csv(path, fs.images)
        if not qualities:
            raise FqtoolError("no quality method left: drop --no-model-quality or add --scores NAME=FILE.csv")
        return qualities

    def report(self, scores, model_quality, fmrs, pauc_limit, output, json_out) -> None:
        from fqtool.eval.ijb import ERC_FMRS, ijb_erc

        if self.features is None:  # a torchrun rank other than 0
            return
        fs = self.features
        report = ijb_erc(
            fs,
            self.qualities(scores, model_quality),
            fmrs=fmrs or ERC_FMRS,
            flip=self.flip,
            pauc_limit=pauc_limit,
        )
        for note in report.warnings:
            warn(note)
        written = _write_outputs(report, output or Path(f"{fs.name}-erc"), fs.name)
        if json_out:
            typer.echo(json.dumps({"set": fs.name, "mode": "erc", "summary": report.summary()}, indent=2))
        else:
            console.print(_table(report, fs.name))
        err_console.print("wrote " + ", ".join(str(p) for p in written), highlight=False, soft_wrap=True)
