"""``fqtool erc-curve``: error-versus-reject (MagFace ERC) or error-versus-discard (ISO EDC) curves."""

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
    Device,
    PreprocessSpec,
    QualityWeights,
    Quiet,
    SerfiqDropout,
    SerfiqPasses,
    Weights,
)
from fqtool.quality_methods import method_help


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
            help="Quality method of the model to draw (repeatable, replaces the model's own): "
            f"{method_help('erc-curve')}. IJB sets: norm and the model's own quality.",
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
    batch_size: EvalBatchSize = None,
    device: Device = "auto",
    workers: EvalWorkers = None,
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
    from fqtool.api import erc_curve
    from fqtool.errors import FqtoolError
    from fqtool.eval.serfiq import SerfiqOptions

    if target is not None and features is not None:
        raise FqtoolError("give a TARGET (with --weights) or --features, not both")
    result = erc_curve(
        model_loader(weights, quality_weights, device, preprocess) if features is None else features, target,
        methods=list(method or []), scores=list(scores or []), model_quality=model_quality,
        quality_models=list(quality_model or []), serfiq=SerfiqOptions(serfiq_passes, serfiq_dropout, seed),
        mode=mode, fmrs=fmr, starting_fnmr=starting_fnmr, pair_quality=pair_quality, metric=metric,
        pauc_limit=pauc_limit, flip=flip, data_dir=data_dir, batch_size=batch_size, workers=workers,
        save_features=save_features_to, progress=progress_for(quiet), notify=say,
    )
    if result is None:  # a torchrun rank other than 0
        return
    warn_all(result.warnings)
    written = result.write(output)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(rich_table(result.table()))
    say("wrote " + ", ".join(str(p) for p in written))
