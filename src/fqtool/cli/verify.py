"""``fqtool verify``: 1:1 verification accuracy on .bin sets (insightface or MagFace protocol) and IJB-B/C
template verification (TAR@FAR, insightface / magface / quality-weighted pooling)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fqtool.cli.console import console, err_console
from fqtool.cli.eval_options import (
    DataDir,
    EmbedOptions,
    features_for_target,
    ijb_features_for_target,
    load_model_for_eval,
)
from fqtool.cli.options import BatchSize, Device, QualityWeights, Quiet, Weights, Workers
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

IJB_PROTOCOLS = ("insightface", "magface", "quality")


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
    quiet: Quiet = False,
) -> None:
    """Verification accuracy (10-fold, mean ± std), threshold, XNorm and TAR@FAR on .bin pair sets;
    TAR@FAR 1e-6 … 1e-1 on IJB-B / IJB-C template pairs."""
    protocols = list(dict.fromkeys(protocol or ["insightface"]))
    opts = EmbedOptions(weights, quality_weights, data_dir, device, batch_size, workers, quiet)
    ijb_targets, bin_targets = _split_targets(list(targets or []), data_dir)
    ijb_files, bin_files = _split_features(list(features or []))
    if (ijb_targets or bin_targets) and (ijb_files or bin_files):
        raise FqtoolError("give TARGETs (with --weights) or --features files, not both")
    if not (ijb_targets or bin_targets or ijb_files or bin_files):
        raise FqtoolError(
            "nothing to evaluate: give one or more TARGETs (lfw, path/to/set.bin, IJBC, …) or --features"
        )
    if (ijb_targets or ijb_files) and (bin_targets or bin_files) and (csv_path or plot):
        raise FqtoolError("--csv and --plot take either .bin sets or IJB sets; run them separately")
    model_and_path = load_model_for_eval(opts) if ijb_targets or bin_targets else None
    several = len(ijb_targets) + len(bin_targets) > 1
    ijb_results = []
    if ijb_targets or ijb_files:
        ijb = IjbRun(protocols, flip, norm_score, detector_score)
        ijb_results = ijb.evaluate(ijb_targets, ijb_files, opts, save_features_to, model_and_path, several)
    if ijb_results is None:  # a torchrun rank other than 0: its shard is embedded and saved
        return
    if not (bin_targets or bin_files):
        _report_ijb(ijb_results, json_out, csv_path, plot)
        return
    if len(protocols) > 1 or protocols[0] not in PROTOCOLS:
        raise FqtoolError(
            f"unknown --protocol {','.join(protocols)!r} for .bin sets; use one of {' or '.join(PROTOCOLS)}"
        )
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
            err_console.print(f"warning: {fs.name}: {note}", highlight=False, soft_wrap=True)
        results.append(res)
    if ijb_results and not json_out:
        console.print(_ijb_table(ijb_results))
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


# --------------------------------------------------------------------------- IJB-B / IJB-C


def _split_targets(targets: list[str], data_dir: Path | None) -> tuple[list[tuple[str, Path]], list[str]]:
    """IJB sets (``IJBC``, a path to ``…/IJBC``) apart from ``.bin`` sets."""
    from fqtool.eval.targets import resolve_ijb

    ijb, other = [], []
    for target in targets:
        found = resolve_ijb(target, data_dir)
        if found is None:
            other.append(target)
        else:
            ijb.append(found)
    return ijb, other


def _split_features(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    from fqtool.eval.ijb import is_ijb_features

    ijb = [p for p in paths if is_ijb_features(p)]
    return ijb, [p for p in paths if p not in ijb]


class IjbRun:
    """Embeds IJB targets (or loads their features) and evaluates every --protocol on each."""

    def __init__(self, protocols: list[str], flip: bool | None, norm_score: bool, detector_score: bool):
        for name in protocols:
            if name not in IJB_PROTOCOLS:
                raise FqtoolError(f"unknown --protocol {name!r}; use {', '.join(IJB_PROTOCOLS)}")
        self.protocols, self.flip = protocols, flip
        self.norm_score, self.detector_score = norm_score, detector_score

    def pooling(self, protocol: str):
        from fqtool.eval.ijb import Pooling

        flip = (protocol != "magface") if self.flip is None else self.flip
        return Pooling(protocol, flip, self.norm_score, self.detector_score)

    def evaluate(self, targets, files, opts: EmbedOptions, save: Path | None, model_and_path, several: bool):
        """IJB results for every set × protocol; None on torchrun ranks other than 0."""
        from fqtool.eval.ijb import evaluate_ijb, load_ijb_features

        flip = any(self.pooling(p).flip for p in self.protocols)
        sets = [
            (feats, str(feats.meta.get("weights") or path.name))
            for path in files
            for feats in [load_ijb_features(path)]
        ]
        for name, root in targets:
            model, weights_path = model_and_path
            out = _features_path(save, name, several) if save is not None else None
            feats = ijb_features_for_target(
                model, name, root, opts, flip=flip, save=out, meta={"weights": weights_path.name}
            )
            if feats is None:
                return None
            sets.append((feats, weights_path.name))
        results, notes = [], []
        for feats, model_name in sets:
            for protocol in self.protocols:
                res = evaluate_ijb(feats, self.pooling(protocol), model=model_name)
                notes += [f"{feats.name}: {note}" for note in res.warnings]
                results.append(res)
        for note in dict.fromkeys(notes):
            err_console.print(f"warning: {note}", highlight=False, soft_wrap=True)
        return results


def _ijb_table(results) -> Table:
    """TAR (%) at each FAR; pooling flags: F flip, N norm score, D detector score."""
    from fqtool.eval.ijb import IJB_FARS

    several_models = len({r.model for r in results}) > 1
    from rich import box

    table = Table(
        title="IJB 1:1 verification, TAR (%) @ FAR",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
    )
    fars = [f"{f:.0e}" for f in IJB_FARS]
    columns = ["set", *(["model"] if several_models else []), "pooling", *fars, "AUC"]
    for column in columns:
        left = column in ("set", "model", "pooling")
        table.add_column(column, justify="left" if left else "right", no_wrap=column != "model")
    for r in results:
        tars = [f"{100 * r.tar_at_far[far_key(f)]:.2f}" for f in IJB_FARS]
        model = [Path(r.model).stem] if several_models else []
        table.add_row(r.name, *model, r.pooling.short(), *tars, f"{100 * r.auc:.2f}")
    return table


def _write_ijb_csv(path: Path, results) -> None:
    from fqtool.eval.ijb import IJB_FARS

    header = [
        "set",
        "model",
        "protocol",
        "flip",
        "norm_score",
        "detector_score",
        "pairs",
        "genuine",
        "impostor",
        "templates",
        "images",
        "auc",
    ]
    header += [f"tar_at_far_{far_key(f)}" for f in IJB_FARS] + [f"far_used_{far_key(f)}" for f in IJB_FARS]
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in results:
            p = r.pooling
            writer.writerow(
                [
                    r.name,
                    r.model,
                    p.protocol,
                    p.flip,
                    p.norm_score,
                    p.detector_score,
                    r.num_pairs,
                    r.num_genuine,
                    r.num_impostor,
                    r.num_templates,
                    r.num_images,
                    f"{r.auc:.6f}",
                ]
                + [f"{r.tar_at_far[far_key(f)]:.6f}" for f in IJB_FARS]
                + [f"{r.far_used[far_key(f)]:.3e}" for f in IJB_FARS]
            )


def _report_ijb(results, json_out: bool, csv_path: Path | None, plot: Path | None) -> None:
    if csv_path is not None:
        _write_ijb_csv(csv_path, results)
    if plot is not None:
        from fqtool.eval.plots import plot_ijb_roc

        written = plot_ijb_roc(results, plot)
        err_console.print("plot: " + ", ".join(str(p) for p in written), highlight=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps({"results": [r.to_dict() for r in results]}, indent=2))
    else:
        console.print(_ijb_table(results))
