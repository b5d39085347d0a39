"""S3-Rec style sequence files (``user item1 item2 ...``) and their item attribute JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mirec.data.log import RawLog
from mirec.data.readers._columns import _distinct_pairs, _Ids, _int_mask, _typed_ids
from mirec.data.readers._files import _check_file, _is_file, _os_errors
from mirec.data.readers._scan import _scan_lines
from mirec.errors import DataError


@_os_errors
def read_sequences(
    path: str | Path, attributes: str | Path | None = None, *, id_type: str | None = None
) -> RawLog:
    """Read a sequence file: one ``user item1 item2 ...`` line per user, in time order.

    Fields are separated by runs of spaces or tabs. Ids are ``int64`` when every user and item
    id is a plain integer, else all strings (``id_type``: see
    :func:`~mirec.data.readers._columns._typed_ids`). ``timestamp`` is null (file order is
    time order). ``attributes`` is a JSON file ``{item: [attribute ids]}`` giving
    ``item_categories``.
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
    user_lines = np.flatnonzero(valid) + 1
    item_lines = line_of_value[is_item] + 1

    def at_line(lines: np.ndarray) -> Callable[[int, str], DataError]:
        return lambda row, message: DataError(f"{path}: line {lines[row]}: {message}")

    user, item = _typed_ids(
        [
            _Ids(user_tokens, "user id (field 1)", at_line(user_lines)),
            _Ids(values.filter(pa.array(is_item)), "item id", at_line(item_lines)),
        ],
        id_type,
    )
    user = pc.take(user, pa.array(np.repeat(np.arange(len(user_tokens)), counts[valid] - 1)))
    interactions = pa.table(
        {"user": user, "item": item, "timestamp": pa.nulls(len(item), pa.float64())}
    )
    if attributes is None:
        return RawLog(interactions, (path,))
    attributes = Path(attributes)
    categories = _read_attributes(attributes, interactions.schema.field("item").type)
    return RawLog(interactions, (path, attributes), categories)


def _attributes_beside(path: Path) -> Path | None:
    candidate = path.with_name(f"{path.stem}_item2attributes.json")
    return candidate if _is_file(candidate) else None


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
        ok = _int_mask(item, padded_ok=False)
        if not pc.all(ok).as_py():
            row = pc.indices_nonzero(pc.invert(ok))[0].as_py()
            raise DataError(
                f"{path}: item {keys[row]!r} is not an integer, but the sequence file's "
                "ids are integers"
            )
        item = pc.cast(item, pa.int64())
    return _distinct_pairs(item, pa.array(values, pa.string()))
