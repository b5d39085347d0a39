"""Sequences on disk: a folder with one ``.npy`` file per array, opened memory-mapped.

A cache entry of :mod:`mirec.data.prepare` is such a folder. Loading it reads only the
arrays' headers: the sequences of a log larger than memory are paged in as they are used,
and several processes on one machine share the pages. Strings are stored as fixed-width
unicode, so loading never needs pickle.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import numpy as np

from mirec.data.sequences import Sequences

SUFFIX = ".npy"


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
