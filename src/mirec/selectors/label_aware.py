"""Training-time interest selection by label-aware attention (MIND, Li et al., CIKM 2019, eq. 8).

    v_u = V_u softmax(pow(V_u^T e_target, p))

The target item attends over the user's interests; p tunes how hard the choice is: p = 0
averages the interests, p -> infinity picks the closest one (ComiRec's hard argmax).

Deviation: the literal pow(<v_k, e>, p) is undefined for negative dot products and
non-integer p (and flips signs for odd integers). mirec applies the power to the
exponentiated scores instead, softmax_k(p * <v_k, e>) = exp(s_k)^p / sum_j exp(s_j)^p,
which is defined for every score and keeps the paper's limits (p = 0: the mean,
large p: the argmax).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mirec.core.config import Config
from mirec.core.contracts import Selector
from mirec.core.functional import masked_softmax
from mirec.selectors import SELECTORS


def select_by_label_aware_attention(
    interests: torch.Tensor,
    target: torch.Tensor,
    power: float = 1.0,
    active: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, K, d) interests, (B, d) targets -> (B, d) their label-aware mix.

    ``active`` (B, K) bool: interests flagged False get zero weight (each user needs one).
    """
    scores = power * torch.einsum("bkd,bd->bk", interests, target)
    weights = masked_softmax(scores, active, dim=1)
    return torch.einsum("bk,bkd->bd", weights, interests)


def label_aware(power: float) -> Callable[..., torch.Tensor]:
    """A selector ``(interests, target, active=None) -> (B, d)`` with a fixed ``power``,
    for ``InterestModel(selector=label_aware(p))``."""

    def select(
        interests: torch.Tensor, target: torch.Tensor, active: torch.Tensor | None = None
    ) -> torch.Tensor:
        return select_by_label_aware_attention(interests, target, power, active)

    select.__name__ = select.__qualname__ = f"label_aware_p{power:g}"
    return select


@SELECTORS.register("label_aware")
def from_config(config: Config) -> Selector:
    return label_aware(config.label_aware_power)
