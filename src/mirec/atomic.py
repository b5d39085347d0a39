"""Write result files and folders whole or not at all: a temp file (or folder) beside the
target, then a rename. They get the permissions a plain ``open`` or ``mkdir`` would give,
not the private ones of a temp file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _default_mode(full: int) -> int:
    """``full`` (0o666 for a file, 0o777 for a folder) less the process umask: what ``open``
    or ``mkdir`` would give, where mkstemp and mkdtemp make them private to the owner."""
    umask = os.umask(0)  # os has no getter: set it, then put it back
    os.umask(umask)
    return full & ~umask


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, _default_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def save_npz_atomic(path: Path, arrays: dict[str, Any]) -> None:
    """``numpy.savez`` to ``path`` through a temp file in the same folder, then a rename."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.chmod(tmp, _default_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A new, empty folder beside ``target`` to fill. When the block completes, it takes the
    place of ``target`` (an existing ``target`` folder is moved aside first and deleted only
    once the new one is in place); when the block raises, it is deleted and ``target`` is
    left as it was. Callers decide whether an existing ``target`` may be replaced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        os.chmod(staging, _default_mode(0o777))
        yield staging
        if not target.exists():
            staging.rename(target)
            return
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
        old.rmdir()  # a fresh name, freed: renaming a folder onto a folder is not portable
        target.rename(old)
        try:
            staging.rename(target)
        except BaseException:
            old.rename(target)
            raise
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
