"""A synthetic interaction log with planted interests, deterministic by seed.

The catalogue is cut into ``n_clusters`` contiguous item clusters (an item's cluster is its
category). Each user draws between 1 and ``max_interests`` distinct clusters as their
interests. Their sequence walks between those interests: at each step they stay with the
current interest with probability ``stickiness`` or jump to one of their interests at
random, then pick an item of that cluster with a Zipf-like popularity skew. The planted
interest of every event and every user is kept as ground truth, so later checks can ask
whether a model recovers them.

Everything is vectorised numpy: millions of users take seconds, not minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mirec.data.log import RawLog
from mirec.errors import ConfigError

MAX_EVENTS = 500_000_000
"""The most events a synthetic log may hold on average (``n_users * mean_length``): the
generator holds about 120 bytes per event in numpy and Arrow at once, so 5e8 events take
some 60 GB; ``mean_length=1e9`` asked numpy for terabytes."""
_LIMITS: dict[str, tuple[float, float]] = {
    "n_users": (1, 100_000_000),
    "n_items": (1, 100_000_000),
    "n_clusters": (1, 100_000_000),
    "max_interests": (1, 64),  # the distinct draws cost max_interests**2 passes over users
    "mean_length": (5, 100_000),  # every user has 5 events plus a Poisson number
    "stickiness": (0, 1),
    "popularity_skew": (0, 100),  # 0 put every pick past its cluster's last item
    "seed": (0, 2**63 - 1),
}
"""Each option's range, ends included (popularity_skew > 0)."""


@dataclass(frozen=True)
class SyntheticSpec:
    n_users: int = 6000
    n_items: int = 3000
    n_clusters: int = 30
    max_interests: int = 4
    mean_length: float = 20.0
    stickiness: float = 0.7
    popularity_skew: float = 2.0
    """Item rank within a cluster is ``floor(size * u ** skew)``: 1 is uniform."""
    seed: int = 0

    @classmethod
    def parse(cls, text: str) -> SyntheticSpec:
        """``synthetic`` or ``synthetic:n_users=100000,n_items=20000,seed=3``."""
        _, _, params = text.partition(":")
        values: dict[str, float | int] = {}
        for part in filter(None, params.split(",")):
            key, eq, raw = part.partition("=")
            if not eq or key not in cls.__dataclass_fields__:
                known = ", ".join(cls.__dataclass_fields__)
                raise ConfigError(
                    f"synthetic dataset option {part!r}: expected key=value, key one of {known}"
                )
            if key in values:  # the last one won silently
                raise ConfigError(f"synthetic dataset option {key}: given twice; give it once")
            kind = type(getattr(cls, key))
            try:
                values[key] = kind(raw)
            except ValueError as err:
                raise ConfigError(
                    f"synthetic dataset option {key}={raw!r}: expected {kind.__name__}"
                ) from err
        return cls(**values)

    def __post_init__(self) -> None:
        """Every option in its range (:data:`_LIMITS`), before anything is generated: a
        negative size or a NaN failed deep in numpy, a huge one tried to allocate TiBs."""
        for key, (low, high) in _LIMITS.items():
            value = getattr(self, key)
            kind = type(getattr(SyntheticSpec, key))
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"synthetic dataset option {key}={value!r}: expected int")
            if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ConfigError(f"synthetic dataset option {key}={value!r}: expected float")
            open_low = key == "popularity_skew"
            if not (
                math.isfinite(value)
                and (low < value if open_low else low <= value)
                and value <= high
            ):
                what = "an integer" if kind is int else "a finite number"
                bound = f"> {low:g}" if open_low else f">= {low:g}"
                top = f"{int(high):,}" if kind is int else f"{high:g}"
                raise ConfigError(
                    f"synthetic dataset option {key}={value!r}: must be {what} {bound} and <= {top}"
                )
        if self.n_items < self.n_clusters or self.max_interests > self.n_clusters:
            raise ConfigError("synthetic dataset: need n_items >= n_clusters >= max_interests")
        events = self.n_users * self.mean_length
        if events > MAX_EVENTS:
            raise ConfigError(
                f"synthetic dataset: n_users={self.n_users} x mean_length={self.mean_length:g} "
                f"is {events:.3g} events, more than the {MAX_EVENTS:.0e} a synthetic log may "
                "hold (about 120 bytes each while it is generated)"
            )


