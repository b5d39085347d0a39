"""Diversity-controllable aggregation (ComiRec, Cen et al., KDD 2020, section 3.4).

From the union M of each interest's top-N items, choose N items S greedily to maximise

    Q(u, S) = sum_{i in S} f(u, i) + lambda * sum_{i, j in S} g(i, j),
    f(u, i) = max_k <v_u^k, e_i>,   g(i, j) = 1 if CATE(i) != CATE(j) else 0

adding at each step the item with the best f(u, i) + lambda * |{j in S: CATE(j) != CATE(i)}|.
lambda = 0 is the plain ranking by max score; a large lambda maximises category diversity.
The greedy loop runs over the N picks; each pick is vectorised over users and candidates.
"""

from __future__ import annotations

import torch

from mirec.aggregators.max_score import per_interest_scores


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
    merged: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, K, d) interests, (N_items, d) items, (N_items,) categories -> (B, n) item rows.

    Candidates are the union of each (active) interest's top-n items, scored by the max
    over (active) interests; or, given ``merged`` (B, N_items), the model's own scores
    when it merges the interests otherwise (the mixture of softmaxes), that union and the
    top-n by ``merged``, scored by it, so that lambda 0 is its plain ranking. Repeats are
    kept once. ``blocked`` (B, N_items) bool:
    items never to choose while others remain.
    """
    per_interest = per_interest_scores(interests, items, active)
    if blocked is not None:
        per_interest = per_interest.masked_fill(blocked.unsqueeze(1), float("-inf"))
        if merged is not None:
            merged = merged.masked_fill(blocked, float("-inf"))
    candidates = per_interest.topk(n, dim=2).indices.flatten(1)  # (B, K * n), with repeats
    if active is not None:
        # an inactive interest's slots repeat the first active interest's best item, which
        # the de-duplication below then drops
        first = active.to(torch.int8).argmax(1, keepdim=True) * n
        slot_active = active.repeat_interleave(n, dim=1)
        candidates = torch.where(slot_active, candidates, candidates.gather(1, first))
    if merged is not None:
        candidates = torch.cat([candidates, merged.topk(n, dim=1).indices], dim=1)
    candidates, _ = candidates.sort(dim=1)
    repeat = torch.zeros_like(candidates, dtype=torch.bool)
    repeat[:, 1:] = candidates[:, 1:] == candidates[:, :-1]
    merged = per_interest.amax(dim=1) if merged is None else merged
    scores = merged.gather(1, candidates).masked_fill(repeat, float("-inf"))
    chosen = diverse_top_n(scores, item_category[candidates], n, lam)
    return candidates.gather(1, chosen)
