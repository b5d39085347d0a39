"""Top-N over the catalogue: the one ranking path.

The evaluator, ``mirec inspect``, :class:`~mirec.recommender.Recommender` and the HTTP
service all rank through :func:`top_n` (the evaluator through :func:`rank_catalogue`, which
also hands the diagnostics each interest's own list), so their lists cannot drift apart. A
user's list is the N best items by the model's own aggregation of their interests
(docs/protocol.md section 4: by default ``max_k <v_u^k, e_i>``), or with a diversity lambda
ComiRec's greedy diversity-controllable merge (:mod:`mirec.retrieval.diversity_greedy`), or
with a quota alpha each interest's share of the list (:mod:`mirec.retrieval.quota`).
Items can be blocked per user (the history, or items a caller never wants back); a blocked
item scores -inf and is returned only when nothing else is left, which callers that want
short lists drop.

The catalogue is scored chunk by chunk with a running merge
(:mod:`mirec.core.chunked_top`): memory is O(users x (chunk + N)), and a catalogue
of one chunk is ranked exactly as by one ``torch.topk``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

import torch

from mirec.aggregators.max_score import ScoreTiles, max_over_interests, per_interest_scores
from mirec.core.chunked_top import (
    RunningTop,
    blocked_at,
    blocked_columns,
    chunks,
    item_chunk,
)
from mirec.core.contracts import Extracted
from mirec.retrieval.adaptive_k import routed_shares
from mirec.retrieval.diversity_greedy import diverse_retrieve
from mirec.retrieval.quota import quota_merge, quota_slots

if TYPE_CHECKING:
    from mirec.core.contracts import Retriever

SCORE_BUDGET = 1 << 25
"""Scores held at once: users x interests x items of one chunk."""


def users_per_chunk(num_interests: int, n_items: int) -> int:
    """How many users to rank at once within :data:`SCORE_BUDGET`, for one chunk of items
    (:func:`~mirec.core.chunked_top.item_chunk`). Every caller chunks the same way, so
    a list does not depend on who asked for it."""
    return max(1, SCORE_BUDGET // (num_interests * item_chunk(n_items)))


def rank(
    scores: torch.Tensor, n: int, blocked: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) scores, column j for item index j + 1 -> the (B, n) best item indices and
    their scores, best first; ``blocked`` (B, N) items score -inf."""
    if blocked is not None:
        scores = scores.masked_fill(blocked, float("-inf"))
    best = torch.topk(scores, n, dim=1)
    return best.indices + 1, best.values


class Ranked(NamedTuple):
    """What :func:`rank_catalogue` returns."""

    top: torch.Tensor
    """(B, n) item indices (1..N), best first."""
    scores: torch.Tensor
    """(B, n) their scores (the diversity and quota merges: each pick's max-over-interests
    score, or under the diversity merge a mixture's own score)."""
    interest_top: torch.Tensor | None = None
    """(B, K, m) each interest's own top-m (:func:`interest_top_n`), when asked."""


