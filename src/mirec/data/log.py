"""The raw interaction log every reader returns, before any filtering."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa


@dataclass(frozen=True)
class RawLog:
    """An interaction log as read from disk, in file order.

    ``interactions`` has the columns ``user`` and ``item`` (both ``int64``, or both ``string``
    when a file's ids are not all integers), ``timestamp`` (``float64``, null when the format
    has none; then file order is time order) and, for logs that have it, ``behavior``
    (``string``: Taobao's pv/cart/fav/buy). Its row order is the file order, which breaks
    timestamp ties (docs/protocol.md section 1).

    ``item_categories`` (columns ``item``, ``category``: ``string``) lists each item's
    categories, genres or attribute ids, one row per (item, category); ``item_titles``
    (``item``, ``title``) names items where the dataset does. Their ``item`` column has the
    same type as ``interactions.item``.

    ``user_features`` holds what the dataset says about its users (MovieLens's age group,
    gender, occupation, zip-code region), one row per user: the column ``user`` (same type
    as ``interactions.user``, each user at most once) and one ``string`` column per
    categorical feature, null where a value is unknown. MIND (Li et al., CIKM 2019,
    section 4.3) feeds these user-profile embeddings to its interest towers.
    """

    interactions: pa.Table
    sources: tuple[Path, ...]
    item_categories: pa.Table | None = None
    item_titles: pa.Table | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    """Rows dropped on purpose by a documented rule, by reason (reported, never silent)."""
    user_features: pa.Table | None = None
