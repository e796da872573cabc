"""EQFace's quality-weighted ArcFace (``GaussianFace``) — quality acts as a per-sample softmax scale.

Logits are the ArcFace margin logits (``th``/``mm`` fallback, s=64, m=0.5) multiplied by
``s·conf`` with ``conf = clamp(q − 0.2, 0, 1)·1.2``. There is no quality target: with a focal
(γ=2) cross entropy, a high ``q`` sharpens the softmax and lowers the loss of well-classified samples,
a low ``q`` flattens it for hard ones, so the quality head learns recognisability. Without ``q`` the
margin is plain ArcFace (EQFace stage 1).
"""

from __future__ import annotations

from torch import Tensor

from .margins import CombinedMarginLoss, Margin, fp32_region

#: EQFace's offset and gain in ``conf = clamp(q − 0.2, 0, 1)·1.2``.
EQFACE_Q_OFFSET = 0.2
EQFACE_Q_GAIN = 1.2


def eqface_confidence(quality: Tensor) -> Tensor:
    """``clamp(q − 0.2, 0, 1)·1.2`` in fp32: q ≤ 0.2 gives a flat softmax, q = 1 a scale of 0.96·s."""
    return (quality.float() - EQFACE_Q_OFFSET).clamp(0.0, 1.0) * EQFACE_Q_GAIN


class EQFaceMargin(Margin):
    """Callable ``(cos (B, C), labels (B,), *, quality (B,) | None) -> logits (B, C)`` fp32."""

    takes_quality = True

    def __init__(self, s: float = 64.0, m: float = 0.5) -> None:
        self.arc = CombinedMarginLoss(s=s, m1=1.0, m2=m, m3=0.0, easy_margin=False)
        self.s, self.m = float(s), float(m)

    def __call__(
        self, cos: Tensor, labels: Tensor, *, norms: Tensor | None = None, quality: Tensor | None = None
    ) -> Tensor:
        with fp32_region(cos):
            logits = self.arc.margin_cos(cos, labels) * self.s
            if quality is None:
                return logits
            return logits * eqface_confidence(quality).unsqueeze(1)

    def __repr__(self) -> str:
        return f"EQFaceMargin(s={self.s}, m={self.m})"
