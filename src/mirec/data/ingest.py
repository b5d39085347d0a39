"""Out-of-core preparation of ``interactions`` logs: DuckDB reads, checks, filters,
re-indexes and orders the log, spilling to disk, and the sequences land in memory-mapped
``.npy`` files (:mod:`mirec.data.stored`).

The log is a Parquet file, a folder or glob of Parquet parts, or a delimited text file, its
columns named as for :func:`~mirec.data.readers.read_interactions`. The result is that of
:func:`~mirec.data.readers.read_interactions` followed by
:func:`~mirec.data.sequences.build_sequences`, array for array (the same users, items,
order and indices; ``tests/test_ingest.py`` checks it), and a bad file gets the same
one-line error; but no step holds the log in memory:

1. **read**: each Parquet part is copied into a DuckDB table with its columns converted
   as the in-memory reader converts them (ids to int64 or text, times to seconds), and
   its row numbers as the file order; a text file is parsed by the same DuckDB query as
   the in-memory reader's, after the same check of its bytes;
2. **check**: empty ids, ids that are not all integers or all text, and times that are
   not finite numbers are found by queries; the first one is an error naming its file
   and row (line, for text), with the in-memory reader's words;
3. **filter, vocabularies, order**: :func:`~mirec.data.sequences.filtered_sequences`, the
   very code the in-memory path runs, with the ordered item indices streaming into
   ``items.npy``.

DuckDB's memory is capped at ``$MIREC_INGEST_MEMORY`` (default 4GB; any DuckDB size such
as ``2GB`` or ``500MB``); beyond it DuckDB spills to a temporary folder inside the output
folder, removed at the end. Each step is logged on the ``mirec.data.ingest`` logger at
INFO, with its duration and what DuckDB holds on disk at its end.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mirec.data.readers._columns import (
    _CANONICAL,
    _DECIMAL,
    CONTROL_REGEX,
    control_message,
    mostly_ints_message,
    not_int_message,
)
from mirec.data.readers._files import _check_file, _os_errors
from mirec.data.readers._scan import (
    REJECTS_SQL,
    _first_line_of,
    _parse_failure,
    checked_rejects,
    scan_query,
)
from mirec.data.readers.interactions import (
    _decoded,
    _normalize_sep,
    _parquet_ids,
    _parquet_table,
    _parquet_time,
    _parse_columns,
    _value_type,
    default_sep,
    id_kind,
    parquet_parts,
    parquet_schema,
    text_fields,
    time_kind,
)
from mirec.data.sequences import Sequences, filtered_sequences, item_categories
from mirec.data.stored import read_sequences, write_arrays
from mirec.errors import ConfigError, DataError

LOG = logging.getLogger(__name__)
MEMORY_ENV = "MIREC_INGEST_MEMORY"
DEFAULT_MEMORY = "4GB"
"""DuckDB's memory limit: half the 8 GB goal of ``benchmarks/scale.py`` (100M rows), the
rest for the process and the pages of the memory-mapped output."""
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
"""A number as Arrow parses text (DuckDB would also take ``1_000`` and `` 5``); ``nan``
and ``inf``, which Arrow takes too, are refused as not finite either way."""
_WHITESPACE = r"[\t-\r\x{1C}-\x{20}\x{85}\p{Z}]"
"""What Arrow's ``utf8_trim_whitespace`` trims."""
_FailAt = Callable[[int, str], DataError]


@dataclass(frozen=True)
class _Raw:
    """The table ``raw`` a reader filled: its sources, whether its ids are text (to be
    typed), each role's label for messages, and what names the file and row of a ``pos``."""

    sources: list[Path]
    text_ids: bool
    labels: dict[str, str]
    fail: _FailAt


class InMemoryOnly(Exception):
    """The log has a detail whose conversion only the in-memory reader is known to
    reproduce exactly (decimal times, categories that are neither text nor integers)."""


