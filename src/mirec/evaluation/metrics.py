"""Per-user ranking metrics of PROTOCOL.md section 5, batched.

With T a user's target set and r the 1-based rank in the top-N list:

- ``Recall@N  = |top-N ∩ T| / |T|``
- ``HitRate@N = 1 if |top-N ∩ T| > 0 else 0``
- ``NDCG@N    = sum_{r <= N, item_r in T} 1/log2(r+1)  /  sum_{r=1}^{min(|T|, N)} 1/log2(r+1)``
"""

from __future__ import annotations

import torch

CUTOFFS = (20, 50)
METRIC_NAMES = ("recall", "ndcg", "hitrate")


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


def collapse(interests: torch.Tensor) -> torch.Tensor:
    """PROTOCOL.md section 8: each user's mean pairwise cosine of their K interests, (B,).

    1.0 means the K vectors point the same way (total collapse). Needs K >= 2.
    """
    k = interests.shape[1]
    if k < 2:
        raise ValueError("collapse needs at least two interests per user")
    unit = torch.nn.functional.normalize(interests.to(torch.float64), dim=-1)
    cos = unit @ unit.transpose(1, 2)
    off_diagonal = cos.sum((1, 2)) - cos.diagonal(dim1=1, dim2=2).sum(1)
    return off_diagonal / (k * (k - 1))
