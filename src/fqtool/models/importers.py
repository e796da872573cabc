"""Load other projects' PyTorch checkpoints, detecting family and architecture from keys and shapes.

* ``magface``: ``{'epoch', 'arch', 'state_dict', ...}`` with keys ``module.features.X`` (DataParallel),
  ``features.module.X`` (DDP) or ``features.X``; the classifier (``fc`` / ``parallel_fc``) is dropped.
  BatchNorm eps 2e-5; input BGR, x/255.
* ``arcface_torch``: a plain state dict (``backbone.pth``, ``model.pt``; or ``state_dict_backbone`` of a
  resume file) with bare iResNet or ``mbf`` keys. Input RGB, (x/255 − 0.5)/0.5.
* ``eqface``: ``backbone.pth`` with ``module.`` + face.evoLVe IR names (renamed to iResNet, reference-facts
  §a.6) and optionally ``quality.pth`` (``[module.]qualtiy.*``). Input RGB, (x − 127.5)/128.
* ``crfiqa``: iResNet + ``qs.weight``/``qs.bias``; the regressor becomes the quality head
  (:class:`~fqtool.models.quality_head.RegressionHead`, method ``crfiqa``). Input RGB, (x/255 − 0.5)/0.5.

The iResNet depth comes from the number of blocks per stage, the embedding size from ``fc.weight``.
Each family's BatchNorm conventions and preprocessing travel with the loaded model.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fqtool.errors import CheckpointError, FqtoolError
from fqtool.models._state import (
    few_keys,
    first_line,
    load_state_checked,
    read_safetensors,
    sniff_format,
    strip_prefix,
)
from fqtool.models.face_model import FaceModel, ModelInfo
from fqtool.models.iresnet import IRESNET_LAYERS
from fqtool.models.preprocess import FAMILY_PREPROCESS
from fqtool.models.quality_head import head_from_state
from fqtool.models.registry import build_backbone, get_spec

#: iResNet keyword style (BatchNorm eps/momentum, dropout placement) and preprocessing per family.
FAMILY_STYLE = {"magface": "magface", "arcface_torch": "arcface", "eqface": "eqface", "crfiqa": "arcface"}
FAMILIES = tuple(FAMILY_STYLE)  # the families whose state dicts fqtool reads

_IRESNET_BY_LAYERS = {layers: f"iresnet{depth}" for depth, layers in IRESNET_LAYERS.items()}
_IRESNET_BY_LAYERS[(1, 1, 1, 1)] = "iresnet_tiny"
_MFN_BY_LAYOUT = {((1, 4, 6, 2), 2): "mobilefacenet", ((2, 8, 12, 4), 4): "mobilefacenet_large"}
_DEFAULT_WIDTHS = (64, 128, 256, 512)

_EQFACE_BLOCK = {"0": "bn1", "1": "conv1", "2": "bn2", "3": "prelu", "4": "conv2", "5": "bn3"}
_EQFACE_TOP = {
    "input_layer.0": "conv1",
    "input_layer.1": "bn1",
    "input_layer.2": "prelu",
    "output_layer.0": "bn2",
    "feature_layer.0": "fc",
    "feature_layer.1": "features",
}


@dataclass
class Detected:
    """What a foreign state dict holds: family, architecture and the backbone weights in iResNet/mbf names."""

    family: str
    arch: str
    arch_kwargs: dict
    state: dict[str, torch.Tensor]
    dropped: list[str] = field(default_factory=list)
    head_state: dict[str, torch.Tensor] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- reading


def read_torch_file(path: Path, what: str = "PyTorch file") -> object:
    """``torch.load(weights_only=True)`` with one-line errors for pickles and damaged files.

    torch's own warnings (pickle protocol, legacy format) and its advice to pass ``weights_only=False``
    never reach the user: fqtool does not unpickle arbitrary objects, so that advice cannot apply.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        held = f"it holds {found.group(1)}" if found else "it holds Python objects other than weights"
        raise CheckpointError(
            f"not a plain weights file: torch.load(weights_only=True) refused it ({held}); fqtool never "
            "unpickles arbitrary objects",
            path,
        ) from None
    except Exception as exc:  # torch.load fails on damaged bytes with many exception types
        raise CheckpointError(f"damaged or truncated {what} ({first_line(exc)})", path) from None


