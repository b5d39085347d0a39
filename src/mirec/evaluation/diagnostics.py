"""What the K interests are doing, measured over an evaluation split.

The survey (arXiv 2506.15284, sections 6-7) names collapse, the choice of K, explainability
and the long tail as open problems; these diagnostics put a number on each:

* ``collapse``: mean pairwise cosine of a user's interests (docs/protocol.md section 8, in the
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
* ``alignment@N`` (the survey's open question 3: do the explanations match the metadata?)
  and its chance level ``alignment_chance@N``. For user u and an interest k with at least
  one history item assigned to it (as above), let C_k be the top categories of those items:
  the ``ALIGNMENT_CATEGORIES`` = 3 categories carried by most of them (an item with several
  categories counts for each; ties go to the lower category code), i.e. exactly the three
  categories that name the interest in ``mirec inspect``. Let R_k be interest k's own
  top-N, the catalogue ranked by ``<v_u^k, e_i>`` alone with the user's history left out
  (the list ``mirec inspect`` shows under the interest). Then

      alignment_k = |{i in R_k : cats(i) ∩ C_k ≠ ∅}| / N,

  alignment_u is the mean of alignment_k over u's interests with assigned history items,
  and the model's figure the mean over users (with at least one categorised history item).
  The chance level replaces R_k by N items drawn at random in proportion to their training
  popularity: ``chance_k = sum_i p_i [cats(i) ∩ C_k ≠ ∅]``, ``p_i`` item i's share of the
  training interactions (history not left out), averaged the same way. A model whose
  interests recommend within their own themes scores well above its chance level.
* How the K interests share the final top-N, for multi-interest models (K >= 2), with N =
  :data:`LIST_DEPTH` = 50 and the *owner* of a listed item the interest that scores it
  highest (the interest ``mirec recommend`` names beside it;
  :func:`~mirec.retrieval.ranking.best_interest`). The interest vectors' cosine
  (``collapse``) says little about this: one interest can own most of the list while the
  vectors stay apart (the survey's "dominant interest").

  - ``list_overlap@N``: the mean over pairs of active interests of the Jaccard index of
    their own top-N lists (each interest's catalogue ranking with the history left out, as
    ``mirec inspect`` lists them; the first 10 of those lists are the alignment's);
  - ``owning_interests@N``: how many interests own at least one item of the top-N;
  - ``leading_share@N``: the share of the top-N owned by the interest that owns most;
  - ``miscalibration@N``: Steck's miscalibration (Calibrated Recommendations, RecSys 2018,
    equation 3) with interests for genres, ``KL(p || (1 - a) q + a p)``, a = 0.01, p the
    user's history over interests (each history item to the interest it routes to, as
    above and in ``mirec inspect``), q the top-N over owning interests: 0 when the list
    gives each interest the history's share, ``log(1 / a)`` ~ 4.6 at most;
  - ``target_miscalibration@N``: the same with p from the user's targets, each target item
    to the interest that scores it highest (the owner rule): whether the list's split
    matches what the user went on to consume.

  Means over the users with at least two active interests (the overlap) or over all users.
* With the planted number of interests of each user (synthetic data), ``k_error``: the mean
  absolute error of each user's number of active interests K'_u, and the confusion table
  planted K x K'_u.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mirec.core.chunked_top import chunks
from mirec.core.contracts import Extracted
from mirec.core.functional import mean_pairwise_jaccard, miscalibration, owner_counts
from mirec.evaluation.metrics import Targets
from mirec.retrieval.adaptive_k import assign_behaviours, interest_shares
from mirec.retrieval.ranking import best_interest, interest_top_n

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


ALIGNMENT_CATEGORIES = 3
"""An interest's top categories for its alignment: as many as name it in ``mirec inspect``."""
ALIGNMENT_DEPTH = 10
"""N of ``alignment@N``: the length of the per-interest lists ``mirec inspect`` shows."""
LIST_DEPTH = 50
"""N of the list diagnostics (``leading_share@N``, ...): the protocol's longest cutoff."""
CALIBRATION_SMOOTHING = 0.01
"""Steck's a in ``q~ = (1 - a) q + a p``: his own value (RecSys 2018, section 3)."""
LIST_DIAGNOSTICS = (
    "list_overlap",
    "owning_interests",
    "leading_share",
    "miscalibration",
    "target_miscalibration",
)
"""The list diagnostics' names, each ``@``:data:`LIST_DEPTH` (module docstring)."""