@_os_errors
def ingest_interactions(
    path: str | Path,
    columns: str | Sequence[str] | None,
    folder: Path,
    *,
    sep: str | None = None,
    id_type: str | None = None,
) -> Sequences:
    """Prepare the ``interactions`` log at ``path`` out of core: its :class:`Sequences`
    arrays are written into ``folder`` and returned memory-mapped.

    ``columns``, ``sep`` and ``id_type`` mean what they mean to
    :func:`~mirec.data.readers.read_interactions`. Raises :class:`InMemoryOnly` (having
    read only the Parquet footers) for a log whose conversion only the in-memory reader
    reproduces.
    """
    path = Path(path)
    roles = _parse_columns(columns)
    parts = parquet_parts(path)
    if parts is None and path.suffix.lower() == ".parquet":
        _check_file(path, "interaction log", text=False)
        parts = [path]
    work = Path(tempfile.mkdtemp(dir=folder, prefix=".duckdb-"))
    con = _connect(work)
    stages = _Stages(con)
    try:
        if parts is not None:
            raw = _read_parquet(con, parts, roles, id_type)
        else:
            raw = _read_text(con, path, roles, sep)
        stages("read")
        _check_log(con, raw, "timestamp" in roles, "category" in roles, id_type)
        stages("check")
        items_path = folder / "items.npy"
        fields = filtered_sequences(
            con,
            raw.sources,
            lambda n: np.lib.format.open_memmap(items_path, "w+", np.int32, (n,)),
            stages,
        )
        categories = {}
        if "category" in roles:
            con.execute(
                f"""
                CREATE VIEW item_categories AS SELECT DISTINCT item, category FROM
                (SELECT item, regexp_replace(category, '^{_WHITESPACE}+|{_WHITESPACE}+$',
                 '', 'g') AS category FROM log) WHERE category <> ''
                """
            )
            categories = item_categories(con)
        fields.pop("items").flush()
        write_arrays(folder, {**fields, **categories})
        stages("write vocabularies")
    except duckdb.OutOfMemoryException as err:
        raise DataError(
            f"{path}: DuckDB ran out of memory ({_first_line_of(err)}); raise {MEMORY_ENV} "
            f"(now {_memory_limit()}), or free disk space in {folder.parent} for it to spill"
        ) from err
    except duckdb.Error as err:
        raise DataError(f"{path}: cannot be prepared ({_first_line_of(err)})") from err
    finally:
        con.close()
        shutil.rmtree(work, ignore_errors=True)
    return read_sequences(folder)


class _Stages:
    """Logs each step's name, duration and what DuckDB holds on disk at its end (what it
    spilled); the benchmark reads them from the record (``stage``, ``spilled``)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.start = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        (spilled,) = _row(self.con, "SELECT coalesce(sum(size), 0) FROM duckdb_temporary_files()")
        LOG.info(
            "%s: %.1f s, %.0f MB spilled",
            name,
            now - self.start,
            spilled / 2**20,
            extra={"stage": name, "spilled": int(spilled)},
        )
        self.start = now


def _memory_limit() -> str:
    return os.environ.get(MEMORY_ENV, "").strip() or DEFAULT_MEMORY


def _connect(work: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory database whose memory is capped, spilling into ``work``."""
    config = {"memory_limit": _memory_limit(), "temp_directory": str(work)}
    try:
        con = duckdb.connect(config=config)
    except duckdb.Error as err:
        raise ConfigError(
            f"{MEMORY_ENV}={_memory_limit()!r}: expected a size DuckDB takes, such as 4GB or "
            f"500MB ({_first_line_of(err)})"
        ) from err
    con.execute("SET enable_progress_bar = false")
    return con


