"""What ``verify`` and ``erc-curve`` share: the ``--data-dir`` option and how a TARGET is embedded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from fqtool.cli.console import err_console
from fqtool.cli.progress import progress_bar
from fqtool.eval.features import FeatureSet, extract_features

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        "-d",
        help="Folder with <name>.bin sets or IJB_release (IJBB/, IJBC/); also $FQTOOL_DATA.",
        show_default=False,
    ),
]


@dataclass
class EmbedOptions:
    """How TARGETs are found, decoded and embedded."""

    weights: Path | None = None
    quality_weights: Path | None = None
    data_dir: Path | None = None
    device: str = "auto"
    batch_size: int = 64
    workers: int = 0
    quiet: bool = False


def load_model_for_eval(opts: EmbedOptions):
    """Resolve ``--weights`` / $FQTOOL_WEIGHTS and open the model on the device (eval mode)."""
    from fqtool.models.loading import load_model, resolve_weights
    from fqtool.runtime import resolve_device

    path = resolve_weights(opts.weights)
    return load_model(path, quality_weights=opts.quality_weights, device=resolve_device(opts.device)), path


def features_for_target(
    model, target: str, opts: EmbedOptions, *, flip: bool, meta: dict | None = None
) -> FeatureSet:
    """Decode and embed one TARGET with a progress bar."""
    from fqtool.eval.targets import decode_target
    from fqtool.runtime import resolve_device

    name, images, issame = decode_target(target, model.preprocess.size, opts.data_dir, opts.workers)
    total = len(images) * (2 if flip else 1)
    with progress_bar(f"embed {name}", total, quiet=opts.quiet) as advance:
        return extract_features(
            model, images, issame, name=name, flip=flip, device=resolve_device(opts.device),
            batch_size=opts.batch_size, on_batch=advance, meta=meta,
        )


def parts_folder(save: Path | None) -> Path | None:
    """Where IJB embedding chunks go while a run is in progress (resume): ``<features>.parts/``."""
    if save is None:
        return None
    name = save.name if save.name.endswith(".npz") else save.name + ".npz"
    return save.with_name(name[: -len(".npz")] + ".parts")


def ijb_features_for_target(
    model, name: str, root: Path, opts: EmbedOptions, *, flip: bool, save: Path | None, meta: dict | None
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
            model, ijb, parts=parts, device=device, batch_size=opts.batch_size, workers=opts.workers,
            flip=flip, info=meta, on_batch=lambda n: advance(n * (2 if flip else 1)),
        )
    if feats is not None and save is not None:
        written = save_ijb_features(save, feats)
        if parts is not None:
            shutil.rmtree(parts, ignore_errors=True)
        err_console.print(f"features: {written}", highlight=False, soft_wrap=True)
    return feats
