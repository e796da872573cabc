"""Margin losses and classification heads (single process or Partial FC). See ``docs/losses.md``.

Entry points for the trainer: :func:`build_head`, :func:`check_labels`, :class:`HeadOutput`,
:meth:`ClassificationHead.full_state_dict` / :meth:`~ClassificationHead.load_full_state_dict` and
:func:`shard_slice`. The registry of losses (:data:`LOSSES`) imports no torch; everything else is loaded
on first use, so ``fqtool.losses.registry`` stays cheap for the command line.
"""

from __future__ import annotations

import importlib
from typing import Any

from .registry import LOSSES, LossParam, LossSpec, get_loss, loss_names  # noqa: F401

#: public name → submodule that defines it (imported on first access).
_LAZY = {
    "CRFIQAMargin": "crfiqa",
    "certainty_ratio": "crfiqa",
    "certainty_scores": "crfiqa",
    "EQFaceMargin": "eqface",
    "eqface_confidence": "eqface",
    "FocalLoss": "focal",
    "focal_weighting": "focal",
    "HEAD_KINDS": "heads",
    "ClassificationHead": "heads",
    "HeadOutput": "heads",
    "LabelError": "heads",
    "build_head": "heads",
    "check_labels": "heads",
    "make_margin": "heads",
    "MagFaceMargin": "magface",
    "mag_cosface": "magface",
    "magface_lambda_min": "magface",
    "magface_norm_stats": "magface",
    "CombinedMarginLoss": "margins",
    "Margin": "margins",
    "Penalty": "margins",
    "angular_margin": "margins",
    "arc_margin": "margins",
    "arcface": "margins",
    "cosface": "margins",
    "distributed_cross_entropy": "partial_fc",
    "sample_centres": "partial_fc",
    "shard_range": "partial_fc",
    "shard_slice": "partial_fc",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = sorted(["LOSSES", "LossParam", "LossSpec", "get_loss", "loss_names", *_LAZY])
