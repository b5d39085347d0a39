"""The CTR model: P(click | history, candidate) from K interests and one candidate.

    e(i)      = E[i] + mean_c C[c]  over item i's categories (where the dataset has them)
    h_l       = e(history_l) (+ B[behaviour_l] on logs with behaviour types, e.g. Taobao)
    interests = extractor(h, mask)                                   (B, K, d)
    logit     = head(aggregate(interests, e(candidate)), e(candidate))

``aggregate`` is the survey's question (arXiv 2506.15284, section 5) of how K interests
meet one candidate:

* ``target``: target-aware attention over the interests (DIN's activation unit,
  :mod:`mirec.aggregators.target_attention`): the candidate weighs its interests;
* ``max``: the head scores every interest against the candidate and the best one counts
  (the "one dominant interest" assumption);
* ``attention`` / ``concat_mlp``: representation aggregation, the interests are fused
  into one vector without looking at the candidate
  (:mod:`mirec.aggregators.representation`).

Which of these an aggregator name is, :func:`mirec.aggregators.build_aggregation` says.
The ``behaviors`` extractor (:mod:`mirec.extractors.behaviors`) keeps each history item as
its own vector (K = L): with the ``target`` aggregator that is DIN (Zhou et al., KDD 2018).
The head is DIN's MLP, [u; c; u * c] -> 200 -> 80 -> 1 with PReLU activations (DIN's Dice
is a data-adaptive PReLU).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mirec.aggregators import Aggregation, Level
from mirec.core.contracts import Extractor
from mirec.core.layers import mean_embedding, prelu_mlp

HEAD_SIZES = (200, 80)


class ItemEncoder(nn.Module):
    """Item embedding plus the mean embedding of the item's categories; behaviour types
    (pv/cart/fav/buy) add their own embedding to history items."""

    def __init__(
        self,
        n_items: int,
        embedding_dim: int,
        item_categories: np.ndarray | None = None,
        n_categories: int = 0,
        n_behaviors: int = 0,
    ) -> None:
        """``item_categories`` (n_items + 1, C) category codes + 1, 0 for none (row 0 is
        the padding item)."""
        super().__init__()
        self.item = nn.Embedding(n_items + 1, embedding_dim, padding_idx=0)
        nn.init.normal_(self.item.weight[1:], std=embedding_dim**-0.5)
        self.category = None
        if item_categories is not None and n_categories > 0:
            self.register_buffer(
                "item_categories", torch.as_tensor(item_categories), persistent=False
            )
            self.category = nn.Embedding(n_categories + 1, embedding_dim, padding_idx=0)
            nn.init.normal_(self.category.weight[1:], std=embedding_dim**-0.5)
        self.behavior = None
        if n_behaviors > 0:
            self.behavior = nn.Embedding(n_behaviors + 1, embedding_dim, padding_idx=0)

    def forward(self, items: torch.Tensor, behaviors: torch.Tensor | None = None) -> torch.Tensor:
        out = self.item(items)
        if self.category is not None:
            out = out + mean_embedding(self.category, self.item_categories[items])
        if self.behavior is not None and behaviors is not None:
            out = out + self.behavior(behaviors)
        return out


class CTRHead(nn.Module):
    """DIN's prediction MLP on [u; c; u * c] -> one logit."""

    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        self.mlp = prelu_mlp(3 * embedding_dim, HEAD_SIZES)

    def forward(self, user: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        """(..., d) user vectors and candidates -> (...) logits."""
        return self.mlp(torch.cat([user, candidate, user * candidate], -1)).squeeze(-1)


class ClickModel(nn.Module):
    """What every trained CTR model shares: ``_forward`` gives the logits and what its
    ``penalty`` (regularizers, auxiliary losses) needs; the loss is binary cross-entropy
    plus that penalty. Every item lookup goes through ``encoder``."""

    encoder: ItemEncoder

    @property
    def item_table(self) -> nn.Embedding:
        """The item embedding table (the trainer may switch its gradients to sparse)."""
        return self.encoder.item

    def _forward(
        self, histories: torch.Tensor, candidates: torch.Tensor, behaviors: torch.Tensor | None
    ) -> tuple[torch.Tensor, tuple]:
        raise NotImplementedError

    def penalty(self, state: tuple, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        histories: torch.Tensor,
        candidates: torch.Tensor,
        behaviors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L) histories, (B,) candidates, optional (B, L) behaviour types -> (B,) click
        logits."""
        return self._forward(histories, candidates, behaviors)[0]

    def loss(
        self,
        histories: torch.Tensor,
        candidates: torch.Tensor,
        labels: torch.Tensor,
        behaviors: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        logits, state = self._forward(histories, candidates, behaviors)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, labels)
        return bce + self.penalty(state, generator)


class CTRModel(ClickModel):
    """An extractor, an aggregator and DIN's head over an :class:`ItemEncoder`."""

    def __init__(
        self,
        encoder: ItemEncoder,
        embedding_dim: int,
        extractor: Extractor,
        aggregation: Aggregation,
        regularizers: list | tuple = (),
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.extractor = extractor
        self.level = aggregation.level
        # two attributes, not one: the names are the checkpoints' state-dict keys
        self.target_attention = aggregation.module if self.level is Level.TARGET else None
        self.fuse = aggregation.module if self.level is Level.REPRESENTATION else None
        self.head = CTRHead(embedding_dim)
        self.regularizers = list(regularizers)

    @property
    def num_interests(self) -> int:
        """K of the extractor; DIN's behaviours count as one target-attended vector."""
        return self.extractor.num_interests

    def _forward(
        self,
        histories: torch.Tensor,
        candidates: torch.Tensor,
        behaviors: torch.Tensor | None,
    ) -> tuple[torch.Tensor, tuple]:
        mask = histories > 0
        history = self.encoder(histories, behaviors)
        extracted = self.extractor(history, mask)
        candidate = self.encoder(candidates)
        if self.level is Level.SCORE:  # max, CTR's one score level: the best interest counts
            logits = self.head(
                extracted.interests, candidate.unsqueeze(1).expand_as(extracted.interests)
            )
            if extracted.active is not None:
                logits = logits.masked_fill(~extracted.active, float("-inf"))
            logits = logits.amax(1)
        else:
            if self.target_attention is not None:
                user = self.target_attention(extracted.interests, candidate, extracted.active)
            else:
                assert self.fuse is not None
                user = self.fuse(extracted)
            logits = self.head(user, candidate)
        return logits, (extracted, history, mask)

    def penalty(self, state: tuple, generator: torch.Generator | None) -> torch.Tensor:
        """The configured regularizers on the batch's interests."""
        extracted, history, mask = state
        total = history.new_zeros(())
        for _, weight, penalty in self.regularizers:
            total = total + weight * penalty(extracted, history, mask)
        return total


class PopularityCTR(nn.Module):
    """The baseline every CTR model must clear: the logit is the candidate's log training
    count, whoever the user is."""

    num_interests = 1

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.register_buffer("log_counts", torch.zeros(n_items + 1, dtype=torch.float64))

    def fit(self, item_counts: np.ndarray) -> PopularityCTR:
        """Take the training interactions per item index (N + 1,), row 0 the padding."""
        self.log_counts.copy_(torch.log1p(torch.as_tensor(item_counts, dtype=torch.float64)))
        return self

    def forward(
        self, histories: torch.Tensor, candidates: torch.Tensor, behaviors=None
    ) -> torch.Tensor:
        return self.log_counts[candidates].float()
