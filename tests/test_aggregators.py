"""Retrieval aggregation: ComiRec's diversity-controllable greedy merge."""

from __future__ import annotations

import torch

from mirec.aggregators.diversity_greedy import diverse_retrieve, diverse_top_n
from mirec.aggregators.max_score import max_over_interests


def category_diversity(categories: torch.Tensor) -> float:
    """Share of pairs in the list whose categories differ (ComiRec's Diversity@N)."""
    n = len(categories)
    differ = (categories.unsqueeze(0) != categories.unsqueeze(1)).sum().item()
    return differ / (n * (n - 1))


def test_lambda_zero_is_the_max_ranking():
    torch.manual_seed(0)
    interests, items = torch.randn(5, 3, 8), torch.randn(200, 8)
    category = torch.randint(0, 6, (200,))
    plain = max_over_interests(interests, items).topk(20, dim=1).indices
    assert torch.equal(diverse_retrieve(interests, items, category, 20, lam=0.0), plain)


def test_large_lambda_maximises_category_diversity():
    # 10 candidates: the six best in category 0, then one each of categories 1..4
    scores = torch.tensor([[10.0, 9.9, 9.8, 9.7, 9.6, 9.5, 1.0, 0.9, 0.8, 0.7]])
    categories = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 2, 3, 4]])
    by_score = diverse_top_n(scores, categories, 5, lam=0.0)
    diverse = diverse_top_n(scores, categories, 5, lam=100.0)
    assert by_score.tolist() == [[0, 1, 2, 3, 4]]
    assert sorted(categories[0, diverse[0]].tolist()) == [0, 1, 2, 3, 4]  # all different
    assert category_diversity(categories[0, diverse[0]]) == 1.0
    assert category_diversity(categories[0, by_score[0]]) == 0.0
    # in between, diversity never falls as lambda grows
    values = [
        category_diversity(categories[0, diverse_top_n(scores, categories, 5, lam)[0]])
        for lam in (0.0, 0.5, 2.0, 5.0, 100.0)
    ]
    assert values == sorted(values)


def test_non_candidates_are_never_picked_and_no_item_twice():
    torch.manual_seed(1)
    interests, items = torch.randn(4, 4, 8), torch.randn(300, 8)
    category = torch.randint(0, 3, (300,))
    picked = diverse_retrieve(interests, items, category, 30, lam=5.0)
    for row in picked:
        assert len(set(row.tolist())) == 30
