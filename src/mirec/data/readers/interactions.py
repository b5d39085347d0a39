"""Generic interaction logs: delimited text or Parquet, columns named by the caller."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mirec.data.log import RawLog
from mirec.data.readers._columns import (
    _category_table,
    _check_id_characters,
    _finite_column,
    _first_failure,
    _first_true,
    _Ids,
    _require_nonempty,
    _typed_ids,
)
from mirec.data.readers._files import _check_file, _is_dir, _os_errors
from mirec.data.readers._scan import (
    _F,
    _find_column,
    _first_line,
    _first_line_of,
    _header_names,
    _scan,
    _split_record,
)
from mirec.errors import ConfigError, DataError

ROLES = ("user", "item", "timestamp", "category")
"""The roles ``read_interactions(columns=...)`` maps, in order."""


@_os_errors
def read_interactions(
    path: str | Path,
    columns: str | Sequence[str] | None,
    sep: str = ",",
    header: bool | None = None,
    *,
    encoding: str = "utf-8",
    id_type: str | None = None,
) -> RawLog:
    """Read a delimited text or Parquet (``.parquet``) log whose columns the caller names.

    ``columns`` maps roles, in the order ``user,item[,timestamp[,category]]``, to columns of
    the file, e.g. ``"session_id,item_id,timeframe"``; an empty entry skips a role
    (``"user,item,,genre"``: a category but no timestamp). Entries are separated by commas
    whatever ``sep`` is.

    With a header (``header=True``) entries are column names. Without one (``header=False``)
    an entry is a 1-based column number (``"1,3,4"``), or any other word, which then means the
    column at that entry's own position (``"user,item,time"`` reads columns 1, 2, 3). Every
    line must have as many fields as the first one. ``header=None`` (the default) assumes a
    header unless every entry is a column number. Parquet files always use names.

    ``path`` may also be a folder of Parquet parts (its ``*.parquet`` files) or a glob of
    them (``data/part-*.parquet``): the parts are read in the order of their names, as one
    log (:func:`parquet_parts`).

    Ids are ``int64`` when every user and item id is a plain integer, else all strings; a
    column of integers but for a few lines is an error naming the first of them, and
    ``id_type`` (``int`` or ``str``) says which to read instead of guessing. Without a
    timestamp column, file order is time order (``timestamp`` is null). Text must be
    ``utf-8`` or ``latin-1``.
    """
    path = Path(path)
    roles = _parse_columns(columns)
    parts = parquet_parts(path)
    if parts is not None:
        return _read_parquet(parts, roles, id_type)
    parquet = path.suffix.lower() == ".parquet"
    _check_file(path, "interaction log", text=not parquet)
    if parquet:
        return _read_parquet([path], roles, id_type)
    sep, encoding = _normalize_sep(sep), _normalize_encoding(encoding)
    fields, header = text_fields(path, roles, sep, header, encoding)
    table, src = _scan(path, fields, sep=sep, header=header, encoding=encoding, quote='"')
    for role in ("user", "item"):
        _require_nonempty(table.column(role), role, src)
    user, item = _typed_ids(
        [_Ids(table.column(role), src.label(role), src.fail) for role in ("user", "item")],
        id_type,
    )
    if "timestamp" in roles:
        timestamp = _finite_column(table, "timestamp", src)
    else:
        timestamp = pa.nulls(len(user), pa.float64())
    interactions = pa.table({"user": user, "item": item, "timestamp": timestamp})
    categories = None
    if "category" in roles:
        categories = _category_table(item, table.column("category"))
    return RawLog(interactions, (path,), categories)


def default_sep(path: Path, sep: str | None) -> str:
    """``sep``, or when unset a tab for a ``.tsv`` file and a comma for any other."""
    if sep is not None:
        return sep
    return "\t" if path.suffix.lower() == ".tsv" else ","


def text_fields(
    path: Path, roles: dict[str, str], sep: str, header: bool | None, encoding: str
) -> tuple[list[_F], bool]:
    """The fields of a delimited log's lines, each role's in its place, and whether line 1
    is a header (``header=None``: unless every entry of ``columns`` is a number); see
    :func:`read_interactions`."""
    if header is None:
        header = not all(entry.isdigit() for entry in roles.values())
    if header:
        names = _header_names(path, sep, encoding)
        positions = {role: _find_column(path, names, entry, role) for role, entry in roles.items()}
        labels = {role: f"{role} column {names[pos]!r}" for role, pos in positions.items()}
        n_fields = len(names)
    else:
        n_fields = len(_split_record(_first_line(path, encoding), sep))
        positions = {}
        for ordinal, (role, entry) in enumerate(roles.items()):
            pos = int(entry) - 1 if entry.isdigit() else ordinal
            if not 0 <= pos < n_fields:
                raise DataError(
                    f"{path}: line 1 has {n_fields} field(s) separated by {sep!r}, but columns "
                    f"asks for field {pos + 1} as the {role}"
                )
            positions[role] = pos
        labels = {role: f"{role} (field {pos + 1})" for role, pos in positions.items()}
    if len(set(positions.values())) < len(positions):
        columns = ",".join(roles.values())
        raise ConfigError(f"columns {columns!r}: one column is given two roles")
    kinds = {"user": "id", "item": "id", "timestamp": "num", "category": "text"}
    fields = [_F(f"_skip{i}", "skip") for i in range(n_fields)]
    for role, pos in positions.items():
        fields[pos] = _F(role, kinds[role], labels[role])
    return fields, header


def _parse_columns(columns: str | Sequence[str] | None) -> dict[str, str]:
    if not columns:
        raise ConfigError(
            "format 'interactions' needs columns naming the user, item and optionally "
            "timestamp and category columns, e.g. columns='user_id,item_id,timestamp'"
        )
    entries = columns.split(",") if isinstance(columns, str) else list(columns)
    entries = [str(e).strip() for e in entries]
    if not 2 <= len(entries) <= len(ROLES) or not entries[0] or not entries[1]:
        raise ConfigError(
            f"columns {columns!r}: expected 'user,item[,timestamp[,category]]' "
            "(the file's column names, or 1-based numbers without a header)"
        )
    return {role: entry for role, entry in zip(ROLES, entries, strict=False) if entry}


def _normalize_sep(sep: str) -> str:
    named = {"\\t": "\t", "tab": "\t", "space": " ", "comma": ",", "semicolon": ";"}
    sep = named.get(sep, sep)
    if not sep or any(c in sep for c in '\r\n"') or len(sep.encode()) > 4:
        raise ConfigError(f"sep {sep!r}: expected 1 to 4 characters, not a quote or newline")
    return sep


def _normalize_encoding(encoding: str) -> str:
    name = encoding.lower().replace("_", "-")
    if name in ("utf-8", "utf8"):
        return "utf-8"
    if name in ("latin-1", "latin1", "iso-8859-1", "iso8859-1"):
        return "latin-1"
    raise ConfigError(f"encoding {encoding!r}: expected utf-8 or latin-1")


def parquet_parts(path: Path) -> list[Path] | None:
    """The Parquet parts ``path`` names, sorted by name, when it is a folder or a glob
    pattern (``*``, ``?``, ``[``) that matches no file of its own; None for any other path.

    A folder without ``*.parquet`` files, a glob matching nothing, and a glob matching
    anything but Parquet files are errors."""
    if _is_dir(path):
        parts = sorted(p for p in path.glob("*.parquet") if p.is_file())
        if not parts:
            raise DataError(
                f"{path}: is a folder without *.parquet files; expected the interaction log "
                "(a file, or a folder or glob of Parquet parts)"
            )
        return parts
    pattern = str(path)
    if not any(c in pattern for c in "*?[") or path.exists():
        return None
    parts = sorted(Path(p) for p in glob.glob(pattern))
    if not parts:
        raise DataError(f"{pattern}: no file matches this pattern")
    for part in parts:
        if part.suffix.lower() != ".parquet" or not part.is_file():
            raise DataError(
                f"{part}: matched by {pattern!r}, but a pattern may only match Parquet files "
                "(*.parquet); give a text log by its own path"
            )
    return parts


def _read_parquet(paths: list[Path], roles: dict[str, str], id_type: str | None) -> RawLog:
    """One log from Parquet parts read in order; an error names the part and its row."""
    tables = [_parquet_table(path, roles) for path in paths]
    return read_tables(paths, tables, roles, id_type, sources=tuple(paths))


def read_tables(
    paths: Sequence[Path | str],
    tables: Sequence[pa.Table],
    roles: dict[str, str],
    id_type: str | None,
    *,
    sources: tuple[Path, ...],
) -> RawLog:
    """One log from Arrow tables holding the columns ``roles`` names, as read from the
    Parquet parts ``paths`` (or, for a DataFrame, what names it in messages): the checks
    and conversions of a Parquet log, an error naming the part and its row (from 1)."""
    offsets = np.cumsum([0] + [t.num_rows for t in tables])
    if offsets[-1] == 0:
        raise DataError(f"{paths[0] if len(paths) == 1 else paths[0].parent}: no rows")
    users = [_parquet_ids(p, t, roles["user"]) for p, t in zip(paths, tables, strict=True)]
    items = [_parquet_ids(p, t, roles["item"]) for p, t in zip(paths, tables, strict=True)]
    if id_type != "str" and all(pa.types.is_integer(c.type) for c in users + items):
        user, item = _concat(users, pa.int64()), _concat(items, pa.int64())
    else:

        def at_row(row: int, message: str) -> DataError:
            part = int(np.searchsorted(offsets, row, side="right")) - 1
            return DataError(f"{paths[part]}: row {row - offsets[part] + 1}: {message}")

        user, item = _typed_ids(
            [
                _Ids(_concat(users, pa.string()), f"user column {roles['user']!r}", at_row),
                _Ids(_concat(items, pa.string()), f"item column {roles['item']!r}", at_row),
            ],
            id_type,
        )
    if "timestamp" in roles:
        timestamp = _concat(
            [_parquet_time(p, t, roles["timestamp"]) for p, t in zip(paths, tables, strict=True)],
            pa.float64(),
        )
    else:
        timestamp = pa.nulls(int(offsets[-1]), pa.float64())
    interactions = pa.table({"user": user, "item": item, "timestamp": timestamp})
    categories = None
    if "category" in roles:
        category = [_decoded(t.column(roles["category"])) for t in tables]
        categories = _category_table(item, _concat(category, pa.string()))
    return RawLog(interactions, sources, categories)


def _parquet_table(path: Path, roles: dict[str, str]) -> pa.Table:
    """The columns ``roles`` names, read from one Parquet file."""
    parquet_schema(path, roles)
    try:
        return pq.read_table(path, columns=list(dict.fromkeys(roles.values())))
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot be read ({_first_line_of(err)})") from err


def parquet_schema(path: Path, roles: dict[str, str]) -> pa.Schema:
    """The schema of one Parquet file, which must have every column ``roles`` names (its
    footer alone is read)."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({_first_line_of(err)})") from err
    for role, entry in roles.items():
        _find_column(path, schema.names, entry, role)
    return schema


