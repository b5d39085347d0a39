"""DuckDB scanning of delimited files, with bad input mapped to one-line DataErrors.

A scan returns a pyarrow table and a :class:`_Source` that turns a data row back into its
physical line, so later column checks can name the line of a bad value.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from mirec.data.readers._files import _check_file, _check_text, max_line_bytes
from mirec.errors import DataError

_SNIPPET = 60


@dataclass(frozen=True)
class _F:
    """One field of a delimited line.

    ``kind``: ``int`` (an integer id), ``id`` (a non-empty id, integer or not), ``num`` (a
    finite number), ``label`` (non-empty text), ``text`` (any text) or ``skip`` (not kept).
    """

    role: str
    kind: str
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.role


@dataclass(frozen=True)
class _Source:
    """Where a scanned table came from, to turn a row number back into a physical line."""

    path: Path
    header: bool
    fields: tuple[_F, ...]
    ignored_lines: frozenset[int]
    """Whitespace-only lines DuckDB rejected (and we skipped)."""

    def label(self, role: str) -> str:
        return next(f.name for f in self.fields if f.role == role)

    def line_of(self, row: int) -> int | None:
        """Physical line of data row ``row`` (0-based), walking the file (error path only).

        DuckDB's CSV reader skips empty lines and we skip the whitespace-only lines it
        rejects, so the walk skips exactly those (and the header). It assumes one record a
        line (no quoted line breaks), true of interaction logs; None if the walk comes short.
        """
        seen = -1
        with self.path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                if (self.header and number == 1) or not raw.rstrip(b"\r\n"):
                    continue
                if number in self.ignored_lines:
                    continue
                seen += 1
                if seen == row:
                    return number
        return None

    def fail(self, row: int, message: str) -> DataError:
        line = self.line_of(row)
        where = f"line {line}" if line is not None else f"data row {row + 1}"
        return DataError(f"{self.path}: {where}: {message}")


def _duckdb_line_size() -> int:
    """DuckDB's own line limit, above ours (checked before it runs) and its 2 MB default."""
    return max(max_line_bytes() + 8, 1 << 21)


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    return con


REJECTS_SQL = (
    "SELECT line, error_type::VARCHAR, column_name, csv_line, error_message "
    "FROM reject_errors ORDER BY line"
)
"""The lines a ``read_csv(..., store_rejects = true)`` refused, in line order."""


def _run(path: Path, sql: str, params: dict[str, object]) -> tuple[pa.Table, list[tuple]]:
    """Run a ``read_csv(..., store_rejects = true)`` query on a fresh connection: the table,
    and the rejected lines as (line, error type, column, line text, message), in line order."""
    con = _connect()
    try:
        table = con.sql(sql, params=params).to_arrow_table()
        rejects = con.sql(REJECTS_SQL).fetchall()
    except duckdb.Error as err:
        raise DataError(_parse_failure(path, err)) from err
    finally:
        con.close()
    return table, rejects


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _scan(
    path: Path,
    fields: Sequence[_F],
    *,
    sep: str,
    header: bool,
    encoding: str = "utf-8",
    quote: str = '"',
    latin1_fallback: bool = False,
) -> tuple[pa.Table, _Source]:
    """Parse a delimited file with exactly ``len(fields)`` fields a line, in file order.

    Ids and text stay strings (trimmed ids) for pyarrow to check; ``num`` fields are parsed
    as DOUBLE by DuckDB. Field-count, number and encoding errors come from DuckDB's
    ``store_rejects`` table, which records each bad line's physical number. Returns the kept
    fields under their roles.
    """
    sql, params, fields = scan_query(path, fields, sep=sep, header=header, quote=quote)
    table, rejects = _run(path, sql, {**params, "encoding": encoding})
    if latin1_fallback and any(r[1] == "INVALID ENCODING" for r in rejects):
        encoding = "latin-1"
        table, rejects = _run(path, sql, {**params, "encoding": encoding})
    src = checked_rejects(path, rejects, fields, sep=sep, header=header, encoding=encoding)
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows" + (" after the header" if header else ""))
    return table, src


