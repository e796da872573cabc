"""fqtool's own errors.

Everything the user can cause (a bad file, a wrong option, a missing weight) raises a
:class:`FqtoolError`; the CLI turns it into one line on stderr and exit code 2. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class FqtoolError(Exception):
    """A problem with the user's input or environment, reported as one line (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)


class BadInputError(FqtoolError):
    """A file or folder that fqtool cannot read or that is not what it claims to be."""


class FormatError(BadInputError):
    """A file whose bytes do not follow the format it should (RecordIO, .bin, checkpoint...)."""


class UnsafePickleError(FormatError):
    """A pickle that tries to build or call something a data file never needs."""


class CheckpointError(BadInputError):
    """Weights that do not fit the model they are loaded into."""


class OutputError(FqtoolError):
    """An output location that cannot be written."""


class FqtoolWarning(UserWarning):
    """Something the user should know that does not stop the work; the CLI prints it as one line."""
