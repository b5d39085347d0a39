"""The public API: a trained model you load and ask "what next for this history?".

    import mirec
    rec = mirec.Recommender.load("runs/beauty")  # a `mirec train` output; no dataset needed
    recs = rec.recommend(history, n=50)          # raw item ids, oldest first
    recs[0].item, recs[0].score, recs[0].interest
    rec.recommend(user=42)                       # a user of the training log, by id
    rec.explain(user=42).to_text()               # the history grouped by interest, and why
    rec.info.n_items, rec.info.item_ids          # what the model is: one record

A model folder holds a retrieval model (:class:`Recommender`: lists over the catalogue) or
a CTR model (:class:`CTRScorer`: click probabilities of given candidates); each class
loads only its own task, and :func:`load` picks the class from the folder. Training is
:func:`mirec.train` (:mod:`mirec.training_api`): nothing here imports the training stack.

Histories are raw item ids as in the source log, oldest first; the model reads the most
recent ``maxlen`` of them. Every list comes from the one ranking path of the evaluator
(:mod:`mirec.retrieval.ranking`), so a protocol test history gets exactly the evaluator's
list. Items the catalogue does not know are dropped and reported in ``unknown_items``
(``on_unknown="error"`` refuses them instead); a history with no known item gets the most
popular items of the training users, each with ``interest=None``.

``index="hnsw"`` (or ``"flat"``, ``"ivf"``) answers from an approximate nearest-neighbour
index stored in the model folder by ``mirec index`` (:mod:`mirec.retrieval.ann`): each
interest's top items from the index, ranked by the same path; ``index=None`` (the default)
scores the whole catalogue.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch

from mirec.atomic import (
    kept_folders,
    refuse_foreign_contents,
    refuse_unsafe_target,
    staged_folder,
    write_json_atomic,
)
from mirec.core.chunked_top import blocked_items
from mirec.core.config import INFERENCE_SETTINGS, MAX_DIVERSITY_LAMBDA, MAX_QUOTA_ALPHA, Config
from mirec.core.layout import INDEX_PREFIX, MODEL_FILE, OPTIMIZER_FILE, is_model_folder_file
from mirec.data.vocabulary import Vocabulary, check_on_unknown
from mirec.errors import ConfigError, MirecError
from mirec.evaluation.inspection import UserReport, explain_history
from mirec.models.build import single_retrieval_vector
from mirec.models.folder import (
    METRICS_FILE,
    WEIGHTS_FILE,
    LoadedModel,
    load_model,
    save_weights,
    write_folder_data,
)
from mirec.models.most_popular import MostPopular
from mirec.results import RunResult, read_result
from mirec.retrieval import ann
from mirec.retrieval.ann import ItemIndex
from mirec.retrieval.ranking import best_interest, rank, top_n, users_per_chunk

_MODEL_SETTING: Any = object()
"""Default of ``diversity_lambda`` and ``quota_alpha``: the model's own setting (None unless
it has one)."""
_MODEL_MERGE = (_MODEL_SETTING, _MODEL_SETTING)
"""The model's own merge settings (``diversity_lambda``, ``quota_alpha``)."""


def _path(value: Any, name: str) -> Path:
    """``value`` as a Path; a MirecError naming the argument for None or a non-path (a
    bare TypeError from pathlib otherwise)."""
    if isinstance(value, str | os.PathLike) and not isinstance(value, bytes):
        text = os.fspath(value)
        if isinstance(text, str) and text:
            return Path(text)
    raise MirecError(f"{name}={value!r}: expected a folder path (a str or pathlib.Path)")


def _ids(value: Any, name: str, *, ordered: bool = True) -> list:
    """A list of raw ids from a sequence or a 1-d array (``ordered=False``: any iterable,
    a set too); a MirecError naming the argument for None, a string, a mapping, a scalar
    or an array of another shape (a 0-d array was a bare TypeError)."""
    if isinstance(value, np.ndarray):
        if value.ndim == 1:
            return value.tolist()
    elif not isinstance(value, str | bytes | dict) and isinstance(
        value, Sequence if ordered else Iterable
    ):
        return list(value)
    shown = f"a {value.ndim}-d array" if isinstance(value, np.ndarray) else type(value).__name__
    what = "a list of raw item ids, oldest first" if ordered else "a list of raw item ids"
    raise MirecError(f"{name} must be {what}; got {shown}")


