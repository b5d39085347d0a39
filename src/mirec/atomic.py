"""Write result files and folders whole or not at all, and durably: a temp file beside the
target, fsynced, renamed onto it, and the folder fsynced, so that after a crash (kill -9,
power loss) a reader finds the old file or the new one, never a mix or an empty file.

A write that fails because the disk is full or failing (ENOSPC, EIO, a quota, a read-only
file system), from Python or from a library writer (safetensors, pyarrow, faiss quote the
system's message), is a :class:`~mirec.errors.WriteError` naming the file: the temp file or
staging folder is removed and the file or folder it would have replaced is left as it was.

Temp files are created with the mode ``0o666`` masked by the umask, as ``open`` creates
files, so a result file has the permissions the user asked for (``tempfile.mkstemp``'s
private ``0o600`` would survive the rename).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mirec.errors import MirecError, WriteError

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EROFS})
"""Errors of the disk, not of the writer: a full or failing disk, a quota, a file over the
file system's size limit, a read-only file system."""
DISK_MESSAGES = tuple(os.strerror(code) for code in sorted(DISK_ERRNOS))
"""The system's words for them, which libraries (safetensors' Rust, faiss' C++, pyarrow)
quote in errors of their own types."""


def write_failure(err: BaseException, path: Path, staging: Path | None = None) -> WriteError | None:
    """A WriteError naming ``path`` when ``err`` is a failure of the disk (see
    :data:`DISK_ERRNOS`), else None. A file named by ``err`` inside ``staging`` is named at
    its place in ``path`` (the folder ``staging`` was to become)."""
    named: Path | None = None
    if isinstance(err, WriteError):  # a file of the staging folder: named at its place
        if staging is None or not err.path.is_relative_to(staging):
            return None
        named, reason = err.path, err.reason
    elif isinstance(err, MirecError):
        return None
    elif isinstance(err, OSError) and err.errno in DISK_ERRNOS:
        reason = os.strerror(err.errno)  # a library's strerror may be its own sentence
        named = Path(os.fsdecode(err.filename)) if err.filename else None
    else:
        text = str(err)
        reason = next((words for words in DISK_MESSAGES if words in text), None)
        if reason is None:
            return None
    if staging is not None and named is not None and named.is_relative_to(staging):
        path = path / named.relative_to(staging)
    return WriteError(
        f"{path}: cannot be written ({reason}); nothing was replaced: free some space, or "
        "mend the disk, and run the command again",
        path=path,
        reason=reason,
    )


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
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        failure = write_failure(err, path)
        if failure is not None:
            raise failure from err
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


def _umask_mode(full: int) -> int:
    """``full`` (0o777 for a folder) less the process umask: what ``mkdir`` would give, where
    ``mkdtemp`` makes a folder private to its owner."""
    umask = os.umask(0)  # os has no getter: set it, then put it back
    os.umask(umask)
    return full & ~umask


OUTPUTS_INSIDE = ("the current folder", "the home folder")
"""Kept folders that an output may lie inside (but never hold)."""


def kept_folders(*named: tuple[Path | None, str]) -> list[tuple[Path, str]]:
    """``named`` (a folder and what it is; None: none) and the folders a replaced output
    must never take with it: mirec's data and cache folders, the current folder, the home
    folder."""
    from mirec.core.paths import cache_dir, default_data_dir

    kept = [(path, what) for path, what in named if path is not None]
    kept += [
        (default_data_dir(), "the data folder"),
        (cache_dir(), "mirec's cache folder"),
        (Path.cwd(), "the current folder"),
        (Path.home(), "the home folder"),
    ]
    return kept


def refuse_unsafe_target(
    target: Path, kept: list[tuple[Path, str]], elsewhere: str = "write somewhere else"
) -> None:
    """A MirecError when replacing the folder ``target`` (:func:`staged_folder`) could take
    more than it: ``target`` is a symbolic link (the link would be replaced, its folder
    left, or the other way round), or it is, holds or lies inside one of ``kept`` (a folder
    and what it is, as :func:`kept_folders` lists them)."""
    if target.is_symlink():
        raise MirecError(
            f"{target}: is a symbolic link (to {os.readlink(target)}); name the folder "
            "itself, or another path"
        )
    where = target.resolve()
    for folder, what in kept:
        place = folder.resolve()
        if place == where or place.is_relative_to(where):
            raise MirecError(f"{target}: holds {what} {folder}; {elsewhere}")
        # outputs are made inside the current and home folders all the time
        if where.is_relative_to(place) and what not in OUTPUTS_INSIDE:
            raise MirecError(f"{target}: is inside {what} {folder}; {elsewhere}")


def refuse_foreign_contents(
    target: Path, own: Callable[[str], bool], marker: str, what: str
) -> None:
    """A MirecError when replacing the existing folder ``target`` would delete files that
    are not ``what`` (an earlier output of the same writer): ``--overwrite`` replaces an
    earlier export, never a folder of other files (a data folder, a project) that happens
    to be named. ``target`` must hold ``marker`` and only names that are ``own``."""
    if not target.is_dir():
        return
    names = sorted(entry.name for entry in target.iterdir())
    if not names:
        return
    foreign = [name for name in names if not own(name)]
    if marker not in names or foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise MirecError(
            f"{target}: holds files that are not {what} ({shown or 'no ' + marker}); "
            f"--overwrite replaces only {what}: choose another folder, or empty this one"
        )


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A new, empty folder beside ``target`` to fill. When the block completes, it takes the
    place of ``target`` (an existing ``target`` folder is moved aside first and deleted only
    once the new one is in place); when the block raises, it is deleted and ``target`` is
    left as it was. Callers decide whether an existing ``target`` may be replaced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        os.chmod(staging, _umask_mode(0o777))
        yield staging
        if not target.exists():
            staging.rename(target)
            fsync_folder(target.parent)
            return
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
        old.rmdir()  # a fresh name, freed: renaming a folder onto a folder is not portable
        target.rename(old)
        try:
            staging.rename(target)
        except BaseException:
            old.rename(target)
            raise
        fsync_folder(target.parent)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        failure = write_failure(err, target, staging)
        if failure is not None:
            raise failure from err
        raise
