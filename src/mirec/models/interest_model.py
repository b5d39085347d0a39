"""The retrieval model: an item table, an extractor, and a training-time interest selector.

    interests = extractor(E[history], history > 0)      (B, K, d)
    v_u       = select(interests, E[target])            (B, d)
    loss      = sampled softmax of <v_u, e_target> against shared negatives
                + sum of weight * penalty over the configured regularizers

At serving time the user keeps all K interests and the evaluator scores items by the max
over them (:mod:`mirec.aggregators.max_score`). The item table is shared between the
history and the candidates, as in ComiRec and MIND.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mirec.aggregators.hard_argmax import select_by_argmax
from mirec.extractors.base import Extracted
from mirec.regularizers import Penalty
from mirec.training.sampled_softmax import sampled_softmax_loss

Selector = Callable[..., torch.Tensor]
"""(interests (B, K, d), target embeddings (B, d), active (B, K) | None) -> (B, d)."""


class InterestModel(nn.Module):
    """K interest vectors per user from their history; items scored by dot product."""

    def __init__(
        self,
        n_items: int,
        embedding_dim: int,
        extractor: nn.Module,
        selector: Selector = select_by_argmax,
        regularizers: Sequence[tuple[str, float, Penalty]] = (),
    ) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, embedding_dim, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight[1:], std=embedding_dim**-0.5)
        self.extractor = extractor
        self.selector = selector
        self.regularizers = list(regularizers)

    @property
    def num_interests(self) -> int:
        return self.extractor.num_interests

    def extract(self, histories: torch.Tensor) -> Extracted:
        """(B, L) left-padded item indices -> interests (B, K, d) and their routing."""
        return self.extractor(self.item_embedding(histories), histories > 0)

    def item_vectors(self) -> torch.Tensor:
        return self.item_embedding.weight[1:]

    def loss(
        self,
        histories: torch.Tensor,
        targets: torch.Tensor,
        num_negatives: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        mask = histories > 0
        history = self.item_embedding(histories)
        extracted = self.extractor(history, mask)
        user = self.selector(extracted.interests, self.item_embedding(targets), extracted.active)
        loss = sampled_softmax_loss(
            user, targets, self.item_embedding.weight, num_negatives, generator, temperature
        )
        for _, weight, penalty in self.regularizers:
            loss = loss + weight * penalty(extracted, history, mask)
        return loss
