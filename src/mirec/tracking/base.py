"""What every tracking backend does, and what a run logs through it.

A backend (MLflow, TensorBoard) knows how to start a run and to write four kinds of thing
into it: parameters, metrics at a step, tags, and the model folder. What those are for a
mirec run (which names, which figures of its record) is decided here, once, so that the
two backends show the same names: ``train/loss`` and ``valid/recall_at_50`` per epoch,
``test/recall_at_50`` and ``diagnostics/effective_interests`` once the run is tested.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, Protocol

from mirec.results import Evaluation, RunResult, TrainedCTRRun, TrainedRun

Status = Literal["FINISHED", "FAILED", "KILLED"]
"""How a tracked run ended (MLflow's words; TensorBoard records it as a tag)."""


class RunLog(Protocol):
    """One run of one backend."""

    key: str | None
    """What :meth:`Backend.reopen` reopens the run by (MLflow's run id), None when the
    backend needs nothing (a TensorBoard run is its folder)."""

    def log_params(self, params: dict[str, str]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def log_folder(self, folder: Path) -> None:
        """The run's model folder: its files, or where it is (the backend says which)."""

    def child(self, name: str) -> RunLog:
        """A run nested in this one (an ``auto`` candidate, a grid's cell)."""

    def end(self, status: Status) -> None: ...


class Backend(Protocol):
    """Where runs are tracked: MLflow's store, or a TensorBoard log folder."""

    name: str
    """Its ``--track`` value."""

    def start(self, name: str, fresh: bool = False) -> RunLog:
        """A new top-level run; ``fresh``: it replaces the run of its folder, whose logs
        (TensorBoard's event files) go."""

    def reopen(self, name: str, key: str | None) -> RunLog | None:
        """The run of ``key`` (:attr:`RunLog.key`) continued, as a resumed run continues
        its training; None when this backend has no such run to continue."""


_NOT_IN_A_NAME = re.compile(r"[^/\w.\- ]")


def metric_name(name: str) -> str:
    """``name`` (``recall@50``) as a name both backends accept and show alike
    (``recall_at_50``): MLflow refuses ``@``, and TensorBoard keeps any name as it is."""
    return _NOT_IN_A_NAME.sub("_", name.replace("@", "_at_"))


def param_values(settings: dict[str, Any]) -> dict[str, str]:
    """Resolved settings as parameter values: text as is, anything else as JSON (a list of
    settings, ``null`` for a setting left unset)."""
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in settings.items()
    }


EPOCH_NAMES = {
    "loss": "train/loss",
    "seconds": "train/epoch_seconds",
    "examples_per_second": "train/examples_per_second",
}
"""Names of an epoch record's own figures; its other figures are validation metrics."""


def epoch_metrics(record: dict[str, float]) -> tuple[dict[str, float], int]:
    """An epoch's record (:data:`~mirec.training.progress.EpochHook`'s) as metrics, and its
    step: the epoch's number."""
    metrics = {
        EPOCH_NAMES.get(key, f"valid/{metric_name(key)}"): float(value)
        for key, value in record.items()
        if key != "epoch"
    }
    return metrics, int(record["epoch"])


def result_metrics(result: RunResult) -> tuple[dict[str, float], int]:
    """A finished run's figures (its record's: test metrics, collapse, the diagnostics that
    are numbers, the best validation figures, how training went) as metrics, and the step
    they are logged at: the run's last epoch (0 for a re-evaluation)."""
    figures: dict[str, Any] = {f"test/{k}": v for k, v in result.test.items()}
    figures |= {f"best_valid/{k}": v for k, v in result.valid.items()}
    if isinstance(result, TrainedRun | Evaluation):
        figures["test/collapse"] = result.figures.collapse
        figures["test/users_per_second"] = result.figures.eval_users_per_second
        diagnostics = result.figures.diagnostics or {}
        figures |= {f"diagnostics/{k}": v for k, v in diagnostics.items()}
    step = 0
    if isinstance(result, TrainedRun | TrainedCTRRun):
        fit = result.fit
        figures |= {
            "fit/epochs": fit.epochs,
            "fit/best_epoch": fit.best_epoch,
            "fit/train_seconds": fit.train_seconds,
            "fit/train_examples_per_second": fit.train_examples_per_second,
        }
        step = fit.epochs
    metrics = {
        metric_name(key): float(value)
        for key, value in figures.items()
        # a diagnostic that is a table (k_confusion) or absent (single-interest collapse)
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    return metrics, step


def result_tags(result: RunResult) -> dict[str, str]:
    """What a finished run was run on (its header: dataset, sizes, device, version) and how
    its training stopped, as tags."""
    tags = {f"mirec.{key}": str(value) for key, value in result.header.to_dict().items()}
    if isinstance(result, TrainedRun | TrainedCTRRun):
        tags["mirec.stopped_by"] = result.fit.stopped_by
    return tags
