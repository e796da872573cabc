"""EQFace stage 3 (``train-feature --quality-weights``): the stage-2 head must fit the new backbone."""

from __future__ import annotations

import pytest
import torch

from fqtool.errors import CheckpointError
from fqtool.models import create_model
from fqtool.models.checkpoint import save_checkpoint
from fqtool.train import recipes
from fqtool.train.config import resolve_config


def test_stage3_refuses_an_arch_the_stage2_head_cannot_take(tmp_path) -> None:
    """A tiny stage-2 model with the recipe's default iresnet100 crashed (a shape error) only after the
    whole run, when the finished model was calibrated; it is now one line before any training."""
    stage2 = save_checkpoint(create_model("iresnet_tiny", quality_head=True), tmp_path / "s2.safetensors")
    cfg = resolve_config("feature", data=str(tmp_path), output=str(tmp_path / "s3"),
                         quality_weights=str(stage2), arch="mobilefacenet", device="cpu")
    with pytest.raises(CheckpointError, match=r"takes the 3136 features of iresnet_tiny, but --arch "
                       r"mobilefacenet gives 512; train stage 3 with --arch iresnet_tiny"):
        recipes.feature_task(cfg, 4, torch.device("cpu"))
    same = resolve_config("feature", data=str(tmp_path), output=str(tmp_path / "s3"),
                          quality_weights=str(stage2), arch="iresnet_tiny", device="cpu")
    task = recipes.feature_task(same, 4, torch.device("cpu"))
    assert task.model.quality_head.qualtiy[0].in_features == task.model.backbone.feature_dim == 3136
