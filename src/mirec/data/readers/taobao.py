"""Alibaba's Taobao ``UserBehavior.csv``."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from mirec.data.log import RawLog
from mirec.data.readers._columns import (
    _distinct_pairs,
    _finite_column,
    _id_column,
    _require_nonempty,
)
from mirec.data.readers._files import _check_file, _is_dir, _os_errors
from mirec.data.readers._scan import _F, _scan


@_os_errors
def read_taobao(path: str | Path, *, id_type: str | None = None) -> RawLog:
    """Read Alibaba's Taobao ``UserBehavior.csv`` (or the folder holding it).

    No header; ``user,item,category,behavior,unix_ts``. ``behavior`` (pv/cart/fav/buy) is
    kept; ``item_categories`` lists the distinct (item, category) pairs. Ids are integers
    (a line that holds another id is an error) unless ``id_type="str"``.
    """
    path = Path(path)
    if _is_dir(path):
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
    item = _id_column(table, "item", src, id_type)
    for role in ("category", "behavior"):
        _require_nonempty(table.column(role), role, src)
    interactions = pa.table(
        {
            "user": _id_column(table, "user", src, id_type),
            "item": item,
            "timestamp": _finite_column(table, "timestamp", src),
            "behavior": table.column("behavior"),
        }
    )
    categories = _distinct_pairs(item, table.column("category"))
    return RawLog(interactions, (path,), categories)
