"""Experiment tracking: a run's settings, epochs and figures in MLflow or TensorBoard
(``mirec train --track mlflow,tensorboard``, docs/tracking.md).

The room sits beside :mod:`mirec.runs`, which never imports it: a run knows nothing of
tracking, its caller passes :meth:`TrackedRun.on_epoch` as the run's epoch hook and logs
the record it returns (:meth:`TrackedRun.log_result`). A :class:`Tracker` starts the
top-level run of a command (one training, ``auto``'s choice, a grid); each run nests
children (``auto``'s candidates, a grid's cells) in every backend at once. The backends'
packages (the ``track`` extra) are imported only when a tracker is opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mirec.core.config import Config
from mirec.errors import ConfigError
from mirec.results import RunResult
from mirec.tracking.base import (
    Backend,
    RunLog,
    Status,
    epoch_metrics,
    param_values,
    result_metrics,
    result_tags,
)

BACKENDS = ("mlflow", "tensorboard")
"""What ``--track`` takes."""
DEFAULT_EXPERIMENT = "mirec"
"""The MLflow experiment of runs not given ``--experiment-name``."""
DATABASE_FILE = "mlflow.db"
"""The SQLite store MLflow tracks into without a tracking URI: beside the output folder."""
TENSORBOARD_DIR = "tensorboard"
"""The folder, inside the output folder, of the TensorBoard event files."""


class TrackedRun:
    """One run as every backend of a tracker logs it (none: nothing is logged)."""

    def __init__(self, logs: Sequence[RunLog]) -> None:
        self.logs = tuple(logs)

    def on_epoch(self, record: dict[str, float]) -> bool:
        """A finished epoch's record logged at its epoch: the run's epoch hook
        (:data:`~mirec.training.progress.EpochHook`), which never stops training."""
        metrics, step = epoch_metrics(record)
        for log in self.logs:
            log.log_metrics(metrics, step)
        return False

    def log_config(self, config: Config) -> None:
        """Every resolved setting of the run, as its parameters."""
        params = param_values(config.to_dict())
        for log in self.logs:
            log.log_params(params)

    def log_result(self, result: RunResult, folder: Path) -> None:
        """The finished run's record (test figures, diagnostics, how it trained) and its
        model folder."""
        metrics, step = result_metrics(result)
        tags = result_tags(result)
        for log in self.logs:
            log.log_metrics(metrics, step)
            log.set_tags(tags)
            log.log_folder(folder)

    def tag(self, tags: dict[str, str]) -> None:
        for log in self.logs:
            log.set_tags(tags)

    @contextmanager
    def child(self, name: str, config: Config | None = None) -> Iterator[TrackedRun]:
        """A run nested in this one, its settings logged, ended as the block ends."""
        with _tracked([log.child(name) for log in self.logs], config) as run:
            yield run


UNTRACKED = TrackedRun(())
"""A run that logs nothing: the parent of runs whose command tracks nothing."""


class Tracker:
    """Where a command's runs are tracked: its backends (none: nothing is)."""

    def __init__(self, backends: Sequence[Backend] = ()) -> None:
        self.backends = tuple(backends)

    @contextmanager
    def run(self, name: str, config: Config | None = None) -> Iterator[TrackedRun]:
        """A top-level run, its settings logged, ended as the block ends: FINISHED, or
        FAILED (KILLED on Ctrl-C) when the block raises."""
        with _tracked([backend.start(name) for backend in self.backends], config) as run:
            yield run


NO_TRACKING = Tracker()


@contextmanager
def _tracked(logs: list[RunLog], config: Config | None) -> Iterator[TrackedRun]:
    run = TrackedRun(logs)
    try:
        if config is not None:
            run.log_config(config)
        yield run
    except KeyboardInterrupt:
        _end(logs, "KILLED")
        raise
    except BaseException:
        _end(logs, "FAILED")
        raise
    _end(logs, "FINISHED")


def _end(logs: list[RunLog], status: Status) -> None:
    for log in logs:
        log.end(status)


def backend_names(
    values: Sequence[str], tracking_uri: str | None = None, experiment_name: str | None = None
) -> tuple[str, ...]:
    """``--track`` values (repeated, or comma lists) as backend names, each once, checked
    with the options that go with them: a ConfigError names a value that is not a backend,
    and MLflow's options given without it."""
    names: list[str] = []
    for value in values:
        for name in (part.strip() for part in value.split(",")):
            if name not in BACKENDS:
                raise ConfigError(
                    f"--track {value!r}: expected {' or '.join(BACKENDS)} (repeat --track, or "
                    "give a comma list)"
                )
            if name not in names:
                names.append(name)
    for option, given in (("--tracking-uri", tracking_uri), ("--experiment-name", experiment_name)):
        if given is not None and "mlflow" not in names:
            raise ConfigError(f"{option}: goes with --track mlflow")
    for option, given in (("--tracking-uri", tracking_uri), ("--experiment-name", experiment_name)):
        if given is not None and not given.strip():
            raise ConfigError(f"{option}: must not be empty (leave it out for the default)")
    return tuple(names)


def open_tracker(
    names: Sequence[str],
    output_dir: Path,
    tracking_uri: str | None = None,
    experiment_name: str | None = None,
) -> Tracker:
    """A tracker of the backends ``names`` (:func:`backend_names`) for the runs of one
    command writing ``output_dir``, connected before anything trains: a missing extra or
    a store that cannot be used is refused in one line.

    MLflow tracks into ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite
    database beside ``output_dir`` (:data:`DATABASE_FILE` in its parent folder, so the
    runs of one folder of runs compare in one place), under the experiment
    ``experiment_name`` (:data:`DEFAULT_EXPERIMENT`). TensorBoard writes its event files in
    ``output_dir/tensorboard``, one subfolder per nested run."""
    backends: list[Backend] = []
    for name in names:
        if name == "mlflow":
            from mirec.tracking.mlflow_runs import MlflowBackend

            uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or _database(output_dir)
            backends.append(MlflowBackend.connect(uri, experiment_name or DEFAULT_EXPERIMENT))
        else:
            from mirec.tracking.tensorboard_runs import TensorBoardBackend

            backends.append(TensorBoardBackend(output_dir / TENSORBOARD_DIR))
    return Tracker(backends)


def _database(output_dir: Path) -> str:
    """The default tracking URI: :data:`DATABASE_FILE` in ``output_dir``'s parent."""
    return f"sqlite:///{(output_dir.resolve().parent / DATABASE_FILE).as_posix()}"
