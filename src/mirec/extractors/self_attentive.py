"""Self-attentive multi-interest extractor: ComiRec-SA (Cen et al., KDD 2020, section 3.2.2).

For a history H in R^{L x d} with positional embeddings P,

    A = softmax( W_2^T tanh(W_1 (H + P)^T) )^T     in R^{L x K}     (eq. 9)
    V_u = A^T H                                    in R^{K x d}     (eq. 10)

Each of the K attention heads reads the whole sequence and pools it into one interest.
Padding positions get zero attention, so they never change an interest. As in the
authors' code, positions only steer the attention; the pooled values are the plain item
embeddings.

With ``encoder_layers > 0`` (not in the paper) H is first replaced by the contextual states
of a SASRec-style causal transformer (:mod:`mirec.extractors.causal_transformer`), which
carry their own positions; the K heads then pool those states.

With ``tower=True`` (not in the paper) each pooled interest then goes through MIND's ReLU
layers (Li et al., CIKM 2019, section 4.2), Linear(d, hidden) -> ReLU -> Linear(hidden, d),
shared by the K interests. A pooled interest is a convex mix of history embeddings, so
without the tower it always scores the user's own history items highly; the tower lets it
move away from them.
"""

from __future__ import annotations

import torch
from torch import nn

from mirec.extractors.base import Extracted
from mirec.extractors.causal_transformer import CausalTransformer


class SelfAttentiveExtractor(nn.Module):
    """(B, L, d) history embeddings + (B, L) mask -> K interests and their attention."""

    def __init__(
        self,
        embedding_dim: int,
        num_interests: int,
        maxlen: int,
        hidden_dim: int | None = None,
        encoder_layers: int = 0,
        dropout: float = 0.2,
        tower: bool = False,
    ) -> None:
        super().__init__()
        hidden_dim = hidden_dim or 4 * embedding_dim
        self.num_interests = num_interests
        self.encoder = (
            CausalTransformer(embedding_dim, maxlen, encoder_layers, dropout=dropout)
            if encoder_layers > 0
            else None
        )
        # the encoder's states carry their own positions
        self.position = None
        if self.encoder is None:
            self.position = nn.Parameter(torch.empty(maxlen, embedding_dim))
            nn.init.normal_(self.position, std=embedding_dim**-0.5)
        self.w1 = nn.Linear(embedding_dim, hidden_dim)
        self.w2 = nn.Linear(hidden_dim, num_interests)
        self.tower = None
        if tower:
            self.tower = nn.Sequential(
                nn.Linear(embedding_dim, hidden_dim),
                nn.ReLU(),
                nn.Linear(hidden_dim, embedding_dim),
            )

    def attention(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, K) attention of each interest over positions; zero on padding."""
        if self.position is not None:
            # positions are aligned to the end: the most recent item always gets P[-1]
            history = history + self.position[-history.shape[1] :]
        logits = self.w2(torch.tanh(self.w1(history)))
        logits = logits.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        return torch.softmax(logits, dim=1).nan_to_num(0.0)  # all-padding rows -> zeros

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> Extracted:
        if self.encoder is not None:
            history = self.encoder(history, mask) * mask.unsqueeze(-1)
        attention = self.attention(history, mask)
        interests = torch.einsum("blk,bld->bkd", attention, history)
        if self.tower is not None:
            interests = self.tower(interests)
        return Extracted(interests, attention)
