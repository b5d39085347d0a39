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

Each is a :class:`Fuser`, a module ``(Extracted) -> (B, d)``.
"""

from __future__ import annotations

import torch
from torch import nn

from mirec.aggregators import AGGREGATORS, CTR, RETRIEVAL, Level
from mirec.core.config import Config
from mirec.core.contracts import Extracted
from mirec.core.functional import masked_softmax


class Fuser(nn.Module):
    """A representation-level aggregator: (Extracted) -> (B, d) one vector per user."""

    level = Level.REPRESENTATION
    tasks: tuple[str, ...] = (RETRIEVAL, CTR)

    @classmethod
    def from_config(cls, config: Config) -> Fuser:
        raise NotImplementedError

    def forward(self, extracted: Extracted) -> torch.Tensor:
        raise NotImplementedError


@AGGREGATORS.register("attention")
class InterestAttention(Fuser):
    def __init__(self, embedding_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or 4 * embedding_dim
        self.w1 = nn.Linear(embedding_dim, hidden_dim)
        self.w2 = nn.Linear(hidden_dim, 1, bias=False)  # a bias would cancel in the softmax

    @classmethod
    def from_config(cls, config: Config) -> InterestAttention:
        return cls(config.embedding_dim, config.hidden_dim)

    def forward(self, extracted: Extracted) -> torch.Tensor:
        interests = extracted.interests
        logits = self.w2(torch.tanh(self.w1(interests))).squeeze(-1)
        weights = masked_softmax(logits, extracted.active, dim=1)
        return torch.einsum("bk,bkd->bd", weights, interests)


@AGGREGATORS.register("concat_mlp")
class ConcatMLP(Fuser):
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

    @classmethod
    def from_config(cls, config: Config) -> ConcatMLP:
        return cls(config.embedding_dim, config.num_interests, config.hidden_dim)

    def forward(self, extracted: Extracted) -> torch.Tensor:
        interests = extracted.interests
        if extracted.active is not None:
            interests = interests * extracted.active.unsqueeze(-1).to(interests.dtype)
        return self.mlp(interests.flatten(1))


@AGGREGATORS.register("intention")
class IntentionWeights(Fuser):
    tasks = (RETRIEVAL,)  # CTR has never offered it (no check there for SINE's weights)

    @classmethod
    def from_config(cls, config: Config) -> IntentionWeights:
        return cls()

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
