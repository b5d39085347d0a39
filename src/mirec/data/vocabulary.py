"""Raw ids (as in the source log) to the rows and indices mirec works with, and back.

A vocabulary keeps the ids in their log's type: an integer log's ids are ints, any other
log's are strings. Lookups are lenient about the spelling of the same id, so ids that come
through JSON or a command line as text still match (``"42"`` finds item 42 of an integer
log; ``42`` finds item ``"42"`` of a string log), and strict about anything else: a bool, a
float or ``None`` is never an id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from mirec.errors import ConfigError, UnknownIdError

ON_UNKNOWN = ("ignore", "error")
"""What to do with ids a vocabulary does not know: drop them (and report them), or refuse."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Vocabulary:
    """The ids of one ``kind`` ("item" or "user") in row order: ``ids[row]``."""

    def __init__(self, ids: np.ndarray, kind: str) -> None:
        self.ids = ids
        self.kind = kind
        self.integer = bool(np.issubdtype(ids.dtype, np.integer))
        # a sorted view for binary search; the rows may follow another order (a database's
        # collation of strings), so the search never assumes they are sorted
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, values: Iterable[Any]) -> np.ndarray:
        """The row of each value, -1 where it is not an id of this vocabulary."""
        keys = [self._key(v) for v in values]
        out = np.full(len(keys), -1, dtype=np.int64)
        known = [i for i, key in enumerate(keys) if key is not None]
        if not known:
            return out
        wanted = np.asarray([keys[i] for i in known], dtype=self._sorted.dtype)
        at = np.searchsorted(self._sorted, wanted).clip(max=len(self._sorted) - 1)
        found = self._sorted[at] == wanted
        out[np.asarray(known)[found]] = self._order[at[found]]
        return out

    def row_of(self, value: Any, where: str) -> int:
        """The row of one id; an UnknownIdError saying it is not in ``where`` otherwise."""
        (row,) = self.rows([value])
        if row < 0:
            hint = ""
            if self.kind == "user":
                hint = (" (users with fewer than 5 interactions are filtered out, "
                        "docs/protocol.md section 1)")  # fmt: skip
            raise UnknownIdError(f"{self.kind} {value!r} is not in {where}{hint}")
        return int(row)

    def known_rows(self, values: list, on_unknown: str = "ignore") -> tuple[np.ndarray, list]:
        """The rows of the known ``values`` in their order, and the unknown values (which
        ``on_unknown="error"`` refuses instead)."""
        if on_unknown not in ON_UNKNOWN:
            raise ConfigError(f"on_unknown={on_unknown!r}: expected one of {', '.join(ON_UNKNOWN)}")
        rows = self.rows(values)
        unknown = [value for value, row in zip(values, rows, strict=True) if row < 0]
        if unknown and on_unknown == "error":
            shown = ", ".join(repr(v) for v in unknown[:10])
            raise ConfigError(f"{len(unknown)} {self.kind} id(s) not in the catalogue: {shown}")
        return rows[rows >= 0], unknown

    def id_of(self, row: int) -> int | str:
        """The raw id of ``row`` as a Python value (int or str)."""
        return self.ids[row].item() if self.integer else str(self.ids[row])

    def ids_of(self, rows: np.ndarray) -> list[int | str]:
        """:meth:`id_of` of each of ``rows``, in one step."""
        return self.ids[rows].tolist()

    def _key(self, value: Any) -> int | str | None:
        if isinstance(value, bool | float) or value is None:
            return None
        if self.integer:
            if isinstance(value, str):
                try:
                    value = int(value.strip())
                except ValueError:
                    return None
            if isinstance(value, int | np.integer) and INT64_MIN <= value <= INT64_MAX:
                return int(value)
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, int | np.integer):
            return str(int(value))
        return None
