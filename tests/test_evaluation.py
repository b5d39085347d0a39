"""The evaluator against hand-computed cases (PROTOCOL.md sections 4, 5 and 8)."""

import math

import numpy as np
import pytest
import torch

from mirec.aggregators.max_score import max_over_interests
from mirec.core.contracts import Extracted
from mirec.core.functional import collapse
from mirec.data.examples import EvaluationSet
from mirec.errors import ConfigError, DataError
from mirec.evaluation.evaluator import evaluate
from mirec.evaluation.metrics import category_diversity, ranking_metrics
from mirec.retrieval import ranking


class FixedRetriever:
    """User j (history [j + 1]) has the interests ``user_interests[j]``; items are fixed."""

    uses_user_rows = False
    scorer = None  # it scores by itself (score below), as the popularity baseline does
    training = False

    def __init__(self, user_interests: torch.Tensor, items: torch.Tensor) -> None:
        self.user_interests = user_interests
        self.items = items
        self.num_interests = user_interests.shape[1]

    def extract(self, histories: torch.Tensor) -> Extracted:
        return Extracted(self.user_interests[histories[:, -1] - 1])

    def item_vectors(self) -> torch.Tensor:
        return self.items

    def retrieval_interests(self, extracted: Extracted) -> Extracted:
        return extracted

    def score(self, extracted: Extracted, items: torch.Tensor) -> torch.Tensor:
        return max_over_interests(extracted.interests, items, extracted.active)


def eval_set(targets: list[list[int]], histories: list[list[int]] | None = None) -> EvaluationSet:
    """Users 0..n-1 whose last history slot carries their own index + 1."""
    n = len(targets)
    hist = torch.tensor(histories) if histories else torch.zeros(n, 2, dtype=torch.long)
    hist[:, -1] = torch.arange(1, n + 1)
    counts = [len(t) for t in targets]
    return EvaluationSet(
        users=np.arange(n),
        histories=hist,
        target_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        target_items=np.array([i for t in targets for i in t], dtype=np.int64),
    )


def ranked_catalogue(n_items: int = 60) -> torch.Tensor:
    """d = 1 items whose score for interest [1] ranks item 1 first, item 2 second, ..."""
    return torch.tensor([[100.0 - i] for i in range(1, n_items + 1)])


def test_hand_computed_single_user():
    # ranking 1, 2, ..., 60; targets {1, 3, 55}: hits at ranks 1 and 3 within the top 50
    model = FixedRetriever(torch.tensor([[[1.0]]]), ranked_catalogue())
    result = evaluate(model, eval_set([[1, 3, 55]]))
    dcg = 1 / math.log2(2) + 1 / math.log2(4)  # 1.5
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)  # 2.1309
    assert result.metrics["recall@20"] == pytest.approx(2 / 3)
    assert result.metrics["recall@50"] == pytest.approx(2 / 3)
    assert result.metrics["hitrate@20"] == 1.0
    assert result.metrics["ndcg@20"] == pytest.approx(dcg / idcg)
    assert result.metrics["ndcg@50"] == pytest.approx(0.703918, abs=1e-6)
    assert result.collapse is None


def test_more_targets_than_cutoff():
    # 59 targets (items 2..60) against N = 20: the ideal DCG stops at rank 20, not 59
    model = FixedRetriever(torch.tensor([[[1.0]]]), ranked_catalogue())
    result = evaluate(model, eval_set([list(range(2, 61))]))
    idcg20 = sum(1 / math.log2(r + 1) for r in range(1, 21))
    dcg20 = sum(1 / math.log2(r + 1) for r in range(2, 21))
    idcg50 = sum(1 / math.log2(r + 1) for r in range(1, 51))
    dcg50 = sum(1 / math.log2(r + 1) for r in range(2, 51))
    assert result.metrics["recall@20"] == pytest.approx(19 / 59)
    assert result.metrics["recall@50"] == pytest.approx(49 / 59)
    assert result.metrics["ndcg@20"] == pytest.approx(dcg20 / idcg20)
    assert result.metrics["ndcg@50"] == pytest.approx(dcg50 / idcg50)


def test_no_hit_and_averaging_over_users():
    # user 0 finds its only target at rank 1; user 1's only target (item 60) ranks last
    model = FixedRetriever(torch.tensor([[[1.0]], [[1.0]]]), ranked_catalogue())
    result = evaluate(model, eval_set([[1], [60]]))
    assert result.metrics["recall@50"] == pytest.approx(0.5)
    assert result.metrics["hitrate@20"] == pytest.approx(0.5)
    assert result.metrics["ndcg@20"] == pytest.approx(0.5)


def test_max_over_interests_changes_the_ranking():
    # interests e1 and e2; item 3 = (0.6, 0.6) would win a summed score (1.2) but under the
    # max it scores 0.6, below item 2 (0.95) and item 1 (0.9); the rest score -1
    items = torch.full((60, 2), -1.0)
    items[0] = torch.tensor([0.9, 0.0])
    items[1] = torch.tensor([0.0, 0.95])
    items[2] = torch.tensor([0.6, 0.6])
    model = FixedRetriever(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), items)
    result = evaluate(model, eval_set([[1]]))
    assert result.metrics["ndcg@20"] == pytest.approx(1 / math.log2(3))  # item 1 at rank 2
    single = FixedRetriever(torch.tensor([[[1.0, 1.0]]]), items)  # the summed score
    assert evaluate(single, eval_set([[1]])).metrics["ndcg@20"] == pytest.approx(0.5)  # rank 3
    assert result.collapse == pytest.approx(0.0)


