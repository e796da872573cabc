"""CR-FIQA: the loss against hand-computed values and the official formula, no gradient through CCS/NNCCS,
the recipe's defaults."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fqtool.losses import CRFIQAMargin, build_head, certainty_ratio
from fqtool.train.config import effective_lr, resolve_config


def _smooth_l1(d: float, beta: float) -> float:
    d = abs(d)
    return 0.5 * d * d / beta if d < beta else d - 0.5 * beta


def test_logits_ccs_nnccs_and_penalty_by_hand() -> None:
    cos = torch.tensor([[0.8, 0.3, -0.1], [0.2, -0.4, 0.6]])
    labels = torch.tensor([0, 2])
    qs = torch.tensor([2.0, 1.1])
    margin = CRFIQAMargin()
    logits = margin(cos, labels)
    assert logits[0, 0].item() == pytest.approx(64 * math.cos(math.acos(0.8) + 0.5), abs=1e-4)
    assert logits[1, 2].item() == pytest.approx(64 * math.cos(math.acos(0.6) + 0.5), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(64 * 0.3, abs=1e-5)
    penalty = margin.penalty(cos, labels, quality=qs)
    assert penalty.stats["ccs"].tolist() == pytest.approx([0.8, 0.6])
    assert penalty.stats["nnccs"].tolist() == pytest.approx([0.3, 0.2])
    ratios = [0.8 / 0.3, 0.6 / 0.2]
    assert penalty.stats["cr"].tolist() == pytest.approx(ratios, rel=1e-6)
    expect = (_smooth_l1(2.0 - ratios[0], 0.5) + _smooth_l1(1.1 - ratios[1], 0.5)) / 2
    assert penalty.value.item() == pytest.approx(expect, rel=1e-6)
    paper = CRFIQAMargin(target="paper").penalty(cos, labels, quality=qs)
    assert paper.stats["cr"].tolist() == pytest.approx([0.8 / 1.3, 0.6 / 1.2], rel=1e-6)
    assert certainty_ratio(torch.tensor([0.5]), torch.tensor([0.25]), "paper").item() == pytest.approx(0.4)


def test_no_th_mm_fallback() -> None:
    """cos θ_y = −0.95 is past ArcFace's th = cos(π − 0.5): CR-FIQA keeps cos(θ + m) there."""
    logits = CRFIQAMargin(s=1.0)(torch.tensor([[-0.95, 0.0]]), torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(math.cos(math.acos(-0.95) + 0.5), abs=1e-6)


def _official(embeddings, kernel, labels, qs, s=64.0, m=0.5, alpha=10.0):
    """fdbtrs/CR-FIQA losses.py CR_FIQA_LOSS.forward + train_cr_fiqa.py's loss, re-typed."""
    embeddings = embeddings / torch.norm(embeddings, 2, 1, True)
    kernel_norm = kernel / torch.norm(kernel, 2, 0, True)
    cos_theta = torch.mm(embeddings, kernel_norm).clamp(-1, 1)
    index = torch.where(labels != -1)[0]
    m_hot = torch.zeros(index.size()[0], cos_theta.size()[1])
    m_hot.scatter_(1, labels[index, None], m)
    with torch.no_grad():
        distmat = cos_theta[index, labels.view(-1)].detach().clone()
        max_negative_cloned = cos_theta.detach().clone()
        max_negative_cloned[index, labels.view(-1)] = -1e-12
        max_negative, _ = max_negative_cloned.max(dim=1)
    cos_theta = cos_theta.acos()
    cos_theta = cos_theta + torch.zeros_like(cos_theta).index_put((index,), m_hot)
    thetas = cos_theta.cos() * s
    ccs, nnccs = distmat[index, None], max_negative[index, None]
    loss_qs = torch.nn.SmoothL1Loss(beta=0.5)(ccs / nnccs, qs)
    return F.cross_entropy(thetas, labels) + alpha * loss_qs


def test_head_equals_the_official_formula_with_gradients() -> None:
    g = torch.Generator().manual_seed(3)
    num_classes, dim, batch = 9, 6, 7
    emb = (torch.randn(batch, dim, generator=g) * 5).requires_grad_()
    qs = torch.rand(batch, generator=g).mul(3).requires_grad_()
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    head = build_head("crfiqa", num_classes=num_classes, embedding_size=dim)
    out = head(emb, labels, qs)
    out.loss.backward()

    emb2, qs2 = emb.detach().clone().requires_grad_(), qs.detach().clone().requires_grad_()
    kernel = head.weight.detach().t().clone().requires_grad_()  # (in, out) as CR-FIQA stores it
    ref = _official(emb2, kernel, labels, qs2[:, None])
    ref.backward()
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(emb.grad, emb2.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(qs.grad, qs2.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(head.weight.grad, kernel.grad.t(), rtol=1e-4, atol=1e-6)
    assert out.penalty_name == "quality" and set(out.stats) == {"ccs", "nnccs", "cr"}


def test_ccs_and_nnccs_carry_no_gradient() -> None:
    cos = torch.tensor([[0.7, 0.2, 0.4], [0.1, 0.5, 0.3]], requires_grad=True)
    qs = torch.tensor([1.0, 2.0], requires_grad=True)
    penalty = CRFIQAMargin().penalty(cos, torch.tensor([0, 1]), quality=qs)
    assert not any(v.requires_grad for v in penalty.stats.values())
    penalty.value.backward()
    assert cos.grad is None  # the target is a constant: only the regressor learns from it
    assert qs.grad.abs().sum() > 0


def test_the_penalty_needs_the_regressor_output() -> None:
    with pytest.raises(ValueError, match="qs"):
        CRFIQAMargin().penalty(torch.zeros(1, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="target"):
        CRFIQAMargin(target="both")


def test_recipe_defaults_follow_the_official_code() -> None:
    cfg = resolve_config("crfiqa", data="d")
    assert (cfg.arch, cfg.dropout, cfg.loss, cfg.scale, cfg.margin) == ("iresnet50", 0.4, "crfiqa", 64.0, 0.5)
    assert (cfg.alpha, cfg.beta, cfg.cr_target) == (10.0, 0.5, "code")
    assert (cfg.epochs, cfg.lr_steps, cfg.lr_schedule) == (34, [19.0, 27.0, 31.0], "step")
    assert (cfg.momentum, cfg.weight_decay, cfg.clip_grad, cfg.batch_per_gpu) == (0.9, 5e-4, 5.0, 128)
    assert cfg.head_weight_decay is None  # the header shares the backbone's weight decay
    # lr = 0.1 / 512 × batch × world size (train_cr_fiqa.py)
    assert effective_lr(cfg, world_size=4) == pytest.approx(0.1)
    assert effective_lr(cfg, world_size=1) == pytest.approx(0.025)
    assert effective_lr(resolve_config("magface", data="d"), world_size=4) == 0.1  # no scaling elsewhere
