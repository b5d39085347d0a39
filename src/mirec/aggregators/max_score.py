"""Retrieval aggregation by maximum (ComiRec, KDD 2020, section 3.3; PROTOCOL.md section 4).

``score(u, i) = max_k <v_u^k, e_i>``: an item ranks high when any one interest wants it, so
the top-N equals the union of each interest's top-N merged by score.
"""

from __future__ import annotations

import torch


def per_interest_scores(
    interests: torch.Tensor, items: torch.Tensor, active: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, K, d) interests x items -> (B, K, N) scores <v_u^k, e_i>, -inf for an interest a
    user does not have. ``items`` is the catalogue (N, d), or (B, N, d) items per user."""
    equation = "bkd,nd->bkn" if items.dim() == 2 else "bkd,bnd->bkn"
    scores = torch.einsum(equation, interests, items)
    if active is not None:
        scores = scores.masked_fill(~active.unsqueeze(-1), float("-inf"))
    return scores


def max_over_interests(
    interests: torch.Tensor, items: torch.Tensor, active: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, K, d) interests x (N, d) items -> (B, N) scores, the max over (active) interests."""
    return per_interest_scores(interests, items, active).amax(dim=1)
