"""Write result files whole or not at all: a temp file in the same folder, then a rename."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp path in ``path``'s folder for the block to write; renamed onto ``path`` when
    the block ends, removed if it raises. ``suffix`` is for writers that insist on one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def save_npz_atomic(path: Path, arrays: dict[str, Any]) -> None:
    """``numpy.savez`` to ``path`` through a temp file in the same folder, then a rename."""
    import numpy as np

    with atomic_path(path, ".tmp.npz") as tmp:  # savez appends .npz to any other name
        np.savez(tmp, **arrays)
