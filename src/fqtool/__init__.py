"""fqtool: face recognition training and label-free face image quality, in one CLI."""

__version__ = "0.1.0"
