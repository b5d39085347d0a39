"""Every user's lists in one Parquet file: ``mirec recommend --all-users --out FILE``.

    from mirec import Recommender
    from mirec.serving.bulk_lists import read_users, write_all_lists

    rec = Recommender.load("runs/mine")
    write_all_lists(rec, "recs.parquet", n=50)                           # every user
    write_all_lists(rec, "some.parquet", users=read_users("users.txt"))  # a users file
    write_all_lists(rec, "few.parquet", users=[1, 2, 3], exclude_history=True)

The file has one row per (user, rank, item), best first within a user:

* ``user``, ``item``: raw ids in the log's own type (int64 for an integer log, else string);
* ``rank``: int32, 1 for the best item;
* ``score``: float64, the model's score (for the popularity fallback: the training count);
* ``interest``: int32, which of the user's interests found the item; null for the
  popularity fallback.

The lists are those of ``Recommender.recommend(user=[...])``, computed by it, a chunk of
users per batched pass: the rows of a user are exactly the :class:`Recommendation` s that
``recommend(user=u, n=n, ...)`` gives, in order. A user gets fewer than ``n`` rows only
when ``exclude_history`` leaves fewer items (none: a user who has seen the whole
catalogue), as ``recommend``.

Users and settings are checked before anything is written: an unknown or repeated user
(named by the file and line of a users file), a folder that keeps no histories
(``stored_users``), a bad ``n`` or ``index`` are refused first. The file is then written a
chunk at a time, each chunk one Parquet row group, into a temp file beside ``out`` that
replaces it at the end (:func:`mirec.atomic.atomic_path`): memory holds one chunk's lists,
whatever the number of users, and a failure part way (a full disk, Ctrl-C) leaves no
output and any previous ``out`` as it was. What wrote the file (the model, its dataset,
``n``, ``exclude_history``, ``index``, mirec's version) is in the file's own key-value
metadata under ``mirec``, so no second file is written beside it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from mirec.atomic import atomic_path, kept_folders, refuse_unsafe_target
from mirec.data.vocabulary import Vocabulary, check_id_text
from mirec.errors import ConfigError, DataError, MirecError, UnknownIdError
from mirec.recommender import Recommender
from mirec.version import __version__

USERS_PER_CHUNK = 4096
"""Users per Parquet row group: what memory holds at once (at n = 50, about 200,000 rows)."""
USERS_PER_PASS_ON_CPU = 256
"""Users per batched pass of the model on a CPU; a chunk takes several. Smaller batches
keep the extractor's and the scores' tensors in cache: on ml-1m's ComiRec-SA, 1 thread,
passes of 256 users ran about 1.5x faster than of 4,096 (benchmarks/all_users.py). On
another device a pass is the whole chunk (``recommend`` cuts it to fit its memory)."""
USERS_COLUMN = "user"
"""The column of a Parquet users file read by default."""
METADATA_KEY = b"mirec"
"""The key of the Parquet file's metadata that records what wrote it."""
PARQUET_MAGIC = b"PAR1"
"""How a Parquet file begins: a users file that does is read as Parquet, else as text."""


@dataclass(frozen=True)
class ListsWritten:
    """What :func:`write_all_lists` wrote."""

    path: Path
    users: int
    rows: int
    seconds: float
    """From the call (the users' checks) to the file in place."""

    @property
    def users_per_second(self) -> float:
        return self.users / max(self.seconds, 1e-9)

    def summary(self) -> str:
        """One line: users, rows, seconds, users/s and the file."""
        return (
            f"{self.users} users, {self.rows} rows in {self.seconds:.2f} s "
            f"({self.users_per_second:.0f} users/s): {self.path}"
        )


class UserIds(list):
    """Raw user ids read from a users file (:func:`read_users`), each with its place there,
    so that a refused id is named by its file and line (or row)."""

    def __init__(self, ids: Iterable[Any], source: Path, places: Sequence[int], unit: str):
        super().__init__(ids)
        self.source = source
        self._places = list(places)
        self._unit = unit

    def place(self, i: int) -> str:
        """Where the ``i``-th id is: ``FILE, line L`` (text) or ``FILE, row R of column C``
        (Parquet), both counted from 1."""
        return f"{self.source}, {self._unit} {self._places[i]}"


