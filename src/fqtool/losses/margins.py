"""Additive angular / cosine margins (ArcFace, CosFace and their combination).

A margin turns the cosine matrix ``cos`` (B, C) between L2-normalised embeddings and class centres into
scaled logits for softmax cross entropy: only the target column is changed. The maths runs in fp32 with
autocast switched off, because ``cos(θ + m)`` near θ≈0 and the ``th``/``mm`` fallback lose their meaning
in fp16 (a ``cos`` of 0.9999 is 1.0 in half precision).

Labels of ``-1`` mark rows whose target class lives on another Partial FC shard: those rows get no margin
here (the rank owning the class applies it).

Every margin has the same call, ``margin(cos, labels, *, norms=None, quality=None) -> logits``, and may add a
loss term through ``margin.penalty(...)`` (MagFace's regulariser, CR-FIQA's quality regression), so the head
never asks which margin it holds. The registry of losses is :mod:`fqtool.losses.registry`.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from torch import Tensor

# sin θ is computed as sqrt(1 − cos²θ); its derivative is infinite at |cos| = 1. The floor keeps the
# gradient finite (the clamp then passes a zero gradient) and changes sin θ by at most 1e-6.
_SIN2_FLOOR = 1e-12


def fp32_region(t: Tensor) -> AbstractContextManager[None]:
    """A context with autocast disabled on ``t``'s device, so margin maths stays in fp32 under AMP."""
    return torch.autocast(device_type=t.device.type, enabled=False)


@dataclass
class Penalty:
    """An extra loss term of a margin: ``value`` (scalar, *not* yet weighted) and detached statistics.

    ``stats`` hold per-sample values (B,) for logging (their mean and a histogram).
    """

    value: Tensor
    stats: dict[str, Tensor] = field(default_factory=dict)


class Margin:
    """The interface of every margin: logits from cosines, an optional penalty, what it consumes.

    ``penalty_weight`` multiplies :meth:`penalty` in the head's loss; ``penalty_name`` names it in the
    logs (``loss/<name>``). ``takes_quality``: the head may pass a per-sample quality (B,).
    """

    penalty_weight: float = 0.0
    penalty_name: str = ""
    takes_quality: bool = False

    def __call__(
        self, cos: Tensor, labels: Tensor, *, norms: Tensor | None = None, quality: Tensor | None = None
    ) -> Tensor:
        """Scaled logits (B, C) fp32 from cosines (B, C) and labels (B,) (−1 = not on this shard)."""
        raise NotImplementedError

    def penalty(
        self, cos: Tensor, labels: Tensor, *, norms: Tensor | None = None, quality: Tensor | None = None
    ) -> Penalty | None:
        """The margin's extra loss term over the batch, or None (the default)."""
        return None


def angular_margin(cos: Tensor, m1: float, m2: Tensor | float) -> Tensor:
    """``cos(m1·θ + m2)`` with θ = arccos(cos), without any fallback past π.

    θ is computed as ``atan2(sin θ, cos θ)`` with the same floor on sin² as :func:`arc_margin`, so the
    gradient stays finite at cos = ±1 (``acos`` has an infinite derivative there).
    """
    sin = torch.sqrt((1.0 - cos * cos).clamp(min=_SIN2_FLOOR))
    return torch.cos(torch.atan2(sin, cos) * m1 + m2)


def arc_margin(cos: Tensor, m: Tensor | float, easy_margin: bool = False) -> Tensor:
    """``cos(θ + m)`` with ArcFace's guard against a non-monotonic target logit.

    For θ + m > π, cos(θ + m) would rise again, rewarding a *larger* angle. The standard fix (ArcFace,
    MagFace, EQFace) switches to the CosFace-like ``cos θ − mm`` past ``th = cos(π − m)`` with
    ``mm = sin(π − m)·m``. ``easy_margin`` instead applies the margin only where cos θ > 0 (θ < 90°).
    ``m`` may be a tensor broadcastable to ``cos`` (MagFace's per-sample margin).
    """
    m_t = torch.as_tensor(m, dtype=cos.dtype, device=cos.device)
    sin = torch.sqrt((1.0 - cos * cos).clamp(min=_SIN2_FLOOR))
    phi = cos * torch.cos(m_t) - sin * torch.sin(m_t)
    if easy_margin:
        return torch.where(cos > 0, phi, cos)
    th = torch.cos(math.pi - m_t)
    mm = torch.sin(math.pi - m_t) * m_t
    return torch.where(cos > th, phi, cos - mm)


