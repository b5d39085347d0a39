"""The quota merge: each interest gets its share of the list.

Merging the K interests' lists by the max score lets one interest own most of a top-N (the
survey's "dominant interest" failure, arXiv 2506.15284 section 7): the interest whose
vector has the largest norm, or lies nearest the popular items, wins slot after slot. The
quota merge gives interest k a number of the N slots in proportion to its share of the
user's history, sharpened or flattened by ``alpha``:

    slots_k = N p_k^alpha / sum_j p_j^alpha,

rounded by the largest-remainder method so that the slots sum to N, with p_k the share of
the history items that route to interest k more than to any other
(:func:`~mirec.retrieval.adaptive_k.routed_shares`, the rule of ``mirec inspect`` and of the
diagnostics). ``alpha = 0`` gives every interest with history items the same number of
slots; ``alpha = 1`` the history's own proportions; a large alpha gives nearly all of them to
the leading interest. The slots are filled greedily by score: at each step the best item
still free among the interests that have slots left is taken by its interest, so an item
two interests want goes to the one that scores it higher while it has room, and an interest
skips items another has taken. An interest whose own top-N runs out (every item taken by
others) leaves its slots to the others, filled by score from all the candidates. The list
is then ordered by the model's score, so the merge changes which items are listed, not how
they are ordered. This is Steck's calibration idea (Calibrated Recommendations, RecSys 2018)
with interests for genres and fixed quotas for the greedy objective.
"""

from __future__ import annotations

import torch

from mirec.core.functional import largest_remainder


def quota_slots(
    shares: torch.Tensor, n: int, alpha: float, active: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, K) history shares p_k -> (B, K) int64 slots summing to ``n``: ``n p_k^alpha /
    sum_j p_j^alpha`` by the largest remainder (module docstring). Interests with p_k = 0
    get none; a user whose shares are all zero splits the slots evenly over the (active)
    interests. The powers are taken relative to the largest share, so no alpha overflows."""
    shares = shares.to(torch.float64)
    if active is not None:
        shares = shares.masked_fill(~active, 0.0)
    present = shares > 0
    if active is None:
        active = torch.ones_like(present)
    present = torch.where(present.any(-1, keepdim=True), present, active)
    log_share = shares.clamp_min(1e-300).log()
    top = log_share.masked_fill(~present, -torch.inf).amax(-1, keepdim=True)
    weight = torch.where(present, (alpha * (log_share - top)).exp(), 0.0)
    weight = torch.where(weight.sum(-1, keepdim=True) > 0, weight, present.to(weight.dtype))
    return largest_remainder(weight, n)


def quota_merge(
    candidates: torch.Tensor, scores: torch.Tensor, slots: torch.Tensor, n: int
) -> torch.Tensor:
    """Each interest's own candidates, (B, K, M) item indices with their (B, K, M) scores
    (-inf: not to take while others remain), and its (B, K) slots -> (B, n) item indices in
    pick order (the caller orders them by score). The greedy fill of the module docstring:
    a step takes the best free candidate of an interest with slots left; when none has one,
    the best free candidate of any interest; when only -inf candidates are free, the first.
    Users are batched; the loop runs over the n picks. Needs at least n distinct items
    among each user's candidates (each interest's own top-n has them)."""
    b, k, m = candidates.shape
    flat = candidates.reshape(b, k * m)
    score = scores.reshape(b, k * m)
    owner = torch.arange(k, device=flat.device).repeat_interleave(m).expand(b, -1)
    left = slots.clone()
    taken = torch.zeros_like(flat, dtype=torch.bool)
    rows = torch.arange(b, device=flat.device)
    picks = []
    for _ in range(n):
        free = ~taken & torch.isfinite(score)
        within = free & (left.gather(1, owner) > 0)
        best_within = score.masked_fill(~within, -torch.inf).argmax(1)
        best_free = score.masked_fill(~free, -torch.inf).argmax(1)
        first_untaken = (~taken).to(torch.int8).argmax(1)
        pick = torch.where(
            within.any(1), best_within, torch.where(free.any(1), best_free, first_untaken)
        )
        item = flat[rows, pick]
        who = owner[rows, pick]
        left[rows, who] = (left[rows, who] - 1).clamp_min(0)
        taken |= flat == item.unsqueeze(1)
        picks.append(item)
    return torch.stack(picks, 1)