def _sql_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read_parquet(
    con: duckdb.DuckDBPyConnection,
    parts: list[Path],
    roles: dict[str, str],
    id_type: str | None,
) -> _Raw:
    """Copy the parts into the table ``raw`` (user, item, timestamp, pos[, category]),
    ``pos`` counting rows across the parts in order."""
    schemas = [parquet_schema(part, roles) for part in parts]
    rows = [pq.read_metadata(part).num_rows for part in parts]
    starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
    if starts[-1] == 0:
        raise DataError(f"{parts[0] if len(parts) == 1 else parts[0].parent}: no rows")

    def kinds(role: str, of: Callable[[Path, str, pa.DataType], str]) -> list[str]:
        name = roles[role]
        return [of(p, name, s.field(name).type) for p, s in zip(parts, schemas, strict=True)]

    id_kinds = list(zip(kinds("user", id_kind), kinds("item", id_kind), strict=True))
    time_kinds = kinds("timestamp", time_kind) if "timestamp" in roles else [None] * len(parts)
    for part, how in zip(parts, time_kinds, strict=True):
        if how == "decimal":
            raise InMemoryOnly(f"{part}: decimal timestamps")
    category = ""
    if "category" in roles:
        category = ", category VARCHAR"
        for part, schema in zip(parts, schemas, strict=True):
            kind = _value_type(schema.field(roles["category"]).type)
            text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
            if not (text or pa.types.is_integer(kind)):
                raise InMemoryOnly(f"{part}: category column of type {kind}")
    as_int = id_type != "str" and all(k != "str" for pair in id_kinds for k in pair)
    id_sql = "BIGINT" if as_int else "VARCHAR"
    con.execute(
        f'CREATE TABLE raw ("user" {id_sql}, item {id_sql}, timestamp DOUBLE, pos BIGINT{category})'
    )
    for part, pair, how, start in zip(parts, id_kinds, time_kinds, starts, strict=False):
        select = [
            _parquet_id_sql(roles[role], k, id_sql)
            for role, k in zip(("user", "item"), pair, strict=True)
        ]
        select.append(_parquet_time_sql(con, part, roles["timestamp"], how) if how else "NULL")
        select.append(f"file_row_number + {int(start)}")
        if "category" in roles:
            select.append(f"{_sql_name(roles['category'])}::VARCHAR")
        try:
            con.execute(
                f"INSERT INTO raw SELECT {', '.join(select)} "
                "FROM read_parquet($path, file_row_number = true)",
                {"path": str(part)},
            )
        except duckdb.Error as err:
            raise DataError(f"{part}: cannot be read ({_first_line_of(err)})") from err
    labels = {role: f"{role} column {name!r}" for role, name in roles.items()}
    return _Raw(parts, not as_int, labels, _ParquetFailure(parts, starts, roles))


def _parquet_id_sql(name: str, kind: str, target: str) -> str:
    """A Parquet id column as the in-memory reader converts it: integers as they are,
    integral floats as integers (anything else NULL, which the check reports), text as it
    is; as text where ``target`` is VARCHAR."""
    column = _sql_name(name)
    if kind == "str":
        return column
    if kind == "float":
        integral = f"isfinite({column}) AND {column} = floor({column})"
        value = f"CASE WHEN {integral} THEN TRY_CAST({column} AS BIGINT) END"
    else:
        value = f"TRY_CAST({column} AS BIGINT)"
    return value if target == "BIGINT" else f"({value})::VARCHAR"


def _parquet_time_sql(con: duckdb.DuckDBPyConnection, part: Path, name: str, how: str) -> str:
    """A Parquet time column in seconds as DOUBLE, as the in-memory reader computes them:
    the integer count of the column's unit divided by the unit's count per second (both
    exact in a double for any date before 2255, so the quotient is the same double)."""
    column = _sql_name(name)
    if how == "timestamp":
        query = f"SELECT any_value(typeof({column})) FROM read_parquet($path)"
        (duck_type,) = _row(con, query, {"path": str(part)})
        if duck_type == "TIMESTAMP_NS":
            return f"epoch_ns({column})::DOUBLE / 1e9"
        if duck_type in ("TIMESTAMP_S", "TIMESTAMP_MS"):
            return f"epoch_ms({column})::DOUBLE / 1e3"
        return f"epoch_us({column})::DOUBLE / 1e6"
    if how == "date":
        return f"({column} - DATE '1970-01-01')::DOUBLE * 86400.0"
    if how == "str":
        return (
            f"CASE WHEN regexp_matches({column}, '{_NUMBER}') THEN TRY_CAST({column} AS DOUBLE) END"
        )
    return f"{column}::DOUBLE"


