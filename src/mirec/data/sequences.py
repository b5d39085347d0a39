"""docs/protocol.md sections 1-2: from a raw log to filtered, re-indexed, split user sequences.

Sequences are stored flat (CSR): user ``u``'s items are ``items[offsets[u]:offsets[u + 1]]``,
item indices ``1..n_items`` (0 is padding). Users are in the protocol's order: raw ids
sorted ascending, numerically where they are integers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mirec.data.log import RawLog
from mirec.errors import ConfigError, DataError

MIN_ITEM_INTERACTIONS = 5
MIN_USER_INTERACTIONS = 5
_BATCH_ROWS = 1 << 20
"""Rows of the ordered log fetched from DuckDB at a time."""


@dataclass(frozen=True)
class Sequences:
    """Every kept user's chronological item sequence, plus what is known about the items."""

    user_ids: np.ndarray
    """Raw user ids, sorted ascending (int64 or str)."""
    offsets: np.ndarray
    """int64, ``n_users + 1``: user u's items are ``items[offsets[u]:offsets[u + 1]]``."""
    items: np.ndarray
    """int32 item indices in 1..n_items (a memory map when loaded from the cache)."""
    item_ids: np.ndarray
    """Raw id of item index i at position i - 1 (int64 or str)."""
    item_category_offsets: np.ndarray | None = None
    """CSR over item index 1..n_items: item i's categories are
    ``item_category_codes[item_category_offsets[i - 1]:item_category_offsets[i]]``."""
    item_category_codes: np.ndarray | None = None
    category_names: np.ndarray | None = None
    """Name of category code c at position c."""
    behaviors: np.ndarray | None = None
    """int64 aligned with ``items``: each interaction's behaviour type code, 1..B by name
    order (Taobao: buy, cart, fav, pv), where the log records one."""
    behavior_names: np.ndarray | None = None
    """Name of behaviour code c at position c - 1."""
    item_titles: np.ndarray | None = None
    """Title of item index i at position i - 1 ("" where unknown), where the dataset names
    its items (MovieLens)."""
    user_feature_codes: np.ndarray | None = None
    """(n_users, F) int64: row u holds user row u's code for each profile feature, 1..C_f
    for known values (by value order), 0 for unknown (MIND's user-profile features)."""
    user_feature_names: np.ndarray | None = None
    """(F,) the features' names (``age``, ``gender``, ...)."""
    user_feature_cardinalities: np.ndarray | None = None
    """(F,) int64: C_f, the known values of feature f (codes 1..C_f)."""
    user_feature_values: np.ndarray | None = None
    """The known values, feature after feature: code c of feature f is
    ``user_feature_values[sum(C[:f]) + c - 1]``."""

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        """The item indices of user row ``user`` (not a raw id), oldest first."""
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def primary_category(self) -> np.ndarray | None:
        """Each item's first category code (index 0 = padding, -1 = none), for diagnostics."""
        if self.item_category_offsets is None or self.item_category_codes is None:
            return None
        first = np.full(self.n_items + 1, -1, dtype=np.int64)
        starts = self.item_category_offsets[:-1]
        has = np.diff(self.item_category_offsets) > 0
        first[1:][has] = self.item_category_codes[starts[has]]
        return first

    def category_matrix(self) -> np.ndarray | None:
        """(n_items + 1, n_categories) bool: row i marks every category of item index i (row
        0, the padding, none); None without categories."""
        if self.item_category_offsets is None or self.item_category_codes is None:
            return None
        n_categories = len(self.category_names) if self.category_names is not None else 0
        n_categories = max(n_categories, int(self.item_category_codes.max(initial=-1)) + 1)
        matrix = np.zeros((self.n_items + 1, n_categories), dtype=bool)
        rows = np.repeat(np.arange(1, self.n_items + 1), np.diff(self.item_category_offsets))
        matrix[rows, self.item_category_codes] = True
        return matrix

    def categories_of(self, item: int) -> np.ndarray:
        """The category codes of item index ``item`` (empty without categories)."""
        if self.item_category_offsets is None or self.item_category_codes is None:
            return np.empty(0, dtype=np.int64)
        lo, hi = self.item_category_offsets[item - 1], self.item_category_offsets[item]
        return self.item_category_codes[lo:hi]

    def user_profiles(self) -> UserProfiles | None:
        """The users' categorical profile features, or None when the dataset has none."""
        if self.user_feature_codes is None:
            return None
        assert self.user_feature_names is not None and self.user_feature_cardinalities is not None
        return UserProfiles(
            codes=self.user_feature_codes,
            names=tuple(str(n) for n in self.user_feature_names),
            cardinalities=tuple(int(c) for c in self.user_feature_cardinalities),
        )

    def user_feature_value(self, feature: str, code: int) -> str | None:
        """The value that ``code`` of ``feature`` stands for (None for 0, unknown)."""
        if self.user_feature_names is None or self.user_feature_cardinalities is None:
            raise KeyError(f"no user features, so no {feature!r}")
        f = [str(n) for n in self.user_feature_names].index(feature)
        if code == 0:
            return None
        start = int(self.user_feature_cardinalities[:f].sum())
        return str(self.user_feature_values[start + code - 1])


