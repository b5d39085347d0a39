"""GRU4Rec as a single-interest extractor."""

from __future__ import annotations

import torch

from mirec.extractors.gru import GRUExtractor

D = 8


def left_padded_mask(lengths: list[int], maxlen: int) -> torch.Tensor:
    lengths = torch.tensor(lengths).unsqueeze(1)
    return torch.arange(maxlen).unsqueeze(0) >= maxlen - lengths


def gru(**kwargs) -> GRUExtractor:
    torch.manual_seed(0)
    return GRUExtractor(D, **kwargs).eval()


def test_shapes():
    extractor = gru(hidden_dim=12, num_layers=2)
    out = extractor(torch.randn(3, 6, D), left_padded_mask([6, 2, 4], 6))
    assert out.interests.shape == (3, 1, D) and out.routing is None
    assert extractor.num_interests == 1


def test_padding_never_changes_the_output():
    extractor = gru(num_layers=2)
    torch.manual_seed(1)
    items = torch.randn(2, 4, D)
    garbage = torch.randn(2, 3, D) * 10
    garbage[1, 2] = float("inf")
    padded = torch.cat([garbage, items], dim=1)
    mask = torch.ones(2, 4, dtype=torch.bool)
    padded_mask = torch.cat([torch.zeros(2, 3, dtype=torch.bool), mask], dim=1)
    torch.testing.assert_close(
        extractor(items, mask).interests, extractor(padded, padded_mask).interests
    )


def test_each_row_reads_only_its_own_real_items_in_order():
    extractor = gru()
    history, mask = torch.randn(3, 6, D), left_padded_mask([6, 3, 1], 6)
    out = extractor(history, mask).interests
    for row, length in enumerate([6, 3, 1]):
        alone = extractor(history[row : row + 1, 6 - length :], mask[row : row + 1, 6 - length :])
        torch.testing.assert_close(out[row], alone.interests[0])
    # the order matters: reversing the real items changes the state
    reversed_history = history.clone()
    reversed_history[0] = history[0].flip(0)
    assert not torch.allclose(extractor(reversed_history, mask).interests[0], out[0])


def test_an_all_padding_row_is_finite_and_does_not_disturb_the_others():
    extractor = gru()
    history, mask = torch.randn(2, 5, D), left_padded_mask([0, 4], 5)
    out = extractor(history, mask).interests
    assert torch.isfinite(out).all()
    alone = extractor(history[1:], mask[1:]).interests
    torch.testing.assert_close(out[1], alone[0])
    # the empty row's output does not depend on what lies under its padding
    other = history.clone()
    other[0] = torch.randn(5, D)
    torch.testing.assert_close(extractor(other, mask).interests[0], out[0])


def test_gradients_reach_every_parameter():
    extractor = gru(num_layers=2).train()
    history = torch.randn(3, 6, D, requires_grad=True)
    extractor(history, left_padded_mask([6, 2, 0], 6)).interests.sum().backward()
    for name, parameter in extractor.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, name
    # the real items get a gradient, the padding none
    mask = left_padded_mask([6, 2, 0], 6)
    assert (history.grad[mask].abs().sum(-1) > 0).all()
    assert history.grad[~mask].abs().sum() == 0


def test_dropout_is_random_in_training_and_off_in_eval():
    extractor = gru(dropout=0.5)
    history, mask = torch.randn(2, 6, D), left_padded_mask([6, 3], 6)
    torch.testing.assert_close(
        extractor(history, mask).interests, extractor(history, mask).interests
    )
    extractor.train()
    assert not torch.allclose(
        extractor(history, mask).interests, extractor(history, mask).interests
    )
