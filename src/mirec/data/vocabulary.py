"""Raw ids (as in the source log) to the rows and indices mirec works with, and back.

A vocabulary keeps the ids in their log's type: an integer log's ids are ints, any other
log's are strings. A lookup finds only the id it spells, in that type:

* in an integer log, a text id is that integer written the usual way: ``-?[0-9]+`` in
  ASCII digits, with no leading zero (``"42"`` finds item 42: ids come through JSON, URLs
  and command lines as text); ``"4_2"``, ``" 42"``, ``"+42"``, ``"042"``, and 42 in
  full-width or Arabic-Indic digits are not ids of it (Python's ``int()`` reads them all
  as 42, which answered another user's list), so they are not found;
* in a text log, a text id matches only the same text (never a prefix of it: numpy's
  fixed-width strings cut a longer key to the catalogue's widest id), and an int ``42``
  is the text ``"42"``;
* a bool, a float or ``None`` is never an id (not found);
* an id holding a control character (C0, DEL, C1) or a lone UTF-16 surrogate is refused,
  a :class:`~mirec.errors.ConfigError`: no log holds one (readers refuse them), and a
  surrogate cannot even be written back as UTF-8 (an HTTP answer listing it failed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from mirec.errors import ConfigError, UnknownIdError

ON_UNKNOWN = ("ignore", "error")
"""What to do with ids a vocabulary does not know: drop them (and report them), or refuse."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INTEGER_ID = re.compile(r"0|-?[1-9][0-9]*", re.ASCII)
"""How an integer id is written as text (with ``fullmatch``): ASCII digits, an optional
minus, no leading zero (``"007"`` is not 7, ``"-0"`` not 0; a log read with
``id_type=int`` stores 7, which ``"7"`` finds), so each id has one spelling."""
INTEGER_ID_CHARS = len(str(INT64_MIN))
"""The longest text an integer id of a log can be: a 64-bit integer has 19 digits and a
sign. A longer text is no id, and is never given to ``int()`` (which refuses more than
4,300 digits with a ValueError: a 5,000-digit user id in a URL was an HTTP 503)."""
FORBIDDEN_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""Control characters (C0, DEL, C1) and lone surrogates: never part of an id."""


def check_id_text(value: str, kind: str) -> None:
    """A ConfigError when ``value`` holds a control character or a lone surrogate."""
    bad = FORBIDDEN_CHARACTER.search(value)
    if bad is not None:
        char = ord(bad.group())
        what = "a lone UTF-16 surrogate" if 0xD800 <= char <= 0xDFFF else "a control character"
        raise ConfigError(f"{kind} id {_shown(value)} holds {what} (U+{char:04X}); ids never do")


def check_on_unknown(on_unknown: str) -> None:
    """A ConfigError unless ``on_unknown`` is one of :data:`ON_UNKNOWN`."""
    if on_unknown not in ON_UNKNOWN:
        raise ConfigError(f"on_unknown={on_unknown!r}: expected one of {', '.join(ON_UNKNOWN)}")


def _shown(value: str) -> str:
    text = ascii(value)  # escapes surrogates and controls: the message is printable UTF-8
    return text if len(text) <= 60 else text[:57] + "..."


def _quoted(value: Any) -> str:
    """``repr(value)`` for a message, a long one cut (a 5,000-digit id need not be quoted
    whole, and ``repr`` of an int over 4,300 digits is a ValueError)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"(an integer of {value.bit_length():,} bits)"
    shown = repr(value)
    return shown if len(shown) <= 60 else f"{shown[:57]}... ({len(shown):,} characters)"


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
        # the widest id a fixed-width string array holds (numpy's <U{n}): keys are cast to it
        self._width = ids.dtype.itemsize // 4 if ids.dtype.kind == "U" else None

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, values: Iterable[Any]) -> np.ndarray:
        """The row of each value, -1 where it is not an id of this vocabulary."""
        keys = [self._key(v) for v in values]
        out = np.full(len(keys), -1, dtype=np.int64)
        known = [i for i, key in enumerate(keys) if key is not None]
        if self._width is not None:  # a longer key would be cut to a known id, not missed
            known = [i for i in known if len(keys[i]) <= self._width]
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
            if self.integer and isinstance(value, str) and INTEGER_ID.fullmatch(value) is None:
                hint = (" (its ids are integers, written in ASCII digits, with no plus "
                        "sign, space, underscore or leading zero)")  # fmt: skip
            elif self.kind == "user":
                hint = (" (users with fewer than 5 interactions are filtered out, "
                        "docs/protocol.md section 1)")  # fmt: skip
            shown = _quoted(value)
            raise UnknownIdError(f"{self.kind} {shown} is not in {where}{hint}")
        return int(row)

    def known_rows(self, values: list, on_unknown: str = "ignore") -> tuple[np.ndarray, list]:
        """The rows of the known ``values`` in their order, and the unknown values (which
        ``on_unknown="error"`` refuses instead)."""
        check_on_unknown(on_unknown)
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
        """The id ``value`` spells in this vocabulary's type, None when it spells none."""
        if isinstance(value, bool | float) or value is None:
            return None
        if isinstance(value, str):
            check_id_text(value, self.kind)
        if self.integer:
            if isinstance(value, str):
                if len(value) > INTEGER_ID_CHARS or INTEGER_ID.fullmatch(value) is None:
                    return None
                value = int(value)
            if isinstance(value, int | np.integer) and INT64_MIN <= value <= INT64_MAX:
                return int(value)
            return None
        if isinstance(value, str):
            return str(value)  # np.str_ too
        if isinstance(value, int | np.integer):
            try:
                return str(int(value))
            except ValueError:  # over 4,300 digits: longer than any id a log holds
                return None
        return None
