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
carry their own positions; the K heads then pool those states. Since each state reads only
earlier items, the heads can also pool every prefix at once (``every_position``: for
position t, each head's softmax runs over positions <= t), so ``sequence_training`` scores
the next item at every position of a window in one pass, as SASRec trains.

With ``tower=True`` (not in the paper) each pooled interest then goes through MIND's ReLU
layers (Li et al., CIKM 2019, section 4.2), Linear(d, hidden) -> ReLU -> Linear(hidden, d),
shared by the K interests. A pooled interest is a convex mix of history embeddings, so
without the tower it always scores the user's own history items highly; the tower lets it
move away from them.
"""

from __future__ import annotations

import torch
from torch import nn

from mirec.core.config import Config
from mirec.core.contracts import Extracted, Extractor
from mirec.core.functional import map_real_rows, masked_softmax
from mirec.extractors import EXTRACTORS
from mirec.extractors.causal_transformer import states_or_positions


@EXTRACTORS.register("self_attentive")
class SelfAttentiveExtractor(Extractor):
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
        self.encoder, self.position = states_or_positions(
            embedding_dim, maxlen, encoder_layers, dropout
        )
        self.w1 = nn.Linear(embedding_dim, hidden_dim)
        self.w2 = nn.Linear(hidden_dim, num_interests)
        self.tower = None
        if tower:
            self.tower = nn.Sequential(
                nn.Linear(embedding_dim, hidden_dim),
                nn.ReLU(),
                nn.Linear(hidden_dim, embedding_dim),
            )

    @classmethod
    def from_config(
        cls, config: Config, maxlen: int, profile_dim: int = 0
    ) -> SelfAttentiveExtractor:
        return cls(
            config.embedding_dim,
            config.num_interests,
            maxlen,
            config.hidden_dim,
            config.encoder_layers,
            config.dropout,
            tower=config.interest_tower,
        )

    @property
    def causal(self) -> bool:
        """True when an interest at position t can be read from positions <= t only (with
        the causal encoder), which :meth:`every_position` needs."""
        return self.encoder is not None

    def _values_and_logits(
        self, history: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the heads pool, (B, L, d), and their logits W_2^T tanh(W_1 .), (B, L, K)."""
        if self.encoder is not None:
            history = self.encoder(history, mask) * mask.unsqueeze(-1)
        steer = history
        if self.position is not None:
            # positions are aligned to the end: the most recent item always gets P[-1]
            steer = history + self.position[-history.shape[1] :]
        # in training, the padding's logits are not computed: every softmax over positions
        # masks them out, and training histories are about half padding (amazon-beauty's:
        # 9.6 real items of 20 on average); eval mode keeps the dense form, which the ONNX
        # export traces
        if self.training:
            return history, map_real_rows(self._logits, steer, mask)
        return history, self._logits(steer)

    def _logits(self, steer: torch.Tensor) -> torch.Tensor:
        return self.w2(torch.tanh(self.w1(steer)))

    def attention(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, K) attention of each interest over positions; zero on padding."""
        return masked_softmax(self._values_and_logits(history, mask)[1], mask.unsqueeze(-1), 1)

    def _towered(self, interests: torch.Tensor) -> torch.Tensor:
        return interests if self.tower is None else self.tower(interests)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> Extracted:
        values, logits = self._values_and_logits(history, mask)
        attention = masked_softmax(logits, mask.unsqueeze(-1), 1)
        interests = torch.einsum("blk,bld->bkd", attention, values)
        return Extracted(self._towered(interests), attention)

    def every_position(
        self, history: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, Extracted]:
        """Sequence training: the K interests after every prefix, (B, L, K, d), each pooled
        over the states at positions <= its own, and the last position's :class:`Extracted`
        (what :meth:`forward` returns). Needs the causal encoder (:attr:`causal`)."""
        if self.encoder is None:
            raise ValueError("every_position needs the causal encoder (encoder_layers > 0)")
        values, logits = self._values_and_logits(history, mask)
        length = history.shape[1]
        earlier = torch.ones(length, length, dtype=torch.bool, device=history.device).tril()
        allowed = earlier & mask.unsqueeze(1)  # (B, T, S): real items up to position t
        # (B, T, S, K): for each position t, each head's softmax over s <= t
        attention = masked_softmax(logits.unsqueeze(1), allowed.unsqueeze(-1), 2)
        interests = self._towered(torch.einsum("btsk,bsd->btkd", attention, values))
        return interests, Extracted(interests[:, -1], attention[:, -1])
