"""Open any model fqtool can run: its own ``.safetensors``, other projects' PyTorch files, or ``.onnx``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fqtool.errors import FqtoolError
from fqtool.models import importers
from fqtool.models._state import read_safetensors, sniff_format
from fqtool.models.checkpoint import model_from_checkpoint, parse_metadata
from fqtool.models.face_model import EmbeddingModel, FaceModel
from fqtool.models.preprocess import Preprocess, parse_preprocess
from fqtool.runtime import require_onnxruntime, resolve_device

NO_WEIGHTS_MESSAGE = (
    "no model weights given: pass --weights FILE or set FQTOOL_WEIGHTS. fqtool downloads nothing; "
    "train a model with `fqtool train-magface ...` (or `fqtool demo --quick` for a tiny one: "
    "about 30 s on 2 CPU cores), or convert a MagFace / arcface_torch / EQFace checkpoint with "
    "`fqtool convert-weights IN.pth OUT.safetensors`"
)


def _load_onnx(path: Path, quality_weights: Path | None, device: str,
               preprocess: Preprocess | None = None) -> EmbeddingModel:
    if quality_weights is not None:
        raise FqtoolError("--quality-weights cannot be added to an .onnx model (export the head with it)")
    require_onnxruntime(f"{path.name}: running an .onnx model")
    from fqtool.models.onnx_model import OnnxFaceModel

    return OnnxFaceModel(path, device=device, preprocess=preprocess)


def load_model(
    path: str | Path,
    *,
    quality_weights: str | Path | None = None,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    family: str | None = None,
    preprocess: str | Preprocess | None = None,
) -> EmbeddingModel:
    """Open any model fqtool can run, in eval mode on ``device``.

    ``preprocess`` (a :class:`Preprocess` or a ``--preprocess`` SPEC: a preset name such as ``facenet``, or
    ``size=160,mean=127.5,std=128,colour=rgb``) overrides what the file says or what fqtool assumes.

    * fqtool ``.safetensors``: rebuilt from its metadata (``arch`` only as a check).
    * PyTorch files (MagFace, arcface_torch, EQFace, CR-FIQA) and plain-state-dict ``.safetensors``: family
      and architecture detected from keys and shapes (``arch`` / ``family`` override the detection);
      ``quality_weights`` adds EQFace's ``quality.pth`` head.
    * ``.onnx``: an :class:`~fqtool.models.onnx_model.OnnxFaceModel`.

    Every result is an :class:`~fqtool.models.face_model.EmbeddingModel`; the torch ones are
    :class:`~fqtool.models.face_model.FaceModel` modules.
    """
    declared = parse_preprocess(preprocess)
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
        return _load_onnx(path, quality_path, str(device), declared)
    torch_device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    if kind == "safetensors":
        tensors, metadata = read_safetensors(path)
        meta = parse_metadata(metadata, path)
        if meta is not None:
            model = model_from_checkpoint(path, tensors, meta, arch)
            if quality_path is not None:
                importers.attach_quality_head(model, quality_path)
        else:
            model = importers.model_from_state(
                tensors, path, quality_weights=quality_path, arch=arch, family=family
            )
    else:
        model = importers.import_checkpoint(path, quality_weights=quality_path, arch=arch, family=family)
    if declared is not None:
        _declare(model, declared, path)
    return model.to(torch_device).eval()


def _declare(model: FaceModel, declared: Preprocess, path: Path) -> None:
    """``--preprocess`` on a torch model: colour and normalisation are free, the size is the network's."""
    size = tuple(model.info.preprocess.size)
    if tuple(declared.size) != size:
        raise FqtoolError(f"--preprocess size {declared.size[0]}x{declared.size[1]} does not fit this "
                          f"{model.info.arch}, whose input is {size[0]}x{size[1]}", path)
    model.info.preprocess = declared


def resolve_weights(weights: str | Path | None) -> Path:
    """``weights``, else ``$FQTOOL_WEIGHTS``, else a one-line error that says how to get weights."""
    if weights is not None and str(weights).strip():
        return Path(weights).expanduser()
    env = os.environ.get("FQTOOL_WEIGHTS", "").strip()
    if env:
        return Path(env).expanduser()
    raise FqtoolError(NO_WEIGHTS_MESSAGE)


def load_face_model(
    path: str | Path,
    *,
    onnx_error: str = "is an ONNX model; this needs PyTorch weights (an fqtool .safetensors or a .pth)",
    **kwargs,
) -> FaceModel:
    """:func:`load_model` for the places that need the torch modules (export, conversion, training);
    an ``.onnx`` is refused with ``onnx_error``. ``kwargs`` go to :func:`load_model`."""
    resolved = Path(path).expanduser()
    if resolved.is_file() and sniff_format(resolved) == "onnx":
        raise FqtoolError(onnx_error, resolved)
    model = load_model(resolved, **kwargs)
    assert isinstance(model, FaceModel)  # every non-ONNX path builds one
    return model
