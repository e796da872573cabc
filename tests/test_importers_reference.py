"""Importers against the peers' own key lists: names and shapes written from their published model
definitions (``tests/data/reference_keys/generate.py``), not from fqtool's models.

Each tensor of a reference file is filled with its own number (its position in the reference state dict,
plus one). After loading, every fqtool tensor must be one such constant, and reading them in fqtool's
order must give the reference positions in the reference order: every reference weight was used once,
at the place the reference's forward pass uses it (both define the modules in forward order), and none
of fqtool's tensors kept its initial value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fqtool.models.loading import load_model
from fqtool.models.preprocess import FAMILY_PREPROCESS

REFERENCE_FILE = Path(__file__).parent / "data" / "reference_keys" / "reference_keys.json"
REFERENCE = json.loads(REFERENCE_FILE.read_text(encoding="utf-8"))
#: Depth-50 files take ~10 s each to write and load on a 2-core machine: in the full (CI) run only.
SLOW = {"arcface_torch_iresnet50", "eqface_resnet50"}


def _tensors(keys: list, start: int = 0) -> dict[str, torch.Tensor]:
    state = {}
    for position, (name, shape) in enumerate(keys, start=start + 1):
        dtype = torch.int64 if name.endswith("num_batches_tracked") else torch.float32
        state[name] = torch.full(shape, position, dtype=dtype)
    return state


def _positions(state: dict[str, torch.Tensor]) -> list[int]:
    found = []
    for name, tensor in state.items():
        values = torch.unique(tensor)
        assert values.numel() == 1, f"{name} mixes reference tensors or kept its initial values"
        found.append(int(values.item()))
    return found


def _write(tmp_path: Path, entry: dict) -> tuple[Path, Path | None]:
    state = _tensors(entry["keys"])
    payload = {**entry["wrapper"], "state_dict": state} if "wrapper" in entry else state
    path = tmp_path / "backbone.pth"
    torch.save(payload, path)
    quality = None
    if "quality_keys" in entry:
        quality = tmp_path / "quality.pth"
        torch.save(_tensors(entry["quality_keys"], start=len(entry["keys"])), quality)
    return path, quality


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(REFERENCE)]
)
def test_reference_checkpoint_loads_every_weight_in_place(tmp_path: Path, name: str) -> None:
    entry = REFERENCE[name]
    path, quality = _write(tmp_path, entry)
    model = load_model(path, quality_weights=quality)

    assert (model.info.family, model.info.arch) == (entry["family"], entry["arch"])
    assert model.embedding_size == 512
    assert model.preprocess == FAMILY_PREPROCESS[entry["family"]]
    all_keys = entry["keys"] + entry.get("quality_keys", [])
    dropped = set(entry.get("dropped", []))
    expected = [n for n, (key, _shape) in enumerate(all_keys, start=1) if key not in dropped]
    got = _positions(model.backbone.state_dict())
    if model.quality_head is not None:
        got += _positions(model.quality_head.state_dict())
    assert got == expected
    keys = [k for k, _ in all_keys]
    head = "crfiqa" if any(k.endswith("qs.weight") for k in keys) else "head"
    has_head = any(k.endswith(("qs.weight", "qualtiy.0.weight")) for k in keys)
    assert model.quality_method == (head if has_head else "norm")
