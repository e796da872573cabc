"""``fqtool synth``: write a synthetic face data set (insightface layout) with ground-truth degradations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fqtool.cli.console import console
from fqtool.cli.options import Quiet, Seed
from fqtool.cli.progress import progress_bar


def command(
    out: Annotated[Path, typer.Argument(help="Output folder (created).", show_default=False)],
    identities: Annotated[int, typer.Option("--identities", min=1, help="Training identities.")] = 24,
    images_per_identity: Annotated[
        int, typer.Option("--images-per-identity", min=1, help="Training images per identity.")
    ] = 24,
    val_identities: Annotated[
        int, typer.Option("--val-identities", min=2, help="Held-out identities for val.bin.")
    ] = 10,
    val_pairs: Annotated[int, typer.Option("--val-pairs", min=0, help="Pairs in val.bin (0: none).")] = 200,
    degraded_fraction: Annotated[
        float, typer.Option("--degraded-fraction", min=0.0, max=1.0,
                            help="Share of images degraded at a level drawn uniformly in (0, 1].")
    ] = 0.5,
    jitter: Annotated[
        float, typer.Option("--jitter", min=0.0, max=2.0,
                            help="Scale of the per-image pose, expression and lighting variation.")
    ] = 1.0,
    seed: Seed = 0,
    image_format: Annotated[
        str, typer.Option("--format", help="Image encoding: jpg (quality 95) or png.")
    ] = "jpg",
    folder: Annotated[
        bool, typer.Option("--folder", help="Also write OUT/images/<class>/<n>.<ext>.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Generate synthetic aligned faces: OUT/train.rec + train.idx + property (insightface layout),
    OUT/val.bin (held-out identities), degradations.csv and val_quality.csv (ground-truth levels) and
    synth.json. The same seed gives byte-identical files."""
    from fqtool.data.synth import SynthConfig, write_synthetic_dataset

    cfg = SynthConfig(
        num_identities=identities, images_per_identity=images_per_identity, val_identities=val_identities,
        val_pairs=val_pairs, degraded_fraction=degraded_fraction, seed=seed, image_format=image_format,
        write_folder=folder, jitter=jitter,
    )
    with progress_bar("synth", cfg.total_images, quiet=quiet) as advance:
        result = write_synthetic_dataset(out, cfg, on_progress=advance)
    val = (f"; val.bin: {val_pairs} pairs of {val_identities} held-out identities "
           f"({result.degraded_val} of {result.num_val_images} images degraded)" if val_pairs else "")
    console.print(
        f"wrote {result.num_train_images} training images of {identities} identities "
        f"({result.degraded_train} degraded){val} to {out}; files: {', '.join(result.files)}",
        highlight=False, soft_wrap=True,
    )
