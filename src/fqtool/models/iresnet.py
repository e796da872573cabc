"""iResNet (improved ResNet for faces), one implementation for every family's checkpoints.

Module and state-dict key names follow the iResNet of MagFace and insightface arcface_torch
(``conv1``, ``bn1``, ``prelu``, ``layerN.i.{bn1,conv1,bn2,prelu,conv2,bn3,downsample}``, ``bn2``, ``fc``,
``features``), so their weights load without renaming. Their small differences are options:

* ``bn_eps`` / ``bn_momentum``: arcface_torch 1e-5 / 0.1; MagFace 2e-5 / 0.9 (an MXNet port artefact).
* ``dropout_2d``: MagFace applies ``Dropout2d`` to the 7×7 map before flattening; arcface_torch applies
  ``Dropout`` after flattening.
* ``freeze_features_scale``: arcface_torch fixes the last BatchNorm1d's γ to 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _bn2d(channels: int, eps: float, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


class IBasicBlock(nn.Module):
    """BN → conv3×3 → BN → PReLU → conv3×3 (stride) → BN, plus the (projected) identity."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.bn1 = _bn2d(inplanes, bn_eps, bn_momentum)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = _bn2d(planes, bn_eps, bn_momentum)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = _bn2d(planes, bn_eps, bn_momentum)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(x)
        out = self.prelu(self.bn2(self.conv1(out)))
        out = self.bn3(self.conv2(out))
        return out + identity


class IResNet(nn.Module):
    """iResNet backbone: 112×112 input → un-normalised embedding (its norm is MagFace's quality).

    ``forward_features`` also returns the flattened pre-``fc`` map, the input of EQFace's quality head.
    """

    def __init__(
        self,
        layers: Sequence[int],
        embedding_size: int = 512,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        input_size: int = 112,
        dropout: float = 0.0,
        dropout_2d: bool = False,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        freeze_features_scale: bool = False,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError("iResNet needs four stages")
        self.embedding_size = embedding_size
        self.conv1 = nn.Conv2d(3, stem_width, 3, stride=1, padding=1, bias=False)
        self.bn1 = _bn2d(stem_width, bn_eps, bn_momentum)
        self.prelu = nn.PReLU(stem_width)
        inplanes = stem_width
        for index, (blocks, planes) in enumerate(zip(layers, widths, strict=True), start=1):
            stage, inplanes = self._make_stage(inplanes, planes, blocks, bn_eps, bn_momentum)
            setattr(self, f"layer{index}", stage)
        self.bn2 = _bn2d(inplanes, bn_eps, bn_momentum)
        self.dropout_2d = dropout_2d
        self.dropout = nn.Dropout2d(p=dropout) if dropout_2d else nn.Dropout(p=dropout)
        map_size = input_size // 16
        self.feature_dim = inplanes * map_size * map_size
        self.fc = nn.Linear(self.feature_dim, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=bn_eps, momentum=bn_momentum)
        self._init_weights(init)
        if freeze_features_scale:
            nn.init.constant_(self.features.weight, 1.0)
            self.features.weight.requires_grad = False

    @staticmethod
    def _make_stage(
        inplanes: int, planes: int, blocks: int, bn_eps: float, bn_momentum: float
    ) -> tuple[nn.Sequential, int]:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride=2, bias=False),
            _bn2d(planes, bn_eps, bn_momentum),
        )
        modules = [IBasicBlock(inplanes, planes, 2, downsample, bn_eps, bn_momentum)]
        modules += [IBasicBlock(planes, planes, 1, None, bn_eps, bn_momentum) for _ in range(1, blocks)]
        return nn.Sequential(*modules), planes

    def _init_weights(self, init: str) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                if init == "normal":
                    nn.init.normal_(module.weight, 0, 0.1)
                else:
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.constant_(module.weight, 1.0)
                nn.init.constant_(module.bias, 0.0)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(embedding, flat)``: the embedding and the flattened map that feeds ``fc``."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.bn2(x)
        # MagFace drops whole channels of the 7×7 map; arcface_torch drops features after flattening.
        flat = torch.flatten(self.dropout(x), 1) if self.dropout_2d else self.dropout(torch.flatten(x, 1))
        return self.embed_features(flat), flat

    def embed_features(self, flat: torch.Tensor) -> torch.Tensor:
        """The embedding layer alone (``fc`` + ``features``) on ``flat`` from :meth:`forward_features`.

        Always fp32 (as arcface_torch): the norm is MagFace's quality. SER-FIQ runs only this part
        once per dropout pass.
        """
        device_type = flat.device.type
        if torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type=device_type, enabled=False):
                return self.features(self.fc(flat.float()))
        return self.features(self.fc(flat.float()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


#: Blocks per stage (reference-facts §a.1; 152 is EQFace's extra depth).
IRESNET_LAYERS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
    200: (6, 26, 60, 6),
}

#: Family conventions, as keyword presets for :class:`IResNet`.
STYLES: dict[str, dict] = {
    "arcface": {"bn_eps": 1e-5, "bn_momentum": 0.1, "dropout_2d": False},
    "magface": {"bn_eps": 2e-5, "bn_momentum": 0.9, "dropout_2d": True},
    "eqface": {"bn_eps": 1e-5, "bn_momentum": 0.1, "dropout_2d": False},
    "crfiqa": {"bn_eps": 1e-5, "bn_momentum": 0.1, "dropout_2d": False, "init": "normal"},
}