@dataclass(frozen=True)
class UserProfiles:
    """What a model needs of the user features: MIND's user-profile embeddings (Li et al.,
    CIKM 2019, section 4.3) are looked up per feature from these codes."""

    codes: np.ndarray
    """(n_users, F) int64, 0 = unknown, indexed by user row."""
    names: tuple[str, ...]
    cardinalities: tuple[int, ...]
    """Known values per feature; feature f's embedding table needs C_f + 1 rows."""


def build_sequences(log: RawLog) -> Sequences:
    """Filter (items < 5 interactions, then users < 5), re-index and order, per docs/protocol.md 1.

    A user's items are ordered by timestamp; ties (and logs without timestamps) keep file
    order. Items are re-indexed 1..N in ascending raw-id order.
    """
    table = log.interactions.append_column(
        "pos", pa.array(np.arange(log.interactions.num_rows, dtype=np.int64))
    )
    con = duckdb.connect()
    con.register("log", table)
    fields = filtered_sequences(con, log.sources, lambda n: np.empty(n, dtype=np.int32))
    categories: dict[str, np.ndarray] = {}
    if log.item_categories is not None and log.item_categories.num_rows:
        con.register("item_categories", log.item_categories)
        categories = item_categories(con)
    profiles = _user_features(fields["user_ids"], log.user_features)
    titles = _item_titles(fields["item_ids"], log.item_titles)
    return Sequences(**fields, **categories, **profiles, item_titles=titles)


def filtered_sequences(
    con: duckdb.DuckDBPyConnection,
    sources: Sequence[Path],
    new_items: Callable[[int], np.ndarray],
    stage: Callable[[str], None] = lambda name: None,
) -> dict[str, np.ndarray]:
    """The protocol's filter, re-indexing and order (docs/protocol.md section 1) of the relation
    ``log`` of ``con``: the :class:`Sequences` fields ``user_ids``, ``offsets``, ``items``
    and ``item_ids`` (and ``behaviors``, ``behavior_names`` when ``log`` has a
    ``behavior`` column).

    ``log`` has the columns ``user``, ``item``, ``timestamp`` (DOUBLE, null when unknown)
    and ``pos`` (the file order, which breaks ties). Every step runs in DuckDB, which spills
    to its temp directory under its memory limit: only the per-user lengths and the
    vocabularies come back whole. The ordered item indices stream, a batch at a time, into
    the int32 array ``new_items(n)`` returns (a memory map, for a log larger than memory).
    ``stage`` is called with the name of each step once it is done. The table
    ``item_index`` (item, idx) is left on ``con`` for :func:`item_categories`.
    """
    con.execute(
        f"""
        CREATE TEMP TABLE frequent_items AS SELECT item FROM log GROUP BY item
        HAVING count(*) >= {MIN_ITEM_INTERACTIONS};
        CREATE TEMP TABLE user_lengths AS SELECT "user", count(*) AS n
        FROM log SEMI JOIN frequent_items USING (item) GROUP BY "user"
        HAVING count(*) >= {MIN_USER_INTERACTIONS};
        CREATE TEMP TABLE item_index AS SELECT item,
        (row_number() OVER (ORDER BY item))::INTEGER AS idx
        FROM (SELECT DISTINCT item FROM log SEMI JOIN frequent_items USING (item)
              SEMI JOIN user_lengths USING ("user"));
        """
    )
    stage("filter (5-core) and item index")
    users = con.sql('SELECT "user", n FROM user_lengths ORDER BY "user"').to_arrow_table()
    if users.num_rows == 0:
        where = ", ".join(str(s) for s in sources) or "the interaction log"
        raise DataError(
            f"{where}: no user has {MIN_USER_INTERACTIONS} or more interactions with items "
            f"seen {MIN_ITEM_INTERACTIONS} or more times; nothing is left to train on"
        )
    offsets = np.zeros(users.num_rows + 1, dtype=np.int64)
    np.cumsum(users.column("n").to_numpy(), out=offsets[1:])
    item_ids = con.sql("SELECT item FROM item_index ORDER BY idx").to_arrow_table()
    stage("user and item vocabularies")
    has_behavior = "behavior" in con.sql("SELECT * FROM log LIMIT 0").columns
    behavior = ", log.behavior::VARCHAR AS behavior" if has_behavior else ""
    ordered = con.sql(
        f"""
        SELECT item_index.idx{behavior} FROM log JOIN item_index USING (item)
        SEMI JOIN user_lengths USING ("user")
        ORDER BY log."user", log.timestamp NULLS FIRST, log.pos
        """
    ).to_arrow_reader(_BATCH_ROWS)
    items = new_items(int(offsets[-1]))
    behaviors, at = [], 0
    for batch in ordered:
        items[at : at + batch.num_rows] = batch.column(0).to_numpy()
        at += batch.num_rows
        if has_behavior:
            behaviors.append(batch.column(1))
    assert at == len(items), "the ordered log and the user lengths disagree"
    stage("order and write the item sequences")
    return {
        "user_ids": users.column("user").to_numpy(zero_copy_only=False),
        "offsets": offsets,
        "items": items,
        "item_ids": item_ids.column("item").to_numpy(zero_copy_only=False),
        **(_behaviors(pa.chunked_array(behaviors, pa.string())) if has_behavior else {}),
    }


