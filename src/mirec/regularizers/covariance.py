"""Routing regularization of REMI (Xie et al., RecSys 2023, section 4.2).

REMI observes *routing collapse*: an interest attends to a single history item. It
penalises the variance of each interest's routing weights over the history: with
A_u in R^{K x L} the routing (or attention) matrix and C_u = (A_u - mean_L A_u)
(A_u - mean_L A_u)^T / d its covariance across positions,

    L_RR = sum_u || diag(C_u) ||_2^2

summed over the users of the batch, as in the authors' code, so the published weight
(lambda = 100) means what it meant there; the training loss itself is a batch mean, so the
penalty's pull grows with the batch size. Only real positions enter the mean and the
covariance, so padding does not dilute the penalty.
"""

from __future__ import annotations

import torch

from mirec.core.contracts import Extracted
from mirec.core.functional import covariance_matrix
from mirec.regularizers import REGULARIZERS


@REGULARIZERS.register("covariance")
def routing_covariance_penalty(
    extracted: Extracted, history: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    if extracted.routing is None:
        raise ValueError("the covariance regularizer needs an extractor that reports routing")
    # rows: each interest's routing over the history positions, (B, K, L)
    covariance = covariance_matrix(extracted.routing.transpose(1, 2), mask, history.shape[-1])
    variance = torch.diagonal(covariance, dim1=-2, dim2=-1)  # diag(C_u), (B, K)
    return (variance**2).sum()
