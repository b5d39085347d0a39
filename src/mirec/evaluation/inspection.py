"""One user's interests, explained: ``mirec inspect``.

For a user of the dataset (or a raw list of item ids), the trained model extracts the K
interests from the history (the most recent ``maxlen`` items). Each history item is
assigned to the interest it routes to most
(:func:`~mirec.retrieval.adaptive_k.assign_behaviours`); an interest is described by

* its share of the history: the share of the history items assigned to it,
* a name from the categories of its items: the share of its items carrying each category,
  most common first ("Sci-Fi 61%, Action 22%"; a multi-genre movie counts for each genre),
* its history items, heaviest first, with titles where the dataset has them,
* its own top recommendations: the catalogue ranked by this interest alone,
* its alignment: the share of its top-10 recommendations that carry one of the (up to)
  three categories naming it (``alignment@10`` of :mod:`mirec.evaluation.diagnostics`,
  whatever ``top`` is); the report's alignment is the mean over its interests.

The user's recommendations are the model's aggregated ranking, each marked with the interest
that scores it highest, and how the interests share that list (:meth:`UserReport.list_figures`,
the list diagnostics of :mod:`mirec.evaluation.diagnostics` for this one user and list). Items
already in the history are left out of every recommendation
list here, as a user would expect. :func:`interest_map` lays the history, the interests and
the recommendations out in 2-D for ``--plot`` and the web page of ``mirec serve``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from mirec.core.chunked_top import blocked_items
from mirec.core.contracts import Extracted
from mirec.core.functional import mean_pairwise_jaccard, miscalibration
from mirec.data.sequences import Sequences
from mirec.data.vocabulary import Vocabulary
from mirec.errors import ConfigError
from mirec.evaluation.diagnostics import CALIBRATION_SMOOTHING, interest_alignments
from mirec.models.folder import LoadedModel, load_model
from mirec.retrieval.adaptive_k import assign_behaviours, behaviour_shares, interest_shares
from mirec.retrieval.ranking import best_interest, rank, top_n


@dataclass(frozen=True)
class ItemRow:
    item: str
    """The raw item id."""
    title: str
    weight: float
    """A history item's share of routing to its interest, or a recommendation's score."""
    interest: int | None = None
    """For the user's (aggregated) recommendations: the interest that scores the item
    highest; None elsewhere (a history item's interest is the one it is listed under)."""


@dataclass(frozen=True)
class InterestRow:
    index: int
    share: float
    """This interest's share of the history."""
    explanation: list[tuple[str, float]]
    """(category, share of the interest's items carrying it), most common first."""
    history: list[ItemRow]
    recommendations: list[ItemRow]
    alignment: float | None = None
    """Share of the interest's top-10 recommendations with one of its top categories; None
    without categories or assigned history items."""

    @property
    def name(self) -> str:
        parts = [f"{category} {share:.0%}" for category, share in self.explanation[:3]]
        return ", ".join(parts) or "no categories"


@dataclass(frozen=True)
class UserReport:
    dataset: str
    model: str
    user: str | None
    history: list[str]
    interests: list[InterestRow]
    recommendations: list[ItemRow]
    # for the 2-D map: interest vectors, history item vectors, each item's interest, and
    # the vectors of the user's recommendations
    interest_vectors: np.ndarray = field(repr=False)
    history_vectors: np.ndarray = field(repr=False)
    assignment: np.ndarray = field(repr=False)
    recommendation_vectors: np.ndarray = field(repr=False)
    unknown_items: list = field(default_factory=list)
    """Ids of a given history that the catalogue does not know (left out of it)."""

    @property
    def alignment(self) -> float | None:
        """The mean alignment of the interests that have one (None when none has)."""
        scores = [i.alignment for i in self.interests if i.alignment is not None]
        return float(np.mean(scores)) if scores else None

    def list_figures(self) -> dict[str, float] | None:
        """How the interests share the recommendations (module docstring of
        :mod:`mirec.evaluation.diagnostics`, at this report's length): ``owning_interests``,
        ``leading_share``, ``miscalibration`` against the history's shares and
        ``list_overlap`` of the interests' own lists; None with fewer than two interests
        or no recommendations."""
        owners = [row.interest for row in self.recommendations if row.interest is not None]
        if len(self.interests) < 2 or not owners:
            return None
        index = [interest.index for interest in self.interests]
        counts = np.array([owners.count(i) for i in index], dtype=np.float64)
        listed = counts / counts.sum()
        history = torch.tensor([[interest.share for interest in self.interests]])
        figures = {
            "owning_interests": float((counts > 0).sum()),
            "leading_share": float(listed.max()),
            "miscalibration": float(
                miscalibration(history, torch.from_numpy(listed)[None], CALIBRATION_SMOOTHING)[0]
            ),
        }
        own = [[row.item for row in interest.recommendations] for interest in self.interests]
        if len({len(ids) for ids in own}) == 1 and own[0]:
            distinct = sorted({item for ids in own for item in ids})
            codes = {item: code for code, item in enumerate(distinct)}
            lists = torch.tensor([[[codes[i] for i in ids] for ids in own]])
            figures["list_overlap"] = float(mean_pairwise_jaccard(lists)[0])
        return figures

    def to_json(self) -> dict:
        out = {key: value for key, value in asdict(self).items() if key not in _ARRAYS}
        out["alignment"] = self.alignment
        out["list"] = self.list_figures()
        for row, interest in zip(out["interests"], self.interests, strict=True):
            row["name"] = interest.name
            row["explanation"] = [{"category": c, "share": s} for c, s in interest.explanation]
        return out

    def summary(self) -> str:
        who = f"user {self.user}" if self.user is not None else "the given items"
        names = "; ".join(f"interest {i.index}: {i.name}" for i in self.interests)
        return f"{self.model} on {self.dataset}, {who}: {names}"

    def to_text(self) -> str:
        who = f"user {self.user}" if self.user is not None else "the given items"
        lines = [f"{self.model} on {self.dataset}, {who}: {len(self.history)} history items"]
        for interest in self.interests:
            lines += [
                "",
                f"interest {interest.index}: {interest.name} "
                f"({interest.share:.0%} of the history, {_count(len(interest.history), 'item')}"
                f"{_aligned(interest.alignment)})",
            ]
            lines += [f"    history  {_label(row)}" for row in interest.history]
            lines += [f"    top      {_label(row)}" for row in interest.recommendations]
        if self.alignment is not None:
            lines += ["", f"alignment (mean over the interests): {self.alignment:.0%}"]
        lines += ["", "recommended (all interests):"]
        lines += [f"    {i + 1:>2}. {_label(row)}" for i, row in enumerate(self.recommendations)]
        figures = self.list_figures()
        if figures is not None:
            n = len(self.recommendations)
            line = (
                f"the list: {figures['owning_interests']:.0f} of {len(self.interests)} "
                f"interests own its {n} items, the leading one {figures['leading_share']:.0%}; "
                f"miscalibration to the history {figures['miscalibration']:.3f} (0: the "
                "history's split)"
            )
            if "list_overlap" in figures:
                line += f"; the interests' own lists overlap {figures['list_overlap']:.0%}"
            lines += ["", line]
        return "\n".join(lines)


_ARRAYS = ("interest_vectors", "history_vectors", "assignment", "recommendation_vectors")
"""The report's fields that are arrays for the map rather than rows for people."""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _aligned(alignment: float | None) -> str:
    return "" if alignment is None else f", alignment {alignment:.0%}"


def _label(row: ItemRow) -> str:
    return f"{row.item}" + (f"  {row.title}" if row.title else "")


def inspect_folder(
    checkpoint: Path,
    *,
    user: str | None = None,
    items: list[str] | None = None,
    top: int = 10,
) -> UserReport:
    """Explain the interests a trained run finds for ``user`` (a raw user id) or for the
    history ``items`` (raw item ids, oldest first); the model folder is all it reads."""
    return inspect_model(load_model(checkpoint), user=user, items=items, top=top)


def inspect_model(
    loaded: LoadedModel,
    *,
    user: str | None = None,
    items: list[str] | None = None,
    top: int = 10,
) -> UserReport:
    """:func:`inspect_folder` for a model already in memory."""
    if (user is None) == (items is None):
        raise ConfigError("inspect: give either a user id or a list of item ids")
    if loaded.config.task != "retrieval":  # a CTR model has no interests (an AttributeError)
        raise ConfigError(
            f"{loaded.config.model}: a {loaded.config.task} model; inspect explains a "
            "retrieval model's interests (a CTR model scores the candidates it is given, and "
            "has none)"
        )
    seqs = loaded.data.sequences
    if user is None:
        return explain_history(loaded, _item_indices(seqs, items or []), top=top)
    row = Vocabulary(seqs.user_ids, "user").row_of(user, loaded.config.dataset)
    return explain_history(loaded, seqs.sequence(row), user=user, user_row=row, top=top)


@torch.no_grad()
def explain_history(
    loaded: LoadedModel,
    history: np.ndarray,
    *,
    user: str | None = None,
    user_row: int | None = None,
    top: int = 10,
) -> UserReport:
    """The report of ``history``, item indices (1..N, oldest first; the model reads the most
    recent ``maxlen``): of the user at ``user_row`` of the folder's users, whose raw id is
    ``user``, or of no user. Callers that already hold vocabularies (``Recommender``) look
    the ids up themselves and start here."""
    if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
        raise ConfigError(f"inspect: top must be an integer of at least 1, got {top!r}")
    if len(history) == 0:
        raise ConfigError("inspect: the history is empty")
    config, model, seqs = loaded.config, loaded.model, loaded.data.sequences
    history = np.asarray(history)[-loaded.data.maxlen :]
    if model.uses_user_rows and user_row is None:
        raise ConfigError("inspect: this model uses user profiles, so it needs --user")
    item_vectors = model.item_vectors()
    device = item_vectors.device
    histories = torch.as_tensor(history, dtype=torch.long, device=device).unsqueeze(0)
    users = None if user_row is None else torch.tensor([user_row], device=device)
    extracted = model.extract(histories, users)
    mask = histories > 0
    k = extracted.interests.shape[1]
    assigned = assign_behaviours(extracted, mask)
    mass = interest_shares(assigned, k)[0].cpu().numpy()
    if extracted.routing is None:
        weight = np.ones(len(history))
    else:
        share = behaviour_shares(extracted.routing)[0]
        weight = share.gather(1, assigned[0, :, None])[:, 0].cpu().numpy()
    assignment = assigned[0].cpu().numpy()
    active = (
        np.ones(k, dtype=bool) if extracted.active is None else extracted.active[0].cpu().numpy()
    )
    seen = blocked_items(histories, len(item_vectors))
    alignment = _alignment(seqs, extracted, histories, assigned, item_vectors)
    interests = []
    for i in np.flatnonzero(active):
        members = np.flatnonzero(assignment == i)
        members = members[np.argsort(-weight[members], kind="stable")]
        scores = extracted.interests[0, i : i + 1].to(item_vectors.dtype) @ item_vectors.T
        interests.append(
            InterestRow(
                index=int(i),
                share=float(mass[i]),
                explanation=_explain(seqs, history[members]),
                history=[_row(seqs, history[m], float(weight[m])) for m in members],
                recommendations=_top(seqs, *rank(scores, _depth(top, seen), seen)),
                alignment=None if np.isnan(alignment[i]) else round(float(alignment[i]), 4),
            )
        )
    overall, overall_scores = top_n(model, extracted, item_vectors, _depth(top, seen), blocked=seen)
    found_by = best_interest(extracted, item_vectors, overall)[0].tolist()
    return UserReport(
        dataset=config.dataset,
        model=config.model,
        user=user,
        history=[str(seqs.item_ids[i - 1]) for i in history],
        interests=interests,
        recommendations=[
            replace(row, interest=int(i))
            for row, i in zip(_top(seqs, overall, overall_scores), found_by, strict=True)
        ],
        interest_vectors=extracted.interests[0, torch.as_tensor(active)].cpu().numpy(),
        history_vectors=item_vectors[histories[0] - 1].cpu().numpy(),
        assignment=assignment,
        recommendation_vectors=item_vectors[overall[0] - 1].cpu().numpy(),
    )


def _alignment(
    seqs: Sequences,
    extracted: Extracted,
    histories: torch.Tensor,
    assigned: torch.Tensor,
    item_vectors: torch.Tensor,
) -> np.ndarray:
    """(K,) each interest's alignment, NaN where it has none (or the dataset no categories)."""
    matrix = seqs.category_matrix()
    if matrix is None:
        return np.full(extracted.interests.shape[1], np.nan)
    categories = torch.from_numpy(matrix).to(item_vectors.device)
    aligned, _ = interest_alignments(extracted, histories, assigned, item_vectors, categories)
    return aligned[0].cpu().numpy()


def _depth(top: int, seen: torch.Tensor) -> int:
    """``top``, or fewer when the history leaves fewer unseen items."""
    return min(top, seen.shape[1] - int(seen.sum()))


def _item_indices(seqs: Sequences, items: list[str]) -> np.ndarray:
    if not items:
        raise ConfigError("inspect: the item list is empty")
    rows, _ = Vocabulary(seqs.item_ids, "item").known_rows(items, on_unknown="error")
    return rows + 1


def _explain(seqs: Sequences, items: np.ndarray) -> list[tuple[str, float]]:
    if seqs.category_names is None or len(items) == 0:
        return []
    counts: dict[int, int] = {}
    for item in items:
        for code in np.unique(seqs.categories_of(int(item))):
            counts[int(code)] = counts.get(int(code), 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(str(seqs.category_names[code]), n / len(items)) for code, n in ranked]


def _row(seqs: Sequences, index: int, weight: float) -> ItemRow:
    title = "" if seqs.item_titles is None else str(seqs.item_titles[index - 1])
    return ItemRow(str(seqs.item_ids[index - 1]), title, round(weight, 4))


def _top(seqs: Sequences, top: torch.Tensor, scores: torch.Tensor) -> list[ItemRow]:
    """Rows of a ranked (1, n) list of item indices and their scores."""
    return [_row(seqs, i, s) for i, s in zip(top[0].tolist(), scores[0].tolist(), strict=True)]


@dataclass(frozen=True)
class InterestMap:
    """2-D coordinates of a report's vectors, each an (n, 2) array in the report's order."""

    history: np.ndarray
    interests: np.ndarray
    recommendations: np.ndarray


def interest_map(report: UserReport) -> InterestMap:
    """The plane in which the history items and the interests spread most (the first two
    principal components of their vectors together), with the recommended items projected
    onto the same plane."""
    points = np.concatenate([report.history_vectors, report.interest_vectors]).astype(np.float64)
    origin = points.mean(0)
    _, _, vt = np.linalg.svd(points - origin, full_matrices=False)
    axes = vt[:2].T

    def project(vectors: np.ndarray) -> np.ndarray:
        xy = (vectors.astype(np.float64) - origin) @ axes
        # one-dimensional vectors (the popularity baseline): a flat second axis
        return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))

    return InterestMap(
        history=project(report.history_vectors),
        interests=project(report.interest_vectors),
        recommendations=project(report.recommendation_vectors),
    )


def plot_interest_map(report: UserReport, path: Path) -> None:
    """One user's history items and interest vectors in 2-D (:func:`interest_map`), each
    item coloured by the interest it routes to."""
    from mirec.plotting import plt, save_figure

    coordinates = interest_map(report)
    items, interests = coordinates.history, coordinates.interests
    fig, ax = plt.subplots(figsize=(6.5, 5))
    colours = plt.get_cmap("tab10")
    for n, interest in enumerate(report.interests):
        chosen = report.assignment == interest.index
        colour = colours(n % 10)
        ax.scatter(*items[chosen].T, s=22, color=colour, alpha=0.7)
        ax.scatter(
            *interests[n],
            s=260,
            marker="*",
            color=colour,
            edgecolor="black",
            label=f"interest {interest.index}: {interest.name}",
        )
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    who = f"user {report.user}" if report.user is not None else "given items"
    ax.set_title(
        f"{report.model} on {report.dataset}, {who}: history (dots), interests (stars)", fontsize=9
    )
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
