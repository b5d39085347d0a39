"""MostPopular: every user gets the items most often interacted with by training users.

It is written as a one-interest retriever with d = 1 (user vector 1, item vector = count),
so the same evaluator scores it exactly like a learned model. Equally popular items are
ranked by item index, lowest first: docs/protocol.md leaves score ties open, and this is the
order that reproduces the reference MostPopular figures of docs/models.md to the digit on
every dataset (``torch.topk`` alone returns tied items in no documented order).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mirec.core.contracts import Extracted


class MostPopular(nn.Module):
    num_interests = 1
    uses_user_rows = False  # the same list for everyone: no user is looked up
    scorer = None  # it scores items by their counts, with no interests to merge

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.register_buffer("counts", torch.zeros(n_items, 1, dtype=torch.float64))

    def fit(self, item_counts: np.ndarray) -> MostPopular:
        """Take the training interactions per item index (N + 1,), row 0 the padding."""
        counts = torch.from_numpy(np.asarray(item_counts)[1:])
        self.counts.copy_(counts.to(self.counts.dtype).unsqueeze(1))
        return self

    def extract(self, histories: torch.Tensor, users: torch.Tensor | None = None) -> Extracted:
        return Extracted(torch.ones(histories.shape[0], 1, 1, device=self.counts.device))

    def item_vectors(self) -> torch.Tensor:
        """Counts plus a tie-break below 1 that favours the lower item index (float64 keeps
        it exact for any realistic count and catalogue)."""
        n = self.counts.shape[0]
        tie_break = torch.arange(n, 0, -1, dtype=torch.float64, device=self.counts.device)
        return self.counts + (tie_break / (n + 1)).unsqueeze(1)

    def retrieval_interests(self, extracted: Extracted) -> Extracted:
        return extracted

    def score(self, extracted: Extracted, items: torch.Tensor) -> torch.Tensor:
        return extracted.interests[:, 0].to(items.dtype) @ items.T
