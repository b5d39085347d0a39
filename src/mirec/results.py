"""What a run reports: the typed records that ``metrics.json`` holds, written and read back.

Three kinds of run write a ``metrics.json``, each a record here: a retrieval training run
(:class:`TrainedRun`, with an :class:`AutoChoice` when ``--model auto`` chose it), a CTR
training run (:class:`TrainedCTRRun`) and a re-evaluation of a trained model
(:class:`Evaluation`, ``mirec evaluate`` and ``mirec diagnose``). ``mirec compare`` writes
a :class:`Comparison`. Each record's :meth:`to_dict` is the file's layout, key for key and
in the file's order, as it has been since 0.1; :func:`read_result` reads any of them back,
a folder written by an older version included (a key it lacks reads as None; a key this
version does not know is kept in ``extra`` and written back unchanged).

The readers (the command line's tables, ``mirec compare``, the experiment reports, the
HTTP service's ``/model``) take these records, never the file's keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from mirec.atomic import write_json_atomic
from mirec.errors import MirecError

Figures = dict[str, float]
"""Metric name (``recall@50``, ``auc`` ...) -> its value on one split."""


def _pick(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The fields of dataclass ``cls`` from ``values``, None for those it lacks."""
    return {f.name: values.get(f.name) for f in fields(cls)}


@dataclass(frozen=True)
class RunHeader:
    """What was run, on what, and how: ``processes`` (a torchrun job's) of ``threads``
    PyTorch threads each."""

    dataset: str
    model: str
    seed: int
    split_seed: int
    interests: int
    """K as built: single-interest models have 1 (DIN: one target-attended vector)."""
    maxlen: int
    n_users: int
    n_items: int
    n_interactions: int
    n_train_users: int
    n_valid_users: int
    n_test_users: int
    device: str
    processes: int
    threads: int
    mirec_version: str

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class FitSummary:
    """How training went."""

    epochs: int
    best_epoch: int
    stopped_by: str
    """``max_epochs``, ``patience`` or ``max_minutes``."""
    train_seconds: float
    train_examples_per_second: float
    sparse_items: bool

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class TestFigures:
    """A retrieval model's figures on the test users: the protocol's metrics and the
    interest diagnostics (docs/protocol.md section 5)."""

    test: Figures
    collapse: float | None
    """Mean pairwise cosine of a user's active interests (None: single-interest)."""
    interest_counts: dict[Any, int] | None
    """Users by number of active interests (adaptive K), else None."""
    diagnostics: dict[str, Any] | None
    eval_users_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "collapse": self.collapse,
            "interest_counts": self.interest_counts,
            "diagnostics": self.diagnostics,
        }


@dataclass(frozen=True)
class AutoChoice:
    """``--model auto``'s record of its choice (:mod:`mirec.auto`)."""

    chosen: str
    why: str
    selected_on: str
    train_seconds: float
    """The candidates' training time, together."""
    candidates: dict[str, dict[str, Any]]
    """Each candidate's folder, validation figures, training and settings."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class _Result:
    """What every record has: what was run, and the resolved settings."""

    kind: ClassVar[str]
    header: RunHeader
    config: dict[str, Any] | None
    """The resolved settings (None: a folder from before 0.2 recorded them here)."""
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)
    """Keys of an older or newer ``metrics.json`` that this version does not know."""

    @property
    def task(self) -> str:
        return "ctr" if self.kind == "ctr" else "retrieval"

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every record defines its own
        raise NotImplementedError


@dataclass(frozen=True)
class TrainedRun(_Result):
    """A retrieval training run: the best weights' validation and test figures."""

    kind: ClassVar[str] = "train"
    valid: Figures
    figures: TestFigures
    fit: FitSummary
    negatives: int | None
    valid_users: int | None
    valid_every: int
    history: list[dict[str, Any]]
    auto: AutoChoice | None = None
    fine_tuned: dict[str, Any] | None = None
    """With ``init_from``: the folder started from and what it gave (known, new and
    dropped items, new users: mirec.training.warm_start)."""

    @property
    def test(self) -> Figures:
        return self.figures.test

    def to_dict(self) -> dict[str, Any]:
        out = {
            **self.header.to_dict(),
            "valid": self.valid,
            **self.figures.to_dict(),
            **self.fit.to_dict(),
            "negatives": self.negatives,
            "valid_users": self.valid_users,
            "valid_every": self.valid_every,
            "eval_users_per_second": self.figures.eval_users_per_second,
            "history": self.history,
            "config": self.config,
            **self.extra,
        }
        if self.fine_tuned is not None:
            out["fine_tuned"] = self.fine_tuned
        if self.auto is not None:
            out["auto"] = self.auto.to_dict()
        return out


