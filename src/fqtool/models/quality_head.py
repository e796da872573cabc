"""Quality heads: EQFace's MLP on the flattened feature map and CR-FIQA's regressor on the embedding.

EQFace: Linear(C·7·7 → 512, no bias) → BN1d → ReLU → Linear(512 → 2, no bias) → softmax; the quality is
the first probability. The attribute is spelled ``qualtiy`` as in EQFace, so ``quality.pth`` loads as is.
CR-FIQA: ``qs`` = Linear(E, 1) on the embedding. :func:`head_from_state` rebuilds either from its tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from fqtool.errors import CheckpointError, FqtoolError
from fqtool.models._state import few_keys, load_state_checked


class QualityHead(nn.Module):
    #: The quality method this head serves (see ``fqtool.models.face_model.MODEL_QUALITY_METHODS``).
    quality_method = "head"

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


class RegressionHead(nn.Module):
    """CR-FIQA's quality regressor ``qs`` = Linear(E, 1) on the embedding (the backbone's BN1d output).

    Heads receive the flattened pre-``fc`` map, so the embedding is recomputed from it with the backbone's
    own ``fc`` and ``features``. The backbone is held by reference, not registered as a child, so its
    weights are saved once (under ``backbone.*``) and the head's state dict is just ``qs.*``.
    """

    quality_method = "crfiqa"

    def __init__(self, backbone: nn.Module, embedding_size: int) -> None:
        super().__init__()
        if not (hasattr(backbone, "fc") and hasattr(backbone, "features")):
            raise FqtoolError("a CR-FIQA quality regressor needs an iResNet backbone")
        self.qs = nn.Linear(embedding_size, 1)
        self._backbone = [backbone]

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        backbone = self._backbone[0]
        embedding = backbone.features(backbone.fc(flat.float()))
        return self.qs(embedding)[:, 0]


def head_from_state(
    state: Mapping[str, torch.Tensor], backbone: nn.Module, path: Path | None
) -> nn.Module | None:
    """Build and load a quality head from its tensors: EQFace's ``qualtiy.*`` MLP or CR-FIQA's ``qs``
    regressor (``None`` when there are none)."""
    if not state:
        return None
    if "qs.weight" in state:
        head = RegressionHead(backbone, int(state["qs.weight"].shape[1]))
        load_state_checked(head, state, what="the CR-FIQA quality regressor", path=path)
        return head
    first = state.get("qualtiy.0.weight")
    if first is None or first.dim() != 2:
        raise CheckpointError(f"not an EQFace-style quality head: {few_keys(sorted(state))}", path)
    hidden, in_features = (int(n) for n in first.shape)
    if in_features != backbone.feature_dim:
        raise CheckpointError(
            f"quality head takes {in_features} features but the backbone gives {backbone.feature_dim} "
            "(weights for another backbone?)",
            path,
        )
    head = QualityHead(in_features, hidden)
    load_state_checked(head, state, what="the quality head", path=path)
    return head
