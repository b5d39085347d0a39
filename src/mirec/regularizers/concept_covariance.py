"""Concept covariance regularizer of SINE (Tan et al., WSDM 2021, section 3.4, eq. 11).

SINE keeps its pool of L concept prototypes C in R^{L x d} spread with the covariance
regularizer of DeCov (Cogswell et al., ICLR 2016): with each prototype a variable observed
over the d embedding coordinates,

    M   = 1/d (C - C_bar)(C - C_bar)^T                 in R^{L x L}
    L_c = 1/2 ( ||M||_F^2 - ||diag(M)||_2^2 )

where C_bar holds each prototype's mean over its d coordinates. L_c is half the sum of
the squared off-diagonal covariances: zero for uncorrelated prototypes (orthogonal after
centring), largest when all prototypes are the same vector. The diagonal (each prototype's
own variance) is not penalised, so the regularizer cannot win by shrinking the pool.

Centring each prototype over its coordinates (rather than subtracting the mean prototype)
is what makes identical prototypes costly: centred across the pool, they would all be
zero and cost nothing.
"""

from __future__ import annotations

import torch

from mirec.core.contracts import Extracted
from mirec.core.functional import covariance_matrix
from mirec.regularizers import REGULARIZERS


@REGULARIZERS.register("concept_covariance")
def concept_covariance_penalty(
    extracted: Extracted, history: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """SINE's L_c (eq. 11) over the extractor's prototype pool; ``history`` and ``mask`` unused.

    The pool is shared by all users, so the penalty is one number per batch, not averaged.
    """
    if extracted.prototypes is None:
        raise ValueError(
            "the concept covariance regularizer needs an extractor with a prototype pool "
            "(Extracted.prototypes, e.g. SINE's SparseInterestExtractor); this one has none"
        )
    covariance = covariance_matrix(extracted.prototypes)  # M, (L, L)
    diagonal = torch.diagonal(covariance, dim1=-2, dim2=-1)
    return 0.5 * (covariance.square().sum() - diagonal.square().sum())
