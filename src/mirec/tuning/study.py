"""``mirec tune``: a hyper-parameter search, one Optuna study in a database.

Each trial is one training run (:func:`mirec.runs.train_run`) in ``OUT/trials/NNNN``, its
settings drawn by a seeded TPE sampler from the search space (:mod:`mirec.tuning.space`)
over the model's settings and ``--set``. The objective is the run's best validation
Recall@50, never a test figure: the choice among trials is a fit to the validation users,
and the test users stay unseen by it. Each validation reports its figure to the study
through the run's epoch hook; a trial below the median of the earlier trials at the same
epoch is pruned there (Optuna's median rule).

The study lives in its storage (``sqlite:///OUT/study.db`` by default), so it outlives the
process: run again, ``mirec tune`` continues it until ``--trials`` trials have finished
(complete or pruned). A trial left running by a process that was killed is marked failed
when ``mirec tune`` starts again on the same ``OUT``: it is running in the storage, but no
process holds its run folder's lock any more. Its folder is removed and a new trial takes
its place. ``--workers W`` runs W processes of trials side by side on the same study; they
share it through the storage only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mirec.atomic import write_json_atomic
from mirec.config import SELECTION_METRIC, load_config
from mirec.core.config import Config
from mirec.core.extras import require
from mirec.core.layout import WEIGHTS_FILE
from mirec.errors import ConfigError, MirecError
from mirec.tuning.space import SearchSpace, parse_space, space_section

if TYPE_CHECKING:
    import optuna

    from mirec.results import TuningResult

OBJECTIVE = SELECTION_METRIC
"""What a trial is worth: its best validation Recall@50, as ``auto`` and early stopping
rank weights (the test figures of a trial's folder are not read)."""
TRIALS_DIR = "trials"
STUDY_DB = "study.db"
STUDY_FILE = "study.json"
"""In ``OUT``: the study (name and storage) whose trials ``OUT/trials`` holds."""
MAX_FAILURES_IN_A_ROW = 3
"""A worker stops after this many failed trials in a row: the space is likely broken
(every point diverges, say), and trying on would fail forever."""
SQLITE_WAIT_SECONDS = 60
"""How long a worker waits for SQLite's write lock held by another worker."""
Echo = Callable[[str], None]


@dataclass(frozen=True)
class TuneSpec:
    """What one ``mirec tune`` searches: everything its workers need to run trials."""

    model: str
    output_dir: Path
    trials: int
    dataset: str | None = None
    overrides: tuple[str, ...] = ()
    space_file: Path | None = None
    study_name: str | None = None
    storage: str | None = None
    workers: int = 1
    threads: int | None = None
    startup_trials: int = 5
    """Trials that finish before the median rule prunes (and that TPE draws at random)."""
    data_dir: Path | None = None

    @property
    def name(self) -> str:
        """The study's name: ``--study-name``, else the model's."""
        return self.study_name or self.model

    @property
    def storage_url(self) -> str:
        """``--storage``, else the SQLite file ``OUT/study.db``."""
        return self.storage or f"sqlite:///{(self.output_dir / STUDY_DB).resolve()}"

    def config(self, params: dict[str, Any] | None = None) -> Config:
        """The run of a trial with ``params``: the model, ``--dataset`` and ``--set``, then
        the trial's settings (``--set`` ones are not searched: :meth:`space`)."""
        return load_config(self.model, None, self.overrides, params, dataset=self.dataset)

    def space(self) -> SearchSpace:
        """The search space, every entry checked against this run's settings."""
        section, source = space_section(self.model, self.space_file)
        fixed = frozenset(key.partition("=")[0].strip() for key in self.overrides)
        return parse_space(section, source, self.config, fixed)

    def worker_args(self, worker: int, threads: int) -> list[str]:
        """The ``mirec`` arguments of worker process ``worker``: this search's own."""
        args = ["tune", "--worker", str(worker), "--model", self.model]
        args += ["--output-dir", str(self.output_dir), "--trials", str(self.trials)]
        args += ["--study-name", self.name, "--storage", self.storage_url]
        args += ["--threads", str(threads), "--startup-trials", str(self.startup_trials)]
        for option, value in (
            ("--dataset", self.dataset),
            ("--space", self.space_file),
            ("--data-dir", self.data_dir),
        ):
            if value is not None:
                args += [option, str(value)]
        for item in self.overrides:
            args += ["--set", item]
        return args


def check(spec: TuneSpec) -> SearchSpace:
    """The search refused in one line before any trial: a bad setting, space or folder."""
    if spec.study_name is not None and not spec.study_name.strip():
        raise ConfigError("--study-name: must not be empty (leave it out: the model's name)")
    config = spec.config()
    if config.task != "retrieval":
        raise ConfigError(
            f"mirec tune: task={config.task}; tuning ranks trials on validation Recall@50, "
            "a retrieval figure: tune a retrieval model"
        )
    from mirec.models.build import check_components  # torch: the components' registries

    check_components(config)
    space = spec.space()
    if not space:
        raise ConfigError(
            "mirec tune: every setting of the search space is fixed by --set; nothing to search"
        )
    out = spec.output_dir
    if out.exists() and not out.is_dir():
        raise MirecError(f"{out}: exists and is not a folder; choose a folder for the study")
    if (out / WEIGHTS_FILE).exists():
        raise MirecError(
            f"{out}: holds a trained model; a study writes its own metrics.json there: "
            "choose another output folder"
        )
    return space


def tune(spec: TuneSpec, echo: Echo) -> TuningResult:
    """Run the search of ``spec`` to its ``trials`` finished trials and write its results
    (:mod:`mirec.tuning.report`); returns what its ``metrics.json`` holds. ``OUT`` is
    locked meanwhile: one ``mirec tune`` at a time continues a study's trials there."""
    from mirec.run_folder import folder_lock
    from mirec.runs import prepare_for
    from mirec.tuning.report import write_results

    require("optuna", "mirec tune")
    check(spec)
    with folder_lock(spec.output_dir):
        _claim_output(spec)
        storage = open_storage(spec)
        study = open_study(spec, 0, storage)
        _check_identity(study, spec)
        for number in fail_interrupted(study, storage, spec):
            echo(f"trial {number}: was left running by a process that ended; marked failed")
        prepare_for(spec.config(), spec.data_dir)  # once: the workers read the cache
        failure = None
        try:
            if spec.workers == 1:
                run_trials(spec, 0, echo)
            else:
                _run_workers(spec, echo)
        except MirecError as err:
            failure = err
        result = write_results(study, spec)
        if failure is not None:
            raise failure
    return result


def open_storage(spec: TuneSpec) -> optuna.storages.RDBStorage:
    """The database of ``spec``'s study (``--storage``, else ``OUT/study.db``)."""
    optuna = require("optuna", "mirec tune")
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    url = spec.storage_url
    engine = {"connect_args": {"timeout": SQLITE_WAIT_SECONDS}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except ImportError as err:  # the URL's database driver
        raise ConfigError(f"--storage {shown_url(url)}: needs {err.name or err}") from None
    except Exception as err:  # SQLAlchemy's errors for a URL it cannot open
        raise ConfigError(f"--storage {shown_url(url)}: cannot open it ({err})") from None


def open_study(
    spec: TuneSpec, worker: int, storage: optuna.storages.RDBStorage | None = None
) -> optuna.Study:
    """The study of ``spec`` in its storage (created on first use), sampling with TPE from a
    seed of the run's ``seed``, the worker and the trials so far: another worker, or a
    search continued, draws other points than the first did."""
    optuna = require("optuna", "mirec tune")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # mirec prints each trial itself
    study = optuna.create_study(
        storage=storage or open_storage(spec),
        study_name=spec.name,
        direction="maximize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials),
    )
    seed = spec.config().seed + 1009 * worker + len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.startup_trials)
    return study


def shown_url(url: str) -> str:
    """A storage URL with its password hidden, fit for messages and reports."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _claim_output(spec: TuneSpec) -> None:
    """``OUT/trials`` holds the trials of one study: a second study's trial 0 would land in
    the first one's ``trials/0000``. The first start records the study; another refused."""
    path = spec.output_dir / STUDY_FILE
    mine = {"study_name": spec.name, "storage": shown_url(spec.storage_url)}
    if path.is_file():
        import json

        recorded = json.loads(path.read_text())
        if recorded != mine:
            raise ConfigError(
                f"{spec.output_dir}: holds the trials of study {recorded.get('study_name')!r} "
                f"in {recorded.get('storage')}; give the same --study-name and --storage to "
                "continue it, or another --output-dir"
            )
        return
    write_json_atomic(path, mine)


def _check_identity(study: optuna.Study, spec: TuneSpec) -> None:
    """A study tunes one model on one dataset: continuing it with another would rank
    trials that measure different things. Recorded on the study at its first start."""
    config = spec.config()
    mine = {"model": config.model, "dataset": config.dataset, "objective": f"valid {OBJECTIVE}"}
    recorded = study.user_attrs.get("mirec")
    if recorded is None:
        study.set_user_attr("mirec", mine)
    elif recorded != mine:
        raise ConfigError(
            f"study {spec.name!r} in {shown_url(spec.storage_url)}: tunes {recorded.get('model')}"
            f" on {recorded.get('dataset')}, not {mine['model']} on {mine['dataset']}; give "
            "another --study-name"
        )


def fail_interrupted(
    study: optuna.Study, storage: optuna.storages.RDBStorage, spec: TuneSpec
) -> list[int]:
    """Mark failed the trials of ``OUT`` that the storage has running but no process trains
    (nobody holds their run folder's lock: the process was killed); their folders go. The
    running trials of other machines or folders sharing the storage are left alone. Returns
    their numbers."""
    from optuna.trial import TrialState

    from mirec.run_folder import FolderInUse, folder_lock

    trials_dir = (spec.output_dir / TRIALS_DIR).resolve()
    study_id = storage.get_study_id_from_name(spec.name)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        folder = trial.user_attrs.get("folder")
        if trial.user_attrs.get("host") != socket.gethostname() or folder is None:
            continue
        if Path(folder).parent != trials_dir:
            continue
        try:
            with folder_lock(Path(folder)):
                pass
        except FolderInUse:
            continue  # a worker of an earlier start trains it still
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, "error", "interrupted: its process ended")
        study.tell(trial.number, state=TrialState.FAIL)
        shutil.rmtree(folder, ignore_errors=True)
        failed.append(trial.number)
    return failed