def unwrap_state(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensor mapping inside a checkpoint object, and wrapper facts (``arch``, ``wrapper``)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"not a checkpoint: holds a {type(obj).__name__}, not a dict of weights", path)
    facts: dict = {}
    for wrapper in ("state_dict", "state_dict_backbone", "model"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            facts["wrapper"] = wrapper
            if isinstance(obj.get("arch"), str):
                facts["arch"] = obj["arch"]
            obj = inner
            break
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        top = ", ".join(map(str, list(obj)[:5]))
        raise CheckpointError(f"no weights found (top-level keys: {top})", path)
    return state, facts


# ----------------------------------------------------------------------------------------------- detection


def _find_prefix(state: Mapping[str, torch.Tensor], stem: str, companion: str) -> str | None:
    """The prefix P such that ``P + stem`` and ``P + companion`` are both keys (shortest wins)."""
    found = [k[: -len(stem)] for k in state if k.endswith(stem) and k[: -len(stem)] + companion in state]
    return min(found, key=len) if found else None


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    """Number of distinct indices ``i`` in keys matching ``pattern`` (a regex with one ``(\\d+)`` group)."""
    regex = re.compile(pattern)
    indices = {int(m.group(1)) for k in state if (m := regex.match(k))}
    return max(indices) + 1 if indices else 0


def rename_eqface(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EQFace (face.evoLVe IR) names → iResNet names (reference-facts §a.6)."""
    renamed: dict[str, torch.Tensor] = {}
    block = re.compile(r"^(layer\d+\.\d+)\.(res_layer|shortcut_layer)\.(\d+)\.(.+)$")
    for key, value in state.items():
        if m := block.match(key):
            base, kind, index, rest = m.groups()
            if kind == "shortcut_layer":
                new = f"{base}.downsample.{index}"
            else:
                new = f"{base}.{_EQFACE_BLOCK[index]}"
            renamed[f"{new}.{rest}"] = value
            continue
        module = ".".join(key.split(".")[:2])
        renamed[_EQFACE_TOP[module] + key[len(module):] if module in _EQFACE_TOP else key] = value
    return renamed


def _iresnet_arch(state: Mapping[str, torch.Tensor], path: Path | None) -> tuple[str, dict]:
    layers = tuple(_count(state, rf"^layer{s}\.(\d+)\.") for s in range(1, 5))
    if "fc.weight" not in state or "conv1.weight" not in state or 0 in layers:
        raise CheckpointError("incomplete iResNet weights (no fc.weight, conv1.weight or a stage)", path)
    name = _IRESNET_BY_LAYERS.get(layers)
    if name is None:
        raise CheckpointError(f"iResNet with {layers} blocks per stage is not a known architecture", path)
    widths = tuple(int(state[f"layer{s}.0.conv1.weight"].shape[0]) for s in range(1, 5))
    shape = tuple(int(n) for n in state["fc.weight"].shape)
    side = round((shape[-1] / widths[3]) ** 0.5) if shape else 0
    if len(shape) != 2 or side < 1 or side * side * widths[3] != shape[1]:
        # h6 (issue 25.11): a wrong-shaped fc.weight is one line, not a ValueError from the preprocessing
        raise CheckpointError(f"fc.weight has shape {list(shape)}; an iResNet's is [embedding, "
                              f"{widths[3]}·side²] (e.g. [512, {widths[3] * 49}])", path)
    embedding, fc_in = shape
    kwargs: dict = {"embedding_size": embedding}
    if widths != _DEFAULT_WIDTHS or name == "iresnet_tiny":
        kwargs["widths"] = widths
        kwargs["stem_width"] = int(state["conv1.weight"].shape[0])
    map_size = round((fc_in / widths[3]) ** 0.5)
    if map_size != 7:
        kwargs["input_size"] = map_size * 16
    return name, kwargs


def _mobilefacenet_arch(state: Mapping[str, torch.Tensor]) -> tuple[str, dict]:
    scale = int(state["layers.0.layers.0.weight"].shape[0]) // 64
    first = 1 if "layers.1.layers.0.weight" in state else _count(state, r"^layers\.1\.layers\.(\d+)\.")
    blocks = (first, *(_count(state, rf"^layers\.{i}\.layers\.(\d+)\.") for i in (3, 5, 7)))
    kwargs: dict = {"embedding_size": int(state["features.layers.2.weight"].shape[0])}
    name = _MFN_BY_LAYOUT.get((blocks, scale))
    if name is None:
        name = "mobilefacenet"
        kwargs.update(blocks=blocks, scale=scale)
    return name, kwargs


def detect(
    state: Mapping[str, torch.Tensor], facts: dict | None = None, *, path: Path | None = None,
    family: str | None = None,
) -> Detected:
    """Find the backbone inside a foreign state dict and say which family and architecture it is."""
    facts = facts or {}
    if family is not None and family not in FAMILIES:
        raise FqtoolError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    if (prefix := _find_prefix(state, "input_layer.0.weight", "feature_layer.0.weight")) is not None:
        guess, sub = "eqface", rename_eqface(strip_prefix(state, prefix))
    elif (prefix := _find_prefix(state, "layers.0.layers.0.weight", "conv_sep.layers.0.weight")) is not None:
        guess, sub = "arcface_torch", strip_prefix(state, prefix)
    elif (prefix := _find_prefix(state, "conv1.weight", "layer1.0.bn1.weight")) is not None:
        sub = strip_prefix(state, prefix)
        if "features." in prefix or ("arch" in facts and facts.get("wrapper") == "state_dict"):
            guess = "magface"
        elif "qs.weight" in sub:
            guess = "crfiqa"
        else:
            guess = "arcface_torch"
    else:
        raise CheckpointError(
            f"no iResNet, MobileFaceNet or EQFace backbone in these weights ({few_keys(list(state))})", path
        )
    head_state = {k: sub.pop(k) for k in ("qs.weight", "qs.bias") if k in sub}
    dropped = [k for k in state if not k.startswith(prefix)]
    arch, kwargs = _mobilefacenet_arch(sub) if "conv_sep.layers.0.weight" in sub else _iresnet_arch(sub, path)
    return Detected(family or guess, arch, kwargs, sub, dropped, head_state)


# ----------------------------------------------------------------------------------------------- building


def _build(detected: Detected, arch: str | None, path: Path | None) -> FaceModel:
    spec = get_spec(arch or detected.arch)  # an alias (r50, mbf) becomes its registry name
    name = spec.name
    kwargs = dict(detected.arch_kwargs)
    if arch is not None and arch != detected.arch:
        kwargs = {"embedding_size": kwargs["embedding_size"]}
    if name.startswith("iresnet"):
        kwargs["style"] = FAMILY_STYLE[detected.family]
    preprocess = FAMILY_PREPROCESS[detected.family]
    if "input_size" in kwargs:
        preprocess = dataclasses.replace(preprocess, size=(kwargs["input_size"],) * 2)
    backbone = build_backbone(name, **kwargs)
    hint = f"the file looks like {detected.arch}" if arch is not None and arch != detected.arch else ""
    load_state_checked(backbone, detected.state, what=f"{name} ({detected.family})", path=path, hint=hint)
    source = {"family": detected.family, "files": [path.name] if path is not None else []}
    if detected.dropped:
        source["dropped"] = few_keys(detected.dropped)
    info = ModelInfo(arch=name, arch_kwargs=kwargs, preprocess=preprocess or spec.preprocess,
                     family=detected.family, source=source)
    head = head_from_state(detected.head_state, backbone, path) if detected.head_state else None
    return FaceModel(backbone, info, head)


def attach_quality_head(model: FaceModel, quality_path: Path) -> FaceModel:
    """Add EQFace's ``quality.pth`` head (keys ``[module.]qualtiy.*``) to ``model``; quality method → head."""
    if sniff_format(quality_path) == "safetensors":
        state, facts = read_safetensors(quality_path)[0], {}
    else:
        state, facts = unwrap_state(read_torch_file(quality_path), quality_path)
    prefix = _find_prefix(state, "qualtiy.0.weight", "qualtiy.3.weight")
    if prefix is None:
        found = few_keys(list(state))
        raise CheckpointError(f"no EQFace quality head (qualtiy.*) in this file ({found})", quality_path)
    model.quality_head = head_from_state(strip_prefix(state, prefix), model.backbone, quality_path)
    model.set_quality_method("head")
    if model.info.source is not None:
        model.info.source.setdefault("files", []).append(quality_path.name)
    return model


def model_from_state(
    state: Mapping[str, torch.Tensor],
    path: Path | None = None,
    *,
    facts: dict | None = None,
    quality_weights: Path | None = None,
    arch: str | None = None,
    family: str | None = None,
) -> FaceModel:
    """A :class:`FaceModel` from a foreign state dict (already read)."""
    model = _build(detect(state, facts, path=path, family=family), arch, path)
    if quality_weights is not None:
        attach_quality_head(model, quality_weights)
    return model


def import_checkpoint(
    path: str | Path,
    *,
    quality_weights: str | Path | None = None,
    arch: str | None = None,
    family: str | None = None,
) -> FaceModel:
    """Read a MagFace / arcface_torch / EQFace / CR-FIQA PyTorch file into a :class:`FaceModel`."""
    path = Path(path)
    state, facts = unwrap_state(read_torch_file(path), path)
    quality = Path(quality_weights) if quality_weights is not None else None
    return model_from_state(state, path, facts=facts, quality_weights=quality, arch=arch, family=family)
