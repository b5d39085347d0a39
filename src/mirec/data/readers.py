"""Readers for the interaction-log formats mirec understands.

Every reader returns a :class:`~mirec.data.log.RawLog` in file order. Parsing is done by
DuckDB's CSV reader, and splitting and validating columns by pyarrow compute kernels: no
Python loop runs over rows. The one exception is the error path: when a value turns out to be
bad after the scan (an id that is not an integer, a NaN timestamp), the file is walked once
up to that row to name its physical line.

Bad input never produces a traceback or a silent drop: it raises :class:`DataError` with a
one-line message ``<file>: line <n>: <what is wrong>`` (1-based physical line, header
included), or ``<file>: <what is wrong>`` naming the field or column when there is no line.
Blank lines (empty or whitespace only) hold no data and are skipped anywhere in a file.

Formats (``FORMATS``):

* ``sequences``: ``user item1 item2 ...`` per line (S3-Rec style), in time order; optional
  ``<stem>_item2attributes.json`` beside it gives item attributes.
* ``interactions``: any delimited text or Parquet log, columns named by the caller.
* ``movielens``: ``ratings.csv``/``movies.csv`` (latest, 20M, 25M) or ``ratings.dat``/
  ``movies.dat`` (1M, 10M).
* ``movielens-100k``: ``u.data``, ``u.item``, ``u.genre``.
* ``taobao``: Alibaba's ``UserBehavior.csv``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mirec.data.log import RawLog
from mirec.errors import ConfigError, DataError

_Column = pa.ChunkedArray | pa.Array

FORMATS = ("sequences", "interactions", "movielens", "movielens-100k", "taobao")

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
"""The 19 genre names of MovieLens 100K, in flag order (used when ``u.genre`` is absent)."""

ROLES = ("user", "item", "timestamp", "category")
"""The roles ``read_interactions(columns=...)`` maps, in order."""

_GROUPLENS = "https://grouplens.org/datasets/movielens/"
_NO_GENRES = "(no genres listed)"
_MAX_LINE = 1 << 26  # sequence lines of heavy users are long; DuckDB's default is 2 MB
_SNIPPET = 60


# --------------------------------------------------------------------------- public readers


def read_movielens_100k(folder: str | Path) -> RawLog:
    """Read MovieLens 100K from its folder (or its ``u.data``).

    ``u.data`` (tab-separated ``user item rating unix_ts``) gives the interactions; ``u.item``
    (``|``-separated, latin-1), when present, gives titles and the genre flags, named by
    ``u.genre`` when present, else by :data:`ML100K_GENRES`.
    """
    data_path, item_path, genre_path = _ml100k_files(folder)
    interactions = _ratings(*_scan(data_path, _RATING_FIELDS, sep="\t", header=False, quote=""))
    sources = [data_path]
    categories = titles = None
    if item_path is not None:
        genres = ML100K_GENRES
        if genre_path is not None:
            genres = _read_ml100k_genres(genre_path)
        categories, titles = _read_ml100k_items(item_path, genres)
        sources += [p for p in (item_path, genre_path) if p is not None]
    return RawLog(interactions, tuple(sources), categories, titles)


def read_movielens(folder: str | Path) -> RawLog:
    """Read MovieLens latest/1M/10M/20M/25M from its folder (or its ratings file).

    ``ratings.csv`` (header ``userId,movieId,rating,timestamp``) or ``ratings.dat``
    (``::``-separated, no header) gives the interactions; ``movies.csv`` / ``movies.dat``
    (``movieId, title, genres A|B``), when present, gives titles and genres ("(no genres
    listed)" means none). ``movies.dat`` is read as UTF-8, or as latin-1 (ML-1M) when it is
    not valid UTF-8.
    """
    ratings, movies = _movielens_files(folder)
    if ratings.suffix == ".csv":
        scanned = _scan_named(
            ratings,
            {"user": "userId", "item": "movieId", "timestamp": "timestamp"},
            {"user": "int", "item": "int", "timestamp": "num"},
            sep=",",
        )
    else:
        scanned = _scan(ratings, _RATING_FIELDS, sep="::", header=False, quote="")
    interactions = _ratings(*scanned)
    if movies is None:
        return RawLog(interactions, (ratings,))
    if movies.suffix == ".csv":
        mt, msrc = _scan_named(
            movies,
            {"item": "movieId", "title": "title", "genres": "genres"},
            {"item": "int", "title": "text", "genres": "text"},
            sep=",",
        )
    else:
        fields = [_F("item", "int"), _F("title", "text"), _F("genres", "text")]
        mt, msrc = _scan(movies, fields, sep="::", header=False, quote="", latin1_fallback=True)
    items = _int_column(mt, "item", msrc)
    genre_lists = pc.split_pattern(pc.fill_null(mt.column("genres"), ""), "|")
    flat = pc.list_flatten(genre_lists)
    owner = pc.take(items, pc.list_parent_indices(genre_lists))
    keep = pc.and_(pc.not_equal(flat, ""), pc.not_equal(flat, _NO_GENRES))
    categories = _distinct_pairs(owner.filter(keep), flat.filter(keep))
    titles = pa.table({"item": items, "title": pc.fill_null(mt.column("title"), "")})
    return RawLog(interactions, (ratings, movies), categories, titles)


def read_sequences(path: str | Path, attributes: str | Path | None = None) -> RawLog:
    """Read a sequence file: one ``user item1 item2 ...`` line per user, in time order.

    Fields are separated by runs of spaces or tabs. Ids are ``int64`` when every user and item
    id is a plain integer, else all strings. ``timestamp`` is null (file order is time order).
    ``attributes`` is a JSON file ``{item: [attribute ids]}`` giving ``item_categories``.
    """
    path = Path(path)
    _check_file(path, "sequence file (lines 'user item1 item2 ...')")
    lines = _scan_lines(path).combine_chunks()
    trimmed = pc.utf8_trim_whitespace(lines)
    blank = pc.fill_null(pc.equal(trimmed, ""), True)
    tokens = pc.utf8_split_whitespace(pc.if_else(blank, pa.scalar(None, pa.string()), trimmed))
    counts = pc.fill_null(pc.list_value_length(tokens), 0).to_numpy()
    valid = np.logical_not(blank.to_numpy(zero_copy_only=False))
    lone = valid & (counts < 2)
    if lone.any():
        row = int(np.argmax(lone))
        raise DataError(
            f"{path}: line {row + 1}: user {tokens[row][0].as_py()!r} has no items "
            "(expected 'user item1 item2 ...')"
        )
    if not valid.any():
        raise DataError(f"{path}: no sequences (the file holds only blank lines)")
    # each line's first token is its user, the rest are its items, in order
    offsets = tokens.offsets.to_numpy()
    values = tokens.values
    line_of_value = np.repeat(np.arange(len(tokens)), np.diff(offsets))
    first = np.zeros(len(values), dtype=bool)
    first[offsets[:-1][valid]] = True
    is_item = valid[line_of_value] & ~first
    user_tokens = values.take(pa.array(offsets[:-1][valid]))
    user, item = _unify_ids(user_tokens, values.filter(pa.array(is_item)))
    user = pc.take(user, pa.array(np.repeat(np.arange(len(user_tokens)), counts[valid] - 1)))
    interactions = pa.table(
        {"user": user, "item": item, "timestamp": pa.nulls(len(item), pa.float64())}
    )
    if attributes is None:
        return RawLog(interactions, (path,))
    attributes = Path(attributes)
    categories = _read_attributes(attributes, interactions.schema.field("item").type)
    return RawLog(interactions, (path, attributes), categories)


def read_taobao(path: str | Path) -> RawLog:
    """Read Alibaba's Taobao ``UserBehavior.csv`` (or the folder holding it).

    No header; ``user,item,category,behavior,unix_ts``. ``behavior`` (pv/cart/fav/buy) is
    kept; ``item_categories`` lists the distinct (item, category) pairs.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "UserBehavior.csv"
    _check_file(path, "Taobao UserBehavior.csv (https://tianchi.aliyun.com/dataset/649)")
    fields = [
        _F("user", "int"),
        _F("item", "int"),
        _F("category", "label"),
        _F("behavior", "label"),
        _F("timestamp", "num"),
    ]
    table, src = _scan(path, fields, sep=",", header=False, quote="")
    item = _int_column(table, "item", src)
    for role in ("category", "behavior"):
        _require_nonempty(table.column(role), role, src)
    interactions = pa.table(
        {
            "user": _int_column(table, "user", src),
            "item": item,
            "timestamp": _finite_column(table, "timestamp", src),
            "behavior": table.column("behavior"),
        }
    )
    categories = _distinct_pairs(item, table.column("category"))
    return RawLog(interactions, (path,), categories)


