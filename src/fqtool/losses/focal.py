"""Focal loss on the per-sample cross entropy (EQFace's ``FocalLoss``).

``logp = CE(logits, y)`` per sample, ``p = exp(−logp)`` (the target probability) and
``loss = mean((1 − p)^γ · logp)``. Easy samples (p → 1) are down-weighted. γ = 0 is plain CE.
Applied per sample — some public ArcFace ports apply the factor to the already averaged CE, which is
a different (and nearly pointless) loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def focal_weighting(neg_logp: Tensor, gamma: float) -> Tensor:
    """``(1 − p)^γ · logp`` per sample from ``−log p_y`` (B,); γ = 0 returns ``neg_logp`` unchanged.

    Kept separate so the distributed cross entropy (which computes ``−log p_y`` across shards) can
    reuse it.
    """
    if gamma == 0:
        return neg_logp
    p = torch.exp(-neg_logp)
    return (1.0 - p).pow(gamma) * neg_logp


class FocalLoss:
    """Callable ``(logits (B, C), labels (B,)) -> scalar``: focal-weighted CE, mean over the batch."""

    def __init__(self, gamma: float = 2.0) -> None:
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        logits = logits.float()
        with torch.autocast(device_type=logits.device.type, enabled=False):
            neg_logp = F.cross_entropy(logits, labels, reduction="none")
            return focal_weighting(neg_logp, self.gamma).mean()

    def __repr__(self) -> str:
        return f"FocalLoss(gamma={self.gamma})"
