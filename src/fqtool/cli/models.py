"""``fqtool models``: the registered architectures and the checkpoint families fqtool can read."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from fqtool.cli.console import console
from fqtool.cli.jsonout import JsonFlag, emit_json

_FAMILY_FILES = {
    "magface": "{'epoch','arch','state_dict'}: module.features.* / features.module.* / features.*",
    "arcface_torch": "backbone.pth / model.pt: bare iResNet or mbf keys",
    "eqface": "backbone.pth (module.input_layer… IR names) + --quality-weights quality.pth",
    "crfiqa": "iResNet keys + qs.weight/qs.bias (the regressor is the quality head)",
    "fqtool": ".safetensors with metadata (backbone.*, quality_head.*)",
    "facenet": "ONNX from FaceNet-style pipelines (MTCNN crops at 160): --preprocess facenet",
}


def describe_preprocess(preprocess) -> str:
    """``RGB (x-127.5)/127.5``-style summary in pixel units (plus the size when it is not 112x112)."""
    means = {round(m * 255, 4) for m in preprocess.mean}
    stds = {round(s * 255, 4) for s in preprocess.std}
    if len(means) == 1 and len(stds) == 1:
        mean, std = means.pop(), stds.pop()
        formula = f"x/{std:g}" if mean == 0 else f"(x-{mean:g})/{std:g}"
    else:
        formula = f"(x-{list(preprocess.mean)}*255)/({list(preprocess.std)}*255)"
    size = "" if tuple(preprocess.size) == (112, 112) else f" {preprocess.size[0]}x{preprocess.size[1]}"
    margin = getattr(preprocess, "margin", None)
    crop = f", loose crops +{margin:g}px" if margin is not None else ""
    return f"{preprocess.color} {formula}{size}{crop}"


def _params(name: str) -> tuple[str, str]:
    """Parameter count and embedding size, built on the meta device (no memory, no time)."""
    import torch

    from fqtool.models import create_model

    try:
        with torch.device("meta"):
            model = create_model(name)
    except Exception:  # an entry that cannot be built without arguments
        return "-", "-"
    count = sum(p.numel() for p in model.backbone.parameters())
    return f"{count / 1e6:.2f} M", str(model.embedding_size)


def _models_doc(pattern: str, families: bool) -> dict:
    from fqtool.models.registry import aliases_of, get_spec, list_models

    rows = []
    for name in list_models(pattern):
        spec = get_spec(name)
        params, emb = _params(name)
        rows.append({"name": name, "aliases": aliases_of(name), "params": params,
                     "embedding_size": int(emb) if emb.isdigit() else None,
                     "input": describe_preprocess(spec.preprocess), "description": spec.description})
    from fqtool.models.preprocess import FAMILY_PREPROCESS, PRESET_ALIASES

    presets = []
    for name, preprocess in FAMILY_PREPROCESS.items():
        entry = {"preset": name, "aliases": [a for a, t in PRESET_ALIASES.items() if t == name],
                 "input": describe_preprocess(preprocess)}
        presets.append({**entry, "reads": _FAMILY_FILES.get(name, "")} if families else entry)
    return {"architectures": rows, "presets": presets}


def command(
    pattern: Annotated[str, typer.Argument(help="Shell-style filter, e.g. 'iresnet*'.")] = "*",
    families: Annotated[
        bool, typer.Option("--families", help="Also say which files each family reads.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """List the registered architectures (input preprocessing, parameters, embedding size, description) and
    the --preprocess presets."""
    from fqtool.models.registry import aliases_of, get_spec, list_models

    if json_out:
        emit_json(_models_doc(pattern, families))
        return
    table = Table(title="architectures (--arch of train-*, score, export, convert-weights; aliases are "
                  "arcface_torch's names)", title_justify="left")
    for column in ("name", "alias", "params", "emb", "input", "description"):
        table.add_column(column, justify="right" if column in ("params", "emb") else "left", overflow="fold")
    for name in list_models(pattern):
        spec = get_spec(name)
        params, emb = _params(name)
        table.add_row(name, " ".join(aliases_of(name)), params, emb, describe_preprocess(spec.preprocess),
                      spec.description)
    console.print(table)
    console.print(_presets_table(families))


def _presets_table(families: bool) -> Table:
    """The ``--preprocess`` presets (the one family table); with ``families`` also what each file holds."""
    from fqtool.models.preprocess import FAMILY_PREPROCESS, PRESET_ALIASES

    title = "--preprocess presets" + (" and the checkpoint families detected from keys" if families else
                                      " (--families: which files each family reads)")
    table = Table(title=title, title_justify="left")
    for column in ("preset", "alias", "input", *(("reads",) if families else ())):
        table.add_column(column, overflow="fold")
    for name, preprocess in FAMILY_PREPROCESS.items():
        aliases = " ".join(a for a, target in PRESET_ALIASES.items() if target == name)
        reads = (_FAMILY_FILES.get(name, ""),) if families else ()
        table.add_row(name, aliases, describe_preprocess(preprocess), *reads)
    return table
