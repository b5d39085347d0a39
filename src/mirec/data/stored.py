"""Sequences on disk: a folder with one ``.npy`` file per array, opened memory-mapped.

A cache entry of :mod:`mirec.data.prepare` is such a folder. Loading it reads only the
arrays' headers: the sequences of a log larger than memory are paged in as they are used,
and several processes on one machine share the pages. Strings are stored as fixed-width
unicode, so loading never needs pickle. A finished folder records the size and SHA-256 of
each file (``checksums.json``), so a damaged one is found before it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import fields
from pathlib import Path

import numpy as np

from mirec.atomic import write_json_atomic
from mirec.data.sequences import Sequences

SUFFIX = ".npy"
CHECKSUMS_FILE = "checksums.json"
"""The size and SHA-256 of every array file of a finished folder (:func:`write_checksums`)."""


def write_arrays(folder: Path, arrays: dict[str, np.ndarray | None]) -> None:
    """Each array as ``folder/<name>.npy``, flushed to disk (None: nothing written)."""
    for name, value in arrays.items():
        if value is None:
            continue
        path = folder / f"{name}{SUFFIX}"
        with path.open("wb") as f:
            np.save(f, value.astype(str) if value.dtype == object else value)
            f.flush()
            os.fsync(f.fileno())


def write_sequences(folder: Path, seqs: Sequences) -> None:
    """Every array of ``seqs`` into ``folder`` (:func:`read_sequences` reads them back)."""
    write_arrays(folder, {f.name: getattr(seqs, f.name) for f in fields(seqs)})


def read_sequences(folder: Path) -> Sequences:
    """The :class:`Sequences` whose arrays ``folder`` holds, memory-mapped.

    The maps are copy-on-write (``mmap_mode="c"``): torch takes them without a copy or a
    warning about read-only memory, and a write by mistake stays in this process, never
    reaching the file other runs read."""
    names = {f.name for f in fields(Sequences)}
    arrays = {}
    for path in folder.glob(f"*{SUFFIX}"):
        if path.stem in names:
            arrays[path.stem] = np.load(path, mmap_mode="c", allow_pickle=False)
    return Sequences(**arrays)


def write_checksums(folder: Path) -> None:
    """Record the size and SHA-256 of every array file of the finished ``folder``, for
    :func:`damage` to check before the folder is used again."""
    sums = {path.name: _file_sum(path) for path in sorted(folder.glob(f"*{SUFFIX}"))}
    write_json_atomic(folder / CHECKSUMS_FILE, sums)


def damage(folder: Path) -> str | None:
    """Why ``folder``'s arrays are not those :func:`write_checksums` recorded (a file
    missing, added, cut short or changed), or None when they are. Hashing reads every byte
    (about a second per 2 GB, from the page cache when recent)."""
    try:
        recorded = json.loads((folder / CHECKSUMS_FILE).read_text())
    except FileNotFoundError:
        return f"no {CHECKSUMS_FILE}"
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return f"{CHECKSUMS_FILE} unreadable ({err})"
    present = {path.name for path in folder.glob(f"*{SUFFIX}")}
    if not isinstance(recorded, dict) or set(recorded) != present:
        return f"its files are not those {CHECKSUMS_FILE} lists"
    for name in sorted(present):
        try:
            actual = _file_sum(folder / name)
        except OSError as err:
            return f"{name} cannot be read ({err.strerror or err})"
        if actual != recorded[name]:
            return f"{name} does not match its checksum"
    return None


def _file_sum(path: Path) -> dict[str, int | str]:
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"bytes": path.stat().st_size, "sha256": digest}
