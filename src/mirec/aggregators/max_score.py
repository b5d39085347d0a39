"""Retrieval aggregation by maximum (ComiRec, KDD 2020, section 3.3; PROTOCOL.md section 4).

``score(u, i) = max_k <v_u^k, e_i>``: an item ranks high when any one interest wants it, so
the top-N equals the union of each interest's top-N merged by score.
"""

from __future__ import annotations

import torch


def max_over_interests(
    interests: torch.Tensor, items: torch.Tensor, active: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, K, d) interests x (N, d) items -> (B, N) scores, the max over (active) interests."""
    scores = torch.einsum("bkd,nd->bkn", interests, items)
    if active is not None:
        scores = scores.masked_fill(~active.unsqueeze(-1), float("-inf"))
    return scores.amax(dim=1)
