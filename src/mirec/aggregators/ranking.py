"""Top-N over the catalogue: the one ranking path.

The evaluator, ``mirec inspect``, :class:`~mirec.recommender.Recommender` and the HTTP
service all rank through :func:`top_n`, so their lists cannot drift apart. A user's list
is the N best items by the model's own aggregation of their interests (PROTOCOL.md
section 4: by default ``max_k <v_u^k, e_i>``), or with a diversity lambda ComiRec's greedy
diversity-controllable merge (:mod:`mirec.aggregators.diversity_greedy`). Items can be
blocked per user (the history, or items a caller never wants back); a blocked item scores
-inf and is returned only when nothing else is left, which callers that want short lists
drop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mirec.aggregators.diversity_greedy import diverse_retrieve
from mirec.aggregators.max_score import per_interest_scores
from mirec.core.contracts import Extracted

if TYPE_CHECKING:
    from mirec.core.contracts import Retriever

SCORE_BUDGET = 1 << 25
"""Scores held at once: users x interests x items."""


def users_per_chunk(num_interests: int, n_items: int) -> int:
    """How many users to rank at once within :data:`SCORE_BUDGET`. Every caller chunks the
    same way, so a list does not depend on who asked for it."""
    return max(1, SCORE_BUDGET // (num_interests * n_items))


def blocked_items(indices: torch.Tensor, n_items: int) -> torch.Tensor:
    """(B, M) item indices (1..N; 0 is padding and blocks nothing) -> (B, N) bool mask."""
    mask = torch.zeros(indices.shape[0], n_items + 1, dtype=torch.bool, device=indices.device)
    mask.scatter_(1, indices, True)
    return mask[:, 1:]


def rank(
    scores: torch.Tensor, n: int, blocked: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) scores, column j for item index j + 1 -> the (B, n) best item indices and
    their scores, best first; ``blocked`` (B, N) items score -inf."""
    if blocked is not None:
        scores = scores.masked_fill(blocked, float("-inf"))
    best = torch.topk(scores, n, dim=1)
    return best.indices + 1, best.values


def top_n(
    model: Retriever,
    extracted: Extracted,
    items: torch.Tensor,
    n: int,
    *,
    blocked: torch.Tensor | None = None,
    item_category: torch.Tensor | None = None,
    diversity_lambda: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's top-``n`` items for the users of ``extracted``: (B, n) item indices and
    scores. ``items`` (N, d) are the model's item vectors. With ``diversity_lambda`` (and
    ``item_category``, (N + 1,) codes by item index) the list is ComiRec's greedy pick and
    the scores are each pick's max-over-interests score (a mixture of softmaxes: its own
    score, which then also picks)."""
    if diversity_lambda is None:
        return rank(model.score(extracted, items), n, blocked)
    if item_category is None:
        raise ValueError("diversity_lambda needs item categories")
    query = model.retrieval_interests(extracted)
    merged = None if query.log_partition is None else model.score(extracted, items)
    rows = diverse_retrieve(
        query.interests,
        items,
        item_category[1:],
        n,
        diversity_lambda,
        query.active,
        blocked,
        merged,
    )
    if merged is None:
        scores = per_interest_scores(query.interests, items[rows], query.active).amax(1)
    else:
        scores = merged.gather(1, rows)
    if blocked is not None:
        scores = scores.masked_fill(blocked.gather(1, rows), float("-inf"))
    return rows + 1, scores


def interest_top_n(
    extracted: Extracted, items: torch.Tensor, n: int, blocked: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, K, n) each interest's own top-``n`` item indices (1..N), the catalogue ranked by
    ``<v_u^k, e_i>`` alone, best first: what ``mirec inspect`` lists under an interest.
    ``blocked`` (B, N) items score -inf for every interest of the user."""
    scores = per_interest_scores(extracted.interests.to(items.dtype), items)
    if blocked is not None:
        scores = scores.masked_fill(blocked.unsqueeze(1), float("-inf"))
    return torch.topk(scores, n, dim=2).indices + 1


def best_interest(extracted: Extracted, items: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """(B, n) the user's (active) interest that scores each listed item highest: which of
    the K interests an item was found for. ``top`` holds item indices (1..N). Under a
    mixture of softmaxes (``extracted.log_partition`` set) it is the interest that gives
    the item the most probability."""
    per_interest = per_interest_scores(extracted.interests, items[top - 1], extracted.active)
    if extracted.log_partition is not None:
        per_interest = per_interest - extracted.log_partition.unsqueeze(-1).to(items.device)
    return per_interest.argmax(1)
