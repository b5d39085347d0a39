"""Experiment tracking: a run's settings, epochs and figures in MLflow or TensorBoard
(``mirec train --track mlflow,tensorboard``, docs/tracking.md).

The room sits beside :mod:`mirec.runs`, which never imports it: a run knows nothing of
tracking, its caller passes :meth:`TrackedRun.on_epoch` as the run's epoch hook and logs
the record it returns (:meth:`TrackedRun.log_result`). A :class:`Tracker` starts the
top-level run of a command (one training, ``auto``'s choice, a grid); each run nests
children (``auto``'s candidates, a grid's cells) in every backend at once. The backends'
packages (the ``track`` extra) are imported only when a tracker is opened.

A run tied to a run folder (``mirec train`` of one model) keeps its MLflow run id in the
folder's staging area (:data:`TRACKING_FILE`), so that ``--resume`` of the unfinished run
continues the same tracked run; a run that replaces the folder's (``--overwrite``)
replaces its TensorBoard files too, once it trains.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mirec.atomic import write_json_atomic
from mirec.core.config import Config
from mirec.errors import ConfigError
from mirec.results import RunResult
from mirec.run_folder import STAGING_DIR, planned_claim
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
TRACKING_FILE = "tracking.json"
"""In an unfinished run's staging folder: its tracked runs' keys by backend
(``{"mlflow": RUN_ID}``), which ``--resume`` reopens."""
_CONTINUED = ("continue", "commit")
""":func:`~mirec.run_folder.planned_claim`'s decisions that carry on the staged run."""


class TrackedRun:
    """One run as every backend of a tracker logs it (none: nothing is logged).

    ``keys_to``: the staging folder of the run folder it trains in, where its first epoch
    writes ``keys`` (:data:`TRACKING_FILE`): the staging folder is this run's only once
    the run has claimed it, which it has by its first epoch."""

    def __init__(
        self,
        logs: Sequence[RunLog],
        keys_to: Path | None = None,
        keys: dict[str, str] | None = None,
    ) -> None:
        self.logs = tuple(logs)
        self._keys_to = keys_to
        self._keys = keys or {}

    def on_epoch(self, record: dict[str, float]) -> bool:
        """A finished epoch's record logged at its epoch: the run's epoch hook
        (:data:`~mirec.training.progress.EpochHook`), which never stops training."""
        metrics, step = epoch_metrics(record)
        for log in self.logs:
            log.log_metrics(metrics, step)
        if self._keys_to is not None and self._keys and self._keys_to.is_dir():
            write_json_atomic(self._keys_to / TRACKING_FILE, self._keys)
            self._keys_to = None  # once: the keys do not change
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
    def run(
        self,
        name: str,
        config: Config | None = None,
        *,
        folder: Path | None = None,
        resume: bool = False,
        overwrite: bool = False,
    ) -> Iterator[TrackedRun]:
        """A top-level run, its settings logged, ended as the block ends: FINISHED, or
        FAILED (KILLED on Ctrl-C) when the block raises.

        With ``folder``, the run folder the block trains ``config`` into (``resume`` and
        ``overwrite`` as that run is given them): a run that will continue the folder's
        unfinished run continues the tracked runs the unfinished one started (their keys
        in its staging folder, :data:`TRACKING_FILE`), and one that will start anew
        replaces the folder's TensorBoard run (the old run's event files go once it
        trains). ``folder`` without ``config``: ``auto``'s run, whose candidates all
        train anew with ``overwrite`` alone."""
        decision = None
        if folder is not None and self.backends:
            if config is not None:
                decision = planned_claim(folder, config, resume=resume, overwrite=overwrite)
            elif overwrite and not resume:
                decision = "new"
        staging = None if folder is None else folder / STAGING_DIR
        keys = _read_keys(staging) if staging is not None and decision in _CONTINUED else {}
        logs: list[RunLog] = []
        for backend in self.backends:
            log = None
            if decision in _CONTINUED:
                log = backend.reopen(name, keys.get(backend.name))
            logs.append(log or backend.start(name, fresh=decision == "new"))
        # a run that trains (new, or continued) keeps its keys for a later --resume; auto's
        # own run trains nothing (its candidates are nested runs)
        keys_to = staging if config is not None and decision in ("new", "continue") else None
        kept = {
            backend.name: log.key
            for backend, log in zip(self.backends, logs, strict=True)
            if log.key is not None
        }
        with _tracked(logs, config, keys_to, kept) as run:
            yield run


NO_TRACKING = Tracker()


@contextmanager
def _tracked(
    logs: list[RunLog],
    config: Config | None,
    keys_to: Path | None = None,
    keys: dict[str, str] | None = None,
) -> Iterator[TrackedRun]:
    run = TrackedRun(logs, keys_to, keys)
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


def _read_keys(staging: Path) -> dict[str, str]:
    """:data:`TRACKING_FILE`'s keys; none when the file is missing or unreadable (the
    resumed run is then tracked as a new one rather than refused)."""
    try:
        keys = json.loads((staging / TRACKING_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(keys, dict):
        return {}
    return {name: key for name, key in keys.items() if isinstance(key, str)}


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
