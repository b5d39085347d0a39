"""Mean-pooling single-interest extractor: YouTube-DNN (Covington et al., RecSys 2016, §3).

The watch history's embeddings are averaged and passed through a ReLU tower; the output
is the one user vector (K = 1) that the softmax over the catalogue scores against.
"""

from __future__ import annotations

import torch
from torch import nn

from mirec.core.config import Config
from mirec.core.contracts import Extracted, Extractor
from mirec.extractors import EXTRACTORS


@EXTRACTORS.register("mean_pooling")
class MeanPoolingExtractor(Extractor):
    """(B, L, d) history embeddings + (B, L) mask -> one interest: masked mean, then an MLP."""

    num_interests = 1

    def __init__(self, embedding_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or 4 * embedding_dim
        self.tower = nn.Sequential(
            nn.Linear(embedding_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, embedding_dim)
        )

    @classmethod
    def from_config(cls, config: Config, maxlen: int, profile_dim: int = 0) -> MeanPoolingExtractor:
        return cls(config.embedding_dim, config.hidden_dim)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> Extracted:
        weights = mask.unsqueeze(-1).to(history.dtype)
        weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
        mean = (history * weights).sum(1)
        return Extracted(self.tower(mean).unsqueeze(1), weights)
