"""Write fqtool metadata into a copy of a model file, so later commands need no flags.

* ``.onnx`` → ``.onnx``: the graph is copied untouched; only ``metadata_props`` change (the preprocessing,
  the input layout, the quality method and its 0–100 calibration, the embedding size). A foreign graph
  (insightface's model zoo, OFIQ's MagFace, a FaceNet export) becomes one fqtool reads like its own export.
* torch weights → ``.safetensors``: :func:`~fqtool.models.checkpoint.save_checkpoint` with the new facts.

Both refuse weights holding NaN/inf (nothing is written) and write atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fqtool import __version__
from fqtool.errors import CheckpointError, FqtoolError, OutputError
from fqtool.fsutil import FILE_MODE, atomic_path, sha256_file
from fqtool.models._state import few_keys, sniff_format
from fqtool.models.face_model import FaceModel, QualityCalibration
from fqtool.models.preprocess import Preprocess


def output_kind(source: Path, output: Path) -> str:
    """``onnx`` or ``safetensors``: what ``output`` must be for ``source``; a mismatch is one line."""
    kind = "onnx" if sniff_format(source) == "onnx" else "safetensors"
    suffix = output.suffix.lower()
    if suffix != f".{kind}":
        what = ("an .onnx model is written as .onnx" if kind == "onnx"
                else "torch weights are written as .safetensors")
        raise OutputError(f"{what}; give a file name ending in .{kind}", output)
    if output.exists() and output.resolve() == source.resolve():
        raise OutputError("would overwrite the input; give another output file", output)
    if output.is_dir():
        raise OutputError("is a folder; give a file name", output)
    return kind


def _non_finite_initializers(proto) -> list[str]:
    import numpy as np
    from onnx import numpy_helper

    broken = []
    for tensor in proto.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            broken.append(tensor.name)
    return broken


def onnx_metadata(source: Path, preprocess: Preprocess | None) -> dict[str, str]:
    """The metadata a stamped copy of ``source`` carries (``preprocess`` overrides the file's)."""
    import warnings

    from fqtool.models.onnx_model import OnnxFaceModel

    with warnings.catch_warnings():  # the "no metadata" warning: a foreign graph needs preprocess here
        warnings.simplefilter("ignore")
        model = OnnxFaceModel(source, device="cpu", preprocess=preprocess)
    meta = dict(model.metadata)
    if "fqtool_version" not in meta:
        if preprocess is None:
            raise FqtoolError("has no fqtool metadata; say what it takes with --preprocess SPEC "
                              "(e.g. --preprocess arcface)", source)
        meta.update({
            "fqtool_version": __version__, "graph": "full", "arch": "unknown", "family": "foreign",
            "quality_method": model.graph_quality_method, "calibration": "null",
            "source_sha256": sha256_file(source),
        })
    meta["input_layout"] = model.input_layout
    meta["embedding_size"] = str(model.embedding_size or "")
    meta["preprocessing"] = json.dumps(model.preprocess.to_dict(), sort_keys=True)
    meta["stamped_by"] = f"fqtool {__version__}"
    return meta


def stamp_onnx(
    source: Path,
    output: Path,
    *,
    preprocess: Preprocess | None = None,
    calibration: QualityCalibration | None = None,
    quality_method: str | None = None,
) -> dict[str, str]:
    """Copy ``source`` to ``output`` with fqtool metadata (graph unchanged); return the metadata."""
    import onnx

    source, output = Path(source), Path(output)
    meta = onnx_metadata(source, preprocess)
    if calibration is not None:
        meta["calibration"] = json.dumps(calibration.to_dict(), sort_keys=True)
    if quality_method is not None:
        meta["quality_method"] = quality_method
    try:
        proto = onnx.load(str(source))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise FqtoolError(f"not a readable ONNX file ({str(exc).splitlines()[0]})", source) from None
    broken = _non_finite_initializers(proto)
    if broken:
        raise CheckpointError(f"the graph's weights hold NaN or infinite values ({few_keys(broken)}); "
                              "nothing written", source)
    onnx.helper.set_model_props(proto, meta)
    with atomic_path(output) as tmp:
        onnx.save_model(proto, str(tmp))
        os.chmod(tmp, FILE_MODE)
    return meta


def stamp_checkpoint(model: FaceModel, output: Path, *, calibration: QualityCalibration | None = None,
                     quality_method: str | None = None, source: Path | None = None) -> Path:
    """Save a torch model as an fqtool ``.safetensors`` with ``calibration`` for ``quality_method``; the
    training config and extras of an fqtool ``source`` checkpoint are kept."""
    from fqtool.models.checkpoint import ensure_finite, read_checkpoint_metadata, save_checkpoint

    ensure_finite(model, output)
    if quality_method is not None:
        model.set_quality_method(quality_method)
    if calibration is not None:
        model.info.calibration = calibration
    kept: dict = {}
    if source is not None and sniff_format(Path(source)) == "safetensors":
        meta = read_checkpoint_metadata(source) or {}
        kept = {"training_config": meta.get("training_config"), "extra": meta.get("extra")}
    return save_checkpoint(model, output, **kept)
