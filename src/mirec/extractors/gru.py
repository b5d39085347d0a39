"""Recurrent single-interest extractor: GRU4Rec (Hidasi et al., ICLR 2016, section 3.1).

A GRU reads the history in order (eq. 1-4 of the paper, the standard GRU cell):

    h_t  = (1 - z_t) h_{t-1} + z_t h~_t
    z_t  = sigmoid(W_z x_t + U_z h_{t-1})                update gate
    h~_t = tanh(W x_t + U (r_t * h_{t-1}))
    r_t  = sigmoid(W_r x_t + U_r h_{t-1})                reset gate

and the final hidden state, projected to d, is the one user vector (K = 1) scored against
the item embeddings. This is the item-embedding variant used by the later sequential
benchmarks (SASRec, RecBole): the paper's one-hot input, session-parallel mini-batches
and ranking losses are replaced by learned item embeddings and the training loss of the
rest of mirec. Dropout applies to the input embeddings and between stacked GRU layers.

The GRU reads only the real items: the left-padded history is reordered so that they come
first, then packed, so padding never changes the output. An all-padding row is read as one
zero vector, which gives a finite state. ONNX has no packed sequences, so during ONNX export
the GRU reads the whole right-padded window and each row's state is taken at its last real
step instead (the same vector; ``mirec export`` checks it against this packed run).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from mirec.core.config import Config
from mirec.core.contracts import Extracted, Extractor
from mirec.extractors import EXTRACTORS


@EXTRACTORS.register("gru")
class GRUExtractor(Extractor):
    """(B, L, d) history embeddings + (B, L) mask -> one interest: the GRU's final state."""

    num_interests = 1

    def __init__(
        self,
        embedding_dim: int,
        hidden_dim: int | None = None,
        num_layers: int = 1,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        hidden_dim = hidden_dim or embedding_dim
        self.dropout = nn.Dropout(dropout)
        # nn.GRU's own dropout acts only between layers (and warns when there is one layer)
        self.gru = nn.GRU(
            embedding_dim,
            hidden_dim,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.project = nn.Linear(hidden_dim, embedding_dim)

    @classmethod
    def from_config(cls, config: Config, maxlen: int, profile_dim: int = 0) -> GRUExtractor:
        return cls(config.embedding_dim, config.hidden_dim, dropout=config.dropout)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> Extracted:
        # zero the padding: an all-padding row is read as one (zero) step, never as garbage
        history = history.masked_fill(~mask.unsqueeze(-1), 0.0)
        # move the real items to the front in their original order: the left padding becomes
        # right padding (and any other padding layout is handled too). The keys are distinct,
        # so no stable sort is needed (ONNX has none)
        length = history.shape[1]
        keys = (~mask).long() * length + torch.arange(length, device=mask.device)
        order = torch.argsort(keys, dim=1)
        history = self.dropout(history.gather(1, order.unsqueeze(-1).expand_as(history)))
        lengths = mask.sum(1).clamp_min(1)  # at least one step per row
        if torch.onnx.is_in_onnx_export():
            # ONNX has no packed sequences: run the GRU over the whole right-padded window
            # and read each row's top-layer state at its last real step, which the padding
            # after it cannot change (the same vector as the packed run's final state)
            states, _ = self.gru(history)
            last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, states.shape[-1])
            return Extracted(self.project(states.gather(1, last)))
        packed = pack_padded_sequence(
            history, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, final = self.gru(packed)  # (num_layers, B, hidden): the state after each row's end
        return Extracted(self.project(final[-1]).unsqueeze(1))
