"""SampledSoftmax against hand computations: exact, uniform, popularity (log-Q), in-batch, REMI."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mirec.training.sampled_softmax import SampledSoftmax

N, D = 10, 4


def _problem(batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.randn(N + 1, D, dtype=torch.float64), torch.randn(batch, D, dtype=torch.float64)


def _counts() -> torch.Tensor:
    # item 3 is heavy, item 7 never seen in training; index 0 is padding and ignored
    return torch.tensor([5.0, 2, 1, 40, 0, 3, 1, 0, 6, 2, 1])


def _q(counts: torch.Tensor) -> torch.Tensor:
    """Add-one smoothed popularity over items 1..N, 0 for the padding, in float64."""
    q = torch.zeros(N + 1, dtype=torch.float64)
    q[1:] = (counts[1:].double() + 1) / (counts[1:].double() + 1).sum()
    return q


def _manual_loss(
    user: torch.Tensor,
    target: torch.Tensor,
    table: torch.Tensor,
    negatives_of,  # row -> list of (item, rho)
    beta: float = 0.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The documented formula one example at a time, with Python loops."""
    losses = []
    for i in range(len(target)):
        pos = float(user[i] @ table[target[i]]) / temperature
        negs = [
            (float(user[i] @ table[j]) / temperature, rho)
            for j, rho in negatives_of(i)
            if j != int(target[i])
        ]
        mass = sum(math.exp(s - rho) for s, rho in negs)
        if beta > 0 and negs:
            ratio = [math.exp(-rho) for _, rho in negs]
            mean = sum(r * math.exp(beta * s) for r, (s, _) in zip(ratio, negs, strict=True))
            mean /= sum(ratio)
            mass = sum(math.exp(s - rho + beta * s) / mean for s, rho in negs)
        losses.append(-pos + math.log(math.exp(pos) + mass))
    return torch.tensor(sum(losses) / len(losses), dtype=torch.float64)


def test_exact_softmax_equals_cross_entropy_over_all_items():
    table, user = _problem()
    target = torch.tensor([1, 5, 10])
    expected = F.cross_entropy(user @ table[1:].T / 0.5, target - 1)
    for s in (0, N, N + 7):  # 0 or >= N: the whole catalogue
        loss = SampledSoftmax(N, s, temperature=0.5)(user, target, table)
        torch.testing.assert_close(loss, expected)


def test_uniform_equals_manual_with_the_same_draws_and_masks_accidental_hits():
    table, user = _problem()
    target = torch.tensor([1, 5, 10])
    s = 9  # 9 draws from 10 items: targets are drawn too, and must be masked, not counted
    negatives = torch.randint(1, N + 1, (s,), generator=torch.Generator().manual_seed(1))
    assert any(int(t) in negatives.tolist() for t in target)
    loss = SampledSoftmax(N, s, temperature=2.0)(
        user, target, table, torch.Generator().manual_seed(1)
    )
    expected = _manual_loss(
        user, target, table, lambda i: [(int(j), 0.0) for j in negatives], temperature=2.0
    )
    torch.testing.assert_close(loss, expected)


def test_sampled_softmax_full_catalogue_and_accidental_hits():
    # moved from test_models.py, adapted to the class
    torch.manual_seed(0)
    table = torch.randn(11, 4)
    user, target = torch.randn(3, 4), torch.tensor([1, 5, 10])
    full = SampledSoftmax(10, 0)(user, target, table)
    expected = F.cross_entropy(user @ table[1:].T, target - 1)
    torch.testing.assert_close(full, expected)
    gen = torch.Generator().manual_seed(1)
    sampled = SampledSoftmax(10, 9)(user, target, table, gen)
    assert math.isfinite(sampled.item())
    # a single example whose only negative is its own target: only the positive is left
    lone = SampledSoftmax(2, 1)
    seed = next(
        s for s in range(100) if int(lone.sample_negatives(torch.Generator().manual_seed(s))) == 1
    )
    loss = lone(user[:1], torch.tensor([1]), table[:3], torch.Generator().manual_seed(seed))
    assert loss.item() == 0.0


