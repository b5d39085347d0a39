"""The search space of ``mirec tune``: the ``search:`` section of a published config (or of
the file ``--space`` names), each entry a setting and the values a trial may give it.

An entry is a list of choices, or a range ``{low: L, high: H}`` with ``log: true`` (sampled
on a log scale) or ``step: S``; a range is of integers or of reals as the setting itself is
(:class:`~mirec.core.config.Config`), so ``embedding_dim: {low: 16, high: 128}`` gives
integers and ``lr: {low: 1.0e-4, high: 1.0e-2, log: true}`` reals. The space is checked
here, before any trial trains: an unknown setting, a bad range or a value that the setting
refuses is a ConfigError naming the file and the entry.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mirec.config import SEARCH_SECTION, published_yaml, read_yaml_mapping
from mirec.core.config import Config, shown
from mirec.errors import ConfigError

NOT_SEARCHED = (
    "task",
    "model",
    "dataset",
    "format",
    "columns",
    "sep",
    "id_type",
    "init_from",
    "split_seed",
    "valid_users",
    "device",
    "stored_users",
)
"""Settings a search may not vary: they change what the trials are measured on (the data,
its split, the validation users), what is run, or where, not the model's quality."""
RANGE_KEYS = frozenset({"low", "high", "log", "step"})
_TYPES = typing.get_type_hints(Config)


class Suggests(Protocol):
    """What a dimension asks of a trial: Optuna's ``Trial`` (not imported here: the space
    is checked before Optuna is needed)."""

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int, log: bool) -> int: ...
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None, log: bool
    ) -> float: ...


@dataclass(frozen=True)
class Dimension:
    """One searched setting: its ``choices``, or the range ``low`` .. ``high``."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial: Suggests) -> Any:
        """This setting's value in ``trial``, drawn by the trial's sampler."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.integer:
            step = int(self.step or 1)
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> tuple[Any, ...]:
        """The values that bound what a trial may get: every choice, or the two ends (each
        setting's own check is a range or a set, so the ends stand for what lies between)."""
        return self.choices if self.choices is not None else (self.low, self.high)


SearchSpace = tuple[Dimension, ...]


def space_section(model: str, space_file: Path | None) -> tuple[dict[str, Any], str]:
    """The ``search:`` section to tune ``model`` over: ``space_file``'s, else the published
    config's; with the name that errors give its source."""
    if space_file is None:
        values, source = published_yaml(model), f"the published config {model}"
    else:
        values, source = read_yaml_mapping(space_file), str(space_file)
    section = values.get(SEARCH_SECTION)
    if section is None:
        raise ConfigError(
            f"{source}: has no {SEARCH_SECTION}: section (the settings a search varies); give "
            "a file of one with --space"
        )
    if not isinstance(section, dict) or not section:
        raise ConfigError(
            f"{source}: {SEARCH_SECTION}: expected a mapping of settings to their values, "
            f"got {shown(section)}"
        )
    return section, source


def parse_space(
    section: dict[str, Any],
    source: str,
    build: Callable[[dict[str, Any]], object],
    fixed: frozenset[str] = frozenset(),
) -> SearchSpace:
    """The dimensions of ``section``, each checked: a known setting that a search may vary,
    a well-formed entry, and values the setting takes (``build`` makes the run's config with
    a setting changed; its ConfigError is reported against the entry). Settings in ``fixed``
    (given with ``--set``) keep their value and leave the search."""
    dimensions = []
    for name, entry in section.items():
        where = f"{source}: {SEARCH_SECTION}.{name}"
        if name not in _TYPES:
            raise ConfigError(f"{where}: unknown setting; `mirec models --settings` lists them")
        if name in NOT_SEARCHED:
            raise ConfigError(
                f"{where}: not searchable (it changes what trials are measured on, or what "
                f"is run); set it with --set. Not searchable: {', '.join(NOT_SEARCHED)}"
            )
        dimension = _dimension(name, entry, where)  # a fixed entry's shape is checked too
        if name in fixed:
            continue
        for value in dimension.extremes():
            try:
                build({name: value})
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
        dimensions.append(dimension)
    return tuple(dimensions)


def _dimension(name: str, entry: Any, where: str) -> Dimension:
    """``entry`` as a dimension of setting ``name``, its shape and types checked."""
    if isinstance(entry, list):
        if not entry:
            raise ConfigError(f"{where}: an empty list of choices; give at least one value")
        for value in entry:
            if not (value is None or isinstance(value, bool | int | float | str)):
                raise ConfigError(f"{where}: the choice {shown(value)} is not a single value")
        if len(set(map(repr, entry))) < len(entry):
            raise ConfigError(f"{where}: a choice is given twice in {shown(entry)}")
        return Dimension(name, choices=tuple(entry))
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{where}: expected a list of choices or a range {{low: L, high: H}}, got "
            f"{shown(entry)}"
        )
    unknown = sorted(set(entry) - RANGE_KEYS, key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; a range has low, high, log, step")
    if "low" not in entry or "high" not in entry:
        raise ConfigError(f"{where}: a range needs both low and high")
    integer = _range_kind(name, where)
    low, high, step = (_bound(entry.get(k), k, integer, where) for k in ("low", "high", "step"))
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log: expected true or false, got {shown(log)}")
    if low is None or high is None or not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None and (step <= 0 or log):
        problem = "a log range takes no step" if log else f"step must be > 0, got {step}"
        raise ConfigError(f"{where}: {problem}")
    return Dimension(name, low=low, high=high, log=log, step=step, integer=integer)


def _range_kind(name: str, where: str) -> bool:
    """Whether setting ``name`` ranges over integers (True) or reals (False); a setting of
    neither takes choices only."""
    hint = _TYPES[name]
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if float in kinds:
        return False
    if int in kinds and bool not in kinds:
        return True
    raise ConfigError(f"{where}: not a number setting; give a list of choices")


def _bound(value: Any, key: str, integer: bool, where: str) -> float | None:
    """A range's ``low``, ``high`` or ``step``: an integer for an integer setting, a finite
    number for a real one (YAML 1.1 reads ``1e-3`` as text, so numeric text is taken)."""
    if value is None:
        return None
    if integer:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(
            f"{where}: {key}: expected an integer (the setting is one), got {shown(value)}"
        )
    number = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise ConfigError(f"{where}: {key}: expected a number, got {shown(value)}")
    return number
