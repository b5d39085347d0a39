"""PROTOCOL.md sections 1-4 on hand-made logs: filtering, order, re-indexing, split, examples."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from mirec.data.examples import (
    evaluation_set,
    gather_histories,
    training_positions,
    training_windows,
)
from mirec.data.log import RawLog
from mirec.data.sequences import build_sequences, split_users
from mirec.errors import DataError
from mirec.training.trainer import TrainingExamples


def log_of(rows: list[tuple], categories: list[tuple] | None = None) -> RawLog:
    users, items, stamps = zip(*rows, strict=True)
    cats = None
    if categories:
        cats = pa.table(
            {"item": [c[0] for c in categories], "category": [c[1] for c in categories]}
        )
    return RawLog(
        interactions=pa.table(
            {"user": list(users), "item": list(items), "timestamp": pa.array(stamps, pa.float64())}
        ),
        sources=(),
        item_categories=cats,
    )


def test_filter_items_then_users_one_pass():
    # item 900 has 4 interactions: dropped; that leaves user 2 with 4: dropped. Item 15 then
    # has only 3 interactions left but stays: the filter is one pass, items then users
    rows = [(u, i, float(i)) for u in (1, 3, 4, 5, 7) for i in (10, 11, 12, 13, 14)]
    rows += [(u, 15, 20.0) for u in (1, 3, 4)]
    rows += [(2, 900, 0.0), (2, 15, 1.0), (2, 15, 2.0), (2, 10, 3.0), (2, 11, 4.0)]
    rows += [(6, 900, 0.0), (6, 900, 1.0), (6, 900, 2.0)]
    seqs = build_sequences(log_of(rows))
    assert seqs.user_ids.tolist() == [1, 3, 4, 5, 7]
    assert seqs.item_ids.tolist() == [10, 11, 12, 13, 14, 15]
    assert seqs.sequence(0).tolist() == [1, 2, 3, 4, 5, 6]
    assert seqs.n_interactions == 25 + 3


def test_time_order_with_ties_in_file_order_and_numeric_user_sort():
    # user 10 sorts after user 9 numerically; items re-indexed by ascending raw id
    base = [(u, i, 0.0) for u in (1, 2, 3, 4) for i in (7, 8, 9, 5, 6)]
    rows = [*base, (10, 9, 3.0), (10, 8, 1.0), (10, 7, 1.0), (10, 6, 0.0), (10, 5, 9.0)]
    rows += [(9, i, 0.0) for i in (5, 6, 7, 8, 9)]
    seqs = build_sequences(log_of(rows))
    assert seqs.user_ids.tolist() == [1, 2, 3, 4, 9, 10]
    # user 10 by time: 6 (t0), 8 (t1, first in file), 7 (t1), 9 (t3), 5 (t9)
    assert seqs.item_ids[seqs.sequence(5) - 1].tolist() == [6, 8, 7, 9, 5]
    # ties everywhere: file order
    assert seqs.item_ids[seqs.sequence(0) - 1].tolist() == [7, 8, 9, 5, 6]


def test_categories_follow_the_reindexing():
    rows = [(u, i, 0.0) for u in range(5) for i in ("b", "a", "c", "d", "e")]
    seqs = build_sequences(log_of(rows, [("a", "x"), ("a", "y"), ("c", "y"), ("zz", "w")]))
    assert seqs.item_ids.tolist() == ["a", "b", "c", "d", "e"]
    names = seqs.category_names.tolist()
    cats = [names[c] for c in seqs.item_category_codes]
    assert seqs.item_category_offsets.tolist() == [0, 2, 2, 3, 3, 3]
    assert cats == ["x", "y", "y"]
    assert seqs.primary_category().tolist() == [-1, names.index("x"), -1, names.index("y"), -1, -1]


def test_nothing_left_after_filtering_is_an_error():
    with pytest.raises(DataError, match="nothing is left"):
        build_sequences(log_of([(1, 1, 0.0), (1, 2, 0.0), (2, 1, 0.0)]))


def test_split_is_the_protocol_permutation():
    split = split_users(22363, seed=42)
    assert (len(split.train), len(split.valid), len(split.test)) == (17890, 2236, 2237)
    perm = np.random.default_rng(42).permutation(22363)
    assert np.array_equal(np.concatenate([split.train, split.valid, split.test]), perm)
    again = split_users(22363, seed=42)
    assert np.array_equal(again.test, split.test)
    other = split_users(22363, seed=7)
    assert not np.array_equal(other.test, split.test)


def test_training_positions_and_histories():
    # two users of lengths 6 and 4: positions t = 4, 5 for the first, none for the second
    rows = [(1, i, float(t)) for t, i in enumerate([1, 2, 3, 4, 5, 6])]
    rows += [(u, i, 0.0) for u in (2, 3, 4, 5) for i in (1, 2, 3, 4, 5, 6)]
    seqs = build_sequences(log_of(rows))
    users, t = training_positions(seqs, np.array([0, 1]))
    assert users.tolist() == [0, 0, 1, 1]
    assert t.tolist() == [4, 5, 4, 5]
    items = torch.from_numpy(seqs.items)
    starts = torch.tensor([0, 0])
    hist = gather_histories(items, starts, torch.tensor([4, 5]), maxlen=3)
    assert hist.tolist() == [[2, 3, 4], [3, 4, 5]]
    padded = gather_histories(items, starts, torch.tensor([2, 4]), maxlen=5)
    assert padded.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_training_windows_hold_every_position_once_with_its_prefix():
    # one user of length 11 (positions 4..10 are targets), maxlen 3: windows end at 11, 8, 5
    rows = [(1, i, float(t)) for t, i in enumerate(range(1, 12))]
    rows += [(u, i, 0.0) for u in (2, 3, 4, 5) for i in range(1, 12)]
    seqs = build_sequences(log_of(rows))
    users, ends = training_windows(seqs, np.array([0, 1]), maxlen=3)
    assert users.tolist() == [0, 0, 0, 1, 1, 1] and ends.tolist() == [11, 8, 5, 11, 8, 5]
    s = seqs.items[: seqs.lengths[0]].tolist()
    examples = TrainingExamples(
        items=torch.from_numpy(seqs.items),
        starts=torch.zeros(3, dtype=torch.int64),
        ends=torch.from_numpy(ends[:3]),
        maxlen=3,
        windows=True,
    )
    histories, targets = examples.batch(torch.arange(3))
    # each target column is predicted from the history columns up to its own
    assert histories.tolist() == [s[7:10], s[4:7], s[1:4]]
    assert targets.tolist() == [s[8:11], s[5:8], [0, 0, s[4]]]  # position < 4: no target
    assert sorted(t for row in targets.tolist() for t in row if t) == sorted(s[4:])
    # 7 positions fill one window of 7 exactly, and one of 20 with room to spare
    assert training_windows(seqs, np.array([0]), maxlen=7)[1].tolist() == [11]
    assert training_windows(seqs, np.array([0]), maxlen=20)[1].tolist() == [11]


def test_evaluation_history_and_target_set():
    # length 11: k = int(8.8) = 8; history = last 3 of s[:8]; targets = distinct of s[8:]
    seq = [1, 2, 3, 4, 5, 6, 7, 8, 9, 2, 9]
    rows = [(1, i, float(t)) for t, i in enumerate(seq)]
    rows += [(u, i, 0.0) for u in (2, 3, 4, 5) for i in range(1, 10)]
    seqs = build_sequences(log_of(rows))
    ev = evaluation_set(seqs, np.array([0, 1]), maxlen=3)
    assert ev.histories[0].tolist() == [6, 7, 8]
    assert sorted(ev.targets_of(0).tolist()) == [2, 9]
    # user 2: length 9, k = 7: history 5, 6, 7; targets 8, 9
    assert ev.histories[1].tolist() == [5, 6, 7]
    assert sorted(ev.targets_of(1).tolist()) == [8, 9]
