"""fqtool checkpoints: one ``.safetensors`` file that knows how to rebuild and feed its model.

Layout: backbone weights under ``backbone.*``, the optional EQFace-style head under ``quality_head.*``,
and a JSON document in the safetensors header (metadata key ``fqtool``) with the architecture and its
keyword arguments, the family, the preprocessing, the quality method and its 0–100 calibration, the
fqtool version, the training config and, for converted weights, where they came from (sha256).

This module writes them and rebuilds a model from one; :mod:`fqtool.models.loading` opens any weights
file (fqtool's own, other projects' via :mod:`fqtool.models.importers`, or ``.onnx``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from fqtool._version import __version__
from fqtool.errors import CheckpointError, FqtoolError
from fqtool.fsutil import atomic_write_bytes
from fqtool.models._state import (
    few_keys,
    first_line,
    load_state_checked,
    read_safetensors_metadata,
    strip_prefix,
)
from fqtool.models.face_model import FaceModel, ModelInfo, QualityCalibration
from fqtool.models.preprocess import Preprocess
from fqtool.models.quality_head import head_from_state
from fqtool.models.registry import build_backbone, get_spec

FORMAT_VERSION = 1
META_KEY = "fqtool"
BACKBONE_PREFIX = "backbone."
HEAD_PREFIX = "quality_head."


# ----------------------------------------------------------------------------------------------- saving


def _jsonable(value):
    """Tuples → lists, recursively, so that metadata round-trips through JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def checkpoint_metadata(
    model: FaceModel, *, training_config: dict | None = None, extra: dict | None = None
) -> dict:
    """The JSON document stored in the safetensors header of an fqtool checkpoint."""
    info = model.info
    calibration = None
    if info.calibration is not None:
        calibration = {**info.calibration.to_dict(), "method": model.quality_method}
    meta = {
        "format": "fqtool-checkpoint",
        "format_version": FORMAT_VERSION,
        "fqtool_version": __version__,
        "arch": info.arch,
        "arch_kwargs": info.arch_kwargs,
        "embedding_size": model.embedding_size,
        "family": info.family,
        "preprocess": info.preprocess.to_dict(),
        "quality_method": model.quality_method,
        "has_quality_head": model.quality_head is not None,
        "calibration": calibration,
        "source": info.source,
        "training_config": training_config,
        "extra": extra,
    }
    return _jsonable(meta)


def _tensors_for_saving(model: FaceModel) -> dict[str, torch.Tensor]:
    tensors = {BACKBONE_PREFIX + k: v for k, v in model.backbone.state_dict().items()}
    if model.quality_head is not None:
        tensors.update({HEAD_PREFIX + k: v for k, v in model.quality_head.state_dict().items()})
    # safetensors wants contiguous, unshared CPU tensors.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_checkpoint(
    model: FaceModel,
    path: str | Path,
    *,
    training_config: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model`` as one fqtool ``.safetensors`` file (atomically) and return its path."""
    path = Path(path)
    meta = checkpoint_metadata(model, training_config=training_config, extra=extra)
    try:
        text = json.dumps(meta, sort_keys=True)
    except TypeError as exc:
        raise FqtoolError(f"checkpoint metadata is not JSON-serialisable ({exc})") from None
    tensors = _tensors_for_saving(model)
    write_safetensors(path, tensors, {META_KEY: text, "format": "pt"})
    return path


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Serialise in memory, then write atomically through Python: a full disk is one :class:`OutputError`
    naming ``path``, never a short file (safetensors' own file writer can lose a write error)."""
    from safetensors.torch import save

    atomic_write_bytes(path, save(tensors, metadata=metadata))


# ----------------------------------------------------------------------------------------------- reading


def read_checkpoint_metadata(path: str | Path) -> dict | None:
    """The fqtool metadata of a ``.safetensors`` checkpoint, or ``None`` for a plain state-dict file."""
    path = Path(path)
    return parse_metadata(read_safetensors_metadata(path), path)


def parse_metadata(metadata: Mapping[str, str], path: Path) -> dict | None:
    """The fqtool document in a safetensors header's metadata (``None`` if absent), checked."""
    text = metadata.get(META_KEY)
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"damaged fqtool metadata ({exc.msg})", path) from None
    if not isinstance(meta, dict) or "arch" not in meta:
        raise CheckpointError("damaged fqtool metadata (no architecture recorded)", path)
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"damaged fqtool metadata (format_version {version!r})", path)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"written by a newer fqtool ({meta.get('fqtool_version')}); upgrade fqtool to read it", path
        )
    return meta


def model_from_checkpoint(
    path: Path, tensors: dict[str, torch.Tensor], meta: dict, arch: str | None = None
) -> FaceModel:
    """Rebuild the :class:`FaceModel` of an fqtool checkpoint from its tensors and parsed metadata."""
    saved_arch = str(meta["arch"])
    if arch is not None and arch != saved_arch:
        raise CheckpointError(f"this checkpoint holds a {saved_arch}, not a {arch} (leave out --arch)", path)
    try:
        get_spec(saved_arch)
    except FqtoolError as exc:
        raise CheckpointError(f"records an {exc}", path) from None
    kwargs = meta.get("arch_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise CheckpointError("damaged fqtool metadata (arch_kwargs is not a mapping)", path)
    try:
        backbone = build_backbone(saved_arch, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:  # a wrong, negative or absurd argument
        message = f"cannot rebuild {saved_arch} from its recorded arguments ({first_line(exc)})"
        raise CheckpointError(message, path) from None
    unknown = [k for k in tensors if not k.startswith((BACKBONE_PREFIX, HEAD_PREFIX))]
    if unknown:
        raise CheckpointError(f"unexpected tensors in fqtool checkpoint: {few_keys(unknown)}", path)
    load_state_checked(backbone, strip_prefix(tensors, BACKBONE_PREFIX), what=saved_arch, path=path)
    head = head_from_state(strip_prefix(tensors, HEAD_PREFIX), backbone, path)
    calibration = meta.get("calibration")
    try:
        preprocess = Preprocess.from_dict(meta.get("preprocess") or {})
        calibration = QualityCalibration.from_dict(calibration) if calibration else None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"damaged fqtool metadata ({exc})", path) from None
    info = ModelInfo(
        arch=saved_arch,
        arch_kwargs=dict(kwargs),
        preprocess=preprocess,
        family=str(meta.get("family", "fqtool")),
        calibration=calibration,
        source=meta.get("source"),
    )
    model = FaceModel(backbone, info, head)
    if meta.get("quality_method") == "norm":
        model.quality_method = "norm"  # a head that is kept but not used by default
    # else the head's own method (older checkpoints said "head" for CR-FIQA regressors too)
    return model
