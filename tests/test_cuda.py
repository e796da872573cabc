"""The CUDA tier (issue 22): what only a GPU can show, in one file, run by ``benchmarks/gpu_check.py``.

Every test is marked ``cuda`` (skipped, with the reason, where torch.cuda.is_available() is false) or is
parametrised over ``cpu`` and a ``cuda`` variant: the CPU variant runs the same code on the CPU in the
ordinary suite, so the test's own logic is known to work before a GPU ever runs it.

Tolerances: one training step from the same weights and batch in another precision (or on the GPU, with
cuDNN's TF32 convolutions) gives the same loss within a few 1e-3 and the same update direction (cosine
≥ 0.99); embeddings on another device agree to cosine ≥ 0.999 (the issue's threshold).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fqtool.train import distributed as D
from fqtool.train import engine
from fqtool.train.config import resolve_config
from fqtool.train.engine import Trainer, train
from fqtool.train.state import load_state

CUDA = pytest.param("cuda", marks=pytest.mark.cuda, id="cuda")
CPU = pytest.param("cpu", id="cpu")
STEP = {"arch": "iresnet_tiny", "batch_size": 8, "epochs": 1, "lr": 0.1, "workers": 0, "log_every": 1,
        "val_every": 0, "save_every": 0, "quiet": True, "calibration_images": 8}


@contextlib.contextmanager
def _trainer(data, out, device: str, **settings) -> Iterator[Trainer]:
    cfg = resolve_config("magface", data=str(data), output=str(out), device=device, **{**STEP, **settings})
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
    images = torch.stack([image for image, _ in items]).to(trainer.env.device)
    return images, torch.tensor([label for _, label in items]).to(trainer.env.device)


def _params(trainer: Trainer) -> torch.Tensor:
    """The backbone's and the head's parameters as one fp32 CPU vector."""
    tensors = [*trainer.task.trainable.parameters(), *trainer.task.head.parameters()]
    return torch.cat([t.detach().float().cpu().reshape(-1) for t in tensors])


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double().reshape(1, -1), b.double().reshape(1, -1)))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _step_until_applied(trainer: Trainer, images, labels, start: torch.Tensor, tries: int = 12) -> dict:
    """Train steps until one changes the weights: an fp16 GradScaler starts at 65,536 and skips the steps
    whose scaled gradients overflow (each halves the scale); skipped steps leave the parameters and the
    momentum as they were, so the applied step is one step from ``start``."""
    for _ in range(tries):
        values, _ = trainer.train_step(images, labels)
        if not torch.equal(_params(trainer), start):
            return values
    raise AssertionError(f"no step was applied in {tries} tries")


# ------------------------------------------------------------------------------ fp16: skip, then go on
@pytest.mark.parametrize("device", [CPU, CUDA])
def test_fp16_non_finite_steps_then_a_good_step(device, tiny_rec, tmp_path, monkeypatch) -> None:
    """An fp16 overflow in the gradients and a NaN loss are both skipped (weights untouched, the scale
    backs off) and the next step trains: no "unscale_() has already been called". On the CPU the same
    path runs with a CPU GradScaler and fp32 autocast."""
    if device == "cpu":
        monkeypatch.setattr(engine, "grad_scaler", lambda precision: torch.amp.GradScaler(
            "cpu", init_scale=1024.0, growth_interval=100))
    precision = "fp16" if device == "cuda" else "fp32"
    with _trainer(tiny_rec, tmp_path, device, precision=precision) as trainer:
        assert trainer.scaler is not None
        images, labels = _batch(trainer, 8)
        param = next(p for p in trainer.task.trainable.parameters() if p.requires_grad)
        start, scale = _params(trainer), trainer.scaler.get_scale()
        handle = param.register_hook(lambda grad: grad * math.inf)
        trainer.train_step(images, labels)
        handle.remove()
        assert torch.equal(_params(trainer), start) and trainer.scaler.get_scale() < scale
        forward, scale = trainer.task.forward, trainer.scaler.get_scale()

        def nan_loss(net, x, y):
            out, quality = forward(net, x, y)
            return dataclasses.replace(out, loss=out.loss * math.nan), quality

        trainer.task.forward = nan_loss
        trainer.train_step(images, labels)
        trainer.task.forward = forward
        assert torch.equal(_params(trainer), start)
        values, _ = trainer.train_step(images, labels)  # the good step (crashed: unscale_() called twice)
        assert trainer.scaler.get_scale() < scale  # the NaN step backed the scale off
        assert math.isfinite(float(values["loss/total"])) and trainer.bad_steps == 0
        _step_until_applied(trainer, images, labels, start)


# ------------------------------------------------------------------------------ precisions agree
@pytest.mark.parametrize(("device", "precision"), [
    ("cpu", "bf16"),
    pytest.param("cuda", "fp32", marks=pytest.mark.cuda),
    pytest.param("cuda", "bf16", marks=pytest.mark.cuda),
    pytest.param("cuda", "fp16", marks=pytest.mark.cuda),
])
def test_one_step_in_each_precision_is_close_to_fp32_on_the_cpu(device, precision, tiny_rec,
                                                                tmp_path) -> None:
    def one_step(dev: str, prec: str, out: Path) -> tuple[float, torch.Tensor]:
        with _trainer(tiny_rec, out, dev, precision=prec) as trainer:
            start = _params(trainer)
            values = _step_until_applied(trainer, *_batch(trainer, 8), start)
            return float(values["loss/total"]), _params(trainer) - start

    ref_loss, ref_update = one_step("cpu", "fp32", tmp_path / "ref")
    loss, update = one_step(device, precision, tmp_path / "run")
    assert loss == pytest.approx(ref_loss, rel=2e-2)
    assert _cosine(update, ref_update) > 0.99
    assert float(update.norm()) == pytest.approx(float(ref_update.norm()), rel=5e-2)


# ------------------------------------------------------------------------------ compile + channels_last
@pytest.mark.cuda
def test_compile_channels_last_trains_like_eager_without_recompiling(synthetic_dataset, tmp_path,
                                                                     monkeypatch) -> None:
    """5 steps (18 per epoch: every batch the same shape) compiled with channels_last: no recompilation
    (the last batch included), losses close to eager's, checkpoint keys free of ``_orig_mod.``."""
    common = {**STEP, "data": str(synthetic_dataset), "device": "cuda", "batch_size": 32, "max_steps": 5,
              "precision": "fp32", "save_every": 5}
    eager = train(resolve_config("magface", output=str(tmp_path / "eager"), **common))
    import torch._dynamo

    torch._dynamo.reset()
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    fast = train(resolve_config("magface", output=str(tmp_path / "fast"), channels_last=True, compile=True,
                                **common))
    assert fast.steps == eager.steps == 5

    def losses(run) -> list[float]:
        rows = [json.loads(line) for line in (run.output / "metrics.jsonl").read_text().splitlines()]
        return [r["loss/total"] for r in rows if "loss/total" in r]

    assert losses(fast) == pytest.approx(losses(eager), rel=2e-2) and len(losses(fast)) == 5
    for run in (eager, fast):
        keys = set(load_file(str(run.output / "model.safetensors")))
        state_keys = set(load_state(run.output / "state" / "last.pt")["model"])
        assert not [k for k in keys | state_keys if "_orig_mod" in k or k.startswith("module.")]
    assert set(load_file(str(fast.output / "model.safetensors"))) == set(
        load_file(str(eager.output / "model.safetensors")))


