"""Two runs on the same test users, bucket by bucket: ``mirec compare``.

Each test user (docs/protocol.md section 4) is described by one of four features, and users are
grouped into buckets of that feature:

* ``history_length``: items in the history the model reads (the last ``maxlen`` of the
  first 80% of the sequence);
* ``categories``: distinct primary categories (an item's first category) in that history;
* ``entropy``: Shannon entropy, in bits, of the history's primary categories (0 when one
  category fills it; items without a category are left out);
* ``target_popularity``: the share of the user's targets that are tail items, tail being
  every item outside the 20% most popular by training interactions
  (:func:`~mirec.evaluation.diagnostics.tail_items`, the diagnostics' definition).

Buckets are quantiles of the feature (:data:`N_BUCKETS` of them): the edges are its 25th,
50th and 75th percentiles, a value equal to an edge going to the bucket above, so tied
values always share a bucket and a feature with few distinct values gives fewer buckets.

In each bucket, and over all users, each run's Recall@50 and NDCG@50 are the means of its
per-user values, and the difference B - A gets a paired bootstrap 95% confidence interval
(B. Efron and R. Tibshirani, An Introduction to the Bootstrap, 1993, section 13.3, the
percentile interval): the bucket's users are resampled with replacement, the same users for
both runs, and the interval is the 2.5th and 97.5th percentiles of the resampled mean
differences.

Beside them, each bucket shows how each run's interests share its top-50 (the list diagnostics
of :mod:`mirec.evaluation.diagnostics`): the mean share of the list owned by the leading
interest and the mean miscalibration to the history, for a run with several interests (a
dash for a single-interest run). They describe the lists; no interval is drawn for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mirec.data.examples import EvaluationSet
from mirec.data.sequences import Sequences
from mirec.errors import ConfigError
from mirec.evaluation.diagnostics import tail_items
from mirec.plotting import plt, save_figure

FEATURES = ("history_length", "categories", "entropy", "target_popularity")
"""What ``--by`` can bucket the test users by."""
METRICS = ("recall@50", "ndcg@50")
"""The metrics compared, per user (docs/protocol.md section 5)."""
LIST_COLUMNS = ("leading_share@50", "miscalibration@50")
"""The list diagnostics shown beside them, per run (multi-interest runs only)."""
N_BUCKETS = 4
"""Quantile buckets per feature (at most: tied values share one)."""
RESAMPLES = 1000
CONFIDENCE = 0.95
_RESAMPLE_CELLS = 1 << 22
"""Resampled (resample, user) cells drawn at once: bounds the bootstrap's memory."""
MAX_RESAMPLES = 100_000
"""The most bootstrap resamples (the default is 1,000): each one is a pass over the test
users of both runs, so ``--resamples 1000000000000`` would run for days."""
MAX_SEED = 2**63 - 1
"""Seeds are 0 .. 2**63 - 1, as a run's ``seed`` (numpy refuses a negative one)."""


