"""fqtool checkpoints: one ``.safetensors`` file that knows how to rebuild and feed its model.

Layout: backbone weights under ``backbone.*``, the optional EQFace-style head under ``quality_head.*``,
and a JSON document in the safetensors header (metadata key ``fqtool``) with the architecture and its
keyword arguments, the family, the preprocessing, the quality method and its 0–100 calibration, the
fqtool version, the training config and, for converted weights, where they came from (sha256).

:func:`load_model` opens anything fqtool can run: its own ``.safetensors``, a MagFace / arcface_torch /
EQFace / CR-FIQA PyTorch file (via :mod:`fqtool.models.importers`), or an exported ``.onnx``.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from fqtool import __version__
from fqtool.errors import CheckpointError, FqtoolError
from fqtool.fsutil import atomic_path
from fqtool.models.face_model import FaceModel, ModelInfo, QualityCalibration
from fqtool.models.preprocess import Preprocess
from fqtool.models.quality_head import QualityHead
from fqtool.models.registry import build_backbone, get_spec

FORMAT_VERSION = 1
META_KEY = "fqtool"
BACKBONE_PREFIX = "backbone."
HEAD_PREFIX = "quality_head."
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")

NO_WEIGHTS_MESSAGE = (
    "no model weights given: pass --weights FILE or set FQTOOL_WEIGHTS. fqtool downloads nothing; "
    "train a model with `fqtool train-magface ...` (or `fqtool demo` for a tiny one in a minute), or convert "
    "a MagFace / arcface_torch / EQFace checkpoint with `fqtool convert-weights IN.pth OUT.safetensors`"
)


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
    from safetensors.torch import save_file

    path = Path(path)
    meta = checkpoint_metadata(model, training_config=training_config, extra=extra)
    try:
        text = json.dumps(meta, sort_keys=True)
    except TypeError as exc:
        raise FqtoolError(f"checkpoint metadata is not JSON-serialisable ({exc})") from None
    tensors = _tensors_for_saving(model)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: text, "format": "pt"})
    return path


# ----------------------------------------------------------------------------------------------- loading


def few_keys(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    more = ", …" if len(keys) > limit else ""
    return f"{len(keys)} {'key' if len(keys) == 1 else 'keys'} ({shown}{more})"


def load_state_checked(
    module: nn.Module, state: Mapping[str, torch.Tensor], *, what: str, path: str | Path | None = None,
    hint: str = "",
) -> None:
    """``load_state_dict(strict=True)`` that fails with one line naming missing/unexpected keys or shapes.

    ``num_batches_tracked`` buffers may be absent (older PyTorch versions did not save them).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    suffix = f"; {hint}" if hint else ""
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{few_keys(missing)} missing")
        if unexpected:
            parts.append(f"{few_keys(unexpected)} unexpected")
        raise CheckpointError(f"weights do not fit {what}: {'; '.join(parts)}{suffix}", path)
    for key, value in expected.items():
        if key in state and tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"weights do not fit {what}: {key} has shape {tuple(state[key].shape)} in the file "
                f"but {tuple(value.shape)} in the model{suffix}",
                path,
            )
    full = dict(state)
    for key, value in expected.items():
        full.setdefault(key, value)
    module.load_state_dict(full, strict=True)


def sniff_format(path: Path) -> str:
    """``"onnx"``, ``"safetensors"`` or ``"torch"`` from the suffix and the first bytes."""
    if path.suffix.lower() == ".onnx":
        return "onnx"
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise FqtoolError(f"cannot read file ({exc.strerror or exc})", path) from None
    if size == 0:
        raise CheckpointError("empty file (an interrupted download or copy?)", path)
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    if path.suffix.lower() == ".safetensors":
        raise CheckpointError("damaged .safetensors file (bad header)", path)
    raise CheckpointError(
        "not a checkpoint: expected an fqtool .safetensors, a PyTorch .pth/.pt or an .onnx file", path
    )


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of a ``.safetensors`` file; damage is a one-line error."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"damaged .safetensors file ({message})", path) from None
    return tensors, metadata


