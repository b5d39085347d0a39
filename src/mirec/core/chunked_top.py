"""Top-n over a catalogue scored one chunk of items at a time, with a running merge.

Ranking the whole catalogue at once holds users x interests x items scores: at 2M items
that leaves room for a handful of users per pass. Here the items come in chunks of at most
:data:`ITEM_CHUNK`; each chunk's best n are merged into the best n so far, so memory is
O(rows x (chunk + n)) whatever the catalogue.

Ties. ``torch.topk`` returns equal scores in no documented order (on CPU a heap's order),
which cannot be reproduced across chunks. A catalogue of at most :data:`ITEM_CHUNK` items
is therefore ranked in one piece, with exactly ``torch.topk``'s result (every published
figure was measured on such catalogues). A larger one is ranked by (score descending, item
index ascending) exactly: each chunk's cut is repaired when ``topk`` chose among items
tied at it, and the merge sorts by that order.

Speed. ``torch.topk`` over a row costs a few nanoseconds an item on CPU, as much as a
third of the product that scored it. :func:`preselect` first takes the max of each group
of columns (one cheap pass), keeps the groups holding the k best maxima, which hold the k
best items, and runs ``topk`` over those alone. Where the k + 1 best values it finds are
distinct the answer is unique, so it is ``torch.topk``'s own; rows with ties (or NaN) are
ranked over the whole row as above.

``blocked`` items, wherever a function takes them, are either a (B, N) bool mask or (B, M)
item indices 1..N (0 is padding and blocks nothing); the second never builds a (B, N) mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

ITEM_CHUNK = 1 << 16
"""Items scored at once. A catalogue of this size or smaller (every dataset of
docs/results.md) is ranked in one piece."""


def item_chunk(n_items: int) -> int:
    """How many items to score at once for a catalogue of ``n_items``."""
    return min(n_items, ITEM_CHUNK)


def blocked_items(indices: torch.Tensor, n_items: int) -> torch.Tensor:
    """(B, M) item indices (1..N; 0 is padding and blocks nothing) -> (B, N) bool mask."""
    mask = torch.zeros(indices.shape[0], n_items + 1, dtype=torch.bool, device=indices.device)
    mask.scatter_(1, indices, True)
    return mask[:, 1:]


def blocked_columns(blocked: torch.Tensor | None, lo: int, hi: int) -> torch.Tensor | None:
    """``blocked`` (a (B, N) mask or (B, M) item indices) -> the (B, hi - lo) mask of items
    ``lo + 1 .. hi`` (columns ``lo:hi``)."""
    if blocked is None or blocked.dtype == torch.bool:
        return None if blocked is None else blocked[:, lo:hi]
    inside = (blocked > lo) & (blocked <= hi)
    return blocked_items(torch.where(inside, blocked - lo, 0), hi - lo)


def blocked_at(blocked: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``blocked`` (a (B, N) mask or (B, M) item indices) -> (B, n) whether each of the
    (B, n) item ``columns`` (0-based) is blocked."""
    if blocked.dtype == torch.bool:
        return blocked.gather(1, columns)
    return ((columns + 1).unsqueeze(2) == blocked.unsqueeze(1)).any(2)


def chunks(n_items: int) -> list[tuple[int, int]]:
    """The (lo, hi) column ranges of the catalogue's chunks, in order."""
    step = item_chunk(n_items)
    return [(lo, min(lo + step, n_items)) for lo in range(0, n_items, step)]


class RunningTop:
    """The ``n`` best columns of the last dimension of scores that arrive in chunks of
    ascending columns: (..., C) scores, ranked independently along every leading index.

    With ``whole`` (the catalogue comes in one chunk) it is one ``torch.topk``, ties in its
    order; else ties go to the lower column (module docstring). ``carried`` values ride
    along with their columns (the diversity merge carries each candidate's max score)."""

    def __init__(self, n: int, whole: bool) -> None:
        self.n, self.whole = n, whole
        self.values: torch.Tensor | None = None
        self.columns: torch.Tensor | None = None
        self.carried: torch.Tensor | None = None

    def add(self, scores: torch.Tensor, lo: int, carried: torch.Tensor | None = None) -> None:
        """Columns ``lo .. lo + C - 1`` of the scores (and of ``carried``, same shape)."""
        if self.whole:
            self.values, self.columns = top_k(scores, self.n, fallback=_topk)
            self.carried = None if carried is None else carried.gather(-1, self.columns)
            return
        values, columns = top_k(scores, min(self.n, scores.shape[-1]), fallback=exact_top)
        kept = None if carried is None else carried.gather(-1, columns)
        columns = columns + lo
        if self.values is not None:
            values = torch.cat([self.values, values], -1)
            columns = torch.cat([self.columns, columns], -1)
            if kept is not None:
                kept = torch.cat([self.carried, kept], -1)
        order = _score_then_column(values, columns)[..., : self.n]
        self.values, self.columns = values.gather(-1, order), columns.gather(-1, order)
        self.carried = None if kept is None else kept.gather(-1, order)


