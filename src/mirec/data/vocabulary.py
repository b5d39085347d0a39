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

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Vocabulary:
    """The ids of one kind (items or users) in row order: ``ids[row]``."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
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

    def id_of(self, row: int) -> int | str:
        """The raw id of ``row`` as a Python value (int or str)."""
        return self.ids[row].item() if self.integer else str(self.ids[row])

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
