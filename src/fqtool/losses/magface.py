"""MagFace: a margin that grows with the feature magnitude, plus a regulariser that rewards magnitude.

With ``a = ‖x‖`` clamped to ``[l_a, u_a]``:

* margin ``m(a) = (u_m − l_m)/(u_a − l_a)·(a − l_a) + l_m`` (linear, ``m(l_a)=l_m``, ``m(u_a)=u_m``);
* regulariser ``g(a) = a/u_a² + 1/a`` (convex, minimum at ``u_a``), ``loss_g = mean_batch g(a)``;
* total ``L = CE(s·cos(θ_y + m(a)) | s·cos θ_j) + λ_g·loss_g``.

Easy samples can afford a large margin only at a large magnitude, so ``a`` becomes a quality score.
The clamp gives ``a`` a zero gradient outside the bounds (same as the official code).

``λ_g`` default: 35, the value of MagFace's ``run.sh`` and paper. The official ``argparse`` default (20)
is below the paper's own feasibility bound ``λ_min`` (≈22.59 for the defaults, see
:func:`magface_lambda_min`) — below it, g no longer dominates and the magnitude–quality monotonicity
proof does not hold; the official trainer prints that warning in red for 20.
"""

from __future__ import annotations

from torch import Tensor

from .margins import Margin, Penalty, arc_margin, fp32_region, replace_target, target_cos


def magface_lambda_min(
    s: float = 64.0, l_a: float = 10.0, u_a: float = 110.0, l_m: float = 0.45, u_m: float = 0.8
) -> float:
    """MagFace's smallest ``λ_g`` for which its theory holds: ``s·k·u_a²·l_a²/(u_a² − l_a²)``.

    ``k = (u_m − l_m)/(u_a − l_a)`` is the margin slope. Defaults give 22.5867 (printed as 22.59)
    """
    k = (u_m - l_m) / (u_a - l_a)
    return s * k * u_a**2 * l_a**2 / (u_a**2 - l_a**2)


class MagFaceMargin(Margin):
    """MagFace margin (ArcFace form, or Mag-CosFace with ``cos_margin=True``) and its regulariser.

    ``easy_margin=True`` is the official default (``MagLinear``/``ParallelMagLinear``; the builder never
    overrides it). Mag-CosFace (``cos − m(a)``) has no easy-margin switch; its published settings are
    ``l_m=0.35, u_m=0.8, λ_g=150`` (see :func:`mag_cosface`). Its penalty is the regulariser ``g(a)``,
    weighted by ``λ_g`` in the head.
    """

    penalty_name = "g"

    def __init__(
        self,
        s: float = 64.0,
        l_a: float = 10.0,
        u_a: float = 110.0,
        l_m: float = 0.45,
        u_m: float = 0.8,
        lambda_g: float = 35.0,
        easy_margin: bool = True,
        cos_margin: bool = False,
    ) -> None:
        if not 0 < l_a < u_a:
            raise ValueError(f"need 0 < l_a < u_a, got l_a={l_a}, u_a={u_a}")
        if s <= 0 or lambda_g < 0 or l_m < 0 or u_m < 0:
            raise ValueError(f"need s > 0 and lambda_g, l_m, u_m >= 0, got s={s}, lambda_g={lambda_g}")
        self.s, self.l_a, self.u_a = float(s), float(l_a), float(u_a)
        self.l_m, self.u_m, self.lambda_g = float(l_m), float(u_m), float(lambda_g)
        self.easy_margin, self.cos_margin = bool(easy_margin), bool(cos_margin)

    @property
    def penalty_weight(self) -> float:  # type: ignore[override]
        return self.lambda_g

    @property
    def lambda_min(self) -> float:
        """The feasibility bound for these settings (:func:`magface_lambda_min`)."""
        return magface_lambda_min(self.s, self.l_a, self.u_a, self.l_m, self.u_m)

    def clamp_norm(self, norms: Tensor) -> Tensor:
        """``a = clamp(‖x‖, l_a, u_a)`` in fp32."""
        return norms.float().clamp(self.l_a, self.u_a)

    def margin(self, a: Tensor) -> Tensor:
        """The adaptive margin ``m(a)`` (expects the clamped magnitude)."""
        return (self.u_m - self.l_m) / (self.u_a - self.l_a) * (a - self.l_a) + self.l_m

    def regularizer(self, a: Tensor) -> Tensor:
        """Per-sample ``g(a) = a/u_a² + 1/a`` (expects the clamped magnitude)."""
        return a / self.u_a**2 + 1.0 / a

    def margin_cos(self, cos: Tensor, labels: Tensor, norms: Tensor) -> Tensor:
        """Cosines with ``m(a)`` applied to each row's target column, not yet scaled by ``s``."""
        cos = cos.float()
        with fp32_region(cos):
            m = self.margin(self.clamp_norm(norms))
            cos_y = target_cos(cos, labels)
            new = cos_y - m if self.cos_margin else arc_margin(cos_y, m, self.easy_margin)
            return replace_target(cos, labels, new)

    def __call__(
        self, cos: Tensor, labels: Tensor, *, norms: Tensor | None = None, quality: Tensor | None = None
    ) -> Tensor:
        """Logits (B, C) from cosines (B, C), labels (B,) and the raw norms ``‖x‖`` (B,)."""
        with fp32_region(cos):
            return self.margin_cos(cos, labels, _need_norms(norms)) * self.s

    def penalty(
        self, cos: Tensor, labels: Tensor, *, norms: Tensor | None = None, quality: Tensor | None = None
    ) -> Penalty:
        """The batch mean of ``g(a)``, *not* multiplied by ``λ_g`` (MagFace's ``MagLoss`` convention)."""
        with fp32_region(cos):
            return Penalty(self.regularizer(self.clamp_norm(_need_norms(norms))).mean())

    def __repr__(self) -> str:
        return (
            f"MagFaceMargin(s={self.s}, l_a={self.l_a}, u_a={self.u_a}, l_m={self.l_m}, u_m={self.u_m}, "
            f"lambda_g={self.lambda_g}, easy_margin={self.easy_margin}, cos_margin={self.cos_margin})"
        )


def _need_norms(norms: Tensor | None) -> Tensor:
    if norms is None:
        raise ValueError("the MagFace margin needs the embedding norms (norms=...)")
    return norms


def mag_cosface(
    s: float = 64.0,
    l_a: float = 10.0,
    u_a: float = 110.0,
    l_m: float = 0.35,
    u_m: float = 0.8,
    lambda_g: float = 150.0,
) -> MagFaceMargin:
    """Mag-CosFace (``cos θ_y − m(a)``) with the settings of MagFace's ``run_dist_cos.sh``."""
    return MagFaceMargin(
        s=s, l_a=l_a, u_a=u_a, l_m=l_m, u_m=u_m, lambda_g=lambda_g, easy_margin=False, cos_margin=True
    )


def magface_norm_stats(norms: Tensor) -> dict[str, float]:
    """Mean/min/max of the magnitudes — what MagFace's trainer logs to watch ``a`` stay in bounds."""
    n = norms.detach().float()
    return {"mean": float(n.mean()), "min": float(n.min()), "max": float(n.max())}


__all__ = ["MagFaceMargin", "mag_cosface", "magface_lambda_min", "magface_norm_stats"]
