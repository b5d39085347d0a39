"""Diversity-controllable aggregation (ComiRec, Cen et al., KDD 2020, section 3.4).

From the union M of each interest's top-N items, choose N items S greedily to maximise

    Q(u, S) = sum_{i in S} f(u, i) + lambda * sum_{i, j in S} g(i, j),
    f(u, i) = max_k <v_u^k, e_i>,   g(i, j) = 1 if CATE(i) != CATE(j) else 0

adding at each step the item with the best f(u, i) + lambda * |{j in S: CATE(j) != CATE(i)}|.
lambda = 0 is the plain ranking by max score; a large lambda maximises category diversity.
The greedy loop runs over the N picks; each pick is vectorised over users and candidates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mirec.aggregators.max_score import ScoreTiles
from mirec.core.chunked_top import RunningTop, blocked_columns, chunks


def diverse_top_n(
    scores: torch.Tensor, categories: torch.Tensor, n: int, lam: float
) -> torch.Tensor:
    """(B, C) candidate scores (-inf: not a candidate) and categories -> (B, n) column
    indices of the greedy picks, in pick order."""
    batch, width = scores.shape
    rows = torch.arange(batch, device=scores.device)
    taken = torch.zeros(batch, width, dtype=torch.bool, device=scores.device)
    same = torch.zeros(batch, width, dtype=scores.dtype, device=scores.device)
    picks = []
    for step in range(n):
        # candidates whose category differs from each already-picked item earn lambda each
        gain = scores + lam * (step - same)
        pick = gain.masked_fill(taken, float("-inf")).argmax(dim=1)
        picks.append(pick)
        taken[rows, pick] = True
        same += categories == categories[rows, pick].unsqueeze(1)
    return torch.stack(picks, dim=1)


def diverse_retrieve(
    interests: torch.Tensor,
    items: torch.Tensor,
    item_category: torch.Tensor,
    n: int,
    lam: float,
    active: torch.Tensor | None = None,
    blocked: torch.Tensor | None = None,
    merged: Callable[[torch.Tensor], torch.Tensor] | None = None,
    tiles: ScoreTiles | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, d) interests, (N_items, d) items, (N_items,) categories -> (B, n) item rows
    and each pick's candidate score.

    Candidates are the union of each (active) interest's top-n items, scored by the max
    over (active) interests; or, given ``merged`` ((C, d) items -> (B, C) the model's own
    scores, when it merges the interests otherwise: the mixture of softmaxes), that union
    and the top-n by ``merged``, scored by it, so that lambda 0 is its plain ranking.
    Repeats are kept once. ``blocked`` ((B, N_items) bool, or (B, M) item indices
    1..N_items with 0 as padding): items never to choose while others remain. The
    catalogue is scored chunk by chunk (:mod:`mirec.core.chunked_top`); each
    candidate carries its score from its chunk, so the merge needs no second scoring.
    ``tiles``: the score storage to use.
    """
    tiles = ScoreTiles() if tiles is None else tiles
    layout = chunks(items.shape[0])
    whole = len(layout) == 1
    best = RunningTop(n, whole)
    own = None if merged is None else RunningTop(n, whole)
    for lo, hi in layout:
        per_interest = tiles.per_interest(interests, items[lo:hi])
        if active is not None:
            per_interest.masked_fill_(~active.unsqueeze(-1), float("-inf"))
        mask = blocked_columns(blocked, lo, hi)
        if mask is not None:
            per_interest.masked_fill_(mask.unsqueeze(1), float("-inf"))
        if own is None:
            score = per_interest.amax(dim=1)
        else:
            score = merged(items[lo:hi])
            if mask is not None:
                score = score.masked_fill(mask, float("-inf"))
            own.add(score, lo)
        best.add(per_interest, lo, carried=score.unsqueeze(1).expand_as(per_interest))
    candidates = best.columns.flatten(1)  # (B, K * n), with repeats
    scores = best.carried.flatten(1)
    if active is not None:
        # an inactive interest's slots repeat the first active interest's best item, which
        # the de-duplication below then drops
        first = active.to(torch.int8).argmax(1, keepdim=True) * n
        slot_active = active.repeat_interleave(n, dim=1)
        candidates = torch.where(slot_active, candidates, candidates.gather(1, first))
        scores = torch.where(slot_active, scores, scores.gather(1, first))
    if own is not None:
        candidates = torch.cat([candidates, own.columns], dim=1)
        scores = torch.cat([scores, own.values], dim=1)
    candidates, order = candidates.sort(dim=1)
    repeat = torch.zeros_like(candidates, dtype=torch.bool)
    repeat[:, 1:] = candidates[:, 1:] == candidates[:, :-1]
    scores = scores.gather(1, order).masked_fill(repeat, float("-inf"))
    chosen = diverse_top_n(scores, item_category[candidates], n, lam)
    return candidates.gather(1, chosen), scores.gather(1, chosen)
