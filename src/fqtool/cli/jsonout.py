"""``--json``: one machine-readable schema style for every command that reports.

The style (verify's and erc-curve's): one JSON object on stdout, indented by 2, snake_case keys, plain
numbers (NaN and infinities as ``null``), paths as strings, lists for repeated things and a
``warnings`` list where the command warns. With ``--json`` nothing else goes to stdout: progress and
warnings stay on stderr, so ``fqtool CMD --json | jq`` always parses.
"""

from __future__ import annotations

import dataclasses
import json
import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON object on stdout instead of text.")
]


def plain(value: Any) -> Any:
    """``value`` as JSON types: dataclasses and mappings → objects, paths → strings, numpy → numbers,
    non-finite floats → None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = value.to_dict() if hasattr(value, "to_dict") else dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalar or 0-d array
        value = value.item() if getattr(value, "ndim", 0) == 0 else value.tolist()
        return plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(doc: dict) -> str:
    """The JSON text of ``doc`` in the shared style (no NaN: it is not JSON)."""
    return json.dumps(plain(doc), indent=2, allow_nan=False, ensure_ascii=False)


def emit_json(doc: dict) -> None:
    """Print ``doc`` on stdout in the shared style."""
    typer.echo(dumps(doc))