@dataclass(frozen=True)
class PlantedInterests:
    """Ground truth of a synthetic log, aligned with its rows."""

    user_interests: np.ndarray
    """(n_users, max_interests) cluster ids, -1 where the user has fewer interests."""
    event_cluster: np.ndarray
    """Cluster of each row of the log."""


def generate(spec: SyntheticSpec) -> tuple[RawLog, PlantedInterests]:
    rng = np.random.default_rng(spec.seed)
    n_interests = rng.integers(1, spec.max_interests + 1, spec.n_users)
    interests = _distinct_draws(rng, spec.n_users, spec.max_interests, spec.n_clusters)
    interests = np.where(np.arange(spec.max_interests) < n_interests[:, None], interests, -1)
    lengths = 5 + rng.poisson(spec.mean_length - 5, spec.n_users)
    users = np.repeat(np.arange(1, spec.n_users + 1), lengths)
    starts = np.cumsum(lengths) - lengths
    step = np.arange(lengths.sum()) - np.repeat(starts, lengths)
    # an interest slot is drawn at the first step and at every jump, then carried forward
    jump = (step == 0) | (rng.random(len(step)) >= spec.stickiness)
    slot = (rng.random(len(step)) * np.repeat(n_interests, lengths)).astype(np.int64)
    last_jump = np.maximum.accumulate(np.where(jump, np.arange(len(step)), 0))
    cluster = interests[users - 1, slot[last_jump]]
    bounds = np.linspace(0, spec.n_items, spec.n_clusters + 1).astype(np.int64)
    size = bounds[cluster + 1] - bounds[cluster]
    rank = (size * rng.random(len(step)) ** spec.popularity_skew).astype(np.int64)
    items = bounds[cluster] + rank + 1
    item_ids = np.arange(1, spec.n_items + 1)
    item_cluster = np.searchsorted(bounds, item_ids - 1, side="right") - 1
    log = RawLog(
        interactions=pa.table(
            {
                "user": pa.array(users, pa.int64()),
                "item": pa.array(items, pa.int64()),
                "timestamp": pa.nulls(len(users), pa.float64()),
            }
        ),
        sources=(),
        item_categories=pa.table(
            {
                "item": pa.array(item_ids, pa.int64()),
                "category": pa.array([f"cluster-{c:03d}" for c in item_cluster]),
            }
        ),
    )
    return log, PlantedInterests(user_interests=interests, event_cluster=cluster)


def _distinct_draws(rng: np.random.Generator, rows: int, k: int, n: int) -> np.ndarray:
    """(rows, k) draws from range(n) without repetition within a row, in draw order.

    Draw j is uniform over the n - j values not taken yet: a uniform index into range(n - j)
    is shifted up past each earlier pick at or below it, taken in ascending order.
    """
    picks = np.empty((rows, k), dtype=np.int64)
    for j in range(k):
        x = rng.integers(0, n - j, rows)
        for taken in np.sort(picks[:, :j], axis=1).T:
            x += x >= taken
        picks[:, j] = x
    return picks


def planted_interest_counts(dataset: str, user_ids: np.ndarray) -> np.ndarray | None:
    """Each user's planted number of interests when ``dataset`` is ``synthetic[:options]``
    (``user_ids`` are raw ids, which the generator numbers 1..n_users); None otherwise."""
    if dataset.split(":")[0] != "synthetic":
        return None
    _, planted = generate(SyntheticSpec.parse(dataset))
    counts = (planted.user_interests >= 0).sum(1)
    return counts[np.asarray(user_ids, dtype=np.int64) - 1]
