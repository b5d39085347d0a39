"""Data-driven adaptive K: interests with little routing mass are dropped, near-duplicate
interests are merged, and each user keeps at least their heaviest interest."""

from __future__ import annotations

import pytest
import torch

from mirec.aggregators.adaptive_k import (
    adapt_interests,
    assign_behaviours,
    interest_mass,
    interest_shares,
    parse_adaptive_k,
)
from mirec.config import load_config
from mirec.core.contracts import Extracted
from mirec.errors import ConfigError
from mirec.models.registry import build_model


def test_mass_is_each_interests_share_of_the_real_history():
    # 3 real behaviours (one padded); capsule-style rows that sum to 1 over interests
    routing = torch.tensor([[[0, 0, 0], [1.0, 0, 0], [0.5, 0.5, 0], [1.0, 0, 0]]])
    mask = torch.tensor([[False, True, True, True]])
    mass = interest_mass(routing, mask)
    torch.testing.assert_close(mass, torch.tensor([[2.5 / 3, 0.5 / 3, 0.0]]))


def test_mass_rule_drops_light_interests_but_keeps_the_heaviest():
    routing = torch.tensor(
        [
            [[1.0, 0, 0], [1.0, 0, 0], [0.8, 0.2, 0], [0.0, 0.0, 1.0]],  # mass .7, .05, .25
            [[0.0, 0, 0.0], [0.0, 0, 0.0], [0.0, 0, 0.0], [0.0, 0.0, 0.0]],  # all padding
        ]
    )
    mask = torch.tensor([[True] * 4, [False] * 4])
    extracted = Extracted(torch.randn(2, 3, 4), routing)
    active = adapt_interests(extracted, mask, "mass", 0.1).active
    assert active[0].tolist() == [True, False, True]
    assert active[1].sum() == 1  # someone with no history still has one interest
    # an interest already switched off (MIND's rule) stays off
    off = extracted._replace(active=torch.tensor([[True, True, False], [True, True, True]]))
    assert adapt_interests(off, mask, "mass", 0.1).active[0].tolist() == [True, False, False]


def test_merge_rule_folds_duplicates_into_the_heavier_interest():
    interests = torch.tensor([[[1.0, 0.0], [0.99, 0.05], [0.0, 1.0]]])
    routing = torch.tensor([[[0.6, 0.4, 0.0], [0.6, 0.4, 0.0], [0.0, 0.0, 1.0]]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    merged = adapt_interests(Extracted(interests, routing), mask, "merge", 0.9)
    assert merged.active.tolist() == [[True, False, True]]
    # mass 0.4 and 0.8/3: the kept vector is the mass-weighted mean of the two
    w0, w1 = 0.4, 0.8 / 3
    expected = (w0 * interests[0, 0] + w1 * interests[0, 1]) / (w0 + w1)
    torch.testing.assert_close(merged.interests[0, 0], expected)
    torch.testing.assert_close(merged.interests[0, 2], interests[0, 2])
    # orthogonal interests are all kept, unchanged
    apart = adapt_interests(
        Extracted(interests[:, [0, 2]], routing[..., [0, 2]]), mask, "merge", 0.9
    )
    assert apart.active.all()
    torch.testing.assert_close(apart.interests, interests[:, [0, 2]])


def test_adaptive_k_applies_at_inference_only():
    config = load_config("comirec-sa", overrides=["adaptive_k=mass:0.3"])
    torch.manual_seed(0)
    model = build_model(config, n_items=40, maxlen=8)
    histories = torch.randint(1, 41, (6, 8))
    model.train()
    assert model.extract(histories).active is None
    model.eval()
    active = model.extract(histories).active
    assert active.shape == (6, 4) and (active.sum(1) >= 1).all()


def test_bad_rules_are_config_errors():
    assert parse_adaptive_k(None) is None
    assert parse_adaptive_k("merge:0.8") == ("merge", 0.8)
    with pytest.raises(ConfigError, match="unknown rule"):
        parse_adaptive_k("drop:0.1")
    with pytest.raises(ConfigError, match="expected mass"):
        parse_adaptive_k("mass:x")


def test_share_rule_counts_items_by_where_they_route_most():
    # self-attention: each interest's weights sum to 1 over the history, so soft masses are
    # even (1/3 each) although interests 0 and 1 attend to the same two items
    # (items 0 and 1 tie between interests 0 and 1: the first wins)
    routing = torch.tensor([[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.6], [0.0, 0.0, 0.4]]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    extracted = Extracted(torch.randn(1, 3, 4), routing)
    shares = interest_shares(assign_behaviours(extracted, mask), 3)
    torch.testing.assert_close(shares, torch.tensor([[0.5, 0.0, 0.5]]))
    assert adapt_interests(extracted, mask, "share", 0.1).active[0].tolist() == [True, False, True]
    assert parse_adaptive_k("share:0.1") == ("share", 0.1)