def replace_target(cos: Tensor, labels: Tensor, new_target: Tensor) -> Tensor:
    """Return ``cos`` with ``cos[i, labels[i]]`` replaced by ``new_target[i]`` where ``labels[i] >= 0``.

    Out of place (autograd-friendly). ``new_target`` is a function of the target cosines, see
    :func:`target_cos`.
    """
    valid = labels >= 0
    index = labels.clamp(min=0).unsqueeze(1)
    return cos.scatter(1, index, torch.where(valid, new_target, target_cos(cos, labels)).unsqueeze(1))


def target_cos(cos: Tensor, labels: Tensor) -> Tensor:
    """The target cosine per row (B,); rows with label −1 read column 0 (their value is not used).

    Indexing, not ``gather``: autograd keeps only the indices for it, where ``gather`` keeps the whole
    (B, C) input for backward.
    """
    rows = torch.arange(cos.shape[0], device=cos.device)
    return cos[rows, labels.clamp(min=0)]


class CombinedMarginLoss(Margin):
    """``s·(cos(m1·θ_y + m2) − m3)`` on the target, ``s·cos θ_j`` elsewhere (arcface_torch's margin_list).

    ``(m1, m2, m3) = (1, 0.5, 0)`` is ArcFace, ``(1, 0, 0.4)`` CosFace; ``(1, 0.3, 0.2)`` the ArcFace
    paper's combined margin. With ``m1 = 1`` the angular part is the classic differentiable form with the
    ``th``/``mm`` fallback (or ``easy_margin``), as in the ArcFace paper, MagFace and EQFace (current
    arcface_torch uses a straight-through ``arccos`` instead). ``m1 ≠ 1`` (SphereFace's multiplicative
    margin, which arcface_torch rejects) uses insightface's original combined form ``cos(m1·θ + m2)``
    with no fallback.
    """

    def __init__(
        self, s: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0, easy_margin: bool = False
    ) -> None:
        if not m1 > 0:
            raise ValueError(f"m1={m1}: the multiplicative margin must be > 0 (1 = none)")
        if s <= 0 or m2 < 0 or m3 < 0:
            raise ValueError(f"need s > 0 and m2, m3 >= 0, got s={s}, m2={m2}, m3={m3}")
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.easy_margin = bool(easy_margin)

    def target_logit(self, cos_y: Tensor) -> Tensor:
        """The unscaled target value ``cos(m1·θ + m2) − m3`` (fp32)."""
        if self.m1 != 1.0:
            out = angular_margin(cos_y, self.m1, self.m2)
        else:
            out = arc_margin(cos_y, self.m2, self.easy_margin) if self.m2 > 0 else cos_y
        return out - self.m3 if self.m3 > 0 else out

    def margin_cos(self, cos: Tensor, labels: Tensor) -> Tensor:
        """Cosines with the margin applied to the target column, not yet scaled by ``s``."""
        cos = cos.float()
        with fp32_region(cos):
            return replace_target(cos, labels, self.target_logit(target_cos(cos, labels)))

    def __call__(
        self, cos: Tensor, labels: Tensor, *, norms: Tensor | None = None, quality: Tensor | None = None
    ) -> Tensor:
        """Scaled logits (B, C) fp32 from cosines (B, C) and labels (B,) (−1 = not on this shard)."""
        with fp32_region(cos):
            return self.margin_cos(cos, labels) * self.s

    def __repr__(self) -> str:
        return (
            f"CombinedMarginLoss(s={self.s}, m1={self.m1}, m2={self.m2}, m3={self.m3}, "
            f"easy_margin={self.easy_margin})"
        )


def arcface(s: float = 64.0, m: float = 0.5, easy_margin: bool = False) -> CombinedMarginLoss:
    """ArcFace: ``s·cos(θ_y + m)`` (insightface defaults s=64, m=0.5)."""
    return CombinedMarginLoss(s=s, m1=1.0, m2=m, m3=0.0, easy_margin=easy_margin)


def cosface(s: float = 64.0, m: float = 0.4) -> CombinedMarginLoss:
    """CosFace: ``s·(cos θ_y − m)`` (arcface_torch's margin_list (1.0, 0.0, 0.4))."""
    return CombinedMarginLoss(s=s, m1=1.0, m2=0.0, m3=m)
