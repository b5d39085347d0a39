"""Full-catalogue exact evaluation (docs/protocol.md sections 4, 5 and 8).

A user's score for item i is the model's aggregation of their K interests, by default
``max_k <v_u^k, e_i>`` (docs/protocol.md section 4); the top-N list is the N best items by that
score. Everything is batched matrix products and ``topk`` on the model's device; users
are processed in chunks, and each chunk of users meets the catalogue one chunk of items at
a time (:mod:`mirec.retrieval.ranking`), so memory does not grow with users x catalogue.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from mirec.aggregators.max_score import ScoreTiles
from mirec.core.contracts import Retriever
from mirec.core.functional import collapse
from mirec.data.examples import EvaluationSet
from mirec.errors import ConfigError, DataError
from mirec.evaluation.diagnostics import LIST_DEPTH, Diagnostics, list_diagnostics
from mirec.evaluation.metrics import CUTOFFS, Targets, category_diversity, ranking_metrics
from mirec.retrieval.adaptive_k import routed_shares
from mirec.retrieval.ranking import rank_catalogue, users_per_chunk


@dataclass(frozen=True)
class EvaluationResult:
    metrics: dict[str, float]
    """Averages over users: ``recall@20``, ``ndcg@20``, ``hitrate@20``, ... (fractions)."""
    collapse: float | None
    """Mean pairwise cosine of interests, averaged over users; None when K = 1."""
    n_users: int
    seconds: float
    interest_counts: dict[int, int] | None = None
    """Users by their number of active interests K'_u (dynamic K); None when every user
    has all K."""
    diagnostics: dict[str, object] | None = None
    """What :class:`~mirec.evaluation.diagnostics.Diagnostics` measured, when asked."""
    per_user: dict[str, np.ndarray] | None = None
    """When asked: each metric's (n_users,) values in the evaluation set's user order, whose
    means are :attr:`metrics`, and a multi-interest model's list diagnostics per user."""

    @property
    def users_per_second(self) -> float:
        return self.n_users / max(self.seconds, 1e-9)


