"""The training engine's decisions across ranks (issue 22): fp16 skips, resume, checkpoint gathering.

One 2-process gloo job (CPU, with a timeout) runs three scenarios in a row, each against a 1-process run:

* an inf in rank 1's Partial FC gradient under the (CPU) GradScaler: both ranks skip, replicas stay equal;
* a 1-process state resumed by 2 ranks and back: head shards and momentum re-split and gathered exactly;
* nodes that do not share a disk and hold states of different steps: every rank stops with one line;
* NaN BatchNorm statistics on rank 1 only: no rank writes the training state.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from fqtool.errors import FqtoolError
from fqtool.train import engine, recipes
from fqtool.train.config import resolve_config
from fqtool.train.distributed import cleanup, setup
from fqtool.train.state import load_state, save_state

#: 16 images (tiny_rec: 8 ids × 2); a global batch of 8 = 1 × 8 = 2 × 4: 2 steps per epoch.
STEP = {"arch": "iresnet_tiny", "epochs": 3, "lr": 0.1, "workers": 0, "device": "cpu", "log_every": 1,
        "val_every": 0, "save_every": 0, "quiet": True, "calibration_images": 8}
GLOBAL_BATCH = 8
TIMEOUT_S = 300


def _cpu_scaler(precision: str) -> torch.amp.GradScaler:
    """The fp16 path on the CPU: a real GradScaler doubling its scale after every good step."""
    return torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)


def _config(data, out, **kw):
    """``--batch-size`` is the global batch: 8 images per process in 1 process, 4 in each of 2."""
    settings = {**STEP, "batch_size": GLOBAL_BATCH, **kw}
    return resolve_config("magface", data=str(data), output=str(out), **settings)


def _head_momentum(trainer) -> torch.Tensor:
    return trainer.optimizer.state[trainer.task.head.weight]["momentum_buffer"].detach().clone()


def _saved_head_momentum(state: dict) -> torch.Tensor:
    entries = state["optimizer"]["state"]
    return entries[max(entries)]["momentum_buffer"]  # the head is the last parameter group


# ------------------------------------------------------------------------------------ one process
def test_fp16_non_finite_loss_backs_the_scale_off_and_goes_on(monkeypatch, tiny_rec, tmp_path) -> None:
    """A NaN loss under fp16 used to leave the scaler 'unscaled' and crash the next step."""
    monkeypatch.setattr(engine, "grad_scaler", _cpu_scaler)
    original = recipes.magface_task
    calls = {"n": 0}

    def task(cfg, num_classes, device):
        built = original(cfg, num_classes, device)
        forward = built.forward

        def poisoned(net, images, labels):
            out, quality = forward(net, images, labels)
            calls["n"] += 1
            if calls["n"] == 2:
                out.loss = out.loss * float("nan")
            return out, quality

        built.forward = poisoned
        return built

    monkeypatch.setattr(recipes, "magface_task", task)
    result = engine.train(_config(tiny_rec, tmp_path, max_steps=3, max_bad_steps=2))
    assert result.steps == 3 and result.skipped_steps == 1
    # 1024 → 2048 (good) → 1024 (skipped: backed off) → 2048 (good)
    assert load_state(tmp_path / "state" / "last.pt")["scaler"]["scale"] == 2048.0


def test_auto_precision_is_fp16_on_gpus_without_native_bf16(monkeypatch) -> None:
    from fqtool.runtime import resolve_precision

    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # T4, V100: 7.x
    assert resolve_precision("auto", gpu) == "fp16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))  # A10
    assert resolve_precision("auto", gpu) == "bf16"


def test_the_fixed_size_sampler_needs_no_batch_size_exchange(monkeypatch, tiny_rec, tmp_path) -> None:
    from fqtool.losses import heads

    calls = []
    original = heads.gather_sizes
    monkeypatch.setattr(heads, "gather_sizes", lambda n, device: calls.append(n) or original(n, device))
    engine.train(_config(tiny_rec, tmp_path, max_steps=2))
    assert calls == []


# ------------------------------------------------------------------------------------ two ranks
def _skip_job(env, base: Path, data: str) -> dict:
    """3 steps; at step 2 rank 1's head gradient is inf (its own shard: DDP never sees it)."""
    from fqtool.losses import heads

    calls = []
    original = heads.gather_sizes
    heads.gather_sizes = lambda n, device: calls.append(n) or original(n, device)
    engine.grad_scaler = _cpu_scaler
    trainer = engine.Trainer(_config(data, base / "skip", max_steps=3), env)
    seen = {"n": 0}

    def poison(grad):
        seen["n"] += 1
        return grad * math.inf if seen["n"] == 2 and env.rank == 1 else grad

    trainer.task.head.weight.register_hook(poison)
    trainer.run()
    state = trainer._state()  # a collective, as in save(): the head is gathered on rank 0 only
    heads.gather_sizes = original
    return {"trunk": {k: v.detach().clone() for k, v in trainer.task.trainable.named_parameters()},
            "scale": trainer.scaler.get_scale(), "gather_sizes_calls": len(calls),
            "holds_full_head": state["head"]["weight"] is not None,
            "holds_full_momentum": _saved_head_momentum(state) is not None}


