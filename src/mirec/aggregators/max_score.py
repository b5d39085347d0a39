"""Retrieval aggregation by maximum (ComiRec, KDD 2020, section 3.3; PROTOCOL.md section 4).

``score(u, i) = max_k <v_u^k, e_i>``: an item ranks high when any one interest wants it, so
the top-N equals the union of each interest's top-N merged by score.
"""

from __future__ import annotations

import torch


def max_over_interests(interests: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(B, K, d) interests x (N, d) items -> (B, N) scores, the max over interests."""
    return torch.einsum("bkd,nd->bkn", interests, items).amax(dim=1)