class _ParquetFailure:
    """Names the part and row of a ``pos``; :meth:`checked` runs the in-memory reader's
    check of a column on the one part that holds a bad value, for its exact words (one
    column of one part in memory, on the error path only)."""

    def __init__(self, parts: list[Path], starts: np.ndarray, roles: dict[str, str]) -> None:
        self.parts, self.starts, self.roles = parts, starts, roles

    def _part(self, pos: int) -> tuple[Path, int]:
        k = int(np.searchsorted(self.starts, pos, side="right")) - 1
        return self.parts[k], int(pos - self.starts[k])

    def __call__(self, pos: int, message: str) -> DataError:
        part, row = self._part(pos)
        return DataError(f"{part}: row {row + 1}: {message}")

    def checked(self, pos: int, role: str) -> DataError:
        """The in-memory reader's error for the column of ``role`` in the part of ``pos``."""
        (part, row), name = self._part(pos), self.roles[role]
        table = _parquet_table(part, {role: name})
        check = _parquet_time if role == "timestamp" else _parquet_ids
        try:
            check(part, table, name)
        except DataError as err:
            return err
        except pa.ArrowException as err:
            return DataError(f"{part}: column {name!r}: {_first_line_of(err)}")
        value = _decoded(table.column(name))[row].as_py()
        what = "a time in seconds" if role == "timestamp" else "an id"
        return self(pos, f"column {name!r} is not {what} mirec reads: {value!r}")


def _read_text(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    roles: dict[str, str],
    sep: str | None,
) -> _Raw:
    """Parse a delimited file into the table ``raw`` (ids as trimmed text, ``pos`` its data
    rows in file order) with the in-memory reader's DuckDB query and checks."""
    _check_file(path, "interaction log")
    sep, encoding = _normalize_sep(default_sep(path, sep)), "utf-8"
    fields, header = text_fields(path, roles, sep, None, encoding)
    sql, params, fields = scan_query(path, fields, sep=sep, header=header, quote='"')
    try:
        # a streaming window numbers rows in scan order: DuckDB keeps the file's order
        con.execute(
            f"CREATE TABLE raw AS SELECT *, row_number() OVER () - 1 AS pos FROM ({sql})",
            {**params, "encoding": encoding},
        )
        rejects = con.sql(REJECTS_SQL).fetchall()
    except duckdb.Error as err:
        raise DataError(_parse_failure(path, err)) from err
    src = checked_rejects(path, rejects, fields, sep=sep, header=header, encoding=encoding)
    if _row(con, "SELECT count(*) FROM raw")[0] == 0:
        raise DataError(f"{path}: no data rows" + (" after the header" if header else ""))
    if "timestamp" not in roles:
        con.execute("ALTER TABLE raw ADD COLUMN timestamp DOUBLE")
    return _Raw([path], True, {role: src.label(role) for role in roles}, src.fail)