def read_users(path: str | Path, column: str | None = None) -> UserIds:
    """The raw user ids of a users file, in its order: a Parquet file (told by its first
    bytes, whatever its name) is read from its ``column`` (default ``user``), integer or
    string; any other file is UTF-8 text, one raw id a line (surrounding spaces and blank
    lines skipped). A missing, empty or unreadable file, a Parquet file without the column
    or with a null in it, or ``column`` given for a text file is a DataError or ConfigError
    naming the file (and the line or row)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such users file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a users file (one raw user id a line)")
    with open(path, "rb") as head:
        parquet = head.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC
    if parquet:
        return _parquet_users(path, USERS_COLUMN if column is None else column)
    if column is not None:
        raise ConfigError(
            f"{path}: a text file (one raw user id a line) has no columns; a column is named "
            "only for a Parquet users file"
        )
    return _text_users(path)


def _text_users(path: Path) -> UserIds:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (byte {err.start})") from None
    ids, lines = [], []
    for number, line in enumerate(text.split("\n"), 1):
        value = line.strip()
        if value:
            ids.append(value)
            lines.append(number)
    if not ids:
        raise DataError(
            f"{path}: holds no user ids; give one raw user id a line (or a Parquet file with "
            f"a {USERS_COLUMN!r} column)"
        )
    return UserIds(ids, path, lines, "line")


def _parquet_users(path: Path, column: str) -> UserIds:
    try:
        schema = pq.read_schema(path)
        if column not in schema.names:
            raise DataError(
                f"{path}: has no column {column!r} (its columns: {', '.join(schema.names)}); "
                "name the column of user ids"
            )
        values = pq.read_table(path, columns=[column]).column(column)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    kind = values.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (
        pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)
    ):
        raise DataError(
            f"{path}: column {column!r} holds {values.type}; user ids are integers or strings"
        )
    if values.null_count:
        first = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{path}, row {first + 1} of column {column!r}: no user id (null)")
    if len(values) == 0:
        raise DataError(f"{path}: column {column!r} has no rows; no user ids to write")
    return UserIds(values.to_pylist(), path, range(1, len(values) + 1), f"row of {column!r}")


def write_all_lists(
    rec: Recommender,
    out: str | Path,
    *,
    n: int = 50,
    users: Sequence[int | str] | np.ndarray | None = None,
    exclude_history: bool = False,
    index: str | None = None,
    chunk_size: int = USERS_PER_CHUNK,
    progress: bool = False,
) -> ListsWritten:
    """Write the top-``n`` lists of ``users`` (raw ids of the training log, each once; a
    :class:`UserIds` from :func:`read_users` names a refused one by its line; default:
    every user the folder stores) to the Parquet file ``out`` (the module docstring: its
    columns, and how it is written whole or not at all), ``chunk_size`` users per row group
    (what memory holds of the lists; the model takes them in passes of
    :data:`USERS_PER_PASS_ON_CPU` on a CPU), with a progress bar if ``progress``.

    ``exclude_history`` and ``index`` are ``Recommender.recommend``'s: leave out the items
    each user has already had (the protocol keeps them, so the default does; production
    lists usually want them out), search the folder's ``flat``, ``hnsw`` or ``ivf`` index.
    ``out`` may not be a folder, a symbolic link, the users file, or lie in the model folder
    or the data folder; an existing file is replaced."""
    if not isinstance(rec, Recommender):
        raise MirecError(
            f"write_all_lists: expected a Recommender (a retrieval model folder); got "
            f"{type(rec).__name__}"
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise MirecError(f"chunk_size={chunk_size!r}: expected an integer >= 1")
    start = time.perf_counter()
    out = Path(out)
    wanted = _checked_users(rec, users)
    _check_out(out, rec, users.source if isinstance(users, UserIds) else None)
    recorded = _provenance(rec, n, exclude_history, index, len(wanted))
    schema = _schema(rec).with_metadata({METADATA_KEY: json.dumps(recorded, default=str)})
    options = {"n": n, "exclude_history": exclude_history, "index": index}
    per_pass = USERS_PER_PASS_ON_CPU if rec.info.device.type == "cpu" else chunk_size
    rows = 0
    with tqdm(
        total=len(wanted), desc="recommend", unit="user", disable=not progress, leave=False
    ) as bar:
        # the first chunk before the file: a bad n or index is refused with nothing written
        first = _table(rec, wanted[:chunk_size], schema, options, per_pass)
        with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            writer.write_table(first)
            rows += first.num_rows
            bar.update(min(chunk_size, len(wanted)))
            del first
            for lo in range(chunk_size, len(wanted), chunk_size):
                part = wanted[lo : lo + chunk_size]
                table = _table(rec, part, schema, options, per_pass)
                writer.write_table(table)
                rows += table.num_rows
                bar.update(len(part))
    return ListsWritten(out, len(wanted), rows, time.perf_counter() - start)


def _checked_users(rec: Recommender, users: Any) -> list[int | str]:
    """The users to write, as the log's own ids (an integer log's ``"42"`` is 42), after
    refusing a folder without histories, an unknown user and a repeated one."""
    info = rec.info
    if info.stored_users != "histories":
        keeps = "only user ids" if info.stored_users == "ids" else "no users"
        raise ConfigError(
            f"{info.folder or 'the model folder'}: writing users' lists reads their stored "
            f"histories, and this folder keeps {keeps} (stored_users={info.stored_users}); "
            "train with --set stored_users=histories to keep them"
        )
    if users is None:
        return list(info.user_ids)
    if isinstance(users, str | bytes | dict) or not isinstance(users, Sequence | np.ndarray):
        raise MirecError(
            f"users must be a list of raw user ids (or read_users(FILE)); got "
            f"{type(users).__name__}"
        )
    ids = users.tolist() if isinstance(users, np.ndarray) else list(users)
    if not ids:
        raise MirecError("users: an empty list; give at least one user id, or None for all")

    def place(i: int) -> str:
        return users.place(i) if isinstance(users, UserIds) else f"users[{i}]"

    vocabulary = Vocabulary(np.asarray(info.user_ids), "user")
    for i, value in enumerate(ids):
        if isinstance(value, str):
            try:
                check_id_text(value, "user")
            except ConfigError as err:
                raise ConfigError(f"{place(i)}: {err}") from None
    rows = vocabulary.rows(ids)
    unknown = np.flatnonzero(rows < 0)
    if len(unknown):
        i = int(unknown[0])
        try:
            vocabulary.row_of(ids[i], info.dataset)
        except UnknownIdError as err:
            more = f" ({len(unknown) - 1} more unknown)" if len(unknown) > 1 else ""
            raise UnknownIdError(f"{place(i)}: {err}{more}") from None
    order = np.argsort(rows, kind="stable")
    repeated = np.flatnonzero(rows[order][1:] == rows[order][:-1])
    if len(repeated):
        first, again = int(order[repeated[0]]), int(order[repeated[0] + 1])
        raise ConfigError(
            f"{place(again)}: user {ids[again]!r} again (first at {place(first)}); each user "
            "is written once"
        )
    return vocabulary.ids_of(rows)


def _check_out(out: Path, rec: Recommender, users_file: Path | None) -> None:
    """Refuse an output that would replace or litter what must be kept."""
    refuse_unsafe_target(
        out, kept_folders((rec.info.folder, "the model folder")), "write the lists elsewhere"
    )
    if out.is_dir():
        raise MirecError(f"{out}: is a folder; name the Parquet file to write")
    if users_file is not None and out.resolve() == users_file.resolve():
        raise MirecError(f"{out}: is the users file; write the lists elsewhere")


def _id_type(ids: tuple) -> pa.DataType:
    return pa.string() if ids and isinstance(ids[0], str) else pa.int64()


def _schema(rec: Recommender) -> pa.Schema:
    info = rec.info
    return pa.schema(
        [
            ("user", _id_type(info.user_ids)),
            ("rank", pa.int32()),
            ("item", _id_type(info.item_ids)),
            ("score", pa.float64()),
            ("interest", pa.int32()),
        ]
    )


def _provenance(
    rec: Recommender, n: int, exclude_history: bool, index: str | None, users: int
) -> dict[str, Any]:
    info = rec.info
    return {
        "model": info.name,
        "dataset": info.dataset,
        "model_folder": None if info.folder is None else str(info.folder),
        "n": n,
        "exclude_history": exclude_history,
        "index": index,
        "users": users,
        "mirec": __version__,
    }


def _table(
    rec: Recommender,
    users: list[int | str],
    schema: pa.Schema,
    options: dict[str, Any],
    per_pass: int,
) -> pa.Table:
    """The rows of ``users``' lists: ``recommend(user=users, **options)``'s, from its
    batched ranking ``per_pass`` users at a time, taken as columns: an object per item
    took about 40% of ``recommend``'s time for every user of ml-1m."""
    tables = []
    for lo in range(0, len(users), per_pass):
        part = users[lo : lo + per_pass]
        owner, rank, item, score, interest = rec._user_columns(part, **options)
        columns = [
            pa.array(part, schema.field("user").type).take(pa.array(owner)),
            pa.array(rank, pa.int32()),
            pa.array(item, schema.field("item").type),
            pa.array(score, pa.float64()),
            pa.array(interest, pa.int32(), mask=interest < 0),
        ]
        tables.append(pa.Table.from_arrays(columns, schema=schema))
    return pa.concat_tables(tables)
