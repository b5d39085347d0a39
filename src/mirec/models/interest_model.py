"""The retrieval model: an item table, an extractor, and how the interests meet the items.

    interests = extractor(E[history], history > 0)      (B, K, d)
    v_u       = select(interests, E[target])            (B, d)   score-level aggregation
              | fuse(interests)                                  representation aggregation
    loss      = sampled softmax of <v_u, e_target> against the objective's negatives
                + sum of weight * penalty over the configured regularizers

At serving time a score-level model keeps all K interests and scores items by their max
(:mod:`mirec.aggregators.max_score`) or mean; a fused model scores by its one vector. At
inference an optional adaptive-K rule (:mod:`mirec.extractors.adaptive_k`) switches off
interests a user does not need. The item table is shared between the history and the
candidates, as in ComiRec and MIND.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mirec.aggregators.hard_argmax import select_by_argmax
from mirec.aggregators.max_score import max_over_interests
from mirec.extractors.adaptive_k import adapt_interests
from mirec.extractors.base import Extracted
from mirec.regularizers import Penalty
from mirec.training.sampled_softmax import SampledSoftmax

Selector = Callable[..., torch.Tensor]
"""(interests (B, K, d), target embeddings (B, d), active (B, K) | None) -> (B, d)."""
Scorer = Callable[..., torch.Tensor]
"""(interests (B, K, d), items (N, d), active (B, K) | None) -> (B, N) scores."""


class InterestModel(nn.Module):
    """K interest vectors per user from their history; items scored by dot product."""

    def __init__(
        self,
        n_items: int,
        embedding_dim: int,
        extractor: nn.Module,
        selector: Selector = select_by_argmax,
        regularizers: Sequence[tuple[str, float, Penalty]] = (),
        scorer: Scorer = max_over_interests,
        fuse: nn.Module | None = None,
        adaptive_k: tuple[str, float] | None = None,
    ) -> None:
        """``selector`` trains one interest per example and ``scorer`` ranks the catalogue
        with all K; a ``fuse`` module (representation aggregation) replaces both with one
        fused vector. ``adaptive_k`` is a parsed rule applied in eval mode."""
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, embedding_dim, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight[1:], std=embedding_dim**-0.5)
        self.extractor = extractor
        self.selector = selector
        self.regularizers = list(regularizers)
        self.scorer = scorer
        self.fuse = fuse
        self.adaptive_k = adaptive_k

    @property
    def num_interests(self) -> int:
        return self.extractor.num_interests

    def extract(self, histories: torch.Tensor) -> Extracted:
        """(B, L) left-padded item indices -> interests (B, K, d) and their routing; in eval
        mode the adaptive-K rule, if any, sets which interests each user keeps."""
        mask = histories > 0
        extracted = self.extractor(self.item_embedding(histories), mask)
        if self.adaptive_k is not None and not self.training:
            extracted = adapt_interests(extracted, mask, *self.adaptive_k)
        return extracted

    def score(self, extracted: Extracted, items: torch.Tensor) -> torch.Tensor:
        """(B, N) scores of ``items`` (N, d) for the users of ``extracted``."""
        if self.fuse is not None:
            return self.fuse(extracted) @ items.T
        return self.scorer(extracted.interests, items, extracted.active)

    def item_vectors(self) -> torch.Tensor:
        return self.item_embedding.weight[1:]

    def loss(
        self,
        histories: torch.Tensor,
        targets: torch.Tensor,
        objective: SampledSoftmax,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Training loss of a batch: ``objective`` on the trained user vectors, plus the
        weighted regularizers."""
        mask = histories > 0
        history = self.item_embedding(histories)
        extracted = self.extractor(history, mask)
        if self.fuse is not None:
            user = self.fuse(extracted)
        else:
            user = self.selector(
                extracted.interests, self.item_embedding(targets), extracted.active
            )
        loss = objective(user, targets, self.item_embedding.weight, generator)
        for _, weight, penalty in self.regularizers:
            loss = loss + weight * penalty(extracted, history, mask)
        return loss
