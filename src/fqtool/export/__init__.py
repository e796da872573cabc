"""ONNX export with an ONNX Runtime parity check.

``OnnxFaceModel`` (which runs the exported graphs) lives in :mod:`fqtool.models.onnx_model`, because
``load_model`` opens ``.onnx`` files; it is re-exported here for callers that look for it beside the export.
"""

from fqtool.export.onnx import ExportReport, export_onnx, split_paths
from fqtool.export.parity import FP16_TOLERANCE, FP32_TOLERANCE, ParityError, ParityReport, Tolerance
from fqtool.models.onnx_model import OnnxFaceModel, OnnxMetadataWarning, OnnxProviderWarning, select_providers

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