def scan_query(
    path: Path, fields: Sequence[_F], *, sep: str, header: bool, quote: str = '"'
) -> tuple[str, dict[str, object], list[_F]]:
    """Check a delimited file's bytes (:func:`_check_text`), then the DuckDB query that
    parses it in file order (its parameters, but ``$encoding``, and the fields with their
    labels): what :func:`_scan` runs, and what an out-of-core reader runs into a table."""
    _check_file(path, "data file")
    _check_text(path, sep=sep, n_fields=len(fields), quote=quote)
    fields = [
        f if f.label else _F(f.role, f.kind, f"{f.role} (field {i + 1})")
        for i, f in enumerate(fields)
    ]
    types = ", ".join(
        f"'c{i}': '{'DOUBLE' if f.kind == 'num' else 'VARCHAR'}'" for i, f in enumerate(fields)
    )
    select = ", ".join(
        (f"trim(c{i})" if f.kind in ("int", "id") else f"c{i}") + f' AS "{f.role}"'
        for i, f in enumerate(fields)
        if f.kind != "skip"
    )
    # empty values must not turn into NULL: an empty number is then a CAST reject with a line
    forced = ", ".join(_sql_str(f"c{i}") for i, f in enumerate(fields) if f.kind != "skip")
    sql = (
        f"SELECT {select} FROM read_csv($path, header = $header, auto_detect = false, "
        f"delim = $delim, quote = $quote, escape = $quote, encoding = $encoding, "
        f"columns = {{{types}}}, force_not_null = [{forced}], store_rejects = true, "
        f"max_line_size = {_duckdb_line_size()})"
    )
    return sql, {"path": str(path), "header": header, "delim": sep, "quote": quote}, fields


def checked_rejects(
    path: Path,
    rejects: list[tuple],
    fields: Sequence[_F],
    *,
    sep: str,
    header: bool,
    encoding: str,
) -> _Source:
    """The first rejected line that holds data is an error naming it; whitespace-only lines
    are skipped. The :class:`_Source` that names the line of a scanned row."""
    ignored = set()
    for line, kind, column, text, message in rejects:
        text = (text or "").strip("\r\n")
        if kind in ("MISSING COLUMNS", "TOO MANY COLUMNS") and not text.strip():
            ignored.add(int(line))  # a whitespace-only line: no data, skipped like empty ones
            continue
        reason = _reject_reason(kind, column, text, message, fields, sep, encoding)
        raise DataError(f"{path}: line {line}: {reason}")
    return _Source(path, header, tuple(fields), frozenset(ignored))


def _reject_reason(
    kind: str,
    column: str | None,
    text: str,
    message: str,
    fields: Sequence[_F],
    sep: str,
    encoding: str,
) -> str:
    if kind in ("MISSING COLUMNS", "TOO MANY COLUMNS"):
        found = re.search(r"Found:\s*(\d+)", message or "")
        count = f", found {found.group(1)}" if found else ""
        if kind == "TOO MANY COLUMNS" and not found:
            count = ", found more"
        return f"expected {len(fields)} fields separated by {sep!r}{count}: {_snip(text)}"
    if kind == "CAST" and column and column.startswith("c") and column[1:].isdigit():
        index = int(column[1:])
        field = fields[index]
        parts = text.split(sep)
        value = parts[index].strip() if index < len(parts) and len(parts) == len(fields) else None
        if value == "":
            return f"{field.name} is empty: {_snip(text)}"
        shown = repr(value) if value is not None else _snip(text)
        return f"{field.name} is not a number: {shown}"
    if kind == "INVALID ENCODING":
        return f"is not valid {encoding} text"
    if kind == "LINE SIZE OVER MAXIMUM":
        return f"longer than {max_line_bytes():,} bytes (the reader's limit)"
    return f"malformed line ({_first_line_of(message)}): {_snip(text)}"