def list_diagnostics(
    extracted: Extracted,
    items: torch.Tensor,
    top: torch.Tensor,
    history_share: torch.Tensor,
    targets: Targets,
    interest_top: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The list diagnostics of the module docstring for one batch of users, each (B,): of
    their (B, N) final top-N, with their (B, K) ``history_share`` of each interest
    (:func:`~mirec.retrieval.adaptive_k.interest_shares`), their ``targets``, the (n_items,
    d) item vectors and, for the overlap, each interest's own (B, K, N) top-N."""
    k, n = extracted.interests.shape[1], top.shape[1]
    counts = owner_counts(best_interest(extracted, items, top), k)
    listed = counts / n
    out = {
        "owning_interests": (counts > 0).sum(1).to(torch.float64),
        "leading_share": listed.amax(1),
        "miscalibration": miscalibration(history_share, listed, CALIBRATION_SMOOTHING),
        "target_miscalibration": miscalibration(
            target_shares(extracted, items, targets), listed, CALIBRATION_SMOOTHING
        ),
    }
    if interest_top is not None:
        out["list_overlap"] = mean_pairwise_jaccard(interest_top, extracted.active)
    return out


def target_shares(extracted: Extracted, items: torch.Tensor, targets: Targets) -> torch.Tensor:
    """(B, K) each user's targets over the interests: each target item to the interest that
    scores it highest (the owner rule of :func:`~mirec.retrieval.ranking.best_interest`),
    as shares of the user's targets."""
    owners = targets.owners
    per_target = Extracted(
        extracted.interests[owners],
        active=None if extracted.active is None else extracted.active[owners],
        log_partition=None if extracted.log_partition is None else extracted.log_partition[owners],
    )
    interest = best_interest(per_target, items, targets.items.unsqueeze(1))[:, 0]
    k = extracted.interests.shape[1]
    counts = torch.zeros(targets.n_users, k, dtype=torch.float64, device=items.device)
    counts.index_put_(
        (owners, interest), torch.ones_like(interest, dtype=counts.dtype), accumulate=True
    )
    return counts / counts.sum(1, keepdim=True).clamp_min(1)


def interest_category_counts(
    assignment: torch.Tensor, history_categories: torch.Tensor, k: int
) -> torch.Tensor:
    """(B, L) interest per history item (-1: padding) and (B, L, C) bool categories of each
    history item -> (B, K, C) how many of each interest's items carry each category."""
    routed = F.one_hot(assignment.clamp_min(0), k) & (assignment >= 0).unsqueeze(-1)
    # float32 counts are exact up to 2^24, far beyond any history length; half double's memory
    return torch.einsum("blk,blc->bkc", routed.float(), history_categories.float())


def top_categories(counts: torch.Tensor, n: int = ALIGNMENT_CATEGORIES) -> torch.Tensor:
    """(B, K, C) category counts -> (B, K, C) bool: each interest's ``n`` most common
    categories (fewer when it has fewer), ties to the lower code as ``mirec inspect`` orders
    them."""
    c = counts.shape[-1]
    # count first, then the lower code: count * C + (C - 1 - code) is distinct per category
    key = counts * c + torch.arange(c - 1, -1, -1, dtype=counts.dtype, device=counts.device)
    chosen = torch.zeros_like(counts, dtype=torch.bool)
    chosen.scatter_(-1, key.topk(min(n, c), dim=-1).indices, True)
    return chosen & (counts > 0)


def interest_alignment(
    top: torch.Tensor, recommended: torch.Tensor, item_categories: torch.Tensor
) -> torch.Tensor:
    """(B, K, C) top categories of each interest, (B, K, N) its recommended item indices and
    the (n_items + 1, C) bool category matrix -> (B, K) share of the N recommendations with
    a category among the interest's top ones; NaN for an interest without top categories."""
    hit = (item_categories[recommended] & top.unsqueeze(2)).any(-1)
    score = hit.double().mean(-1)
    return score.where(top.any(-1), torch.nan)


def alignment_chance(
    top: torch.Tensor, item_categories: torch.Tensor, popularity: torch.Tensor
) -> torch.Tensor:
    """(B, K, C) top categories, the (n_items + 1, C) category matrix and (n_items + 1,)
    item weights summing to 1 -> (B, K) the weight of the items with a top category: the
    expected alignment of items drawn by that weight; NaN as in :func:`interest_alignment`."""
    # an interest has at most ALIGNMENT_CATEGORIES top categories: OR those columns of the
    # category matrix rather than multiply by all C of them (C ~ 1,000 on Amazon), and sum
    # in float32 (a relative error ~1e-7 on a share; float64 made this 3x slower)
    picked = top.to(torch.uint8).topk(min(ALIGNMENT_CATEGORIES, top.shape[-1]), dim=-1)
    by_category = item_categories.T.contiguous()  # (C, n_items + 1): a row per category
    weight = popularity.to(torch.float32)
    chance = torch.empty(top.shape[:2], dtype=torch.float64, device=top.device)
    for k in range(top.shape[1]):  # one interest at a time, (B, chunk) at most
        codes, valid = picked.indices[:, k], picked.values[:, k].bool()
        total = None
        for lo, hi in chunks(by_category.shape[1]):
            inside = torch.zeros(top.shape[0], hi - lo, dtype=torch.bool, device=top.device)
            for j in range(codes.shape[1]):
                inside |= by_category[codes[:, j], lo:hi] & valid[:, j : j + 1]
            part = inside.to(torch.float32) @ weight[lo:hi]
            total = part if total is None else total + part
        chance[:, k] = total
    return chance.where(top.any(-1), torch.nan)


def interest_alignments(
    extracted: Extracted,
    histories: torch.Tensor,
    assignment: torch.Tensor,
    items: torch.Tensor,
    item_categories: torch.Tensor,
    recommended: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Users' (B, L) histories, what the extractor made of them, the (B, L) assignment of
    :func:`~mirec.retrieval.adaptive_k.assign_behaviours`, the (n_items, d) item vectors
    and the (n_items + 1, C) category matrix -> (B, K) ``alignment_k`` of the module
    docstring (NaN for an interest without categorised history items) and the (B, K, C)
    top categories it was measured against. ``recommended``: each interest's own top
    :data:`ALIGNMENT_DEPTH` with the history left out, when the ranking already has them
    (:func:`~mirec.retrieval.ranking.rank_catalogue`); else they are ranked here."""
    k = extracted.interests.shape[1]
    if recommended is None:
        recommended = interest_top_n(extracted, items, ALIGNMENT_DEPTH, histories)
    top = top_categories(interest_category_counts(assignment, item_categories[histories], k))
    return interest_alignment(top, recommended, item_categories), top


class Diagnostics:
    """Accumulates the diagnostics batch by batch as the evaluator ranks the users."""

    def __init__(
        self,
        popularity: np.ndarray,
        item_category: torch.Tensor | None = None,
        planted_interests: np.ndarray | None = None,
        cutoffs: tuple[int, ...] = (20, 50),
        item_categories: torch.Tensor | None = None,
    ) -> None:
        """``popularity`` (n_items + 1,) training counts; ``item_category`` (n_items + 1,)
        category codes (-1 none), for purity and NMI; ``planted_interests`` each evaluation
        user's true number of interests, in evaluation order (synthetic data);
        ``item_categories`` (n_items + 1, C) bool, all of each item's categories, for the
        alignment."""
        self.tail = torch.from_numpy(tail_items(popularity))
        weight = torch.as_tensor(np.asarray(popularity), dtype=torch.float64).clone()
        weight[0] = 0.0  # the padding row
        self.draw_weight = weight / weight.sum().clamp_min(1e-12)
        self.item_category = item_category
        self.item_categories = item_categories
        self.planted = planted_interests
        self.cutoffs = cutoffs
        self.seen = {n: torch.zeros(len(popularity), dtype=torch.bool) for n in cutoffs}
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.k_pairs: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def interest_depth(self) -> int:
        """How long a list of each interest's own items :meth:`update` reads (the list
        overlap's, whose first :data:`ALIGNMENT_DEPTH` are the alignment's): the evaluator
        asks the ranking for them."""
        return LIST_DEPTH

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
        hits: torch.Tensor,
        targets: Targets,
        items: torch.Tensor,
        interest_top: torch.Tensor | None = None,
    ) -> None:
        """One batch: users ``lo..lo + B`` of the split, their (B, L) histories, what the
        extractor made of them, their (B, depth) ranked item indices, which of those are
        targets ((B, depth) ``hits``), the users' ``targets``, the model's (n_items, d) item
        vectors and, when the ranking made them, each interest's own top
        :attr:`interest_depth` items with the history left out ((B, K, depth))."""
        device = top.device
        mask = histories > 0
        k = extracted.interests.shape[1]
        tail = self.tail.to(device)
        tail_targets = targets.count(tail)
        for n in self.cutoffs:
            ranked = top[:, :n]
            self.seen[n][ranked.flatten().unique().cpu()] = True
            in_tail = tail[ranked]
            self._add(f"tail_share@{n}", in_tail.to(torch.float64).mean(1))
            found = (hits[:, :n] & in_tail).sum(1).to(torch.float64)
            self._add(f"tail_recall@{n}", found / tail_targets.where(tail_targets > 0, torch.nan))
        assignment = assign_behaviours(extracted, mask)
        shares = interest_shares(assignment, k)
        self._add("effective_interests", effective_interests(shares, extracted.active))
        if k >= 2 and top.shape[1] >= LIST_DEPTH:
            figures = list_diagnostics(
                extracted, items, top[:, :LIST_DEPTH], shares, targets, interest_top
            )
            for name, values in figures.items():
                self._add(f"{name}@{LIST_DEPTH}", values)
        if self.item_category is not None:
            category = self.item_category.to(device)[histories].masked_fill(~mask, -1)
            table = contingency(assignment, category, k)
            enough = table.sum((1, 2)) >= 2
            self._add("purity", purity(table).masked_fill(~enough, torch.nan))
            self._add("nmi", nmi(table).masked_fill(~enough, torch.nan))
        if self.item_categories is not None:
            aligned = None if interest_top is None else interest_top[:, :, :ALIGNMENT_DEPTH]
            self._update_alignment(histories, extracted, assignment, items, aligned)
        if self.planted is not None:
            active = extracted.active
            chosen = np.full(top.shape[0], k) if active is None else active.sum(1).cpu().numpy()
            self.k_pairs.append((self.planted[lo : lo + top.shape[0]], chosen))

    def _update_alignment(
        self,
        histories: torch.Tensor,
        extracted: Extracted,
        assignment: torch.Tensor,
        items: torch.Tensor,
        interest_top: torch.Tensor | None,
    ) -> None:
        """``alignment@N`` and its chance level for one batch (module docstring)."""
        categories = self.item_categories.to(histories.device)
        aligned, top = interest_alignments(
            extracted, histories, assignment, items, categories, interest_top
        )
        chance = alignment_chance(top, categories, self.draw_weight.to(histories.device))
        self._add(f"alignment@{ALIGNMENT_DEPTH}", aligned.nanmean(1))
        self._add(f"alignment_chance@{ALIGNMENT_DEPTH}", chance.nanmean(1))

    def result(self) -> dict[str, object]:
        def mean(name: str) -> float | None:
            return self.sums[name] / self.counts[name] if self.counts.get(name) else None

        out: dict[str, object] = {
            name: mean(name)
            for name in (
                "effective_interests",
                "purity",
                "nmi",
                *(f"{name}@{LIST_DEPTH}" for name in LIST_DIAGNOSTICS),
            )
            if name in self.sums
        }
        if self.item_categories is not None:  # None, not absent, when no user qualifies
            for name in (f"alignment@{ALIGNMENT_DEPTH}", f"alignment_chance@{ALIGNMENT_DEPTH}"):
                out[name] = mean(name)
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
