"""SINE's sparse-interest extractor and its concept covariance regularizer."""

from __future__ import annotations

import pytest
import torch

from mirec.core.contracts import Extracted
from mirec.core.functional import covariance_matrix, masked_softmax
from mirec.extractors.sparse_interest import SparseInterestExtractor
from mirec.regularizers.concept_covariance import concept_covariance_penalty
from mirec.regularizers.covariance import routing_covariance_penalty

D, K, MAXLEN, POOL = 8, 3, 10, 20


def left_padded_mask(lengths: list[int], maxlen: int) -> torch.Tensor:
    lengths = torch.tensor(lengths).unsqueeze(1)
    return torch.arange(maxlen).unsqueeze(0) >= maxlen - lengths


def sine() -> SparseInterestExtractor:
    torch.manual_seed(0)
    return SparseInterestExtractor(D, K, MAXLEN, num_concepts=POOL).eval()


def test_shapes_and_what_is_returned():
    extractor = sine()
    history, mask = torch.randn(4, MAXLEN, D), left_padded_mask([10, 6, 1, 3], MAXLEN)
    out = extractor(history, mask)
    assert out.interests.shape == (4, K, D)
    assert out.routing.shape == (4, MAXLEN, K)
    assert out.weights.shape == (4, K)
    assert out.active is None
    assert out.prototypes is extractor.concepts and out.prototypes.shape == (POOL, D)
    assert extractor.num_interests == K


def test_padding_never_changes_an_interest_a_weight_or_the_routing():
    extractor = sine()
    torch.manual_seed(1)
    items = torch.randn(2, 4, D)
    garbage = torch.randn(2, 3, D) * 10
    garbage[0, 0] = float("nan")  # masked_fill keeps even non-finite garbage out
    padded = torch.cat([garbage, items], dim=1)
    mask = torch.ones(2, 4, dtype=torch.bool)
    padded_mask = torch.cat([torch.zeros(2, 3, dtype=torch.bool), mask], dim=1)
    short, long = extractor(items, mask), extractor(padded, padded_mask)
    torch.testing.assert_close(short.interests, long.interests)
    torch.testing.assert_close(short.weights, long.weights)
    torch.testing.assert_close(short.routing, long.routing[:, 3:])
    assert long.routing[:, :3].abs().sum() == 0  # padding is routed nowhere
    # the same padded layout with other garbage under the padding
    other = torch.cat([torch.randn(2, 3, D), items], dim=1)
    torch.testing.assert_close(extractor(other, padded_mask).interests, long.interests)


def test_weights_are_a_distribution_and_routing_columns_sum_to_one():
    extractor = sine()
    history, mask = torch.randn(3, MAXLEN, D), left_padded_mask([10, 4, 1], MAXLEN)
    out = extractor(history, mask)
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(3))
    assert (out.weights >= 0).all()
    torch.testing.assert_close(out.routing.sum(1), torch.ones(3, K))
    assert out.routing[~mask].abs().sum() == 0 and (out.routing >= 0).all()


def test_an_all_padding_row_is_finite_and_routes_nowhere():
    extractor = sine()
    history, mask = torch.randn(2, MAXLEN, D), left_padded_mask([0, 5], MAXLEN)
    extractor.train()
    out = extractor(history, mask)
    assert torch.isfinite(out.interests).all() and torch.isfinite(out.weights).all()
    assert out.routing[0].abs().sum() == 0
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(2))
    (out.interests * torch.randn_like(out.interests)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in extractor.parameters() if p.grad is not None)


def test_gradients_reach_every_parameter():
    extractor = sine().train()
    history = torch.randn(3, MAXLEN, D, requires_grad=True)
    out = extractor(history, left_padded_mask([10, 6, 2], MAXLEN))
    # interests.sum() alone would be degenerate: the sum of a layer norm's outputs does not
    # depend on its input, so a random projection of interests and weights is backpropagated
    torch.manual_seed(2)
    loss = (out.interests * torch.randn_like(out.interests)).sum()
    loss = loss + (out.weights * torch.randn_like(out.weights)).sum()
    loss.backward()
    for name, parameter in extractor.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, name
    assert history.grad.abs().sum() > 0


def test_the_best_matching_concepts_are_activated_and_gated():
    extractor = sine()
    # a history of one repeated item: whatever the attention, the summary z_u is that item
    item = torch.randn(D)
    history, mask = item.expand(1, MAXLEN, D).clone(), left_padded_mask([6], MAXLEN)
    history[~mask] = 0.0
    with torch.no_grad():
        extractor.concepts[5] = 10 * item  # by far the best match: s_5 = 10 |x|^2
        extractor.concepts[7] = -10 * item  # by far the worst
    index, concepts = extractor.activate(history, mask)
    assert index.shape == (1, K) and index[0, 0] == 5 and 7 not in index
    # the gate sigmoid(s_5) is ~1, so the activated prototype is concept 5 itself
    torch.testing.assert_close(concepts[0, 0], extractor.concepts[5].detach())
    scores = extractor.concepts.detach() @ item
    torch.testing.assert_close(index[0], scores.topk(K).indices)