def with_items(seqs: Sequences, other: Sequences) -> Sequences:
    """``seqs`` with the items of ``other`` that it lacks appended to its catalogue (item
    indices from ``n_items + 1``, in ``other``'s order), in no user's sequence: what a
    fine-tune with ``removed_items=keep`` trains on. They take ``other``'s titles and
    categories (a category ``seqs`` does not name is added after its own), where ``seqs``
    has titles or categories at all. Ids compare exactly, in the log's type, so both logs
    must have the same type of item ids."""
    if np.issubdtype(seqs.item_ids.dtype, np.integer) != np.issubdtype(
        other.item_ids.dtype, np.integer
    ):
        kinds = {True: "integers", False: "text"}
        raise ConfigError(
            "setting removed_items=keep: the folder's item ids are "
            f"{kinds[np.issubdtype(other.item_ids.dtype, np.integer)]} and the new log's "
            f"{kinds[np.issubdtype(seqs.item_ids.dtype, np.integer)]}, so no item is the same "
            "in both: read the log with the folder's id_type"
        )
    extra = np.flatnonzero(~np.isin(other.item_ids, seqs.item_ids))
    if len(extra) == 0:
        return seqs
    changes: dict[str, np.ndarray] = {
        "item_ids": np.concatenate([seqs.item_ids, other.item_ids[extra]])
    }
    if seqs.item_titles is not None:
        titles = other.item_titles[extra] if other.item_titles is not None else [""] * len(extra)
        changes["item_titles"] = np.concatenate([seqs.item_titles, np.asarray(titles, dtype=str)])
    if seqs.item_category_offsets is not None and seqs.item_category_codes is not None:
        names = [] if seqs.category_names is None else seqs.category_names.tolist()
        code_of = {str(name): code for code, name in enumerate(names)}
        codes, lengths = [], []
        for item in extra + 1:
            theirs = other.categories_of(int(item)) if other.category_names is not None else []
            for name in (str(other.category_names[code]) for code in theirs):
                if name not in code_of:
                    code_of[name] = len(names)
                    names.append(name)
                codes.append(code_of[name])
            lengths.append(len(theirs))
        end = seqs.item_category_offsets[-1]
        changes["item_category_offsets"] = np.concatenate(
            [seqs.item_category_offsets, end + np.cumsum(lengths, dtype=np.int64)]
        )
        changes["item_category_codes"] = np.concatenate(
            [seqs.item_category_codes, np.asarray(codes, dtype=np.int64)]
        )
        changes["category_names"] = np.asarray(names)
    return replace(seqs, **changes)


def _behaviors(column: pa.ChunkedArray) -> dict[str, np.ndarray]:
    """Behaviour types as codes 1..B in name order (0 where a row has none)."""
    values = column.to_numpy(zero_copy_only=False)
    known = np.array([v is not None for v in values])
    names = np.unique(values[known].astype(str))
    codes = np.zeros(len(values), dtype=np.int64)
    codes[known] = np.searchsorted(names, values[known].astype(str)) + 1
    return {"behaviors": codes, "behavior_names": names}