def _flag(value: Any, name: str) -> bool:
    """A bool; anything else (``'no'`` is true to Python) is a MirecError."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise MirecError(f"{name}={value!r}: expected True or False")


def _merge_setting(value: Any, name: str, most: float) -> float | None:
    """A merge's setting (``diversity_lambda``, ``quota_alpha``) checked as the config
    checks it: None, or a finite number in [0, ``most``] (NaN, inf or 1e300 picked one
    item several times)."""
    if value is None:
        return None
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    ):
        number = float(value)
        if math.isfinite(number) and 0 <= number <= most:
            return number
    raise MirecError(f"{name}={value!r}: expected a finite number in [0, {most:g}], or None")


def _is_history(value: Any) -> bool:
    """Whether an element of ``recommend``'s ``history`` is itself a history (so the
    argument is several): an array, or a sequence other than a string."""
    return isinstance(value, np.ndarray) or (
        isinstance(value, Sequence) and not isinstance(value, str | bytes)
    )


def _histories(history: Any) -> tuple[list, bool]:
    """``recommend``'s ``history`` as a list of histories, and whether it was several: a
    2-d array, or a sequence whose first element is a history (:func:`_is_history`), is
    several; anything else is one, checked as a history by the lookup (so a string, a
    number or a 3-d array is refused there). One history holding a list among its ids is
    refused: read by its first element, it would have been one history with an unknown id,
    a batch mistyped."""
    if isinstance(history, np.ndarray):
        return (list(history), True) if history.ndim == 2 else ([history], False)
    if isinstance(history, Sequence) and not isinstance(history, str | bytes):
        if len(history) and _is_history(history[0]):
            return list(history), True
        nested = next((i for i, value in enumerate(history) if _is_history(value)), None)
        if nested is not None:
            raise MirecError(
                f"history mixes item ids and histories (element {nested} is a "
                f"{type(history[nested]).__name__}): give one history of raw item ids or a "
                "list of histories"
            )
    return [history], False


def _users(user: Any) -> tuple[list, bool]:
    """``recommend``'s ``user`` as a list of user ids, and whether it was several: a list,
    tuple or 1-d array is several, an int or a str is one."""
    if isinstance(user, list | tuple):
        return list(user), True
    if isinstance(user, np.ndarray) and user.ndim == 1:
        return user.tolist(), True
    if isinstance(user, int | str | np.integer):
        return [user], False
    shown = f"a {user.ndim}-d array" if isinstance(user, np.ndarray) else type(user).__name__
    raise MirecError(f"user must be one user id (an int or str) or a list of them; got {shown}")


def _loaded(
    path: Any, device: str | None, settings: dict[str, Any], caller: str
) -> tuple[LoadedModel, Path]:
    """The model folder at ``path`` with the inference-time ``settings`` (anything else is
    refused: it would need retraining) on ``device``."""
    changed = sorted(set(settings) - set(INFERENCE_SETTINGS))
    if changed:
        raise ConfigError(
            f"{caller}: {changed[0]} is not an inference-time setting "
            f"({', '.join(INFERENCE_SETTINGS)}); retrain to change it"
        )
    folder = _path(path, "path")
    overrides = {**settings, **({} if device is None else {"device": device})}
    return load_model(folder, overrides), folder


@dataclass(frozen=True)
class Recommendation:
    item: int | str
    """The raw item id, in the source log's type."""
    score: float
    """The model's score (for the popularity fallback: the item's training count)."""
    interest: int | None
    """Which of the user's interests scores the item highest; None for the popularity
    fallback of a history with no known item."""


class Recommendations(list):
    """A ranked list of :class:`Recommendation`, best first, with the history's ids that the
    catalogue does not know in ``unknown_items``."""

    def __init__(self, items: Iterable[Recommendation] = (), unknown_items: Sequence = ()):
        super().__init__(items)
        self.unknown_items = list(unknown_items)


@dataclass(frozen=True, eq=False)
class ModelInfo:
    """What a loaded model folder is: its model, data, vocabularies and run. A snapshot
    (sequences are tuples, the counts read-only, the config and metrics copies), so
    nothing done to it changes the model's answers."""

    name: str
    """The model's config name (``comirec-sa``, ``din``, ...)."""
    task: str
    """``retrieval`` (:class:`Recommender`) or ``ctr`` (:class:`CTRScorer`)."""
    dataset: str
    config: Config = field(repr=False)
    """Every setting of the run, with the inference-time settings it was loaded with."""
    maxlen: int
    """How many of a history's most recent items the model reads."""
    num_interests: int
    """K, the interests per user."""
    n_items: int
    n_users: int
    item_ids: tuple[int | str, ...] = field(repr=False)
    """Raw item ids, in the order of :meth:`Recommender.item_embeddings`' rows."""
    user_ids: tuple[int | str, ...] = field(repr=False)
    """Raw ids of the users of the training log (all splits), served by
    ``recommend(user=...)``; empty when the folder keeps no users."""
    stored_users: str
    """What the folder keeps of the log's users: ``histories``, ``ids`` or ``none``
    (``Config.stored_users``)."""
    item_titles: tuple[str | None, ...] | None = field(repr=False)
    """Item titles in ``item_ids`` order (None for an item the dataset does not name), or
    None when the dataset has no titles."""
    item_categories: tuple[tuple[str, ...], ...] | None = field(repr=False)
    """Each item's category names in ``item_ids`` order, or None when the dataset has no
    categories."""
    item_counts: np.ndarray = field(repr=False)
    """(n_items,) training interactions of each item, in ``item_ids`` order: the
    popularity that a history with no known item is served by."""
    metrics: RunResult | None = field(repr=False)
    """The run's record, its ``metrics.json`` (:mod:`mirec.results`), when the folder has
    one."""
    folder: Path | None
    """The model folder it was loaded from, where its item indexes live."""
    device: torch.device
    """Where the model computes."""


