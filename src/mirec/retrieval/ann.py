"""Approximate nearest-neighbour retrieval: a faiss index over a model's item vectors.

The exact path (:mod:`mirec.retrieval.ranking`) scores the whole catalogue for every
user. Here each of a user's (active) interests asks an :class:`ItemIndex` for its own top
items, and the union of those candidates is ranked by the exact path itself, restricted to
them (:func:`ann_top_n`). The scores of the list are therefore the model's exact scores
``max_k <v_u^k, e_i>`` (ComiRec, KDD 2020, section 3.3); only which items are considered
is approximate.

With the ``flat`` index (exact inner product) the lists are the exact lists: take an item
i of the exact top-n among the items a user does not block, and k* its best interest, so
``<v^k*, e_i> = max_k <v^k, e_i> = s(i)``. Every unblocked item j that beats i on
interest k* also beats it overall (``s(j) >= <v^k*, e_j> > s(i)``), and fewer than n
unblocked items beat i overall; so i is among the n best unblocked items of interest k*,
which is what that interest's search returns. Every item of the exact list is therefore a
candidate, and ranking the candidates by the exact score gives back the exact list (score
ties, equal to the last bit, may be broken differently, as between two exact runs on other
hardware). The same holds for ComiRec's diversity-controllable merge (section 3.4), whose
candidate set is by definition the union of each interest's top-n: the flat index returns
each of those lists whole, and the greedy merge then runs on the same candidates. And for
the quota merge (:mod:`mirec.retrieval.quota`), which reads nothing but each interest's own
top-n: the flat index returns those lists, and the quotas come from the history alone.

Blocked items (a caller's exclusions, the history) are filtered inside the search with a
faiss ID selector, so each interest still brings n unblocked items; users who share one
blocked set are searched in one call.

Only models that rank by the max over their retrieval vectors are served: the score-level
``max`` aggregator and the representation-level aggregators (one fused vector, whose max is
its own score). A ``mean`` model is refused (:func:`check_searchable`): the mean of K
scores is the score of the mean interest, but its diversity merge draws on each interest's
own list, so no one query rule would serve both exactly; ``index=None`` serves it.
A ``mixture`` model (:mod:`mirec.aggregators.mixture`) is refused too: its score is
increasing in every interest's score, but an item that all interests like moderately can
outrank items that one interest prefers (log((e^0 + e^0) / 2) = 0 beats
log((e^0.5 + 0) / 2) < 0), so its top-n need not lie in the union of each interest's top-n.

Kinds: ``flat`` (IndexFlatIP, exact), ``hnsw`` (IndexHNSWFlat, inner product; Malkov and
Yashunin, TPAMI 2020; options ``m``, ``ef_construction``, ``ef_search``, which a search for
k items raises to k) and ``ivf`` (IndexIVFFlat, inner product, a k-means coarse quantizer;
options ``nlist``, ``nprobe``).
An index is stored in a model folder as ``index-<kind>.faiss`` beside ``index-<kind>.json``,
which records the options, a digest of the item vectors and the SHA-256 of the index file,
so an index built before the model was retrained is refused instead of silently searching
old vectors, and so is one whose file was damaged or altered (rows permuted, graph links
rewired), which faiss would read without complaint.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mirec.aggregators.max_score import max_over_interests
from mirec.aggregators.mixture import MixtureOfSoftmaxes
from mirec.atomic import atomic_path, write_json_atomic
from mirec.core.contracts import Extracted, Retriever
from mirec.core.extras import require
from mirec.core.layout import INDEX_PREFIX
from mirec.errors import MirecError
from mirec.retrieval.ranking import top_n

if TYPE_CHECKING:
    import faiss

KINDS = ("flat", "hnsw", "ivf")
DEFAULT_OPTIONS: dict[str, dict[str, int | None]] = {
    "flat": {},
    "hnsw": {"m": 32, "ef_construction": 200, "ef_search": 128},
    "ivf": {"nlist": None, "nprobe": 16},  # nlist None: about sqrt(n_items) lists
}
"""Each kind's options and their defaults."""
MOST_OPTION = {"m": 512, "ef_construction": 100_000, "ef_search": 100_000}
"""The largest value of an hnsw option: faiss stores them as C ints (a larger one was an
OverflowError), and links per node cost memory for every item (``m=100000`` wrote a 1 GB
index of 1,349 items); the defaults are 32, 200 and 128."""
FORMAT = "mirec-item-index"
MIN_POINTS_PER_LIST = 39
"""faiss's k-means wants at least this many training vectors per list."""