def test_popularity_logits_are_log_q_corrected_and_the_positive_is_not():
    table, user = _problem(batch=4)
    target = torch.tensor([3, 7, 2, 3])  # a heavy, an unseen and an ordinary target
    counts, s = _counts(), 8
    q = _q(counts)
    negatives = torch.multinomial(
        q.float(), s, replacement=True, generator=torch.Generator().manual_seed(3)
    )
    loss_fn = SampledSoftmax(N, s, "popularity", item_counts=counts)
    torch.testing.assert_close(loss_fn.probabilities.double(), q)
    torch.testing.assert_close(loss_fn.log_correction[1:].double(), torch.log(N * q[1:]))
    loss = loss_fn(user, target, table, torch.Generator().manual_seed(3))
    rho = torch.log(N * q)
    expected = _manual_loss(
        user, target, table, lambda i: [(int(j), float(rho[j])) for j in negatives]
    )
    torch.testing.assert_close(loss, expected)
    # with equal counts the correction vanishes: the uniform loss over the same negatives
    flat = SampledSoftmax(N, s, "popularity", item_counts=torch.full((N + 1,), 4.0))
    torch.testing.assert_close(flat.log_correction, torch.zeros(N + 1), atol=1e-6, rtol=0)


def test_popularity_sampling_follows_q():
    counts = torch.zeros(51)
    counts[7] = 150  # q_7 = 151 / 200 after add-one smoothing; the other 49 items 1 / 200
    loss_fn = SampledSoftmax(50, 49, "popularity", item_counts=counts)
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([loss_fn.sample_negatives(gen) for _ in range(4000)])  # 196,000
    freq = torch.bincount(draws, minlength=51).double() / len(draws)
    assert freq[0] == 0  # the padding is never drawn
    assert abs(freq[7] - 151 / 200) < 0.005  # about 5 standard deviations
    assert (freq[1:] > 0).all()  # smoothing: items never seen in training are drawn too
    assert abs(freq[[i for i in range(1, 51) if i != 7]].mean() - 1 / 200) < 0.0005


def test_popularity_log_q_keeps_the_uniform_negative_mass_in_expectation():
    """E_q[sum_k exp(s_k - log(N q_k))] = (S / N) sum_{j != +} exp(s_j), as for uniform."""
    table, user = _problem(batch=1)
    target, s = 4, 5
    loss_fn = SampledSoftmax(N, s, "popularity", item_counts=_counts())
    scores = (table @ user[0]).float()
    gen = torch.Generator().manual_seed(0)
    masses = []
    for _ in range(20000):
        neg = loss_fn.sample_negatives(gen)
        keep = neg != target
        masses.append(torch.exp(scores[neg] - loss_fn.log_correction[neg])[keep].sum())
    expected = s / N * (scores[1:].exp().sum() - scores[target].exp())
    assert abs(torch.stack(masses).mean() / expected - 1) < 0.03


def test_in_batch_equals_manual_b_by_b_with_duplicates_masked_and_log_q():
    table, user = _problem(batch=6)
    target = torch.tensor([3, 7, 3, 2, 9, 3])  # item 3 three times: accidental hits
    counts = _counts()
    rho = torch.log(N * _q(counts))
    loss_fn = SampledSoftmax(N, 0, "in_batch", item_counts=counts, temperature=0.7)
    loss = loss_fn(user, target, table)
    expected = _manual_loss(
        user,
        target,
        table,
        lambda i: [(int(target[k]), float(rho[target[k]])) for k in range(6) if k != i],
        temperature=0.7,
    )
    torch.testing.assert_close(loss, expected)
    # the same B x B computation written as a matrix with the diagonal as the label
    logits = user @ table[target].T / 0.7 - rho[target]
    logits.diagonal().copy_((user * table[target]).sum(-1) / 0.7)
    dup = (target.unsqueeze(0) == target.unsqueeze(1)) & ~torch.eye(6, dtype=torch.bool)
    matrix = F.cross_entropy(logits.masked_fill(dup, float("-inf")), torch.arange(6))
    torch.testing.assert_close(loss, matrix)
    # num_negatives is ignored
    other = SampledSoftmax(N, 5, "in_batch", item_counts=counts, temperature=0.7)
    torch.testing.assert_close(other(user, target, table), loss)
    # a batch of one target repeated has no negatives: only the positive, loss 0
    same = loss_fn(user[:3], torch.tensor([3, 3, 3]), table)
    assert same.item() == 0.0


