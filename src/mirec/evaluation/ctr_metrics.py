"""CTR metrics: AUC, GAUC and LogLoss.

* ``AUC``: the probability that a random positive scores above a random negative, ties
  counting one half: the Mann-Whitney statistic ``(R_pos - n_pos (n_pos + 1) / 2) /
  (n_pos n_neg)`` with ``R_pos`` the sum of the positives' ranks, tied scores sharing their
  average rank (equal to scikit-learn's ``roc_auc_score``).
* ``GAUC`` (Zhou et al., DIN, KDD 2018, eq. 5): each user's AUC over their own rows,
  averaged with weights equal to the user's number of rows. A user whose rows are all one
  class has no AUC: they are skipped and counted (``gauc_skipped_users``).
* ``LogLoss``: mean binary cross-entropy of the predicted probabilities, clipped to
  [1e-7, 1 - 1e-7].
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-7


def _average_ranks(scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """1-based ranks of ``scores`` within each group, ties sharing their average rank."""
    order = np.lexsort((scores, groups))
    s, g = scores[order], groups[order]
    # a run of equal (group, score) pairs shares one rank
    new_run = np.ones(len(s), dtype=bool)
    new_run[1:] = (s[1:] != s[:-1]) | (g[1:] != g[:-1])
    run = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_length = np.diff(np.append(run_start, len(s)))
    new_group = np.ones(len(s), dtype=bool)
    new_group[1:] = g[1:] != g[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(s)), 0))
    # positions within the group of the run's first and last rows, 1-based, averaged
    first = run_start[run] - group_start + 1
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = first + (run_length[run] - 1) / 2
    return ranks


def grouped_auc(
    labels: np.ndarray, scores: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: (group ids, AUC (NaN for a one-class group), number of rows)."""
    labels = np.asarray(labels) > 0.5
    scores = np.asarray(scores, dtype=np.float64)
    ids, inverse = np.unique(np.asarray(groups), return_inverse=True)
    ranks = _average_ranks(scores, inverse)
    n = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    n_pos = np.bincount(inverse, weights=labels, minlength=len(ids))
    rank_sum = np.bincount(inverse, weights=ranks * labels, minlength=len(ids))
    n_neg = n - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return ids, auc, n


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    _, value, _ = grouped_auc(labels, scores, np.zeros(len(labels), dtype=np.int64))
    if np.isnan(value[0]):
        raise ValueError("AUC needs both positive and negative rows")
    return float(value[0])


def gauc(labels: np.ndarray, scores: np.ndarray, users: np.ndarray) -> tuple[float, int]:
    """(GAUC, number of users skipped for having rows of one class only)."""
    _, values, n = grouped_auc(labels, scores, users)
    valid = ~np.isnan(values)
    if not valid.any():
        raise ValueError("GAUC needs a user with both positive and negative rows")
    return float((values[valid] * n[valid]).sum() / n[valid].sum()), int((~valid).sum())


def logloss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON)
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def ctr_metrics(labels: np.ndarray, logits: np.ndarray, users: np.ndarray) -> dict[str, float]:
    """``{"auc", "gauc", "logloss", "gauc_skipped_users"}`` of one split's rows."""
    probabilities = 1 / (1 + np.exp(-np.asarray(logits, dtype=np.float64)))
    value, skipped = gauc(labels, logits, users)
    return {
        "auc": auc(labels, logits),
        "gauc": value,
        "logloss": logloss(labels, probabilities),
        "gauc_skipped_users": skipped,
    }
