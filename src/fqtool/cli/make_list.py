"""``fqtool make-list``: a list file (+ classes.tsv) for a folder of identity sub-folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fqtool.cli.console import console, plural, warn
from fqtool.cli.jsonout import JsonFlag, emit_json
from fqtool.cli.options import ListFormat, Output, Quiet, check_output_file
from fqtool.cli.progress import progress_bar


def command(
    root: Annotated[Path, typer.Argument(help="Image folder: one sub-folder per identity (or a flat folder "
                                         "of images, labelled -1).", show_default=False)],
    output: Output = None,
    fmt: Annotated[
        ListFormat, typer.Option("--format", help="space 'path label', semicolon 'path;label' (EQFace), "
                                 "lst 'idx<TAB>label<TAB>path' (im2rec).")
    ] = ListFormat.space,
    min_images: Annotated[int, typer.Option("--min-images", min=1, help="Leave out identities with fewer "
                                            "images (labels stay contiguous).")] = 1,
    relative: Annotated[bool, typer.Option("--relative/--absolute", help="Paths relative to the list's "
                                           "folder, or absolute.")] = True,
    check: Annotated[bool, typer.Option("--check", help="Decode every image; leave out and report "
                                        "unreadable ones.")] = False,
    quiet: Quiet = False,
    json_out: JsonFlag = False,
) -> None:
    """Write a list file for an image folder: sorted identity folders get labels 0..C-1, files are
    listed in sorted order. Default output ROOT/train.txt (train.lst for --format lst), with
    classes.tsv (label, folder) beside it."""
    from fqtool.data.lists import make_list

    check_output_file(output, "--output")
    if check:
        with progress_bar("check", None, quiet=quiet) as advance:
            result = make_list(root, fmt=fmt.value, min_images=min_images, absolute=not relative, check=True,
                               output=output, on_progress=advance)
    else:
        result = make_list(root, fmt=fmt.value, min_images=min_images, absolute=not relative, output=output)
    for note in result.notes:
        warn(note)
    if result.bad_images:
        shown = ", ".join(result.bad_images[:5]) + (", …" if len(result.bad_images) > 5 else "")
        warn(f"left out {plural(len(result.bad_images), 'unreadable image')}: {shown}")
    if json_out:
        emit_json({"list": result.list_path, "classes": result.classes_path, "images": result.num_images,
                   "identities": result.num_classes, "skipped_identities": result.skipped_classes,
                   "unreadable": result.bad_images, "warnings": result.notes})
        return
    skipped = (f"; left out {result.skipped_classes} identities with < {min_images} images"
               if result.skipped_classes else "")
    classes = f" and {result.classes_path}" if result.classes_path else ""
    console.print(f"listed {plural(result.num_images, 'image')} of "
                  f"{plural(result.num_classes, 'identity', 'identities')}{skipped}; "
                  f"wrote {result.list_path}{classes}", highlight=False, soft_wrap=True)
