"""``fqtool make-pairs``: identity folders → an LFW-style verification set (.bin or pairs folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fqtool.cli.console import console, plural
from fqtool.cli.jsonout import JsonFlag, emit_json
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
    json_out: JsonFlag = False,
) -> None:
    """Build a verification set from identity folders: distinct genuine and impostor pairs drawn with a
    seed, spread evenly over the 10 folds; use it with verify and erc-curve like lfw.bin."""
    from fqtool.data.pairs import make_pairs

    result = make_pairs(root, output, genuine=genuine, impostor=impostor, seed=seed)
    if json_out:
        emit_json({"output": result.output, "genuine": result.genuine, "impostor": result.impostor,
                   "images": result.images, "identities": result.identities, "seed": seed})
        return
    console.print(
        f"wrote {result.output}: {result.genuine} genuine + {result.impostor} impostor pairs over "
        f"{plural(result.images, 'image')} of {plural(result.identities, 'identity', 'identities')} "
        f"(seed {seed})",
        highlight=False, soft_wrap=True,
    )