@pytest.mark.parametrize("sampling", ["uniform", "popularity", "in_batch", "exact"])
def test_beta_zero_is_the_plain_loss_and_small_beta_tends_to_it(sampling):
    table, user = _problem(batch=5)
    target = torch.tensor([3, 7, 2, 3, 9])
    counts = None if sampling in ("uniform", "exact") else _counts()
    s = 0 if sampling == "exact" else 6
    kind = "uniform" if sampling == "exact" else sampling

    def loss(beta: float) -> torch.Tensor:
        fn = SampledSoftmax(N, s, kind, item_counts=counts, hard_negative_beta=beta)
        return fn(user, target, table, torch.Generator().manual_seed(5))

    plain = SampledSoftmax(N, s, kind, item_counts=counts)(
        user, target, table, torch.Generator().manual_seed(5)
    )
    assert torch.equal(loss(0.0), plain)
    torch.testing.assert_close(loss(1e-9), plain)
    assert not torch.allclose(loss(1.0), plain)


def test_remi_reweighting_equals_manual_for_uniform_popularity_and_exact():
    table, user = _problem(batch=4)
    target = torch.tensor([3, 7, 2, 3])
    beta, s, counts = 0.8, 8, _counts()
    draws = torch.randint(1, N + 1, (s,), generator=torch.Generator().manual_seed(2))
    uniform = SampledSoftmax(N, s, hard_negative_beta=beta)(
        user, target, table, torch.Generator().manual_seed(2)
    )
    expected = _manual_loss(user, target, table, lambda i: [(int(j), 0.0) for j in draws], beta)
    torch.testing.assert_close(uniform, expected)
    # REMI's uniform form: S * sum_k softmax_k(beta s) exp(s_k) over the valid negatives
    i = 1
    sc = torch.stack([user[i] @ table[j] for j in draws if j != target[i]])
    mass = len(sc) * (torch.softmax(beta * sc, 0) * sc.exp()).sum()
    pos = user[i] @ table[target[i]]
    one = SampledSoftmax(N, s, hard_negative_beta=beta)(
        user[i : i + 1], target[i : i + 1], table, torch.Generator().manual_seed(2)
    )
    torch.testing.assert_close(one, -pos + torch.log(pos.exp() + mass))

    rho = torch.log(N * _q(counts))
    pop_draws = torch.multinomial(
        _q(counts).float(), s, replacement=True, generator=torch.Generator().manual_seed(2)
    )
    pop = SampledSoftmax(N, s, "popularity", item_counts=counts, hard_negative_beta=beta)(
        user, target, table, torch.Generator().manual_seed(2)
    )
    expected = _manual_loss(
        user, target, table, lambda i: [(int(j), float(rho[j])) for j in pop_draws], beta
    )
    torch.testing.assert_close(pop, expected)

    exact = SampledSoftmax(N, 0, hard_negative_beta=beta)(user, target, table)
    expected = _manual_loss(
        user, target, table, lambda i: [(j, 0.0) for j in range(1, N + 1)], beta
    )
    torch.testing.assert_close(exact, expected)


