"""The training engine in-process on synthetic data: outputs, exact resume, NaN handling, recipes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from fqtool.errors import FqtoolError
from fqtool.models.checkpoint import read_checkpoint_metadata
from fqtool.models.loading import load_model
from fqtool.train import recipes
from fqtool.train.config import resolve_config
from fqtool.train.engine import train
from fqtool.train.state import load_state

pytestmark = pytest.mark.slow  # every test here trains on the synthetic set

#: Small, deterministic CPU settings: 576 images / 16 = 36 steps per epoch.
FAST = {"arch": "iresnet_tiny", "batch_size": 16, "epochs": 2, "lr": 0.05, "workers": 0, "device": "cpu",
        "log_every": 2, "val_every": 0, "save_every": 0, "quiet": True, "calibration_images": 64}


def _run(recipe: str, data, out, **kw):
    return train(resolve_config(recipe, data=str(data), output=str(out), **{**FAST, **kw}))


def _same(a: dict, b: dict, atol: float = 1e-6) -> float:
    assert a.keys() == b.keys()
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert worst <= atol, worst
    return worst


@pytest.fixture(scope="module")
def uninterrupted(synthetic_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    result = _run("magface", synthetic_dataset, out, max_steps=6, save_every=3,
                  val=[str(synthetic_dataset / "val.bin")])
    return out, result


def test_outputs_of_a_run(uninterrupted) -> None:
    out, result = uninterrupted
    assert result.steps == 6 and result.model_path == out / "model.safetensors"
    meta = read_checkpoint_metadata(out / "model.safetensors")
    assert meta["calibration"]["source"] == "train-p1-p99"
    assert meta["calibration"]["low"] < meta["calibration"]["high"]
    assert meta["training_config"]["recipe"] == "magface"
    model = load_model(out / "model.safetensors")
    assert model.info.calibration is not None and model.quality_method == "norm"
    assert (out / "config.toml").is_file() and (out / "head.safetensors").is_file()
    assert any((out / "tb").iterdir())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss/total" in r]
    assert [r["step"] for r in steps] == [2, 4, 6]
    assert {"loss/id", "loss/g", "train/lr", "train/accuracy", "train/images_per_s"} <= set(steps[0])
    assert any("val/val/accuracy" in r for r in records)
    state = load_state(out / "state" / "last.pt")
    assert state["step"] == 6 and state["world_size"] == 1 and state["head"]["weight"].shape[0] == 24


def test_resume_continues_exactly(uninterrupted, synthetic_dataset, tmp_path) -> None:
    """3 steps, stop, resume, 3 more steps == 6 steps in one go (deterministic CPU: tolerance 1e-6)."""
    full, _ = uninterrupted
    _run("magface", synthetic_dataset, tmp_path, max_steps=3, val=[str(synthetic_dataset / "val.bin")])
    result = _run("magface", synthetic_dataset, tmp_path, max_steps=6, resume="auto")
    assert result.steps == 6
    _same(load_file(full / "model.safetensors"), load_file(tmp_path / "model.safetensors"))
    _same(load_file(full / "head.safetensors"), load_file(tmp_path / "head.safetensors"))
    momentum = [load_state(d / "state" / "last.pt")["optimizer"]["state"] for d in (full, tmp_path)]
    _same({k: v["momentum_buffer"] for k, v in momentum[0].items()},
          {k: v["momentum_buffer"] for k, v in momentum[1].items()})


def _poison_after(monkeypatch, good_steps: int, bad_steps: int | None = None) -> None:
    """Make the loss NaN after ``good_steps`` steps (for ``bad_steps`` steps, or for ever)."""
    original = recipes.magface_task
    calls = {"n": 0}

    def task(cfg, num_classes, device):
        built = original(cfg, num_classes, device)
        forward = built.forward

        def poisoned(net, images, labels):
            out, quality = forward(net, images, labels)
            calls["n"] += 1
            bad = calls["n"] > good_steps and (bad_steps is None or calls["n"] <= good_steps + bad_steps)
            if bad:
                out.loss = out.loss * float("nan")
            return out, quality

        built.forward = poisoned
        return built

    monkeypatch.setattr(recipes, "magface_task", task)


def test_nan_loss_stops_after_k_bad_steps(monkeypatch, synthetic_dataset, tmp_path) -> None:
    _poison_after(monkeypatch, good_steps=2)
    with pytest.raises(FqtoolError, match="3 consecutive steps had a NaN/inf loss") as err:
        _run("magface", synthetic_dataset, tmp_path, max_steps=20, save_every=1, max_bad_steps=3)
    assert "last good checkpoint" in str(err.value)
    state = load_state(tmp_path / "state" / "last.pt")
    assert state["step"] == 2  # the state written before the bad streak is kept
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_isolated_nan_step_is_skipped(monkeypatch, synthetic_dataset, tmp_path) -> None:
    _poison_after(monkeypatch, good_steps=1, bad_steps=1)
    result = _run("magface", synthetic_dataset, tmp_path, max_steps=3, max_bad_steps=2)
    assert result.steps == 3 and result.skipped_steps == 1
    state = load_file(tmp_path / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_eqface_stage1_and_stage3(synthetic_dataset, tmp_path) -> None:
    """Stage 1 (ArcFace + focal) runs and saves its centres; stage 3 trains with a frozen stage-2 model."""
    stage1 = _run("feature", synthetic_dataset, tmp_path / "s1", max_steps=2)
    assert load_file(tmp_path / "s1" / "head.safetensors")["weight"].shape == (24, 128)
    assert read_checkpoint_metadata(stage1.model_path)["training_config"]["focal_gamma"] == 2.0
    stage2 = _run("quality", synthetic_dataset, tmp_path / "s2", max_steps=2, weights=str(stage1.model_path))
    stage3 = _run("feature", synthetic_dataset, tmp_path / "s3", max_steps=2,
                  quality_weights=str(stage2.model_path))
    model = load_model(stage3.model_path)
    assert model.quality_head is not None and model.quality_method == "head"
    records = [json.loads(x) for x in (tmp_path / "s3" / "metrics.jsonl").read_text().splitlines()]
    assert "quality/std" in records[-1]


def test_stage3_refuses_a_crfiqa_regressor(synthetic_dataset, tmp_path) -> None:
    """EQFace stage 3 weights its loss with EQFace's head; a CR-FIQA checkpoint's regressor is not one."""
    from fqtool.errors import CheckpointError
    from fqtool.models import create_model
    from fqtool.models.checkpoint import save_checkpoint
    from fqtool.models.quality_head import RegressionHead

    model = create_model("iresnet_tiny")
    model.quality_head = RegressionHead(model.backbone, model.embedding_size)
    crfiqa = save_checkpoint(model, tmp_path / "crfiqa.safetensors")
    with pytest.raises(CheckpointError, match="has a CR-FIQA regressor, not an EQFace quality head"):
        _run("feature", synthetic_dataset, tmp_path / "s3", max_steps=1, quality_weights=str(crfiqa))


def test_cuda_only_options_are_ignored_on_cpu(synthetic_dataset, tmp_path) -> None:
    """--channels-last / --compile would crash PyTorch's CPU backward of iResNet: warned and dropped."""
    result = _run("magface", synthetic_dataset, tmp_path, max_steps=1, channels_last=True, compile=True)
    assert result.steps == 1
    saved = (tmp_path / "config.toml").read_text()
    assert "channels_last = false" in saved and "compile = false" in saved
