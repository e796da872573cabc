"""``fqtool convert-rec``: an insightface / im2rec ``.rec`` → image folder + list + verification folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fqtool.cli.console import console, plural
from fqtool.cli.jsonout import JsonFlag, emit_json
from fqtool.cli.options import ListFormat, Quiet
from fqtool.cli.progress import progress_bar


def command(
    src: Annotated[Path, typer.Argument(help="insightface folder (train.rec, train.idx, *.bin) or a .rec "
                                        "file.", show_default=False)],
    out: Annotated[Path, typer.Argument(help="Output folder (created; a rerun resumes).",
                                        show_default=False)],
    list_format: Annotated[
        ListFormat, typer.Option("--list-format", help="List file: space 'path label' (train.txt), semicolon "
                                 "'path;label' (EQFace), lst 'idx<TAB>label<TAB>path' (im2rec, train.lst).")
    ] = ListFormat.space,
    bins: Annotated[bool, typer.Option("--bins/--no-bins", help="Also unpack each SRC/*.bin into "
                                       "OUT/verification/<name>/.")] = True,
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-j", min=1, show_default=False,
                     help="Writer threads (default: the CPUs, at most 8)."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="Convert only the first N images.",
                                              show_default=False)] = None,
    quiet: Quiet = False,
    json_out: JsonFlag = False,
) -> None:
    """Unpack a RecordIO face data set into OUT/images/<class>/<key>.<ext> (original bytes, no
    re-encoding), a list file, classes.tsv and one folder per verification .bin. Interrupted runs can
    be rerun: finished images are kept, the list is written last."""
    from fqtool.data.convert import convert_rec, plan_conversion

    plan = plan_conversion(src, include_bins=bins, limit=limit)
    with progress_bar("convert-rec", plan.total, quiet=quiet) as advance:
        result = convert_rec(plan, out, list_format=list_format.value, workers=workers, on_progress=advance)
    if json_out:
        emit_json({"output": out, "images": result.num_images, "classes": result.num_classes,
                   "skipped": result.skipped, "seconds": result.seconds,
                   "images_per_second": result.images_per_second, "list": result.list_path,
                   "classes_file": result.classes_path, "verification": result.verification})
        return
    resumed = f" ({result.skipped} already present)" if result.skipped else ""
    console.print(
        f"converted {plural(result.num_images, 'image')} of "
        f"{plural(result.num_classes, 'class', 'classes')} in {result.seconds:.1f} s "
        f"({result.images_per_second:,.0f} img/s){resumed}; list {result.list_path.name}, "
        f"{result.classes_path.name}" + (f"; verification: {', '.join(result.verification)}"
                                          if result.verification else ""),
        highlight=False, soft_wrap=True,
    )
