"""``fqtool train-quality``: EQFace stage 2, a quality head learnt without quality labels."""

from __future__ import annotations

from fqtool.cli.train_options import HEAD_WEIGHTS, WEIGHTS, training_command

command = training_command(
    "quality",
    """Learn EQFace's quality head on a frozen stage-1 model (no quality labels needed).

    The stage-1 backbone stays frozen; a quality head and the stage-1 class centres are trained with the
    quality-weighted focal ArcFace loss (SGD lr 0.01, no weight decay). The output is the stage-1 model
    with its quality head. See docs/train-quality.md.
    """,
    {"weights": WEIGHTS, "head_weights": HEAD_WEIGHTS},
)
