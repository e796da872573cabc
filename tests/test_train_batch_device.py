"""Batch semantics, the memory estimate and the device rules of issue 22 (items 4 and 9), on the CPU.

``--batch-size`` is the global batch of MagFace's and EQFace's recipes (each process takes global / world
size), ``--batch-per-gpu`` the arcface_torch / CR-FIQA per-process batch. CUDA placement is checked with
torch.cuda's functions monkeypatched: no GPU is needed to see which device is made current.
"""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from fqtool import runtime
from fqtool.cli.app import app
from fqtool.cli.train_progress import ConsoleProgress
from fqtool.errors import BadInputError, FqtoolError
from fqtool.models import create_model
from fqtool.train import distributed as D
from fqtool.train import memory as M
from fqtool.train.config import batch_split, dumps_toml, effective_lr, resolve_config
from fqtool.train.engine import Trainer

GIB = 2**30


# ---------------------------------------------------------------------------------------- batch split
def test_the_recipes_batch_is_global_and_split_over_the_processes() -> None:
    cfg = resolve_config("magface", data="d")
    assert (cfg.batch_size, cfg.batch_per_gpu) == (512, None)
    split = batch_split(cfg, 2)
    assert (split.global_batch, split.per_gpu) == (512, 256)
    assert split.describe("GPUs") == "global 512 = 2 GPUs × 256"
    assert batch_split(cfg, 1).describe("GPUs") == "global 512 = 1 GPU × 512"
    assert batch_split(cfg, 1).describe() == "global 512 = 1 process × 512"
    assert batch_split(cfg, 8).per_gpu == 64  # 8 GPUs train at 512, not 4096
    scaled = resolve_config("magface", data="d", lr_batch=256)
    assert effective_lr(scaled, 1) == effective_lr(scaled, 4) == pytest.approx(0.2)  # global batch / 256


def test_a_global_batch_that_does_not_divide_is_one_line() -> None:
    cfg = resolve_config("magface", data="d")
    with pytest.raises(FqtoolError, match=r"does not split over 3 processes; use a multiple of 3 \(e.g. 510 "
                                          r"or 513\) or --batch-per-gpu"):
        batch_split(cfg, 3)
    with pytest.raises(FqtoolError, match="BatchNorm needs at least 2"):
        batch_split(resolve_config("magface", data="d", batch_size=4), 4)


def test_batch_per_gpu_is_per_process_and_crfiqa_keeps_it() -> None:
    cfg = resolve_config("magface", data="d", batch_per_gpu=128)
    assert (cfg.batch_size, batch_split(cfg, 4).global_batch) == (None, 512)
    crfiqa = resolve_config("crfiqa", data="d")  # CR-FIQA: 128 per GPU, lr 0.1 × global / 512
    assert (crfiqa.batch_size, crfiqa.batch_per_gpu) == (None, 128)
    assert batch_split(crfiqa, 4).describe() == "global 512 = 4 processes × 128"
    assert effective_lr(crfiqa, 4) == pytest.approx(0.1)
    global_crfiqa = resolve_config("crfiqa", data="d", batch_size=512)  # a flag replaces the recipe's kind
    assert (global_crfiqa.batch_per_gpu, effective_lr(global_crfiqa, 1)) == (None, pytest.approx(0.1))


def test_the_two_batch_options_exclude_each_other(tmp_path) -> None:
    with pytest.raises(FqtoolError, match="exclude each other"):
        resolve_config("magface", data="d", batch_size=64, batch_per_gpu=32)
    both = tmp_path / "both.toml"
    both.write_text("batch_size = 64\nbatch_per_gpu = 32\n")
    with pytest.raises(BadInputError, match="sets both batch_size") as info:
        resolve_config("magface", data="d", config_file=both)
    assert "both.toml" in str(info.value)
    per_gpu = tmp_path / "per_gpu.toml"
    per_gpu.write_text("[optim]\nbatch_per_gpu = 32\n")
    from_file = resolve_config("magface", data="d", config_file=per_gpu)
    assert (from_file.batch_size, from_file.batch_per_gpu) == (None, 32)
    flag_wins = resolve_config("magface", data="d", config_file=per_gpu, batch_size=96)
    assert (flag_wins.batch_size, flag_wins.batch_per_gpu) == (96, None)