def _resume_job(env, base: Path, data: str) -> dict:
    """Resume the 1-process state (step 2) on 2 ranks, train 1 step, save."""
    trainer = engine.Trainer(_config(data, base / "r12", max_steps=3, resume="auto"), env)
    start = {"step": trainer.step, "head": trainer.task.head.weight.detach().clone(),
             "momentum": _head_momentum(trainer)}
    trainer.run()
    return {"start": start, "end": {"head": trainer.task.head.weight.detach().clone(),
                                    "momentum": _head_momentum(trainer)}}


def _mismatch_job(env, base: Path, data: str) -> str:
    """Each node has its own output folder (same path on a real cluster), with states of other steps."""
    try:
        engine.Trainer(_config(data, base / f"node{env.rank}", max_steps=4, resume="auto"), env)
    except FqtoolError as exc:
        return str(exc)
    return "no error"


def _save_job(env, base: Path, data: str) -> bool:
    """Only rank 1's BatchNorm statistics are NaN (buffers are per rank): no rank may write the state."""
    from fqtool.train.distributed import barrier

    trainer = engine.Trainer(_config(data, base / "save", max_steps=1), env)
    if env.rank == 1:
        buffer = next(b for name, b in trainer.task.trainable.named_buffers() if "running_mean" in name)
        buffer.fill_(float("nan"))
    trainer.save()
    barrier()
    trainer.log.close()
    return (base / "save" / "state" / "last.pt").exists()