def _faiss() -> Any:
    """faiss, from the ann extra (the base install has no item indexes)."""
    return require("faiss", "an item index")


def index_paths(folder: Path, kind: str) -> tuple[Path, Path]:
    """The index file and its description for ``kind`` in a model folder."""
    return folder / f"{INDEX_PREFIX}{kind}.faiss", folder / f"{INDEX_PREFIX}{kind}.json"


def vectors_digest(vectors: np.ndarray) -> str:
    """SHA-256 of (n_items, d) float32 item vectors, shape included."""
    table = np.ascontiguousarray(vectors, dtype=np.float32)
    digest = hashlib.sha256(str(table.shape).encode())
    digest.update(table.data)
    return digest.hexdigest()


def check_searchable(model: Retriever) -> None:
    """A MirecError unless ``model`` ranks by the max over its retrieval vectors, the rule
    an index search reproduces (see the module's docstring)."""
    scorer = model.scorer
    if isinstance(scorer, MixtureOfSoftmaxes):
        raise MirecError(
            "index search cannot serve aggregator 'mixture': a mixture's top items need not be "
            "among any one interest's top items, which is all an index returns; use index=None "
            "(the exact ranking)"
        )
    if scorer is not max_over_interests:
        raise MirecError(
            "index search ranks by the max over a user's interests (ComiRec's retrieval); this "
            f"model ranks by {getattr(scorer, '__name__', type(model).__name__)}: use index=None "
            "(the exact ranking)"
        )


def check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise MirecError(f"index kind {kind!r}: expected one of {', '.join(KINDS)}")
    return kind


