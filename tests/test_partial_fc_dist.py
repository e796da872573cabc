"""Partial FC over real gloo process groups (CPU): 2 ranks must reproduce 1 process exactly.

Each case runs a tiny DDP backbone (Linear) + head on every rank with its part of the batch, and the
parent runs the same model on the whole batch. The loss must agree, the gathered embedding gradients
must be W × the single-process ones (scaled for DDP's averaging, as arcface_torch) — or equal with
``ddp_grad_scale=False`` — and the DDP-averaged backbone gradient must equal the single-process one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from fqtool.losses import build_head, shard_slice

C, E, D = 11, 6, 5
# name -> (kind, batch split over 2 ranks, build kwargs)
CASES: dict[str, tuple[str, list[int], dict[str, Any]]] = {
    "arcface": ("arcface", [4, 4], {}),
    "cosface_focal_uneven": ("cosface", [3, 5], {"focal_gamma": 2.0}),
    "magface": ("magface", [4, 4], {}),
    "mag_cosface_uneven": ("mag-cosface", [5, 3], {}),
    "eqface": ("eqface", [4, 4], {}),
    "crfiqa_uneven": ("crfiqa", [3, 5], {}),  # CCS/NNCCS are maxima over both shards
    "arcface_noscale": ("arcface", [4, 4], {"ddp_grad_scale": False}),
}


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(8, D, generator=g),
        "backbone": torch.randn(E, D, generator=g) * 6,  # norms around 10..60: inside MagFace's bounds
        "labels": torch.tensor([0, 3, 5, 10, 3, 7, 1, 6]),
        "quality": torch.rand(8, generator=g) * 0.8 + 0.2,
        "centres": torch.randn(C, E, generator=g),
    }


def _run_case(kind: str, kwargs: dict[str, Any], inp: dict[str, torch.Tensor], rows: slice, ddp: bool):
    """Forward/backward of backbone + head on ``rows`` of the batch; returns what the test compares."""
    backbone = nn.Linear(D, E, bias=False)
    with torch.no_grad():
        backbone.weight.copy_(inp["backbone"])
    model = nn.parallel.DistributedDataParallel(backbone) if ddp else backbone
    head = build_head(kind, num_classes=C, embedding_size=E, **kwargs)
    head.load_full_state_dict({"weight": inp["centres"]})
    emb = model(inp["x"][rows])
    emb.retain_grad()
    quality = inp["quality"][rows].clone().requires_grad_() if kind in ("eqface", "crfiqa") else None
    out = head(emb, inp["labels"][rows], quality)
    out.loss.backward()
    return {
        "loss": out.loss.detach(),
        "loss_g": out.loss_g,
        "penalty": out.penalty,
        "stats": out.stats,
        "accuracy": out.accuracy,
        "emb_grad": emb.grad,
        "q_grad": None if quality is None else quality.grad,
        "centre_grad": head.weight.grad,
        "backbone_grad": backbone.weight.grad,
    }


def _worker(rank: int, world: int, init: str, out_dir: str, job: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        inp = _inputs()
        result: dict[str, Any] = {}
        if job == "equivalence":
            for name, (kind, split, kwargs) in CASES.items():
                start = sum(split[:rank])
                result[name] = _run_case(kind, kwargs, inp, slice(start, start + split[rank]), ddp=True)
            result["sampled"] = _sampled_case(rank)
        torch.manual_seed(100 + rank)
        head = build_head("magface", num_classes=C, embedding_size=E)
        if job == "reshard_load":
            head.load_full_state_dict(torch.load(Path(out_dir) / "full.pt"))
        result["shard"] = head.weight.detach().clone()
        result["full"] = head.full_state_dict()
        result["full_rank0"] = head.full_state_dict(rank0_only=True)
        torch.save(result, Path(out_dir) / f"{job}{rank}.pt")
    finally:
        dist.destroy_process_group()


def _sampled_case(rank: int) -> dict[str, Any]:
    """sample_rate 0.5 over 2 ranks: every positive centre must get a gradient."""
    torch.manual_seed(rank)
    head = build_head("arcface", num_classes=40, embedding_size=E, sample_rate=0.5)
    labels = torch.tensor([0, 1, 19, 20, 21, 39]) if rank == 0 else torch.tensor([2, 22, 38, 5])
    emb = torch.randn(labels.numel(), E, requires_grad=True)
    out = head(emb, labels)
    out.loss.backward()
    return {
        "loss": out.loss.detach(),
        "touched": head.weight.grad.abs().sum(1) > 0,
        "start": head.class_start,
    }


def _spawn(world: int, tmp: Path, job: str) -> list[dict[str, Any]]:
    init = f"file://{tmp / ('init_' + job)}"
    mp.spawn(_worker, args=(world, init, str(tmp), job), nprocs=world, join=True)
    return [torch.load(tmp / f"{job}{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return _spawn(2, tmp_path_factory.mktemp("pfc2"), "equivalence")


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_match_one_process(two_ranks: list[dict[str, Any]], name: str) -> None:
    kind, split, kwargs = CASES[name]
    ref = _run_case(kind, kwargs, _inputs(), slice(None), ddp=False)
    ranks = [r[name] for r in two_ranks]
    scale = 1.0 if kwargs.get("ddp_grad_scale") is False else 2.0
    for got in ranks:
        torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["accuracy"], ref["accuracy"])
        if ref["penalty"] is not None:
            torch.testing.assert_close(got["penalty"], ref["penalty"], rtol=1e-6, atol=1e-7)
        for name, value in ref["stats"].items():
            torch.testing.assert_close(got["stats"][name], value)
    emb_grad = torch.cat([g["emb_grad"] for g in ranks]) / scale
    torch.testing.assert_close(emb_grad, ref["emb_grad"], rtol=1e-4, atol=1e-6)
    centre_grad = torch.cat([g["centre_grad"] for g in ranks])
    torch.testing.assert_close(centre_grad, ref["centre_grad"], rtol=1e-4, atol=1e-6)
    if ref["q_grad"] is not None:
        q_grad = torch.cat([g["q_grad"] for g in ranks]) / scale
        torch.testing.assert_close(q_grad, ref["q_grad"], rtol=1e-4, atol=1e-6)
    # DDP averages the backbone gradient over ranks: with the W scaling that is the 1-process gradient.
    for got in ranks:
        torch.testing.assert_close(
            got["backbone_grad"] * (2.0 / scale), ref["backbone_grad"], rtol=1e-4, atol=1e-5
        )


def test_sampling_over_two_ranks_keeps_positives(two_ranks: list[dict[str, Any]]) -> None:
    positives = [0, 1, 19, 20, 21, 39, 2, 22, 38, 5]
    assert two_ranks[0]["sampled"]["loss"] == two_ranks[1]["sampled"]["loss"]
    for r in two_ranks:
        s = r["sampled"]
        touched = {s["start"] + i for i in torch.nonzero(s["touched"]).flatten().tolist()}
        mine = {p for p in positives if s["start"] <= p < s["start"] + 20}
        assert mine <= touched and len(touched) == 10


def test_full_state_dict_reshards_2_to_1_to_3(two_ranks: list[dict[str, Any]], tmp_path: Path) -> None:
    full = two_ranks[0]["full"]
    assert full["weight"].shape == (C, E)
    for rank, r in enumerate(two_ranks):  # every rank gets the same full matrix made of the shards
        torch.testing.assert_close(r["full"]["weight"], full["weight"])
        torch.testing.assert_close(full["weight"][shard_slice(C, rank, 2)], r["shard"])
    assert two_ranks[0]["full_rank0"]["weight"].shape == (C, E) and two_ranks[1]["full_rank0"] == {}

    single = build_head("magface", num_classes=C, embedding_size=E)  # 2 -> 1
    single.load_full_state_dict(full)
    torch.save(single.full_state_dict(), tmp_path / "full.pt")

    three = _spawn(3, tmp_path, "reshard_load")  # 1 -> 3
    for rank, r in enumerate(three):
        assert r["shard"].shape[0] == [4, 4, 3][rank]
        torch.testing.assert_close(r["shard"], full["weight"][shard_slice(C, rank, 3)])
        torch.testing.assert_close(r["full"]["weight"], full["weight"])
