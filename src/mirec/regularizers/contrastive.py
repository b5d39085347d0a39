"""Re-contrast regularizer of Re4 (Zhang et al., WWW 2022, section 3.2).

Each history item is assigned to the interest that routes it most strongly; an interest
must then pick out its own items from the whole history, by InfoNCE over cosines:

    L_con = - mean_{(u, k), P_k != {}} 1/|P_k| sum_{i in P_k}
              log( exp(cos(v_k, e_i)/tau) / sum_{j in history} exp(cos(v_k, e_j)/tau) )

which pulls an interest towards the items it was built from and away from the items of
the other interests, so interests stay distinct without being forced orthogonal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mirec.core.contracts import Extracted
from mirec.regularizers import REGULARIZERS


@REGULARIZERS.register("contrastive")
def contrastive_penalty(
    extracted: Extracted, history: torch.Tensor, mask: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    if extracted.routing is None:
        raise ValueError("the contrastive regularizer needs an extractor that reports routing")
    k = extracted.interests.shape[1]
    cos = torch.einsum(
        "bkd,bld->bkl", F.normalize(extracted.interests, dim=-1), F.normalize(history, dim=-1)
    )
    logp = (cos / temperature).masked_fill(~mask.unsqueeze(1), float("-inf")).log_softmax(-1)
    owner = F.one_hot(extracted.routing.argmax(-1), k).transpose(1, 2)  # (B, K, L)
    owner = owner * mask.unsqueeze(1)
    if extracted.active is not None:
        owner = owner * extracted.active.unsqueeze(-1)
    size = owner.sum(-1)  # |P_k|, (B, K)
    per_interest = -(logp.nan_to_num(0.0, neginf=0.0) * owner).sum(-1) / size.clamp_min(1)
    has_items = size > 0
    return per_interest[has_items].mean() if has_items.any() else logp.new_zeros(())
