"""``FaceModel``: a backbone, an optional quality head, and everything needed to feed and read it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from fqtool.errors import FqtoolError
from fqtool.models.preprocess import Preprocess
from fqtool.quality_methods import BY_NAME, HEAD_METHODS, MODEL_METHODS

#: Quality a model computes itself (the quality-method table's ``computed_by_model`` entries).
MODEL_QUALITY_METHODS = MODEL_METHODS


def resolve_quality_method(requested: str, head_method: str | None, where: str = "this model") -> str:
    """The method a model uses when ``requested`` is asked for; ``head_method`` is what its head computes
    (``None`` without a head). ``head`` picks the model's own head, ``crfiqa`` insists on CR-FIQA's."""
    if requested not in MODEL_QUALITY_METHODS:
        known = ", ".join(MODEL_QUALITY_METHODS)
        raise ValueError(f"quality method must be one of {known}, not {requested!r}")
    wanted = BY_NAME[requested]
    if wanted.head is None:
        return requested
    if head_method is None:
        needs = "a quality head" if wanted.head == "any" else wanted.head_name
        raise FqtoolError(f"--method {requested} needs {needs}; {where} has no quality head "
                          f"({wanted.missing_head_fix}, or use --method norm)")
    if wanted.head != "any" and wanted.head != head_method:
        raise FqtoolError(f"--method {requested} needs {wanted.head_name}; {where} has "
                          f"{BY_NAME[head_method].head_name} (use --method head or norm)")
    return head_method


@dataclass
class QualityCalibration:
    """Maps a raw quality to 0–100: ``100 * clip((q - low) / (high - low), 0, 1)``.

    For MagFace-style models the raw quality is the embedding norm, for EQFace heads a probability, for
    CR-FIQA regressors the predicted certainty ratio.
    ``low``/``high`` normally come from the training data (e.g. 1st / 99th percentile), and are saved in
    the checkpoint so that every user of it gets the same scale.
    """

    low: float
    high: float
    source: str = "default"

    def __call__(self, quality: torch.Tensor) -> torch.Tensor:
        span = max(self.high - self.low, 1e-12)
        return ((quality - self.low) / span).clamp(0.0, 1.0) * 100.0

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> QualityCalibration:
        """From saved metadata; ``ValueError`` unless ``low`` < ``high`` are finite numbers."""
        low, high = data.get("low"), data.get("high")
        numbers = [v for v in (low, high) if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) != 2 or not all(math.isfinite(v) for v in numbers):
            raise ValueError(f"calibration low/high must be finite numbers, not {low!r}/{high!r}")
        if not low < high:
            raise ValueError(f"calibration low {low:g} is not below high {high:g}")
        return cls(float(low), float(high), str(data.get("source", "checkpoint")))


@dataclass
class ModelInfo:
    """What a model needs to be rebuilt and fed: arch, its kwargs, preprocessing, quality semantics."""

    arch: str
    arch_kwargs: dict = field(default_factory=dict)
    preprocess: Preprocess = field(default_factory=Preprocess)
    family: str = "fqtool"
    calibration: QualityCalibration | None = None
    #: Where imported weights came from (file names, sha256), kept in converted checkpoints.
    source: dict | None = None
    #: The checkpoint says its training data were synthetic (``fqtool synth``): real photos may rank badly.
    trained_on_synthetic: bool = False


@runtime_checkable
class EmbeddingModel(Protocol):
    """What every runnable model offers, torch (:class:`FaceModel`) or ONNX Runtime
    (:class:`~fqtool.models.onnx_model.OnnxFaceModel`): what :func:`~fqtool.models.loading.load_model`
    returns and what scoring, verification and the export use."""

    info: ModelInfo
    quality_method: str

    @property
    def embedding_size(self) -> int: ...

    @property
    def preprocess(self) -> Preprocess: ...

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """RGB uint8 (N, 3, H, W) → this model's input."""
        ...

    def set_quality_method(self, method: str) -> None: ...

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model input → ``(embedding N×D, quality N)``."""
        ...


class FaceModel(nn.Module):
    """Backbone (+ quality head). ``forward`` maps normalised images to ``(embedding, quality)``.

    ``quality_method`` is ``norm`` (the embedding's L2 norm, MagFace), or the head's own method:
    ``head`` (EQFace's MLP) or ``crfiqa`` (CR-FIQA's regressor). ``prepare`` turns RGB uint8 images
    into the network's input.
    """

    def __init__(self, backbone: nn.Module, info: ModelInfo, quality_head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.quality_head = quality_head
        self.info = info
        self.quality_method = self.head_method or "norm"

    @property
    def head_method(self) -> str | None:
        """What the quality head computes (``head`` or ``crfiqa``); ``None`` without a head."""
        if self.quality_head is None:
            return None
        return str(getattr(self.quality_head, "quality_method", "head"))

    @property
    def preprocess(self) -> Preprocess:
        return self.info.preprocess

    @property
    def embedding_size(self) -> int:
        return int(self.backbone.embedding_size)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """RGB uint8 (N, 3, H, W) → normalised float input for this network."""
        return self.info.preprocess(images)

    def set_quality_method(self, method: str) -> None:
        """``norm``, ``head`` (the model's own head) or ``crfiqa``; see :func:`resolve_quality_method`."""
        self.quality_method = resolve_quality_method(method, self.head_method)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, flat = self.backbone.forward_features(x)
        embedding = embedding.float()
        if self.quality_method in HEAD_METHODS and self.quality_head is not None:
            quality = self.quality_head(flat)
        else:
            quality = torch.linalg.vector_norm(embedding, dim=1)
        return embedding, quality
