"""Tensor functions shared by several components: the one masked softmax, the masked
log-mean-exp (a uniform mixture in log space), a row-wise map over the real rows only, the
covariance between rows, the collapse measure (mean pairwise cosine of a user's
interests), and the math of how interests share a list: the Jaccard overlap of their lists,
the items each owns, Steck's miscalibration and largest-remainder seats."""

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


def mean_pairwise_jaccard(lists: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K, N) each interest's list of item indices (no repeats within a list) -> (B,) the
    mean over pairs of (active) interests of their Jaccard index, shared items over all the
    items of the two lists: 1 when every interest lists the same items, 0 when no two share
    one; NaN for a user with fewer than two active interests."""
    b, k, n = lists.shape
    if active is None:
        active = torch.ones(b, k, dtype=torch.bool, device=lists.device)
    total = torch.zeros(b, dtype=torch.float64, device=lists.device)
    pairs = torch.zeros(b, dtype=torch.float64, device=lists.device)
    for i in range(k):  # K is small; each pair is one (B, N, N) comparison
        for j in range(i + 1, k):
            shared = (lists[:, i, :, None] == lists[:, j, None, :]).any(-1).sum(-1)
            jaccard = shared.double() / (2 * n - shared).double()
            both = (active[:, i] & active[:, j]).double()
            total += jaccard * both
            pairs += both
    return total / pairs.where(pairs > 0, torch.nan)


def owner_counts(owners: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N) the interest (0..k-1) that owns each listed item -> (B, k) float64 how many
    items of each user's list each interest owns."""
    counts = torch.zeros(owners.shape[0], k, dtype=torch.float64, device=owners.device)
    return counts.scatter_add_(1, owners, torch.ones_like(owners, dtype=torch.float64))


def miscalibration(p: torch.Tensor, q: torch.Tensor, smoothing: float = 0.01) -> torch.Tensor:
    """Steck's miscalibration (Calibrated Recommendations, RecSys 2018, equation 3):
    ``C_KL(p, q) = sum_g p_g log(p_g / q~_g)`` with ``q~ = (1 - a) q + a p`` and a =
    ``smoothing``, so that a group the list leaves out costs ``log(1 / a)`` times its share
    rather than infinity. (B, G) distributions p (the user's) and q (the list's), rows
    summing to 1 -> (B,) in nats; 0 when the list matches p, groups with ``p_g = 0`` add
    nothing."""
    p, q = p.to(torch.float64), q.to(torch.float64)
    mixed = (1 - smoothing) * q + smoothing * p
    ratio = torch.where(p > 0, p / mixed.clamp_min(1e-300), torch.ones_like(p))
    return (p * ratio.log()).sum(-1)


def largest_remainder(weights: torch.Tensor, n: int) -> torch.Tensor:
    """(B, K) non-negative weights, each row with a positive sum -> (B, K) int64 seats summing
    to ``n`` per row, in proportion to the weights by the largest-remainder (Hamilton)
    method: each gets the floor of its exact share ``n w_k / sum_j w_j``, and the seats
    left go one each to the largest fractional parts (ties to the lower k). Fractional
    parts equal to 6 decimals are ties: shares computed in float32 (3/10 is 0.30000001)
    must not break a tie by their rounding."""
    weights = weights.to(torch.float64)
    exact = n * weights / weights.sum(-1, keepdim=True)
    seats = exact.floor()
    left = n - seats.sum(-1, keepdim=True)
    fraction = (exact - seats).round(decimals=6)
    order = fraction.argsort(dim=-1, descending=True, stable=True)
    place = order.argsort(-1)  # each interest's position by fractional part
    return (seats + (place < left).to(seats.dtype)).long()