def test_inactive_interests_do_not_score():
    # interest 2 would rank item 2 first, but the user does not have it (dynamic K)
    items = torch.full((60, 2), -1.0)
    items[0], items[1] = torch.tensor([0.5, 0.0]), torch.tensor([0.0, 0.9])
    interests = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])

    class OneActive(FixedRetriever):
        def extract(self, histories):
            return Extracted(self.user_interests, active=torch.tensor([[True, False]]))

    assert evaluate(FixedRetriever(interests, items), eval_set([[1]])).metrics[
        "ndcg@20"
    ] == pytest.approx(1 / math.log2(3))
    one_active = evaluate(OneActive(interests, items), eval_set([[1]]))
    assert one_active.metrics["ndcg@20"] == 1.0
    assert one_active.interest_counts == {1: 1}  # the distribution of K'_u
    assert evaluate(FixedRetriever(interests, items), eval_set([[1]])).interest_counts is None


def test_history_masking_is_optional_and_labelled():
    # history holds item 1 (rank 1): masked, target item 3 moves from rank 3 to rank 2
    model = FixedRetriever(torch.tensor([[[1.0]]]), ranked_catalogue())
    plain = evaluate(model, eval_set([[3]], histories=[[1, 0]]))
    masked = evaluate(model, eval_set([[3]], histories=[[1, 0]]), mask_history=True)
    assert plain.metrics["ndcg@20"] == pytest.approx(1 / math.log2(4))
    assert masked.metrics["ndcg@20"] == pytest.approx(1 / math.log2(3))


def test_user_chunks_do_not_change_results(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    n_users, n_items = 37, 80
    model = FixedRetriever(torch.randn(n_users, 3, 8, generator=gen), torch.randn(n_items, 8))
    rng = np.random.default_rng(0)
    targets = [
        list(rng.choice(np.arange(1, n_items + 1), rng.integers(1, 9), replace=False))
        for _ in range(n_users)
    ]
    whole = evaluate(model, eval_set(targets))
    monkeypatch.setattr(ranking, "SCORE_BUDGET", 3 * n_items * 5)  # 5 users per chunk
    chunked = evaluate(model, eval_set(targets))
    for name, value in whole.metrics.items():
        assert chunked.metrics[name] == pytest.approx(value)
    assert chunked.collapse == pytest.approx(whole.collapse)
    # and both equal a plain per-user loop over sorted scores
    scores = torch.einsum("ukd,nd->ukn", model.user_interests, model.items).amax(1)
    recalls = []
    for u, t in enumerate(targets):
        top = (torch.argsort(scores[u], descending=True)[:50] + 1).tolist()
        recalls.append(len(set(top) & set(t)) / len(t))
    assert whole.metrics["recall@50"] == pytest.approx(np.mean(recalls))


def test_collapse_identical_and_orthogonal():
    same = torch.tensor([[[1.0, 2.0], [2.0, 4.0], [0.5, 1.0]]])
    orthogonal = torch.eye(4).unsqueeze(0)
    assert collapse(same).item() == pytest.approx(1.0)
    assert collapse(orthogonal).item() == pytest.approx(0.0)
    opposite = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    assert collapse(opposite).item() == pytest.approx(-1.0)
    # only active interests count: two identical active ones and an inactive orthogonal one
    mixed = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]])
    active = torch.tensor([[True, True, False]])
    assert collapse(mixed, active).item() == pytest.approx(1.0)
    assert collapse(mixed, torch.tensor([[True, False, False]])).isnan().all()


def test_ranking_metrics_needs_enough_ranks():
    with pytest.raises(ValueError, match="ranks"):
        ranking_metrics(torch.zeros(1, 10, dtype=torch.bool), torch.tensor([1]))


def test_a_catalogue_smaller_than_the_cutoff_is_a_clear_error():
    model = FixedRetriever(torch.tensor([[[1.0]]]), ranked_catalogue(30))
    with pytest.raises(DataError, match="30 items"):
        evaluate(model, eval_set([[1]]))


def test_diversity_is_the_share_of_pairs_in_different_categories():
    # top 4 with categories a, a, b, c: of the 6 pairs only (1, 2) shares a category
    codes = torch.tensor([[0, 0, 1, 2], [5, 5, 5, 5], [1, 2, 3, 4]])
    diversity = category_diversity(codes, cutoffs=(4,))["diversity@4"]
    torch.testing.assert_close(diversity, torch.tensor([5 / 6, 0.0, 1.0], dtype=torch.float64))


def test_diversity_aggregation_in_the_evaluator():
    # interest 1 ranks items 1..60 in order, interest 2 in reverse (but always scores lower),
    # so the candidates are the whole catalogue; the best 50 items are all in category 0
    model = FixedRetriever(torch.tensor([[[1.0], [-1.0]]]), ranked_catalogue())
    category = torch.tensor([-1] + [0] * 50 + list(range(1, 11)))
    users = eval_set([[1, 3, 55]])
    plain = evaluate(model, users, item_category=category)
    assert plain.metrics["diversity@50"] == 0.0  # the top 50 is one category
    same = evaluate(model, users, item_category=category, diversity_lambda=0.0)
    assert same.metrics == plain.metrics  # lambda = 0 is the ranking by score
    diverse = evaluate(model, users, item_category=category, diversity_lambda=100.0)
    # the 10 one-item categories are all picked, then the best 40 of category 0:
    # 40 x 39 of the 50 x 49 ordered pairs share a category
    assert diverse.metrics["diversity@50"] == pytest.approx(1 - 40 * 39 / (50 * 49))
    assert diverse.metrics["recall@50"] == 1.0  # target 55 is now in the list
    with pytest.raises(DataError, match="needs item categories"):
        evaluate(model, users, diversity_lambda=1.0)
    with pytest.raises(ConfigError, match="cannot be combined"):
        evaluate(model, users, item_category=category, diversity_lambda=1.0, mask_history=True)