def test_the_cli_refuses_both_batch_flags_in_one_line(tiny_rec, tmp_path) -> None:
    result = CliRunner().invoke(app, ["train-magface", "--data", str(tiny_rec), "-o", str(tmp_path / "o"),
                                      "--batch-size", "8", "--batch-per-gpu", "4", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "exclude each other" in errors[0] and "Traceback" not in result.output


def test_config_toml_records_both_batches_and_reads_back_the_same(tmp_path) -> None:
    cfg = resolve_config("magface", data="d", batch_size=512)
    text = dumps_toml(cfg, world_size=2)
    assert "batch_size = 512\n" in text
    assert "# batch_per_gpu = 256  (this run: global 512 = 2 processes × 256; set by batch_size)" in text
    path = tmp_path / "config.toml"
    path.write_text(text)
    again = resolve_config("magface", config_file=path)
    assert (again.batch_size, again.batch_per_gpu) == (512, None)
    crfiqa = dumps_toml(resolve_config("crfiqa", data="d"), world_size=4)
    assert "batch_per_gpu = 128\n" in crfiqa and "# batch_size = 512  (this run:" in crfiqa


def test_a_split_that_does_not_divide_stops_before_any_file_is_written(tiny_rec, tmp_path) -> None:
    """A fake world of 3 processes (no process group needed: the split is checked first)."""
    cfg = resolve_config("magface", data=str(tiny_rec), output=str(tmp_path / "run"), arch="iresnet_tiny",
                         batch_size=16, workers=0, device="cpu")
    with pytest.raises(FqtoolError, match="multiple of 3"):
        Trainer(cfg, D.DistEnv(rank=0, world_size=3))
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------- memory
def test_the_activation_table_is_what_saved_tensor_hooks_measure() -> None:
    torch.manual_seed(0)
    backbone = create_model("iresnet18").backbone.train()
    measured = M.measure_activation_bytes(backbone, "fp32")
    assert measured == pytest.approx(M.ACTIVATION_BYTES[("iresnet18", "fp32")], rel=0.01)
    # the numbers: iResNet50 batch 512 fp32 ≈ 34 GB, iResNet100 bf16 ≈ 27 GB of activations
    assert 32 < 512 * M.ACTIVATION_BYTES[("iresnet50", "fp32")] / GIB < 36
    assert 25 < 512 * M.ACTIVATION_BYTES[("iresnet100", "bf16")] / GIB < 29


def test_the_head_estimate_does_not_undercount_the_head() -> None:
    for kind in ("arcface", "magface"):
        assert M.measure_head_bytes_per_logit(kind) + 8 <= M.HEAD_BYTES_PER_LOGIT  # + gradient + temporary


def test_the_warning_names_the_batch_that_fits() -> None:
    estimate = M.estimate_memory(per_gpu=512, world_size=1, activation_per_image=M.ACTIVATION_BYTES[
        ("iresnet50", "fp32")], trunk_params=43_590_848, local_classes=93_431, embedding_size=512)
    a10 = int(23.7 * GIB * M.USABLE_FRACTION)
    line = M.fit_warning(estimate, a10, per_gpu=512, world_size=1, what="iresnet50 fp32")
    assert line is not None and "\n" not in line and "iresnet50 fp32 with 512 images per process" in line
    fits = M.fitting_batch(estimate, a10)
    assert f"about {fits} images per process fit (--batch-per-gpu {fits})" in line
    act = M.ACTIVATION_BYTES[("iresnet50", "fp32")]
    at = {b: M.estimate_memory(per_gpu=b, world_size=1, activation_per_image=act, trunk_params=43_590_848,
                               local_classes=93_431, embedding_size=512).total for b in (fits, fits + 8)}
    assert at[fits] <= a10 < at[fits + 8] and fits % 8 == 0
    assert M.fit_warning(estimate, 10 * a10, per_gpu=512, world_size=1, what="x") is None
    two = M.fit_warning(estimate, a10, per_gpu=512, world_size=2, what="x")
    assert "--batch-size" in two


def test_the_trainer_warns_before_the_first_step_when_the_batch_will_not_fit(tiny_rec, tmp_path,
                                                                              monkeypatch) -> None:
    monkeypatch.setattr(M, "device_budget", lambda device: 1 * 2**20)  # a 1 MiB "GPU"
    cfg = resolve_config("magface", data=str(tiny_rec), output=str(tmp_path), arch="iresnet_tiny",
                         batch_size=8, workers=0, device="cpu", quiet=True)
    out = io.StringIO()
    trainer = Trainer(cfg, D.DistEnv(), ConsoleProgress(Console(file=out, width=300)))
    trainer.log.close()
    text = out.getvalue()
    assert "memory: iresnet_tiny fp32 with 8 images per process needs" in text, text
    assert trainer.memory_notes[0].startswith("memory per process ≈")


# ---------------------------------------------------------------------------------------- devices
@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda with 2 GPUs that records set_device calls (no GPU needed)."""
    calls: list[int] = []
    current = [0]

    def set_device(device) -> None:
        index = device.index if isinstance(device, torch.device) else int(device)
        calls.append(index)
        current[0] = index

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    return calls


def test_an_explicit_gpu_becomes_the_current_device(fake_cuda) -> None:
    """``--device cuda:1`` without torchrun: pin-memory threads and RNG states follow (set_device)."""
    assert runtime.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert fake_cuda == [1]
    assert runtime.resolve_device("cuda") == torch.device("cuda") and fake_cuda == [1]  # the current one
    assert D.setup("cuda:0").device == torch.device("cuda", 0) and fake_cuda[-1] == 0
    with pytest.raises(FqtoolError, match=r"'cuda:2': this machine has 2 visible GPU\(s\)"):
        runtime.resolve_device("cuda:2")


def test_under_torchrun_each_process_takes_its_local_rank(fake_cuda, monkeypatch) -> None:
    device, note = D.rank_device(torch.device("cuda", 0), local_rank=1)
    assert device == torch.device("cuda", 1) and "--device cuda:0 is ignored under torchrun" in note
    assert D.rank_device(torch.device("cuda"), 1) == (torch.device("cuda", 1), None)
    assert D.rank_device(torch.device("cpu"), 1) == (torch.device("cpu"), None)
    with pytest.raises(FqtoolError, match="LOCAL_RANK 2: this node has 2 visible GPU"):
        D.rank_device(torch.device("cuda"), 2)
    started = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(D.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(D.dist, "init_process_group",
                        lambda backend, **kw: started.update(backend=backend, **kw))
    monkeypatch.setattr(D.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(D.dist, "get_world_size", lambda: 2)
    env = D.setup("cuda:0")
    assert env.device == torch.device("cuda", 1) and fake_cuda == [1]  # never GPU 0 for rank 1
    assert started["backend"] == "nccl" and started["device_id"] == torch.device("cuda", 1)
    assert len(env.notes) == 1 and "cuda:LOCAL_RANK" in env.notes[0]
