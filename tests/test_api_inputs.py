"""The Python API refuses bad input with FqtoolError and one line, as the CLI does (issue 25 item 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import fqtool
from fqtool.errors import FqtoolError
from fqtool.models import create_model
from fqtool.models.checkpoint import save_checkpoint

IMAGE = np.zeros((112, 112, 3), np.uint8)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    weights = save_checkpoint(create_model("iresnet_tiny"), tmp_path_factory.mktemp("w") / "t.safetensors")
    return fqtool.load_model(weights, device="cpu")


@pytest.mark.parametrize("weights", [123, 1.5, ["a.safetensors"]])
def test_load_model_with_a_non_path(weights) -> None:
    with pytest.raises(FqtoolError, match="weights must be a path"):
        fqtool.load_model(weights)


@pytest.mark.parametrize("batch_size", [0, -3, 1.5, True, "8"])
def test_batch_sizes_are_checked_everywhere(model, batch_size) -> None:
    for call in (lambda: model.embed(IMAGE, batch_size=batch_size),
                 lambda: model.score(IMAGE, batch_size=batch_size),
                 lambda: model.quality(IMAGE, batch_size=batch_size)):
        with pytest.raises(FqtoolError, match="batch_size must be a positive integer"):
            call()


def test_verify_needs_a_model_and_score_needs_images(model, tmp_path: Path) -> None:
    with pytest.raises(FqtoolError, match=r"give a model from fqtool.load_model\(\.\.\.\), not a str"):
        fqtool.verify("x", "lfw")
    with pytest.raises(FqtoolError, match="no such file"):
        model.score(str(tmp_path / "garbage"))
    assert model.embed(IMAGE, batch_size=1).shape == (1, model.embedding_size)
