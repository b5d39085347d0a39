"""Retrieval aggregation by mean: ``score(u, i) = mean_k <v_u^k, e_i>`` over active interests.

The mean of the per-interest scores is the score of the mean interest, so this is the
"average the interests away" baseline that the max aggregation of ComiRec is meant to
beat; it is computed as one (B, d) x (d, N) product.
"""

from __future__ import annotations

import torch


def mean_over_interests(
    interests: torch.Tensor, items: torch.Tensor, active: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, K, d) interests x (N, d) items -> (B, N) scores, the mean over (active) interests."""
    if active is None:
        return interests.mean(1) @ items.T
    weights = active.to(interests.dtype)
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
    return torch.einsum("bk,bkd->bd", weights, interests) @ items.T
