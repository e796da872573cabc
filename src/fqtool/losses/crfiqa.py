"""CR-FIQA (Boutros et al., CVPR 2023): ArcFace plus a regression of each sample's certainty ratio.

* Logits: ArcFace ``s·cos(acos(cos θ_y) + m)``, s = 64, m = 0.5, with **no** ``th``/``mm`` fallback and no
  easy margin (``CR_FIQA_LOSS`` of fdbtrs/CR-FIQA ``losses.py``).
* CCS = cos θ_y (before the margin), NNCCS = max_{j≠y} cos θ_j, both without gradient. Under Partial FC
  both are maxima over all shards (and over the sampled centres when ``sample_rate < 1``).
* Penalty ``SmoothL1_β(qs, CR)`` with β = 0.5, weighted by α = 10 in the head, where the target CR is
  ``CCS / NNCCS`` (``target="code"``, what ``train_cr_fiqa.py`` computes) or the paper's
  ``CCS / (NNCCS + 1 + ε)`` (``target="paper"``). ``qs`` is the regression head's output (B,), passed to
  the head as ``quality``.

The official code masks the target with −1e-12 (not −inf) before taking NNCCS; that differs only when
every other cosine of a row is negative, which does not happen with thousands of classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .distributed import all_reduce_max
from .margins import Margin, Penalty, angular_margin, fp32_region, replace_target, target_cos

#: ε of the paper's form ``CCS / (NNCCS + 1 + ε)``.
PAPER_EPS = 1e-9
CR_TARGETS = ("code", "paper")


def certainty_scores(cos: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(CCS, NNCCS)`` per row (B,), detached; global over Partial FC shards (label −1 = elsewhere)."""
    with torch.no_grad():
        cos = cos.float()
        valid = labels >= 0
        minus_inf = torch.full_like(cos[:, 0], float("-inf"))
        ccs = torch.where(valid, target_cos(cos, labels), minus_inf)
        masked = replace_target(cos, labels, minus_inf)
        both = all_reduce_max(torch.stack([ccs, masked.max(dim=1).values], dim=1))
        return both[:, 0], both[:, 1]


def certainty_ratio(ccs: Tensor, nnccs: Tensor, target: str = "code") -> Tensor:
    """The regression target: ``CCS/NNCCS`` (code) or ``CCS/(NNCCS + 1 + ε)`` (paper)."""
    if target == "code":
        return ccs / nnccs
    if target == "paper":
        return ccs / (nnccs + 1.0 + PAPER_EPS)
    raise ValueError(f"unknown CR-FIQA target {target!r}; choose one of {', '.join(CR_TARGETS)}")


class CRFIQAMargin(Margin):
    """ArcFace logits (acos form) and the certainty-ratio regression penalty of CR-FIQA."""

    penalty_name = "quality"
    takes_quality = True

    def __init__(
        self, s: float = 64.0, m: float = 0.5, alpha: float = 10.0, beta: float = 0.5, target: str = "code"
    ) -> None:
        if s <= 0 or m < 0 or alpha < 0 or beta <= 0:
            raise ValueError(f"need s > 0, m >= 0, alpha >= 0, beta > 0, got s={s}, m={m}, alpha={alpha}, "
                             f"beta={beta}")
        if target not in CR_TARGETS:
            raise ValueError(f"unknown CR-FIQA target {target!r}; choose one of {', '.join(CR_TARGETS)}")
        self.s, self.m, self.alpha, self.beta = float(s), float(m), float(alpha), float(beta)
        self.target = target

    @property
    def penalty_weight(self) -> float:  # type: ignore[override]
        return self.alpha

    def __call__(
        self, cos: Tensor, labels: Tensor, *, norms: Tensor | None = None, quality: Tensor | None = None
    ) -> Tensor:
        """``s·cos(acos(cos θ_y) + m)`` on the target column, ``s·cos θ_j`` elsewhere (fp32)."""
        cos = cos.float()
        with fp32_region(cos):
            new = angular_margin(target_cos(cos, labels), 1.0, self.m)
            return replace_target(cos, labels, new) * self.s

    def penalty(
        self, cos: Tensor, labels: Tensor, *, norms: Tensor | None = None, quality: Tensor | None = None
    ) -> Penalty:
        """``SmoothL1_β(qs, CR)`` over the batch (not yet multiplied by α) and CCS, NNCCS, CR per sample."""
        if quality is None:
            raise ValueError("the CR-FIQA loss needs the regression head's output (quality=qs)")
        ccs, nnccs = certainty_scores(cos, labels)
        ratio = certainty_ratio(ccs, nnccs, self.target)
        with fp32_region(cos):
            value = F.smooth_l1_loss(quality.float(), ratio, beta=self.beta)
        return Penalty(value, {"ccs": ccs, "nnccs": nnccs, "cr": ratio})

    def __repr__(self) -> str:
        return (f"CRFIQAMargin(s={self.s}, m={self.m}, alpha={self.alpha}, beta={self.beta}, "
                f"target={self.target!r})")


__all__ = ["CRFIQAMargin", "certainty_ratio", "certainty_scores"]
