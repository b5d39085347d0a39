"""PROTOCOL.md sections 1-2: from a raw log to filtered, re-indexed, split user sequences.

Sequences are stored flat (CSR): user ``u``'s items are ``items[offsets[u]:offsets[u + 1]]``,
item indices ``1..n_items`` (0 is padding). Users are in the protocol's order: raw ids
sorted ascending, numerically where they are integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from mirec.data.log import RawLog
from mirec.errors import DataError

MIN_ITEM_INTERACTIONS = 5
MIN_USER_INTERACTIONS = 5


@dataclass(frozen=True)
class Sequences:
    """Every kept user's chronological item sequence, plus what is known about the items."""

    user_ids: np.ndarray
    """Raw user ids, sorted ascending (int64 or str)."""
    offsets: np.ndarray
    """int64, ``n_users + 1``: user u's items are ``items[offsets[u]:offsets[u + 1]]``."""
    items: np.ndarray
    """int64 item indices in 1..n_items."""
    item_ids: np.ndarray
    """Raw id of item index i at position i - 1 (int64 or str)."""
    item_category_offsets: np.ndarray | None = None
    """CSR over item index 1..n_items: item i's categories are
    ``item_category_codes[item_category_offsets[i - 1]:item_category_offsets[i]]``."""
    item_category_codes: np.ndarray | None = None
    category_names: np.ndarray | None = None
    """Name of category code c at position c."""

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


def build_sequences(log: RawLog) -> Sequences:
    """Filter (items < 5 interactions, then users < 5), re-index and order, per PROTOCOL.md 1.

    A user's items are ordered by timestamp; ties (and logs without timestamps) keep file
    order. Items are re-indexed 1..N in ascending raw-id order.
    """
    table = log.interactions.append_column(
        "pos", pa.array(np.arange(log.interactions.num_rows, dtype=np.int64))
    )
    con = duckdb.connect()
    con.register("log", table)
    con.execute(
        f"""
        CREATE TEMP TABLE kept AS
        WITH frequent_items AS (SELECT item FROM log GROUP BY item
                                HAVING count(*) >= {MIN_ITEM_INTERACTIONS}),
             by_item AS (SELECT * FROM log SEMI JOIN frequent_items USING (item)),
             active_users AS (SELECT "user" FROM by_item GROUP BY "user"
                              HAVING count(*) >= {MIN_USER_INTERACTIONS})
        SELECT * FROM by_item SEMI JOIN active_users USING ("user")
        """
    )
    con.execute(
        "CREATE TEMP TABLE item_index AS SELECT item, "
        "(row_number() OVER (ORDER BY item))::BIGINT AS idx FROM (SELECT DISTINCT item FROM kept)"
    )
    ordered = con.sql(
        """
        SELECT kept."user", item_index.idx FROM kept JOIN item_index USING (item)
        ORDER BY kept."user", kept.timestamp NULLS FIRST, kept.pos
        """
    ).to_arrow_table()
    if ordered.num_rows == 0:
        sources = ", ".join(str(s) for s in log.sources) or "the interaction log"
        raise DataError(
            f"{sources}: no user has {MIN_USER_INTERACTIONS} or more interactions with items "
            f"seen {MIN_ITEM_INTERACTIONS} or more times; nothing is left to train on"
        )
    users = ordered.column("user").to_numpy(zero_copy_only=False)
    user_ids, starts = np.unique(users, return_index=True)
    item_ids = (
        con.sql("SELECT item FROM item_index ORDER BY idx")
        .to_arrow_table()
        .column("item")
        .to_numpy(zero_copy_only=False)
    )
    categories = _item_categories(con, log.item_categories)
    return Sequences(
        user_ids=user_ids,
        offsets=np.append(starts, len(users)).astype(np.int64),
        items=ordered.column("idx").to_numpy().astype(np.int64),
        item_ids=item_ids,
        **categories,
    )


def _item_categories(
    con: duckdb.DuckDBPyConnection, item_categories: pa.Table | None
) -> dict[str, np.ndarray]:
    """Categories of the kept items as CSR over item index, category codes by name order."""
    if item_categories is None or item_categories.num_rows == 0:
        return {}
    con.register("item_categories", item_categories)
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
    n_items = con.execute("SELECT count(*) FROM item_index").fetchone()[0]
    counts = np.bincount(rows.column("idx").to_numpy(), minlength=n_items + 1)[1:]
    return {
        "item_category_offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "item_category_codes": rows.column("code").to_numpy().astype(np.int64),
        "category_names": names.column("category").to_numpy(zero_copy_only=False),
    }


@dataclass(frozen=True)
class UserSplit:
    """PROTOCOL.md section 2: user rows (into :class:`Sequences`) of each split."""

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
