"""Alibaba's Taobao ``UserBehavior.csv``."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from mirec.data.log import RawLog
from mirec.data.readers._columns import (
    _distinct_pairs,
    _finite_column,
    _int_column,
    _require_nonempty,
)
from mirec.data.readers._files import _check_file
from mirec.data.readers._scan import _F, _scan


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
