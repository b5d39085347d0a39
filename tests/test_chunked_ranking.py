"""The catalogue ranked chunk by chunk with a running merge (mirec.core.chunked_top):
exact lists, ties to the lower item index across chunk boundaries, and the same lists as
one chunk on real data."""

from __future__ import annotations

import pytest
import torch

from mirec.aggregators.max_score import max_over_interests
from mirec.core import chunked_top
from mirec.core.chunked_top import (
    RunningTop,
    blocked_items,
    exact_top,
    preselect,
    top_k,
)
from mirec.core.contracts import Extracted
from mirec.evaluation.evaluator import evaluate
from mirec.retrieval.ranking import interest_top_n, rank_catalogue, top_n, users_per_chunk
from mirec.runs import _retrieval_settings, diagnostics_for, load_run


class ScoreTable:
    """A max-over-interests retriever; its ``items`` (d = 1) score item i with
    ``values[i - 1]`` for a user whose one interest is 1."""

    num_interests = 1
    uses_user_rows = False
    scorer = staticmethod(max_over_interests)

    def __init__(self, values: list[float]) -> None:
        self.items = torch.tensor(values, dtype=torch.float32).unsqueeze(1)

    def retrieval_interests(self, extracted: Extracted) -> Extracted:
        return extracted

    def score(self, extracted: Extracted, items: torch.Tensor) -> torch.Tensor:
        return max_over_interests(extracted.interests, items, extracted.active)


def by_hand(scores: torch.Tensor, n: int) -> list[list[int]]:
    """Each row's n best columns by (score descending, column ascending), in plain Python."""
    return [sorted(range(len(row)), key=lambda j: (-row[j], j))[:n] for row in scores.tolist()]


def test_ties_across_chunk_boundaries_go_to_the_lower_item(monkeypatch):
    # items 1..9 with chunks of 3: {1, 2, 3} {4, 5, 6} {7, 8, 9}; the score 3 is held by
    # items 2, 3, 5, 6 and 8, the score 5 by item 9 alone
    model = ScoreTable([1, 3, 3, 2, 3, 3, 1, 3, 5])
    user = Extracted(torch.ones(1, 1, 1))
    monkeypatch.setattr(chunked_top, "ITEM_CHUNK", 3)
    top, scores = top_n(model, user, model.items, 4)
    assert top.tolist() == [[9, 2, 3, 5]]  # 5, then the three lowest items scoring 3
    assert scores.tolist() == [[5.0, 3.0, 3.0, 3.0]]
    # item 3 blocked (as an index, and as a mask): the next tied item, 6, comes in
    for blocked in (torch.tensor([[3, 0]]), blocked_items(torch.tensor([[3]]), 9)):
        top, _ = top_n(model, user, model.items, 4, blocked=blocked)
        assert top.tolist() == [[9, 2, 5, 6]]
    # everything but items 1 and 7 blocked: the blocked come last, at -inf, lowest first
    blocked = torch.tensor([[2, 3, 4, 5, 6, 8, 9]])
    top, scores = top_n(model, user, model.items, 4, blocked=blocked)
    assert top.tolist() == [[1, 7, 2, 3]]
    assert scores[0, 2:].isneginf().all()


