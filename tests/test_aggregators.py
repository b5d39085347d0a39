"""Aggregation: ComiRec's diversity-controllable greedy merge, mean scores, and the
representation aggregators that fuse K interests into one vector."""

from __future__ import annotations

import pytest
import torch

from mirec.aggregators.max_score import max_over_interests
from mirec.aggregators.mean_score import mean_over_interests
from mirec.aggregators.representation import ConcatMLP, IntentionWeights, InterestAttention
from mirec.core.contracts import Extracted
from mirec.retrieval.diversity_greedy import diverse_retrieve, diverse_top_n


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
    rows, scores = diverse_retrieve(interests, items, category, 20, lam=0.0)
    assert torch.equal(rows, plain)
    assert torch.equal(scores, max_over_interests(interests, items).topk(20, dim=1).values)


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
    picked, _ = diverse_retrieve(interests, items, category, 30, lam=5.0)
    for row in picked:
        assert len(set(row.tolist())) == 30


def test_mean_aggregation_is_the_mean_of_per_interest_scores():
    torch.manual_seed(1)
    interests, items = torch.randn(4, 3, 8), torch.randn(30, 8)
    per_interest = torch.einsum("bkd,nd->bkn", interests, items)
    torch.testing.assert_close(mean_over_interests(interests, items), per_interest.mean(1))
    active = torch.tensor([[True, False, True]] * 4)
    expected = per_interest[:, [0, 2]].mean(1)
    torch.testing.assert_close(mean_over_interests(interests, items, active), expected)


def test_representation_aggregators_ignore_inactive_interests():
    torch.manual_seed(2)
    interests = torch.randn(5, 3, 8)
    active = torch.tensor([[True, True, False]] * 5)
    changed = interests.clone()
    changed[:, 2] = torch.randn(5, 8) * 100  # an inactive interest must not matter
    weights = torch.softmax(torch.randn(5, 3), dim=1)
    for fuse in (InterestAttention(8), ConcatMLP(8, 3), IntentionWeights()):
        a = fuse(Extracted(interests, active=active, weights=weights))
        b = fuse(Extracted(changed, active=active, weights=weights))
        assert a.shape == (5, 8)
        torch.testing.assert_close(a, b)


def test_attention_over_interests_is_a_convex_mix():
    torch.manual_seed(3)
    interests = torch.randn(2, 4, 8)
    fused = InterestAttention(8)(Extracted(interests))
    # a convex mix lies inside the per-dimension range of the interests
    assert torch.all(fused <= interests.amax(1) + 1e-6)
    assert torch.all(fused >= interests.amin(1) - 1e-6)


def test_intention_weights_mix_by_the_extractors_weights():
    interests = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    weights = torch.tensor([[0.25, 0.75]])
    fused = IntentionWeights()(Extracted(interests, weights=weights))
    torch.testing.assert_close(fused, torch.tensor([[0.25, 0.75]]))
    with pytest.raises(ValueError, match="intention"):
        IntentionWeights()(Extracted(interests))


def test_diverse_retrieve_ignores_inactive_interests():
    torch.manual_seed(4)
    interests, items = torch.randn(6, 3, 8), torch.randn(100, 8)
    category = torch.randint(0, 5, (100,))
    active = torch.tensor([[True, False, True]] * 6)
    expected = max_over_interests(interests[:, [0, 2]], items).topk(10, dim=1).indices
    got, _ = diverse_retrieve(interests, items, category, 10, lam=0.0, active=active)
    assert torch.equal(got, expected)
    # with lambda > 0 every pick still comes from an active interest's top 10
    allowed = torch.einsum("bkd,nd->bkn", interests[:, [0, 2]], items).topk(10, dim=2).indices
    picks, _ = diverse_retrieve(interests, items, category, 10, lam=5.0, active=active)
    for user in range(6):
        assert set(picks[user].tolist()) <= set(allowed[user].flatten().tolist())
