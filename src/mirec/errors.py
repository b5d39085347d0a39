"""User-facing errors.

Every problem a user can cause (a bad file, an unknown name, a bad setting) is raised as a
:class:`MirecError`; the CLI prints its one-line message and exits with code 2 instead of a
traceback.
"""

from __future__ import annotations

from pathlib import Path


class MirecError(Exception):
    """An error caused by input or settings, with a message meant for the user."""

    exit_code = 2


class DataError(MirecError):
    """A data file is missing, malformed, or leaves nothing to train on.

    The message names the file and, where there is one, the line or the field.
    """


class ConfigError(MirecError):
    """An unknown model, dataset or setting, or a setting with a bad value."""


class UnknownIdError(ConfigError):
    """A user or item id that the model's vocabulary does not hold (HTTP: 404)."""


class WriteError(MirecError):
    """A result file could not be written: the disk is full or failed (ENOSPC, EIO, a
    quota). The message names the file; what it would have replaced is kept."""

    def __init__(self, message: str, *, path: Path, reason: str) -> None:
        super().__init__(message)
        self.path, self.reason = path, reason