def test_many_ties_match_the_order_by_score_then_index(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    values = torch.randint(0, 4, (7, 3, 97), generator=gen).float()
    values[2, 1] = float("-inf")  # an interest that scores nothing
    # and scores that keep rising: later chunks have items above the n-th best so far
    rising = torch.randint(0, 30, (7, 3, 97), generator=gen).float() + torch.arange(97) / 8
    for scores in (values, rising.floor()):
        for chunk, n in ((10, 20), (7, 7), (97, 5), (4, 50)):
            best = RunningTop(n, whole=False)
            for lo in range(0, 97, chunk):
                part = scores[..., lo : lo + chunk]
                best.add(part, lo, carried=-part)
            for k in range(3):
                assert best.columns[:, k].tolist() == by_hand(scores[:, k], n)
            assert torch.equal(best.values, scores.gather(-1, best.columns))
            assert torch.equal(best.carried, -best.values)  # carried along with its column
    # exact_top on one chunk: the same order
    values2d = values[:, 0]
    _, columns = exact_top(values2d, 30)
    assert columns.tolist() == by_hand(values2d, 30)
    # through the ranking path: 97 items whose 3 coordinates are interest k's scores
    catalogue = values[0].T.contiguous()
    users = Extracted(torch.eye(3).expand(2, 3, 3).contiguous())  # interest k reads coordinate k
    monkeypatch.setattr(chunked_top, "ITEM_CHUNK", 8)
    top, _ = top_n(ScoreTable([]), users, catalogue, 25)
    assert (top - 1).tolist() == by_hand(values[0].amax(0).expand(2, -1), 25)
    own = interest_top_n(users, catalogue, 10)
    assert (own[0] - 1).tolist() == by_hand(values[0], 10)


def test_preselection_is_torch_topk_bit_for_bit_and_exact_on_ties():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(6, 2, 12_101, generator=gen)
    scores[0, 1] = float("-inf")  # every item tied
    scores[1, 0, 100:140] = scores[1, 0].max() + 1  # 40 tied at the top
    scores[2, 1, 7] = float("nan")
    scores[3, 0, ::2] = scores[3, 0, 1::2].max() + 1  # ties at the cut of the top 50
    assert preselect(scores, 50) is not None  # the groups are used at this size
    reference = torch.topk(scores, 50)
    values, columns = top_k(scores, 50, fallback=lambda s, k: tuple(torch.topk(s, k)))
    assert torch.equal(columns, reference.indices)
    assert torch.equal(values.nan_to_num(), reference.values.nan_to_num())
    # with exact_top as the fallback: ties to the lower column, the rest unchanged
    values, columns = top_k(scores, 50, fallback=exact_top)
    for b, k in ((0, 1), (1, 0), (3, 0), (4, 1)):
        assert columns[b, k].tolist() == by_hand(scores[b, k : k + 1], 50)[0]
    integers = torch.randint(0, 20, (5, 5_000), generator=gen).float()
    assert top_k(integers, 50, fallback=exact_top)[1].tolist() == by_hand(integers, 50)


def test_users_per_chunk_no_longer_shrinks_with_the_catalogue():
    assert users_per_chunk(4, 12_101) == (1 << 25) // (4 * 12_101)  # one chunk: as before
    assert users_per_chunk(4, 2_000_000) == (1 << 25) // (4 * chunked_top.ITEM_CHUNK) == 128


@pytest.fixture(scope="module")
def ml100k_test(ml100k_run):
    loaded, data = load_run(ml100k_run)
    model = loaded.model
    histories = data.test.histories
    with torch.no_grad():
        extracted = model.extract(histories)
    return loaded.config, data, model, histories, extracted


@pytest.mark.parametrize("lam", [None, 0.5])
def test_chunked_lists_equal_one_chunk_on_ml100k(ml100k_test, monkeypatch, lam):
    config, data, model, histories, extracted = ml100k_test
    settings = _retrieval_settings(config, data)
    items = model.item_vectors().detach()
    ranking = {"item_category": settings["item_category"], "diversity_lambda": lam}
    assert items.shape[0] <= chunked_top.ITEM_CHUNK  # ml-100k is one chunk by default
    with torch.no_grad():
        whole = [
            rank_catalogue(model, extracted, items, 50, interest_n=10, **ranking),
            rank_catalogue(model, extracted, items, 50, blocked=histories, **ranking),
        ]
        monkeypatch.setattr(chunked_top, "ITEM_CHUNK", 100)  # 17 chunks of 1,682 items
        chunked = [
            rank_catalogue(model, extracted, items, 50, interest_n=10, **ranking),
            rank_catalogue(model, extracted, items, 50, blocked=histories, **ranking),
        ]
    for a, b in zip(whole, chunked, strict=True):
        assert torch.equal(a.top, b.top)
        assert torch.equal(a.scores, b.scores)
    assert torch.equal(whole[0].interest_top, chunked[0].interest_top)
    # history items never listed while others remain
    assert not (whole[1].top.unsqueeze(2) == histories.unsqueeze(1)).any()


def test_chunked_evaluation_equals_one_chunk_on_ml100k(ml100k_test, monkeypatch):
    config, data, model, _, _ = ml100k_test
    settings = _retrieval_settings(config, data)

    def run():
        diagnostics = diagnostics_for(config, data, data.test, settings["item_category"])
        return evaluate(model, data.test, diagnostics=diagnostics, **settings)

    whole = run()
    monkeypatch.setattr(chunked_top, "ITEM_CHUNK", 300)
    chunked = run()
    assert chunked.metrics == whole.metrics
    assert chunked.collapse == whole.collapse
    for name, value in whole.diagnostics.items():
        if name == "alignment_chance@10":  # a float32 sum over items, now in 6 parts
            assert chunked.diagnostics[name] == pytest.approx(value, rel=1e-5)
        else:
            assert chunked.diagnostics[name] == value, name
