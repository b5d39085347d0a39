"""Checks that a path given to a reader holds the file (or folder) it expects, and a pass over
a text file's bytes that refuses what would make a parser hang or guess.

Text files are checked before any parser sees them:

* compressed or binary content (gzip, zip, bzip2, xz, zstd, Parquet, SQLite, UTF-16) is
  named as such;
* a NUL byte or another control character (other than tab, line feed, vertical tab, form
  feed and carriage return) is an error naming its line;
* a line longer than :func:`max_line_bytes` (1 MiB unless ``$MIREC_MAX_LINE_BYTES`` says
  otherwise) is an error naming its line, found in a single pass of a few milliseconds per
  MiB, so a file that is one 10 MB line is refused at once;
* for delimited formats, a line with more fields than the format has is an error naming
  its line (DuckDB's reader, asked to keep such lines' errors, takes time quadratic in their
  number of fields: 160,000 fields took a minute).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import numpy as np

from mirec.errors import ConfigError, DataError

MAX_LINE_ENV = "MIREC_MAX_LINE_BYTES"
DEFAULT_MAX_LINE = 1 << 20
"""1 MiB: a line of an interaction log is tens of bytes; the longest line of the datasets
mirec knows (a LastFM user's whole history) is 4 KiB."""

_CHUNK = 1 << 23
_HEAD = 1 << 16
_EXTRA_FIELDS = 1000
"""A line whose separators may be quoted (``"a,b"``) is refused only when it has this many
more separators than the format has fields."""

_SIGNATURES = (
    (b"\x1f\x8b", "gzip-compressed data", "decompress it first (gunzip)"),
    (b"PK\x03\x04", "a zip archive", "unzip it and give the file inside"),
    (b"BZh", "bzip2-compressed data", "decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "xz-compressed data", "decompress it first (unxz)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data", "decompress it first (unzstd)"),
    (b"PAR1", "a Parquet file", "read it with format interactions, named *.parquet"),
    (b"SQLite format 3\x00", "an SQLite database", "export the table as text first"),
    (b"\xff\xfe", "UTF-16 text", "save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text", "save it as UTF-8"),
)

_CONTROL = np.zeros(256, dtype=bool)
_CONTROL[[*range(0, 9), *range(14, 32), 127]] = True
"""Bytes no text file holds: C0 controls but tab, LF, VT, FF and CR; and DEL."""
_TEXT_BYTES = bytes(b for b in range(256) if not _CONTROL[b])
_FIELD_CHECK_LINES = 1000
"""Every one of a file's first lines has its fields counted before parsing, so a file in the
wrong format fails at once with the line's own count."""

P = ParamSpec("P")
R = TypeVar("R")


def max_line_bytes() -> int:
    """The longest line a reader accepts, in bytes: ``$MIREC_MAX_LINE_BYTES``, else 1 MiB."""
    raw = os.environ.get(MAX_LINE_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_LINE
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"{MAX_LINE_ENV}={raw!r}: expected a number of bytes >= 1, e.g. {16 << 20} for 16 MiB"
        )
    return value


def _os_errors(func: Callable[P, R]) -> Callable[P, R]:
    """``func`` with any file-system refusal (a folder or file that cannot be read, a path
    through a file) reported as a one-line DataError naming the path."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except OSError as err:
            where = err.filename if err.filename is not None else "a data file"
            raise DataError(f"{where}: cannot be read ({err.strerror or err})") from err

    return wrapper


def _check_file(path: Path, what: str, *, text: bool = True) -> None:
    """A readable, non-empty regular file, or a DataError that says what belongs there.

    ``text``: a compressed or binary file is named as such."""
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from err
    if not exists:
        raise DataError(f"{path}: no such file; put the {what} there or give the right path")
    if is_dir:
        raise DataError(f"{path}: is a folder, expected the {what}")
    try:
        with path.open("rb") as f:
            head = f.read(_HEAD)
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from err
    if not head or (len(head) < _HEAD and not head.strip()):
        raise DataError(f"{path}: file is empty, expected the {what}")
    if text:
        for magic, kind, advice in _SIGNATURES:
            if head.startswith(magic) and not (magic == b"BZh" and not head[3:4].isdigit()):
                raise DataError(f"{path}: is {kind}, not text; {advice}")
        arr = np.frombuffer(head, dtype=np.uint8)
        if _looks_binary(arr):
            pos = int(np.flatnonzero(_CONTROL[arr])[0])
            line = head.count(b"\n", 0, pos) + 1
            raise DataError(
                f"{path}: looks like a binary file, not text (byte 0x{head[pos]:02x} on line "
                f"{line})"
            )


def _folder_and_file(folder: str | Path, what: str) -> tuple[Path, Path | None]:
    """Split a folder-or-file argument; a missing path is an error naming what belongs there."""
    path = Path(folder)
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from err
    if not exists:
        raise DataError(f"{path}: no such file or folder; put the {what} there")
    if is_dir:
        try:
            next(path.iterdir(), None)
        except OSError as err:
            raise DataError(f"{path}: folder cannot be read ({err.strerror or err})") from err
        return path, None
    return path.parent, path


def _is_file(path: Path) -> bool:
    """``path.is_file()``, with a folder that cannot be searched reported, not taken as no."""
    try:
        return path.is_file()
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from err


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, with a folder that cannot be searched reported, not taken as no."""
    try:
        return path.is_dir()
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from err


def _check_text(
    path: Path, *, sep: str | None = None, n_fields: int | None = None, quote: str = ""
) -> None:
    """One pass over the bytes of a text file: control bytes, over-long lines and (with
    ``sep`` and ``n_fields``) lines with too many fields are errors naming their line."""
    limit = max_line_bytes()
    line = 1  # number of the first line in ``data``
    rest = b""
    with path.open("rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            data = rest + chunk if rest else chunk
            if not chunk:
                if data:
                    _check_lines(path, data, line, limit, sep, n_fields, quote)
                return
            # cut after the last line break; a final \r may be the first half of \r\n
            end = max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)) + 1
            if end == 0:
                if len(data) > limit:
                    _check_lines(path, data[: limit + 1], line, limit, sep, n_fields, quote)
                rest = data
                continue
            line = _check_lines(path, data[:end], line, limit, sep, n_fields, quote)
            rest = data[end:]


def _check_lines(
    path: Path,
    data: bytes,
    first: int,
    limit: int,
    sep: str | None,
    n_fields: int | None,
    quote: str,
) -> int:
    """Check whole lines (``data`` ends at a line end, or is the file's last line); returns
    the number of the line after them."""
    arr = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    returns = np.flatnonzero(arr == 13)
    if len(returns):  # a \r not followed by \n ends a line too (old Mac text), as for DuckDB
        after = np.minimum(returns + 1, len(arr) - 1)
        lone = returns[(returns + 1 == len(arr)) | (arr[after] != 10)]
        if len(lone):
            ends = np.union1d(ends, lone)
    if not len(ends) or ends[-1] != len(arr) - 1:
        ends = np.append(ends, len(arr))  # a last line without a line break
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    if data.translate(None, _TEXT_BYTES):  # the control bytes, if any (fast, in C)
        pos = int(np.flatnonzero(_CONTROL[arr])[0])
        byte = data[pos]
        what = "a NUL byte (\\0)" if byte == 0 else f"the control character 0x{byte:02x}"
        number = first + int(np.searchsorted(ends, pos))
        raise DataError(f"{path}: line {number}: contains {what}, which text never holds")
    lengths = ends - starts
    long = np.flatnonzero(lengths > limit)
    if len(long):
        number = first + int(long[0])
        raise DataError(
            f"{path}: line {number}: longer than {limit:,} bytes (the reader's limit); if the "
            f"line is meant to be this long, raise the limit with {MAX_LINE_ENV}"
        )
    if sep is not None and n_fields is not None:
        # the first lines (a file in the wrong format fails there), and any long line (the
        # one that would take DuckDB minutes); DuckDB itself names other lines' extra fields
        rows = np.flatnonzero(lengths > max(4096, 64 * n_fields))
        if first <= _FIELD_CHECK_LINES:
            rows = np.union1d(np.arange(min(len(ends), _FIELD_CHECK_LINES - first + 1)), rows)
        for row in rows:
            _check_fields(
                path, data[starts[row] : ends[row]], first + int(row), sep, n_fields, quote
            )
    return first + len(ends)


def _check_fields(
    path: Path, text: bytes, number: int, sep: str, n_fields: int, quote: str
) -> None:
    """A line with more ``sep`` than ``n_fields`` allow is an error naming it; a line with a
    quote may hold quoted separators, so only one with far more is refused."""
    raw_sep = sep.encode()
    found = text.count(raw_sep) + 1
    if found <= n_fields:
        return
    text = text.rstrip(b"\r")
    shown = text[:60].decode("utf-8", "replace") + ("..." if len(text) > 60 else "")
    if quote and quote.encode() in text:
        if found > n_fields + _EXTRA_FIELDS:
            raise DataError(
                f"{path}: line {number}: holds {found - 1:,} {sep!r} separators, far more "
                f"than {n_fields} fields need: {shown!r}"
            )
        return
    raise DataError(
        f"{path}: line {number}: expected {n_fields} fields separated by {sep!r}, found "
        f"{found:,}: {shown!r}"
    )


def _looks_binary(head: np.ndarray) -> bool:
    """More than 1% of the first 64 KiB (and more than 8 bytes) are control bytes: not text.
    A few NUL or control bytes in a text file are reported on their line instead."""
    count = int(np.count_nonzero(_CONTROL[head]))
    return count > max(8, len(head) // 100)
