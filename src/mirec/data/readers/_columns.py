"""Validation and conversion of scanned columns: ids, timestamps, category pairs."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mirec.data.readers._scan import _Source
from mirec.errors import DataError

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


def _int_column(table: pa.Table, role: str, src: _Source, hint: str = "") -> pa.ChunkedArray:
    """An integer column (written in decimal) as int64; the first empty or non-integer value
    names its line (``hint`` added to the latter)."""
    values = table.column(role)
    _require_nonempty(values, role, src)
    ints = _decimal_ints(values)
    if ints is None:
        row = _first_non_int(values, padded_ok=True)
        raise src.fail(row, f"{src.label(role)} {_not_int(values[row].as_py())}{hint}")
    return ints


def _id_column(table: pa.Table, role: str, src: _Source, id_type: str | None) -> pa.ChunkedArray:
    """A user or item id column of a format whose ids are integers (MovieLens, Taobao):
    int64, or with ``id_type="str"`` the ids as written (trimmed)."""
    if id_type == "str":
        values = table.column(role)
        _require_nonempty(values, role, src)
        values = pc.cast(values, pa.string())
        _check_id_characters(values, src.label(role), src.fail)
        return values
    return _int_column(table, role, src, hint=f"; {_STR_HINT}")


_STR_HINT = "set id_type=str (--id-type str) to read every id as text"

_CANONICAL = r"^(0|-?[1-9][0-9]{0,18})$"
"""An integer as a program writes it: no sign but a minus, no leading zero, at most 19
digits (int64 holds 18-digit numbers and some of 19)."""
_DECIMAL = r"^-?[0-9]+$"
_INT64_MAX = 2**63 - 1


def _decimal_ints(values: _Column) -> _Column | None:
    """``values`` as int64 when every one is a decimal integer that fits (leading zeros
    allowed), else None. Arrow's cast alone would also take hexadecimal ``0x1f``."""
    try:
        ints = pc.cast(values, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    hexadecimal = pc.or_(pc.starts_with(values, "0x"), pc.starts_with(values, "0X"))
    return None if pc.any(hexadecimal).as_py() else ints


def _int_mask(values: _Column, *, padded_ok: bool) -> _Column:
    """Which values are integers that fit in int64: canonical ones, or (``padded_ok``) any
    decimal digits with an optional minus (error path and mixed columns only)."""
    pattern = _DECIMAL if padded_ok else _CANONICAL
    ok = pc.fill_null(pc.match_substring_regex(values, pattern), False)
    negative = pc.starts_with(values, "-")
    digits = pc.utf8_ltrim(pc.utf8_ltrim(values, "-"), "0")
    size = pc.utf8_length(digits)
    limit = pc.if_else(negative, str(_INT64_MAX + 1), str(_INT64_MAX))
    too_big = pc.or_(pc.greater(size, 19), pc.and_(pc.equal(size, 19), pc.greater(digits, limit)))
    return pc.and_(ok, pc.invert(too_big))


def _first_non_int(values: _Column, *, padded_ok: bool) -> int:
    """Row of the first value that is not an integer id (error path)."""
    bad = pc.invert(_int_mask(values, padded_ok=padded_ok))
    if pc.any(bad).as_py():
        return _first_true(bad)
    return _first_failure(values, lambda v: pc.cast(v, pa.int64()))  # not expected


def _not_int(value: object) -> str:
    """Why ``value`` is not an integer id, for a message."""
    text = str(value)
    if re.fullmatch(r"-?[0-9]+", text):
        if len(text.lstrip("-")) > 1 and text.lstrip("-").startswith("0"):
            return f"has a leading zero: {_shown(text)}"
        return f"is too large for a 64-bit integer: {_shown(text)}"
    if "\0" in text:
        return f"contains a NUL byte: {_shown(text)}"
    return f"is not an integer: {_shown(text)}"


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


CONTROL_REGEX = r"[\x{00}-\x{1f}\x{7f}-\x{9f}]"
"""A control character (C0, DEL, C1), in RE2's syntax (Arrow's and DuckDB's regexes): no
id holds one. The byte check of a text file refuses most C0 bytes, but not a tab, vertical
tab or form feed inside a quoted field, nor C1 controls (two bytes in UTF-8); a Parquet
string may hold anything. numpy's fixed-width strings drop trailing NULs, so ``it5\\0``
and ``it5`` became one item; ``it5\\x07`` printed as ``it5``."""


def control_message(label: str, value: str) -> str:
    """Why ``value``, an id holding a control character, is refused."""
    char = next(c for c in value if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F)
    code = f"U+{ord(char):04X}"
    return f"{label} holds a control character ({code}), which no id does: {_shown(value)}"


def _check_id_characters(
    values: _Column, label: str, fail: Callable[[int, str], DataError]
) -> None:
    """A DataError at the first text id of ``values`` holding a control character."""
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return
    bad = pc.match_substring_regex(values, CONTROL_REGEX)
    if pc.any(bad).as_py():
        row = _first_true(bad)
        raise fail(row, control_message(label, values[row].as_py()))


@dataclass(frozen=True)
class _Ids:
    """One id column of a format whose ids may be integers or text (sequences, interactions):
    its values as strings, its name for messages, and how a row names its line."""

    values: _Column
    label: str
    fail: Callable[[int, str], DataError]


def _typed_ids(columns: Sequence[_Ids], id_type: str | None) -> list[_Column]:
    """The id columns as int64 or as strings, all of one type.

    ``id_type="int"``: every id must be a decimal integer that fits in int64 (the first one
    that is not is an error naming its line); ``"str"``: every id as written. ``None``: int64
    when every id of every column is an integer written the usual way (no leading zero, so
    "007" and "7" are never merged), else strings; but a column whose ids are mostly such
    integers, yet not all, is an error naming the first line that is not: a repeated header,
    a 20-digit id or a stray word there would otherwise turn every id into text, silently
    reordering users and changing the split.

    A text id holding a control character is an error naming its line, whatever
    ``id_type``.
    """
    for c in columns:
        _check_id_characters(c.values, c.label, c.fail)
    if id_type == "str":
        return [pc.cast(c.values, pa.string()) for c in columns]
    if id_type == "int":
        out = []
        for c in columns:
            ints = _decimal_ints(c.values)
            if ints is None:
                row = _first_non_int(c.values, padded_ok=True)
                value = c.values[row].as_py()
                raise c.fail(row, not_int_message(c.label, value))
            out.append(ints)
        return out
    ints = [_auto_ints(c) for c in columns]
    if all(i is not None for i in ints):
        return ints  # type: ignore[return-value]
    return [pc.cast(c.values, pa.string()) for c in columns]


def _auto_ints(column: _Ids) -> _Column | None:
    """The column as int64 when every id is a canonical integer, None when most are not, and
    an error at the first odd line when most are but not all."""
    values = column.values
    ints = _decimal_ints(values)
    if ints is not None:
        padded = pc.or_(
            pc.and_(pc.starts_with(values, "0"), pc.greater(pc.utf8_length(values), 1)),
            pc.starts_with(values, "-0"),
        )
        if not pc.any(padded).as_py():
            return ints
    ok = _int_mask(values, padded_ok=False)
    n_ints, n = pc.sum(ok).as_py() or 0, len(values)
    if 2 * n_ints <= n:
        return None
    row = _first_non_int(values, padded_ok=False)
    raise column.fail(row, mostly_ints_message(column.label, values[row].as_py(), n_ints, n))


def not_int_message(label: str, value: object) -> str:
    """Why ``value`` of a column read with ``id_type=int`` is refused."""
    return f"{label} {_not_int(value)} (id_type=int)"


def mostly_ints_message(label: str, value: object, n_ints: int, n: int) -> str:
    """Why ``value`` is refused in a column whose ids are mostly (``n_ints`` of ``n``),
    but not all, integers."""
    return (
        f"{label} {_not_int(value)}, though {n_ints:,} of its {n:,} ids are integers: "
        f"correct the line, or {_STR_HINT}"
    )


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
