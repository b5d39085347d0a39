"""Tracking into MLflow, through its client (``MlflowClient``: no process-wide active run,
so nested runs and several backends never step on each other).

A nested run is MLflow's own: a run whose ``mlflow.parentRunId`` tag names its parent,
which the UI shows folded under it. The model folder's files are the run's artifacts
(under ``model/``) up to :data:`ARTIFACT_LIMIT_BYTES`; a larger folder is too big to copy
on every run, and its path, always tagged, says where it is.

A resumed run reopens its MLflow run (:meth:`MlflowBackend.reopen`): back to RUNNING, its
later epochs appended at their steps. MLflow refuses to change a parameter, so settings a
resume may change (the inference-time ones) are tagged ``mirec.resumed_with.NAME`` instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from mirec.core.extras import require
from mirec.errors import ConfigError
from mirec.run_folder import RUN_FILES
from mirec.tracking.base import Status

ARTIFACT_LIMIT_BYTES = 100 * 2**20
"""The largest model folder copied into MLflow's artifact store."""
BATCH = 100
"""Parameters or tags per request: MLflow's limit."""
ARTIFACTS_DIR = "mlartifacts"
"""Beside a SQLite store, where a new experiment keeps its artifacts (MLflow's own default
is ``./mlruns`` in whatever folder the command ran from)."""


class MlflowBackend:
    """An MLflow experiment of a tracking store."""

    name = "mlflow"

    def __init__(self, client: Any, experiment_id: str) -> None:
        self.client, self.experiment_id = client, experiment_id

    @classmethod
    def connect(cls, uri: str, experiment_name: str) -> MlflowBackend:
        """The store at ``uri`` and its experiment ``experiment_name`` (made when new);
        a store that cannot be reached or used is a ConfigError naming the URI."""
        require("mlflow", "--track mlflow")
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        artifacts = None
        if uri.startswith("sqlite:///"):
            database = Path(uri.removeprefix("sqlite:///"))
            database.parent.mkdir(parents=True, exist_ok=True)
            artifacts = (database.parent / ARTIFACTS_DIR).resolve().as_uri()
        try:
            client = MlflowClient(tracking_uri=uri)
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is None:
                experiment_id = client.create_experiment(
                    experiment_name, artifact_location=artifacts
                )
            else:
                experiment_id = experiment.experiment_id
        except (MlflowException, OSError, ValueError) as err:
            # an unknown scheme, a server that does not answer, a database it cannot open
            reason = " ".join(str(err).split())[:300]
            raise ConfigError(f"--tracking-uri {uri}: MLflow cannot track there: {reason}") from err
        return cls(client, experiment_id)

    def start(self, name: str, fresh: bool = False) -> MlflowRun:
        """A new run (``fresh`` or not: the runs it replaces stay in the store, as
        history)."""
        return MlflowRun.create(self.client, self.experiment_id, name, parent=None)

    def reopen(self, name: str, key: str | None) -> MlflowRun | None:
        """The run ``key`` of this experiment, RUNNING again; None when there is none (the
        store or experiment is another than the one the run started in, or the run was
        deleted): the resumed run is then tracked as a new one."""
        from mlflow.exceptions import MlflowException

        if key is None:
            return None
        try:
            run = self.client.get_run(key)
            if run.info.experiment_id != self.experiment_id:
                return None
            if run.info.lifecycle_stage != "active":
                return None
            self.client.update_run(key, status="RUNNING")
        except MlflowException:
            return None
        return MlflowRun(self.client, self.experiment_id, key, dict(run.data.params))


class MlflowRun:
    """One MLflow run; ``params``: those it holds already (a reopened run's)."""

    def __init__(
        self, client: Any, experiment_id: str, run_id: str, params: dict[str, str] | None = None
    ) -> None:
        self.client, self.experiment_id, self.run_id = client, experiment_id, run_id
        self._params = dict(params or {})

    @property
    def key(self) -> str:
        return self.run_id

    @classmethod
    def create(cls, client: Any, experiment_id: str, name: str, parent: str | None) -> MlflowRun:
        tags = {} if parent is None else {"mlflow.parentRunId": parent}
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        return cls(client, experiment_id, run.info.run_id)

    def log_params(self, params: dict[str, str]) -> None:
        """``params``, but those the run holds already: the same value is there, and
        MLflow refuses another (a resume's inference-time setting), which is a tag."""
        from mlflow.entities import Param

        new = {k: v for k, v in params.items() if k not in self._params}
        changed = {
            f"mirec.resumed_with.{k}": v
            for k, v in params.items()
            if k in self._params and self._params[k] != v
        }
        for chunk in _chunks(new.items()):
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in chunk])
        self._params.update(new)
        if changed:
            self.set_tags(changed)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for chunk in _chunks(metrics.items()):
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in chunk])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        for chunk in _chunks(tags.items()):
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in chunk])

    def log_folder(self, folder: Path) -> None:
        """The model folder's files as the run's ``model/`` artifacts, up to
        :data:`ARTIFACT_LIMIT_BYTES` (module docstring); its path as a tag."""
        files = [folder / name for name in RUN_FILES if (folder / name).is_file()]
        size = sum(file.stat().st_size for file in files)
        copied = size <= ARTIFACT_LIMIT_BYTES
        self.set_tags(
            {
                "mirec.model_folder": str(folder.resolve()),
                "mirec.model_artifacts": "model/" if copied else f"not copied: {size} bytes",
            }
        )
        if copied:
            for file in files:
                self.client.log_artifact(self.run_id, str(file), artifact_path="model")

    def child(self, name: str) -> MlflowRun:
        return MlflowRun.create(self.client, self.experiment_id, name, parent=self.run_id)

    def end(self, status: Status) -> None:
        self.client.set_terminated(self.run_id, status=status)


def _chunks(items: Iterable[tuple[str, Any]]) -> Iterator[list[tuple[str, Any]]]:
    """``items`` in lists of at most :data:`BATCH`."""
    iterator = iter(items)
    while chunk := list(islice(iterator, BATCH)):
        yield chunk
