"""Small layers shared by several models: DIN's PReLU MLP and the mean embedding of a row
of codes."""

from __future__ import annotations

import torch
from torch import nn


def prelu_mlp(width: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """Linear + PReLU layers of sizes ``hidden``, then one output: DIN's MLPs (Zhou et al.,
    KDD 2018; its Dice activation is a data-adaptive PReLU)."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.PReLU()]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def mean_embedding(table: nn.Embedding, codes: torch.Tensor) -> torch.Tensor:
    """(..., C) codes, 0 for none -> (..., d) the mean embedding of each row's codes (an
    EmbeddingBag-style mean: an item's categories)."""
    count = (codes > 0).sum(-1, keepdim=True).clamp_min(1)
    return table(codes).sum(-2) / count