def resolve_options(kind: str, options: dict[str, Any], n_items: int) -> dict[str, int]:
    """``options`` (None: the default) checked against ``kind``, with the defaults filled in."""
    defaults = DEFAULT_OPTIONS[check_kind(kind)]
    given = {name: value for name, value in options.items() if value is not None}
    for name, value in given.items():
        if name not in defaults:
            takes = {k: ", ".join(o) for k, o in DEFAULT_OPTIONS.items() if o}
            raise MirecError(
                f"option {name} does not apply to a {kind} index (hnsw takes {takes['hnsw']}; "
                f"ivf takes {takes['ivf']})"
            )
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise MirecError(f"{kind} index option {name}={value!r}: expected an integer >= 1")
        most = MOST_OPTION.get(name)
        if most is not None and value > most:
            raise MirecError(
                f"{kind} index option {name}={value}: at most {most:,} (default {defaults[name]})"
            )
    resolved = {**defaults, **{name: int(value) for name, value in given.items()}}
    if kind == "ivf":
        most = max(1, n_items // MIN_POINTS_PER_LIST)
        if resolved["nlist"] is None:
            resolved["nlist"] = min(round(math.sqrt(n_items)), most)
        if resolved["nlist"] > most:
            raise MirecError(
                f"ivf index option nlist={resolved['nlist']}: at most {most} lists for "
                f"{n_items} items ({MIN_POINTS_PER_LIST} items per list to train k-means)"
            )
        if resolved["nprobe"] > resolved["nlist"]:
            raise MirecError(
                f"ivf index option nprobe={resolved['nprobe']}: at most nlist={resolved['nlist']}"
            )
    return resolved


@dataclass
class ItemIndex:
    """A faiss index over item vectors: row j is item index j + 1."""

    kind: str
    options: dict[str, int]
    index: faiss.Index
    digest: str
    """:func:`vectors_digest` of the vectors it holds."""

    @property
    def n_items(self) -> int:
        return int(self.index.ntotal)

    @property
    def d(self) -> int:
        return int(self.index.d)

    @classmethod
    def build(cls, vectors: np.ndarray, kind: str, **options: int | None) -> ItemIndex:
        """Index (n_items, d) item vectors; ``options`` as :data:`DEFAULT_OPTIONS` (None:
        the default). faiss builds with its OpenMP threads (``faiss.omp_set_num_threads``)."""
        faiss = _faiss()
        table = np.ascontiguousarray(vectors, dtype=np.float32)
        n_items, d = table.shape
        resolved = resolve_options(kind, options, n_items)
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, resolved["m"], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = resolved["ef_construction"]
            index.hnsw.efSearch = resolved["ef_search"]
        elif kind == "ivf":
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, resolved["nlist"], faiss.METRIC_INNER_PRODUCT)
            index.train(table)
            index.nprobe = resolved["nprobe"]
        else:
            index = faiss.IndexFlatIP(d)
        index.add(table)
        return cls(kind, resolved, index, vectors_digest(table))

    def save(self, folder: Path) -> Path:
        """Write ``index-<kind>.faiss`` and its ``.json`` (with the index file's SHA-256)
        into ``folder``; both are written before either replaces a file, so a full disk
        leaves the previous pair as it was. Returns the index file."""
        faiss = _faiss()
        index_file, description = index_paths(folder, self.kind)
        with atomic_path(index_file) as tmp:
            faiss.write_index(self.index, str(tmp))
            meta = {
                "format": FORMAT,
                "kind": self.kind,
                "options": self.options,
                "n_items": self.n_items,
                "d": self.d,
                "item_vectors_sha256": self.digest,
                "index_bytes": tmp.stat().st_size,
                "index_sha256": hashlib.sha256(tmp.read_bytes()).hexdigest(),
                "faiss_version": faiss.__version__,
            }
            write_json_atomic(description, meta)
        return index_file

    @classmethod
    def load(cls, folder: Path, kind: str, vectors: np.ndarray) -> ItemIndex:
        """The ``kind`` index of a model folder, checked against the model's current item
        ``vectors``: a missing, unreadable or stale index is a MirecError that says how to
        rebuild it."""
        faiss = _faiss()
        index_file, description = index_paths(folder, check_kind(kind))
        rebuild = f"`mirec index --model-dir {folder} --kind {kind}`"
        if not index_file.is_file() or not description.is_file():
            raise MirecError(f"{folder}: no {kind} index; build it with {rebuild}")
        try:
            meta = json.loads(description.read_text())
            options, digest, size = (
                meta["options"],
                meta["item_vectors_sha256"],
                meta["index_bytes"],
            )
            if meta["format"] != FORMAT or meta["kind"] != kind or not isinstance(options, dict):
                raise ValueError(f"not a mirec {kind} index description")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            raise MirecError(
                f"{description}: unreadable ({err}); rebuild it with {rebuild}"
            ) from err
        if digest != vectors_digest(vectors):
            raise MirecError(
                f"{index_file}: stale: built for other item vectors than the model's (was the "
                f"model retrained after indexing?); rebuild it with {rebuild}"
            )
        # read once, checked, and parsed from those bytes: the file checked is the one used
        data = index_file.read_bytes()
        # indexes written before the checksum was recorded are checked by their size alone
        recorded = meta.get("index_sha256")
        if len(data) != size or (
            recorded is not None and hashlib.sha256(data).hexdigest() != recorded
        ):
            raise MirecError(
                f"{index_file}: does not match {description.name} (damaged, or written by "
                f"another build); rebuild it with {rebuild}"
            )
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as err:
            raise MirecError(
                f"{index_file}: not a readable faiss index; rebuild it with {rebuild}"
            ) from err
        return cls(kind, resolve_options(kind, options, index.ntotal), index, digest)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
        """(Q, d) query vectors -> (Q, k) item rows by inner product, best first; -1 where
        fewer than k are found. ``allowed`` (n_items,) bool: only these items (None: all)."""
        faiss = _faiss()
        selector = None
        if allowed is not None and not allowed.all():
            bitmap = np.packbits(allowed, bitorder="little")  # alive until the search is done
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
        if self.kind == "hnsw":
            # the search list must hold the k results (hnswlib refuses ef < k; faiss would
            # pad the list with worse items)
            ef = max(self.options["ef_search"], k)
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
        elif self.kind == "ivf":
            params = faiss.SearchParametersIVF(sel=selector, nprobe=self.options["nprobe"])
        else:
            params = faiss.SearchParameters(sel=selector)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        return self.index.search(queries, k, params=params)[1]

    def candidates(
        self,
        interests: np.ndarray,
        k: int,
        active: np.ndarray | None = None,
        blocked: np.ndarray | None = None,
    ) -> np.ndarray:
        """(B, K, d) interests -> (B, K * k) item rows: each active interest's k best items
        that its user does not block (``blocked`` (B, n_items) bool), -1 for none. A user
        who leaves at most k items unblocked gets all of them, the exact answer, without a
        search (a graph search would have to find them through the blocked ones)."""
        batch, num, _ = interests.shape
        found = np.full((batch, num, k), -1, dtype=np.int64)
        use = np.ones((batch, num), dtype=bool) if active is None else active
        shared = blocked is None or bool((blocked == blocked[:1]).all())
        groups = [np.arange(batch)] if shared else [np.asarray([b]) for b in range(batch)]
        for users in groups:
            allowed = None if blocked is None else ~blocked[users[0]]
            part = found[users]
            if allowed is not None and allowed.sum() <= k:
                left = np.flatnonzero(allowed)
                part[:, :, : len(left)] = left
            else:
                part[use[users]] = self.search(interests[users][use[users]], k, allowed)
            found[users] = part
        return found.reshape(batch, num * k)


