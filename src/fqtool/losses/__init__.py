"""Margin losses and classification heads (single process or Partial FC). See ``docs/losses.md``.

Entry points for the trainer: :func:`build_head`, :func:`check_labels`, :class:`HeadOutput`,
:meth:`ClassificationHead.full_state_dict` / :meth:`~ClassificationHead.load_full_state_dict` and
:func:`shard_slice`.
"""

from .eqface import EQFaceMargin, eqface_confidence
from .focal import FocalLoss, focal_weighting
from .heads import HEAD_KINDS, ClassificationHead, HeadOutput, LabelError, build_head, check_labels
from .magface import MagFaceMargin, mag_cosface, magface_lambda_min, magface_norm_stats
from .margins import CombinedMarginLoss, arc_margin, arcface, cosface
from .partial_fc import distributed_cross_entropy, sample_centres, shard_range, shard_slice

__all__ = [
    "HEAD_KINDS",
    "ClassificationHead",
    "CombinedMarginLoss",
    "EQFaceMargin",
    "FocalLoss",
    "HeadOutput",
    "LabelError",
    "MagFaceMargin",
    "arc_margin",
    "arcface",
    "build_head",
    "check_labels",
    "cosface",
    "distributed_cross_entropy",
    "eqface_confidence",
    "focal_weighting",
    "mag_cosface",
    "magface_lambda_min",
    "magface_norm_stats",
    "sample_centres",
    "shard_range",
    "shard_slice",
]
