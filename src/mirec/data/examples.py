"""docs/protocol.md sections 3-4: training positions, evaluation histories and target sets.

Histories are left-padded with 0 so the most recent item always sits in the last column,
which is what positional embeddings and causal encoders expect.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from mirec.data.sequences import Sequences

MIN_TARGET_POSITION = 4


def targets_per_user(seqs: Sequences, users: np.ndarray) -> np.ndarray:
    """Training positions ``4 <= t < len(s)`` of each of ``users``."""
    return np.maximum(seqs.lengths[users] - MIN_TARGET_POSITION, 0)


def _index_in_block(sizes: np.ndarray) -> np.ndarray:
    """0, 1, ..., sizes[0] - 1, 0, 1, ..., sizes[1] - 1, ...: each entry's index in its block."""
    return np.arange(sizes.sum(), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def training_positions(seqs: Sequences, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (user row, position t) with ``4 <= t < len(s)`` of the given training users."""
    per_user = targets_per_user(seqs, users)
    rows = np.repeat(users, per_user)
    return rows.astype(np.int64), _index_in_block(per_user) + MIN_TARGET_POSITION


def training_windows(
    seqs: Sequences, users: np.ndarray, maxlen: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sequence training's windows: (user row, end) pairs whose target positions
    ``[end - maxlen, end)``, cut to ``4 <= t < len(s)``, hold every training position of
    the given users exactly once. Windows are laid from each sequence's end backwards, so
    the last one of a user ends with their most recent item."""
    per_user = -(-targets_per_user(seqs, users) // maxlen)  # ceiling division
    rows = np.repeat(users, per_user)
    ends = np.repeat(seqs.lengths[users], per_user) - _index_in_block(per_user) * maxlen
    return rows.astype(np.int64), ends


def training_item_counts(seqs: Sequences, users: np.ndarray) -> np.ndarray:
    """(N + 1,) interactions per item index among ``users`` (index 0, the padding, is 0)."""
    chosen = np.zeros(seqs.n_users, dtype=bool)
    chosen[users] = True
    # one flag per interaction (a byte each), not an int64 owner per interaction
    return np.bincount(seqs.items[np.repeat(chosen, seqs.lengths)], minlength=seqs.n_items + 1)


def host_tensor(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing ``array``'s memory, as ``torch.from_numpy`` gives, also when the
    array is a read-only memory map: mirec never writes to the tensors it makes of the
    dataset, so torch's warning that writing would be undefined does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def gather_histories(
    items: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, maxlen: int
) -> torch.Tensor:
    """``items[max(start, end - maxlen):end]`` for each row, left-padded with 0 to ``maxlen``,
    as int64 (what embedding lookups and losses take).

    ``items`` is the flat item array of :class:`Sequences` (int64, or int32 as memory-mapped
    data stores it); ``starts``/``ends`` are absolute offsets into it. The histories are
    int64 either way. Works on whichever device the tensors are on.
    """
    index = ends.unsqueeze(1) - maxlen + torch.arange(maxlen, device=items.device)
    valid = index >= starts.unsqueeze(1)
    return torch.where(valid, items[index.clamp_min(0)].to(torch.int64), 0)


@dataclass(frozen=True)
class EvaluationSet:
    """Histories and target sets of evaluation users (docs/protocol.md section 4)."""

    users: np.ndarray
    """User rows, in the order of ``histories``."""
    histories: torch.Tensor
    """(n_users, maxlen) int64, left-padded."""
    target_offsets: np.ndarray
    """CSR offsets: user j's distinct targets are ``target_items[offsets[j]:offsets[j + 1]]``."""
    target_items: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def targets_of(self, j: int) -> np.ndarray:
        return self.target_items[self.target_offsets[j] : self.target_offsets[j + 1]]

    def sample(self, n: int | None, seed: int) -> EvaluationSet:
        """A fixed random ``n`` of these users, in their order here, drawn by ``seed``
        alone (the same users on every call); all of them (this set itself) when ``n`` is
        None or not smaller than the set."""
        if n is None or n >= len(self):
            return self
        rows = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        starts = self.target_offsets[rows]
        counts = self.target_offsets[rows + 1] - starts
        return EvaluationSet(
            users=self.users[rows],
            histories=self.histories[torch.from_numpy(rows)],
            target_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            target_items=self.target_items[np.repeat(starts, counts) + _index_in_block(counts)],
        )


def history_cuts(seqs: Sequences, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, cuts): where each evaluation user's sequence starts in ``seqs.items`` and
    where their history ends, ``start + int(0.8 * len(s))`` (docs/protocol.md section 4)."""
    starts = seqs.offsets[users]
    return starts, starts + (0.8 * seqs.lengths[users]).astype(np.int64)


def evaluation_set(seqs: Sequences, users: np.ndarray, maxlen: int) -> EvaluationSet:
    """History = last ``maxlen`` items of ``s[:k]``, targets = distinct items of ``s[k:]``,
    ``k = int(0.8 * len(s))``."""
    starts, cut = history_cuts(seqs, users)
    lengths = seqs.lengths[users]
    histories = gather_histories(
        host_tensor(seqs.items), torch.from_numpy(starts), torch.from_numpy(cut), maxlen
    )
    # distinct targets per user, vectorised: sort (user, item) pairs and drop repeats
    n_tail = starts + lengths - cut
    owner = np.repeat(np.arange(len(users)), n_tail)
    tail_items = seqs.items[np.repeat(cut, n_tail) + _index_in_block(n_tail)].astype(np.int64)
    order = np.lexsort((tail_items, owner))
    owner, tail_items = owner[order], tail_items[order]
    first = np.ones(len(owner), dtype=bool)
    first[1:] = (owner[1:] != owner[:-1]) | (tail_items[1:] != tail_items[:-1])
    counts = np.bincount(owner[first], minlength=len(users))
    return EvaluationSet(
        users=users,
        histories=histories,
        target_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        target_items=tail_items[first],
    )
