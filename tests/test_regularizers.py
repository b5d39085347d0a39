"""Regularizers: low for distinct interests and spread routing, high for collapsed ones."""

from __future__ import annotations

import pytest
import torch

from mirec.core.contracts import Extracted
from mirec.errors import ConfigError
from mirec.regularizers import parse_regularizers
from mirec.regularizers.contrastive import contrastive_penalty
from mirec.regularizers.covariance import routing_covariance_penalty
from mirec.regularizers.disagreement import disagreement_penalty

# four history items along the axes; interest k is built from item k
HISTORY = torch.eye(4).unsqueeze(0)  # (1, L=4, d=4)
MASK = torch.ones(1, 4, dtype=torch.bool)
DISTINCT = Extracted(torch.eye(4).unsqueeze(0), routing=torch.eye(4).unsqueeze(0))
COLLAPSED = Extracted(
    torch.ones(1, 4, 4), routing=torch.full((1, 4, 4), 0.25)
)  # every interest the same vector, every item routed evenly


def test_disagreement_is_the_mean_pairwise_cosine():
    assert disagreement_penalty(DISTINCT, HISTORY, MASK).item() == pytest.approx(0.0)
    assert disagreement_penalty(COLLAPSED, HISTORY, MASK).item() == pytest.approx(1.0)


def test_contrastive_prefers_interests_that_find_their_own_items():
    low = contrastive_penalty(DISTINCT, HISTORY, MASK, temperature=0.1).item()
    high = contrastive_penalty(COLLAPSED, HISTORY, MASK, temperature=0.1).item()
    # collapsed: each interest is equally close to all 4 items, so log 4 per positive
    assert high == pytest.approx(torch.log(torch.tensor(4.0)).item(), rel=1e-5)
    assert low < 0.01 < high


def test_covariance_penalises_interests_that_attend_one_item():
    # attention over positions (each interest's column sums to 1): one-hot is routing
    # collapse in REMI's sense; uniform attention has zero variance
    peaky = Extracted(torch.eye(4).unsqueeze(0), routing=torch.eye(4).unsqueeze(0))
    spread = Extracted(torch.eye(4).unsqueeze(0), routing=torch.full((1, 4, 4), 0.25))
    # hand-computed: a one-hot column over 4 positions has variance sum 0.75, / d = 0.1875,
    # squared and summed over 4 interests: 4 * 0.1875^2
    assert routing_covariance_penalty(peaky, HISTORY, MASK).item() == pytest.approx(4 * 0.1875**2)
    assert routing_covariance_penalty(spread, HISTORY, MASK).item() == pytest.approx(0.0)


def test_padding_does_not_enter_the_penalties():
    # the same two real items, with and without two padded positions in front
    history = torch.eye(4)[:2].unsqueeze(0)
    extracted = Extracted(torch.eye(4)[:2].unsqueeze(0), routing=torch.eye(2).unsqueeze(0))
    padded_history = torch.cat([torch.randn(1, 2, 4), history], 1)
    padded = Extracted(
        extracted.interests, routing=torch.cat([torch.zeros(1, 2, 2), extracted.routing], 1)
    )
    mask, padded_mask = torch.ones(1, 2, dtype=torch.bool), torch.tensor([[0, 0, 1, 1]]).bool()
    for penalty in (contrastive_penalty, routing_covariance_penalty):
        plain = penalty(extracted, history, mask)
        assert penalty(padded, padded_history, padded_mask).item() == pytest.approx(
            plain.item(), rel=1e-5
        )


def test_regularizer_specs():
    parsed = parse_regularizers("covariance:100, disagreement:0.5,contrastive")
    assert [(name, weight) for name, weight, _ in parsed] == [
        ("covariance", 100.0),
        ("disagreement", 0.5),
        ("contrastive", 1.0),
    ]
    assert parse_regularizers(None) == [] and parse_regularizers("") == []
    with pytest.raises(ConfigError, match="unknown 'orthogonal'"):
        parse_regularizers("orthogonal:1")
    with pytest.raises(ConfigError, match="must be a number, not 'lots'"):
        parse_regularizers("covariance:lots")
