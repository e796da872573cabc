"""Sanity checks on a model's quality scores: one-line warnings the CLI prints and the API returns.

* constant quality: unit-norm embeddings (every norm 1) or a head that outputs one value; the 0–100 scale
  then says nothing about the images;
* a saturated default scale: most images at 0 or 100 because the model's raw range is not the default's
  (a FaceNet's norms 12–27 on MagFace's [10, 110]); ``fqtool calibrate`` fits one;
* a model trained on synthetic faces (``fqtool synth``) scoring other images: its ranking of real photos
  means little.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fqtool.models.checkpoint import is_synthetic_data
from fqtool.models.face_model import QualityCalibration
from fqtool.quality_methods import BY_NAME, QualityMethod

#: Quality whose spread (max − min) is below this fraction of its typical size counts as constant.
CONSTANT_SPREAD = 1e-4
#: Share of images at exactly 0 or 100 above which a default scale counts as saturated.
SATURATED_SHARE = 0.5
#: Fewer images than this are too few to call a scale saturated.
MIN_IMAGES = 10


@dataclass
class SanityReport:
    """``warnings`` (one line each) and whether ``quality_100`` means anything for these images."""

    warnings: list[str] = field(default_factory=list)
    meaningful: bool = True


def is_constant(quality: np.ndarray) -> bool:
    """All finite values equal up to :data:`CONSTANT_SPREAD` (relative), for two or more values."""
    q = np.asarray(quality, dtype=np.float64)
    q = q[np.isfinite(q)]
    if q.size < 2:
        return False
    scale = max(float(np.median(np.abs(q))), 1e-12)
    return float(q.max() - q.min()) <= CONSTANT_SPREAD * scale


def constant_warning(quality: np.ndarray, method: str) -> str:
    value = float(np.median(np.asarray(quality, dtype=np.float64)))
    entry = BY_NAME.get(method)
    cause = entry.constant_cause if entry is not None else QualityMethod.constant_cause
    return (f"quality ({method}) is the same for all {len(quality)} images ({value:.6g}): {cause}, so "
            "quality_100 says nothing about them; use another --method or a model with a quality signal")


def saturated_warning(quality_100: np.ndarray, calibration: QualityCalibration) -> str | None:
    """The warning for a default scale that puts most images at 0 or 100, else ``None``."""
    q = np.asarray(quality_100, dtype=np.float64)
    if q.size < MIN_IMAGES or not calibration.source.startswith("default"):
        return None
    low, high = float(np.mean(q <= 0.0)), float(np.mean(q >= 100.0))
    if low + high < SATURATED_SHARE:
        return None
    where = f"{low:.0%} at 0" if low >= high else f"{high:.0%} at 100"
    return (f"{low + high:.0%} of the images are at 0 or 100 ({where}) on the default scale "
            f"[{calibration.low:g}, {calibration.high:g}], which does not fit this model; fit the scale to "
            "representative images with `fqtool calibrate -w MODEL IMAGES -o OUT` "
            "(docs/quality-calibration.md)")


def synthetic_warning(trained_on_synthetic: bool, input_path: str | Path | None) -> str | None:
    if not trained_on_synthetic or is_synthetic_data(input_path):
        return None
    return ("this model was trained on synthetic faces (fqtool synth): its quality ranks real photos "
            "poorly; use it to try fqtool, not to judge real images")


def check_scores(
    quality: np.ndarray,
    quality_100: np.ndarray,
    calibration: QualityCalibration,
    method: str,
    *,
    trained_on_synthetic: bool = False,
    input_path: str | Path | None = None,
) -> SanityReport:
    """All checks on one scoring run (see the module docstring)."""
    report = SanityReport()
    if is_constant(quality):
        report.warnings.append(constant_warning(quality, method))
        report.meaningful = False
    else:
        saturated = saturated_warning(quality_100, calibration)
        if saturated:
            report.warnings.append(saturated)
    synthetic = synthetic_warning(trained_on_synthetic, input_path)
    if synthetic:
        report.warnings.append(synthetic)
    return report