def test_beta_puts_more_gradient_on_a_high_scoring_negative():
    torch.manual_seed(0)
    table = torch.randn(N + 1, D) * 0.3
    user = torch.randn(1, D)
    table[6] = user[0] * 0.6  # a hard negative: close to the user
    target = torch.tensor([2])

    def hard_share(beta: float) -> float:
        emb = table.clone().requires_grad_(True)
        fn = SampledSoftmax(N, 0, hard_negative_beta=beta)  # every item is a negative
        fn(user, target, emb).backward()
        norms = emb.grad.norm(dim=1)
        negatives = [j for j in range(1, N + 1) if j != 2]
        return float(norms[6] / norms[negatives].sum())

    plain, hard = hard_share(0.0), hard_share(2.0)
    assert hard > plain + 0.05, (plain, hard)  # measured: 0.76 against 0.28

    # the same with shared uniform negatives that include the hard item
    gen_seed = next(
        s
        for s in range(100)
        if 6 in SampledSoftmax(N, 5).sample_negatives(torch.Generator().manual_seed(s)).tolist()
    )

    def sampled_share(beta: float) -> float:
        emb = table.clone().requires_grad_(True)
        fn = SampledSoftmax(N, 5, hard_negative_beta=beta)
        fn(user, target, emb, torch.Generator().manual_seed(gen_seed)).backward()
        norms = emb.grad.norm(dim=1)
        others = [j for j in range(1, N + 1) if j != 2]
        return float(norms[6] / norms[others].sum())

    assert sampled_share(2.0) > sampled_share(0.0)


def test_beta_with_every_negative_an_accidental_hit_stays_finite():
    table, user = _problem(batch=2)
    emb = table.clone().requires_grad_(True)
    fn = SampledSoftmax(N, 0, "in_batch", item_counts=_counts(), hard_negative_beta=1.5)
    loss = fn(user, torch.tensor([4, 4]), emb)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(emb.grad).all()


def test_construction_errors():
    counts = _counts()
    with pytest.raises(ValueError, match=r"unknown sampling 'zipf'.*'uniform'.*'in_batch'"):
        SampledSoftmax(N, 5, "zipf")
    for sampling in ("popularity", "in_batch"):
        with pytest.raises(ValueError, match="needs item_counts"):
            SampledSoftmax(N, 5, sampling)
        with pytest.raises(ValueError, match=r"shape \(11,\)"):
            SampledSoftmax(N, 5, sampling, item_counts=torch.ones(N))
    with pytest.raises(ValueError, match="finite and >= 0"):
        SampledSoftmax(N, 5, "popularity", item_counts=-counts)
    with pytest.raises(ValueError, match="exact softmax"):
        SampledSoftmax(N, 0, "popularity", item_counts=counts)
    with pytest.raises(ValueError, match="exact softmax"):
        SampledSoftmax(N, N, "popularity", item_counts=counts)
    with pytest.raises(ValueError, match="hard_negative_beta"):
        SampledSoftmax(N, 5, hard_negative_beta=-0.1)
    with pytest.raises(ValueError, match="hard_negative_beta"):
        SampledSoftmax(N, 5, hard_negative_beta=float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        SampledSoftmax(N, 5, temperature=0.0)
    with pytest.raises(ValueError, match="num_negatives"):
        SampledSoftmax(N, -1)


@pytest.mark.parametrize("sampling", ["uniform", "in_batch"])
def test_logits_stay_fp32_under_bf16_autocast(sampling):
    # precision=bf16 runs the forward pass under autocast; the loss's logits must not be
    # rounded to bf16 (8-bit mantissa), so the loss equals the fp32 one exactly
    items, users = _problem(batch=6)
    items, users = items.float() * 4, users.float() * 4
    target = torch.tensor([1, 2, 3, 4, 5, 6])
    counts = _counts() if sampling == "in_batch" else None
    loss = SampledSoftmax(N, 0 if sampling == "uniform" else 5, sampling, item_counts=counts)
    plain = loss(users, target, items)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(users, target, items)
        rounded = F.cross_entropy((users @ items[1:].T), target - 1)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, plain)
    if sampling == "uniform":  # what the guard prevents: bf16 logits give another loss
        assert not torch.isclose(rounded.float(), plain, rtol=1e-4, atol=0)