def _rank_main(rank: int, world: int, port: int, base: str, data: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    env = setup("cpu")
    out = {}
    try:
        for name, job in (("skip", _skip_job), ("resume", _resume_job), ("mismatch", _mismatch_job),
                          ("save", _save_job)):
            out[name] = job(env, Path(base), data)
            torch.save(out, Path(base) / f"rank{rank}.pt")  # what is done survives a later hang
    finally:
        cleanup()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(world: int, base: Path, data: Path) -> list[dict]:
    ctx = mp.get_context("spawn")
    port = _free_port()
    args = [(r, world, port, str(base), str(data)) for r in range(world)]
    procs = [ctx.Process(target=_rank_main, args=a) for a in args]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + TIMEOUT_S
    for proc in procs:
        proc.join(max(1.0, deadline - time.monotonic()))
    hung = [p for p in procs if p.is_alive()]
    for proc in hung:
        proc.kill()
        proc.join()
    results = [torch.load(base / f"rank{r}.pt", weights_only=False) if (base / f"rank{r}.pt").is_file()
               else {} for r in range(world)]
    for result in results:
        result["hung"] = bool(hung)
    return results


@pytest.fixture(scope="module")
def two_ranks(tiny_rec, tmp_path_factory) -> tuple[Path, list[dict]]:
    base = tmp_path_factory.mktemp("ranks")
    engine.train(_config(tiny_rec, base / "one", max_steps=2))  # the 1-process state at step 2
    shutil.copytree(base / "one" / "state", base / "r12" / "state")
    shutil.copytree(base / "one" / "state", base / "node1" / "state")
    later = load_state(base / "one" / "state" / "last.pt")
    later.update(step=3, samples_in_epoch=later["samples_in_epoch"] + GLOBAL_BATCH)
    later.pop("version")
    save_state(base / "node0" / "state" / "last.pt", later)  # node 0 went on one more step
    return base, _spawn(2, base, tiny_rec)


def _finished(ranks: list[dict], job: str) -> None:
    done = [job in result for result in ranks]
    assert all(done), f"the 2-rank job {job!r} did not finish on every rank (hung: {ranks[0]['hung']})"


@pytest.mark.slow
def test_an_inf_in_one_ranks_head_gradient_skips_on_every_rank(two_ranks) -> None:
    _, ranks = two_ranks
    _finished(ranks, "skip")
    first, second = (r["skip"] for r in ranks)
    for name, value in first["trunk"].items():
        assert torch.equal(value, second["trunk"][name]), f"DDP replicas drifted apart: {name}"
    # 1024 → 2048 → 1024 (both backed off) → 2048; a rank stepping alone would reach 4096
    assert first["scale"] == second["scale"] == 2048.0


@pytest.mark.slow
def test_checkpoints_gather_the_head_on_rank_0_only(two_ranks) -> None:
    _, ranks = two_ranks
    _finished(ranks, "skip")
    assert ranks[0]["skip"]["holds_full_head"] and ranks[0]["skip"]["holds_full_momentum"]
    assert not ranks[1]["skip"]["holds_full_head"] and not ranks[1]["skip"]["holds_full_momentum"]
    assert ranks[0]["skip"]["gather_sizes_calls"] == ranks[1]["skip"]["gather_sizes_calls"] == 0


@pytest.mark.slow
def test_resume_across_world_sizes_1_to_2_to_1_is_exact(two_ranks, tiny_rec) -> None:
    base, ranks = two_ranks
    _finished(ranks, "resume")
    one = load_state(base / "one" / "state" / "last.pt")
    from fqtool.losses import shard_slice

    for rank, result in enumerate(ranks):  # 1 → 2: each rank holds its rows of the head and momentum
        rows = shard_slice(one["head"]["weight"].shape[0], rank, 2)
        assert result["resume"]["start"]["step"] == 2
        assert torch.equal(result["resume"]["start"]["head"], one["head"]["weight"][rows])
        assert torch.equal(result["resume"]["start"]["momentum"], _saved_head_momentum(one)[rows])
    two = load_state(base / "r12" / "state" / "last.pt")
    assert two["step"] == 3 and two["world_size"] == 2
    gathered = torch.cat([r["resume"]["end"]["head"] for r in ranks])
    assert torch.equal(two["head"]["weight"], gathered)
    assert torch.equal(_saved_head_momentum(two), torch.cat([r["resume"]["end"]["momentum"] for r in ranks]))
    env = setup("cpu")  # 2 → 1: one process picks up the full head and momentum
    back = engine.Trainer(_config(tiny_rec, base / "back", max_steps=4,
                                  resume=str(base / "r12" / "state" / "last.pt")), env)
    try:
        assert back.step == 3
        assert torch.equal(back.task.head.weight.detach(), gathered)
        assert torch.equal(_head_momentum(back), _saved_head_momentum(two))
    finally:
        back.log.close()
        cleanup()


@pytest.mark.slow
def test_nodes_holding_other_steps_stop_with_one_line(two_ranks) -> None:
    _, ranks = two_ranks
    _finished(ranks, "mismatch")
    for result in ranks:
        message = result["mismatch"]
        assert "rank 0 resumes from step 3" in message and "at step 2" in message, message
        assert "\n" not in message
    assert ranks[0]["mismatch"].startswith("rank 1: ")


@pytest.mark.slow
def test_a_nan_buffer_on_one_rank_keeps_every_rank_from_saving(two_ranks) -> None:
    _, ranks = two_ranks
    _finished(ranks, "save")
    assert ranks[0]["save"] is False and ranks[1]["save"] is False