def _item_titles(item_ids: np.ndarray, item_titles: pa.Table | None) -> np.ndarray | None:
    """The kept items' titles in item-index order, "" for an item the table lacks."""
    if item_titles is None or item_titles.num_rows == 0:
        return None
    ids, keys = pa.array(item_ids), item_titles.column("item")
    if ids.type != keys.type:
        ids, keys = pc.cast(ids, pa.string()), pc.cast(keys, pa.string())
    found = pc.take(item_titles.column("title"), pc.index_in(ids, value_set=keys))
    return pc.fill_null(found, "").to_numpy(zero_copy_only=False).astype(str)


def item_categories(con: duckdb.DuckDBPyConnection) -> dict[str, np.ndarray]:
    """Categories of the kept items as CSR over item index, category codes by name order,
    from the relation ``item_categories`` (item, category) of ``con`` and the
    ``item_index`` :func:`filtered_sequences` left there. Every category of the log is
    named, whether or not its items were kept."""
    rows = con.sql(
        """
        WITH names AS (SELECT category, (row_number() OVER (ORDER BY category) - 1)::BIGINT
                       AS code FROM (SELECT DISTINCT category FROM item_categories))
        SELECT i.idx, n.code, n.category FROM item_categories c
        JOIN item_index i USING (item) JOIN names n USING (category)
        ORDER BY i.idx, n.code
        """
    ).to_arrow_table()
    names = con.sql(
        "SELECT DISTINCT category FROM item_categories ORDER BY category"
    ).to_arrow_table()
    n_items = con.sql("SELECT count(*) FROM item_index").fetchall()[0][0]
    counts = np.bincount(rows.column("idx").to_numpy(), minlength=n_items + 1)[1:]
    return {
        "item_category_offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "item_category_codes": rows.column("code").to_numpy().astype(np.int64),
        "category_names": names.column("category").to_numpy(zero_copy_only=False),
    }


def _user_features(user_ids: np.ndarray, user_features: pa.Table | None) -> dict[str, np.ndarray]:
    """Profile codes of the kept users, one column per feature (as for item categories,
    codes follow value order; 0 marks users or values the profile table does not know)."""
    if user_features is None or user_features.num_columns < 2:
        return {}
    names = [n for n in user_features.column_names if n != "user"]
    users = user_features.column("user")
    if pc.count_distinct(users).as_py() != user_features.num_rows:
        raise DataError("user features: a user has more than one profile row")
    row_ids = pa.array(user_ids)
    if row_ids.type != users.type:
        # RawLog wants the interactions' id type; joining on the text of both is the safe fallback
        row_ids, users = pc.cast(row_ids, pa.string()), pc.cast(users, pa.string())
        user_features = user_features.set_column(
            user_features.column_names.index("user"), "user", users
        )
    rows = pa.table({"user": row_ids, "row": np.arange(len(user_ids), dtype=np.int64)})
    con = duckdb.connect()  # its own connection: it needs none of build_sequences' tables
    con.register("user_rows", rows)
    con.register("user_features", user_features)
    codes = np.zeros((len(user_ids), len(names)), dtype=np.int64)
    cardinalities, values = [], []
    for f, name in enumerate(names):
        column = _sql_name(name)
        vocabulary = con.sql(
            f"""
            SELECT value, (row_number() OVER (ORDER BY value))::BIGINT AS code
            FROM (SELECT DISTINCT {column}::VARCHAR AS value FROM user_features
                  WHERE {column} IS NOT NULL)
            ORDER BY code
            """
        ).to_arrow_table()
        con.register("vocabulary", vocabulary)
        found = con.sql(
            f"""
            SELECT r.row, v.code FROM user_rows r JOIN user_features p USING ("user")
            JOIN vocabulary v ON p.{column}::VARCHAR = v.value
            """
        ).to_arrow_table()
        codes[found.column("row").to_numpy(), f] = found.column("code").to_numpy()
        cardinalities.append(vocabulary.num_rows)
        values.extend(vocabulary.column("value").to_pylist())
        con.unregister("vocabulary")
    con.close()
    return {
        "user_feature_codes": codes,
        "user_feature_names": np.array(names, dtype=str),
        "user_feature_cardinalities": np.array(cardinalities, dtype=np.int64),
        "user_feature_values": np.array(values, dtype=str),
    }


def _sql_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class UserSplit:
    """docs/protocol.md section 2: user rows (into :class:`Sequences`) of each split."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    seed: int


def split_users(n_users: int, seed: int = 42) -> UserSplit:
    """Permute the sorted users with ``default_rng(seed)``; 80% train, 10% valid, the rest test."""
    perm = np.random.default_rng(seed).permutation(n_users)
    n_train, n_valid = int(0.8 * n_users), int(0.1 * n_users)
    return UserSplit(
        train=perm[:n_train],
        valid=perm[n_train : n_train + n_valid],
        test=perm[n_train + n_valid :],
        seed=seed,
    )