def check_bootstrap(resamples: object, seed: object) -> None:
    """A ConfigError naming the option when ``resamples`` or ``seed`` is out of range (or
    no integer), before any run is loaded."""
    for name, value, low, high in (
        ("resamples", resamples, 1, MAX_RESAMPLES),
        ("seed", seed, 0, MAX_SEED),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ConfigError(f"--{name} {value!r}: expected an integer from {low} to {high:,}")
        if not low <= value <= high:
            raise ConfigError(f"--{name} {value}: expected an integer from {low} to {high:,}")


def user_features(
    sequences: Sequences, eval_set: EvaluationSet, item_counts: np.ndarray, by: str
) -> np.ndarray:
    """(n_users,) float64: feature ``by`` (one of :data:`FEATURES`) of each user of
    ``eval_set``, in its order; ``item_counts`` are the training interactions per item
    index (tail items for ``target_popularity``)."""
    if by not in FEATURES:
        raise ConfigError(f"--by {by!r}: expected one of {', '.join(FEATURES)}")
    histories = eval_set.histories.numpy()
    if by == "history_length":
        return (histories > 0).sum(1).astype(np.float64)
    if by == "target_popularity":
        tail = tail_items(item_counts)
        owners = np.repeat(np.arange(len(eval_set)), np.diff(eval_set.target_offsets))
        tails = np.bincount(owners, tail[eval_set.target_items], minlength=len(eval_set))
        return tails / np.diff(eval_set.target_offsets)
    primary = sequences.primary_category()
    if primary is None:
        raise ConfigError(f"--by {by}: the runs' dataset has no item categories")
    codes = primary[histories]  # -1: no category, and padding (index 0) has none
    n_codes = int(primary.max()) + 1
    counts = np.zeros((len(eval_set), n_codes + 1))  # column 0: no category
    np.add.at(counts, (np.arange(len(eval_set))[:, None], codes + 1), 1)
    counts = counts[:, 1:]
    if by == "categories":
        return (counts > 0).sum(1).astype(np.float64)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    logs = np.log2(share, out=np.zeros_like(share), where=share > 0)
    return np.abs(-(share * logs).sum(1))  # abs: -0.0 for a single category reads as 0


def quantile_buckets(values: np.ndarray, n: int = N_BUCKETS) -> np.ndarray:
    """(n_users,) int64 bucket of each value: quantile edges, ties in one bucket, buckets
    numbered 0.. with none empty (module docstring)."""
    edges = np.unique(np.quantile(values, np.arange(1, n) / n))
    bucket = np.searchsorted(edges, values, side="right")
    _, dense = np.unique(bucket, return_inverse=True)  # an edge at the maximum leaves a gap
    return dense.astype(np.int64)


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of ``b - a`` over users and its paired bootstrap percentile interval
    (``low``, ``high``), from ``resamples`` resamples of the users drawn by ``seed``."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if diff.size == 0:
        raise ConfigError("paired_bootstrap: no users to resample")
    rng = np.random.default_rng(seed)
    chunk = max(1, _RESAMPLE_CELLS // diff.size)
    means = np.concatenate(
        [
            diff[rng.integers(0, diff.size, (min(chunk, resamples - lo), diff.size))].mean(1)
            for lo in range(0, resamples, chunk)
        ]
    )
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(diff.mean()), float(low), float(high)


@dataclass(frozen=True)
class BucketRow:
    """One bucket's users and the two runs' metrics on them."""

    bucket: str
    """``all users``, or the feature's range in the bucket (``12-20``)."""
    low: float | None
    high: float | None
    users: int
    a: dict[str, float]
    b: dict[str, float]
    difference: dict[str, dict[str, float]]
    """Per metric: ``mean`` of B - A, ``ci_low``, ``ci_high``."""
    lists_a: dict[str, float | None]
    """Run A's mean :data:`LIST_COLUMNS` in the bucket (None: a single-interest run)."""
    lists_b: dict[str, float | None]


def compare_users(
    per_user_a: dict[str, np.ndarray],
    per_user_b: dict[str, np.ndarray],
    feature: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> list[BucketRow]:
    """``all users`` and each quantile bucket of ``feature``: users, both runs' mean
    :data:`METRICS` and the paired bootstrap of B - A (seeded per bucket from ``seed``)."""
    buckets = quantile_buckets(feature)
    groups = [("all users", np.ones(len(feature), dtype=bool), None, None)]
    integral = bool(np.all(feature == np.round(feature)))
    for j in range(int(buckets.max()) + 1):
        members = buckets == j
        low, high = float(feature[members].min()), float(feature[members].max())
        groups.append((_range_label(low, high, integral), members, low, high))
    rows = []
    for i, (label, members, low, high) in enumerate(groups):
        difference = {}
        for metric in METRICS:
            mean, ci_low, ci_high = paired_bootstrap(
                per_user_a[metric][members],
                per_user_b[metric][members],
                resamples=resamples,
                seed=seed + i,
            )
            difference[metric] = {"mean": mean, "ci_low": ci_low, "ci_high": ci_high}
        rows.append(
            BucketRow(
                label,
                low,
                high,
                int(members.sum()),
                {m: float(per_user_a[m][members].mean()) for m in METRICS},
                {m: float(per_user_b[m][members].mean()) for m in METRICS},
                difference,
                _list_means(per_user_a, members),
                _list_means(per_user_b, members),
            )
        )
    return rows


def _list_means(per_user: dict[str, np.ndarray], members: np.ndarray) -> dict[str, float | None]:
    """A run's mean :data:`LIST_COLUMNS` over the bucket's users, None where it has none."""
    return {
        name: float(per_user[name][members].mean()) if name in per_user else None
        for name in LIST_COLUMNS
    }


def _range_label(low: float, high: float, integral: bool) -> str:
    text = (lambda v: f"{v:.0f}") if integral else (lambda v: f"{v:.2f}")
    return text(low) if low == high else f"{text(low)}-{text(high)}"


def rows_as_dicts(rows: list[BucketRow]) -> list[dict[str, object]]:
    """The rows as JSON-ready dicts."""
    return [asdict(row) for row in rows]


def format_table(rows: list[BucketRow], by: str, names: tuple[str, str]) -> str:
    """A text table: per bucket the users, each run's metrics and B - A with its interval."""
    lines = [f"A = {names[0]}", f"B = {names[1]}", ""]
    header = f"{by:<18}{'users':>6}"
    for metric in METRICS:
        header += f"  {metric + ' A':>13}{metric + ' B':>13}  {'B - A [95% CI]':<26}"
    for name in LIST_COLUMNS:
        short = name.split("@")[0].replace("_share", "").replace("miscalibration", "miscal")
        header += f"{short + ' A':>12}{short + ' B':>12}"
    lines.append(header.rstrip())
    for row in rows:
        line = f"{row.bucket:<18}{row.users:>6}"
        for metric in METRICS:
            d = row.difference[metric]
            ci = f"{d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
            line += f"  {row.a[metric]:>13.4f}{row.b[metric]:>13.4f}  {ci:<26}"
        for name in LIST_COLUMNS:
            for value in (row.lists_a[name], row.lists_b[name]):
                line += f"{'-' if value is None else f'{value:.3f}':>12}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def plot_comparison(rows: list[BucketRow], by: str, names: tuple[str, str], path: Path) -> None:
    """A PNG: per metric, a bar of B - A per bucket with its confidence interval."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5.5 * len(METRICS), 4), squeeze=False)
    positions = np.arange(len(rows))
    for ax, metric in zip(axes[0], METRICS, strict=True):
        mean = np.array([row.difference[metric]["mean"] for row in rows])
        low = np.array([row.difference[metric]["ci_low"] for row in rows])
        high = np.array([row.difference[metric]["ci_high"] for row in rows])
        colours = ["0.55"] + ["tab:blue"] * (len(rows) - 1)  # all users in grey
        ax.bar(positions, mean, color=colours)
        ax.errorbar(positions, mean, yerr=[mean - low, high - mean], fmt="none", ecolor="black")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(positions, [f"{r.bucket}\n({r.users})" for r in rows], fontsize=8)
        ax.set_xlabel(f"{by} (users)")
        ax.set_ylabel(f"{metric}: B - A, {CONFIDENCE:.0%} CI")
    fig.suptitle(f"B = {names[1]}  vs  A = {names[0]}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
