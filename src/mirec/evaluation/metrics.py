"""Per-user ranking metrics of docs/protocol.md section 5, batched.

With T a user's target set and r the 1-based rank in the top-N list:

- ``Recall@N  = |top-N ∩ T| / |T|``
- ``HitRate@N = 1 if |top-N ∩ T| > 0 else 0``
- ``NDCG@N    = sum_{r <= N, item_r in T} 1/log2(r+1)  /  sum_{r=1}^{min(|T|, N)} 1/log2(r+1)``

and, where items have categories, ComiRec's ``Diversity@N`` (Cen et al., KDD 2020, eq. 16):
the share of pairs in the top-N whose categories differ.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

CUTOFFS = (20, 50)


class Targets(NamedTuple):
    """A batch of users' target sets, ragged: no (users x catalogue) mask is built."""

    items: torch.Tensor
    """(T,) item indices (1..N), each user's distinct targets."""
    owners: torch.Tensor
    """(T,) the batch row (0..B-1) each target belongs to, ascending."""
    n_users: int

    def hits(self, top: torch.Tensor) -> torch.Tensor:
        """(B, n) ranked item indices -> (B, n) bool: whether each is a target of its user."""
        if self.items.numel() == 0:
            return torch.zeros_like(top, dtype=torch.bool)
        stride = int(torch.maximum(top.max(), self.items.max())) + 1
        rows = torch.arange(top.shape[0], device=top.device).unsqueeze(1)
        return torch.isin(rows * stride + top, self.owners * stride + self.items)

    def count(self, where: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) each user's number of targets; with ``where`` ((N + 1,) bool by item index),
        of the targets it marks."""
        weights = None if where is None else where[self.items].to(torch.float64)
        counts = torch.bincount(self.owners, weights=weights, minlength=self.n_users)
        return counts.to(torch.float64)


def ranking_metrics(
    hits: torch.Tensor, n_targets: torch.Tensor, cutoffs: tuple[int, ...] = CUTOFFS
) -> dict[str, torch.Tensor]:
    """Per-user metrics from a hit matrix.

    ``hits[u, r]`` is True when the item ranked ``r + 1`` for user ``u`` is one of the user's
    targets; it has at least ``max(cutoffs)`` columns. ``n_targets[u] = |T_u| >= 1``.
    Returns ``{"recall@20": (B,), ...}``.
    """
    depth = max(cutoffs)
    if hits.shape[1] < depth:
        raise ValueError(f"hit matrix has {hits.shape[1]} ranks, cutoffs need {depth}")
    hits = hits[:, :depth].to(torch.float64)
    discounts = 1.0 / torch.log2(
        torch.arange(2, depth + 2, dtype=torch.float64, device=hits.device)
    )
    ideal = torch.cumsum(discounts, 0)  # ideal[m - 1] = sum_{r=1}^{m} 1/log2(r+1)
    n_targets = n_targets.to(hits.device)
    out: dict[str, torch.Tensor] = {}
    for n in cutoffs:
        found = hits[:, :n].sum(1)
        out[f"recall@{n}"] = found / n_targets
        out[f"ndcg@{n}"] = (hits[:, :n] * discounts[:n]).sum(1) / ideal[
            torch.clamp(n_targets, max=n) - 1
        ]
        out[f"hitrate@{n}"] = (found > 0).to(torch.float64)
    return out


def category_diversity(
    top_categories: torch.Tensor, cutoffs: tuple[int, ...] = CUTOFFS
) -> dict[str, torch.Tensor]:
    """Per-user ``Diversity@N = sum_{j<k<=N} [CATE(i_j) != CATE(i_k)] / (N (N - 1) / 2)``.

    ``top_categories`` (B, >= max(cutoffs)): the category code of each ranked item. Items
    without a category share the code -1 and so count as one category.
    """
    out: dict[str, torch.Tensor] = {}
    for n in cutoffs:
        codes = top_categories[:, :n]
        differ = (codes.unsqueeze(2) != codes.unsqueeze(1)).sum((1, 2)).to(torch.float64)
        out[f"diversity@{n}"] = differ / (n * (n - 1))  # ordered pairs: each counted twice
    return out
