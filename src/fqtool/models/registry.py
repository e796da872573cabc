"""The model registry: ``create_model(name)``, ``list_models()``, each entry with its preprocessing.

Like timm's registry, every entry carries a default input config, so data pipelines are built *from
the model* and a checkpoint always knows how to feed itself.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from fqtool.errors import FqtoolError
from fqtool.models.face_model import FaceModel, ModelInfo
from fqtool.models.iresnet import IRESNET_LAYERS, STYLES, IResNet
from fqtool.models.preprocess import ARCFACE, Preprocess
from fqtool.models.quality_head import QualityHead


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict = field(default_factory=dict)
    preprocess: Preprocess = ARCFACE
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}

#: arcface_torch's ``get_model`` names (its configs' ``network``) → registry names; ``--arch`` takes both.
ALIASES: dict[str, str] = {
    "r18": "iresnet18", "r34": "iresnet34", "r50": "iresnet50", "r100": "iresnet100", "r200": "iresnet200",
    "mbf": "mobilefacenet", "mbf_large": "mobilefacenet_large",
}


def register_model(
    name: str, builder: Callable[..., nn.Module], description: str = "", preprocess: Preprocess = ARCFACE,
    **defaults,
) -> None:
    """Add an architecture; ``defaults`` are keyword arguments for ``builder``."""
    _REGISTRY[name] = ModelSpec(name, builder, dict(defaults), preprocess, description)


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style pattern, e.g. ``iresnet*``."""
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def aliases_of(name: str) -> list[str]:
    """The arcface_torch names of a registered architecture (``iresnet50`` → ``["r50"]``)."""
    return [alias for alias, target in ALIASES.items() if target == name]


def get_spec(name: str) -> ModelSpec:
    """The entry of a registered name or an arcface_torch alias (``r50``, ``mbf``)."""
    try:
        return _REGISTRY[ALIASES.get(name, name)]
    except KeyError:
        known = f"{', '.join(list_models())} (or {', '.join(ALIASES)})"
        raise FqtoolError(f"unknown architecture {name!r}; known: {known}") from None


def build_backbone(name: str, **kwargs) -> nn.Module:
    """The bare backbone (embedding out), with the entry's defaults overridden by ``kwargs``."""
    spec = get_spec(name)
    params = {**spec.defaults, **kwargs}
    style = params.pop("style", None)
    if style is not None:
        if style not in STYLES:
            raise FqtoolError(f"unknown iResNet style {style!r}; known: {', '.join(STYLES)}")
        params = {**STYLES[style], **params}
    return spec.builder(**params)


def create_model(
    name: str,
    *,
    quality_head: bool = False,
    preprocess: Preprocess | None = None,
    family: str = "fqtool",
    **kwargs,
) -> FaceModel:
    """Build a :class:`FaceModel` for a registered architecture (randomly initialised).

    ``kwargs`` go to the backbone (``embedding_size``, ``dropout``, ``style`` = arcface|magface|eqface...).
    ``quality_head=True`` adds EQFace's quality head on the flattened feature map.
    """
    spec = get_spec(name)
    backbone = build_backbone(name, **kwargs)
    head = QualityHead(backbone.feature_dim) if quality_head else None
    preprocess = preprocess or spec.preprocess
    info = ModelInfo(arch=spec.name, arch_kwargs=dict(kwargs), preprocess=preprocess, family=family)
    return FaceModel(backbone, info, head)


def _iresnet(depth: int) -> Callable[..., nn.Module]:
    def build(**kwargs) -> nn.Module:
        return IResNet(IRESNET_LAYERS[depth], **kwargs)

    build.__name__ = f"iresnet{depth}"
    return build


for _depth in (18, 34, 50, 100, 152, 200):
    register_model(
        f"iresnet{_depth}", _iresnet(_depth), f"iResNet-{_depth} (blocks {IRESNET_LAYERS[_depth]})",
        embedding_size=512,
    )


def _iresnet_tiny(**kwargs) -> nn.Module:
    params = {"widths": (8, 16, 32, 64), "stem_width": 8, "embedding_size": 128, **kwargs}
    return IResNet((1, 1, 1, 1), **params)


register_model(
    "iresnet_tiny",
    _iresnet_tiny,
    "Tiny iResNet (1 block per stage, 8–64 channels): learns synthetic identities on a CPU in seconds; "
    "for tests, the demo and smoke runs",
)


def _mobilefacenet(**kwargs) -> nn.Module:
    from fqtool.models.mobilefacenet import MobileFaceNet

    return MobileFaceNet(**kwargs)


register_model(
    "mobilefacenet",
    _mobilefacenet,
    "MobileFaceNet (arcface_torch mbf: blocks (1, 4, 6, 2), scale 2; ~2 M params): light and fast; "
    "quality head on the 512-d GDC descriptor",
    embedding_size=512,
)
register_model(
    "mobilefacenet_large",
    _mobilefacenet,
    "MobileFaceNet-large (arcface_torch mbf_large: blocks (2, 8, 12, 4), scale 4)",
    embedding_size=512, blocks=(2, 8, 12, 4), scale=4,
)
