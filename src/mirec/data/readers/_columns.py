"""Validation and conversion of scanned columns: ids, timestamps, category pairs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mirec.data.readers._scan import _Source

_Column = pa.ChunkedArray | pa.Array


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