# ------------------------------------------------------------------------------ torchrun, one process
def _torchrun() -> list[str]:
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
@pytest.mark.parametrize("device", [CPU, CUDA])
def test_cli_under_torchrun_saves_stops_and_resumes_with_the_rng(device, synthetic_dataset, tmp_path) -> None:
    """``torchrun --nproc-per-node 1`` (a process group of one: NCCL on CUDA, Gloo on the CPU): stopped
    after 2 steps and resumed to 4, the run's generator states end where an uninterrupted run's do.
    ``--sample-rate 0.5`` draws the sampled centres from the device's generator every step, so a
    resume that did not restore it would end elsewhere."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    settings = tmp_path / "settings.toml"
    settings.write_text("calibration_images = 16\n")  # a setting without a flag
    common = [*_torchrun(), "--standalone", "--nproc-per-node", "1", "-m", "fqtool", "train-magface",
              "--data", str(synthetic_dataset), "--arch", "iresnet_tiny", "--batch-size", "16", "--workers",
              "0", "--device", device, "--sample-rate", "0.5", "--save-every", "1", "--val-every", "0",
              "--quiet", "--config", str(settings)]

    def run(out: Path, *extra: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([*common, "-o", str(out), *extra], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    unit = "GPU" if device == "cuda" else "process"
    first = run(tmp_path / "resumed", "--max-steps", "2")
    assert f"batch global 16 = 1 {unit} × 16" in first.stderr.replace("\n", "")
    saved = load_state(tmp_path / "resumed" / "state" / "last.pt")
    assert saved["step"] == 2 and saved["world_size"] == 1
    key = "cuda" if device == "cuda" else "torch"
    assert key in saved["rng"][0]
    run(tmp_path / "resumed", "--max-steps", "4", "--resume", "auto")
    run(tmp_path / "straight", "--max-steps", "4")
    a, b = (load_state(tmp_path / name / "state" / "last.pt") for name in ("resumed", "straight"))
    assert a["step"] == b["step"] == 4
    assert torch.equal(a["rng"][0][key], b["rng"][0][key])
    assert not torch.equal(saved["rng"][0][key], b["rng"][0][key])  # the generator did move in steps 3-4


# ------------------------------------------------------------------------------ a 93k-class head
@pytest.mark.parametrize(("device", "classes", "batch"), [
    ("cpu", 2000, 64), pytest.param("cuda", 93431, 512, marks=pytest.mark.cuda)])
def test_a_large_head_in_bf16_autocast_matches_fp32(device, classes, batch) -> None:
    from fqtool.losses import build_head
    from fqtool.runtime import autocast

    dev = torch.device(device)
    torch.manual_seed(0)
    head = build_head("arcface", num_classes=classes, embedding_size=512).to(dev)
    embeddings = torch.randn(batch, 512, device=dev)
    labels = torch.randint(0, classes, (batch,), device=dev)
    # pull the targets' centres towards their samples: a trained-like, not a uniform, softmax
    with torch.no_grad():
        head.weight[labels] += 0.05 * torch.nn.functional.normalize(embeddings, dim=1)

    def loss_and_grad(precision: str) -> tuple[float, torch.Tensor]:
        x = embeddings.clone().requires_grad_(True)
        head.zero_grad(set_to_none=True)
        with autocast(dev, precision):
            out = head(x, labels)
        out.loss.backward()
        return float(out.loss.detach()), torch.cat([x.grad.reshape(-1), head.weight.grad.reshape(-1)]).float()

    ref_loss, ref_grad = loss_and_grad("fp32")
    loss, grad = loss_and_grad("bf16")
    assert math.isfinite(loss) and loss == pytest.approx(ref_loss, rel=5e-3)
    assert _cosine(grad, ref_grad) > 0.99


# ------------------------------------------------------------------------------ inference on the GPU
def _calibrated_checkpoint(path: Path) -> Path:
    """An iresnet_tiny whose BatchNorm statistics come from a few batches (not the default 0/1)."""
    from fqtool.models import create_model
    from fqtool.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("iresnet_tiny").train()
    with torch.no_grad():
        for _ in range(4):
            model(model.prepare(torch.randint(0, 256, (16, 3, 112, 112), dtype=torch.uint8)))
    return save_checkpoint(model.eval(), path)


def _images(data: Path, n: int) -> torch.Tensor:
    from fqtool.data.datasets import open_dataset

    dataset = open_dataset(str(data), size=(112, 112))
    return torch.stack([dataset[i][0] for i in range(n)])


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_score_verify_and_ijb_embeddings_on_the_device_equal_the_cpu(device, tiny_rec, tmp_path) -> None:
    from _ijb_fixture import write_ijb_release
    from fqtool.api import load_model
    from fqtool.data.ijb import load_ijb
    from fqtool.eval.ijb_embed import embed_ijb

    weights = _calibrated_checkpoint(tmp_path / "model.safetensors")
    cpu, other = load_model(weights, device="cpu"), load_model(weights, device=device)
    assert other.device.type == device
    images = _images(tiny_rec, 16)
    scores = [m.score(m.open(tiny_rec), keep_embeddings=True, batch_size=8) for m in (cpu, other)]
    cos = (_unit_rows(scores[0].embeddings) * _unit_rows(scores[1].embeddings)).sum(1)
    assert cos.min() >= 0.999
    np.testing.assert_allclose(scores[1].quality, scores[0].quality, rtol=1e-2)
    issame = np.array([True, False] * 4)
    features = [m.features(images, issame, flip=True, batch_size=8) for m in (cpu, other)]
    emb = [f.verification_inputs(True)[0] for f in features]
    assert (_unit_rows(emb[0]) * _unit_rows(emb[1])).sum(1).min() >= 0.999
    meta = load_ijb(write_ijb_release(tmp_path / "ijb", "IJBB", templates_per_id=1, impostors=20))
    ijb = [embed_ijb(m.network, meta, device=m.device, batch_size=16) for m in (cpu, other)]
    assert (_unit_rows(ijb[0].embeddings) * _unit_rows(ijb[1].embeddings)).sum(1).min() >= 0.999


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_export_from_a_channels_last_model_on_the_device(device, tiny_rec, tmp_path) -> None:
    """The exporter copies the model to fp32 on the CPU itself: a CUDA, channels_last model exports, and
    ONNX Runtime gives the CPU model's embeddings."""
    import onnxruntime as ort

    from fqtool.export.onnx import export_onnx
    from fqtool.models.loading import load_face_model

    weights = _calibrated_checkpoint(tmp_path / "model.safetensors")
    model = load_face_model(weights, device=device)
    model.to(memory_format=torch.channels_last)
    export_onnx(model, tmp_path / "model.onnx", check=True)
    assert next(model.parameters()).device.type == device  # the caller's model is left where it was
    reference = load_face_model(weights, device="cpu").eval()
    images = _images(tiny_rec, 4)
    with torch.no_grad():
        expected = reference(reference.prepare(images))[0].numpy()
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = reference.prepare(images).numpy().astype(np.float32)
    got = session.run(None, {session.get_inputs()[0].name: feed})[0]
    assert (_unit_rows(got) * _unit_rows(expected)).sum(1).min() >= 0.999


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_serfiq_on_the_device_is_deterministic(device, tiny_rec, tmp_path) -> None:
    from fqtool.eval.serfiq import serfiq_scores
    from fqtool.models.loading import load_face_model

    weights = _calibrated_checkpoint(tmp_path / "model.safetensors")
    model = load_face_model(weights, device=device)
    images = _images(tiny_rec, 8)
    first = serfiq_scores(model, images, batch_size=4, device=device, precision="fp32")
    again = serfiq_scores(model, images, batch_size=8, device=device, precision="fp32")
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)  # per-image seeds: the batch size changes nothing
    on_cpu = serfiq_scores(load_face_model(weights, device="cpu"), images, batch_size=8, device="cpu",
                           precision="fp32")
    # other masks from another device's generator: ≈ 0.6 % apart at most (two seeds on the CPU)
    np.testing.assert_allclose(first, on_cpu, rtol=2e-2)