def test_only_the_activated_concepts_learn_from_a_user():
    extractor = sine().train()
    out = extractor(torch.randn(1, MAXLEN, D), left_padded_mask([7], MAXLEN))
    (out.interests * torch.randn_like(out.interests)).sum().backward()
    assert int((extractor.concepts.grad.abs().sum(-1) > 0).sum()) == K


def test_validation_of_the_configuration():
    with pytest.raises(ValueError, match="num_interests"):
        SparseInterestExtractor(D, 6, MAXLEN, num_concepts=5)
    with pytest.raises(ValueError, match="temperature"):
        SparseInterestExtractor(D, 2, MAXLEN, temperature=0.0)


def test_masked_softmax_is_zero_off_the_mask_and_on_empty_slices():
    logits = torch.randn(2, 4, requires_grad=True)
    mask = torch.tensor([[True, False, True, True], [False] * 4])
    out = masked_softmax(logits, mask, dim=-1)
    torch.testing.assert_close(out[0, mask[0]], torch.softmax(logits[0, mask[0]], dim=-1))
    assert out[0, 1] == 0 and out[1].abs().sum() == 0
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()


# concept covariance regularizer (SINE eq. 11)


def with_pool(pool: torch.Tensor) -> Extracted:
    return Extracted(torch.zeros(1, 1, pool.shape[1]), prototypes=pool)


HISTORY, MASK = torch.zeros(1, 1, 4), torch.ones(1, 1, dtype=torch.bool)


def test_concept_covariance_is_zero_for_uncorrelated_and_high_for_identical_prototypes():
    # rows of a Hadamard matrix without the constant row: centred and mutually orthogonal
    hadamard = torch.tensor(
        [[1.0, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]
    )  # each row sums to 0
    uncorrelated = concept_covariance_penalty(with_pool(hadamard), HISTORY, MASK)
    assert uncorrelated.item() == pytest.approx(0.0, abs=1e-7)
    # one-hot prototypes are orthogonal, but centring leaves them slightly anticorrelated:
    # M_ij = -1/16 for i != j, so L_c = 1/2 * 12 * (1/16)^2
    orthogonal = concept_covariance_penalty(with_pool(torch.eye(4)), HISTORY, MASK)
    assert orthogonal.item() == pytest.approx(0.5 * 12 / 16**2)
    # four copies of one prototype: M_ij = 3/16 everywhere, L_c = 1/2 * 12 * (3/16)^2
    identical = torch.eye(4)[:1].expand(4, 4)
    collapsed = concept_covariance_penalty(with_pool(identical), HISTORY, MASK)
    assert collapsed.item() == pytest.approx(0.5 * 12 * (3 / 16) ** 2)
    assert collapsed > 5 * orthogonal > 0


def test_concept_covariance_on_the_extractor_pool_and_its_gradient():
    extractor = sine()
    out = extractor(torch.randn(2, MAXLEN, D), left_padded_mask([10, 3], MAXLEN))
    penalty = concept_covariance_penalty(out, torch.randn(2, MAXLEN, D), MASK)
    assert penalty.ndim == 0 and penalty > 0
    penalty.backward()
    assert extractor.concepts.grad.abs().sum() > 0
    collapsed = Extracted(out.interests, prototypes=extractor.concepts[:1].expand(POOL, D))
    # 20 random prototypes in 8 dimensions cannot all be uncorrelated, hence only a factor 2
    assert concept_covariance_penalty(collapsed, HISTORY, MASK) > 2 * penalty


def test_concept_covariance_needs_prototypes():
    with pytest.raises(ValueError, match="prototype pool"):
        concept_covariance_penalty(Extracted(torch.zeros(1, 2, 4)), HISTORY, MASK)


def test_covariance_helper_matches_the_routing_covariance_regularizer():
    # REMI's penalty, computed user by user over the real positions only: each interest's
    # routing variance (sum of squared deviations / d), squared, summed over interests
    # and over the users of the batch
    torch.manual_seed(3)
    routing = torch.softmax(torch.randn(3, 6, 4), dim=1)
    mask = left_padded_mask([6, 4, 1], 6)
    routing = routing * mask.unsqueeze(-1)
    history = torch.randn(3, 6, 5)
    expected = torch.zeros(())
    for user in range(3):
        real = routing[user][mask[user]]  # (n_u, K)
        variance = ((real - real.mean(0)) ** 2).sum(0) / history.shape[-1]
        expected = expected + (variance**2).sum()
    got = routing_covariance_penalty(Extracted(routing, routing), history, mask)
    torch.testing.assert_close(got, expected)
    # without a mask and scale it is the plain (biased) covariance of the rows
    rows = torch.randn(5, 7)
    torch.testing.assert_close(covariance_matrix(rows), torch.cov(rows, correction=0))
