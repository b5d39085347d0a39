"""Write result files whole or not at all, and durably: a temp file beside the target, fsynced,
renamed onto it, and the folder fsynced, so that after a crash (kill -9, power loss) a
reader finds the old file or the new one, never a mix or an empty file.

Temp files are created with the mode ``0o666`` masked by the umask, as ``open`` creates
files, so a result file has the permissions the user asked for (``tempfile.mkstemp``'s
private ``0o600`` would survive the rename).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A new, empty file in ``path``'s folder, named after it and hidden (``.NAME.XXXX``),
    with the umask's permissions; the caller writes it and renames or removes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp


def fsync_folder(folder: Path) -> None:
    """Make the renames and removals in ``folder`` durable (its entries, not the files)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(tmp: Path, path: Path) -> None:
    """Flush the written ``tmp`` to disk, rename it onto ``path``, flush the folder."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_folder(path.parent)


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp path beside ``path`` for a writer that takes a file name; when the block ends
    without error the file replaces ``path`` (:func:`durable_replace`), else it is removed."""
    tmp = temp_beside(path, suffix)
    mode = tmp.stat().st_mode
    try:
        yield tmp
        # a writer that replaces the file by its own temp file (safetensors does) leaves
        # that file's private mode: give back the one the umask chose
        tmp.chmod(mode)
        durable_replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` whole or not at all."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def save_npz_atomic(path: Path, arrays: dict[str, Any]) -> None:
    """``numpy.savez`` to ``path`` whole or not at all."""
    import numpy as np

    # savez appends ".npz" to a name without it, so the temp name keeps that suffix
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, **arrays)
