"""Face models: the registry, iResNet, quality heads, preprocessing and checkpoints."""

from fqtool.models.face_model import EmbeddingModel, FaceModel, ModelInfo, QualityCalibration
from fqtool.models.preprocess import FAMILY_PREPROCESS, Preprocess
from fqtool.models.registry import create_model, get_spec, list_models, register_model

__all__ = [
    "FAMILY_PREPROCESS",
    "EmbeddingModel",
    "FaceModel",
    "ModelInfo",
    "Preprocess",
    "QualityCalibration",
    "create_model",
    "get_spec",
    "list_models",
    "register_model",
]
