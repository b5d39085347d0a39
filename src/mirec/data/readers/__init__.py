"""Readers for the interaction-log formats mirec understands.

Every reader returns a :class:`~mirec.data.log.RawLog` in file order. Parsing is done by
DuckDB's CSV reader, and splitting and validating columns by pyarrow compute kernels: no
Python loop runs over rows. The one exception is the error path: when a value turns out to be
bad after the scan (an id that is not an integer, a NaN timestamp), the file is walked once
up to that row to name its physical line.

Bad input never produces a traceback, a hang or a silent drop: it raises :class:`DataError`
with a one-line message ``<file>: line <n>: <what is wrong>`` (1-based physical line, header
included), or ``<file>: <what is wrong>`` naming the field or column when there is no line.
Blank lines (empty or whitespace only) hold no data and are skipped anywhere in a file.
Before any parsing, a text file's bytes are checked once (``_files._check_text``): compressed
or binary content, NUL and other control bytes, a line longer than ``$MIREC_MAX_LINE_BYTES``
(default 1 MiB) and a line with more fields than its format are errors naming the line.

Ids: the ``movielens``, ``movielens-100k`` and ``taobao`` formats have integer ids, and a
line holding another id is an error. ``sequences`` and ``interactions`` read integer ids
when every id is one and text when most are not; a column of integers but for a few lines
(a repeated header, a 20-digit id, a stray word) is an error naming the first such line.
``id_type`` (``"int"`` or ``"str"``) says which to read instead, for every format.

Formats (``FORMATS``):

* ``sequences``: ``user item1 item2 ...`` per line (S3-Rec style), in time order; optional
  ``<stem>_item2attributes.json`` beside it gives item attributes.
* ``interactions``: any delimited text or Parquet log, columns named by the caller; also a
  folder or glob of Parquet parts, read as one log.
* ``movielens``: ``ratings.csv``/``movies.csv`` (latest, 20M, 25M) or ``ratings.dat``/
  ``movies.dat`` (1M, 10M), and 1M's ``users.dat`` (user profiles).
* ``movielens-100k``: ``u.data``, ``u.item``, ``u.genre``, ``u.user`` (user profiles).
* ``movielens-sequences``: a MovieLens log as a ``sequences`` file (``ml-1m.txt``: ``user
  item`` lines, each user's items oldest first), with ``movies.dat`` (titles, genres) and
  ``users.dat`` (user profiles) beside it.
* ``taobao``: Alibaba's ``UserBehavior.csv``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mirec.data.log import RawLog
from mirec.data.readers._files import (
    DEFAULT_MAX_LINE,
    MAX_LINE_ENV,
    _check_file,
    _is_dir,
    _os_errors,
    max_line_bytes,
)
from mirec.data.readers.interactions import ROLES, default_sep, parquet_parts, read_interactions
from mirec.data.readers.movielens import (
    ML100K_GENRES,
    _ml100k_files,
    _movielens_files,
    _movielens_sequences_companions,
    read_movielens,
    read_movielens_100k,
    read_movielens_sequences,
)
from mirec.data.readers.sequences import _attributes_beside, read_sequences
from mirec.data.readers.taobao import read_taobao
from mirec.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_LINE",
    "FORMATS",
    "ID_TYPES",
    "MAX_LINE_ENV",
    "ML100K_GENRES",
    "ROLES",
    "max_line_bytes",
    "read_interactions",
    "read_log",
    "read_movielens",
    "read_movielens_100k",
    "read_movielens_sequences",
    "read_sequences",
    "read_taobao",
    "source_files",
]


FORMATS = (
    "sequences",
    "interactions",
    "movielens",
    "movielens-100k",
    "movielens-sequences",
    "taobao",
)
ID_TYPES = ("int", "str")


@_os_errors
def read_log(
    path: str | Path,
    format: str,
    *,
    columns: str | Sequence[str] | None = None,
    sep: str | None = None,
    id_type: str | None = None,
) -> RawLog:
    """Read ``path`` in one of :data:`FORMATS`.

    ``sequences`` picks up ``<stem>_item2attributes.json`` beside the file when it exists.
    ``interactions`` needs ``columns``; ``sep`` defaults to a tab for ``.tsv`` files, else a
    comma. ``columns`` and ``sep`` apply to ``interactions`` only. ``id_type`` (None, ``int``
    or ``str``): how ids are read (see the module docstring).
    """
    _check_format(format)
    _check_id_type(id_type)
    path = Path(path)
    if format != "interactions" and (columns is not None or sep is not None):
        raise ConfigError(
            f"columns and sep apply to format 'interactions' only, not {format!r} "
            "(its layout is fixed)"
        )
    if format == "sequences":
        attributes = _attributes_beside(path)
        return read_sequences(path, attributes, id_type=id_type)
    if format == "interactions":
        return read_interactions(path, columns, sep=default_sep(path, sep), id_type=id_type)
    if format == "movielens":
        return read_movielens(path, id_type=id_type)
    if format == "movielens-100k":
        return read_movielens_100k(path, id_type=id_type)
    if format == "movielens-sequences":
        return read_movielens_sequences(path, id_type=id_type)
    return read_taobao(path, id_type=id_type)


@_os_errors
def source_files(path: str | Path, format: str) -> list[Path]:
    """The files :func:`read_log` reads for ``path`` in ``format`` (all existing files)."""
    _check_format(format)
    path = Path(path)
    if format == "sequences":
        _check_file(path, "sequence file (lines 'user item1 item2 ...')")
        attributes = _attributes_beside(path)
        return [path] if attributes is None else [path, attributes]
    if format == "movielens":
        return [p for p in _movielens_files(path) if p is not None]
    if format == "movielens-100k":
        return [p for p in _ml100k_files(path) if p is not None]
    if format == "movielens-sequences":
        _check_file(path, "sequence file (lines 'user item1 item2 ...')")
        return [path, *(p for p in _movielens_sequences_companions(path) if p is not None)]
    if format == "interactions" and (parts := parquet_parts(path)) is not None:
        return parts
    if format == "taobao" and _is_dir(path):
        path = path / "UserBehavior.csv"
    _check_file(path, "interaction log", text=path.suffix.lower() != ".parquet")
    return [path]


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; known formats: {', '.join(FORMATS)}")


def _check_id_type(id_type: str | None) -> None:
    if id_type is not None and id_type not in ID_TYPES:
        raise ConfigError(f"id_type {id_type!r}: expected int or str (or unset: auto-detect)")
