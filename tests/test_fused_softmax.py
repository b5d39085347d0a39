"""The fused softmax cross-entropies against autograd's form: losses and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mirec.training.fused_softmax import exact_softmax_loss, shared_negatives_loss


def _problem(batch: int, n_items: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(n_items + 1, 8, generator=gen, dtype=dtype)
    user = torch.randn(batch, 8, generator=gen, dtype=dtype)
    target = torch.randint(1, n_items + 1, (batch,), generator=gen)
    target[1] = target[0]  # a repeated target: its table row gets two one-hot terms
    target[2] = n_items  # the last item, the block's last column
    return user, target, table


def _loss_and_grads(loss_of, user, target, table, scale: float = 3.0):
    user = user.clone().requires_grad_()
    table = table.clone().requires_grad_()
    loss = loss_of(user, target, table)
    (scale * loss).backward()  # an incoming gradient other than 1
    return loss.detach(), user.grad, table.grad


@pytest.mark.parametrize("temperature", [1.0, 0.3])
@pytest.mark.parametrize("block_rows", [1, 4, 7, 13, 50])
def test_blocked_loss_and_gradients_equal_cross_entropy(temperature, block_rows):
    user, target, table = _problem(13, 29, torch.float64)

    def reference(u, t, e):
        return F.cross_entropy(u @ e[1:].T / temperature, t - 1)

    def blocked(u, t, e):
        return exact_softmax_loss(u, t, e, temperature, block_rows=block_rows)

    expected = _loss_and_grads(reference, user, target, table)
    got = _loss_and_grads(blocked, user, target, table)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert float(got[2][0].abs().max()) == 0.0  # the padding row is never a candidate


def test_float32_at_training_size_agrees_to_rounding():
    user, target, table = _problem(512, 12101, torch.float32)
    user, table = user * 0.3, table * 0.1

    def reference(u, t, e):
        return F.cross_entropy(u @ e[1:].T, t - 1)

    def blocked(u, t, e):
        return exact_softmax_loss(u, t, e, 1.0)

    expected = _loss_and_grads(reference, user, target, table, scale=1.0)
    got = _loss_and_grads(blocked, user, target, table, scale=1.0)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-8)


def test_gradients_only_where_asked_and_none_without_autograd():
    user, target, table = _problem(6, 11, torch.float64)
    expected = F.cross_entropy(user @ table[1:].T, target - 1)
    with torch.no_grad():  # inputs that would want gradients, none asked for
        loss = exact_softmax_loss(user.requires_grad_(), target, table, 1.0, 4)
        torch.testing.assert_close(loss, expected)
        assert loss.grad_fn is None
    user = user.detach()
    frozen_table = table.clone()
    trained = user.clone().requires_grad_()
    exact_softmax_loss(trained, target, frozen_table, 1.0, 4).backward()
    reference = user.clone().requires_grad_()
    F.cross_entropy(reference @ table[1:].T, target - 1).backward()
    torch.testing.assert_close(trained.grad, reference.grad, rtol=1e-12, atol=1e-12)
    assert frozen_table.grad is None


@pytest.mark.parametrize("temperature", [1.0, 0.3])
@pytest.mark.parametrize("corrected", [False, True])
def test_shared_negatives_loss_and_gradients_equal_autograd(temperature, corrected):
    user, target, table = _problem(9, 17, torch.float64)
    negatives = torch.tensor([3, 17, 5, 3, 1, 9, 12])  # a repeated negative
    negatives[1] = target[0]  # an accidental hit for examples 0 and 1 (same target)
    valid = negatives.unsqueeze(0) != target.unsqueeze(1)
    assert not valid.all()
    correction = torch.linspace(-0.5, 0.7, len(negatives), dtype=torch.float64)
    correction = correction if corrected else None

    def reference(u, t, e):
        positive = (u * e[t]).sum(-1) / temperature
        scores = u @ e[negatives].T / temperature
        if correction is not None:
            scores = scores - correction
        logits = torch.cat([positive.unsqueeze(1), scores.masked_fill(~valid, -torch.inf)], 1)
        return F.cross_entropy(logits, torch.zeros(len(t), dtype=torch.long))

    def fused(u, t, e):
        return shared_negatives_loss(u, e[t], e[negatives], valid, correction, temperature)

    expected = _loss_and_grads(reference, user, target, table)
    got = _loss_and_grads(fused, user, target, table)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
