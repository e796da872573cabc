"""Input preprocessing that travels with every model and checkpoint.

fqtool's data layer always yields **RGB uint8** images (N, 3, H, W). A :class:`Preprocess` turns them into
exactly what a given network was trained on: channel order, scale and mean/std. Mixing these up is
the classic reason a MagFace or EQFace checkpoint "does not reproduce": MagFace feeds BGR in [0, 1],
arcface_torch RGB in [-1, 1], EQFace RGB ``(x - 127.5) / 128``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from fqtool.errors import FqtoolError

#: Largest network input side accepted from a file's metadata or a --preprocess SPEC.
MAX_INPUT_SIDE = 4096


@dataclass(frozen=True)
class Preprocess:
    """``x = (pixels / 255 - mean) / std`` in the network's channel order, at ``size`` (H, W).

    ``layout`` is the graph input's memory order (``nchw``, or ``nhwc`` for TensorFlow-style ONNX graphs);
    torch models are always NCHW. ``margin`` is the crop convention: ``None`` for five-point aligned crops,
    else loose crops of the detector box plus that many pixels (MTCNN/FaceNet), which ``--align`` then cuts.
    """

    size: tuple[int, int] = (112, 112)
    color: str = "RGB"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    layout: str = "nchw"
    margin: float | None = None

    def __post_init__(self) -> None:
        if self.color not in ("RGB", "BGR"):
            raise ValueError(f"color must be RGB or BGR, not {self.color!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be {' or '.join(LAYOUTS)}, not {self.layout!r}")
        size = tuple(self.size)
        if len(size) != 2 or not all(_is_number(n, numbers.Integral) and n > 0 for n in size):
            raise ValueError(f"preprocess size must be two positive integers, not {list(size)}")
        if max(size) > MAX_INPUT_SIDE:  # h6 (25.11): a damaged size of 100000 would allocate 30 GB a batch
            raise ValueError(f"preprocess size {list(size)} is beyond {MAX_INPUT_SIDE} pixels a side")
        for name in ("mean", "std"):
            values = tuple(getattr(self, name))
            if len(values) != 3 or not all(_is_number(v) and math.isfinite(v) for v in values):
                raise ValueError(f"preprocess {name} must be three finite numbers, not {list(values)}")
        if not all(v > 0 for v in self.std):
            raise ValueError(f"preprocess std must be positive, not {list(self.std)}")
        if self.margin is not None and not (_is_number(self.margin) and 0 <= self.margin <= 4096):
            raise ValueError(f"preprocess margin must be 0 to 4096 pixels, not {self.margin!r}")

    def pixel_stats(self, dtype: torch.dtype = torch.float32, device=None) -> tuple[torch.Tensor, ...]:
        """Mean and std in pixel units (0..255), shaped 1×3×1×1 in the network's channel order."""
        mean = torch.tensor(self.mean, dtype=dtype, device=device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, dtype=dtype, device=device).view(1, 3, 1, 1) * 255.0
        return mean, std

    def normalize(self, x: torch.Tensor, stats: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """Float RGB N×3×H×W at the model's size → the network's input: colour order, then mean/std.

        The one place the arithmetic lives: :meth:`__call__` and the ONNX preprocessing graph
        (``export --include-preprocessing``, which passes its ``stats`` as buffers) both use it."""
        if self.color == "BGR":
            x = x.flip(1)
        mean, std = stats if stats is not None else self.pixel_stats(x.dtype, x.device)
        return (x - mean) / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise RGB images (uint8 or float in 0..255, N×3×H×W) for the network."""
        x = images.float()
        if tuple(x.shape[-2:]) != tuple(self.size):
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return self.normalize(x)

    def to_dict(self) -> dict:
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if data["layout"] == "nchw":
            data.pop("layout")  # as written before layouts existed
        if data["margin"] is None:
            data.pop("margin")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        return cls(
            size=tuple(data.get("size", (112, 112))),
            color=data.get("color", "RGB"),
            mean=tuple(data.get("mean", (0.5, 0.5, 0.5))),
            std=tuple(data.get("std", (0.5, 0.5, 0.5))),
            layout=data.get("layout", "nchw"),
            margin=data.get("margin"),
        )


LAYOUTS = ("nchw", "nhwc")


def _is_number(value: object, kind: type = numbers.Real) -> bool:
    """``value`` is a ``kind`` (numpy scalars included) and not a bool."""
    return isinstance(value, kind) and not isinstance(value, bool)


def _pixels(mean: float, std: float, color: str = "RGB", size: int = 112) -> Preprocess:
    """A preset from pixel-unit ``(x - mean) / std``."""
    return Preprocess(size=(size, size), color=color, mean=(mean / 255,) * 3, std=(std / 255,) * 3)


#: fqtool's own models and insightface arcface_torch: RGB, (x/255 - 0.5) / 0.5.
ARCFACE = Preprocess(color="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
#: MagFace (cv2.imread + ToTensor, no normalisation): BGR, x/255.
MAGFACE = Preprocess(color="BGR", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
#: EQFace (deepcam-cn/FaceQuality): RGB, (x - 127.5) / 128.
EQFACE = Preprocess(color="RGB", mean=(0.5, 0.5, 0.5), std=(128 / 255,) * 3)
#: FaceNet-style models: RGB, (x - 127.5) / 128 at 160 (facenet-pytorch's fixed standardisation), on MTCNN
#: loose crops with a 32-pixel margin (davidsandberg/facenet's LFW alignment: --image_size 160 --margin 32).
FACENET = replace(_pixels(127.5, 128.0, "RGB", 160), margin=32.0)

#: The input each family's weights were trained on: the one table importers, ``--preprocess``,
#: ``models`` and docs read. The first five are checkpoint families fqtool detects from keys; the rest
#: are presets for models that arrive as ONNX (or with ``--preprocess``).
FAMILY_PREPROCESS: dict[str, Preprocess] = {
    "magface": MAGFACE,
    "arcface_torch": ARCFACE,
    "eqface": EQFACE,
    "crfiqa": ARCFACE,  # CR-FIQA trains with arcface_torch's pipeline
    "fqtool": ARCFACE,
    "facenet": FACENET,
}
#: Other names of the presets above (insightface's model-zoo ONNX files take arcface_torch's input).
PRESET_ALIASES: dict[str, str] = {"arcface": "arcface_torch", "insightface": "arcface_torch"}

SPEC_HELP = (
    "a preset (" + ", ".join([*FAMILY_PREPROCESS, *PRESET_ALIASES]) + ") or "
    "size=160,mean=127.5,std=128,colour=rgb (pixel units; mean/std one value or three; colour rgb|bgr; "
    "layout nchw|nhwc; margin=32 for loose crops, margin=none for aligned), optionally after a preset: "
    "facenet,colour=bgr"
)


def preset(name: str) -> Preprocess:
    """The preprocessing of a preset name (or alias); ``FqtoolError`` for an unknown one."""
    key = name.strip().lower().replace("-", "_")
    key = PRESET_ALIASES.get(key, key)
    if key not in FAMILY_PREPROCESS:
        known = ", ".join([*FAMILY_PREPROCESS, *PRESET_ALIASES])
        raise FqtoolError(f"--preprocess {name!r}: unknown preset; known: {known}")
    return FAMILY_PREPROCESS[key]


def parse_preprocess(spec: str | Preprocess | None, base: Preprocess | None = None) -> Preprocess | None:
    """``--preprocess SPEC`` → :class:`Preprocess` (``None`` stays ``None``); see :data:`SPEC_HELP`.

    ``key=value`` items override the preset they follow (else ``base``, else arcface_torch's input); a
    bare number continues the previous key (``mean=123,117,104``). Errors are one :class:`FqtoolError`."""
    if spec is None or isinstance(spec, Preprocess):
        return spec
    text = str(spec).strip()
    if not text:
        raise FqtoolError("--preprocess is empty; give " + SPEC_HELP)
    items = [item.strip() for item in text.split(",")]
    result = base or ARCFACE
    if "=" not in items[0]:
        result, items = preset(items[0]), items[1:]
    values = _spec_values(items, text)
    try:
        return replace(result, **_spec_fields(values, text))
    except ValueError as exc:
        raise FqtoolError(f"--preprocess {text!r}: {exc}") from None


def _spec_values(items: list[str], text: str) -> dict[str, list[str]]:
    """``["size=160", "mean=1", "2", "3"]`` → ``{"size": ["160"], "mean": ["1", "2", "3"]}``."""
    values: dict[str, list[str]] = {}
    key = None
    for item in items:
        if "=" in item:
            key, _, value = item.partition("=")
            key = {"color": "colour"}.get(key.strip().lower(), key.strip().lower())
            if key not in _SPEC_KEYS:
                raise FqtoolError(f"--preprocess {text!r}: unknown key {key!r}; use {', '.join(_SPEC_KEYS)}")
            if key in values:
                raise FqtoolError(f"--preprocess {text!r}: {key} is given twice")
            values[key] = [value.strip()]
        elif key is None or not item:
            raise FqtoolError(f"--preprocess {text!r}: expected key=value, found {item!r}")
        else:
            values[key].append(item)
    return values


_SPEC_KEYS = ("size", "mean", "std", "colour", "layout", "margin")


def _numbers(key: str, raw: list[str], text: str, counts: tuple[int, ...]) -> list[float]:
    try:
        found = [float(v) for v in raw]
    except ValueError:
        raise FqtoolError(f"--preprocess {text!r}: {key} must be numbers, not {','.join(raw)!r}") from None
    if len(found) not in counts or not all(math.isfinite(v) for v in found):
        want = " or ".join(str(c) for c in counts)
        raise FqtoolError(f"--preprocess {text!r}: {key} takes {want} finite values, not {len(found)}")
    return found


def _spec_fields(values: dict[str, list[str]], text: str) -> dict:
    fields: dict = {}
    if "size" in values:
        raw = [p for v in values["size"] for p in v.lower().split("x")]
        sizes = _numbers("size", raw, text, (1, 2))
        if not all(s == int(s) and 0 < s <= 4096 for s in sizes):
            raise FqtoolError(f"--preprocess {text!r}: size must be whole pixels between 1 and 4096")
        fields["size"] = tuple(int(s) for s in (sizes * 2)[:2])
    for key in ("mean", "std"):
        if key in values:
            found = _numbers(key, values[key], text, (1, 3))
            if key == "std" and not all(v > 0 for v in found):
                raise FqtoolError(f"--preprocess {text!r}: std must be positive")
            fields[key] = tuple(v / 255.0 for v in (found * 3)[:3])
    if "colour" in values:
        colour = ",".join(values["colour"]).upper()
        if colour not in ("RGB", "BGR"):
            raise FqtoolError(f"--preprocess {text!r}: colour must be rgb or bgr, not {colour.lower()!r}")
        fields["color"] = colour
    if "layout" in values:
        layout = ",".join(values["layout"]).lower()
        if layout not in LAYOUTS:
            raise FqtoolError(f"--preprocess {text!r}: layout must be nchw or nhwc, not {layout!r}")
        fields["layout"] = layout
    if "margin" in values:
        fields["margin"] = _margin(values["margin"], text)
    return fields


def _margin(raw: list[str], text: str) -> float | None:
    if ",".join(raw).lower() in ("none", ""):
        return None
    margin = _numbers("margin", raw, text, (1,))[0]
    if not 0 <= margin <= 4096:
        raise FqtoolError(f"--preprocess {text!r}: margin must be 0 to 4096 pixels")
    return margin