def run_trials(spec: TuneSpec, worker: int, echo: Echo) -> None:
    """One worker's share of the search: trials one after another until the study has
    ``spec.trials`` finished or running (other workers' count), each trial's state told to
    the storage whatever ends it."""
    from optuna.trial import TrialState

    study = open_study(spec, worker)
    space = spec.space()
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    failures = 0
    while len(study.get_trials(deepcopy=False, states=counted)) < spec.trials:
        trial = study.ask()
        try:
            state, value, params = _run_trial(spec, trial, space, worker)
        except MirecError as err:  # a point of the space that does not train
            trial.set_user_attr("error", str(err))
            study.tell(trial, state=TrialState.FAIL)
            echo(f"trial {trial.number}: failed: {err}")
            failures += 1
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise MirecError(
                    f"mirec tune: {failures} trials in a row failed, the last with: {err}"
                ) from None
            continue
        except BaseException as err:  # a bug, or Ctrl-C: the trial failed, the worker stops
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            study.tell(trial, state=TrialState.FAIL)
            raise
        failures = 0
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        echo(
            f"trial {trial.number}: {state.name.lower()}, valid {OBJECTIVE} {value:.4f} "
            f"({shown_params(params)})"
        )


def shown_value(value: Any) -> str:
    """A setting's value as the YAML of a config writes it, reals to 4 digits."""
    if isinstance(value, bool) or value is None:
        return "null" if value is None else str(value).lower()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def shown_params(params: dict[str, Any]) -> str:
    """A trial's settings on one line: ``lr=0.00123, embedding_dim=64``."""
    return ", ".join(f"{name}={shown_value(value)}" for name, value in params.items())