def read_checkpoint_metadata(path: str | Path) -> dict | None:
    """The fqtool metadata of a ``.safetensors`` checkpoint, or ``None`` for a plain state-dict file."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"damaged .safetensors file ({message})", path) from None
    return _parse_meta(metadata, path)


def _parse_meta(metadata: Mapping[str, str], path: Path) -> dict | None:
    text = metadata.get(META_KEY)
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"damaged fqtool metadata ({exc.msg})", path) from None
    if not isinstance(meta, dict) or "arch" not in meta:
        raise CheckpointError("damaged fqtool metadata (no architecture recorded)", path)
    if int(meta.get("format_version", 1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"written by a newer fqtool ({meta.get('fqtool_version')}); upgrade fqtool to read it", path
        )
    return meta


def _split_prefixed(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _model_from_fqtool(
    path: Path, tensors: dict[str, torch.Tensor], meta: dict, arch: str | None
) -> FaceModel:
    saved_arch = str(meta["arch"])
    if arch is not None and arch != saved_arch:
        raise CheckpointError(f"this checkpoint holds a {saved_arch}, not a {arch} (leave out --arch)", path)
    get_spec(saved_arch)
    kwargs = dict(meta.get("arch_kwargs") or {})
    try:
        backbone = build_backbone(saved_arch, **kwargs)
    except TypeError as exc:
        message = f"cannot rebuild {saved_arch} from its recorded arguments ({exc})"
        raise CheckpointError(message, path) from None
    unknown = [k for k in tensors if not k.startswith((BACKBONE_PREFIX, HEAD_PREFIX))]
    if unknown:
        raise CheckpointError(f"unexpected tensors in fqtool checkpoint: {few_keys(unknown)}", path)
    load_state_checked(backbone, _split_prefixed(tensors, BACKBONE_PREFIX), what=saved_arch, path=path)
    head = head_from_state(_split_prefixed(tensors, HEAD_PREFIX), backbone, path)
    calibration = meta.get("calibration")
    info = ModelInfo(
        arch=saved_arch,
        arch_kwargs=kwargs,
        preprocess=Preprocess.from_dict(meta.get("preprocess") or {}),
        family=str(meta.get("family", "fqtool")),
        calibration=QualityCalibration.from_dict(calibration) if calibration else None,
        source=meta.get("source"),
    )
    model = FaceModel(backbone, info, head)
    method = meta.get("quality_method")
    if method == "norm" or (method == "head" and head is not None):
        model.quality_method = method
    return model


def head_from_state(
    state: Mapping[str, torch.Tensor], backbone: nn.Module, path: Path | None
) -> nn.Module | None:
    """Build and load a quality head from its tensors: EQFace's ``qualtiy.*`` MLP or CR-FIQA's ``qs``
    regressor (``None`` when there are none)."""
    if not state:
        return None
    if "qs.weight" in state:
        from fqtool.models.importers import RegressionHead

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


def _load_onnx(path: Path, quality_weights: Path | None, device: str):
    if quality_weights is not None:
        raise FqtoolError("--quality-weights cannot be added to an .onnx model (export the head with it)")
    from fqtool.runtime import require_onnxruntime

    require_onnxruntime(f"{path.name}: running an .onnx model")
    from fqtool.export.runtime import OnnxFaceModel

    return OnnxFaceModel(path, device=device)


def load_model(
    path: str | Path,
    *,
    quality_weights: str | Path | None = None,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    family: str | None = None,
) -> FaceModel:
    """Open any model fqtool can run, in eval mode on ``device``.

    * fqtool ``.safetensors``: rebuilt from its metadata (``arch`` only as a check).
    * PyTorch files (MagFace, arcface_torch, EQFace, CR-FIQA) and plain-state-dict ``.safetensors``: family
      and architecture detected from keys and shapes (``arch`` / ``family`` override the detection);
      ``quality_weights`` adds EQFace's ``quality.pth`` head.
    * ``.onnx``: an :class:`fqtool.export.runtime.OnnxFaceModel` (same ``prepare``/``__call__``/``info``).
    """
    from fqtool.models import importers
    from fqtool.runtime import resolve_device

    path = Path(path).expanduser()
    if not path.exists():
        raise FqtoolError("no such file", path)
    if path.is_dir():
        raise FqtoolError("is a folder; give the checkpoint file inside it", path)
    quality_path = Path(quality_weights).expanduser() if quality_weights is not None else None
    if quality_path is not None and not quality_path.is_file():
        raise FqtoolError("no such file", quality_path)
    kind = sniff_format(path)
    if kind == "onnx":
        return _load_onnx(path, quality_path, str(device))
    torch_device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    if kind == "safetensors":
        tensors, metadata = read_safetensors(path)
        meta = _parse_meta(metadata, path)
        if meta is not None:
            model = _model_from_fqtool(path, tensors, meta, arch)
            if quality_path is not None:
                importers.attach_quality_head(model, quality_path)
        else:
            model = importers.model_from_state(
                tensors, path, quality_weights=quality_path, arch=arch, family=family
            )
    else:
        model = importers.import_checkpoint(path, quality_weights=quality_path, arch=arch, family=family)
    return model.to(torch_device).eval()


def resolve_weights(weights: str | Path | None) -> Path:
    """``weights``, else ``$FQTOOL_WEIGHTS``, else a one-line error that says how to get weights."""
    if weights is not None and str(weights).strip():
        return Path(weights).expanduser()
    env = os.environ.get("FQTOOL_WEIGHTS", "").strip()
    if env:
        return Path(env).expanduser()
    raise FqtoolError(NO_WEIGHTS_MESSAGE)
