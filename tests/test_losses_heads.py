"""Single-process heads against a dense computation, sampling, label checks, state dicts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fqtool.errors import CheckpointError, FqtoolError
from fqtool.losses import (
    HEAD_KINDS,
    HeadOutput,
    LabelError,
    build_head,
    check_labels,
    sample_centres,
    shard_range,
    shard_slice,
)

C, E, B = 12, 6, 8


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = (torch.randn(B, E, generator=g) * 8).requires_grad_()
    labels = torch.randint(0, C, (B,), generator=g)
    quality = torch.rand(B, generator=g).requires_grad_()
    return emb, labels, quality


def _dense_loss(kind: str, weight, emb, labels, quality):
    """Straightforward (B, C) computation with the margins written out by hand."""
    cos = (F.normalize(emb) @ F.normalize(weight).t()).clamp(-1, 1)
    cy = cos.gather(1, labels[:, None]).squeeze(1)
    theta = torch.acos(cy.clamp(-1 + 1e-7, 1 - 1e-7))
    onehot = F.one_hot(labels, C).bool()
    norms = emb.norm(dim=1)
    extra, s = 0.0, 64.0
    def arc(m: float) -> torch.Tensor:  # ArcFace s=64 with th/mm
        th, mm = math.cos(math.pi - m), math.sin(math.pi - m) * m
        return torch.where(cy > th, torch.cos(theta + m), cy - mm)

    if kind in ("arcface", "eqface"):
        tgt = arc(0.5)
    elif kind == "combined":  # the ArcFace paper's (1, 0.3, 0.2)
        tgt = arc(0.3) - 0.2
    elif kind == "crfiqa":  # cos(acos(cos) + m), no fallback; CR regression on detached CCS/NNCCS
        tgt = torch.cos(theta + 0.5)
        nnccs = cos.masked_fill(onehot, -2.0).max(dim=1).values
        extra = 10.0 * F.smooth_l1_loss(quality, (cy / nnccs).detach(), beta=0.5)
    elif kind == "cosface":
        tgt = cy - 0.4
    else:  # magface, mag-cosface
        a = norms.clamp(10, 110)
        if kind == "magface":
            m = 0.35 / 100 * (a - 10) + 0.45
            tgt = torch.where(cy > 0, torch.cos(theta + m), cy)
            lam = 35.0
        else:
            m = 0.45 / 100 * (a - 10) + 0.35
            tgt, lam = cy - m, 150.0
        extra = lam * (a / 110**2 + 1 / a).mean()
    logits = torch.where(onehot, tgt[:, None], cos) * s
    if kind == "eqface":
        logits = logits * ((quality - 0.2).clamp(0, 1) * 1.2)[:, None]
        logp = F.cross_entropy(logits, labels, reduction="none")
        return ((1 - torch.exp(-logp)) ** 2 * logp).mean() + extra
    return F.cross_entropy(logits, labels) + extra


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_head_equals_dense_computation(kind: str) -> None:
    torch.manual_seed(1)
    head = build_head(kind, num_classes=C, embedding_size=E)
    emb, labels, quality = _batch()
    q = quality if kind in ("eqface", "crfiqa") else None
    out = head(emb, labels, q)
    assert isinstance(out, HeadOutput)
    out.loss.backward()
    got = (emb.grad.clone(), head.weight.grad.clone(), None if q is None else quality.grad.clone())

    emb2, _, quality2 = _batch()
    weight = head.weight.detach().clone().requires_grad_()
    ref = _dense_loss(kind, weight, emb2, labels, quality2)
    ref.backward()
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(got[0], emb2.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[1], weight.grad, rtol=1e-4, atol=1e-6)
    if q is not None:
        torch.testing.assert_close(got[2], quality2.grad, rtol=1e-4, atol=1e-6)
    assert (out.loss_g is not None) == kind.startswith("mag")
    torch.testing.assert_close(out.norms, emb2.detach().norm(dim=1))
    assert not out.loss_id.requires_grad and not out.norms.requires_grad


def test_accuracy_is_top1_of_margin_free_cosines() -> None:
    head = build_head("arcface", num_classes=3, embedding_size=3)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3))
    emb = torch.tensor([[5.0, 1, 0], [0, 2, 1], [1, 0, 3], [3, 0, 1]])
    out = head(emb, torch.tensor([0, 1, 2, 2]))
    assert out.accuracy.item() == pytest.approx(0.75)


def test_focal_gamma_defaults_and_override() -> None:
    assert build_head("eqface", num_classes=C, embedding_size=E).focal_gamma == 2.0
    assert build_head("arcface", num_classes=C, embedding_size=E).focal_gamma == 0.0
    assert build_head("arcface", num_classes=C, embedding_size=E, focal_gamma=2.0).focal_gamma == 2.0
    assert build_head("eqface", num_classes=C, embedding_size=E, focal_gamma=0.0).focal_gamma == 0.0


def test_kwargs_reach_the_margin_and_bad_ones_are_reported() -> None:
    head = build_head("magface", num_classes=C, embedding_size=E, lambda_g=20.0, u_m=1.0)
    assert head.margin.lambda_g == 20.0 and head.margin.u_m == 1.0
    with pytest.raises(ValueError, match="unknown head kind"):
        build_head("sphereface", num_classes=C, embedding_size=E)
    with pytest.raises(ValueError, match="arcface head"):
        build_head("arcface", num_classes=C, embedding_size=E, l_a=3)


def test_quality_only_for_eqface() -> None:
    head = build_head("arcface", num_classes=C, embedding_size=E)
    emb, labels, quality = _batch()
    with pytest.raises(ValueError, match="eqface"):
        head(emb, labels, quality)


def test_check_labels() -> None:
    check_labels(torch.tensor([0, 11]), C)
    with pytest.raises(TypeError, match="int64"):
        check_labels(torch.tensor([0.0, 1.0]), C)
    with pytest.raises(TypeError, match="int64"):
        check_labels(torch.tensor([0, 1], dtype=torch.int32), C)
    with pytest.raises(LabelError, match=r"\[0, 12\].*12 classes"):
        check_labels(torch.tensor([0, 12]), C)
    with pytest.raises(FqtoolError, match="-1"):
        check_labels(torch.tensor([-1, 3]), C)


def test_sample_centres_keeps_all_positives() -> None:
    torch.manual_seed(0)
    local = torch.tensor([3, 17, -1, 3, 40, 99])
    index, remapped = sample_centres(local, num_local=100, sample_rate=0.1)
    assert index.numel() == 10 and bool((index[1:] > index[:-1]).all())
    assert {3, 17, 40, 99} <= set(index.tolist())
    assert remapped[2].item() == -1
    assert index[remapped[[0, 1, 3, 4, 5]]].tolist() == [3, 17, 3, 40, 99]
    only_pos, _ = sample_centres(local, num_local=100, sample_rate=0.02)  # budget 2 < 4 positives
    assert only_pos.tolist() == [3, 17, 40, 99]


def test_sampled_head_touches_only_sampled_rows_and_eval_is_dense() -> None:
    torch.manual_seed(2)
    head = build_head("arcface", num_classes=40, embedding_size=E, sample_rate=0.25)
    emb = torch.randn(B, E) * 5
    labels = torch.tensor([0, 1, 2, 2, 5, 9, 30, 39])
    head(emb, labels).loss.backward()
    touched = head.weight.grad.abs().sum(dim=1) > 0
    assert int(touched.sum()) == 10
    assert touched[labels].all()
    head.eval()
    dense = build_head("arcface", num_classes=40, embedding_size=E)
    dense.load_full_state_dict(head.full_state_dict())
    with torch.no_grad():
        assert head(emb, labels).loss.item() == pytest.approx(dense(emb, labels).loss.item(), rel=1e-6)


def test_shard_ranges() -> None:
    assert [shard_range(10, r, 3) for r in range(3)] == [(0, 4), (4, 3), (7, 3)]
    assert shard_slice(10, 2, 3) == slice(7, 10)
    assert shard_slice(10, 0, 1) == slice(0, 10)
    with pytest.raises(ValueError):
        shard_range(10, 3, 3)


def test_full_state_dict_roundtrip_single_process() -> None:
    head = build_head("cosface", num_classes=C, embedding_size=E)
    state = head.full_state_dict()
    assert state["weight"].shape == (C, E) and state["num_classes"] == C and state["kind"] == "cosface"
    other = build_head("cosface", num_classes=C, embedding_size=E)
    other.load_full_state_dict(state)
    torch.testing.assert_close(other.weight, head.weight)
    with pytest.raises(CheckpointError, match="num_classes"):
        build_head("cosface", num_classes=C + 1, embedding_size=E).load_full_state_dict(state)


def test_weight_init_is_normal_0_01() -> None:
    torch.manual_seed(0)
    w = build_head("arcface", num_classes=2000, embedding_size=64).weight
    assert w.mean().abs().item() < 1e-3 and w.std().item() == pytest.approx(0.01, rel=0.02)


def test_head_under_cpu_autocast_keeps_margin_in_fp32() -> None:
    torch.manual_seed(3)
    head = build_head("magface", num_classes=C, embedding_size=E)
    emb, labels, _ = _batch()
    ref = head(emb, labels).loss.item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(emb.to(torch.bfloat16), labels)
    assert out.loss.dtype == torch.float32 and out.norms.dtype == torch.float32
    assert out.loss.item() == pytest.approx(ref, rel=0.05)