def _run_trial(
    spec: TuneSpec, trial: optuna.Trial, space: SearchSpace, worker: int
) -> tuple[Any, float, dict[str, Any]]:
    """Train ``trial``'s run, pruned at a validation where the study's pruner says so: its
    state (complete or pruned), its validation Recall@50 (a pruned one's at its last
    validation) and its settings."""
    from optuna.trial import TrialState

    from mirec.runs import train_run

    folder = spec.output_dir / TRIALS_DIR / f"{trial.number:04d}"
    # what finds this trial's folder, and its lock, if its process is killed
    trial.set_user_attr("folder", str(folder.resolve()))
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("worker", worker)
    params = {dimension.name: dimension.suggest(trial) for dimension in space}
    last: list[float] = []

    def prune(record: dict[str, float]) -> bool:
        if OBJECTIVE not in record:
            return False  # an epoch without validation
        last[:] = [record[OBJECTIVE]]
        trial.report(record[OBJECTIVE], step=int(record["epoch"]))
        return trial.should_prune()

    config = spec.config(params)
    # the whole run, kept with the trial: best.yaml is written from the storage, wherever
    # the trial's folder is
    trial.set_user_attr("config", config.to_dict())
    result = train_run(config, folder, data_dir=spec.data_dir, progress=False, on_epoch=prune)
    if result.fit.stopped_by == "hook":
        return TrialState.PRUNED, last[0], params
    return TrialState.COMPLETE, result.valid[OBJECTIVE], params


def _run_workers(spec: TuneSpec, echo: Echo) -> None:
    """``--workers W``: W processes of :func:`run_trials` (``mirec tune --worker I``), each
    with ``--threads`` threads (default: its share of the cores); a MirecError after all
    have ended when one failed."""
    from mirec.core.threads import OMP_ENV, usable_cores

    threads = spec.threads or max(1, usable_cores() // spec.workers)
    env = {**os.environ, OMP_ENV: str(threads), "MKL_NUM_THREADS": str(threads)}
    processes = [
        subprocess.Popen([sys.executable, "-m", "mirec", *spec.worker_args(i, threads)], env=env)
        for i in range(spec.workers)
    ]
    echo(f"{spec.workers} workers of {threads} threads each on study {spec.name!r}")
    try:
        codes = [process.wait() for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait()
    failed = [code for code in codes if code != 0]
    if failed:
        raise MirecError(
            f"mirec tune: {len(failed)} of {spec.workers} workers failed (exit codes "
            f"{', '.join(map(str, failed))}); the study keeps every finished trial: run the "
            "same command again to continue it"
        )