def top_n(
    model: Retriever,
    extracted: Extracted,
    items: torch.Tensor,
    n: int,
    *,
    blocked: torch.Tensor | None = None,
    item_category: torch.Tensor | None = None,
    diversity_lambda: float | None = None,
    quota_alpha: float | None = None,
    quota_half_life: float | None = None,
    histories: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's top-``n`` items for the users of ``extracted``: (B, n) item indices and
    scores. ``items`` (N, d) are the model's item vectors; ``blocked`` a (B, N) bool mask or
    (B, M) item indices (0: padding). With ``diversity_lambda`` (and ``item_category``,
    (N + 1,) codes by item index) the list is ComiRec's greedy pick and the scores are each
    pick's max-over-interests score (a mixture of softmaxes: its own score, which then also
    picks). With ``quota_alpha`` (and the (B, L) ``histories`` the interests were extracted
    from, whose routing sets the quotas, its recent items weighted by ``quota_half_life``)
    each interest fills its quota of the list (:mod:`mirec.retrieval.quota`), ordered by
    the max-over-interests score."""
    ranked = rank_catalogue(
        model,
        extracted,
        items,
        n,
        blocked=blocked,
        item_category=item_category,
        diversity_lambda=diversity_lambda,
        quota_alpha=quota_alpha,
        quota_half_life=quota_half_life,
        histories=histories,
    )
    return ranked.top, ranked.scores


def rank_catalogue(
    model: Retriever,
    extracted: Extracted,
    items: torch.Tensor,
    n: int,
    *,
    blocked: torch.Tensor | None = None,
    item_category: torch.Tensor | None = None,
    diversity_lambda: float | None = None,
    quota_alpha: float | None = None,
    quota_half_life: float | None = None,
    histories: torch.Tensor | None = None,
    interest_n: int = 0,
    interest_blocked: torch.Tensor | None = None,
    tiles: ScoreTiles | None = None,
) -> Ranked:
    """:func:`top_n`, and with ``interest_n`` > 0 also each interest's own top-``interest_n``
    with ``interest_blocked`` left out (:func:`interest_top_n`). When the model ranks by the
    max over its own interests, both come from one scoring of the catalogue. ``tiles``
    holds the score storage across calls (a caller ranking batch after batch keeps one)."""
    tiles = ScoreTiles() if tiles is None else tiles
    if quota_alpha is not None:
        if diversity_lambda is not None:
            raise ValueError("quota_alpha and diversity_lambda are two merges: choose one")
        if histories is None:
            raise ValueError("quota_alpha needs the histories whose routing sets the quotas")
        quota = (quota_alpha, quota_half_life)
        top, scores = _quota_top(model, extracted, items, n, quota, histories, blocked, tiles)
        lists = _interest_lists(extracted, items, interest_n, interest_blocked, tiles)
        return Ranked(top, scores, lists)
    if diversity_lambda is not None:
        if item_category is None:
            raise ValueError("diversity_lambda needs item categories")
        query = model.retrieval_interests(extracted)
        merged = None
        if query.log_partition is not None:  # a mixture of softmaxes scores, and picks too

            def merged(part: torch.Tensor) -> torch.Tensor:
                return model.score(extracted, part)

        rows, picked = diverse_retrieve(
            query.interests,
            items,
            item_category[1:],
            n,
            diversity_lambda,
            query.active,
            blocked,
            merged,
            tiles,
        )
        scores = picked
        if merged is None:
            scores = per_interest_scores(query.interests, items[rows], query.active).amax(1)
        if blocked is not None:
            scores = scores.masked_fill(blocked_at(blocked, rows), float("-inf"))
        lists = _interest_lists(extracted, items, interest_n, interest_blocked, tiles)
        return Ranked(rows + 1, scores, lists)
    max_scored = model.scorer is max_over_interests
    query = model.retrieval_interests(extracted)
    layout = chunks(items.shape[0])
    whole = len(layout) == 1
    best = RunningTop(n, whole)
    # each interest's own lists come from the same products when the model's score is the
    # max over the extracted interests themselves (no fused vector)
    shared = interest_n > 0 and max_scored and query is extracted
    own = RunningTop(interest_n, whole) if shared else None
    for lo, hi in layout:
        part = items[lo:hi]
        if own is not None:
            per_interest = tiles.per_interest(query.interests, part)
            with _blocked_for_now(per_interest, interest_blocked, lo, hi) as alone:
                own.add(alone, lo)
            scores = tiles.best(per_interest, query.active)
        elif max_scored:
            scores = tiles.max_scores(query.interests, part, query.active)
        else:
            scores = model.score(extracted, part)
        best.add(_without(scores, blocked, lo, hi), lo)
    if own is not None:
        interest_top = own.columns + 1
    else:
        interest_top = _interest_lists(extracted, items, interest_n, interest_blocked, tiles)
    return Ranked(best.columns + 1, best.values, interest_top)


def _quota_top(
    model: Retriever,
    extracted: Extracted,
    items: torch.Tensor,
    n: int,
    quota: tuple[float, float | None],
    histories: torch.Tensor,
    blocked: torch.Tensor | None,
    tiles: ScoreTiles,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The quota merge's (B, n) item indices and max-over-interests scores, best first:
    each retrieval interest's own top-n (blocked items last, at -inf) filled into its
    quota of the n slots (``quota``: alpha and the shares' half-life). A model that
    retrieves with one fused vector (a representation-level aggregator) has one interest,
    which gets every slot."""
    query = model.retrieval_interests(extracted)
    own = _interest_best(query.interests.to(items.dtype), items, n, blocked, tiles)
    values = own.values
    if query.active is not None:
        values = values.masked_fill(~query.active.unsqueeze(-1), float("-inf"))
    k = query.interests.shape[1]
    alpha, half_life = quota
    shares = routed_shares(extracted, histories, half_life)
    if shares.shape[1] != k:
        shares = torch.ones(shares.shape[0], k, device=shares.device)
    slots = quota_slots(shares, n, alpha, query.active)
    picked = quota_merge(own.columns, values, slots, n)
    scores = per_interest_scores(query.interests, items[picked], query.active).amax(1)
    if blocked is not None:
        scores = scores.masked_fill(blocked_at(blocked, picked), float("-inf"))
    order = scores.argsort(dim=1, descending=True, stable=True)
    return picked.gather(1, order) + 1, scores.gather(1, order)