class _ModelFolder:
    """A trained model of one task with its item and user vocabularies: what
    :class:`Recommender` and :class:`CTRScorer` share (loading, saving, the description,
    stored histories, reading histories)."""

    _task: ClassVar[str]
    """The task of the folders this class loads."""
    _answers: ClassVar[str]
    """What its models give, for the line that refuses a folder of the other task."""

    def __init__(self, loaded: LoadedModel, folder: Path | None = None) -> None:
        task = loaded.config.task
        if task != self._task:
            # one line naming the class that does load it (a CTR model's retrieval methods
            # failed deep inside, an AttributeError of its model)
            other = _CLASS_OF_TASK[task]
            where = "" if folder is None else f"{folder}: "
            raise MirecError(
                f"{where}{loaded.config.model} is a {task} model ({other._answers}); load it "
                f"with {other.__name__}.load, or mirec.load, which picks the class"
            )
        self._config: Config = loaded.config
        self._model = loaded.model
        self._metrics = loaded.metrics
        self._folder = folder
        self._data = loaded.data
        seqs = loaded.data.sequences
        self._items = Vocabulary(seqs.item_ids, "item")
        self._users = Vocabulary(seqs.user_ids, "user")
        tensors = [*self._model.parameters(), *self._model.buffers()]
        self._device = tensors[0].device if tensors else torch.device("cpu")

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None, **settings: Any) -> Self:
        """Load a model folder written by ``mirec train`` (or :meth:`save`). ``settings``
        change inference-time settings only (``adaptive_k``, ``diversity_lambda``,
        ``quota_alpha``, ``quota_half_life``); ``device`` defaults to the run's (``auto``:
        CUDA when present). A folder of the other task is refused, naming the class that
        loads it (:func:`load` picks it)."""
        return cls(*_loaded(path, device, settings, f"{cls.__name__}.load"))

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write this model as a self-contained folder at ``path`` (whole or not at all),
        with the item indexes and the optimizer state (``keep_optimizer_state``) of the
        folder it was loaded from; an existing non-empty folder
        is replaced only with ``overwrite``."""
        target = _path(path, "path")
        # replacing target must not take this model's own folder (its indexes are copied
        # from there), the data or anything else with it
        refuse_unsafe_target(target, kept_folders((self._folder, "the model folder")))
        empty = target.is_dir() and not any(target.iterdir())
        if target.exists() and not empty and not overwrite:
            raise MirecError(f"{target}: already exists; pass overwrite=True to replace it")
        # replacing takes the whole folder: only ever a model folder, never files beside one
        refuse_foreign_contents(target, is_model_folder_file, MODEL_FILE, "a model folder")
        with staged_folder(target) as staging:
            data = self._data
            save_weights(self._model, staging / WEIGHTS_FILE)
            write_folder_data(staging, self._config, data.sequences, data.item_counts, data.maxlen)
            if self._metrics is not None:
                write_json_atomic(staging / METRICS_FILE, self._metrics)
            if self._folder is not None:
                # the item indexes stay valid: the same item vectors (ItemIndex.load checks)
                for index_file in sorted(self._folder.glob(f"{INDEX_PREFIX}*")):
                    shutil.copy2(index_file, staging / index_file.name)
                # so does a kept optimizer state (of the same weights: a carry checks)
                if (self._folder / OPTIMIZER_FILE).is_file():
                    shutil.copy2(self._folder / OPTIMIZER_FILE, staging / OPTIMIZER_FILE)
        return target

    @cached_property
    def info(self) -> ModelInfo:
        """What this model is (:class:`ModelInfo`), built on first use: the item and user
        ids of a large log take a while to list, and most calls never need them."""
        data, seqs = self._data, self._data.sequences
        titles = seqs.item_titles
        categories = None
        if seqs.category_names is not None:
            names = [str(name) for name in seqs.category_names]
            categories = tuple(
                tuple(names[c] for c in seqs.categories_of(i)) for i in range(1, seqs.n_items + 1)
            )
        counts = data.item_counts[1:].copy()
        counts.flags.writeable = False
        return ModelInfo(
            name=self._config.model,
            task=self._config.task,
            dataset=self._config.dataset,
            config=copy.deepcopy(self._config),
            maxlen=data.maxlen,
            num_interests=int(self._model.num_interests),
            n_items=len(self._items),
            n_users=len(self._users),
            item_ids=tuple(self._items.ids.tolist()),
            user_ids=tuple(self._users.ids.tolist()),
            stored_users=data.stored_users,
            item_titles=None if titles is None else tuple(str(t) or None for t in titles),
            item_categories=categories,
            item_counts=counts,
            metrics=None
            if self._metrics is None
            else read_result(copy.deepcopy(self._metrics), str(self._folder or "the model")),
            folder=self._folder,
            device=self._device,
        )

    def history_of(self, user: int | str) -> list[int | str]:
        """A known user's stored history (raw item ids, oldest first)."""
        row = self._stored_row(user)
        return [self._items.id_of(i - 1) for i in self._data.sequences.sequence(row)]

    # -- internals ------------------------------------------------------------------

    def _stored_row(self, user: int | str) -> int:
        """The row of a known user whose history the folder stores: an UnknownIdError for
        a user the log does not hold, a ConfigError when the folder keeps no histories
        (``stored_users``)."""
        row = -1
        if self._data.stored_users != "none":  # else every id would read as unknown
            row = self._users.row_of(user, self._config.dataset)
        self._data.require_histories(f"a request for user {user!r}", "send their history")
        return row

    def _lookup(
        self, history: Any, on_unknown: str, name: str = "a history"
    ) -> tuple[np.ndarray, list]:
        """Raw ids -> item indices of the known ones, and the unknown ids."""
        rows, unknown = self._items.known_rows(_ids(history, name), on_unknown)
        return rows + 1, unknown

    def _padded(self, rows: list[np.ndarray], width: int | None = None) -> torch.Tensor:
        """Histories of item indices -> (B, width), the most recent items, left-padded;
        ``width`` defaults to ``maxlen``, what the model reads."""
        width = self._data.maxlen if width is None else width
        out = torch.zeros(len(rows), width, dtype=torch.long)
        for b, indices in enumerate(rows):
            recent = indices[len(indices) - width :] if len(indices) > width else indices
            if len(recent):
                out[b, -len(recent) :] = torch.from_numpy(np.asarray(recent, dtype=np.int64))
        return out.to(self._device)


