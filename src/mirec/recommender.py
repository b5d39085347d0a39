"""The public API: a trained model you load and ask "what next for this history?".

    from mirec import Recommender
    rec = Recommender.load("runs/beauty")        # a `mirec train` output; no dataset needed
    recs = rec.recommend(history, n=50)          # raw item ids, oldest first
    recs[0].item, recs[0].score, recs[0].interest
    rec.explain(user=42).to_text()               # the history grouped by interest, and why

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

import dataclasses
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirec.atomic import kept_folders, refuse_unsafe_target, staged_folder, write_json_atomic
from mirec.config import load_plan
from mirec.core.chunked_top import blocked_items
from mirec.core.config import INFERENCE_SETTINGS, MAX_DIVERSITY_LAMBDA, Config
from mirec.data.vocabulary import Vocabulary
from mirec.errors import ConfigError, MirecError
from mirec.evaluation.inspection import UserReport, explain_history
from mirec.models.folder import (
    METRICS_FILE,
    WEIGHTS_FILE,
    LoadedModel,
    load_model,
    save_weights,
    write_folder_data,
)
from mirec.models.most_popular import MostPopular
from mirec.retrieval import ann
from mirec.retrieval.ann import ItemIndex
from mirec.retrieval.ranking import best_interest, rank, top_n, users_per_chunk

_MODEL_SETTING: Any = object()
"""Default of ``diversity_lambda``: the model's own setting (None unless it has one)."""
RETRIEVAL_METHODS = (
    "recommend",
    "recommend_batch",
    "recommend_user",
    "recommend_users",
    "interests",
    "explain",
    "similar_items",
    "item_embeddings",
    "build_index",
    "item_index",
    "index_recall",
)
"""The methods of a retrieval model only: a CTR folder refuses them with one line."""
CTR_METHODS = "score(history, candidates), history_of(user), save(path)"
"""What a CTR folder answers instead."""


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


def _diversity(value: Any) -> float | None:
    """``diversity_lambda`` checked as the config checks it: None, or a finite number in
    [0, MAX_DIVERSITY_LAMBDA] (NaN, inf or 1e300 picked one item several times)."""
    if value is None:
        return None
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    ):
        number = float(value)
        if math.isfinite(number) and 0 <= number <= MAX_DIVERSITY_LAMBDA:
            return number
    raise MirecError(
        f"diversity_lambda={value!r}: expected a finite number in [0, "
        f"{MAX_DIVERSITY_LAMBDA:g}], or None"
    )


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


