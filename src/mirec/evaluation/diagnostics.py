"""What the K interests are doing, measured over an evaluation split.

The survey (arXiv 2506.15284, sections 6-7) names collapse, the choice of K, explainability
and the long tail as open problems; these diagnostics put a number on each:

* ``collapse``: mean pairwise cosine of a user's interests (PROTOCOL.md section 8, in the
  evaluator).
* ``effective_interests``: exp of the entropy of the interests' shares of the history,
  ``exp(-sum_k m_k log m_k)`` with ``m_k`` the share of the history items that route to
  interest k more than to any other: K for an even split, 1 when one interest takes
  everything. The share counts items by where they route most, not by soft routing mass,
  because a self-attentive extractor gives every interest the same total attention
  (each interest's weights sum to 1), so its soft shares are even even when the interests
  attend to the same items; the hard shares are not.
* ``purity`` and ``nmi``: each history item is assigned to the interest it routes to most;
  purity is the share of items whose interest's majority category is theirs (items without
  a category left out), NMI the normalised mutual information between interest and
  category (arithmetic normalisation, as scikit-learn's default), both per user, averaged
  over users with at least two categorised history items. On the synthetic data the
  categories are the planted interests, so NMI says how well routing recovers them.
* ``coverage@N``: the share of the catalogue that appears in at least one user's top-N.
* ``tail_share@N`` and ``tail_recall@N``: the tail is the 80% least popular items by
  training interactions (ties broken as MostPopular breaks them); the share of a top-N
  that is tail, and Recall@N counting tail targets only, over users with a tail target.
* With the planted number of interests of each user (synthetic data), ``k_error``: the mean
  absolute error of each user's number of active interests K'_u, and the confusion table
  planted K x K'_u.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mirec.aggregators.adaptive_k import assign_behaviours, interest_shares
from mirec.core.contracts import Extracted

TAIL_SHARE = 0.8
"""The tail: this share of the catalogue, least popular first."""


def effective_interests(mass: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K) interest shares -> (B,) ``exp(entropy)`` over the active interests."""
    mass = mass.to(torch.float64).clamp_min(0)
    if active is not None:
        mass = mass * active
    share = mass / mass.sum(1, keepdim=True).clamp_min(1e-12)
    entropy = -(share * share.clamp_min(1e-300).log()).sum(1)
    return entropy.exp()


def contingency(assignment: torch.Tensor, category: torch.Tensor, k: int) -> torch.Tensor:
    """(B, L) interest per item and (B, L) category code (< 0: none) -> (B, K, C) counts of
    each user's (interest, category) pairs, C the distinct categories of the batch."""
    keep = (assignment >= 0) & (category >= 0)
    codes, dense = torch.unique(category[keep], return_inverse=True)
    table = torch.zeros(assignment.shape[0], k, max(len(codes), 1), dtype=torch.float64)
    table = table.to(assignment.device)
    rows = torch.arange(assignment.shape[0], device=assignment.device)
    rows = rows.unsqueeze(1).expand_as(assignment)[keep]
    table.index_put_(
        (rows, assignment[keep], dense), torch.ones_like(dense, dtype=table.dtype), accumulate=True
    )
    return table


def purity(table: torch.Tensor) -> torch.Tensor:
    """(B, K, C) contingency -> (B,) ``sum_k max_c n_kc / n``; NaN for a user with no items."""
    total = table.sum((1, 2))
    return table.amax(2).sum(1) / total.where(total > 0, torch.nan)


def nmi(table: torch.Tensor) -> torch.Tensor:
    """(B, K, C) contingency -> (B,) normalised mutual information between the two labels,
    ``I(A; C) / ((H(A) + H(C)) / 2)``, with scikit-learn's conventions: 1 when both sides
    have a single label, 0 when the information is 0; NaN for a user with no items."""
    total = table.sum((1, 2), keepdim=True)
    p = table / total.clamp_min(1)
    pa, pc = p.sum(2, keepdim=True), p.sum(1, keepdim=True)
    ratio = torch.where(p > 0, p / (pa * pc).clamp_min(1e-300), torch.ones_like(p))
    mi = (p * ratio.log()).sum((1, 2)).clamp_min(0)

    def entropy(q: torch.Tensor) -> torch.Tensor:
        return -(q * q.clamp_min(1e-300).log()).flatten(1).sum(1)

    ha, hc = entropy(pa), entropy(pc)
    single = ((pa > 0).flatten(1).sum(1) == 1) & ((pc > 0).flatten(1).sum(1) == 1)
    score = torch.where(mi > 1e-12, mi / ((ha + hc) / 2).clamp_min(1e-300), torch.zeros_like(mi))
    score = torch.where(single, torch.ones_like(score), score)
    return score.where(total.flatten() > 0, torch.nan)


