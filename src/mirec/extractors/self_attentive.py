"""Self-attentive multi-interest extractor: ComiRec-SA (Cen et al., KDD 2020, section 3.2.2).

For a history H in R^{L x d} with positional embeddings P,

    A = softmax( W_2^T tanh(W_1 (H + P)^T) )^T     in R^{L x K}     (eq. 9)
    V_u = A^T H                                    in R^{K x d}     (eq. 10)

Each of the K attention heads reads the whole sequence and pools it into one interest.
Padding positions get zero attention, so they never change an interest. As in the
authors' code, positions only steer the attention; the pooled values are the plain item
embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from mirec.extractors.base import Extracted


class SelfAttentiveExtractor(nn.Module):
    """(B, L, d) history embeddings + (B, L) mask -> K interests and their attention."""

    def __init__(
        self, embedding_dim: int, num_interests: int, maxlen: int, hidden_dim: int | None = None
    ) -> None:
        super().__init__()
        hidden_dim = hidden_dim or 4 * embedding_dim
        self.num_interests = num_interests
        self.position = nn.Parameter(torch.empty(maxlen, embedding_dim))
        self.w1 = nn.Linear(embedding_dim, hidden_dim)
        self.w2 = nn.Linear(hidden_dim, num_interests)
        nn.init.normal_(self.position, std=embedding_dim**-0.5)

    def attention(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, K) attention of each interest over positions; zero on padding."""
        # positions are aligned to the end: the most recent item always gets P[-1]
        logits = self.w2(torch.tanh(self.w1(history + self.position[-history.shape[1] :])))
        logits = logits.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        return torch.softmax(logits, dim=1).nan_to_num(0.0)  # all-padding rows -> zeros

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> Extracted:
        attention = self.attention(history, mask)
        return Extracted(torch.einsum("blk,bld->bkd", attention, history), attention)
