"""Representation aggregation: fuse a user's K interests into one vector before scoring.

The survey (arXiv 2506.15284, section 5) contrasts these with score-level aggregation
(max, mean): the fused vector is both what the training softmax sees and what retrieval
scores, so the catalogue is searched once per user instead of once per interest.

* :class:`InterestAttention`: a_k = softmax_k(w^T tanh(W v_k)), v_u = sum_k a_k v_k, the
  self-attentive pooling of Lin et al. (ICLR 2017) applied over interests instead of
  positions.
* :class:`ConcatMLP`: v_u = W_2 ReLU(W_1 [v_1; ...; v_K]); inactive interests enter as zeros.
* :class:`IntentionWeights`: v_u = sum_k e_k v_k with the weights e the extractor computed
  itself: SINE's intention-aware aggregation (Tan et al., WSDM 2021, eq. 9-10).

Each is a module ``(Extracted) -> (B, d)``.
"""

from __future__ import annotations

import torch
from torch import nn

from mirec.extractors.base import Extracted


def _masked_softmax(logits: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
    if active is not None:
        logits = logits.masked_fill(~active, float("-inf"))
    return torch.softmax(logits, dim=1)


class InterestAttention(nn.Module):
    def __init__(self, embedding_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or 4 * embedding_dim
        self.w1 = nn.Linear(embedding_dim, hidden_dim)
        self.w2 = nn.Linear(hidden_dim, 1, bias=False)  # a bias would cancel in the softmax

    def forward(self, extracted: Extracted) -> torch.Tensor:
        interests = extracted.interests
        weights = _masked_softmax(
            self.w2(torch.tanh(self.w1(interests))).squeeze(-1), extracted.active
        )
        return torch.einsum("bk,bkd->bd", weights, interests)


class ConcatMLP(nn.Module):
    def __init__(
        self, embedding_dim: int, num_interests: int, hidden_dim: int | None = None
    ) -> None:
        super().__init__()
        hidden_dim = hidden_dim or 4 * embedding_dim
        self.mlp = nn.Sequential(
            nn.Linear(num_interests * embedding_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, embedding_dim),
        )

    def forward(self, extracted: Extracted) -> torch.Tensor:
        interests = extracted.interests
        if extracted.active is not None:
            interests = interests * extracted.active.unsqueeze(-1).to(interests.dtype)
        return self.mlp(interests.flatten(1))


class IntentionWeights(nn.Module):
    def forward(self, extracted: Extracted) -> torch.Tensor:
        if extracted.weights is None:
            raise ValueError(
                "aggregator 'intention' needs an extractor that weights its own interests "
                "(sparse_interest, SINE)"
            )
        weights = extracted.weights
        if extracted.active is not None:
            weights = weights * extracted.active.to(weights.dtype)
            weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-12)
        return torch.einsum("bk,bkd->bd", weights, extracted.interests)
