"""The one place that knows each loss: its margin class, its settings with their defaults, and its help.

The head builder (:func:`fqtool.losses.build_head`), the training configuration's validation and
defaults (:mod:`fqtool.train.config`), the ``--loss`` choices and the help of every loss option of the
``train-*`` commands are all generated from :data:`LOSSES`. This module imports no torch, so the CLI can
build its help from it without loading PyTorch.

A :class:`LossParam` maps one keyword of the margin class to one training setting (a ``TrainConfig``
field and its ``--option``) with its default, valid range (or choices) and help: ``--margin`` is ``m2`` for
ArcFace but ``m3`` for CosFace, and ``--scale`` is ``s`` everywhere. ``LossSpec.focal_gamma`` is the focal
γ a loss trains with when ``--focal-gamma`` is not given.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Range:
    """An interval of valid values; ``open_low``/``open_high`` exclude the end."""

    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"> {self.low:g}" if self.open_low else f">= {self.low:g}"
        left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


POSITIVE, NON_NEGATIVE = Range(0.0, open_low=True), Range(0.0)
#: Angular (and cosine) margins: 0 to π/2.
MARGIN = Range(0.0, math.pi / 2)


@dataclass(frozen=True)
class LossParam:
    """One setting of a loss: margin keyword ``name``, configuration field ``option``, default, help, and
    the valid values: a numeric ``valid`` range, or the ``choices`` of a string setting."""

    name: str
    option: str
    default: float | str
    help: str
    valid: Range | None = None
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.option.replace("_", "-")


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: ``margin`` is ``"module:Class"`` (imported on demand, torch stays unloaded);
    ``help`` is one phrase (the CLI lists ``name: help``)."""

    name: str
    margin: str
    params: tuple[LossParam, ...]
    help: str
    fixed: dict[str, Any] = field(default_factory=dict)
    focal_gamma: float = 0.0

    @property
    def defaults(self) -> dict[str, Any]:
        """Every keyword the margin class receives when nothing is overridden (``fixed`` included)."""
        return {**{p.name: p.default for p in self.params}, **self.fixed}

    @property
    def options(self) -> tuple[str, ...]:
        """The configuration fields this loss reads."""
        return tuple(p.option for p in self.params)

    def param(self, option: str) -> LossParam | None:
        return next((p for p in self.params if p.option == option), None)

    def margin_class(self) -> type:
        module, _, name = self.margin.partition(":")
        return getattr(importlib.import_module(module), name)

    def margin_kwargs(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Margin keywords from configuration values (``option → value``; missing or None → default)."""
        kwargs = dict(self.defaults)
        for p in self.params:
            value = settings.get(p.option)
            if value is not None:
                kwargs[p.name] = value
        return kwargs


_M = "fqtool.losses"
_SCALE = LossParam("s", "scale", 64.0, "Softmax scale s.", POSITIVE)


_MARGIN_HELP = "Additive margin m (angular for arcface, eqface; cosine for cosface)."


def _margin(name: str, default: float, text: str = _MARGIN_HELP) -> LossParam:
    return LossParam(name, "margin", default, text, MARGIN)


_MAG_BOUNDS = (
    LossParam("l_a", "l_a", 10.0, "Lower magnitude bound l_a.", POSITIVE),
    LossParam("u_a", "u_a", 110.0, "Upper magnitude bound u_a.", POSITIVE),
)


def _mag_params(l_m: float, lambda_g: float) -> tuple[LossParam, ...]:
    return (
        _SCALE,
        *_MAG_BOUNDS,
        LossParam("l_m", "l_m", l_m, "Margin at l_a.", MARGIN),
        LossParam("u_m", "u_m", 0.8, "Margin at u_a.", MARGIN),
        LossParam("lambda_g", "lambda_g", lambda_g, "Weight λ_g of the magnitude regulariser g(a).",
                  NON_NEGATIVE),
    )


#: Every loss fqtool trains with, in the order ``--help`` lists them.
LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec(
            "arcface", f"{_M}.margins:CombinedMarginLoss",
            (_SCALE, _margin("m2", 0.5)),
            "s·cos(θ_y + m) with the th/mm fallback past π",
            fixed={"m1": 1.0, "m3": 0.0, "easy_margin": False},
        ),
        LossSpec(
            "cosface", f"{_M}.margins:CombinedMarginLoss",
            (_SCALE, _margin("m3", 0.4)),
            "s·(cos θ_y − m)", fixed={"m1": 1.0, "m2": 0.0},
        ),
        LossSpec(
            "combined", f"{_M}.margins:CombinedMarginLoss",
            (
                _SCALE,
                LossParam("m1", "m1", 1.0, "Multiplicative angular margin m1 (1 = none).", POSITIVE),
                LossParam("m2", "m2", 0.3, "Additive angular margin m2.", MARGIN),
                LossParam("m3", "m3", 0.2, "Additive cosine margin m3.", MARGIN),
            ),
            "s·(cos(m1·θ_y + m2) − m3), arcface_torch's margin_list, by default the ArcFace paper's "
            "(1, 0.3, 0.2)",
            fixed={"easy_margin": False},
        ),
        LossSpec(
            "magface", f"{_M}.magface:MagFaceMargin", _mag_params(0.45, 35.0),
            "ArcFace with a margin m(a) growing with the magnitude a = ‖x‖, plus λ_g·g(a)",
            fixed={"easy_margin": True, "cos_margin": False},
        ),
        LossSpec(
            "mag-cosface", f"{_M}.magface:MagFaceMargin", _mag_params(0.35, 150.0),
            "s·(cos θ_y − m(a)) plus λ_g·g(a), MagFace's run_dist_cos.sh settings",
            fixed={"easy_margin": False, "cos_margin": True},
        ),
        LossSpec(
            "eqface", f"{_M}.eqface:EQFaceMargin",
            (_SCALE, _margin("m", 0.5)),
            "ArcFace logits scaled per sample by the quality (stage 2, 3), focal loss γ=2",
            focal_gamma=2.0,
        ),
        LossSpec(
            "crfiqa", f"{_M}.crfiqa:CRFIQAMargin",
            (
                _SCALE,
                _margin("m", 0.5, "Additive angular margin m: s·cos(acos(cos θ_y) + m), no fallback."),
                LossParam("alpha", "alpha", 10.0, "Weight α of the quality regression loss.", NON_NEGATIVE),
                LossParam("beta", "beta", 0.5, "β of the Smooth-L1 quality regression loss.", NON_NEGATIVE),
                LossParam("target", "cr_target", "code",
                          "Regression target: 'code' CCS/NNCCS (official code) or 'paper' "
                          "CCS/(NNCCS + 1 + ε).", choices=("code", "paper")),
            ),
            "ArcFace (acos form) + α·SmoothL1(qs, CR): a regressor learns the certainty ratio CR",
        ),
    )
}

#: Allowed values of the string-valued settings (from their ``LossParam.choices``).
PARAM_CHOICES: dict[str, tuple[str, ...]] = {
    p.option: p.choices for spec in LOSSES.values() for p in spec.params if p.choices
}


def loss_names() -> tuple[str, ...]:
    return tuple(LOSSES)


def get_loss(name: str) -> LossSpec:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None


def loss_options() -> tuple[str, ...]:
    """Every configuration field that some loss reads (each once, in registry order)."""
    seen: dict[str, None] = {}
    for spec in LOSSES.values():
        for option in spec.options:
            seen.setdefault(option, None)
    return tuple(seen)


__all__ = ["LOSSES", "MARGIN", "NON_NEGATIVE", "PARAM_CHOICES", "POSITIVE", "LossParam", "LossSpec", "Range",
           "get_loss", "loss_names", "loss_options"]
