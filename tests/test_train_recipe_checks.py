"""Recipe checks found by the post-merge smoke run: EQFace stage 3's head must fit the new backbone, and the
multi-GPU example configs keep their batch now that ``batch_size`` is global."""

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


@pytest.mark.parametrize(("example", "world_size", "global_batch", "per_gpu", "lr"), [
    ("magface-iresnet100-ms1mv2.toml", 8, 512, 64, 0.1),  # MagFace run.sh: 512 in all
    ("crfiqa-iresnet50-webface.toml", 4, 512, 128, 0.1),  # CR-FIQA config.py: 128 per GPU, lr 0.1 × 512/512
    ("eqface-stage1-feature.toml", 4, 512, 128, 0.05),
])
def test_multi_gpu_examples_keep_their_batch(example, world_size, global_batch, per_gpu, lr) -> None:
    """The examples were written when batch_size was per GPU; after it became global they trained the
    8-GPU MagFace recipe with a global batch of 64 (8 per GPU) and CR-FIQA at lr 0.025."""
    from pathlib import Path

    from fqtool.train.config import batch_split, effective_lr, read_toml

    path = Path(__file__).parents[1] / "examples" / example
    cfg = resolve_config(read_toml(path)["recipe"], config_file=path)
    split = batch_split(cfg, world_size)
    assert (split.global_batch, split.per_gpu) == (global_batch, per_gpu)
    assert effective_lr(cfg, world_size) == pytest.approx(lr)


@pytest.mark.parametrize("command", ["train-feature", "train-quality", "train-magface", "train-crfiqa"])
def test_training_help_shows_no_empty_default(command) -> None:
    """``--data`` has no default (TrainConfig's ``data = ""``); the help printed ``[default: ]`` for it."""
    from typer.testing import CliRunner

    from fqtool.cli.app import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    data_line = next(line for line in result.output.splitlines() if "--data" in line)
    assert "Training data" in data_line and "[default:" not in data_line
    assert "[default: ]" not in result.output
