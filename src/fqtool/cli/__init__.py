"""The ``fqtool`` command line: one thin module per command over the shared core."""
