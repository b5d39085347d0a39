"""Disagreement regularizer: the mean pairwise cosine similarity of a user's interests.

    L_dis = 1/(K(K-1)) * sum_{j != k} cos(v_u^j, v_u^k)

the same quantity as the collapse diagnostic (docs/protocol.md section 8), used as a penalty,
in the spirit of the disagreement regularization of multi-head attention (Li et al.,
EMNLP 2018) that the survey (arXiv 2506.15284, section 4) lists against collapse.
"""

from __future__ import annotations

import torch

from mirec.core.contracts import Extracted
from mirec.core.functional import collapse
from mirec.regularizers import REGULARIZERS


@REGULARIZERS.register("disagreement")
def disagreement_penalty(
    extracted: Extracted, history: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean over users (with two or more active interests) of their mean pairwise cosine."""
    value = collapse(extracted.interests, extracted.active).nanmean()
    return value.nan_to_num(0.0).to(history.dtype)  # no user with two interests: no penalty
