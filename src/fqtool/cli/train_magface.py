"""``fqtool train-magface``: MagFace training (magnitude = quality)."""

from __future__ import annotations

from fqtool.cli.train_options import training_command

command = training_command(
    "magface",
    """Train a MagFace model: the embedding's magnitude becomes its quality.

    Defaults reproduce MagFace's run.sh: iresnet50, batch 512, SGD lr 0.1 (×0.1 at epochs 10, 18, 22),
    25 epochs, wd 5e-4, s=64, l_a 10, u_a 110, l_m 0.45, u_m 0.8, λ_g 35; --loss mag-cosface takes
    run_dist_cos.sh's l_m 0.35 and λ_g 150. Under torchrun it runs DDP with Partial FC. See
    docs/train-magface.md.
    """,
)
