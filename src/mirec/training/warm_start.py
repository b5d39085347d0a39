"""Fine-tuning: a new model's starting weights taken from a trained model folder
(``init_from``, ``mirec train --init-from DIR``).

The run's dataset is usually the grown log: more users, more behaviour, new items, some
items gone. The new model is built for it as for any run (its settings are the folder's:
:func:`mirec.config.load_config`), then every learned tensor of the folder's model is put
into it:

* the item table: an item the folder knows keeps its row; an item new to it starts at the
  mean row of the known items that come just before it in the training users' histories
  (the :data:`CONTEXT` items before each of its interactions: what the interests that
  should retrieve it are made of), else of the known items of its primary category, else
  of all known items, so that it lies among the items it resembles and can be retrieved at
  all; items the new log no longer holds are dropped with their rows, or, with
  ``removed_items=keep``, are in the new model's catalogue (:func:`mirec.data.sequences.
  with_items`) and keep them. Only training users are read: the validation and test users'
  histories hold the protocol's targets;
* the category table of a CTR model: the same, by category name, new categories at the
  mean of the known ones;
* every other parameter as it is; one of another shape means a setting that changes the
  architecture was given, which is refused in one line naming the tensor.

Buffers are not copied: they are derived from the new log (an item's categories, for one).
Training then runs as any run does (epochs, early stopping, resume), from these weights
and a fresh optimizer, or with ``init_optimizer=carry`` the folder's final one, its state
remapped as the weights were (:func:`carried_optimizer_state`: a new row's moments start
at zero); with ``fine_tune_on=new`` (the default) on the positions the folder's
log did not hold: :attr:`WarmStart.known_positions` gives, per user of the new log, how many
of their interactions the folder stored (a log grows at its end: those come first).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from mirec.data.sequences import Sequences
from mirec.errors import ConfigError
from mirec.models.folder import load_model
from mirec.training.checkpoint import OptimizerState


@dataclass(frozen=True)
class WarmStart:
    """What the new model took from the folder, as ``metrics.json`` reports it."""

    folder: str
    known_items: int
    """Items of the new log that keep the folder's learned row."""
    new_items: int
    """Items of the new log the folder does not know (started at their category's mean)."""
    kept_items: int
    """Items of the folder that the new log no longer holds, kept in the new catalogue with
    their rows (``removed_items=keep``)."""
    dropped_items: int
    """Items of the folder that the new log no longer holds, dropped with their rows."""
    new_users: int
    """Users of the new log the folder's log did not hold."""
    known_positions: np.ndarray | None = None
    """(users of the new log,) each user's interactions in the folder's stored history (0
    for a new user): training on what is new starts after them. None: the folder stored no
    histories (``stored_users`` ids or none), so what is new cannot be told."""
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    """Per id table of the model (its parameter's name), each new id's row in the folder's
    table, -1 for an id new to it: how a carried optimizer state is remapped."""

    def to_dict(self) -> dict[str, object]:
        return {
            "from": self.folder,
            "known_items": self.known_items,
            "new_items": self.new_items,
            "kept_items": self.kept_items,
            "dropped_items": self.dropped_items,
            "new_users": self.new_users,
        }


CONTEXT = 5
"""How many items before a new item's interaction its starting row is averaged over."""


def warm_start(
    model: torch.nn.Module, folder: Path, sequences: Sequences, train_users: np.ndarray
) -> WarmStart:
    """Put the learned weights of the model in ``folder`` into ``model``, built for the new
    log ``sequences`` whose training users are ``train_users`` (module docstring); returns
    what was taken."""
    old = load_model(folder, device=torch.device("cpu"))
    old_seqs = old.data.sequences
    item_rows = _rows_in(old_seqs.item_ids, sequences.item_ids)
    primary = sequences.primary_category()
    groups = None if primary is None else primary[1:]
    context = _contexts(sequences, train_users, item_rows)
    tables = {_parameter_name(model, model.item_table.weight): (item_rows, groups, context)}
    category = getattr(getattr(model, "encoder", None), "category", None)
    if category is not None and old_seqs.category_names is not None:
        names = _rows_in(old_seqs.category_names, sequences.category_names)
        tables[_parameter_name(model, category.weight)] = (names, None, None)
    old_state = dict(old.model.named_parameters())
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            source = old_state.get(name)
            if source is None:
                raise ConfigError(
                    f"--init-from {folder}: its model has no {name}; a setting given changes "
                    "the architecture: leave it out to fine-tune the folder's model"
                )
            if name in tables and source.shape[1:] == parameter.shape[1:]:
                parameter.copy_(_grown_table(source, *tables[name]))
            elif name in tables or source.shape != parameter.shape:
                raise ConfigError(
                    f"--init-from {folder}: {name} is {tuple(source.shape)} there and "
                    f"{tuple(parameter.shape)} here; a setting given changes the architecture: "
                    "leave it out to fine-tune the folder's model"
                )
            else:
                parameter.copy_(source)
    known = item_rows >= 0
    # an item of a log's own catalogue is in some sequence: one in none was kept from the folder
    held = np.bincount(sequences.items, minlength=sequences.n_items + 1)[1:] > 0
    user_rows = _rows_in(old_seqs.user_ids, sequences.user_ids)
    known_positions = None
    if old.data.stored_users == "histories":
        known_positions = np.where(user_rows >= 0, old_seqs.lengths[user_rows], 0)
    return WarmStart(
        folder=str(folder),
        known_items=int((known & held).sum()),
        new_items=int((~known).sum()),
        kept_items=int((known & ~held).sum()),
        dropped_items=old_seqs.n_items - int(known.sum()),
        new_users=int((user_rows < 0).sum()),
        known_positions=known_positions,
        rows={name: table[0] for name, table in tables.items()},
    )


