"""Retrieval aggregation by maximum (ComiRec, KDD 2020, section 3.3; docs/protocol.md section 4).

``score(u, i) = max_k <v_u^k, e_i>``: an item ranks high when any one interest wants it, so
the top-N equals the union of each interest's top-N merged by score.
"""

from __future__ import annotations

import math

import torch


def per_interest_scores(
    interests: torch.Tensor, items: torch.Tensor, active: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, K, d) interests x items -> (B, K, N) scores <v_u^k, e_i>, -inf for an interest a
    user does not have. ``items`` is the catalogue (N, d), or (B, N, d) items per user."""
    equation = "bkd,nd->bkn" if items.dim() == 2 else "bkd,bnd->bkn"
    scores = torch.einsum(equation, interests, items)
    if active is not None:
        scores = scores.masked_fill(~active.unsqueeze(-1), float("-inf"))
    return scores


def max_over_interests(
    interests: torch.Tensor, items: torch.Tensor, active: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, K, d) interests x (N, d) items -> (B, N) scores, the max over (active) interests."""
    return per_interest_scores(interests, items, active).amax(dim=1)


PRODUCT_TILE = 1 << 20
"""Scores per product in :meth:`ScoreTiles.max_scores`: (users x interests) x items of 4 MB
in float32, which stay in cache for the max over interests that reads them next (a tile
the size of a whole chunk goes out to memory and back: measured on CPU, the max then cost
40% of the product's time; with this tile, almost nothing)."""


class ScoreTiles:
    """The same scores as :func:`per_interest_scores` and :func:`max_over_interests`, bit
    for bit (one matrix product over the flattened interests, which is what the einsum
    runs), written into storage reused from one chunk of items to the next, and from batch
    to batch when the caller keeps the object. A fresh (B, K, C) tensor per chunk costs
    about as much as the product itself (the allocator maps new pages and the first write
    faults each one in); measured on CPU, reusing it halves the time of a chunk's scores.

    Each result is a view of that storage, valid until the next call asks for the same
    kind. Ranking needs no gradients, so none are tracked."""

    def __init__(self) -> None:
        self._storage: dict[str, torch.Tensor] = {}

    def _take(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        numel = math.prod(shape)
        held = self._storage.get(name)
        if (
            held is None
            or held.numel() < numel
            or (held.dtype, held.device)
            != (
                like.dtype,
                like.device,
            )
        ):
            held = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._storage[name] = held
        return held[:numel].view(shape)

    @torch.no_grad()
    def per_interest(self, interests: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B, K, d) interests x (C, d) items -> (B, K, C) scores ``<v_u^k, e_i>`` (no
        interest masked)."""
        b, k, d = interests.shape
        out = self._take("per_interest", (b * k, items.shape[0]), items)
        torch.mm(interests.reshape(b * k, d), items.T, out=out)
        return out.view(b, k, -1)

    @torch.no_grad()
    def max_scores(
        self, interests: torch.Tensor, items: torch.Tensor, active: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, K, d) interests x (C, d) items -> (B, C) :func:`max_over_interests`, the
        product taken :data:`PRODUCT_TILE` scores at a time."""
        b, k, d = interests.shape
        n = items.shape[0]
        out = self._take("max", (b, n), items)
        flat = interests.reshape(b * k, d)
        width = max(1, PRODUCT_TILE // (b * k))
        for lo in range(0, n, width):
            hi = min(lo + width, n)
            part = self._take("tile", (b * k, hi - lo), items)
            torch.mm(flat, items[lo:hi].T, out=part)
            per_interest = part.view(b, k, hi - lo)
            if active is not None:
                per_interest.masked_fill_(~active.unsqueeze(-1), float("-inf"))
            torch.amax(per_interest, dim=1, out=out[:, lo:hi])
        return out

    @torch.no_grad()
    def best(self, per_interest: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, C) scores of :meth:`per_interest` -> (B, C) their max over the (active)
        interests; the inactive interests' rows of ``per_interest`` are set to -inf."""
        if active is not None:
            per_interest.masked_fill_(~active.unsqueeze(-1), float("-inf"))
        b, _, c = per_interest.shape
        return torch.amax(per_interest, dim=1, out=self._take("best", (b, c), per_interest))
