"""SASRec's causal self-attention encoder (Kang and McAuley, ICDM 2018, section III).

    E   = dropout(item embeddings * sqrt(d) + learned positions)
    H_b = H_{b-1} + Attention(LN(H_{b-1}))   then   H_b = H_b + FFN(LN(H_b))   (b = 1..n)

with pre-layer-norm blocks (as in the authors' code), one causal attention per block, and a
final layer norm. Position i attends to the real items at positions <= i; a padding
position attends only to itself, so no row of the attention is empty and no NaN reaches
the gradients.

:class:`SASRecExtractor` is the single-interest baseline (K = 1: the state of the most
recent position). With ``sequence_training`` it scores the next item at every position of
a window in one pass, as the paper trains (section III-E), though with mirec's softmax in
place of its binary cross-entropy with one negative; otherwise one position per example.
The encoder also serves as the contextual layer under a multi-interest extractor
(``encoder_layers`` > 0 in the self-attentive extractor).
"""

from __future__ import annotations

import torch
from torch import nn

from mirec.core.config import Config
from mirec.core.contracts import Extracted, Extractor
from mirec.extractors import EXTRACTORS


class CausalTransformer(nn.Module):
    """(B, L, d) embeddings + (B, L) mask -> (B, L, d) contextual states."""

    def __init__(
        self, embedding_dim: int, maxlen: int, layers: int = 2, heads: int = 1, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.scale = embedding_dim**0.5
        self.heads = heads
        self.position = nn.Parameter(torch.empty(maxlen, embedding_dim))
        nn.init.normal_(self.position, std=embedding_dim**-0.5)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                embedding_dim,
                heads,
                dim_feedforward=embedding_dim,
                dropout=dropout,
                activation="relu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(embedding_dim)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = history.shape[1]
        x = self.dropout(history * self.scale + self.position[-length:]) * mask.unsqueeze(-1)
        causal = torch.ones(length, length, dtype=torch.bool, device=history.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=history.device)
        allowed = (causal & mask.unsqueeze(1)) | eye  # (B, L, L): real earlier keys, or self
        blocked = (~allowed).repeat_interleave(self.heads, dim=0)
        for block in self.blocks:
            x = block(x, src_mask=blocked)
        return self.norm(x)


def states_or_positions(
    embedding_dim: int, maxlen: int, encoder_layers: int, dropout: float
) -> tuple[CausalTransformer | None, nn.Parameter | None]:
    """What a history's items become before interests read them: a causal transformer of
    ``encoder_layers`` layers (its states carry their own positions), or with 0 layers a
    learned position embedding (maxlen, d) added to the raw items. Exactly one of the two
    is returned, created in this order so that seeded models draw the same weights."""
    if encoder_layers > 0:
        return CausalTransformer(embedding_dim, maxlen, encoder_layers, dropout=dropout), None
    position = nn.Parameter(torch.empty(maxlen, embedding_dim))
    nn.init.normal_(position, std=embedding_dim**-0.5)
    return None, position


@EXTRACTORS.register("causal_transformer")
class SASRecExtractor(Extractor):
    """SASRec as an extractor: one interest, the encoder state at the most recent item."""

    num_interests = 1
    causal = True  # the state at position t reads positions <= t: every_position works

    def __init__(
        self, embedding_dim: int, maxlen: int, layers: int = 2, heads: int = 1, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.encoder = CausalTransformer(embedding_dim, maxlen, layers, heads, dropout)

    @classmethod
    def from_config(cls, config: Config, maxlen: int, profile_dim: int = 0) -> SASRecExtractor:
        return cls(config.embedding_dim, maxlen, config.encoder_layers, dropout=config.dropout)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> Extracted:
        # the last column is the most recent item, whose state has read the whole history
        return Extracted(self.encoder(history, mask)[:, -1:])

    def every_position(
        self, history: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, Extracted]:
        """Sequence training, as the paper trains (section III-E): the state at every
        position is the user vector for the next item, (B, L, 1, d); and the last
        position's :class:`Extracted` (what :meth:`forward` returns)."""
        states = self.encoder(history, mask).unsqueeze(2)
        return states, Extracted(states[:, -1])
