"""DataFrames in: a pandas or polars DataFrame, or a pyarrow Table, as an ``interactions`` log.

``mirec.train(data=df, user="user_id", item="item_id", time="ts")`` trains on the rows of
``df`` as ``mirec train --dataset FILE --format interactions --columns user_id,item_id,ts``
trains on the same rows in a file, to the same weights. :func:`frame_log` turns the table
into such a file:

1. the columns named by ``user``, ``item`` and, where given, ``time`` and ``category`` are
   taken as an Arrow table (pyarrow's ``Table.from_pandas`` for pandas, ``to_arrow`` for
   polars, ``pyarrow.table`` for anything else that speaks Arrow's C stream interface),
   with no dependency of mirec's on pandas or polars: an object is recognised by what it
   does, not imported;
2. they are checked by the very code that checks a Parquet log
   (:func:`~mirec.data.readers.interactions.read_tables`: empty ids, ids that are neither
   integers nor text, control characters, non-integral float ids, a column of integers but
   for a few rows, times that are not finite numbers), so a bad table gets the file's
   one-line error, naming the column and the row, counted from 1 as in a Parquet file
   (``row 1`` is ``df.iloc[0]``), before any run folder is touched;
3. the columns are written, renamed to their roles, to ``frames/<digest>.parquet`` in the
   preprocessing cache (``$MIREC_CACHE_DIR``), named by the SHA-256 of the file: the same
   rows give the same file and so the same ``dataset`` in ``config.yaml``.

Why a file and not DuckDB reading the Arrow table in place (which it can, without a
copy): a run's ``dataset`` is a string that ``config.yaml`` and ``metrics.json`` record,
that ``resume`` compares, and by whose file stamps the preprocessing cache
(:mod:`mirec.data.prepare`) finds a prepared log; an object in memory has none of these.
A content-addressed Parquet file has all three, and from there the log takes the one path
every Parquet log takes (:mod:`mirec.data.ingest`), so DataFrame and file give the same
sequences by construction, not by a second implementation kept in step. ``resume=True``
with the same rows finds the same file, and the same prepared log. The cost is one
compressed write of the needed columns per call (a repeated call writes, hashes and drops
its copy, keeping the first file and its stamp); the cache's ``frames/`` folder may be
emptied at any time, at the price of that write.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mirec.atomic import fsync_folder, temp_beside
from mirec.core.paths import cache_dir
from mirec.data.prepare import cache_write_error
from mirec.data.readers._scan import _first_line_of
from mirec.data.readers.interactions import read_tables
from mirec.errors import ConfigError, DataError, MirecError

ARGUMENTS = {"user": "user", "item": "item", "time": "timestamp", "category": "category"}
"""The column arguments of ``mirec.train(data=...)`` and the ``interactions`` role each
names (``time`` is the log's ``timestamp``)."""
FILE_SETTINGS = ("dataset", "format", "columns", "sep")
"""The settings that name a file's data, which ``data=`` replaces."""


@dataclass(frozen=True)
class FrameLog:
    """A table written as an ``interactions`` log: train on ``dataset`` with
    ``format="interactions"`` and ``columns``."""

    path: Path
    """The content-addressed Parquet file in the cache."""
    columns: str
    """``user,item[,timestamp][,category]``: the file's columns, named by their roles."""
    label: str
    """What names the table in messages: ``data (pandas.DataFrame)``."""

    @property
    def dataset(self) -> str:
        return str(self.path)

    def settings(self) -> dict[str, Any]:
        """The settings that train on this log."""
        return {"format": "interactions", "columns": self.columns}

    def named(self, err: DataError) -> DataError:
        """``err`` with the cached file it names named as the table (the rows are the
        table's rows, in its order); any other error as it is."""
        text, where = str(err), str(self.path)
        if not text.startswith(where):
            return err
        return DataError(self.label + text[len(where) :])


def frame_log(
    data: object,
    *,
    user: str | None,
    item: str | None,
    time: str | None = None,
    category: str | None = None,
    id_type: str | None = None,
    title: str | None = None,
) -> FrameLog:
    """Check ``data`` (a pandas or polars DataFrame, a pyarrow Table or RecordBatch, or any
    object ``pyarrow.table`` takes through Arrow's C stream interface) as an
    ``interactions`` log whose columns ``user``, ``item``, ``time`` and ``category`` name,
    and write it to the cache (see the module's notes). ``id_type`` is the setting's."""
    label = _label(data)
    if title is not None:
        # a table trains as the same rows in an interactions file, which has no title role
        raise ConfigError(
            f"title={title!r}: an interactions log has no title column yet; train without "
            "title= (items keep their ids)"
        )
    given = {"user": user, "item": item, "time": time, "category": category}
    for argument, name in given.items():
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigError(f"{argument}={name!r}: expected the name of a column of data")
    for argument in ("user", "item"):
        if given[argument] is None:
            raise ConfigError(
                f"data= needs {argument}=, the name of its {argument} id column "
                "(e.g. user='user_id', item='item_id', time='ts')"
            )
    roles = {ARGUMENTS[a]: name for a, name in given.items() if name is not None}
    if len(set(roles.values())) < len(roles):
        shown = ", ".join(f"{a}={n!r}" for a, n in given.items() if n is not None)
        raise ConfigError(f"{shown}: one column is given two roles")
    wanted = {name: argument for argument, name in given.items() if name is not None}
    table = _plain(_arrow_table(data, label, wanted))
    # the Parquet reader's checks and words, the table named as data; the log is dropped
    read_tables([label], [table], roles, id_type, sources=())
    ordered = [role for role in ARGUMENTS.values() if role in roles]
    log = table.select([roles[r] for r in ordered]).rename_columns(ordered)
    return FrameLog(_stored(log), ",".join(ordered), label)


def _label(data: object) -> str:
    kind = type(data)
    return f"data ({kind.__module__.split('.')[0]}.{kind.__name__})"


def _from(data: object, *packages: str) -> bool:
    return type(data).__module__.split(".")[0] in packages


def _is_pandas(data: object) -> bool:
    """A pandas DataFrame (not a Series), known by its package and what it has."""
    return _from(data, "pandas") and hasattr(data, "columns") and hasattr(data, "iloc")


def _is_polars(data: object) -> bool:
    """A polars DataFrame (not a LazyFrame, which has no rows until collected)."""
    return _from(data, "polars") and hasattr(data, "to_arrow") and hasattr(data, "columns")


def _arrow_table(data: object, label: str, wanted: dict[str, str]) -> pa.Table:
    """The columns of ``data`` that ``wanted`` maps to the arguments naming them, as an
    Arrow table; a missing column, or an object that is not a table, is one line."""
    names = list(wanted)
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        have = data.column_names
    elif _is_pandas(data) or _is_polars(data):
        have = [str(c) for c in data.columns]  # type: ignore[attr-defined]
    elif hasattr(data, "__arrow_c_stream__") and not _from(data, "pandas", "polars"):
        data = _converted(label, lambda: pa.table(data))
        have = data.column_names
    else:
        hint = " (a lazy frame: collect() it first)" if hasattr(data, "collect") else ""
        if isinstance(data, str | os.PathLike):
            hint = " (a file goes in dataset=, with format='interactions' and columns=)"
        raise ConfigError(
            f"{label}: expected a table, a pandas or polars DataFrame or a pyarrow Table{hint}"
        )
    for name in names:
        if have.count(name) > 1:
            raise DataError(f"{label}: has two columns named {name!r}; rename one")
    for name in names:
        if name not in have:
            listed = ", ".join(repr(n) for n in have)
            raise DataError(
                f"{label}: no column {name!r} (wanted as the {wanted[name]}); it has: {listed}"
            )
    if isinstance(data, pa.Table):
        return data.select(names)
    if _is_polars(data):
        frame = data.select(names)  # type: ignore[attr-defined]
        return _converted(label, frame.to_arrow)
    if _is_pandas(data):
        by_name = {str(c): c for c in data.columns}  # type: ignore[attr-defined]
        columns = [_pandas_column(data, by_name[n], n, label) for n in names]
        return pa.table(dict(zip(names, columns, strict=True)))
    return data.select(names)  # type: ignore[attr-defined]


def _pandas_column(frame: Any, key: object, name: str, label: str) -> pa.ChunkedArray:
    """One pandas column as Arrow (NaN as null, as pandas means it); a column of mixed
    Python types, which Arrow cannot convert, names its first odd row."""
    column = frame[key]
    try:
        return pa.Table.from_pandas(column.to_frame(name), preserve_index=False).column(0)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        values = column.tolist()
        first = next((v for v in values if v is not None and v == v), None)
        for row, value in enumerate(values):
            if value is not None and value == value and type(value) is not type(first):
                raise DataError(
                    f"{label}: row {row + 1}: column {name!r} holds {value!r} "
                    f"({type(value).__name__}) among {type(first).__name__} values; a column "
                    "holds values of one type"
                ) from None
        raise DataError(f"{label}: column {name!r}: {_first_line_of(err)}") from None


def _converted(label: str, convert: Any) -> pa.Table:
    try:
        return convert()
    except (pa.ArrowException, TypeError, ValueError) as err:
        raise DataError(
            f"{label}: cannot be read as an Arrow table ({_first_line_of(err)})"
        ) from err


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary columns decoded and view strings as plain ones (what the Parquet reader
    takes), and no schema metadata: the same rows give the same file, whoever made them."""
    columns = []
    for column in table.columns:
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if pa.types.is_string_view(column.type):
            column = column.cast(pa.large_string())
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _stored(table: pa.Table) -> Path:
    """``table`` in ``frames/<sha256>.parquet`` of the cache: written to a temporary file,
    hashed, and renamed to its name unless that file is there already with the same
    bytes (then its stamp, and so the prepared log cached for it, stays)."""
    folder = cache_dir() / "frames"
    tmp: Path | None = None
    try:
        tmp = temp_beside(folder / "table.parquet")  # with the umask's permissions
        # without the Arrow schema: string and large_string, pandas' and polars' columns,
        # make the same bytes
        pq.write_table(table, tmp, store_schema=False)
        digest = _sha256(tmp)
        path = folder / f"{digest[:32]}.parquet"
        if path.is_file() and _sha256(path) == digest:
            return path
        os.replace(tmp, path)
        tmp = None
        fsync_folder(folder)
        return path
    except MirecError:
        raise
    except Exception as err:
        failure = cache_write_error(err, folder)
        if failure is None:
            raise
        raise failure from err
    finally:
        if tmp is not None:
            with suppress(OSError):
                tmp.unlink()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
