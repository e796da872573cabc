"""MagFace margin/regulariser and EQFace quality scaling against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from fqtool.losses import EQFaceMargin, MagFaceMargin, eqface_confidence, mag_cosface, magface_lambda_min


def test_lambda_min_for_defaults() -> None:
    assert round(magface_lambda_min(), 2) == 22.59  # 22.5867
    k = 0.35 / 100
    assert magface_lambda_min() == pytest.approx(64 * k * 110**2 * 10**2 / (110**2 - 10**2))
    mag = MagFaceMargin()
    assert mag.lambda_g == 35.0 > mag.lambda_min > 20.0  # 20 (argparse default) would be infeasible
    assert mag.easy_margin is True


@pytest.mark.parametrize(
    ("norm", "a"), [(5.0, 10.0), (10.0, 10.0), (60.0, 60.0), (110.0, 110.0), (500.0, 110.0)]
)
def test_margin_and_regulariser_with_clamping(norm: float, a: float) -> None:
    mag = MagFaceMargin()
    m = 0.35 / 100 * (a - 10) + 0.45
    cos = torch.tensor([[0.6, 0.1]])
    logits = mag(cos, torch.tensor([0]), norms=torch.tensor([norm]))
    loss_g = mag.penalty(cos, torch.tensor([0]), norms=torch.tensor([norm])).value
    assert logits[0, 0].item() == pytest.approx(64 * math.cos(math.acos(0.6) + m), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(6.4, abs=1e-5)
    assert loss_g.item() == pytest.approx(a / 110**2 + 1 / a, abs=1e-7)


def test_regulariser_is_batch_mean_and_zero_grad_outside_bounds() -> None:
    norms = torch.tensor([5.0, 50.0, 200.0], requires_grad=True)
    loss_g = MagFaceMargin().penalty(torch.zeros(3, 2), torch.tensor([0, 1, 0]), norms=norms).value
    expect = sum(a / 110**2 + 1 / a for a in (10.0, 50.0, 110.0)) / 3
    assert loss_g.item() == pytest.approx(expect, abs=1e-7)
    loss_g.backward()
    assert norms.grad[0] == 0 and norms.grad[2] == 0
    assert norms.grad[1].item() == pytest.approx((1 / 110**2 - 1 / 50**2) / 3, abs=1e-8)


def test_magface_easy_margin_and_fallback() -> None:
    cos, lab, norms = torch.tensor([[-0.95, 0.0]]), torch.tensor([0]), torch.tensor([110.0])
    easy = MagFaceMargin(s=1.0)(cos, lab, norms=norms)
    assert easy[0, 0].item() == pytest.approx(-0.95, abs=1e-6)
    hard = MagFaceMargin(s=1.0, easy_margin=False)(cos, lab, norms=norms)
    m = 0.8
    assert math.cos(math.pi - m) > -0.95
    assert hard[0, 0].item() == pytest.approx(-0.95 - math.sin(math.pi - m) * m, abs=1e-6)


def test_mag_cosface() -> None:
    mag = mag_cosface()
    assert (mag.l_m, mag.u_m, mag.lambda_g, mag.cos_margin) == (0.35, 0.8, 150.0, True)
    logits = mag(torch.tensor([[-0.2, 0.5]]), torch.tensor([0]), norms=torch.tensor([60.0]))
    m = 0.45 / 100 * 50 + 0.35
    assert logits[0, 0].item() == pytest.approx(64 * (-0.2 - m), abs=1e-4)  # no easy margin


def test_eqface_confidence_scaling() -> None:
    q = torch.tensor([0.1, 0.2, 0.7, 1.0])
    assert eqface_confidence(q).tolist() == pytest.approx([0.0, 0.0, 0.6, 0.96], abs=1e-6)
    cos, lab = torch.tensor([[0.8, 0.1], [0.3, 0.5]]), torch.tensor([0, 1])
    logits = EQFaceMargin()(cos, lab, quality=torch.tensor([0.7, 0.05]))
    assert logits[0, 0].item() == pytest.approx(64 * 0.6 * math.cos(math.acos(0.8) + 0.5), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(64 * 0.6 * 0.1, abs=1e-5)
    assert logits[1].tolist() == [0.0, 0.0]
    plain = EQFaceMargin()(cos, lab)  # stage 1: plain ArcFace
    assert plain[0, 0].item() == pytest.approx(64 * math.cos(math.acos(0.8) + 0.5), abs=1e-4)


def test_eqface_th_mm_fallback() -> None:
    logits = EQFaceMargin(s=1.0)(torch.tensor([[-0.95]]), torch.tensor([0]), quality=torch.tensor([1.0]))
    assert logits.item() == pytest.approx((-0.95 - math.sin(math.pi - 0.5) * 0.5) * 0.96, abs=1e-6)


def test_magface_needs_norms() -> None:
    with pytest.raises(ValueError, match="norms"):
        MagFaceMargin()(torch.zeros(1, 2), torch.tensor([0]))
