"""CTR samples from a behaviour log, the DIN/BARS way, under docs/protocol.md's user split.

* Training users: every position t >= 4 of a sequence s gives a positive row (history
  ``s[:t]``, candidate ``s[t]``, label 1) and ``negatives`` rows with the same history and
  a candidate the user never interacted with (label 0). Training negatives are drawn again
  every epoch from the run's seeded generator.
* Validation and test users: the history is the first 80% of the sequence and every
  distinct item of the last 20% is a positive (the retrieval targets of docs/protocol.md
  section 4, :class:`~mirec.data.examples.EvaluationSet`), each with ``negatives``
  sampled items the user never interacted with. These rows are drawn once with a fixed
  seed and stored (``ctr/*.npz`` in the cache folder), so every model and every run is
  scored on the same rows.

A row is (user row, history start, history end, candidate, label): its history is
``items[max(start, end - maxlen):end]`` of the flat :class:`Sequences` arrays, so no row
ever sees an item after its own position.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from mirec.atomic import save_npz_atomic
from mirec.data.examples import EvaluationSet, history_cuts, training_positions
from mirec.data.prepare import PreparedData
from mirec.data.sequences import Sequences
from mirec.errors import ConfigError

EVALUATION_SEED = 2024
"""The seed of the stored validation/test negatives: fixed, so every run scores the same
rows."""


@dataclass(frozen=True)
class CTRRows:
    """Labelled (history, candidate) rows."""

    users: np.ndarray
    """int64 user rows."""
    starts: np.ndarray
    """int64 offsets into ``Sequences.items`` where the user's sequence starts."""
    ends: np.ndarray
    """int64 offsets where the row's history ends (exclusive)."""
    items: np.ndarray
    """int64 candidate item indices."""
    labels: np.ndarray
    """float32, 1 for a positive."""

    def __len__(self) -> int:
        return len(self.items)


class InteractedItems:
    """Membership test "did user u ever interact with item i", vectorised: the sorted keys
    ``u * (n_items + 1) + i`` of every interaction, searched with ``np.searchsorted``."""

    def __init__(self, seqs: Sequences) -> None:
        owner = np.repeat(np.arange(seqs.n_users, dtype=np.int64), seqs.lengths)
        self.width = seqs.n_items + 1
        self.keys = np.unique(owner * self.width + seqs.items)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.width + items
        at = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
        return self.keys[at] == keys


def sample_negatives(
    users: np.ndarray,
    n_items: int,
    interacted: InteractedItems,
    rng: np.random.Generator,
) -> np.ndarray:
    """One uniform item per entry of ``users`` that the user never interacted with
    (rejection sampling, redrawing only the rejected entries)."""
    items = rng.integers(1, n_items + 1, len(users))
    bad = interacted.contains(users, items)
    while bad.any():
        items[bad] = rng.integers(1, n_items + 1, int(bad.sum()))
        bad[bad] = interacted.contains(users[bad], items[bad])
    return items


def training_rows(
    seqs: Sequences,
    users: np.ndarray,
    negatives: int,
    interacted: InteractedItems,
    rng: np.random.Generator,
) -> CTRRows:
    """Positives at every position t >= 4 of the training users, each followed by
    ``negatives`` freshly drawn negatives with the same history."""
    rows, t = training_positions(seqs, users)
    starts = seqs.offsets[rows]
    ends = starts + t
    return _with_negatives(rows, starts, ends, seqs.items[ends], negatives, seqs, interacted, rng)


def evaluation_rows(
    seqs: Sequences,
    eval_set: EvaluationSet,
    negatives: int,
    interacted: InteractedItems,
    seed: int,
) -> CTRRows:
    """For each user of ``eval_set``: the history is the first 80% of the sequence; each of
    the user's distinct targets (docs/protocol.md section 4) is a positive, with ``negatives``
    negatives drawn with ``seed``."""
    starts, cuts = history_cuts(seqs, eval_set.users)
    owner = np.repeat(np.arange(len(eval_set)), np.diff(eval_set.target_offsets))
    rng = np.random.default_rng(seed)
    return _with_negatives(
        eval_set.users[owner],
        starts[owner],
        cuts[owner],
        eval_set.target_items,
        negatives,
        seqs,
        interacted,
        rng,
    )


def _with_negatives(
    rows: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    positives: np.ndarray,
    negatives: int,
    seqs: Sequences,
    interacted: InteractedItems,
    rng: np.random.Generator,
) -> CTRRows:
    group = 1 + negatives
    n = len(positives)
    candidates = np.empty((n, group), dtype=np.int64)
    candidates[:, 0] = positives
    for j in range(1, group):
        candidates[:, j] = sample_negatives(rows, seqs.n_items, interacted, rng)
    labels = np.zeros((n, group), dtype=np.float32)
    labels[:, 0] = 1.0
    return CTRRows(
        users=np.repeat(rows, group),
        starts=np.repeat(starts, group),
        ends=np.repeat(ends, group),
        items=candidates.ravel(),
        labels=labels.ravel(),
    )


def stored_evaluation_rows(
    seqs: Sequences,
    eval_set: EvaluationSet,
    negatives: int,
    interacted: InteractedItems,
    cache: Path,
    split_name: str,
) -> CTRRows:
    """:func:`evaluation_rows` with the fixed :data:`EVALUATION_SEED`, read from ``cache``
    when they were drawn before for the same sequences, users and number of negatives."""
    digest = hashlib.sha256()
    for array in (seqs.items, seqs.offsets, np.asarray(eval_set.users, dtype=np.int64)):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(json.dumps([split_name, negatives, EVALUATION_SEED]).encode())
    path = cache / "ctr" / f"{split_name}-{digest.hexdigest()[:24]}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return CTRRows(**{name: data[name] for name in data.files})
    rows = evaluation_rows(seqs, eval_set, negatives, interacted, EVALUATION_SEED)
    save_npz_atomic(path, {f.name: getattr(rows, f.name) for f in fields(rows)})
    return rows


@dataclass(frozen=True)
class CTRData:
    """What a CTR run needs: the retrieval data, the membership test for negatives, and
    the stored validation and test rows."""

    prepared: PreparedData
    interacted: InteractedItems
    negatives: int
    valid: CTRRows
    test: CTRRows

    @property
    def sequences(self) -> Sequences:
        return self.prepared.sequences

    @property
    def maxlen(self) -> int:
        return self.prepared.maxlen


def prepare_ctr(prepared: PreparedData, negatives: int, cache: Path) -> CTRData:
    """CTR rows of ``prepared``'s split with ``negatives`` negatives per positive."""
    if negatives < 1:
        raise ConfigError(f"ctr_negatives must be at least 1, got {negatives}")
    seqs = prepared.sequences
    interacted = InteractedItems(seqs)

    def stored(split: str) -> CTRRows:
        eval_set = getattr(prepared, split)
        return stored_evaluation_rows(seqs, eval_set, negatives, interacted, cache, split)

    return CTRData(
        prepared=prepared,
        interacted=interacted,
        negatives=negatives,
        valid=stored("valid"),
        test=stored("test"),
    )
