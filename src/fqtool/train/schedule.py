"""Learning-rate schedules as pure functions of the global step (so resuming needs only the step).

* ``step``: multiply by ``lr_gamma`` at each epoch in ``lr_steps`` (MagFace: 10, 18, 22 → ×0.1 each).
* ``cosine``: half cosine from the base lr down to ``min_lr`` over the run (EQFace-style).

Both start with a linear warm-up over ``warmup_epochs`` (0 = none).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


def lr_factor(
    step: int,
    steps_per_epoch: int,
    total_steps: int,
    *,
    schedule: str = "step",
    lr_steps: Sequence[float] = (),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
    min_ratio: float = 0.0,
) -> float:
    """The multiplier of the base learning rate at ``step`` (0-based: the step about to be taken)."""
    epoch = step / max(steps_per_epoch, 1)
    warmup_steps = warmup_epochs * steps_per_epoch
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1.0)
        progress = min(max((step - warmup_steps) / span, 0.0), 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    drops = bisect.bisect_right(sorted(lr_steps), epoch + 1e-9)
    return gamma**drops


def set_lr(optimizer, factor: float) -> None:
    """Scale every parameter group's ``initial_lr`` by ``factor``."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
