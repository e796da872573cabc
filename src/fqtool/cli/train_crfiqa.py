"""``fqtool train-crfiqa``: CR-FIQA training (a regressor learns each sample's certainty ratio)."""

from __future__ import annotations

from fqtool.cli.train_options import training_command

command = training_command(
    "crfiqa",
    """Train a CR-FIQA model from scratch: backbone + ArcFace + a quality regressor.

    The regressor qs = Linear(512, 1) on the embedding learns the certainty ratio CCS/NNCCS of each image
    (loss CE + α·SmoothL1, α 10, β 0.5; --cr-target paper for the paper's CCS/(NNCCS+1+ε)) and is saved
    as the quality head, so `score` uses it. Defaults follow fdbtrs/CR-FIQA on CASIA-WebFace: iresnet50
    with dropout 0.4, ArcFace s=64 m=0.5, SGD lr 0.1 × global batch/512, batch 128 per process, 34 epochs
    (×0.1 after 19, 27, 31), wd 5e-4, gradient clip 5. See docs/train-crfiqa.md.
    """,
)