def tail_items(popularity: np.ndarray) -> np.ndarray:
    """(n_items + 1,) training counts (row 0 padding) -> bool mask of the tail items: all but
    the ``1 - TAIL_SHARE`` most popular, popularity ties going to the lower index."""
    counts = np.asarray(popularity)[1:]
    n = len(counts)
    order = np.lexsort((np.arange(n), -counts))  # most popular first, then lower index
    tail = np.ones(n + 1, dtype=bool)
    tail[0] = False
    tail[order[: n - math.floor(TAIL_SHARE * n)] + 1] = False
    return tail


class Diagnostics:
    """Accumulates the diagnostics batch by batch as the evaluator ranks the users."""

    def __init__(
        self,
        popularity: np.ndarray,
        item_category: torch.Tensor | None = None,
        planted_interests: np.ndarray | None = None,
        cutoffs: tuple[int, ...] = (20, 50),
    ) -> None:
        """``popularity`` (n_items + 1,) training counts; ``item_category`` (n_items + 1,)
        category codes (-1 none); ``planted_interests`` each evaluation user's true number
        of interests, in evaluation order (synthetic data)."""
        self.tail = torch.from_numpy(tail_items(popularity))
        self.item_category = item_category
        self.planted = planted_interests
        self.cutoffs = cutoffs
        self.seen = {n: torch.zeros(len(popularity), dtype=torch.bool) for n in cutoffs}
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.k_pairs: list[tuple[np.ndarray, np.ndarray]] = []

    def _add(self, name: str, values: torch.Tensor) -> None:
        values = values.to(torch.float64)
        valid = ~values.isnan()
        self.sums[name] = self.sums.get(name, 0.0) + float(values[valid].sum())
        self.counts[name] = self.counts.get(name, 0) + int(valid.sum())

    def update(
        self,
        lo: int,
        histories: torch.Tensor,
        extracted: Extracted,
        top: torch.Tensor,
        targets: torch.Tensor,
    ) -> None:
        """One batch: users ``lo..lo + B`` of the split, their (B, L) histories, what the
        extractor made of them, their (B, depth) ranked item indices and (B, n_items + 1)
        target mask."""
        device = top.device
        mask = histories > 0
        k = extracted.interests.shape[1]
        tail = self.tail.to(device)
        tail_targets = (targets & tail).sum(1).to(torch.float64)
        for n in self.cutoffs:
            ranked = top[:, :n]
            self.seen[n][ranked.flatten().unique().cpu()] = True
            in_tail = tail[ranked]
            self._add(f"tail_share@{n}", in_tail.to(torch.float64).mean(1))
            found = (targets.gather(1, ranked) & in_tail).sum(1).to(torch.float64)
            self._add(f"tail_recall@{n}", found / tail_targets.where(tail_targets > 0, torch.nan))
        assignment = assign_behaviours(extracted, mask)
        shares = interest_shares(assignment, k)
        self._add("effective_interests", effective_interests(shares, extracted.active))
        if self.item_category is not None:
            category = self.item_category.to(device)[histories].masked_fill(~mask, -1)
            table = contingency(assignment, category, k)
            enough = table.sum((1, 2)) >= 2
            self._add("purity", purity(table).masked_fill(~enough, torch.nan))
            self._add("nmi", nmi(table).masked_fill(~enough, torch.nan))
        if self.planted is not None:
            active = extracted.active
            chosen = np.full(top.shape[0], k) if active is None else active.sum(1).cpu().numpy()
            self.k_pairs.append((self.planted[lo : lo + top.shape[0]], chosen))

    def result(self) -> dict[str, object]:
        def mean(name: str) -> float | None:
            return self.sums[name] / self.counts[name] if self.counts.get(name) else None

        out: dict[str, object] = {
            name: mean(name)
            for name in ("effective_interests", "purity", "nmi")
            if name in self.sums
        }
        for n, seen in self.seen.items():
            out[f"coverage@{n}"] = int(seen[1:].sum()) / (len(seen) - 1)
            out[f"tail_share@{n}"] = mean(f"tail_share@{n}")
            out[f"tail_recall@{n}"] = mean(f"tail_recall@{n}")
            out[f"tail_recall_users@{n}"] = self.counts.get(f"tail_recall@{n}", 0)
        if self.k_pairs:
            planted = np.concatenate([p for p, _ in self.k_pairs])
            chosen = np.concatenate([c for _, c in self.k_pairs])
            out["k_error"] = float(np.abs(planted - chosen).mean())
            out["k_confusion"] = {
                int(p): {
                    int(c): int(((planted == p) & (chosen == c)).sum()) for c in np.unique(chosen)
                }
                for p in np.unique(planted)
            }
        return out
