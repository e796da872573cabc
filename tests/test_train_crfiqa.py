"""``fqtool train-crfiqa`` end to end on a tiny set, and CR-FIQA learning quality on synthetic faces."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.models.checkpoint import read_checkpoint_metadata
from fqtool.models.loading import load_model

FACES = Path(__file__).parent / "data" / "faces"
runner = CliRunner()


@pytest.mark.slow
def test_train_crfiqa_cli_end_to_end(make_insightface_rec, tmp_path: Path) -> None:
    data = make_insightface_rec(tmp_path / "data", classes=4, per_class=4)
    out = tmp_path / "run"
    args = ["train-crfiqa", "--data", str(data), "--arch", "iresnet_tiny", "--epochs", "2", "-b", "8",
            "--lr", "0.05", "--lr-batch", "0", "--workers", "0", "--device", "cpu", "--output", str(out),
            "--val-every", "0", "--save-every", "0", "--log-every", "1", "--quiet", "--cr-target", "paper"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output

    meta = read_checkpoint_metadata(out / "model.safetensors")
    assert (meta["family"], meta["quality_method"], meta["has_quality_head"]) == ("crfiqa", "crfiqa", True)
    assert meta["training_config"]["recipe"] == "crfiqa" and meta["training_config"]["cr_target"] == "paper"
    assert meta["calibration"]["source"] == "train-p1-p99" and meta["calibration"]["method"] == "crfiqa"
    model = load_model(out / "model.safetensors")
    assert type(model.quality_head).__name__ == "RegressionHead"
    assert set(model.quality_head.state_dict()) == {"qs.weight", "qs.bias"}

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = {key for record in records for key in record}
    assert {"loss/quality", "crfiqa/ccs", "crfiqa/nnccs", "crfiqa/cr", "quality/std"} <= logged
    assert all(-1.0 <= r["crfiqa/ccs"] <= 1.0 for r in records if "crfiqa/ccs" in r)

    # `score` uses the regressor: its CSV holds qs, not the embedding norm
    scores = tmp_path / "scores.csv"
    result = runner.invoke(app, ["score", str(FACES), "-w", str(out / "model.safetensors"), "-o", str(scores),
                                 "-j", "0", "--method", "crfiqa"])
    assert result.exit_code == 0, result.output
    assert "quality (crfiqa)" in result.output and "from train-p1-p99" in result.output
    with open(scores, newline="", encoding="utf-8") as handle:
        rows = {row["path"]: float(row["quality"]) for row in csv.DictReader(handle)}
    name = sorted(rows)[0]
    from PIL import Image

    image = torch.as_tensor(np.array(Image.open(FACES / name).convert("RGB"))).permute(2, 0, 1)[None]
    model.eval()
    with torch.no_grad():
        embedding, quality = model(model.prepare(image))
    assert rows[name] == pytest.approx(float(quality[0]), rel=1e-4, abs=1e-5)
    assert rows[name] != pytest.approx(float(embedding.norm()), rel=1e-3)


def test_bad_crfiqa_settings_are_one_line(make_insightface_rec, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train-crfiqa", "--data", str(tmp_path), "--cr-target", "both"])
    assert result.exit_code == 2
    assert "--cr-target must be one of code, paper" in result.output
    data = make_insightface_rec(tmp_path / "data")
    result = runner.invoke(app, ["train-crfiqa", "--data", str(data), "--arch", "mbf", "--device", "cpu",
                                 "--workers", "0", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "CR-FIQA trains iResNet backbones" in result.output


@pytest.mark.slow
def test_crfiqa_quality_tracks_degradation(synthetic_dataset, tmp_path: Path) -> None:
    """The regressor learns the certainty ratio: degraded held-out faces get lower qs.

    Measured Spearman(qs, degradation level) over the 400 val images: −0.35, −0.51, −0.49 for seeds 0, 1, 2
    (an untrained model has no correlation); the bound −0.2 leaves a margin of 0.15 to the worst seed.
    """
    from scipy.stats import spearmanr

    from fqtool.data.binfile import decode_pairs, load_bin
    from fqtool.eval.embed import embed_images
    from fqtool.train.config import resolve_config
    from fqtool.train.engine import train

    cfg = resolve_config("crfiqa", data=str(synthetic_dataset), output=str(tmp_path), **TINY_CRFIQA)
    model = load_model(train(cfg).model_path)
    vset = load_bin(synthetic_dataset / "val.bin")
    images = torch.as_tensor(decode_pairs(vset, (112, 112)))
    with open(synthetic_dataset / "val_quality.csv", newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: int(r["index"]))
    levels = np.array([float(r["level"]) for r in rows])
    quality = embed_images(model, images).quality
    assert quality.std() > 0.01  # no collapse
    rho, p = spearmanr(quality, levels)
    assert rho < RHO_MAX and p < 1e-3, (rho, p)


#: iresnet_tiny on the session's synthetic set (24 ids × 24 images), CPU, deterministic.
TINY_CRFIQA = {"arch": "iresnet_tiny", "batch_size": 64, "epochs": 8, "lr": 0.1, "lr_batch": 0,
               "lr_steps": [4, 6], "workers": 0, "device": "cpu", "val_every": 0, "save_every": 0,
               "log_every": 9, "quiet": True, "calibration_images": 256}
RHO_MAX = -0.2
