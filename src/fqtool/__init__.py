"""fqtool: face recognition training and label-free face image quality, in one CLI."""

import os as _os

__version__ = "0.1.0"

# onnxruntime collects usage telemetry and, when HOME is read-only, prints a warning about it as soon as it
# is imported. fqtool runs offline: telemetry is off unless the user sets ORT_DISABLE_TELEMETRY themselves.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
