"""ONNX export with an ONNX Runtime parity check, and ``OnnxFaceModel`` to run the exported graphs."""

from fqtool.export.onnx import ExportReport, export_onnx, split_paths
from fqtool.export.parity import FP16_TOLERANCE, FP32_TOLERANCE, ParityError, ParityReport, Tolerance
from fqtool.export.runtime import OnnxFaceModel, OnnxMetadataWarning, OnnxProviderWarning, select_providers

__all__ = [
    "FP16_TOLERANCE",
    "FP32_TOLERANCE",
    "ExportReport",
    "OnnxFaceModel",
    "OnnxMetadataWarning",
    "OnnxProviderWarning",
    "ParityError",
    "ParityReport",
    "Tolerance",
    "export_onnx",
    "select_providers",
    "split_paths",
]
