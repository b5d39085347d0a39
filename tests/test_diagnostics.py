"""Interest diagnostics on constructed cases, checked against hand computation and
scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from mirec.core.contracts import Extracted
from mirec.evaluation.diagnostics import (
    Diagnostics,
    contingency,
    effective_interests,
    nmi,
    purity,
    tail_items,
)
from mirec.evaluation.metrics import Targets
from mirec.retrieval.adaptive_k import assign_behaviours


def table_of(assignment: list[list[int]], category: list[list[int]], k: int) -> torch.Tensor:
    return contingency(torch.tensor(assignment), torch.tensor(category), k)


def test_effective_interests_even_split_is_k_and_one_interest_is_one():
    mass = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(
        effective_interests(mass), torch.tensor([4.0, 1.0, 2.0], dtype=torch.float64)
    )
    # inactive interests do not count, even with mass
    active = torch.tensor([[True, True, False, False]] * 3)
    assert effective_interests(mass, active)[0].item() == pytest.approx(2.0)


def test_a_perfect_assignment_has_nmi_and_purity_one_whatever_the_labels():
    # interests 1 and 0 hold categories 7 and 3: a relabelling of a perfect split
    table = table_of([[1, 1, 0, 0, 0]], [[7, 7, 3, 3, 3]], k=2)
    assert nmi(table).item() == pytest.approx(1.0)
    assert purity(table).item() == pytest.approx(1.0)


def test_an_uninformative_assignment_has_nmi_zero():
    # each interest holds one item of each category: knowing the interest says nothing
    table = table_of([[0, 0, 1, 1]], [[1, 2, 1, 2]], k=2)
    assert nmi(table).item() == pytest.approx(0.0)
    assert purity(table).item() == pytest.approx(0.5)


def test_nmi_equals_scikit_learn_per_user():
    rng = np.random.default_rng(0)
    assignment = rng.integers(0, 4, (50, 12))
    category = rng.integers(0, 5, (50, 12))
    category[3] = 2  # one user with a single category
    assignment[4], category[4] = 1, 3  # both sides single: 1 by convention
    ours = nmi(contingency(torch.tensor(assignment), torch.tensor(category), 4))
    expected = [
        normalized_mutual_info_score(c, a) for a, c in zip(assignment, category, strict=True)
    ]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-10)


def test_padding_and_uncategorised_items_are_left_out():
    # -1 assignment (padding) and -1 category (no category) leave one user with 3 items
    table = table_of([[-1, 0, 0, 1, 1]], [[5, 5, 5, 6, -1]], k=2)
    assert table.sum().item() == 3
    assert purity(table).item() == pytest.approx(1.0)
    empty = table_of([[-1, -1]], [[5, 5]], k=2)
    assert purity(empty).isnan().all() and nmi(empty).isnan().all()


def test_behaviours_go_to_the_interest_that_routes_them_most_and_only_to_active_ones():
    routing = torch.tensor([[[0.0, 0.0], [0.9, 0.1], [0.2, 0.8]]])  # (B=1, L=3, K=2)
    mask = torch.tensor([[False, True, True]])
    extracted = Extracted(torch.zeros(1, 2, 4), routing)
    assert assign_behaviours(extracted, mask).tolist() == [[-1, 0, 1]]
    only_first = extracted._replace(active=torch.tensor([[True, False]]))
    assert assign_behaviours(only_first, mask).tolist() == [[-1, 0, 0]]


def test_tail_is_the_least_popular_eighty_percent():
    # items 1..10; item 1 and item 4 most popular; item 2 and 3 tie for third: 2 wins
    counts = np.array([0, 50, 5, 5, 40, 1, 1, 1, 1, 1, 1])
    tail = tail_items(counts)
    assert not tail[0]
    assert np.flatnonzero(~tail[1:]).tolist() == [0, 3]  # items 1 and 4: the top 20%
    assert tail[1:].sum() == 8


def test_diagnostics_coverage_and_tail_recall_by_hand():
    counts = np.array([0, 100, 90, 1, 1, 1, 1, 1, 1, 1, 1])  # head: items 1 and 2
    diagnostics = Diagnostics(counts, cutoffs=(2,))
    top = torch.tensor([[1, 3], [1, 2]])
    # user 0: two tail targets (3, 4), one found; user 1: a head target only, no tail recall
    targets = Targets(torch.tensor([3, 4, 2]), torch.tensor([0, 0, 1]), 2)
    hits = targets.hits(top)
    assert hits.tolist() == [[False, True], [False, True]]
    histories = torch.tensor([[0, 5], [6, 7]])
    extracted = Extracted(torch.zeros(2, 1, 4))
    diagnostics.update(0, histories, extracted, top, hits, targets, torch.randn(10, 4))
    out = diagnostics.result()
    assert out["coverage@2"] == pytest.approx(3 / 10)
    assert out["tail_share@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert out["tail_recall@2"] == pytest.approx(1 / 2)
    assert out["tail_recall_users@2"] == 1
    assert out["effective_interests"] == pytest.approx(1.0)


def test_k_error_and_confusion_against_planted_counts():
    counts = np.ones(11)
    diagnostics = Diagnostics(counts, planted_interests=np.array([1, 2, 3]), cutoffs=(2,))
    active = torch.tensor([[True, False, False], [True, True, False], [True, True, False]])
    extracted = Extracted(torch.randn(3, 3, 4), torch.rand(3, 2, 3), active)
    histories = torch.tensor([[1, 2]] * 3)
    top = torch.tensor([[1, 2]] * 3)
    none = Targets(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 3)
    hits = none.hits(top)
    assert not hits.any()
    diagnostics.update(0, histories, extracted, top, hits, none, torch.randn(10, 4))
    out = diagnostics.result()
    assert out["k_error"] == pytest.approx(1 / 3)
    assert out["k_confusion"] == {1: {1: 1, 2: 0}, 2: {1: 0, 2: 1}, 3: {1: 0, 2: 1}}
    assert math.isfinite(out["effective_interests"])
