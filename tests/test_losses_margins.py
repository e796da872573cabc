"""Margins and focal loss against numbers computed by hand with the math module."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fqtool.losses import CombinedMarginLoss, FocalLoss, arc_margin, arcface, cosface


def _cos(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_arcface_target_uses_cos_theta_plus_m() -> None:
    cos = _cos([[0.8, 0.1, -0.3], [0.2, 0.6, 0.0]])
    logits = arcface(s=64.0, m=0.5)(cos, torch.tensor([0, 1]))
    exp0 = 64 * math.cos(math.acos(0.8) + 0.5)
    exp1 = 64 * math.cos(math.acos(0.6) + 0.5)
    assert logits[0, 0].item() == pytest.approx(exp0, abs=1e-4)
    assert logits[1, 1].item() == pytest.approx(exp1, abs=1e-4)
    # non-target columns are only scaled
    assert logits[0, 1].item() == pytest.approx(6.4, abs=1e-5)
    assert logits[1, 0].item() == pytest.approx(12.8, abs=1e-5)
    assert logits.dtype == torch.float32


def test_arcface_th_mm_fallback_branch() -> None:
    m = 0.5
    th, mm = math.cos(math.pi - m), math.sin(math.pi - m) * m  # -0.8776, 0.2397
    below = -0.95  # cos θ ≤ th: θ + m would pass π
    above = -0.85
    logits = arcface(s=2.0, m=m)(_cos([[below, 0.0], [above, 0.0]]), torch.tensor([0, 0]))
    assert below < th < above
    assert logits[0, 0].item() == pytest.approx(2 * (below - mm), abs=1e-5)
    assert logits[1, 0].item() == pytest.approx(2 * math.cos(math.acos(above) + m), abs=1e-5)


def test_easy_margin_keeps_negative_cosines() -> None:
    logits = arcface(s=1.0, m=0.5, easy_margin=True)(_cos([[-0.2, 0.3], [0.3, 0.0]]), torch.tensor([0, 0]))
    assert logits[0, 0].item() == pytest.approx(-0.2, abs=1e-6)
    assert logits[1, 0].item() == pytest.approx(math.cos(math.acos(0.3) + 0.5), abs=1e-6)


def test_cosface_and_combined() -> None:
    cos = _cos([[0.7, 0.2]])
    lab = torch.tensor([0])
    assert cosface(s=64, m=0.4)(cos, lab)[0, 0].item() == pytest.approx(64 * (0.7 - 0.4), abs=1e-4)
    comb = CombinedMarginLoss(s=10, m1=1.0, m2=0.3, m3=0.2)(cos, lab)
    assert comb[0, 0].item() == pytest.approx(10 * (math.cos(math.acos(0.7) + 0.3) - 0.2), abs=1e-5)
    assert comb[0, 1].item() == pytest.approx(2.0, abs=1e-6)


def test_combined_sets_all_three_margins() -> None:
    """m1 ≠ 1 is insightface's original combined margin cos(m1·θ + m2) − m3 (no fallback)."""
    cos, lab = _cos([[0.7, 0.2], [-0.9, 0.1]]), torch.tensor([0, 0])
    logits = CombinedMarginLoss(s=2.0, m1=1.2, m2=0.3, m3=0.2)(cos, lab)
    for row, c in enumerate((0.7, -0.9)):
        expect = 2 * (math.cos(1.2 * math.acos(c) + 0.3) - 0.2)
        assert logits[row, 0].item() == pytest.approx(expect, abs=1e-5)
    assert logits[0, 1].item() == pytest.approx(0.4, abs=1e-6)
    with pytest.raises(ValueError, match="m1"):
        CombinedMarginLoss(m1=0.0)


def test_label_minus_one_gets_no_margin() -> None:
    cos = _cos([[0.5, 0.4], [0.5, 0.4]])
    logits = arcface(s=1.0)(cos, torch.tensor([-1, 1]))
    assert logits[0].tolist() == pytest.approx([0.5, 0.4])
    assert logits[1, 1].item() == pytest.approx(math.cos(math.acos(0.4) + 0.5), abs=1e-6)


def test_fp32_under_autocast_and_finite_gradient_at_cos_one() -> None:
    cos = torch.tensor([[1.0, 0.0], [-1.0, 0.3]], requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = arcface()(cos.to(torch.bfloat16), torch.tensor([0, 0]))
    assert logits.dtype == torch.float32
    logits.sum().backward()
    assert torch.isfinite(cos.grad).all()


def test_arc_margin_accepts_per_sample_margin() -> None:
    out = arc_margin(torch.tensor([0.5, 0.5]), torch.tensor([0.1, 0.6]), easy_margin=False)
    assert out.tolist() == pytest.approx([math.cos(math.acos(0.5) + m) for m in (0.1, 0.6)], abs=1e-6)


def test_focal_loss_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    labels = torch.tensor([0, 2])
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist(), strict=True):
        logp = -(row[y] - math.log(sum(math.exp(v) for v in row)))
        total += (1 - math.exp(-logp)) ** 2 * logp
    assert FocalLoss(2.0)(logits, labels).item() == pytest.approx(total / 2, abs=1e-6)
    assert FocalLoss(0.0)(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item())
