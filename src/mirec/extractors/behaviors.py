"""DIN's "extractor" (Zhou et al., KDD 2018): every history item stays its own vector
(K = L), for target attention to weigh against the candidate. CTR only: the vectors are
the history itself, not interests to search the catalogue with."""

from __future__ import annotations

import torch

from mirec.core.config import Config
from mirec.core.contracts import Extracted, Extractor
from mirec.extractors import EXTRACTORS


@EXTRACTORS.register("behaviors")
class BehaviorsExtractor(Extractor):
    """(B, L, d) history embeddings + (B, L) mask -> the same L vectors, padding inactive."""

    num_interests = 1  # target attention pools the L behaviours into one vector
    ctr_only = True

    @classmethod
    def from_config(cls, config: Config, maxlen: int, profile_dim: int = 0) -> BehaviorsExtractor:
        return cls()

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> Extracted:
        return Extracted(history, active=mask)