def ann_top_n(
    model: Retriever,
    extracted: Extracted,
    items: torch.Tensor,
    index: ItemIndex,
    n: int,
    *,
    blocked: torch.Tensor | None = None,
    item_category: torch.Tensor | None = None,
    diversity_lambda: float | None = None,
    quota_alpha: float | None = None,
    quota_half_life: float | None = None,
    histories: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~mirec.retrieval.ranking.top_n` with the candidates from ``index``: each
    retrieval vector's n best unblocked items, ranked (or diversity- or quota-merged) by
    the exact path over that sub-catalogue (which holds each interest's own top-n, all the
    quota merge reads). Same arguments and results as ``top_n``; with the flat
    index, the same lists (see the module's docstring)."""
    query = model.retrieval_interests(extracted)
    found = index.candidates(
        query.interests.detach().float().cpu().numpy(),
        n,
        None if query.active is None else query.active.cpu().numpy(),
        None if blocked is None else blocked.cpu().numpy(),
    )
    rows, allowed = _sub_catalogue(found, n, items.shape[0])
    sub = torch.from_numpy(rows).to(items.device)
    category = None
    if item_category is not None:
        padding = torch.zeros(1, dtype=torch.long, device=items.device)
        category = item_category[torch.cat([padding, sub + 1])]  # by sub-catalogue index
    top, scores = top_n(
        model,
        extracted,
        items[sub],
        n,
        blocked=~torch.from_numpy(allowed).to(items.device),
        item_category=category,
        diversity_lambda=diversity_lambda,
        quota_alpha=quota_alpha,
        quota_half_life=quota_half_life,
        histories=histories,
    )
    return sub[top - 1] + 1, scores


def _sub_catalogue(found: np.ndarray, n: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, C) candidate rows (-1: none) -> the sorted rows they cover, at least n of them,
    and (B, rows) which are each user's own candidates. When the candidates are fewer than
    n, items no one asked for fill the sub-catalogue, allowed to no one, so that it ranks
    like the catalogue with everything else blocked (such slots are returned at -inf)."""
    rows = np.unique(found[found >= 0])
    if len(rows) < n:
        fill = np.setdiff1d(np.arange(n_items), rows, assume_unique=True)[: n - len(rows)]
        rows = np.union1d(rows, fill)
    allowed = np.zeros((found.shape[0], len(rows)), dtype=bool)
    user, slot = np.nonzero(found >= 0)
    allowed[user, np.searchsorted(rows, found[user, slot])] = True
    return rows, allowed
