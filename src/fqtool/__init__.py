"""fqtool: face recognition training and label-free face image quality, in one CLI and a small Python API.

``import fqtool`` stays light (no torch): the Python API (:mod:`fqtool.api`) is loaded on first use of
one of its names, e.g. ``fqtool.load_model``; ``fqtool.__version__`` comes from :mod:`fqtool._version`.
"""

from __future__ import annotations

import importlib
import os as _os
from typing import TYPE_CHECKING, Any

# onnxruntime collects usage telemetry and, when HOME is read-only, prints a warning about it as soon as it
# is imported. fqtool runs offline: telemetry is off unless the user sets ORT_DISABLE_TELEMETRY themselves.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

#: Public names served lazily (PEP 562), each from the module that defines it.
_LAZY_EXPORTS = {
    "__version__": "fqtool._version",
    "align_faces": "fqtool.api",
    "erc_curve": "fqtool.api",
    "load_model": "fqtool.api",
    "QualityModel": "fqtool.api",
    "read_images": "fqtool.api",
    "verify": "fqtool.api",
}

__all__ = ["QualityModel", "__version__", "align_faces", "erc_curve", "load_model", "read_images", "verify"]

if TYPE_CHECKING:
    from fqtool._version import __version__
    from fqtool.api import QualityModel, align_faces, erc_curve, load_model, read_images, verify


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fqtool' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