def id_kind(path: Path | str, name: str, kind: pa.DataType) -> str:
    """How a Parquet column of type ``kind`` holds ids: ``int``, ``float`` (integral values
    only) or ``str``; any other type is an error."""
    kind = _value_type(kind)
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_floating(kind):
        return "float"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "str"
    raise DataError(f"{path}: column {name!r} has type {kind}, which cannot hold ids")


def time_kind(path: Path | str, name: str, kind: pa.DataType) -> str:
    """How a Parquet column of type ``kind`` holds times: ``timestamp``, ``date``, ``str``
    (numbers as text), ``number`` or ``decimal``; any other type is an error."""
    kind = _value_type(kind)
    if pa.types.is_timestamp(kind):
        return "timestamp"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "str"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "number"
    if pa.types.is_decimal(kind):
        return "decimal"
    raise DataError(f"{path}: column {name!r} has type {kind}, not a timestamp or number")


def _value_type(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _concat(columns: list[pa.ChunkedArray], kind: pa.DataType) -> pa.ChunkedArray:
    """The parts' columns, cast to ``kind`` (a no-op when they have it), as one column."""
    return pa.chunked_array(
        [chunk for c in columns for chunk in pc.cast(c, kind).chunks], type=kind
    )


def _decoded(values: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(values.type):
        return values.cast(values.type.value_type)
    return values


def _parquet_column(path: Path | str, table: pa.Table, name: str) -> pa.ChunkedArray:
    """Column ``name``, dictionary-decoded, with a null reported by its row."""
    values = _decoded(table.column(name))
    if values.null_count:
        row = _first_true(pc.is_null(values))
        raise DataError(f"{path}: row {row + 1}: column {name!r} is empty")
    return values


def _parquet_ids(path: Path | str, table: pa.Table, name: str) -> pa.ChunkedArray:
    values = _parquet_column(path, table, name)
    kind = id_kind(path, name, values.type)
    if kind == "int":
        try:
            return pc.cast(values, pa.int64())
        except pa.ArrowInvalid as err:
            raise DataError(f"{path}: column {name!r}: ids do not fit in int64") from err
    if kind == "float":
        rounded = pc.floor(values)
        if not pc.all(pc.equal(rounded, values)).as_py():
            row = _first_true(pc.invert(pc.fill_null(pc.equal(rounded, values), True)))
            raise DataError(
                f"{path}: row {row + 1}: column {name!r} is not an integer id: "
                f"{values[row].as_py()!r}"
            )
        return pc.cast(values, pa.int64())
    values = _valid_utf8(path, name, pc.cast(values, pa.string()))
    empty = pc.equal(pc.utf8_length(values), 0)
    if pc.any(empty).as_py():
        raise DataError(f"{path}: row {_first_true(empty) + 1}: column {name!r} is empty")
    _check_id_characters(
        values,
        f"column {name!r}",
        lambda row, message: DataError(f"{path}: row {row + 1}: {message}"),
    )
    return values


def _valid_utf8(path: Path | str, name: str, values: pa.ChunkedArray) -> pa.ChunkedArray:
    """``values`` when every string is UTF-8; a DataError naming the first row that is not
    (Parquet does not check: an encoded lone surrogate, \\xed\\xa0\\x80, came through)."""
    start = 0
    for chunk in values.chunks:
        try:
            chunk.validate(full=True)
        except pa.ArrowInvalid:
            # the error path only: find the row in Python
            for row, raw in enumerate(chunk.cast(pa.binary()).to_pylist()):
                try:
                    (raw or b"").decode("utf-8")
                except UnicodeDecodeError:
                    raise DataError(
                        f"{path}: row {start + row + 1}: column {name!r} is not valid utf-8 "
                        f"text: {raw[:60]!r}"
                    ) from None
        start += len(chunk)
    return values


def _parquet_time(path: Path | str, table: pa.Table, name: str) -> pa.ChunkedArray:
    values = _parquet_column(path, table, name)
    kind = values.type
    how = time_kind(path, name, kind)
    if how == "timestamp":
        per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[kind.unit]
        counts = pc.cast(pc.cast(values, pa.timestamp(kind.unit)), pa.int64())
        # nanoseconds since 1970 pass 2^53: rounded to a double (as DuckDB's reader does),
        # where a checked cast would refuse them
        return pc.divide(pc.cast(counts, pa.float64(), safe=False), per_second)
    if how == "date":
        days = pc.cast(pc.cast(values, pa.date32()), pa.int32())
        return pc.cast(pc.multiply(pc.cast(days, pa.float64()), 86400.0), pa.float64())
    if how == "str":
        try:
            values = pc.cast(values, pa.float64())
        except pa.ArrowInvalid:
            row = _first_failure(values, lambda v: pc.cast(v, pa.float64()))
            raise DataError(
                f"{path}: row {row + 1}: column {name!r} is not a number: {values[row].as_py()!r}"
            ) from None
    else:
        values = pc.cast(values, pa.float64())
    bad = pc.invert(pc.is_finite(values))
    if pc.any(bad).as_py():
        row = _first_true(bad)
        raise DataError(
            f"{path}: row {row + 1}: column {name!r} is not a finite number: "
            f"{values[row].as_py()!r}"
        )
    return values