def _topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    best = torch.topk(scores, k, dim=-1)
    return best.values, best.indices


def top_k(
    scores: torch.Tensor,
    k: int,
    *,
    fallback: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., C) scores -> the (..., k) best values, descending, and their columns: the
    :func:`preselect`ed answer where it is unique (then any exact method gives it), and
    ``fallback`` over the row elsewhere: one ``torch.topk`` (its tie order), or
    :func:`exact_top` (ties to the lower column)."""
    found = preselect(scores, k)
    if found is None:
        return fallback(scores, k)
    values, columns, unique = found
    if not bool(unique.all()):
        tied = ~unique
        values[tied], columns[tied] = fallback(scores[tied], k)
    return values, columns


def preselect(
    scores: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(..., C) scores -> the (..., k) best values, descending, their columns, and (...)
    whether each row's answer is the unique one (its k + 1 best values distinct, no NaN);
    None when the row is too short to gain from groups.

    Columns j, j + g, j + 2g, ... (g = C // G) form group j, for G about sqrt(C / k):
    the k groups with the highest maxima hold every item at least the k-th of those
    maxima, hence the k best items (unless another group ties the k-th maximum, which
    marks the row), and the last C - G g columns are always kept."""
    width = scores.shape[-1]
    size = 1 << max(1, round(math.log2(math.sqrt(width / (k + 1)))))
    groups = width // size
    if groups < 4 * (k + 1):
        return None
    flat = scores.reshape(-1, width)
    best_groups = flat[:, : size * groups].view(-1, size, groups).amax(1).topk(k + 1, dim=1)
    group_tie = best_groups.values[:, k] == best_groups.values[:, k - 1]
    offsets = torch.arange(0, size * groups, groups, device=scores.device)
    columns = (best_groups.indices[:, :k].unsqueeze(2) + offsets).flatten(1)
    if width > size * groups:
        rest = torch.arange(size * groups, width, device=scores.device)
        columns = torch.cat([columns, rest.expand(len(flat), -1)], 1)
    best = flat.gather(1, columns).topk(k + 1, dim=1)
    top = best.values
    unique = ~group_tie & (top[:, 1:] != top[:, :-1]).all(1) & ~top.isnan().any(1)
    lead = scores.shape[:-1]
    return (
        top[:, :k].reshape(*lead, k),
        columns.gather(1, best.indices[:, :k]).reshape(*lead, k),
        unique.reshape(lead),
    )


def exact_top(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., C) scores -> the (..., k) best values and their columns by (score descending,
    column ascending): ``torch.topk``, with the items tied at the cut repaired to the
    lowest columns and the list sorted by that order."""
    width = scores.shape[-1]
    # one more than asked: a row needs repair only when the next item ties the k-th
    best = torch.topk(scores, min(k + 1, width), dim=-1)
    values, columns = best.values[..., :k], best.indices[..., :k]
    if width > k:
        cut = best.values[..., k] == best.values[..., k - 1]
        if bool(cut.any()):
            columns = columns.clone()
            columns[cut] = _lowest_tied(scores[cut], values[cut], columns[cut])
    order = _score_then_column(values, columns)
    return values.gather(-1, order), columns.gather(-1, order)


def _lowest_tied(scores: torch.Tensor, values: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Rows whose k-th best score ties items left out: (r, C) scores and the (r, k) best
    values (descending) and columns of ``torch.topk`` -> the columns with the tied slots
    (the last m of each row) given to the lowest columns holding that score, ascending."""
    k, width = values.shape[-1], scores.shape[-1]
    last = values[:, -1:]
    tied = scores == last
    m = (values == last).sum(1)
    # distinct keys on the tied columns, highest for the lowest column
    key = torch.where(tied, width - torch.arange(width, device=scores.device), 0)
    lowest = key.topk(int(m.max()), dim=-1).indices  # tied columns, ascending
    slot = torch.arange(k, device=scores.device) - (k - m).unsqueeze(1)
    return torch.where(slot >= 0, lowest.gather(1, slot.clamp(0, lowest.shape[1] - 1)), columns)


def _score_then_column(values: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """The order of the last dimension by (value descending, column ascending): a stable
    sort by value over a sort by column."""
    by_column = columns.argsort(dim=-1, stable=True)
    by_value = values.gather(-1, by_column).argsort(dim=-1, descending=True, stable=True)
    return by_column.gather(-1, by_value)