@torch.no_grad()
def evaluate(
    model: Retriever,
    eval_set: EvaluationSet,
    *,
    device: torch.device | str | None = None,
    cutoffs: tuple[int, ...] = CUTOFFS,
    mask_history: bool = False,
    item_category: torch.Tensor | None = None,
    diversity_lambda: float | None = None,
    quota_alpha: float | None = None,
    quota_half_life: float | None = None,
    diagnostics: Diagnostics | None = None,
    per_user: bool = False,
    progress: bool = False,
) -> EvaluationResult:
    """Score every evaluation user against the whole catalogue and average the metrics.

    ``mask_history=True`` removes history items from the candidates (a labelled variant;
    the protocol's figures keep them). ``device`` defaults to the model's.
    ``item_category`` (n_items + 1,) category code per item index adds Diversity@N;
    ``diversity_lambda`` then builds each top-N list by ComiRec's diversity-controllable
    greedy aggregation (:mod:`mirec.retrieval.diversity_greedy`) instead of by score;
    ``quota_alpha`` gives each interest its quota of the list (:mod:`mirec.retrieval.quota`),
    its share of the history weighted to recent items by ``quota_half_life``.
    ``diagnostics`` accumulates the interest diagnostics over the same ranked lists.
    ``per_user=True`` keeps every user's metrics as well (:attr:`EvaluationResult.per_user`),
    and for a multi-interest model the list diagnostics of the final top-50 that need no
    interest lists (``owning_interests@50``, ``leading_share@50``, ``miscalibration@50``,
    ``target_miscalibration@50``: :func:`~mirec.evaluation.diagnostics.list_diagnostics`).
    """
    start = time.perf_counter()
    was_training = model.training
    if was_training:
        model.eval()  # dropout off, and MIND's routing logits fixed
    items = model.item_vectors()
    device = items.device if device is None else torch.device(device)
    items = items.to(device)
    n_items = items.shape[0]
    depth = max(cutoffs)
    if n_items < depth:
        raise DataError(
            f"the catalogue has {n_items} items after filtering, fewer than the cutoff {depth}"
        )
    if diversity_lambda is not None and item_category is None:
        raise DataError("diversity_lambda needs item categories, and this dataset has none")
    if diversity_lambda is not None and mask_history:
        raise ConfigError("diversity_lambda and mask_history cannot be combined")
    if quota_alpha is not None and diversity_lambda is not None:
        raise ConfigError("quota_alpha and diversity_lambda are two merges: set one of them")
    if item_category is not None:
        item_category = item_category.to(device)
    n_targets_all = torch.from_numpy(np.diff(eval_set.target_offsets))
    histories_all = eval_set.histories
    users_all = None
    if model.uses_user_rows:  # MIND with user profiles looks them up by row
        users_all = torch.as_tensor(np.asarray(eval_set.users, dtype=np.int64))
    k = model.num_interests
    batch = users_per_chunk(k, n_items)
    sums: dict[str, float] = {}
    kept: dict[str, list[np.ndarray]] = {}
    collapse_sum, collapse_users = 0.0, 0
    active_counts = torch.zeros(k + 1, dtype=torch.long)
    dynamic = False
    tiles = ScoreTiles()  # one score storage for every batch
    bar = tqdm(total=len(eval_set), desc="evaluate", unit="user", disable=not progress, leave=False)
    for lo in range(0, len(eval_set), batch):
        histories = histories_all[lo : lo + batch].to(device)
        if users_all is None:
            extracted = model.extract(histories)
        else:
            extracted = model.extract(histories, users_all[lo : lo + batch].to(device))
        b = histories.shape[0]
        ranked = rank_catalogue(
            model,
            extracted,
            items,
            depth,
            blocked=histories if mask_history else None,
            item_category=item_category,
            diversity_lambda=diversity_lambda,
            quota_alpha=quota_alpha,
            quota_half_life=quota_half_life,
            histories=histories,
            interest_n=0 if diagnostics is None else diagnostics.interest_depth,
            interest_blocked=histories,
            tiles=tiles,
        )
        top = ranked.top
        targets = _targets(eval_set, lo, b, device)
        hits = targets.hits(top)
        if diagnostics is not None:
            diagnostics.update(
                lo, histories, extracted, top, hits, targets, items, ranked.interest_top
            )
        user_metrics = ranking_metrics(hits, n_targets_all[lo : lo + b], cutoffs)
        if item_category is not None:
            user_metrics.update(category_diversity(item_category[top], cutoffs))
        for name, values in user_metrics.items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
            if per_user:
                kept.setdefault(name, []).append(values.double().cpu().numpy())
        if per_user and k >= 2 and depth >= LIST_DEPTH:
            shares = routed_shares(extracted, histories)
            lists = list_diagnostics(extracted, items, top[:, :LIST_DEPTH], shares, targets)
            for name, values in lists.items():
                kept.setdefault(f"{name}@{LIST_DEPTH}", []).append(values.cpu().numpy())
        if extracted.active is not None:
            dynamic = True
            active_counts += torch.bincount(extracted.active.sum(1).cpu(), minlength=k + 1)
        if k >= 2:
            cosines = collapse(extracted.interests, extracted.active)
            collapse_sum += float(cosines.nansum())
            collapse_users += int((~cosines.isnan()).sum())
        bar.update(b)
    bar.close()
    if was_training:
        model.train()
    n = len(eval_set)
    return EvaluationResult(
        metrics={name: total / n for name, total in sums.items()},
        collapse=collapse_sum / collapse_users if collapse_users else None,
        n_users=n,
        seconds=time.perf_counter() - start,
        interest_counts=(
            {i: int(c) for i, c in enumerate(active_counts.tolist()) if c} if dynamic else None
        ),
        diagnostics=None if diagnostics is None else diagnostics.result(),
        per_user={name: np.concatenate(parts) for name, parts in kept.items()}
        if per_user
        else None,
    )


def _targets(eval_set: EvaluationSet, lo: int, b: int, device: torch.device) -> Targets:
    """The target sets of users ``lo .. lo + b - 1`` of the split."""
    offsets = eval_set.target_offsets[lo : lo + b + 1]
    items = torch.from_numpy(eval_set.target_items[offsets[0] : offsets[-1]]).to(device)
    owners = torch.repeat_interleave(
        torch.arange(b, device=device), torch.from_numpy(np.diff(offsets)).to(device)
    )
    return Targets(items, owners, b)