class Recommender(_ModelFolder):
    """A trained retrieval model: the top-n items of the whole catalogue for a history or
    a user, the interests behind them, and the item embeddings and indexes."""

    _task = "retrieval"
    _answers = "recommendations over the whole catalogue"

    def __init__(self, loaded: LoadedModel, folder: Path | None = None) -> None:
        super().__init__(loaded, folder)
        self._indexes: dict[str, ItemIndex] = {}
        seqs = loaded.data.sequences
        self._popular = MostPopular(seqs.n_items).fit(loaded.data.item_counts).to(self._device)
        category = seqs.primary_category()
        self._category = None if category is None else torch.from_numpy(category).to(self._device)

    # -- asking ---------------------------------------------------------------------

    def recommend(
        self,
        history: Sequence[int | str] | Sequence[Sequence[int | str]] | np.ndarray | None = None,
        n: int = 50,
        *,
        user: int | str | Sequence[int | str] | np.ndarray | None = None,
        exclude: Iterable[int | str] = (),
        exclude_history: bool = False,
        diversity_lambda: float | None = _MODEL_SETTING,
        quota_alpha: float | None = _MODEL_SETTING,
        on_unknown: str = "ignore",
        index: str | None = None,
    ) -> Recommendations | list[Recommendations]:
        """The top-``n`` items, best first, for a history, several histories, a user of the
        training log or several users: give exactly one of ``history`` and ``user``.

        ``history`` is raw item ids, oldest first. One history (a list, tuple or 1-d array
        of ids; ``[]`` is one empty history, which gets the popularity fallback) gives one
        :class:`Recommendations`. Several histories (a list or tuple whose first element is
        itself a list, tuple or array, so ``[[]]`` is one empty history; or a 2-d array, a
        history a row) give a list of them in order, from one batched pass (the lists of
        one call each). One history holding a list among its ids is refused.

        ``user`` is a raw user id (an int or str), answered from the history the folder
        stores (and, for MIND with user features, the user's profile): one gives one
        :class:`Recommendations`, a list, tuple or 1-d array of ids a list of them. An
        unknown user is an :class:`~mirec.errors.UnknownIdError`.

        ``exclude``: items never to return. ``exclude_history``: leave out every item of the
        history (the whole history given, or the user's whole stored history, not only the
        ``maxlen`` the model reads), so the list holds up to ``n`` items the user has not
        had. Its default, False, keeps them because the protocol scores them as candidates
        (docs/protocol.md section 4): the lists are those the test figures measure.
        Production lists usually want seen items out: pass ``exclude_history=True`` (``mirec
        recommend --exclude-history``). ``diversity_lambda``: ComiRec's
        diversity-controllable list (needs item categories; default: the model's setting).
        ``quota_alpha``: the quota merge, each interest's share of the list by its share of
        the history (:mod:`mirec.retrieval.quota`; default: the model's setting), weighted
        to recent items by the model's ``quota_half_life``. Giving one of the two merges
        leaves the model's setting of the other out; giving both is refused.
        Unknown ids of a history are dropped and listed in ``unknown_items``, or refused
        with ``on_unknown="error"``. ``index``: search the folder's ``flat``, ``hnsw`` or
        ``ivf`` index (:meth:`build_index`) instead of scoring the whole catalogue."""
        if history is None and user is None:
            raise MirecError(
                "recommend: give a history (raw item ids, oldest first) or user= (a user id "
                "of the training log)"
            )
        if history is not None and user is not None:
            raise MirecError("recommend: give a history or user=, not both")
        check_on_unknown(on_unknown)  # with user= too, where no history is looked up
        if user is None:
            histories, several = _histories(history)
            looked_up = [self._lookup(one, on_unknown) for one in histories]
            rows = [indices for indices, _ in looked_up]
            unknown = [ids for _, ids in looked_up]
            users = None
        else:
            ids, several = _users(user)
            users = np.asarray([self._stored_row(one) for one in ids], dtype=np.int64)
            rows = [self._data.sequences.sequence(row) for row in users]
            unknown = [[] for _ in rows]
        lists = self._recommend(
            rows,
            unknown,
            users,
            n,
            exclude,
            exclude_history,
            (diversity_lambda, quota_alpha),
            index,
        )
        return lists if several else lists[0]

    def interests(self, history: Sequence[int | str]) -> np.ndarray:
        """(K'_u, d) the active interest vectors of ``history``."""
        indices, _ = self._lookup(history, "ignore")
        if len(indices) == 0:
            raise MirecError("interests: no item of the history is in the catalogue")
        extracted = self._extract(self._padded([indices]), None)
        interests = extracted.interests[0]
        if extracted.active is not None:
            interests = interests[extracted.active[0]]
        return interests.detach().float().cpu().numpy()

    def explain(
        self,
        user: int | str | None = None,
        history: Sequence[int | str] | None = None,
        top: int = 10,
        *,
        on_unknown: str = "ignore",
    ) -> UserReport:
        """Why a user of the training log (``user``) or a ``history`` (raw item ids, oldest
        first) gets their recommendations: the history grouped by interest, each interest
        named by its categories and with its own top ``top``, the overall top ``top``, and
        the vectors of the 2-D map (:mod:`mirec.evaluation.inspection`, as ``mirec
        inspect``). Unknown history ids are dropped and listed in ``unknown_items``, or
        refused with ``on_unknown="error"``."""
        if (user is None) == (history is None):
            raise MirecError("explain: give either a user or a history")
        loaded = LoadedModel(self._config, self._data, self._model)
        if user is not None:
            row = self._stored_row(user)
            indices = self._data.sequences.sequence(row)
            return explain_history(loaded, indices, user=str(user), user_row=row, top=top)
        indices, unknown = self._lookup(history, on_unknown)
        if len(indices) == 0:
            shown = ", ".join(repr(v) for v in unknown[:10])
            what = f"has no item of the catalogue (unknown: {shown})" if unknown else "is empty"
            raise MirecError(f"explain: the history {what}")
        report = explain_history(loaded, indices, top=top)
        return dataclasses.replace(report, unknown_items=unknown)

    def similar_items(self, item: int | str, n: int = 10) -> Recommendations:
        """The ``n`` items whose embeddings are closest to ``item``'s by cosine, the item
        itself left out; ``interest`` is None."""
        row = self._items.row_of(item, "the catalogue")
        self._check_n(n, len(self._items) - 1)
        vectors = torch.nn.functional.normalize(torch.from_numpy(self.item_embeddings()), dim=1)
        scores = (vectors[row] @ vectors.T).unsqueeze(0)
        blocked = torch.zeros_like(scores, dtype=torch.bool)
        blocked[0, row] = True
        top, values = rank(scores, n, blocked)
        return Recommendations(
            Recommendation(self._items.id_of(int(i) - 1), float(v), None)
            for i, v in zip(top[0].tolist(), values[0].tolist(), strict=True)
        )

    def item_embeddings(self) -> np.ndarray:
        """(n_items, d) float32 item vectors, row j for ``info.item_ids[j]``."""
        if isinstance(self._model, MostPopular):
            raise MirecError("the popularity baseline has no item embeddings")
        return self._model.item_vectors().detach().float().cpu().numpy()

    # -- item indexes ---------------------------------------------------------------

    def build_index(self, kind: str, **options: int | None) -> ItemIndex:
        """Build the ``kind`` item index (``flat``, ``hnsw`` or ``ivf``; options as
        :data:`mirec.retrieval.ann.DEFAULT_OPTIONS`, None for the default) over the item
        embeddings, store it in the model folder and use it for ``index=kind``."""
        ann.check_kind(kind)
        folder = self._index_folder()
        vectors = self.item_embeddings()
        ann.check_searchable(self._model)
        built = ItemIndex.build(vectors, kind, **options)
        built.save(folder)
        self._indexes[kind] = built
        return built

    def index_recall(self, kind: str, n: int = 50, users: int = 1000, seed: int = 0) -> float:
        """Recall@``n`` of the ``kind`` index's lists against the exact lists: the share of
        each exact top-n the index finds, averaged over a random sample of up to ``users``
        of the folder's users, from their stored histories."""
        if isinstance(users, bool) or not isinstance(users, int) or users < 1:
            raise MirecError(f"users={users!r}: expected an integer >= 1")
        self._data.require_histories("measuring an index's recall on the folder's users")
        n_users = len(self._users)
        rows = np.sort(np.random.default_rng(seed).permutation(n_users)[: min(users, n_users)])
        histories = [self._data.sequences.sequence(row) for row in rows]
        lists = [
            self._recommend(histories, [[]] * len(rows), rows, n, (), False, _MODEL_MERGE, way)
            for way in (None, kind)
        ]
        shares = [
            len({r.item for r in exact} & {r.item for r in found}) / len(exact)
            for exact, found in zip(*lists, strict=True)
            if len(exact)
        ]
        return float(np.mean(shares))

    def _index_folder(self) -> Path:
        if self._folder is None:
            raise MirecError(
                "item indexes live in a model folder: load the model with Recommender.load"
            )
        return self._folder

    def _item_index(self, kind: str) -> ItemIndex:
        """The folder's ``kind`` index (``mirec index``), loaded once and checked against the
        item vectors; a missing or stale one is a MirecError."""
        if ann.check_kind(kind) not in self._indexes:
            folder = self._index_folder()
            vectors = self.item_embeddings()
            ann.check_searchable(self._model)
            self._indexes[kind] = ItemIndex.load(folder, kind, vectors)
        return self._indexes[kind]

    # -- internals ------------------------------------------------------------------

    def _check_n(self, n: Any, most: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= most:
            raise MirecError(f"n={n!r}: expected an integer from 1 to {most} (the catalogue)")

    @torch.no_grad()
    def _extract(self, histories: torch.Tensor, users: torch.Tensor | None):
        if self._model.uses_user_rows:
            if users is None:
                raise MirecError(
                    "this model uses user profiles (MIND with user_features): ask for a user "
                    "of the training log with recommend(user=...)"
                )
            return self._model.extract(histories, users)
        return self._model.extract(histories)

    def _recommend(
        self,
        rows: list[np.ndarray],
        unknown: list[list],
        users: np.ndarray | None,
        n: int,
        exclude: Iterable[int | str],
        exclude_history: bool,
        merge: tuple[Any, Any],
        index: str | None,
    ) -> list[Recommendations]:
        out: list[Recommendations] = []
        ranked = self._ranked(rows, users, n, exclude, exclude_history, merge, index)
        for lo, top, scores, interest, cold in ranked:
            for b in range(len(top)):  # plain Python per list
                which = None if interest is None or cold[b] else interest[b]
                out.append(self._listed(top[b], scores[b], which, unknown[lo + b]))
        return out

    def _user_columns(
        self, user: list, n: int, exclude_history: bool, index: str | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``recommend(user=user, n=n, exclude_history=..., index=...)``'s lists as columns,
        with no object per item (:mod:`mirec.serving.bulk_lists` writes every user's lists
        with it): each row's position in ``user``, its rank from 1, the raw item ids, the
        scores (float64) and the interests (-1 where ``recommend`` gives None). The same
        ranking (:meth:`_ranked`), so the same values as ``recommend``'s."""
        self._data.require_histories("a request for users by id", "send their histories")
        users = self._users.rows(user)
        if (users < 0).any():
            self._stored_row(user[int(np.flatnonzero(users < 0)[0])])  # its UnknownIdError
        rows = [self._data.sequences.sequence(row) for row in users]
        parts: list[list[np.ndarray]] = [[], [], [], [], []]
        ranked = self._ranked(rows, users, n, (), exclude_history, _MODEL_MERGE, index)
        for lo, top, scores, interest, cold in ranked:
            keep = torch.isfinite(scores)  # as _listed: blocked items, last at -inf, left out
            owners, _ = keep.nonzero(as_tuple=True)
            which = torch.full_like(top, -1) if interest is None else interest.clone()
            which[torch.from_numpy(cold)] = -1
            parts[0].append(owners.numpy() + lo)
            parts[1].append(keep.cumsum(1)[keep].numpy())
            parts[2].append(top[keep].numpy() - 1)
            parts[3].append(scores[keep].double().numpy())
            parts[4].append(which[keep].numpy())
        owner, rank, item, score, interest = (np.concatenate(part) for part in parts)
        return owner, rank, self._items.ids[item], score, interest

    def _ranked(
        self,
        rows: list[np.ndarray],
        users: np.ndarray | None,
        n: int,
        exclude: Iterable[int | str],
        exclude_history: bool,
        merge: tuple[Any, Any],
        index: str | None,
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor | None, np.ndarray]]:
        """The lists of histories ``rows`` (of the users at ``users``' rows, or None), a
        chunk of users at a time on the host: (the chunk's first position, its (B, n) item
        indices, their scores with blocked items at -inf, the interest of each item or None
        for the popularity baseline, which of the B histories are empty: the popularity
        fallback's). ``merge``: the asked ``diversity_lambda`` and ``quota_alpha``
        (:data:`_MODEL_SETTING`: the model's). The settings are checked before the first
        chunk."""
        n_items = len(self._items)
        self._check_n(n, n_items)
        exclude_history = _flag(exclude_history, "exclude_history")
        chosen = self._merge(*merge)
        excluded = self._items.rows(_ids(exclude, "exclude", ordered=False))
        searcher = None if index is None else self._item_index(index)
        excluded = torch.from_numpy(excluded[excluded >= 0]).to(self._device)
        return self._chunks(rows, users, n, excluded, exclude_history, chosen, searcher)

    def _merge(self, diversity_lambda: Any, quota_alpha: Any) -> dict[str, float | None]:
        """The merge a list is built with, as ranking arguments: the asked settings, checked,
        or the model's where neither is asked (one asked leaves the model's other out, as
        the two cannot combine)."""
        if diversity_lambda is _MODEL_SETTING and quota_alpha is _MODEL_SETTING:
            diversity_lambda = self._config.diversity_lambda
            quota_alpha = self._config.quota_alpha
        diversity_lambda = None if diversity_lambda is _MODEL_SETTING else diversity_lambda
        quota_alpha = None if quota_alpha is _MODEL_SETTING else quota_alpha
        diversity_lambda = _merge_setting(
            diversity_lambda, "diversity_lambda", MAX_DIVERSITY_LAMBDA
        )
        quota_alpha = _merge_setting(quota_alpha, "quota_alpha", MAX_QUOTA_ALPHA)
        if diversity_lambda is not None and quota_alpha is not None:
            raise MirecError(
                "quota_alpha and diversity_lambda are two ways to merge the interests' lists: "
                "give one of them"
            )
        if isinstance(self._model, MostPopular):
            if diversity_lambda is not None:
                raise MirecError(
                    "diversity_lambda: the popularity baseline has no diversity-controllable "
                    "list (the same items for everyone); leave it unset"
                )
            if quota_alpha is not None:
                raise MirecError(
                    f"quota_alpha: {self._config.model} (the popularity baseline) has no "
                    "interests to give quotas to; leave it unset"
                )
        one_vector = single_retrieval_vector(self._config)
        if quota_alpha is not None and one_vector is not None:
            raise MirecError(f"quota_alpha: {one_vector}; leave it unset")
        if diversity_lambda is not None and self._category is None:
            raise MirecError("diversity_lambda needs item categories, and this model's have none")
        # the shares' recency is the model's own (its quota_half_life), whoever asks a quota
        half_life = None if quota_alpha is None else self._config.quota_half_life
        return {
            "diversity_lambda": diversity_lambda,
            "quota_alpha": quota_alpha,
            "quota_half_life": half_life,
        }

    @torch.no_grad()
    def _chunks(
        self,
        rows: list[np.ndarray],
        users: np.ndarray | None,
        n: int,
        excluded: torch.Tensor,
        exclude_history: bool,
        merge: dict[str, float | None],
        searcher: ItemIndex | None,
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor | None, np.ndarray]]:
        """:meth:`_ranked`'s chunks, once its settings are checked."""
        n_items = len(self._items)
        chunk = users_per_chunk(int(self._model.num_interests), n_items)
        for lo in range(0, len(rows), chunk):
            part = rows[lo : lo + chunk]
            if exclude_history:  # the whole given history, not only what the model reads
                longest = max(len(r) for r in part)
                blocked = blocked_items(self._padded(part, longest), n_items)
            else:
                blocked = torch.zeros(len(part), n_items, dtype=torch.bool, device=self._device)
            blocked[:, excluded] = True
            top, scores, interest = self._top(part, users, lo, n, blocked, merge, searcher)
            cold = np.asarray([len(r) == 0 for r in part])
            if cold.any():
                on_device = torch.from_numpy(cold).to(self._device)
                fallback, counts = self._popular_top(int(cold.sum()), n, blocked[on_device])
                top[on_device], scores[on_device] = fallback, counts.to(scores.dtype)
            # one copy to the host per chunk
            top, scores = top.cpu(), scores.cpu()
            yield lo, top, scores, None if interest is None else interest.cpu(), cold

    def _popular_top(
        self, users: int, n: int, blocked: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The most popular items among the training users (MostPopular's ranking), with
        their training counts as scores."""
        popular = self._popular
        histories = torch.zeros(users, 1, dtype=torch.long, device=self._device)
        top, scores = top_n(
            popular, popular.extract(histories), popular.item_vectors(), n, blocked=blocked
        )
        return top, scores.floor()  # the score is the count plus a tie-break below 1

    def _top(
        self,
        part: list[np.ndarray],
        users: np.ndarray | None,
        lo: int,
        n: int,
        blocked: torch.Tensor,
        merge: dict[str, float | None],
        searcher: ItemIndex | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The model's top-n of a chunk of histories, over the whole catalogue or (with a
        ``searcher``) over its index's candidates, and the interest behind each item (None
        for the popularity baseline)."""
        histories = self._padded(part)
        rows = None
        if users is not None:
            rows = torch.from_numpy(users[lo : lo + len(part)]).to(self._device)
        extracted = self._extract(histories, rows)
        items = self._model.item_vectors()
        ranking = {
            "blocked": blocked,
            "item_category": self._category,
            **merge,
            "histories": histories,
        }
        if searcher is None:
            top, scores = top_n(self._model, extracted, items, n, **ranking)
        else:
            top, scores = ann.ann_top_n(self._model, extracted, items, searcher, n, **ranking)
        if isinstance(self._model, MostPopular):
            return top, scores, None
        return top, scores, best_interest(extracted, items, top)

    def _listed(
        self,
        top: torch.Tensor,
        scores: torch.Tensor,
        interest: torch.Tensor | None,
        unknown: list,
    ) -> Recommendations:
        keep = torch.isfinite(scores)  # blocked items come last, at -inf: not recommended
        ids = self._items.ids_of(top[keep].numpy() - 1)
        values = scores[keep].double().tolist()
        which = [None] * len(ids) if interest is None else interest[keep].tolist()
        return Recommendations(
            (Recommendation(i, v, w) for i, v, w in zip(ids, values, which, strict=True)),
            unknown,
        )


class CTRScorer(_ModelFolder):
    """A trained CTR model: the click probability of given candidates after a history."""

    _task = "ctr"
    _answers = "click probabilities of given candidates"

    @torch.no_grad()
    def score(self, history: Sequence[int | str], candidates: Sequence[int | str]) -> np.ndarray:
        """The click probability of each of ``candidates`` (raw item ids) after ``history``
        (raw item ids, oldest first); unknown history items are dropped, unknown candidates
        refused."""
        indices, _ = self._lookup(history, "ignore")
        wanted, unknown = self._lookup(candidates, "ignore", "candidates")
        if unknown:
            shown = ", ".join(repr(v) for v in unknown[:10])
            raise MirecError(f"{len(unknown)} candidate id(s) not in the catalogue: {shown}")
        histories = self._padded([indices]).expand(len(wanted), -1)
        logits = self._model(histories, torch.from_numpy(wanted).to(self._device))
        return torch.sigmoid(logits.double()).cpu().numpy()


_CLASS_OF_TASK: dict[str, type[_ModelFolder]] = {"retrieval": Recommender, "ctr": CTRScorer}
"""The class that loads a folder of each task (``Config.task``)."""


def load(
    path: str | Path, *, device: str | None = None, **settings: Any
) -> Recommender | CTRScorer:
    """The model folder at ``path`` as the class of its task: a :class:`Recommender` for a
    retrieval model, a :class:`CTRScorer` for a CTR one (arguments as
    :meth:`Recommender.load`)."""
    loaded, folder = _loaded(path, device, settings, "mirec.load")
    return _CLASS_OF_TASK[loaded.config.task](loaded, folder)
