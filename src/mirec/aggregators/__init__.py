"""Aggregators: how a user's K interests meet the items (the survey's question, arXiv
2506.15284, section 5), and the one place that says what an aggregator name does.

Each registers itself here under its config name (``Config.aggregator``) with its
:class:`Level` and the tasks it serves:

* score-level (``max``, ``mean``): every interest scores the item and the scores are
  merged; in training the selector picks the interest each example trains;
* representation-level (``attention``, ``concat_mlp``, ``intention``): a module fuses the
  interests into one vector, which both trains and retrieves;
* target (``target``, CTR only): the candidate weighs the interests (DIN's unit).

:func:`build_aggregation` turns a config into an :class:`Aggregation`; the retrieval and
the CTR builders both go through it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from torch import nn

from mirec.aggregators.max_score import max_over_interests
from mirec.core.config import Config
from mirec.core.contracts import Scorer
from mirec.core.registry import Registry

RETRIEVAL, CTR = "retrieval", "ctr"


class Level(enum.Enum):
    SCORE = "score"
    REPRESENTATION = "representation"
    TARGET = "target"


class AggregatorEntry(Protocol):
    """What an aggregator registers: its level, its tasks, and how to build it."""

    level: Level
    tasks: tuple[str, ...]

    def from_config(self, config: Config) -> Scorer | nn.Module:
        """A scorer (score level) or a module (the others)."""
        ...


AGGREGATORS: Registry[AggregatorEntry] = Registry("aggregator", __name__)


@dataclass(frozen=True)
class Aggregation:
    """An aggregator, built: ``scorer`` ranks the catalogue with the retrieval vectors (a
    fused model's one vector goes through the max, which is then that vector's score);
    ``module`` fuses the interests (representation level) or weighs them by the candidate
    (target); None at score level."""

    level: Level
    scorer: Scorer = max_over_interests
    module: nn.Module | None = None


def build_aggregation(config: Config, task: str) -> Aggregation:
    """The aggregator ``config.aggregator`` for ``task`` (retrieval or ctr); a ConfigError
    when the task has no such aggregator."""
    entry = AGGREGATORS.lookup(
        config.aggregator,
        accept=lambda e: task in e.tasks,
        what="aggregator" if task == RETRIEVAL else "CTR aggregator",
    )
    built = entry.from_config(config)
    if entry.level is Level.SCORE:
        return Aggregation(entry.level, scorer=built)
    return Aggregation(entry.level, module=built)
