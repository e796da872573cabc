"""PyTorch ↔ ONNX Runtime parity check for exported graphs.

The same inputs go through the original (fp32) PyTorch model and the exported graph(s) in ONNX Runtime:
random noise images and smooth, face-like synthetic images, at batch sizes 1 and 7 (the graph's batch
axis is dynamic, so both must work). Per row we report the largest absolute embedding difference, the
smallest cosine similarity between the two embeddings of an image, and the largest quality difference,
absolute and relative (``|Δq| / max(|q|, 1e-3)``: near-zero probabilities are compared absolutely).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fqtool.errors import FqtoolError

#: (embedding, quality) as float64 numpy arrays, from RGB uint8 images N×3×H×W.
Runner = Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]]

BATCH_SIZES: tuple[int, ...] = (1, 7)
QUALITY_FLOOR = 1e-3


@dataclass(frozen=True)
class Tolerance:
    """Pass when every cosine ≥ ``min_cosine`` and every relative quality diff ≤ ``max_quality_rel``."""

    min_cosine: float
    max_quality_rel: float
    name: str = "fp32"


FP32_TOLERANCE = Tolerance(min_cosine=0.9999, max_quality_rel=1e-3, name="fp32")
FP16_TOLERANCE = Tolerance(min_cosine=0.999, max_quality_rel=2e-2, name="fp16")


@dataclass(frozen=True)
class ParityRow:
    graph: str
    inputs: str
    batch: int
    max_abs_diff: float
    min_cosine: float
    max_quality_diff: float
    max_quality_rel: float
    ok: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ParityReport:
    tolerance: Tolerance
    rows: list[ParityRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    @property
    def worst(self) -> ParityRow | None:
        """The row with the smallest cosine (the one to quote in an error message)."""
        return min(self.rows, key=lambda row: (row.ok, row.min_cosine), default=None)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "tolerance": asdict(self.tolerance), "rows": [r.to_dict() for r in self.rows]}


class ParityError(FqtoolError):
    """The exported graph does not reproduce the PyTorch model within tolerance (exit code 2)."""

    def __init__(self, report: ParityReport, path: str | Path | None = None) -> None:
        self.report = report
        worst = report.worst
        detail = ""
        if worst is not None:
            detail = (
                f" (worst: {worst.graph}/{worst.inputs} batch {worst.batch}: cosine {worst.min_cosine:.6f}, "
                f"relative quality diff {worst.max_quality_rel:.2e})"
            )
        super().__init__(
            f"ONNX Runtime output differs from PyTorch beyond the {report.tolerance.name} tolerance "
            f"(cosine ≥ {report.tolerance.min_cosine}, relative quality diff ≤ "
            f"{report.tolerance.max_quality_rel}){detail}; nothing was written",
            path,
        )


def _noise_images(rng: np.random.Generator, n: int, size: tuple[int, int]) -> np.ndarray:
    return rng.integers(0, 256, (n, 3, *size), dtype=np.uint8)


def _smooth_faces(rng: np.random.Generator, n: int, size: tuple[int, int]) -> np.ndarray:
    """Fallback face-like images: skin-toned oval, dark eyes and mouth, smooth background gradient."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h - 0.5, xx / w - 0.5
    out = np.empty((n, 3, h, w), np.float32)
    for i in range(n):
        bg = rng.uniform(40, 200, 3)[:, None, None] + 60 * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))
        img = np.broadcast_to(bg, (3, h, w)).copy()
        face = ((xx / rng.uniform(0.28, 0.36)) ** 2 + ((yy - 0.03) / rng.uniform(0.38, 0.45)) ** 2) < 1
        img[:, face] = rng.uniform([170, 120, 90], [240, 200, 170])[:, None] * (1 - 0.3 * yy[face])
        for cx in (-0.13, 0.13):
            eye = ((xx - cx) / 0.05) ** 2 + ((yy + 0.08) / 0.025) ** 2 < 1
            img[:, eye] = rng.uniform(10, 60)
        mouth = (xx / 0.12) ** 2 + ((yy - 0.22) / 0.025) ** 2 < 1
        img[:, mouth] = np.array([150.0, 60.0, 60.0])[:, None]
        out[i] = img + rng.normal(0, 3, (3, h, w))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _synth_faces(rng: np.random.Generator, n: int, size: tuple[int, int]) -> np.ndarray:
    """Faces from :mod:`fqtool.data.synth` when it is there, else :func:`_smooth_faces`."""
    try:
        from fqtool.data import synth

        faces = np.stack([synth.generate_face(synth.sample_identity(rng), rng) for _ in range(n)])
        faces = faces.transpose(0, 3, 1, 2)
    except (ImportError, AttributeError, TypeError, ValueError):
        return _smooth_faces(rng, n, size)
    if faces.shape[-2:] != tuple(size):
        resized = F.interpolate(torch.from_numpy(faces).float(), size=size, mode="bilinear", antialias=True)
        faces = resized.round().clamp(0, 255).to(torch.uint8).numpy()
    return np.ascontiguousarray(faces, dtype=np.uint8)


def check_images(size: tuple[int, int], seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """``[(kind, RGB uint8 N×3×H×W)]`` for every input kind and batch size of the check."""
    rng = np.random.default_rng(seed)
    sets = []
    for kind, make in (("random", _noise_images), ("faces", _synth_faces)):
        for batch in BATCH_SIZES:
            sets.append((kind, torch.from_numpy(make(rng, batch, tuple(size)))))
    return sets


def compare(
    graph: str,
    kind: str,
    reference: tuple[np.ndarray, np.ndarray],
    candidate: tuple[np.ndarray, np.ndarray],
    tolerance: Tolerance,
) -> ParityRow:
    """One row of the report: ``reference``/``candidate`` are ``(embedding N×D, quality N)``."""
    ref_e, ref_q = (np.asarray(a, np.float64) for a in reference)
    out_e, out_q = (np.asarray(a, np.float64) for a in candidate)
    if ref_e.shape != out_e.shape or ref_q.reshape(-1).shape != out_q.reshape(-1).shape:
        return ParityRow(
            graph, kind, len(ref_e), float("inf"), float("nan"), float("inf"), float("inf"), False
        )
    ref_q, out_q = ref_q.reshape(-1), out_q.reshape(-1)
    norms = np.linalg.norm(ref_e, axis=1) * np.linalg.norm(out_e, axis=1)
    cosine = np.sum(ref_e * out_e, axis=1) / np.maximum(norms, 1e-30)
    q_diff = np.abs(out_q - ref_q)
    q_rel = q_diff / np.maximum(np.abs(ref_q), QUALITY_FLOOR)
    row_cos, row_rel = float(cosine.min()), float(q_rel.max())
    ok = bool(row_cos >= tolerance.min_cosine and row_rel <= tolerance.max_quality_rel)
    return ParityRow(
        graph, kind, len(ref_e), float(np.abs(out_e - ref_e).max()), row_cos, float(q_diff.max()), row_rel, ok
    )


def check_parity(
    graphs: Sequence[tuple[str, Runner]],
    reference: Runner,
    size: tuple[int, int],
    tolerance: Tolerance = FP32_TOLERANCE,
    seed: int = 0,
) -> ParityReport:
    """Run every check image set through ``reference`` and each named graph runner; collect the rows."""
    report = ParityReport(tolerance)
    for kind, images in check_images(size, seed):
        expected = reference(images)
        for name, run in graphs:
            report.rows.append(compare(name, kind, expected, run(images), tolerance))
    return report
