"""Target-aware attention: the candidate item picks the vectors that matter to it.

DIN's activation unit (Zhou et al., KDD 2018, section 4.3): for vectors v_1..v_M (history
items in DIN, interests in a multi-interest CTR model) and a candidate embedding c,

    w_j = MLP([v_j; c; v_j - c; v_j * c])        u = sum_j w_j v_j

The weights are not normalised by a softmax, as in the paper, so the sum keeps how
strongly the user's history speaks to the candidate. Masked vectors get weight 0. This is
the survey's recommendation aggregation (arXiv 2506.15284, section 5): the candidate
decides which interest speaks.
"""

from __future__ import annotations

import torch
from torch import nn

from mirec.aggregators import AGGREGATORS, CTR, Level
from mirec.core.config import Config
from mirec.core.layers import prelu_mlp


@AGGREGATORS.register("target")
class TargetAttention(nn.Module):
    level = Level.TARGET
    tasks = (CTR,)  # retrieval has no candidate to attend with

    def __init__(self, embedding_dim: int, hidden: tuple[int, ...] = (80, 40)) -> None:
        super().__init__()
        self.mlp = prelu_mlp(4 * embedding_dim, hidden)

    @classmethod
    def from_config(cls, config: Config) -> TargetAttention:
        return cls(config.embedding_dim)

    def forward(
        self, vectors: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, M, d) vectors, (B, d) candidate, (B, M) bool mask -> (B, d)."""
        query = target.unsqueeze(1).expand_as(vectors)
        weights = self.mlp(torch.cat([vectors, query, vectors - query, vectors * query], -1))
        weights = weights.squeeze(-1)
        if mask is not None:
            weights = weights * mask.to(weights.dtype)
        return torch.einsum("bm,bmd->bd", weights, vectors)