def _interest_lists(
    extracted: Extracted,
    items: torch.Tensor,
    n: int,
    blocked: torch.Tensor | None,
    tiles: ScoreTiles,
) -> torch.Tensor | None:
    """:func:`interest_top_n` when asked for (``n`` > 0), else None."""
    return interest_top_n(extracted, items, n, blocked, tiles) if n else None


def _without(scores: torch.Tensor, blocked: torch.Tensor | None, lo: int, hi: int) -> torch.Tensor:
    """Scores of items ``lo + 1 .. hi`` ((B, C), or (B, K, C) per interest), with the
    blocked ones set to -inf in place."""
    mask = blocked_columns(blocked, lo, hi)
    if mask is None:
        return scores
    return scores.masked_fill_(mask.unsqueeze(1) if scores.dim() == 3 else mask, float("-inf"))


@contextmanager
def _blocked_for_now(
    scores: torch.Tensor, blocked: torch.Tensor | None, lo: int, hi: int
) -> Iterator[torch.Tensor]:
    """(B, K, C) scores of items ``lo + 1 .. hi`` with the blocked ones at -inf for the
    duration of the block. Blocked item indices touch only their own cells, which get their
    scores back afterwards (no copy of the scores); a mask makes a masked copy."""
    if blocked is None or blocked.dtype == torch.bool:
        mask = blocked_columns(blocked, lo, hi)
        yield scores if mask is None else scores.masked_fill(mask.unsqueeze(1), float("-inf"))
        return
    inside = (blocked > lo) & (blocked <= hi)
    rows, columns = inside.nonzero()[:, 0], blocked[inside] - 1 - lo
    saved = scores[rows, :, columns]
    scores[rows, :, columns] = float("-inf")
    try:
        yield scores
    finally:
        scores[rows, :, columns] = saved


def interest_top_n(
    extracted: Extracted,
    items: torch.Tensor,
    n: int,
    blocked: torch.Tensor | None = None,
    tiles: ScoreTiles | None = None,
) -> torch.Tensor:
    """(B, K, n) each interest's own top-``n`` item indices (1..N), the catalogue ranked by
    ``<v_u^k, e_i>`` alone, best first: what ``mirec inspect`` lists under an interest.
    ``blocked`` ((B, N) mask or (B, M) item indices) items score -inf for every interest of
    the user."""
    tiles = ScoreTiles() if tiles is None else tiles
    interests = extracted.interests.to(items.dtype)
    return _interest_best(interests, items, n, blocked, tiles).columns + 1


def _interest_best(
    interests: torch.Tensor,
    items: torch.Tensor,
    n: int,
    blocked: torch.Tensor | None,
    tiles: ScoreTiles,
) -> RunningTop:
    """Each of the (B, K, d) interests' own top-``n`` over the catalogue, its columns
    (0-based) and scores, blocked items at -inf."""
    layout = chunks(items.shape[0])
    best = RunningTop(n, whole=len(layout) == 1)
    for lo, hi in layout:
        best.add(_without(tiles.per_interest(interests, items[lo:hi]), blocked, lo, hi), lo)
    return best


def best_interest(extracted: Extracted, items: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """(B, n) the user's (active) interest that scores each listed item highest: which of
    the K interests an item was found for. ``top`` holds item indices (1..N). Under a
    mixture of softmaxes (``extracted.log_partition`` set) it is the interest that gives
    the item the most probability."""
    per_interest = per_interest_scores(extracted.interests, items[top - 1], extracted.active)
    if extracted.log_partition is not None:
        per_interest = per_interest - extracted.log_partition.unsqueeze(-1).to(items.device)
    return per_interest.argmax(1)
