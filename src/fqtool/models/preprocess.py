"""Input preprocessing that travels with every model and checkpoint.

fqtool's data layer always yields **RGB uint8** images (N, 3, H, W). A :class:`Preprocess` turns them into
exactly what a given network was trained on: channel order, scale and mean/std. Mixing these up is
the classic reason a MagFace or EQFace checkpoint "does not reproduce": MagFace feeds BGR in [0, 1],
arcface_torch RGB in [-1, 1], EQFace RGB ``(x - 127.5) / 128``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocess:
    """``x = (pixels / 255 - mean) / std`` in the network's channel order, at ``size`` (H, W)."""

    size: tuple[int, int] = (112, 112)
    color: str = "RGB"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.color not in ("RGB", "BGR"):
            raise ValueError(f"color must be RGB or BGR, not {self.color!r}")
        size = tuple(self.size)
        if len(size) != 2 or not all(_is_number(n, numbers.Integral) and n > 0 for n in size):
            raise ValueError(f"preprocess size must be two positive integers, not {list(size)}")
        for name in ("mean", "std"):
            values = tuple(getattr(self, name))
            if len(values) != 3 or not all(_is_number(v) and math.isfinite(v) for v in values):
                raise ValueError(f"preprocess {name} must be three finite numbers, not {list(values)}")
        if not all(v > 0 for v in self.std):
            raise ValueError(f"preprocess std must be positive, not {list(self.std)}")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise RGB images (uint8 or float in 0..255, N×3×H×W) for the network."""
        x = images.float()
        if tuple(x.shape[-2:]) != tuple(self.size):
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        if self.color == "BGR":
            x = x.flip(1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * 255.0
        return (x - mean) / std

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        return cls(
            size=tuple(data.get("size", (112, 112))),
            color=data.get("color", "RGB"),
            mean=tuple(data.get("mean", (0.5, 0.5, 0.5))),
            std=tuple(data.get("std", (0.5, 0.5, 0.5))),
        )


def _is_number(value: object, kind: type = numbers.Real) -> bool:
    """``value`` is a ``kind`` (numpy scalars included) and not a bool."""
    return isinstance(value, kind) and not isinstance(value, bool)


#: fqtool's own models and insightface arcface_torch: RGB, (x/255 - 0.5) / 0.5.
ARCFACE = Preprocess(color="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
#: MagFace (cv2.imread + ToTensor, no normalisation): BGR, x/255.
MAGFACE = Preprocess(color="BGR", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
#: EQFace (deepcam-cn/FaceQuality): RGB, (x - 127.5) / 128.
EQFACE = Preprocess(color="RGB", mean=(0.5, 0.5, 0.5), std=(128 / 255,) * 3)

#: The input each family's weights were trained on; the one table importers, ``models`` and docs read.
FAMILY_PREPROCESS: dict[str, Preprocess] = {
    "magface": MAGFACE,
    "arcface_torch": ARCFACE,
    "eqface": EQFACE,
    "crfiqa": ARCFACE,  # CR-FIQA trains with arcface_torch's pipeline
    "fqtool": ARCFACE,
}
