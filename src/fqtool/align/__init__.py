"""Face detection and five-point alignment to insightface's 112×112 template (``fqtool align``)."""