@dataclass(frozen=True)
class TrainedCTRRun(_Result):
    """A CTR training run: AUC, GAUC and LogLoss of the best weights."""

    kind: ClassVar[str] = "ctr"
    negatives_per_positive: int
    n_valid_rows: int
    n_test_rows: int
    valid: Figures
    test: Figures
    fit: FitSummary
    history: list[dict[str, Any]]
    fine_tuned: dict[str, Any] | None = None
    """As :attr:`TrainedRun.fine_tuned`."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": "ctr",
            **self.header.to_dict(),
            "negatives_per_positive": self.negatives_per_positive,
            "n_valid_rows": self.n_valid_rows,
            "n_test_rows": self.n_test_rows,
            "valid": self.valid,
            "test": self.test,
            **self.fit.to_dict(),
            "history": self.history,
            "config": self.config,
            **self.extra,
            **({} if self.fine_tuned is None else {"fine_tuned": self.fine_tuned}),
        }


TRAINING_FIELDS = (
    "epochs",
    "best_epoch",
    "stopped_by",
    "train_seconds",
    "negatives",
    "sparse_items",
    "valid_users",
    "valid_every",
)
"""What a re-evaluation repeats of how its model was trained."""


@dataclass(frozen=True)
class Evaluation(_Result):
    """A trained retrieval model scored again (``mirec evaluate``), possibly under other
    inference-time settings."""

    kind: ClassVar[str] = "evaluate"
    history_masked: bool
    inference_settings: dict[str, Any]
    valid: Figures
    figures: TestFigures
    trained: dict[str, Any]
    """How the model was trained (:data:`TRAINING_FIELDS`, from its own metrics.json)."""

    @property
    def test(self) -> Figures:
        return self.figures.test

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.header.to_dict(),
            "history_masked": self.history_masked,
            "inference_settings": self.inference_settings,
            "valid": self.valid,
            **self.figures.to_dict(),
            "eval_users_per_second": self.figures.eval_users_per_second,
            **self.trained,
            "config": self.config,
            **self.extra,
        }


def training_summary(trained: dict[str, Any] | None) -> dict[str, Any]:
    """How a model was trained, from its run's ``metrics.json`` (empty for a folder without
    one), so that a re-evaluation's metrics.json describes the model it scored."""
    return {key: trained[key] for key in TRAINING_FIELDS if key in (trained or {})}


RunResult = TrainedRun | TrainedCTRRun | Evaluation
"""A model folder's ``metrics.json``, or an evaluation's."""


def _known_keys(*records: type) -> set[str]:
    return {f.name for record in records for f in fields(record)}


_HEADER_KEYS = _known_keys(RunHeader)
_FIT_KEYS = _known_keys(FitSummary)


def write_result(path: Path, result: RunResult | Comparison) -> None:
    """``result`` as ``path`` (a ``metrics.json``), whole or not at all."""
    write_json_atomic(path, result.to_dict())


def read_result(values: Any, source: str) -> RunResult:
    """The record a ``metrics.json`` holds (``values``, the parsed file; ``source`` names it
    in errors). A folder of an older version reads too: a key it lacks is None."""
    if not isinstance(values, dict):
        raise MirecError(f"{source}: expected a JSON object of run metrics")
    header = RunHeader(**_pick(RunHeader, values))
    config = values.get("config")
    fit = FitSummary(**_pick(FitSummary, values))
    figures = TestFigures(**_pick(TestFigures, values))
    common = {"header": header, "config": config}
    if values.get("task") == "ctr":
        own = (
            "negatives_per_positive",
            "n_valid_rows",
            "n_test_rows",
            "valid",
            "test",
            "fine_tuned",
        )
        known = {"task", "history", "config", *_HEADER_KEYS, *_FIT_KEYS, *own}
        return TrainedCTRRun(
            **common,
            **{key: values.get(key) for key in own},
            fit=fit,
            history=values.get("history") or [],
            extra={k: v for k, v in values.items() if k not in known},
        )
    if "history_masked" in values:
        known = {
            "history_masked",
            "inference_settings",
            "valid",
            "config",
            *_HEADER_KEYS,
            *_known_keys(TestFigures),
            *TRAINING_FIELDS,
        }
        return Evaluation(
            **common,
            history_masked=bool(values["history_masked"]),
            inference_settings=values.get("inference_settings") or {},
            valid=values.get("valid") or {},
            figures=figures,
            trained=training_summary(values),
            extra={k: v for k, v in values.items() if k not in known},
        )
    auto = values.get("auto")
    own = ("valid", "negatives", "valid_users", "valid_every", "history", "auto", "fine_tuned")
    known = {"config", *_HEADER_KEYS, *_FIT_KEYS, *_known_keys(TestFigures), *own}
    return TrainedRun(
        **common,
        valid=values.get("valid") or {},
        figures=figures,
        fit=fit,
        negatives=values.get("negatives"),
        valid_users=values.get("valid_users"),
        valid_every=values.get("valid_every"),
        history=values.get("history") or [],
        auto=AutoChoice(**_pick(AutoChoice, auto)) if isinstance(auto, dict) else None,
        fine_tuned=values.get("fine_tuned"),
        extra={k: v for k, v in values.items() if k not in known},
    )


@dataclass(frozen=True)
class Comparison:
    """``mirec compare``'s ``metrics.json``: the two runs' test means on their shared test
    users and the difference, B - A (the buckets are in ``compare.json``)."""

    dataset: str
    split_seed: int
    n_test_users: int
    by: str
    run_a: dict[str, Any]
    run_b: dict[str, Any]
    test_a: Figures
    test_b: Figures
    difference: Figures

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class TuningResult:
    """``mirec tune``'s ``metrics.json``: the study, its best trial on the validation
    objective, and how many trials ended in each state (COMPLETE, PRUNED, FAIL, RUNNING)."""

    study_name: str
    storage: str
    """The storage URL, its password hidden."""
    model: str
    dataset: str
    objective: str
    """``valid recall@50``: trials are ranked on validation only."""
    direction: str
    n_trials: int
    states: dict[str, int]
    best_trial: int | None
    """None: no trial completed yet."""
    best_value: float | None
    best_params: dict[str, Any] | None
    best_folder: str | None
    best_config: str | None
    """The file that ``mirec train --config`` trains the best trial again from."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "tune", **{f.name: getattr(self, f.name) for f in fields(self)}}
