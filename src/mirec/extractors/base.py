"""What every extractor returns: the interests, and how the history was routed to them."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Extracted(NamedTuple):
    """An extractor's output for a batch of histories.

    ``routing[b, l, k]`` is how much behaviour ``l`` contributes to interest ``k``: the
    attention weights of a self-attentive extractor (each interest's column sums to 1 over
    the history) or the coupling coefficients of capsule routing (each behaviour's row sums
    to 1 over the interests). Padding positions have zero routing. Regularizers and
    diagnostics read it; retrieval only needs ``interests``.
    """

    interests: torch.Tensor
    """(B, K, d)."""
    routing: torch.Tensor | None = None
    """(B, L, K), zero on padding."""
    active: torch.Tensor | None = None
    """(B, K) bool: False for interests a user does not have (dynamic K); None: all active."""
    weights: torch.Tensor | None = None
    """(B, K), rows summing to 1: the extractor's own weighting of the interests into one
    user vector (SINE's intention-aware aggregation); None when it has none."""
    prototypes: torch.Tensor | None = None
    """(C, d): a learned pool of concept prototypes the interests are drawn from (SINE),
    for the regularizers that keep the pool spread; None when there is none."""
