"""EQFace's quality head: a small MLP on the backbone's flattened feature map.

Linear(C·7·7 → 512, no bias) → BN1d → ReLU → Linear(512 → 2, no bias) → softmax; the quality is the
first probability. The attribute is spelled ``qualtiy`` as in EQFace, so ``quality.pth`` loads as is.
"""

from __future__ import annotations

import torch
from torch import nn


class QualityHead(nn.Module):
    def __init__(self, in_features: int, hidden: int = 512) -> None:
        super().__init__()
        self.qualtiy = nn.Sequential(
            nn.Linear(in_features, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 2, bias=False),
            nn.Softmax(dim=1),
        )

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        """Quality in (0, 1), shape (N,)."""
        return self.qualtiy(flat.float())[:, 0]
