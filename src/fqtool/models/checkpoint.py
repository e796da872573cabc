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
from fqtool.models.face_model import MODEL_QUALITY_METHODS, FaceModel, ModelInfo, QualityCalibration
from fqtool.models.preprocess import Preprocess
from fqtool.models.quality_head import head_from_state
from fqtool.models.registry import build_backbone, get_spec
from fqtool.quality_methods import HEAD_METHODS

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
        "trained_on_synthetic": info.trained_on_synthetic or _synthetic_data(training_config),
        "training_config": training_config,
        "extra": extra,
    }
    return _jsonable(meta)


#: What ``fqtool synth`` writes beside the data it makes.
SYNTH_MANIFEST = "synth.json"


#: What ``fqtool convert-rec`` writes into its output: the ``.rec`` it came from.
CONVERTED_FROM = "source.json"


def is_synthetic_data(path: str | Path | None) -> bool:
    """``path`` is (inside) data made by ``fqtool synth``: a ``synth.json`` in it or one of its three
    parents, or a ``convert-rec`` output (``source.json``) of such a ``.rec`` (the demo's route)."""
    if not path or not isinstance(path, str | Path):
        return False
    path = Path(path).expanduser().absolute()
    for folder in [path, *list(path.parents)[:3]]:
        if (folder / SYNTH_MANIFEST).is_file():
            return True
        converted = folder / CONVERTED_FROM
        if converted.is_file():
            try:
                rec = json.loads(converted.read_text(encoding="utf-8")).get("rec")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(rec, str) and (Path(rec).parent / SYNTH_MANIFEST).is_file():
                return True
    return False


def _synthetic_data(training_config: dict | None) -> bool:
    return is_synthetic_data((training_config or {}).get("data"))


def non_finite_weights(model: FaceModel) -> list[str]:
    """Names of the parameters and buffers that hold NaN or infinite values."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return [name for name, t in tensors.items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def ensure_finite(model: FaceModel, path: str | Path | None = None) -> None:
    """Refuse (one line) to save or export a model with NaN/inf weights: it is never a success."""
    broken = non_finite_weights(model)
    if broken:
        raise CheckpointError(f"the weights hold NaN or infinite values ({few_keys(broken)}); nothing "
                              "written (the model is broken: retrain or use an earlier checkpoint)", path)


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
    _check_recorded_facts(meta, backbone, head, path)
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
        trained_on_synthetic=meta.get("trained_on_synthetic") is True,
    )
    model = FaceModel(backbone, info, head)
    method = meta.get("quality_method")  # checked above: None or one the model computes itself
    if method is not None and method not in HEAD_METHODS:
        model.quality_method = method  # a head that is kept but not used by default (norm)
    # else the head's own method (older checkpoints said "head" for CR-FIQA regressors too)
    return model


def _check_recorded_facts(meta: dict, backbone: torch.nn.Module, head, path: Path) -> None:
    """What the metadata claims about the model must be true of the tensors (one-line errors)."""
    method = meta.get("quality_method")
    if method is not None and method not in MODEL_QUALITY_METHODS:
        known = ", ".join(MODEL_QUALITY_METHODS)
        raise CheckpointError(f"damaged fqtool metadata (quality_method {method!r}; known: {known})", path)
    if meta.get("has_quality_head") is True and head is None:
        raise CheckpointError("damaged fqtool metadata (has_quality_head is true, but there is no "
                              "quality_head.* tensor)", path)
    if method in HEAD_METHODS and head is None:
        raise CheckpointError(f"damaged fqtool metadata (quality_method {method!r} without a quality head)",
                              path)
    recorded = meta.get("embedding_size")
    actual = int(getattr(backbone, "embedding_size", 0) or 0)
    if recorded is not None and (isinstance(recorded, bool) or recorded != actual):
        raise CheckpointError(f"damaged fqtool metadata (embedding_size {recorded!r}; the weights give "
                              f"{actual})", path)
