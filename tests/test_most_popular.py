"""MostPopular against the reference figures of ../shared/ANCHORS.md, and its tie rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirec.core.contracts import Extracted
from mirec.data.examples import training_item_counts
from mirec.data.prepare import prepare
from mirec.evaluation.evaluator import evaluate
from mirec.models.most_popular import MostPopular


def test_equally_popular_items_rank_by_lower_index():
    model = MostPopular(5).fit(np.array([0, 3, 7, 7, 3, 1]))  # items 1..5
    scores = model.score(Extracted(torch.ones(1, 1, 1)), model.item_vectors())
    # counts 3, 7, 7, 3, 1: the two 7s, then the two 3s, each pair lower index first
    assert torch.topk(scores, 5).indices.tolist() == [[1, 2, 0, 3, 4]]


# (dataset, Recall@20, Recall@50, NDCG@50, HitRate@50) from ANCHORS.md
ANCHORS = [
    ("ml-100k", 0.0750, 0.1647, 0.1020, 0.8000),
    ("amazon-toys", 0.0218, 0.0408, 0.0148, 0.0695),
]


@pytest.mark.parametrize(("dataset", "r20", "r50", "ndcg50", "hr50"), ANCHORS)
def test_most_popular_reproduces_the_anchors(shared_data, dataset, r20, r50, ndcg50, hr50):
    data = prepare(dataset, data_dir=shared_data)
    model = MostPopular(data.sequences.n_items)
    model.fit(training_item_counts(data.sequences, data.split.train))
    metrics = evaluate(model, data.test).metrics
    measured = [metrics[k] for k in ("recall@20", "recall@50", "ndcg@50", "hitrate@50")]
    assert measured == pytest.approx([r20, r50, ndcg50, hr50], abs=5e-5)
