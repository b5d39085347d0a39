"""MostPopular: every user gets the items most often interacted with by training users.

It is written as a one-interest retriever with d = 1 (user vector 1, item vector = count),
so the same evaluator scores it exactly like a learned model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mirec.extractors.base import Extracted


class MostPopular(nn.Module):
    num_interests = 1

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.register_buffer("counts", torch.zeros(n_items, 1))

    def fit(self, item_counts: np.ndarray) -> MostPopular:
        """Take the training interactions per item index (N + 1,), row 0 the padding."""
        counts = torch.from_numpy(np.asarray(item_counts)[1:])
        self.counts.copy_(counts.to(self.counts.dtype).unsqueeze(1))
        return self

    def extract(self, histories: torch.Tensor, users: torch.Tensor | None = None) -> Extracted:
        return Extracted(torch.ones(histories.shape[0], 1, 1, device=self.counts.device))

    def item_vectors(self) -> torch.Tensor:
        return self.counts

    def retrieval_interests(self, extracted: Extracted) -> Extracted:
        return extracted

    def score(self, extracted: Extracted, items: torch.Tensor) -> torch.Tensor:
        return (extracted.interests[:, 0] @ items.T).float()