def read_interactions(
    path: str | Path,
    columns: str | Sequence[str],
    sep: str = ",",
    header: bool | None = None,
    *,
    encoding: str = "utf-8",
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

    Ids are ``int64`` when every user and item id is a plain integer, else all strings.
    Without a timestamp column, file order is time order (``timestamp`` is null). Text must be
    ``utf-8`` or ``latin-1``.
    """
    path = Path(path)
    roles = _parse_columns(columns)
    _check_file(path, "interaction log")
    if path.suffix.lower() == ".parquet":
        return _read_parquet(path, roles)
    sep = _normalize_sep(sep)
    encoding = _normalize_encoding(encoding)
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
        raise ConfigError(f"columns {columns!r}: one column is given two roles")
    kinds = {"user": "id", "item": "id", "timestamp": "num", "category": "text"}
    fields = [_F(f"_skip{i}", "skip") for i in range(n_fields)]
    for role, pos in positions.items():
        fields[pos] = _F(role, kinds[role], labels[role])
    table, src = _scan(path, fields, sep=sep, header=header, encoding=encoding, quote='"')
    for role in ("user", "item"):
        _require_nonempty(table.column(role), role, src)
    user, item = _unify_ids(table.column("user"), table.column("item"))
    if "timestamp" in positions:
        timestamp = _finite_column(table, "timestamp", src)
    else:
        timestamp = pa.nulls(len(user), pa.float64())
    interactions = pa.table({"user": user, "item": item, "timestamp": timestamp})
    categories = None
    if "category" in positions:
        categories = _category_table(item, table.column("category"))
    return RawLog(interactions, (path,), categories)


def read_log(
    path: str | Path,
    format: str,
    *,
    columns: str | Sequence[str] | None = None,
    sep: str | None = None,
) -> RawLog:
    """Read ``path`` in one of :data:`FORMATS`.

    ``sequences`` picks up ``<stem>_item2attributes.json`` beside the file when it exists.
    ``interactions`` needs ``columns``; ``sep`` defaults to a tab for ``.tsv`` files, else a
    comma. ``columns`` and ``sep`` apply to ``interactions`` only.
    """
    _check_format(format)
    path = Path(path)
    if format != "interactions" and (columns is not None or sep is not None):
        raise ConfigError(
            f"columns and sep apply to format 'interactions' only, not {format!r} "
            "(its layout is fixed)"
        )
    if format == "sequences":
        attributes = _attributes_beside(path)
        return read_sequences(path, attributes)
    if format == "interactions":
        if not columns:
            raise ConfigError(
                "format 'interactions' needs columns naming the user, item and optionally "
                "timestamp and category columns, e.g. columns='user_id,item_id,timestamp'"
            )
        if sep is None:
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
        return read_interactions(path, columns, sep=sep)
    if format == "movielens":
        return read_movielens(path)
    if format == "movielens-100k":
        return read_movielens_100k(path)
    return read_taobao(path)


def source_files(path: str | Path, format: str) -> list[Path]:
    """The files :func:`read_log` reads for ``path`` in ``format`` (all existing files)."""
    _check_format(format)
    path = Path(path)
    if format == "sequences":
        _check_file(path, "sequence file (lines 'user item1 item2 ...')")
        attributes = _attributes_beside(path)
        return [path] if attributes is None else [path, attributes]
    if format == "movielens":
        ratings, movies = _movielens_files(path)
        return [ratings] if movies is None else [ratings, movies]
    if format == "movielens-100k":
        return [p for p in _ml100k_files(path) if p is not None]
    if format == "taobao" and path.is_dir():
        path = path / "UserBehavior.csv"
    _check_file(path, "interaction log")
    return [path]


# --------------------------------------------------------------------------- file layouts


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; known formats: {', '.join(FORMATS)}")


def _attributes_beside(path: Path) -> Path | None:
    candidate = path.with_name(f"{path.stem}_item2attributes.json")
    return candidate if candidate.is_file() else None


def _folder_and_file(folder: str | Path, what: str) -> tuple[Path, Path | None]:
    """Split a folder-or-file argument; a missing path is an error naming what belongs there."""
    path = Path(folder)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; put the {what} there")
    if path.is_dir():
        return path, None
    return path.parent, path


def _ml100k_files(folder: str | Path) -> tuple[Path, Path | None, Path | None]:
    what = f"MovieLens 100K files (u.data, u.item, u.genre from {_GROUPLENS})"
    folder, given = _folder_and_file(folder, what)
    data = given or folder / "u.data"
    _check_file(data, f"u.data of MovieLens 100K ({_GROUPLENS})")
    item, genre = folder / "u.item", folder / "u.genre"
    return data, item if item.is_file() else None, genre if genre.is_file() else None


def _movielens_files(folder: str | Path) -> tuple[Path, Path | None]:
    what = f"MovieLens files (ratings.csv or ratings.dat, and movies, from {_GROUPLENS})"
    folder, given = _folder_and_file(folder, what)
    ratings = given
    if ratings is None:
        found = [folder / n for n in ("ratings.csv", "ratings.dat") if (folder / n).is_file()]
        if not found:
            raise DataError(
                f"{folder}: no ratings.csv or ratings.dat here; put the MovieLens files "
                f"(from {_GROUPLENS}) in this folder"
            )
        ratings = found[0]
    _check_file(ratings, f"MovieLens ratings file ({_GROUPLENS})")
    if ratings.suffix not in (".csv", ".dat"):
        raise DataError(f"{ratings}: expected a MovieLens ratings.csv or ratings.dat")
    movies = ratings.with_name("movies" + ratings.suffix)
    return ratings, movies if movies.is_file() else None


def _check_file(path: Path, what: str) -> None:
    """A readable, non-empty regular file, or a DataError that says what belongs there."""
    if not path.exists():
        raise DataError(f"{path}: no such file; put the {what} there or give the right path")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected the {what}")
    try:
        with path.open("rb") as f:
            head = f.read(1 << 16)
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from err
    if not head or (len(head) < (1 << 16) and not head.strip()):
        raise DataError(f"{path}: file is empty, expected the {what}")


# --------------------------------------------------------------------------- scanning


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


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    return con


def _run(path: Path, sql: str, params: dict[str, object]) -> tuple[pa.Table, list[tuple]]:
    """Run a ``read_csv(..., store_rejects = true)`` query on a fresh connection: the table,
    and the rejected lines as (line, error type, column, line text, message), in line order."""
    con = _connect()
    try:
        table = con.sql(sql, params=params).to_arrow_table()
        rejects = con.sql(
            "SELECT line, error_type::VARCHAR, column_name, csv_line, error_message "
            "FROM reject_errors ORDER BY line"
        ).fetchall()
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
    _check_file(path, "data file")
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
        f"max_line_size = {_MAX_LINE})"
    )
    params = {"path": str(path), "header": header, "delim": sep, "quote": quote}
    table, rejects = _run(path, sql, {**params, "encoding": encoding})
    if latin1_fallback and any(r[1] == "INVALID ENCODING" for r in rejects):
        encoding = "latin-1"
        table, rejects = _run(path, sql, {**params, "encoding": encoding})
    ignored = set()
    for line, kind, column, text, message in rejects:
        text = (text or "").strip("\r\n")
        if kind in ("MISSING COLUMNS", "TOO MANY COLUMNS") and not text.strip():
            ignored.add(int(line))  # a whitespace-only line: no data, skipped like empty ones
            continue
        reason = _reject_reason(kind, column, text, message, fields, sep, encoding)
        raise DataError(f"{path}: line {line}: {reason}")
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows" + (" after the header" if header else ""))
    return table, _Source(path, header, tuple(fields), frozenset(ignored))


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
        return f"line is longer than {_MAX_LINE} bytes"
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
        f"store_rejects = true, max_line_size = {_MAX_LINE})"
    )
    # NUL never occurs in text, so each line is one field
    table, rejects = _run(path, sql, {"path": str(path), "delim": "\0"})
    if rejects:
        line, kind, _, _, message = rejects[0]
        if kind == "INVALID ENCODING":
            reason = "is not valid UTF-8 text"
        elif kind == "TOO MANY COLUMNS":
            reason = "contains a NUL character"
        elif kind == "LINE SIZE OVER MAXIMUM":
            reason = f"line is longer than {_MAX_LINE} bytes"
        else:
            reason = f"malformed line ({_first_line_of(message)})"
        raise DataError(f"{path}: line {line}: {reason}")
    return table.column("line")


def _header_names(path: Path, sep: str, encoding: str) -> list[str]:
    names = [n.strip() for n in _split_record(_first_line(path, encoding), sep)]
    return names


def _first_line(path: Path, encoding: str) -> str:
    with path.open("rb") as f:
        raw = f.readline()
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


# --------------------------------------------------------------------------- column checks


def _first_true(mask: _Column) -> int:
    return int(pc.indices_nonzero(pc.fill_null(mask, False))[0].as_py())


def _first_failure(values: _Column, check: Callable[[object], object]) -> int:
    """Index of the first value for which ``check`` raises, by bisection (error path)."""
    lo, hi = 0, len(values)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            check(values.slice(lo, mid - lo))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
        else:
            lo = mid
    return lo


def _int_column(table: pa.Table, role: str, src: _Source) -> pa.ChunkedArray:
    """An integer id column as int64; the first empty or non-integer value names its line."""
    values = table.column(role)
    _require_nonempty(values, role, src)
    try:
        return pc.cast(values, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        row = _first_failure(values, lambda v: pc.cast(v, pa.int64()))
        raise src.fail(
            row, f"{src.label(role)} is not an integer: {values[row].as_py()!r}"
        ) from None


def _require_nonempty(values: pa.ChunkedArray, role: str, src: _Source) -> None:
    empty = pc.equal(pc.utf8_length(pc.fill_null(values, "")), 0)
    if pc.any(empty).as_py():
        raise src.fail(_first_true(empty), f"{src.label(role)} is empty")


def _finite_column(table: pa.Table, role: str, src: _Source) -> pa.ChunkedArray:
    """A number column; an empty value or NaN/inf names its line.

    DuckDB usually rejects an empty number (``force_not_null``), but not always: when the
    scan skips some columns, a trailing empty field can come back as NULL instead.
    """
    values = table.column(role)
    if values.null_count:
        raise src.fail(_first_true(pc.is_null(values)), f"{src.label(role)} is empty")
    bad = pc.invert(pc.is_finite(values))
    if pc.any(bad).as_py():
        row = _first_true(bad)
        raise src.fail(row, f"{src.label(role)} is not a finite number: {values[row].as_py()}")
    return values


def _canonical_ints(values: _Column) -> _Column | None:
    """``values`` as int64 when every string is a plain integer written the usual way.

    Ids with leading zeros stay strings, so "007" and "7" are never merged.
    """
    try:
        ints = pc.cast(values, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    padded = pc.or_(
        pc.and_(pc.starts_with(values, "0"), pc.greater(pc.utf8_length(values), 1)),
        pc.starts_with(values, "-0"),
    )
    return None if pc.any(padded).as_py() else ints


def _unify_ids(user: pa.ChunkedArray, item: pa.ChunkedArray) -> tuple[pa.ChunkedArray, ...]:
    """Both id columns as int64 when both are all integers, else both as strings."""
    u_int, i_int = _canonical_ints(user), _canonical_ints(item)
    if u_int is not None and i_int is not None:
        return u_int, i_int
    return pc.cast(user, pa.string()), pc.cast(item, pa.string())


def _distinct_pairs(item: _Column, category: _Column) -> pa.Table:
    """Distinct (item, category) rows in order of first appearance; category as string."""
    table = pa.table(
        {
            "item": item,
            "category": pc.cast(category, pa.string()),
            "_first": pa.array(np.arange(len(item), dtype=np.int64)),
        }
    )
    grouped = table.group_by(["item", "category"], use_threads=False).aggregate([("_first", "min")])
    return grouped.sort_by("_first_min").select(["item", "category"])


def _category_table(item: pa.ChunkedArray, category: pa.ChunkedArray) -> pa.Table:
    """Distinct pairs from a category column; empty or missing categories mean none."""
    category = pc.utf8_trim_whitespace(pc.cast(category, pa.string()))
    keep = pc.fill_null(pc.not_equal(category, ""), False)
    return _distinct_pairs(item.filter(keep), category.filter(keep))


# --------------------------------------------------------------------------- MovieLens

_RATING_FIELDS = (
    _F("user", "int"),
    _F("item", "int"),
    _F("rating", "skip"),
    _F("timestamp", "num"),
)
"""``user item rating unix_ts`` lines of ``u.data`` and ``ratings.dat``."""


def _ratings(table: pa.Table, src: _Source) -> pa.Table:
    """The interactions of a MovieLens ratings scan: integer ids, finite timestamps."""
    return pa.table(
        {
            "user": _int_column(table, "user", src),
            "item": _int_column(table, "item", src),
            "timestamp": _finite_column(table, "timestamp", src),
        }
    )


def _read_ml100k_genres(path: Path) -> tuple[str, ...]:
    table, src = _scan(
        path,
        [_F("genre", "label"), _F("index", "int")],
        sep="|",
        header=False,
        quote="",
        encoding="latin-1",
    )
    index = _int_column(table, "index", src).to_numpy()
    if sorted(index.tolist()) != list(range(len(index))):
        raise DataError(f"{path}: genre numbers must be 0..{len(index) - 1}, each once")
    names = table.column("genre").to_numpy(zero_copy_only=False)
    return tuple(str(names[i]) for i in np.argsort(index))


def _read_ml100k_items(path: Path, genres: Sequence[str]) -> tuple[pa.Table, pa.Table]:
    fields = [
        _F("item", "int"),
        _F("title", "text"),
        _F("release", "skip"),
        _F("video", "skip"),
        _F("url", "skip"),
        *(_F(f"g{j}", "text", f"genre flag {name!r}") for j, name in enumerate(genres)),
    ]
    table, src = _scan(path, fields, sep="|", header=False, quote="", encoding="latin-1")
    items = _int_column(table, "item", src)
    rows, which = [], []
    for j in range(len(genres)):  # a loop over the 19 genres, not over rows
        flags = table.column(f"g{j}")
        bad = pc.invert(pc.is_in(flags, pa.array(["0", "1"])))
        if pc.any(bad).as_py():
            row = _first_true(bad)
            raise src.fail(
                row, f"genre flag {genres[j]!r} must be 0 or 1, not {flags[row].as_py()!r}"
            )
        hit = pc.indices_nonzero(pc.equal(flags, "1")).to_numpy()
        rows.append(hit)
        which.append(np.full(len(hit), j))
    row = np.concatenate(rows)
    genre = np.concatenate(which)
    order = np.lexsort((genre, row))
    names = pa.array(list(genres), pa.string())
    categories = pa.table(
        {
            "item": pc.take(items, pa.array(row[order])),
            "category": pc.take(names, pa.array(genre[order])),
        }
    )
    titles = pa.table({"item": items, "title": pc.fill_null(table.column("title"), "")})
    return categories, titles


# --------------------------------------------------------------------------- sequences


def _read_attributes(path: Path, item_type: pa.DataType) -> pa.Table:
    """``{item: [attribute ids]}`` as distinct (item, category) rows, item typed like the log."""
    _check_file(path, "item attributes JSON ({item: [attribute ids]})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: is not valid UTF-8 text") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from err
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{item: [attribute ids]}}")
    keys: list[str] = []
    values: list[str] = []
    for key, attrs in data.items():  # a loop over the dict's items, as the JSON gives them
        if not isinstance(attrs, list) or not all(
            isinstance(a, str | int) and not isinstance(a, bool) for a in attrs
        ):
            raise DataError(f"{path}: item {key!r}: expected a list of attribute ids")
        keys.extend([key] * len(attrs))
        values.extend(str(a) for a in attrs)
    item = pa.array(keys, pa.string())
    if pa.types.is_integer(item_type):
        ints = _canonical_ints(item)
        if ints is None:
            row = _first_failure(item, lambda v: pc.cast(v, pa.int64()))
            raise DataError(
                f"{path}: item {keys[row]!r} is not an integer, but the sequence file's "
                "ids are integers"
            )
        item = ints
    return _distinct_pairs(item, pa.array(values, pa.string()))


# --------------------------------------------------------------------------- generic logs


def _parse_columns(columns: str | Sequence[str]) -> dict[str, str]:
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


def _read_parquet(path: Path, roles: dict[str, str]) -> RawLog:
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({_first_line_of(err)})") from err
    for role, entry in roles.items():
        _find_column(path, names, entry, role)
    try:
        table = pq.read_table(path, columns=list(dict.fromkeys(roles.values())))
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot be read ({_first_line_of(err)})") from err
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows")
    user = _parquet_ids(path, table, roles["user"])
    item = _parquet_ids(path, table, roles["item"])
    if pa.types.is_integer(user.type) and pa.types.is_integer(item.type):
        pass
    else:
        user, item = _unify_ids(pc.cast(user, pa.string()), pc.cast(item, pa.string()))
    if "timestamp" in roles:
        timestamp = _parquet_time(path, table, roles["timestamp"])
    else:
        timestamp = pa.nulls(table.num_rows, pa.float64())
    interactions = pa.table({"user": user, "item": item, "timestamp": timestamp})
    categories = None
    if "category" in roles:
        categories = _category_table(item, _decoded(table.column(roles["category"])))
    return RawLog(interactions, (path,), categories)


def _decoded(values: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(values.type):
        return values.cast(values.type.value_type)
    return values


def _parquet_null_check(path: Path, values: pa.ChunkedArray, name: str) -> None:
    if values.null_count:
        row = _first_true(pc.is_null(values))
        raise DataError(f"{path}: row {row + 1}: column {name!r} is empty")


def _parquet_ids(path: Path, table: pa.Table, name: str) -> pa.ChunkedArray:
    values = _decoded(table.column(name))
    _parquet_null_check(path, values, name)
    kind = values.type
    if pa.types.is_integer(kind):
        try:
            return pc.cast(values, pa.int64())
        except pa.ArrowInvalid as err:
            raise DataError(f"{path}: column {name!r}: ids do not fit in int64") from err
    if pa.types.is_floating(kind):
        rounded = pc.floor(values)
        if not pc.all(pc.equal(rounded, values)).as_py():
            row = _first_true(pc.invert(pc.fill_null(pc.equal(rounded, values), True)))
            raise DataError(
                f"{path}: row {row + 1}: column {name!r} is not an integer id: "
                f"{values[row].as_py()!r}"
            )
        return pc.cast(values, pa.int64())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = pc.cast(values, pa.string())
        empty = pc.equal(pc.utf8_length(values), 0)
        if pc.any(empty).as_py():
            raise DataError(f"{path}: row {_first_true(empty) + 1}: column {name!r} is empty")
        return values
    raise DataError(f"{path}: column {name!r} has type {kind}, which cannot hold ids")


def _parquet_time(path: Path, table: pa.Table, name: str) -> pa.ChunkedArray:
    values = _decoded(table.column(name))
    _parquet_null_check(path, values, name)
    kind = values.type
    if pa.types.is_timestamp(kind):
        per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[kind.unit]
        seconds = pc.divide(
            pc.cast(pc.cast(values, pa.timestamp(kind.unit)), pa.int64()), per_second
        )
        return pc.cast(seconds, pa.float64())
    if pa.types.is_date(kind):
        days = pc.cast(pc.cast(values, pa.date32()), pa.int32())
        return pc.cast(pc.multiply(pc.cast(days, pa.float64()), 86400.0), pa.float64())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            values = pc.cast(values, pa.float64())
        except pa.ArrowInvalid:
            row = _first_failure(values, lambda v: pc.cast(v, pa.float64()))
            raise DataError(
                f"{path}: row {row + 1}: column {name!r} is not a number: {values[row].as_py()!r}"
            ) from None
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = pc.cast(values, pa.float64())
    else:
        raise DataError(f"{path}: column {name!r} has type {kind}, not a timestamp or number")
    bad = pc.invert(pc.is_finite(values))
    if pc.any(bad).as_py():
        row = _first_true(bad)
        raise DataError(
            f"{path}: row {row + 1}: column {name!r} is not a finite number: "
            f"{values[row].as_py()!r}"
        )
    return values