class Recommender:
    """A trained retrieval model with its item and user vocabularies."""

    def __init__(self, loaded: LoadedModel, folder: Path | None = None) -> None:
        self.config: Config = loaded.config
        self.model = loaded.model
        self.metrics = loaded.metrics
        """The run's ``metrics.json``, when the folder has one."""
        self.folder = folder
        """The model folder it was loaded from, where its item indexes live."""
        self._indexes: dict[str, ItemIndex] = {}
        self._data = loaded.data
        seqs = loaded.data.sequences
        self._items = Vocabulary(seqs.item_ids, "item")
        self._users = Vocabulary(seqs.user_ids, "user")
        tensors = [*self.model.parameters(), *self.model.buffers()]
        self.device = tensors[0].device if tensors else torch.device("cpu")
        self._popular = MostPopular(seqs.n_items).fit(loaded.data.item_counts).to(self.device)
        category = seqs.primary_category()
        self._category = None if category is None else torch.from_numpy(category).to(self.device)

    # -- loading, training, saving ------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None, **settings: Any) -> Recommender:
        """Load a model folder written by ``mirec train`` (or :meth:`save`). ``settings``
        change inference-time settings only (``adaptive_k``, ``diversity_lambda``); ``device``
        defaults to the run's (``auto``: CUDA when present)."""
        changed = sorted(set(settings) - set(INFERENCE_SETTINGS))
        if changed:
            raise ConfigError(
                f"Recommender.load: {changed[0]} is not an inference-time setting "
                f"({', '.join(INFERENCE_SETTINGS)}); retrain to change it"
            )
        folder = _path(path, "path")
        overrides = {**settings, **({} if device is None else {"device": device})}
        return cls(load_model(folder, overrides), folder)

    @classmethod
    def train(
        cls,
        *,
        output_dir: str | Path,
        dataset: str | None = None,
        model: str | None = None,
        data_dir: str | Path | None = None,
        progress: bool = True,
        resume: bool = False,
        overwrite: bool = False,
        **settings: Any,
    ) -> Recommender:
        """Train a published config (``mirec models``; without ``model``, ``auto``: the best
        of :data:`~mirec.config.AUTO_CANDIDATES` on validation, :mod:`mirec.auto`) on
        ``dataset`` with ``settings`` (any field of :class:`~mirec.config.Config`), as
        ``mirec train`` does: the best
        weights on validation Recall@50 are tested and the run folder is written to
        ``output_dir``; returns the loaded model. A folder holding a run is refused unless
        ``resume`` (continue an interrupted run with these settings from its last finished
        epoch) or ``overwrite`` (train again), as :func:`~mirec.runs.train_run` says."""
        # the training stack, only to train: loading and serving a folder never import it
        from mirec.auto import train_plan

        out = _path(output_dir, "output_dir")
        train_plan(
            load_plan(model, fixed=settings, dataset=dataset),
            out,
            data_dir=None if data_dir is None else _path(data_dir, "data_dir"),
            progress=progress,
            resume=resume,
            overwrite=overwrite,
            echo=print if progress else lambda _: None,
        )
        return cls.load(out)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write this model as a self-contained folder at ``path`` (whole or not at all),
        with the item indexes of the folder it was loaded from; an existing non-empty folder
        is replaced only with ``overwrite``."""
        target = _path(path, "path")
        # replacing target must not take this model's own folder (its indexes are copied
        # from there), the data or anything else with it
        refuse_unsafe_target(target, kept_folders((self.folder, "the model folder")))
        empty = target.is_dir() and not any(target.iterdir())
        if target.exists() and not empty and not overwrite:
            raise MirecError(f"{target}: already exists; pass overwrite=True to replace it")
        with staged_folder(target) as staging:
            data = self._data
            save_weights(self.model, staging / WEIGHTS_FILE)
            write_folder_data(staging, self.config, data.sequences, data.item_counts, data.maxlen)
            if self.metrics is not None:
                write_json_atomic(staging / METRICS_FILE, self.metrics)
            if self.folder is not None:
                # the item indexes stay valid: the same item vectors (ItemIndex.load checks)
                for index_file in sorted(self.folder.glob("index-*")):
                    shutil.copy2(index_file, staging / index_file.name)
        return target

    # -- what the model knows ---------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.model

    @property
    def dataset(self) -> str:
        return self.config.dataset

    @property
    def maxlen(self) -> int:
        return self._data.maxlen

    @property
    def num_interests(self) -> int:
        return int(self.model.num_interests)

    @property
    def n_items(self) -> int:
        return len(self._items)

    @property
    def n_users(self) -> int:
        return len(self._users)

    @property
    def item_ids(self) -> list[int | str]:
        """Raw item ids, in the order of :meth:`item_embeddings`' rows."""
        return self._items.ids.tolist()

    @property
    def stored_users(self) -> str:
        """What the folder keeps of the log's users: histories, ids or none
        (``Config.stored_users``)."""
        return self._data.stored_users

    @property
    def user_ids(self) -> list[int | str]:
        """Raw ids of the users of the training log (all splits), served by
        :meth:`recommend_user`."""
        return self._users.ids.tolist()

    @property
    def item_titles(self) -> list[str | None] | None:
        """Item titles in :attr:`item_ids` order (None for an item the dataset does not
        name), or None when the dataset has no titles."""
        titles = self._data.sequences.item_titles
        return None if titles is None else [str(t) or None for t in titles]

    @property
    def item_categories(self) -> list[list[str]] | None:
        """Each item's category names in :attr:`item_ids` order, or None when the dataset
        has no categories."""
        seqs = self._data.sequences
        if seqs.category_names is None:
            return None
        names = [str(name) for name in seqs.category_names]
        return [[names[c] for c in seqs.categories_of(i)] for i in range(1, seqs.n_items + 1)]

    def item_embeddings(self) -> np.ndarray:
        """(n_items, d) float32 item vectors, row j for ``item_ids[j]``."""
        self._retrieval_only("item_embeddings")
        if isinstance(self.model, MostPopular):
            raise MirecError("the popularity baseline has no item embeddings")
        return self.model.item_vectors().detach().float().cpu().numpy()

    @property
    def item_counts(self) -> np.ndarray:
        """(n_items,) training interactions of each item, in ``item_ids``' order: the
        popularity that a history with no known item is served by."""
        return self._data.item_counts[1:].copy()

    def history_of(self, user: int | str) -> list[int | str]:
        """A known user's stored history (raw item ids, oldest first)."""
        row = self._stored_row(user)
        return [self._items.id_of(i - 1) for i in self._data.sequences.sequence(row)]

    def _stored_row(self, user: int | str) -> int:
        """The row of a known user whose history the folder stores: an UnknownIdError for
        a user the log does not hold, a ConfigError when the folder keeps no histories
        (``stored_users``)."""
        row = -1
        if self._data.stored_users != "none":  # else every id would read as unknown
            row = self._users.row_of(user, self.dataset)
        self._data.require_histories(f"a request for user {user!r}", "send their history")
        return row

    # -- asking ---------------------------------------------------------------------

    def recommend(
        self,
        history: Sequence[int | str],
        n: int = 50,
        *,
        exclude: Iterable[int | str] = (),
        exclude_history: bool = False,
        diversity_lambda: float | None = _MODEL_SETTING,
        on_unknown: str = "ignore",
        index: str | None = None,
    ) -> Recommendations:
        """The top-``n`` items for ``history`` (raw item ids, oldest first), best first.

        ``exclude``: items never to return; ``exclude_history``: leave out the history's
        own items (docs/protocol.md scores them, so the default keeps them); ``diversity_lambda``:
        ComiRec's diversity-controllable list (needs item categories; default: the model's
        setting). Unknown ids are dropped and listed in ``unknown_items``, or refused with
        ``on_unknown="error"``. ``index``: search the folder's ``flat``, ``hnsw`` or ``ivf``
        index (:meth:`build_index`) instead of scoring the whole catalogue."""
        self._retrieval_only("recommend")
        return self.recommend_batch(
            [history],
            n,
            exclude=exclude,
            exclude_history=exclude_history,
            diversity_lambda=diversity_lambda,
            on_unknown=on_unknown,
            index=index,
        )[0]

    def recommend_batch(
        self,
        histories: Sequence[Sequence[int | str]],
        n: int = 50,
        *,
        exclude: Iterable[int | str] = (),
        exclude_history: bool = False,
        diversity_lambda: float | None = _MODEL_SETTING,
        on_unknown: str = "ignore",
        index: str | None = None,
    ) -> list[Recommendations]:
        """:meth:`recommend` for each history, in one batched pass (the same lists)."""
        self._retrieval_only("recommend_batch")
        if not isinstance(histories, Sequence) or isinstance(histories, str | bytes):
            raise MirecError(
                f"histories must be a list of histories, got {type(histories).__name__}"
            )
        looked_up = [self._lookup(history, on_unknown) for history in histories]
        rows = [indices for indices, _ in looked_up]
        unknown = [ids for _, ids in looked_up]
        return self._recommend(
            rows, unknown, None, n, exclude, exclude_history, diversity_lambda, index
        )

    def recommend_user(
        self,
        user: int | str,
        n: int = 50,
        *,
        exclude: Iterable[int | str] = (),
        exclude_history: bool = False,
        diversity_lambda: float | None = _MODEL_SETTING,
        index: str | None = None,
    ) -> Recommendations:
        """:meth:`recommend` for a user of the training log, from their stored history (and,
        for MIND with user features, their profile)."""
        self._retrieval_only("recommend_user")
        return self.recommend_users(
            [user],
            n,
            exclude=exclude,
            exclude_history=exclude_history,
            diversity_lambda=diversity_lambda,
            index=index,
        )[0]

    def recommend_users(
        self,
        users: Sequence[int | str],
        n: int = 50,
        *,
        exclude: Iterable[int | str] = (),
        exclude_history: bool = False,
        diversity_lambda: float | None = _MODEL_SETTING,
        index: str | None = None,
    ) -> list[Recommendations]:
        """:meth:`recommend_user` for each of ``users``, in one batched pass (the same
        lists); an unknown user is an :class:`~mirec.errors.UnknownIdError`."""
        self._retrieval_only("recommend_users")
        if not isinstance(users, Sequence) or isinstance(users, str | bytes):
            raise MirecError(f"users must be a list of user ids, got {type(users).__name__}")
        rows = np.asarray([self._stored_row(u) for u in users], dtype=np.int64)
        histories = [self._data.sequences.sequence(row) for row in rows]
        unknown: list[list] = [[] for _ in histories]
        return self._recommend(
            histories, unknown, rows, n, exclude, exclude_history, diversity_lambda, index
        )

    def interests(self, history: Sequence[int | str]) -> np.ndarray:
        """(K'_u, d) the active interest vectors of ``history``."""
        self._retrieval_only("interests")
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
        self._retrieval_only("explain")
        if (user is None) == (history is None):
            raise MirecError("explain: give either a user or a history")
        loaded = LoadedModel(self.config, self._data, self.model)
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
        self._retrieval_only("similar_items")
        row = self._items.row_of(item, "the catalogue")
        self._check_n(n, self.n_items - 1)
        vectors = torch.nn.functional.normalize(torch.from_numpy(self.item_embeddings()), dim=1)
        scores = (vectors[row] @ vectors.T).unsqueeze(0)
        blocked = torch.zeros_like(scores, dtype=torch.bool)
        blocked[0, row] = True
        top, values = rank(scores, n, blocked)
        return Recommendations(
            Recommendation(self._items.id_of(int(i) - 1), float(v), None)
            for i, v in zip(top[0].tolist(), values[0].tolist(), strict=True)
        )

    @torch.no_grad()
    def score(self, history: Sequence[int | str], candidates: Sequence[int | str]) -> np.ndarray:
        """A CTR model's click probability of each of ``candidates`` (raw item ids) after
        ``history``; unknown history items are dropped, unknown candidates refused."""
        self._check_task("ctr", "recommend(history) gives the top-n items")
        indices, _ = self._lookup(history, "ignore")
        wanted, unknown = self._lookup(candidates, "ignore", "candidates")
        if unknown:
            shown = ", ".join(repr(v) for v in unknown[:10])
            raise MirecError(f"{len(unknown)} candidate id(s) not in the catalogue: {shown}")
        histories = self._padded([indices]).expand(len(wanted), -1)
        logits = self.model(histories, torch.from_numpy(wanted).to(self.device))
        return torch.sigmoid(logits.double()).cpu().numpy()

    # -- item indexes ---------------------------------------------------------------

    def build_index(self, kind: str, **options: int | None) -> ItemIndex:
        """Build the ``kind`` item index (``flat``, ``hnsw`` or ``ivf``; options as
        :data:`mirec.retrieval.ann.DEFAULT_OPTIONS`, None for the default) over the item
        embeddings, store it in the model folder and use it for ``index=kind``."""
        self._retrieval_only("build_index")
        ann.check_kind(kind)
        folder = self._index_folder()
        vectors = self.item_embeddings()
        ann.check_searchable(self.model)
        built = ItemIndex.build(vectors, kind, **options)
        built.save(folder)
        self._indexes[kind] = built
        return built

    def index_recall(self, kind: str, n: int = 50, users: int = 1000, seed: int = 0) -> float:
        """Recall@``n`` of the ``kind`` index's lists against the exact lists: the share of
        each exact top-n the index finds, averaged over a random sample of up to ``users``
        of the folder's users, from their stored histories."""
        self._retrieval_only("index_recall")
        if isinstance(users, bool) or not isinstance(users, int) or users < 1:
            raise MirecError(f"users={users!r}: expected an integer >= 1")
        self._data.require_histories("measuring an index's recall on the folder's users")
        n_users = len(self._users)
        rows = np.sort(np.random.default_rng(seed).permutation(n_users)[: min(users, n_users)])
        histories = [self._data.sequences.sequence(row) for row in rows]
        lists = [
            self._recommend(histories, [[]] * len(rows), rows, n, (), False, _MODEL_SETTING, way)
            for way in (None, kind)
        ]
        shares = [
            len({r.item for r in exact} & {r.item for r in found}) / len(exact)
            for exact, found in zip(*lists, strict=True)
            if len(exact)
        ]
        return float(np.mean(shares))

    def _index_folder(self) -> Path:
        if self.folder is None:
            raise MirecError(
                "item indexes live in a model folder: load the model with Recommender.load"
            )
        return self.folder

    def item_index(self, kind: str) -> ItemIndex:
        """The folder's ``kind`` index (``mirec index``), loaded once and checked against the
        item vectors; a missing or stale one is a MirecError."""
        self._retrieval_only("item_index")
        if ann.check_kind(kind) not in self._indexes:
            folder = self._index_folder()
            vectors = self.item_embeddings()
            ann.check_searchable(self.model)
            self._indexes[kind] = ItemIndex.load(folder, kind, vectors)
        return self._indexes[kind]

    # -- internals ------------------------------------------------------------------

    def _check_task(self, task: str, instead: str) -> None:
        if self.config.task != task:
            raise MirecError(f"{self.name} is a {self.config.task} model: {instead}")

    def _retrieval_only(self, method: str) -> None:
        """A CTR folder has no retrieval methods (some failed deep inside, an AttributeError
        of its model): one line saying what it is and what it answers."""
        if self.config.task != "retrieval":
            where = "" if self.folder is None else f"{self.folder}: "
            raise MirecError(
                f"{where}{self.name} is a ctr model (click probabilities), which has no "
                f"{method}(); its methods are {CTR_METHODS}"
            )

    def _lookup(
        self, history: Any, on_unknown: str, name: str = "a history"
    ) -> tuple[np.ndarray, list]:
        """Raw ids -> item indices of the known ones, and the unknown ids."""
        rows, unknown = self._items.known_rows(_ids(history, name), on_unknown)
        return rows + 1, unknown

    def _check_n(self, n: Any, most: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= most:
            raise MirecError(f"n={n!r}: expected an integer from 1 to {most} (the catalogue)")

    def _padded(self, rows: list[np.ndarray], width: int | None = None) -> torch.Tensor:
        """Histories of item indices -> (B, width), the most recent items, left-padded;
        ``width`` defaults to ``maxlen``, what the model reads."""
        width = self.maxlen if width is None else width
        out = torch.zeros(len(rows), width, dtype=torch.long)
        for b, indices in enumerate(rows):
            recent = indices[len(indices) - width :] if len(indices) > width else indices
            if len(recent):
                out[b, -len(recent) :] = torch.from_numpy(np.asarray(recent, dtype=np.int64))
        return out.to(self.device)

    @torch.no_grad()
    def _extract(self, histories: torch.Tensor, users: torch.Tensor | None):
        if self.model.uses_user_rows:
            if users is None:
                raise MirecError(
                    "this model uses user profiles (MIND with user_features): ask for a user "
                    "of the training log with recommend_user"
                )
            return self.model.extract(histories, users)
        return self.model.extract(histories)

    @torch.no_grad()
    def _recommend(
        self,
        rows: list[np.ndarray],
        unknown: list[list],
        users: np.ndarray | None,
        n: int,
        exclude: Iterable[int | str],
        exclude_history: bool,
        diversity_lambda: float | None,
        index: str | None,
    ) -> list[Recommendations]:
        self._check_n(n, self.n_items)
        exclude_history = _flag(exclude_history, "exclude_history")
        if diversity_lambda is _MODEL_SETTING:
            diversity_lambda = self.config.diversity_lambda
        diversity_lambda = _diversity(diversity_lambda)
        if diversity_lambda is not None and isinstance(self.model, MostPopular):
            raise MirecError(
                "diversity_lambda: the popularity baseline has no diversity-controllable list "
                "(the same items for everyone); leave it unset"
            )
        if diversity_lambda is not None and self._category is None:
            raise MirecError("diversity_lambda needs item categories, and this model's have none")
        excluded = self._items.rows(_ids(exclude, "exclude", ordered=False))
        searcher = None if index is None else self.item_index(index)
        excluded = torch.from_numpy(excluded[excluded >= 0]).to(self.device)
        out: list[Recommendations] = []
        chunk = users_per_chunk(self.num_interests, self.n_items)
        for lo in range(0, len(rows), chunk):
            part = rows[lo : lo + chunk]
            if exclude_history:  # the whole given history, not only what the model reads
                longest = max(len(r) for r in part)
                blocked = blocked_items(self._padded(part, longest), self.n_items)
            else:
                blocked = torch.zeros(len(part), self.n_items, dtype=torch.bool, device=self.device)
            blocked[:, excluded] = True
            top, scores, interest = self._top(
                part, users, lo, n, blocked, diversity_lambda, searcher
            )
            cold = np.asarray([len(r) == 0 for r in part])
            if cold.any():
                on_device = torch.from_numpy(cold).to(self.device)
                fallback, counts = self._popular_top(int(cold.sum()), n, blocked[on_device])
                top[on_device], scores[on_device] = fallback, counts.to(scores.dtype)
            # one copy to the host per chunk, then plain Python per list
            top, scores = top.cpu(), scores.cpu()
            interest = None if interest is None else interest.cpu()
            for b in range(len(part)):
                which = None if interest is None or cold[b] else interest[b]
                out.append(self._listed(top[b], scores[b], which, unknown[lo + b]))
        return out

    def _popular_top(
        self, users: int, n: int, blocked: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The most popular items among the training users (MostPopular's ranking), with
        their training counts as scores."""
        popular = self._popular
        histories = torch.zeros(users, 1, dtype=torch.long, device=self.device)
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
        diversity_lambda: float | None,
        searcher: ItemIndex | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The model's top-n of a chunk of histories, over the whole catalogue or (with a
        ``searcher``) over its index's candidates, and the interest behind each item (None
        for the popularity baseline)."""
        histories = self._padded(part)
        rows = None
        if users is not None:
            rows = torch.from_numpy(users[lo : lo + len(part)]).to(self.device)
        extracted = self._extract(histories, rows)
        items = self.model.item_vectors()
        ranking = {
            "blocked": blocked,
            "item_category": self._category,
            "diversity_lambda": diversity_lambda,
        }
        if searcher is None:
            top, scores = top_n(self.model, extracted, items, n, **ranking)
        else:
            top, scores = ann.ann_top_n(self.model, extracted, items, searcher, n, **ranking)
        if isinstance(self.model, MostPopular):
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