def carried_optimizer_state(saved: OptimizerState, start: WarmStart) -> OptimizerState:
    """The folder's optimizer state ``saved`` for the model ``start`` warmed: each id
    table's per-row state (Adam's moments) remapped as its rows were, an id the folder
    knows keeping its own, a new id's at zero (no gradient seen yet), a dropped id's gone;
    every other parameter's state, and each step count, as it is."""
    state = {
        name: {
            key: _carried_rows(value, start.rows[name])
            if name in start.rows and isinstance(value, torch.Tensor) and value.dim() > 0
            else value
            for key, value in values.items()
        }
        for name, values in saved.state.items()
    }
    return replace(saved, state=state)


def _rows_in(old_ids: np.ndarray, new_ids: np.ndarray) -> np.ndarray:
    """For each of ``new_ids``, its row among ``old_ids``, or -1 for an id new to them.
    Ids compare exactly, in the log's own type (an int 5 is not the text "5")."""
    where = {value: row for row, value in enumerate(old_ids.tolist())}
    return np.asarray([where.get(value, -1) for value in new_ids.tolist()], dtype=np.int64)


def _contexts(
    sequences: Sequences, users: np.ndarray, item_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (new item index, old row of a known item up to :data:`CONTEXT` positions before
    one of its interactions, in the same training user's history)."""
    owner = np.repeat(np.arange(sequences.n_users), sequences.lengths)
    chosen = np.zeros(sequences.n_users, dtype=bool)
    chosen[users] = True
    items = sequences.items.astype(np.int64)
    is_new = np.zeros(sequences.n_items + 1, dtype=bool)
    is_new[1:] = item_rows < 0
    at = np.flatnonzero(is_new[items] & chosen[owner])
    new_items, old_rows = [], []
    for lag in range(1, CONTEXT + 1):
        before = at - lag
        ok = before >= 0
        ok[ok] &= owner[before[ok]] == owner[at[ok]]
        previous = item_rows[items[before[ok]] - 1]
        known = previous >= 0
        new_items.append(items[at[ok]][known])
        old_rows.append(previous[known])
    return np.concatenate(new_items), np.concatenate(old_rows)


def _grown_table(
    old: torch.Tensor,
    rows: np.ndarray,
    groups: np.ndarray | None,
    context: tuple[np.ndarray, np.ndarray] | None,
) -> torch.Tensor:
    """The table of the new ids: row 0 (padding) and each known id's row from ``old`` (whose
    row ``r + 1`` is old id ``r``); a new id at the mean old row of its ``context`` pairs
    (new index, old row), else of the known ids of its group (``groups``: each new id's
    group, -1 for none), else of every known id."""
    known = rows >= 0
    out = _carried_rows(old, rows)
    if known.all():
        return out
    taken = out[1:][torch.from_numpy(known)]
    out[1:][torch.from_numpy(~known)] = taken.mean(0) if len(taken) else old[1:].mean(0)
    if groups is not None:
        for group in np.unique(groups[~known]):
            peers = known & (groups == group)
            if group >= 0 and peers.any():
                out[1:][torch.from_numpy(~known & (groups == group))] = out[1:][
                    torch.from_numpy(peers)
                ].mean(0)
    if context is not None and len(context[0]):
        targets, sources = (torch.from_numpy(a) for a in context)
        sums = torch.zeros_like(out).index_add_(0, targets, old[sources + 1])
        counts = torch.bincount(targets, minlength=len(out))
        norms = torch.zeros(len(out), dtype=old.dtype).index_add_(
            0, targets, old[sources + 1].norm(dim=1)
        )
        seen = counts > 0
        # a mean of several directions is shorter than each: scaled back to their mean
        # length, the new item scores against an interest as its neighbours do
        direction = torch.nn.functional.normalize(sums[seen], dim=1)
        out[seen] = direction * (norms[seen] / counts[seen].to(old.dtype)).unsqueeze(1)
    return out


def _carried_rows(old: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """The table of the new ids: row 0 (padding) and each known id's row from ``old``
    (whose row ``r + 1`` is old id ``r``, ``rows`` giving each new id's ``r``, -1 for a new
    one); a new id's row is zero."""
    out = old.new_zeros((len(rows) + 1, *old.shape[1:]))
    out[0] = old[0]
    known = rows >= 0
    out[1:][torch.from_numpy(known)] = old[torch.from_numpy(rows[known] + 1)]
    return out


def _parameter_name(model: torch.nn.Module, tensor: torch.Tensor) -> str:
    return next(name for name, p in model.named_parameters() if p is tensor)
