"""Tensor functions shared by several components: the one masked softmax, the masked
log-mean-exp (a uniform mixture in log space), a row-wise map over the real rows only, the
covariance between rows, and the collapse measure (mean pairwise cosine of a user's
interests)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Softmax over ``dim`` of the entries where ``mask`` (broadcast to ``logits``) is True;
    exactly zero elsewhere. ``mask`` None: a plain softmax.

    NaN policy: a slice with no True entry (a padding-only history) comes out all zero,
    with no NaN in the forward pass or in the gradients; a NaN in the logits is never
    hidden. The entries the mask keeps get exactly torch.softmax's values over them.
    """
    if mask is None:
        return torch.softmax(logits, dim=dim)
    # a finite fill: a masked entry contributes exp(min - max) = 0 when any entry is real,
    # and an all-masked slice gives a uniform softmax that the mask then zeroes
    logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=dim) * mask


def log_mean_exp(values: torch.Tensor, mask: torch.Tensor | None, dim: int) -> torch.Tensor:
    """``log(mean over dim of exp(values))`` over the entries where ``mask`` (broadcast to
    ``values``) is True: log-probabilities mixed with uniform weights over the kept entries.
    ``mask`` None keeps every entry. A slice with no True entry comes out -inf."""
    if mask is None:
        count = torch.tensor(values.shape[dim], dtype=values.dtype, device=values.device)
        return values.logsumexp(dim) - count.log()
    mask = mask.expand_as(values)
    count = mask.sum(dim).to(values.dtype)
    return values.masked_fill(~mask, float("-inf")).logsumexp(dim) - count.log()


def map_real_rows(
    fn: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``fn`` (a row-wise map, (R, m) -> (R, n)) of the rows of ``rows`` (..., m) where
    ``mask`` (...) is True, zeros elsewhere: (..., n).

    For work whose result is masked out downstream (padding positions, inactive
    interests): the rows that count are gathered, mapped and scattered back, so a batch
    that is half padding costs half. The real rows get what ``fn`` gives them in a batch of
    their own, which may round differently in the last bit from ``fn`` of the whole batch;
    gradients reach only the real rows, as masking downstream would leave them.
    """
    flat = rows.reshape(-1, rows.shape[-1])
    index = mask.reshape(-1).nonzero().squeeze(1)
    mapped = fn(flat.index_select(0, index))
    out = mapped.new_zeros(flat.shape[0], mapped.shape[-1]).index_copy(0, index, mapped)
    return out.view(*mask.shape, mapped.shape[-1])


def covariance_matrix(
    rows: torch.Tensor, mask: torch.Tensor | None = None, scale: float | None = None
) -> torch.Tensor:
    """Covariance between the n rows of ``rows`` (..., n, m), each observed over m samples.

    ``mask`` (..., m) bool keeps the real samples (the mean and the products see only
    those); ``scale`` divides the summed products, by default the number of real samples
    (SINE's 1/d; REMI's routing covariance divides by d instead of the history length).
    Returns (..., n, n).
    """
    if mask is None:
        centred = rows - rows.mean(-1, keepdim=True)
        count = rows.shape[-1]
    else:
        weight = mask.unsqueeze(-2).to(rows.dtype)  # (..., 1, m)
        count = weight.sum(-1, keepdim=True).clamp_min(1.0)
        centred = (rows - (rows * weight).sum(-1, keepdim=True) / count) * weight
    products = centred @ centred.transpose(-1, -2)
    return products / (count if scale is None else scale)


def collapse(interests: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
    """docs/protocol.md section 8: each user's mean pairwise cosine of their interests, (B,).

    1.0 means the vectors point the same way (total collapse). With ``active`` (B, K), only
    a user's active interests count, and a user with fewer than two gets NaN. Needs K >= 2.
    """
    k = interests.shape[1]
    if k < 2:
        raise ValueError("collapse needs at least two interests per user")
    if active is None:
        active = torch.ones(interests.shape[:2], dtype=torch.bool, device=interests.device)
    unit = torch.nn.functional.normalize(interests.to(torch.float64), dim=-1)
    weight = (active.unsqueeze(2) & active.unsqueeze(1)).to(torch.float64)
    weight = weight * (1 - torch.eye(k, dtype=torch.float64, device=interests.device))
    cos = unit @ unit.transpose(1, 2)
    pairs = weight.sum((1, 2))
    return (cos * weight).sum((1, 2)) / pairs.where(pairs > 0, torch.nan)