def _check_log(
    con: duckdb.DuckDBPyConnection,
    raw: _Raw,
    timestamps: bool,
    categories: bool,
    id_type: str | None,
) -> None:
    """Find the first bad value of ``raw`` in the in-memory reader's order of checks
    (users, items, id types, times), and turn ``raw`` into the relation ``log``."""
    for role in ("user", "item"):
        column = _sql_name(role)
        pos = _first(con, f"{column} IS NULL" + (f" OR {column} = ''" if raw.text_ids else ""))
        if pos is not None:
            raise _failure(raw, pos, role, f"{raw.labels[role]} is empty")
    if raw.text_ids:
        for role in ("user", "item"):
            column = _sql_name(role)
            pos = _first(con, f"regexp_matches({column}, '{CONTROL_REGEX}')")
            if pos is not None:
                message = control_message(raw.labels[role], _value(con, role, pos))
                raise _failure(raw, pos, role, message)
    cast = raw.text_ids and _integer_ids(con, raw, id_type)
    if timestamps:
        empty, bad = _first(con, "timestamp IS NULL"), _first(con, "NOT isfinite(timestamp)")
        if isinstance(raw.fail, _ParquetFailure) and (empty is not None or bad is not None):
            # per part, the reader checks for nulls, then text, then non-finite numbers
            raise raw.fail.checked(min(p for p in (empty, bad) if p is not None), "timestamp")
        if empty is not None:
            raise raw.fail(empty, f"{raw.labels['timestamp']} is empty")
        if bad is not None:
            value = _value(con, "timestamp", bad)
            raise raw.fail(bad, f"{raw.labels['timestamp']} is not a finite number: {value}")
    rest = ["timestamp", "pos"] + (["category"] if categories else [])
    if cast:
        typed = ", ".join(['"user"::BIGINT AS "user"', "item::BIGINT AS item", *rest])
        con.execute(f"CREATE TABLE log AS SELECT {typed} FROM raw; DROP TABLE raw")
    else:
        kept = ", ".join(['"user"', "item", *rest])
        con.execute(f"CREATE VIEW log AS SELECT {kept} FROM raw")


def _failure(raw: _Raw, pos: int, role: str, message: str) -> DataError:
    """A Parquet part's bad value in the in-memory reader's words; a text line named."""
    if isinstance(raw.fail, _ParquetFailure):
        return raw.fail.checked(pos, role)
    return raw.fail(pos, message)


def _value(con: duckdb.DuckDBPyConnection, column: str, pos: int) -> object:
    return _row(con, f"SELECT {_sql_name(column)} FROM raw WHERE pos = ?", [pos])[0]


def _row(con: duckdb.DuckDBPyConnection, query: str, params: object = None) -> tuple:
    """The one row of an aggregate query."""
    return con.sql(query, params=params).fetchall()[0]


def _first(con: duckdb.DuckDBPyConnection, condition: str) -> int | None:
    """The first ``pos`` of ``raw`` where ``condition`` holds."""
    return _row(con, f"SELECT min(pos) FILTER (WHERE {condition}) FROM raw")[0]


def _integer_ids(con: duckdb.DuckDBPyConnection, raw: _Raw, id_type: str | None) -> bool:
    """Whether the text ids of ``raw`` are read as int64: the rule of
    :func:`~mirec.data.readers._columns._typed_ids` (``id_type``; else int64 when every
    user and item id is an integer written the usual way, an error at the first that is not
    in a column of mostly such integers, text otherwise), as queries."""
    if id_type == "str":
        return False
    pattern = _DECIMAL if id_type == "int" else _CANONICAL
    ints = True
    for role in ("user", "item"):
        column = _sql_name(role)
        fits = f"(regexp_matches({column}, '{pattern}') AND TRY_CAST({column} AS BIGINT) NOTNULL)"
        n_ints, n, pos = _row(
            con,
            f"SELECT count(*) FILTER (WHERE {fits}), count(*), "
            f"min(pos) FILTER (WHERE NOT {fits}) FROM raw",
        )
        if pos is None:
            continue
        value = _value(con, role, pos)
        if id_type == "int":
            raise raw.fail(pos, not_int_message(raw.labels[role], value))
        if 2 * n_ints > n:
            raise raw.fail(pos, mostly_ints_message(raw.labels[role], value, n_ints, n))
        ints = False
    return ints
