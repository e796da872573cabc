"""What ``verify`` and ``erc-curve`` need for IJB-B / IJB-C: recognising IJB inputs, embedding a set
(streamed, sharded under torchrun, resumable), evaluating the pooling protocols and printing/writing
the TAR@FAR table. The computations are :mod:`fqtool.eval.ijb`'s and :mod:`fqtool.eval.ijb_embed`'s."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from fqtool.cli.console import console, err_console, warn
from fqtool.cli.eval_options import EmbedOptions
from fqtool.cli.progress import progress_bar
from fqtool.errors import FqtoolError
from fqtool.eval.verification import far_key
from fqtool.fsutil import atomic_open

if TYPE_CHECKING:
    from fqtool.api import QualityModel

IJB_PROTOCOLS = ("insightface", "magface", "quality")


def parts_folder(save: Path | None) -> Path | None:
    """Where IJB embedding chunks go while a run is in progress (resume): ``<features>.parts/``."""
    if save is None:
        return None
    name = save.name if save.name.endswith(".npz") else save.name + ".npz"
    return save.with_name(name[: -len(".npz")] + ".parts")


def ijb_features_for_target(
    model: QualityModel, name: str, root: Path, opts: EmbedOptions, *, flip: bool, save: Path | None,
    meta: dict | None,
):
    """Read an IJB set's meta files and embed its loose crops (streamed, resumable when ``save`` is given).

    Returns the features on rank 0 (saved to ``save`` when given, the parts folder then removed) and None
    on the other torchrun ranks.
    """
    import shutil

    from fqtool.data.ijb import load_ijb
    from fqtool.eval.ijb import save_ijb_features
    from fqtool.eval.ijb_embed import dist_env, embed_ijb
    from fqtool.runtime import resolve_device

    ijb = load_ijb(root, name)
    rank, world, local_rank = dist_env()
    device = resolve_device(opts.device)
    if world > 1 and device.type == "cuda":
        device = resolve_device(f"cuda:{local_rank}")
    parts = parts_folder(save)
    total = len(ijb.images) * (2 if flip else 1)
    shard = f" (rank {rank}/{world})" if world > 1 else ""
    with progress_bar(f"embed {name}{shard}", -(-total // world), quiet=opts.quiet or rank != 0) as advance:
        feats = embed_ijb(
            model.network,  # the Python API's model (load_model_for_eval); IJB streams its own batches
            ijb,
            parts=parts,
            device=device,
            batch_size=opts.batch_size,
            workers=opts.workers,
            flip=flip,
            info=meta,
            on_batch=lambda n: advance(n * (2 if flip else 1)),
        )
    if feats is not None and save is not None:
        written = save_ijb_features(save, feats)
        if parts is not None:
            shutil.rmtree(parts, ignore_errors=True)
        err_console.print(f"features: {written}", highlight=False, soft_wrap=True)
    return feats


def ijb_source(target: str | None, features: Path | None, data_dir: Path | None):
    """``("features", path)``, ``("set", (name, folder))`` for an IJB input, else None."""
    from fqtool.eval.ijb import is_ijb_features
    from fqtool.eval.targets import resolve_ijb

    if features is not None:
        if target is not None:
            raise FqtoolError("give a TARGET (with --weights) or --features, not both")
        return ("features", features) if is_ijb_features(features) else None
    if target is None:
        return None
    found = resolve_ijb(target, data_dir)
    return None if found is None else ("set", found)


def split_targets(targets: list[str], data_dir: Path | None) -> tuple[list[tuple[str, Path]], list[str]]:
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


def split_features(paths: list[Path]) -> tuple[list[Path], list[Path]]:
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

    def evaluate(
        self, targets, files, opts: EmbedOptions, save_to: Callable[[str], Path] | None, model_and_path
    ):
        """IJB results for every set × protocol; None on torchrun ranks other than 0.

        ``save_to(set name)``: where to save each embedded set's features (None: not saved).
        """
        from fqtool.eval.ijb import evaluate_ijb, load_ijb_features

        flip = any(self.pooling(p).flip for p in self.protocols)
        sets = [
            (feats, str(feats.meta.get("weights") or path.name))
            for path in files
            for feats in [load_ijb_features(path)]
        ]
        for name, root in targets:
            model, weights_path = model_and_path
            out = save_to(name) if save_to is not None else None
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
            warn(note)
        return results


def ijb_table(results) -> Table:
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


def write_ijb_csv(path: Path, results) -> None:
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


def report_ijb(results, json_out: bool, csv_path: Path | None, plot: Path | None) -> None:
    if csv_path is not None:
        write_ijb_csv(csv_path, results)
    if plot is not None:
        from fqtool.eval.plots import plot_ijb_roc

        written = plot_ijb_roc(results, plot)
        err_console.print("plot: " + ", ".join(str(p) for p in written), highlight=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps({"results": [r.to_dict() for r in results]}, indent=2))
    else:
        console.print(ijb_table(results))
