"""``fqtool train-feature``: EQFace stage 1 (recognition) and stage 3 (quality-weighted recognition)."""

from __future__ import annotations

from fqtool.cli.train_options import QUALITY_WEIGHTS, training_command

command = training_command(
    "feature",
    """Train a recognition backbone (EQFace stage 1), or stage 3 with --quality-weights.

    Defaults follow EQFace: ArcFace s=64 m=0.5 with focal loss γ=2, SGD lr 0.05, cosine schedule with
    1 warm-up epoch, wd 5e-4 (0 on the class centres), iresnet100. --loss cosface or combined (m1, m2, m3)
    train the other arcface_torch margins. The class centres are saved as head.safetensors for
    train-quality. See docs/train-feature.md.
    """,
    {"quality_weights": QUALITY_WEIGHTS},
)
