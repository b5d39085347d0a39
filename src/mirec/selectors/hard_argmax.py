"""Training-time interest selection by hard argmax (ComiRec, KDD 2020, eq. 11).

    v_u = V_u[:, argmax_k <V_u^k, e_target>]

Only the interest closest to the target item is trained on that example, which lets the
K interests specialise instead of all chasing every target.
"""

from __future__ import annotations

import torch

from mirec.core.config import Config
from mirec.core.contracts import Selector
from mirec.selectors import SELECTORS


def select_by_argmax(
    interests: torch.Tensor, target: torch.Tensor, active: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, K, d) interests, (B, d) target embeddings -> (B, d) the best-matching (active)
    interest."""
    scores = torch.einsum("bkd,bd->bk", interests, target)
    if active is not None:
        scores = scores.masked_fill(~active, float("-inf"))
    best = scores.argmax(dim=1)
    return interests[torch.arange(interests.shape[0], device=interests.device), best]


@SELECTORS.register("hard_argmax")
def from_config(config: Config) -> Selector:
    return select_by_argmax
