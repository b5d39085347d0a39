"""The score-level aggregators as registry entries: ``max`` (ComiRec's retrieval, and for
CTR the best interest's logit) and ``mean`` (retrieval only)."""

from __future__ import annotations

from dataclasses import dataclass

from mirec.aggregators import AGGREGATORS, CTR, RETRIEVAL, Level
from mirec.aggregators.max_score import max_over_interests
from mirec.aggregators.mean_score import mean_over_interests
from mirec.core.config import Config
from mirec.core.contracts import Scorer


@dataclass(frozen=True)
class ScoreLevel:
    """A score-level aggregator: each interest scores the items, ``scorer`` merges them."""

    scorer: Scorer
    tasks: tuple[str, ...]
    level: Level = Level.SCORE

    def from_config(self, config: Config) -> Scorer:
        return self.scorer


AGGREGATORS.register("max")(ScoreLevel(max_over_interests, (RETRIEVAL, CTR)))
AGGREGATORS.register("mean")(ScoreLevel(mean_over_interests, (RETRIEVAL,)))
