"""``fqtool make-pairs``: identity folders → an LFW-style verification set (.bin or pairs folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fqtool.cli.console import console
from fqtool.cli.options import Seed


def command(
    root: Annotated[Path, typer.Argument(help="Image folder with one sub-folder per identity.",
                                         show_default=False)],
    output: Annotated[Path, typer.Argument(help="OUT.bin (insightface's form) or a new folder (images/ + "
                                           "pairs.txt + sources.txt).", show_default=False)],
    genuine: Annotated[int, typer.Option("--genuine", min=0, help="Genuine pairs (same identity).")] = 3000,
    impostor: Annotated[
        int, typer.Option("--impostor", min=0, help="Impostor pairs (two identities).")
    ] = 3000,
    seed: Seed = 0,
) -> None:
    """Build a verification set from identity folders: distinct genuine and impostor pairs drawn with a
    seed, spread evenly over the 10 folds; use it with verify and erc-curve like lfw.bin."""
    from fqtool.data.pairs import make_pairs

    result = make_pairs(root, output, genuine=genuine, impostor=impostor, seed=seed)
    console.print(
        f"wrote {result.output}: {result.genuine} genuine + {result.impostor} impostor pairs over "
        f"{result.images} images of {result.identities} identities (seed {seed})",
        highlight=False, soft_wrap=True,
    )
