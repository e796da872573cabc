"""MobileFaceNet, laid out like insightface arcface_torch's ``mbf`` so its ``backbone.pth`` loads as is.

State-dict layout (reference-facts §a.5): ``layers.N`` (a ModuleList: stem, stage-1 block, then
down-sampling ``DepthWise`` units and ``Residual`` stacks), ``conv_sep`` (1×1 conv to 512) and ``features``
= GDC (``features.layers.0`` depthwise 7×7 conv + BN, ``.1`` flatten, ``.2`` Linear(512, E, no bias),
``.3`` BatchNorm1d). Every conv unit is a module whose only child is a ``layers`` Sequential, which is
what makes the keys read ``layers.2.layers.0.layers.0.weight``.

Quality-head input: ``forward_features`` returns the 512-d output of the GDC's depthwise 7×7 conv
(the globally pooled face descriptor just before the embedding ``Linear``), not the 512×7×7 map. An
EQFace-style head on it has 0.26 M parameters instead of 12.8 M, which keeps the model light.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class _Unit(nn.Module):
    """``conv → BN (→ PReLU)``, stored as ``layers.{0,1,2}`` (arcface_torch ConvBlock / LinearBlock)."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        super().__init__()
        padding = kernel // 2 if kernel == 3 else 0
        parts: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            parts.append(nn.PReLU(cout))
        self.layers = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _DepthWise(nn.Module):
    """Inverted bottleneck: 1×1 expand → 3×3 depthwise (stride) → 1×1 linear project (+ identity)."""

    def __init__(self, cin: int, cout: int, hidden: int, stride: int, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            _Unit(cin, hidden),
            _Unit(hidden, hidden, kernel=3, stride=stride, groups=hidden),
            _Unit(hidden, cout, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return out + x if self.residual else out


class _Residual(nn.Module):
    """``count`` residual depthwise units at constant width."""

    def __init__(self, channels: int, count: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(_DepthWise(channels, channels, hidden, 1, True) for _ in range(count)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _GDC(nn.Module):
    """Global depthwise conv head: 7×7 depthwise + BN, flatten, Linear (no bias), BN1d."""

    def __init__(self, channels: int, embedding_size: int, map_size: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _Unit(channels, channels, kernel=map_size, groups=channels, act=False),
            nn.Flatten(),
            nn.Linear(channels, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](self.layers[0](x))

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.layers[3](self.layers[2](pooled))


class MobileFaceNet(nn.Module):
    """MobileFaceNet (``mbf``: blocks (1, 4, 6, 2), scale 2; ``mbf_large``: (2, 8, 12, 4), 4).

    Takes the training options iResNet takes, so every recipe can train it: ``dropout`` acts on the
    512-d GDC descriptor before the embedding ``Linear`` (the descriptor is 1×1, so ``dropout_2d`` drops
    the same channels and only exists for the style tables); ``bn_eps``/``bn_momentum`` set every
    BatchNorm. None of them adds a weight: the state-dict layout stays arcface_torch's.
    """

    def __init__(
        self,
        embedding_size: int = 512,
        blocks: Sequence[int] = (1, 4, 6, 2),
        scale: int = 2,
        input_size: int = 112,
        dropout: float = 0.0,
        dropout_2d: bool = False,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if len(blocks) != 4:
            raise ValueError("MobileFaceNet needs four block counts")
        self.embedding_size = embedding_size
        c1, c2 = 64 * scale, 128 * scale
        if blocks[0] == 1:
            stage1: nn.Module = _Unit(c1, c1, kernel=3, groups=64)
        else:
            stage1 = _Residual(c1, blocks[0], hidden=128)
        self.layers = nn.ModuleList([
            _Unit(3, c1, kernel=3, stride=2),
            stage1,
            _DepthWise(c1, c1, hidden=128, stride=2, residual=False),
            _Residual(c1, blocks[1], hidden=128),
            _DepthWise(c1, c2, hidden=256, stride=2, residual=False),
            _Residual(c2, blocks[2], hidden=256),
            _DepthWise(c2, c2, hidden=512, stride=2, residual=False),
            _Residual(c2, blocks[3], hidden=256),
        ])
        self.conv_sep = _Unit(c2, 512)
        self.feature_dim = 512
        self.features = _GDC(512, embedding_size, input_size // 16)
        self.dropout_2d = dropout_2d
        self.dropout = nn.Dropout(p=dropout)
        self._init_weights()
        for module in self.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                module.eps, module.momentum = bn_eps, bn_momentum

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(embedding, pooled)``: the embedding and the 512-d GDC descriptor under it."""
        for layer in self.layers:
            x = layer(x)
        pooled = self.features.pooled(self.conv_sep(x))
        return self.embed_features(self.dropout(pooled.float())), pooled

    def embed_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """The embedding layer alone (GDC ``Linear`` + BN1d) on ``pooled`` from :meth:`forward_features`
        (after the dropout that training applies; SER-FIQ applies its own)."""
        return self.features.embed(pooled.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
