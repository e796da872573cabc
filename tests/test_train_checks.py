"""Checks of training behaviour nothing else pins down (issue 18): every architecture and every loss
trains, EQFace's frozen parts stay bit-identical, the NaN guard's two branches, Partial FC sampling,
gradient clipping, the collapse warning, and the fp16 GradScaler path with its resume.

Most checks drive one :class:`Trainer` step on ``tiny_rec`` (8 ids × 2 images) and look at the weights."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.losses import HEAD_KINDS
from fqtool.models import list_models
from fqtool.train import distributed as D
from fqtool.train import engine
from fqtool.train.config import resolve_config
from fqtool.train.engine import Trainer, train
from fqtool.train.recipe_spec import RECIPES
from fqtool.train.state import load_state

STEP = {"arch": "iresnet_tiny", "batch_size": 4, "epochs": 1, "lr": 0.1, "workers": 0, "device": "cpu",
        "log_every": 1, "val_every": 0, "save_every": 0, "quiet": True, "calibration_images": 8}
CLI_FAST = ["--arch", "iresnet_tiny", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--val-every",
            "0", "--quiet", "--log-every", "1", "--epochs", "1", "--max-steps", "2"]


@contextlib.contextmanager
def _trainer(data, out, recipe: str = "magface", **settings) -> Iterator[Trainer]:
    cfg = resolve_config(recipe, data=str(data), output=str(out), **{**STEP, **settings})
    env = D.setup(cfg.device)
    trainer = Trainer(cfg, env)
    try:
        trainer.task.train_mode()
        yield trainer
    finally:
        trainer.log.close()
        D.cleanup()


def _batch(trainer: Trainer, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    items = [trainer.dataset[i] for i in range(n)]
    return torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items])


def _copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters only (a skipped step still updates BatchNorm statistics in its forward pass)."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _cli_ok(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


# ---------------------------------------------------------------------------- every architecture, every loss
def _arch_params() -> list:
    light = {"iresnet_tiny", "mobilefacenet"}
    return [pytest.param(name, marks=() if name in light else pytest.mark.slow) for name in list_models()]


@pytest.mark.parametrize("arch", _arch_params())
def test_every_registered_architecture_takes_a_training_step(tiny_rec, tmp_path, arch) -> None:
    """MobileFaceNet could not be trained at all ('dropout' / 'bn_eps' passed to its constructor)."""
    for recipe in ("magface", "feature"):  # feature sets style=eqface (BatchNorm options)
        with _trainer(tiny_rec, tmp_path / recipe, recipe, arch=arch, batch_size=2) as trainer:
            before = _copy(trainer.task.trainable)
            values, _ = trainer.train_step(*_batch(trainer, 2))
            after = trainer.task.trainable.state_dict()
            assert math.isfinite(float(values["loss/total"])) and trainer.skipped == 0
            changed = [k for k in before if not torch.equal(before[k], after[k])]
            assert len(changed) > len(before) // 2, (arch, recipe, len(changed), len(before))


def _recipe_for(kind: str) -> str:
    """The training command that trains with ``kind`` (the first recipe listing it)."""
    return next(recipe for recipe, spec in RECIPES.items() if kind in spec.losses)


@pytest.mark.slow
@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_every_loss_kind_trains_through_the_cli(tiny_rec, tmp_path, kind) -> None:
    recipe = _recipe_for(kind)
    args = ["--weights", _stage1(tiny_rec, tmp_path)] if recipe == "quality" else []
    if len(RECIPES[recipe].losses) > 1:
        args += ["--loss", kind]
    _cli_ok(f"train-{recipe}", "--data", tiny_rec, "-o", tmp_path / "run", *CLI_FAST, *args)
    meta = load_file(str(tmp_path / "run" / "head.safetensors"))
    assert meta["weight"].shape[0] == 8 and torch.isfinite(meta["weight"]).all()
    assert load_state(tmp_path / "run" / "state" / "last.pt")["config"]["loss"] == kind


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train-magface", "train-feature"])
def test_mobilefacenet_trains_through_the_cli(tiny_rec, tmp_path, command) -> None:
    _cli_ok(command, "--data", tiny_rec, "-o", tmp_path / "run", *CLI_FAST, "--arch", "mobilefacenet")
    state = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def _stage1(data, tmp_path):
    _cli_ok("train-feature", "--data", data, "-o", tmp_path / "stage1", *CLI_FAST)
    return tmp_path / "stage1" / "model.safetensors"


# ---------------------------------------------------------------------------- EQFace's frozen parts
def _part(path, prefix: str) -> dict[str, torch.Tensor]:
    tensors = {k: v for k, v in load_file(str(path)).items() if k.startswith(prefix)}
    assert tensors, (path, prefix)
    return tensors


def _bit_identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_eqface_stages_keep_their_frozen_parts_bit_identical(tiny_rec, tmp_path) -> None:
    """Stage 2 (train-quality) must not move the stage-1 backbone, BatchNorm statistics included; stage 3
    (train-feature --quality-weights) must keep the stage-2 quality head that scores its batches. Both
    through the CLI, which also checks the collapse warning (on with a huge threshold, off with 0)."""
    stage1 = _stage1(tiny_rec, tmp_path)
    loud, quiet = tmp_path / "loud.toml", tmp_path / "quiet.toml"
    loud.write_text("quality_std_warn = 1e9\n", encoding="utf-8")
    quiet.write_text("quality_std_warn = 0.0\n", encoding="utf-8")
    said = _cli_ok("train-quality", "--data", tiny_rec, "-o", tmp_path / "stage2", *CLI_FAST, "-w", stage1,
                   "--margin", "0", "-c", loud)
    assert "quality collapse?" in said
    stage2 = tmp_path / "stage2" / "model.safetensors"
    said = _cli_ok("train-feature", "--data", tiny_rec, "-o", tmp_path / "stage3", *CLI_FAST,
                   "--quality-weights", stage2, "-c", quiet)
    assert "quality collapse?" not in said
    stage3 = tmp_path / "stage3" / "model.safetensors"
    assert _bit_identical(_part(stage1, "backbone."), _part(stage2, "backbone."))
    assert _bit_identical(_part(stage2, "quality_head."), _part(stage3, "quality_head."))
    assert not _bit_identical(_part(stage1, "backbone."), _part(stage3, "backbone."))  # stage 3 trains one


# ---------------------------------------------------------------------------- the NaN guard's branches
def test_poisoned_batch_restores_batchnorm_statistics(tiny_rec, tmp_path) -> None:
    with _trainer(tiny_rec, tmp_path) as trainer:
        model = trainer.task.model
        clean = model.prepare
        trainer.train_step(*_batch(trainer, 4))  # statistics that differ from their initial values
        trainer.guard.snapshot()
        before = _copy(trainer.task.trainable)
        model.prepare = lambda images: clean(images) * math.inf  # a batch that poisons BatchNorm
        trainer.train_step(*_batch(trainer, 4))
        after = {k: v for k, v in trainer.task.trainable.state_dict().items() if "num_batches" not in k}
        assert trainer.skipped == 1 and trainer.bad_steps == 1
        before = {k: v for k, v in before.items() if "num_batches" not in k}
        assert _bit_identical(before, after)  # running stats restored, weights not stepped


@pytest.mark.parametrize("where", ["trunk", "head"])
def test_non_finite_gradient_skips_the_step(tiny_rec, tmp_path, where) -> None:
    """The loss is finite; one gradient is not: no weight, head row or momentum may move."""
    with _trainer(tiny_rec, tmp_path) as trainer:
        module = trainer.task.trainable if where == "trunk" else trainer.task.head
        param = next(p for p in module.parameters() if p.requires_grad)
        handle = param.register_hook(lambda grad: grad * math.inf)
        before = _weights(trainer.task.trainable), _weights(trainer.task.head)
        values, _ = trainer.train_step(*_batch(trainer, 4))
        handle.remove()
        assert math.isfinite(float(values["loss/total"])) and trainer.skipped == 1
        assert _bit_identical(before[0], _weights(trainer.task.trainable))
        assert _bit_identical(before[1], _weights(trainer.task.head))
        assert not trainer.optimizer.state  # no momentum buffer was created


# ---------------------------------------------------------------------------- sampling, clipping
@pytest.mark.parametrize(("rate", "rows"), [(0.5, 4), (1.0, 8)])
def test_sample_rate_updates_only_the_sampled_centres(tiny_rec, tmp_path, rate, rows) -> None:
    """8 classes, a batch of classes 0 and 1: rate 0.5 keeps 4 centres (both positives + 2 negatives)."""
    with _trainer(tiny_rec, tmp_path, sample_rate=rate, weight_decay=0.0, head_weight_decay=0.0) as trainer:
        before = trainer.task.head.weight.detach().clone()
        trainer.train_step(*_batch(trainer, 4))
        moved = (trainer.task.head.weight.detach() != before).any(dim=1).nonzero().flatten().tolist()
        assert len(moved) == rows and {0, 1} <= set(moved), moved


def _trunk_update_norm(data, out, clip: float) -> float:
    with _trainer(data, out, clip_grad=clip, weight_decay=0.0, head_weight_decay=0.0) as trainer:
        trunk = [p for p in trainer.task.trainable.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in trunk]
        trainer.train_step(*_batch(trainer, 4))
        moves = [float((p.detach() - b).pow(2).sum()) for p, b in zip(trunk, before, strict=True)]
        return math.sqrt(sum(moves))


def test_clip_grad_bounds_the_network_update(tiny_rec, tmp_path) -> None:
    """First SGD step without weight decay: the update is lr × gradient, so its norm is ≤ lr × clip (up to
    float32 rounding of ``p − lr·g``, ~1e-4 relative here)."""
    clip, lr = 1e-3, STEP["lr"]
    clipped = _trunk_update_norm(tiny_rec, tmp_path / "clipped", clip)
    free = _trunk_update_norm(tiny_rec, tmp_path / "free", 0.0)
    assert 0 < clipped <= lr * clip * 1.01, clipped
    assert free > 100 * lr * clip  # clipping really was needed for this batch


# ---------------------------------------------------------------------------- fp16: the GradScaler path
def _cpu_scaler(monkeypatch) -> None:
    """The fp16 path on the CPU: a real GradScaler on the CPU doubling its scale after every good step."""
    monkeypatch.setattr(engine, "grad_scaler",
                        lambda precision: torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1))


@pytest.mark.slow
def test_grad_scaler_state_is_saved_and_resumed(monkeypatch, tiny_rec, tmp_path) -> None:
    _cpu_scaler(monkeypatch)
    common = {"data": str(tiny_rec), "output": str(tmp_path), **STEP, "save_every": 1}
    train(resolve_config("magface", **{**common, "max_steps": 2}))
    assert load_state(tmp_path / "state" / "last.pt")["scaler"]["scale"] == 4096.0
    train(resolve_config("magface", **{**common, "max_steps": 3, "resume": "auto"}))
    assert load_state(tmp_path / "state" / "last.pt")["scaler"]["scale"] == 8192.0  # 2048 without resuming


def test_grad_scaler_skips_an_overflowing_step_not_counted_bad(monkeypatch, tiny_rec, tmp_path) -> None:
    _cpu_scaler(monkeypatch)
    with _trainer(tiny_rec, tmp_path) as trainer:
        param = next(p for p in trainer.task.trainable.parameters() if p.requires_grad)
        handle = param.register_hook(lambda grad: grad * math.inf)
        before = _weights(trainer.task.trainable)
        trainer.train_step(*_batch(trainer, 4))
        handle.remove()
        assert _bit_identical(before, _weights(trainer.task.trainable))
        assert trainer.scaler.get_scale() == 512.0 and trainer.bad_steps == 0  # the scaler backs off
        trainer.train_step(*_batch(trainer, 4))
        assert trainer.scaler.get_scale() == 1024.0
        assert not _bit_identical(before, _weights(trainer.task.trainable))


@pytest.mark.cuda
def test_fp16_on_cuda_trains_and_resumes(tiny_rec, tmp_path) -> None:
    common = {"data": str(tiny_rec), "output": str(tmp_path), **STEP, "device": "cuda", "precision": "fp16",
              "save_every": 1}
    train(resolve_config("magface", **{**common, "max_steps": 2}))
    saved = load_state(tmp_path / "state" / "last.pt")["scaler"]
    assert saved is not None and saved["scale"] > 0
    result = train(resolve_config("magface", **{**common, "max_steps": 3, "resume": "auto"}))
    assert result.steps == 3
    state = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