def _parse_failure(path: Path, err: duckdb.Error) -> str:
    """A one-line message for a scan DuckDB gave up on (error path only).

    DuckDB fixes the line ending from the first line and stops, without a line number, at a
    line ending otherwise; find that line so the message can name it.
    """
    with path.open("rb") as f:
        style = None
        for number, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                if b"\r" in raw:
                    return f"{path}: line {number}: stray carriage return (\\r)"
                break
            ending = b"\r\n" if raw.endswith(b"\r\n") else b"\n"
            if b"\r" in raw[: -len(ending)]:
                return f"{path}: line {number}: stray carriage return (\\r)"
            style = style or ending
            if ending != style:
                shown = {b"\n": "\\n", b"\r\n": "\\r\\n"}
                return (
                    f"{path}: line {number}: ends in {shown[ending]} but line 1 ends in "
                    f"{shown[style]}; use one kind of line ending throughout"
                )
    return f"{path}: cannot be parsed: {_first_line_of(err)}"


def _snip(text: str) -> str:
    text = text.strip("\r\n")
    return repr(text if len(text) <= _SNIPPET else text[:_SNIPPET] + "...")


def _first_line_of(err: object) -> str:
    lines = [s.strip() for s in str(err).splitlines() if s.strip()]
    return lines[0] if lines else type(err).__name__


def _scan_lines(path: Path) -> pa.ChunkedArray:
    """Every physical line as one string (null for an empty line), so row ``k`` is line
    ``k + 1``: DuckDB keeps empty lines as NULL rows when a file has a single column."""
    sql = (
        "SELECT line FROM read_csv($path, header = false, auto_detect = false, "
        "delim = $delim, quote = '', escape = '', columns = {'line': 'VARCHAR'}, "
        f"store_rejects = true, max_line_size = {_duckdb_line_size()})"
    )
    _check_text(path)
    # NUL never occurs in text (the check above refuses it), so each line is one field
    table, rejects = _run(path, sql, {"path": str(path), "delim": "\0"})
    if rejects:
        line, kind, _, _, message = rejects[0]
        if kind == "INVALID ENCODING":
            reason = "is not valid UTF-8 text"
        elif kind == "TOO MANY COLUMNS":
            reason = "contains a NUL character"
        elif kind == "LINE SIZE OVER MAXIMUM":
            reason = f"longer than {max_line_bytes():,} bytes (the reader's limit)"
        else:
            reason = f"malformed line ({_first_line_of(message)})"
        raise DataError(f"{path}: line {line}: {reason}")
    return table.column("line")


def _header_names(path: Path, sep: str, encoding: str) -> list[str]:
    names = [n.strip() for n in _split_record(_first_line(path, encoding), sep)]
    return names


def _first_line(path: Path, encoding: str) -> str:
    limit = max_line_bytes()
    with path.open("rb") as f:
        raw = f.readline(limit + 2)
    raw = re.split(rb"\r\n|\r|\n", raw, maxsplit=1)[0]  # a lone \r ends a line too
    if len(raw) > limit:
        raise DataError(f"{path}: line 1: longer than {limit:,} bytes (the reader's limit)")
    try:
        text = raw.decode("latin-1" if encoding == "latin-1" else "utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: line 1: is not valid {encoding} text") from err
    return text.rstrip("\r\n")


def _split_record(line: str, sep: str) -> list[str]:
    if len(sep) == 1:
        return next(csv.reader([line], delimiter=sep, quotechar='"'), [])
    return line.split(sep)


def _find_column(path: Path, names: list[str], entry: str, role: str) -> int:
    if entry in names:
        return names.index(entry)
    have = ", ".join(repr(n) for n in names)
    raise DataError(f"{path}: no column {entry!r} (wanted as the {role}); the file has: {have}")


def _scan_named(
    path: Path,
    columns: dict[str, str],
    kinds: dict[str, str],
    *,
    sep: str,
) -> tuple[pa.Table, _Source]:
    """Scan a headed file, finding each role's column by its header name."""
    _check_file(path, "data file")
    names = _header_names(path, sep, "utf-8")
    fields = [_F(f"_skip{i}", "skip") for i in range(len(names))]
    for role, name in columns.items():
        pos = _find_column(path, names, name, role)
        fields[pos] = _F(role, kinds[role], f"{role} column {name!r}")
    return _scan(path, fields, sep=sep, header=True)
