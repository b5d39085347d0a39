"""AUC, GAUC and LogLoss against scikit-learn and a per-user loop."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from mirec.evaluation.ctr_metrics import auc, ctr_metrics, gauc, logloss


def test_auc_equals_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    scores = np.round(rng.normal(size=2000) + labels * 0.5, 1)  # rounded: many ties
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_by_hand():
    # positives 0.9, 0.4; negatives 0.4, 0.1: pairs (0.9>0.4, 0.9>0.1, 0.4=0.4, 0.4>0.1)
    assert auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.4, 0.1])) == pytest.approx(3.5 / 4)
    with pytest.raises(ValueError, match="both positive and negative"):
        auc(np.array([1, 1]), np.array([0.2, 0.3]))


def test_gauc_equals_a_per_user_loop_weighted_by_rows():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 60, 3000)
    labels = rng.integers(0, 2, 3000)
    scores = np.round(rng.normal(size=3000) + labels, 2)
    users[users == 7] = 7
    labels[users == 7] = 1  # one user with positives only: skipped and counted
    total, weight, skipped = 0.0, 0, 0
    for u in np.unique(users):
        rows = users == u
        if labels[rows].min() == labels[rows].max():
            skipped += 1
            continue
        total += roc_auc_score(labels[rows], scores[rows]) * rows.sum()
        weight += rows.sum()
    value, n_skipped = gauc(labels, scores, users)
    assert value == pytest.approx(total / weight, abs=1e-12)
    assert n_skipped == skipped >= 1


def test_logloss_equals_scikit_learn_and_clips():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 500)
    p = rng.uniform(size=500)
    assert logloss(labels, p) == pytest.approx(log_loss(labels, p), abs=1e-12)
    assert np.isfinite(logloss(np.array([1, 0]), np.array([0.0, 1.0])))


def test_ctr_metrics_from_logits():
    labels = np.array([1, 0, 1, 0])
    logits = np.array([2.0, -1.0, 0.5, 1.0])
    out = ctr_metrics(labels, logits, np.array([0, 0, 1, 1]))
    assert out["auc"] == pytest.approx(roc_auc_score(labels, logits))
    assert out["gauc"] == pytest.approx((1.0 * 2 + 0.0 * 2) / 4)
    assert out["logloss"] == pytest.approx(log_loss(labels, 1 / (1 + np.exp(-logits))))
