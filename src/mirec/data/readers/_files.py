"""Checks that a path given to a reader holds the file (or folder) it expects."""

from __future__ import annotations

from pathlib import Path

from mirec.errors import DataError


def _check_file(path: Path, what: str) -> None:
    """A readable, non-empty regular file, or a DataError that says what belongs there."""
    if not path.exists():
        raise DataError(f"{path}: no such file; put the {what} there or give the right path")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected the {what}")
    try:
        with path.open("rb") as f:
            head = f.read(1 << 16)
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from err
    if not head or (len(head) < (1 << 16) and not head.strip()):
        raise DataError(f"{path}: file is empty, expected the {what}")


def _folder_and_file(folder: str | Path, what: str) -> tuple[Path, Path | None]:
    """Split a folder-or-file argument; a missing path is an error naming what belongs there."""
    path = Path(folder)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; put the {what} there")
    if path.is_dir():
        return path, None
    return path.parent, path
