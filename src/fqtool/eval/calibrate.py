"""``fqtool calibrate``: fit a model's 0–100 scale from a representative set of images and save it.

The raw quality (embedding norm, head probability or CR-FIQA certainty) of every image is computed with
the model's method (or ``method``); the ``low_pct``/``high_pct`` percentiles (p1/p99 by default) become
``low``/``high``, so that the set's p1 maps to 0 and its p99 to 100. The result is written into a copy of
the weights (:mod:`fqtool.models.stamp`): an fqtool ``.safetensors`` for torch weights, an ``.onnx`` with
new metadata (graph unchanged) for ONNX models. The set should look like the images the model will score
(same capture conditions and alignment), a few hundred or more; see docs/quality-calibration.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fqtool.errors import FqtoolError
from fqtool.eval.sanity import constant_warning, is_constant
from fqtool.eval.scoring import fit_calibration, score_dataset
from fqtool.models.face_model import EmbeddingModel, QualityCalibration
from fqtool.models.preprocess import Preprocess
from fqtool.quality_methods import names_for

#: Quality methods a saved calibration can be for (SER-FIQ is computed beside the model, never saved).
CALIBRATION_METHODS = names_for("calibrate")
MIN_IMAGES = 20


@dataclass
class CalibrationFit:
    """The fitted scale, the method it is for, and the set it came from."""

    calibration: QualityCalibration
    method: str
    images: int
    unreadable: int
    quality: np.ndarray

    def to_dict(self) -> dict:
        return {**self.calibration.to_dict(), "method": self.method, "images": self.images,
                "unreadable": self.unreadable}


def check_percentiles(low_pct: float, high_pct: float) -> None:
    if not (math.isfinite(low_pct) and math.isfinite(high_pct) and 0.0 <= low_pct < high_pct <= 100.0):
        raise FqtoolError(f"--percentiles {low_pct:g} {high_pct:g}: need 0 <= LOW < HIGH <= 100")


def fit_model_calibration(
    model: EmbeddingModel,
    dataset,
    *,
    low_pct: float = 1.0,
    high_pct: float = 99.0,
    method: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str = "cpu",
    on_progress: Callable[[int], None] | None = None,
    min_images: int = MIN_IMAGES,
) -> CalibrationFit:
    """Score ``dataset`` with ``model`` and fit ``low``/``high`` at the given percentiles of its quality."""
    check_percentiles(low_pct, high_pct)
    if method not in CALIBRATION_METHODS:
        raise FqtoolError(f"--method {method!r}: a saved calibration is for {', '.join(CALIBRATION_METHODS)}")
    result = score_dataset(model, dataset, batch_size=batch_size, workers=workers, device=device,
                           method=method, on_progress=on_progress)
    quality = np.asarray(result.quality, dtype=np.float64)
    quality = quality[np.isfinite(quality)]
    if quality.size < min_images:
        raise FqtoolError(f"only {quality.size} images with a finite quality; a calibration needs at least "
                          f"{min_images} representative images (a few hundred is better)")
    if is_constant(quality):
        raise FqtoolError(constant_warning(quality, result.method) + "; there is no scale to fit")
    source = f"fqtool calibrate: p{low_pct:g}/p{high_pct:g} of {quality.size} images"
    calibration = fit_calibration(quality, low_pct, high_pct, source=source)
    return CalibrationFit(calibration, result.method, quality.size, len(result.bad), quality)


def apply_calibration(model: EmbeddingModel, fit: CalibrationFit) -> None:
    """Use ``fit`` from now on (in memory): its method becomes the model's own, with its scale."""
    model.set_quality_method(fit.method)
    model.info.calibration = fit.calibration


def check_writable(model: EmbeddingModel, source: Path, output: Path) -> None:
    """Before any scoring: ``output`` fits ``source`` and a foreign ``.onnx`` has declared preprocessing."""
    from fqtool.models.stamp import output_kind

    kind = output_kind(Path(source), Path(output))
    foreign = "fqtool_version" not in getattr(model, "metadata", {"fqtool_version": ""})
    if kind == "onnx" and foreign and not getattr(model, "declared", False):
        raise FqtoolError("has no fqtool metadata; say what it takes with --preprocess SPEC (e.g. "
                          "--preprocess arcface) so that the calibrated copy records it", source)


def write_calibrated(
    model: EmbeddingModel,
    source: Path,
    output: Path,
    fit: CalibrationFit,
    preprocess: Preprocess | None = None,
) -> Path:
    """A copy of ``source`` (the file ``model`` came from) carrying ``fit`` at ``output``."""
    from fqtool.models.stamp import output_kind, stamp_checkpoint, stamp_onnx

    kind = output_kind(Path(source), Path(output))
    if kind == "onnx":
        if preprocess is None and getattr(model, "declared", False):
            preprocess = model.preprocess
        stamp_onnx(source, output, preprocess=preprocess, calibration=fit.calibration,
                   quality_method=fit.method)
    else:
        stamp_checkpoint(model, output, calibration=fit.calibration, quality_method=fit.method, source=source)
    return Path(output)
