"""`mirec tune`: the Optuna study in its SQLite file, a search killed and continued, workers
side by side, pruning through the epoch hook, best.yaml trained again, and bad spaces."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from mirec.config import load_config
from mirec.tuning.study import STUDY_DB, TuneSpec

DATA = "synthetic:n_users=300,n_items=200,seed=3"
TINY = ("--set", "embedding_dim=8", "--set", "maxlen=10")
SPACE = "search:\n  lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n  num_interests: [2, 4]\n"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def tune_args(out: Path, space: Path, trials: int, *more: str) -> list[str]:
    return ["tune", "--model", "comirec-sa", "--dataset", DATA, "--output-dir", str(out),
            "--trials", str(trials), "--space", str(space), *TINY, *more]  # fmt: skip


def stored(out: Path, name: str = "comirec-sa") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / STUDY_DB}")


def validations_of_trial_0(db: Path) -> int:
    """Trial 0's validations so far, read without writing: opening an Optuna storage
    creates its tables, which would race the search creating them."""
    if not db.is_file():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        try:
            query = ("SELECT COUNT(*) FROM trial_intermediate_values JOIN trials "
                     "USING (trial_id) WHERE trials.number = 0")  # fmt: skip
            return connection.execute(query).fetchone()[0]
        except sqlite3.OperationalError:  # no tables yet, or the search is writing
            return 0


@pytest.fixture
def space(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def test_a_search_stores_its_trials_and_its_best_trains_again(mirec_main, tmp_path, space):
    out = tmp_path / "study"
    code, stdout, err = mirec_main(*tune_args(out, space, 3, "--set", "max_epochs=2"))
    assert code == 0, err
    study = stored(out)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert {t.params["num_interests"] for t in study.trials} <= {2, 4}
    assert all(1e-3 <= t.params["lr"] <= 1e-2 for t in study.trials)
    for trial in study.trials:  # each trial a run folder; its value its validation figure
        run = json.loads((out / "trials" / f"{trial.number:04d}" / "metrics.json").read_text())
        assert trial.value == run["valid"]["recall@50"]
        assert run["config"]["lr"] == trial.params["lr"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_trial"] == study.best_trial.number
    assert metrics["best_value"] == study.best_value == max(t.value for t in study.trials)
    assert metrics["best_params"] == study.best_params
    assert metrics["states"] == {"COMPLETE": 3} and metrics["objective"] == "valid recall@50"
    report = (out / "report.md").read_text()
    assert all(f"| {n} | complete | {t.value:.4f} |" in report for n, t in enumerate(study.trials))
    for plot in ("history.png", "importance.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG") and f"({plot})" in report
    assert f"best: trial {study.best_trial.number}" in stdout

    again = tmp_path / "again"
    code, _, err = mirec_main("train", "--config", str(out / "best.yaml"), "--output-dir",
                              str(again), "--quiet")  # fmt: skip
    assert code == 0, err
    retrained = json.loads((again / "metrics.json").read_text())
    assert retrained["valid"]["recall@50"] == study.best_value
    assert retrained["config"]["lr"] == study.best_params["lr"]


def test_a_killed_search_run_again_continues_the_same_study(mirec_main, tmp_path, space):
    out = tmp_path / "study"
    args = tune_args(out, space, 2, "--set", "max_epochs=30", "--set", "patience=100")
    process = subprocess.Popen([sys.executable, "-m", "mirec", *args], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 240
    while validations_of_trial_0(out / STUDY_DB) < 2:  # until trial 0 is mid-way
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "trial 0 never reached its second validation"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / STUDY_DB}")
    study_id = storage.get_study_id_from_name("comirec-sa")
    assert stored(out).trials[0].state == TrialState.RUNNING  # as the kill left it
    assert (out / "trials" / "0000").is_dir()

    code, stdout, err = mirec_main(*args)
    assert code == 0, err
    assert "trial 0: was left running by a process that ended; marked failed" in stdout
    assert storage.get_study_id_from_name("comirec-sa") == study_id
    trials = stored(out).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert "interrupted" in trials[0].user_attrs["error"]
    assert not (out / "trials" / "0000").exists()
    assert json.loads((out / "metrics.json").read_text())["states"] == {"COMPLETE": 2, "FAIL": 1}


def test_two_workers_run_trials_side_by_side(mirec_main, tmp_path, space):
    out = tmp_path / "study"
    more = ("--set", "max_epochs=30", "--set", "patience=100", "--workers", "2", "--threads", "1")
    code, stdout, err = mirec_main(*tune_args(out, space, 2, *more))
    assert code == 0, err
    assert "2 workers of 1 threads each" in stdout
    trials = stored(out).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    first, second = trials
    # each began before the other ended: they trained at the same time
    assert first.datetime_start < second.datetime_complete
    assert second.datetime_start < first.datetime_complete


def test_a_trial_below_the_median_is_pruned_through_the_epoch_hook(mirec_main, tmp_path, space):
    out = tmp_path / "study"
    out.mkdir()
    study = optuna.create_study(
        storage=f"sqlite:///{out / STUDY_DB}", study_name="comirec-sa", direction="maximize"
    )
    # an earlier trial that scored a perfect Recall@50 at every epoch: the median to beat
    study.add_trial(
        optuna.trial.create_trial(value=1.0, intermediate_values={1: 1.0, 2: 1.0, 3: 1.0})
    )
    code, stdout, err = mirec_main(
        *tune_args(out, space, 2, "--set", "max_epochs=3", "--startup-trials", "1")
    )
    assert code == 0, err
    pruned = stored(out).trials[1]
    assert pruned.state == TrialState.PRUNED and list(pruned.intermediate_values) == [1]
    run = json.loads((out / "trials" / "0001" / "metrics.json").read_text())
    assert run["stopped_by"] == "hook" and run["epochs"] == 1
    assert "trial 1: pruned" in stdout


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("lrr: [0.1]", "search.lrr: unknown setting"),
        ("lr: {low: 0.1, high: 0.01}", "search.lr: low (0.1) must be below high (0.01)"),
        ("embedding_dim: {low: 0.5, high: 8}", "search.embedding_dim: low: expected an integer"),
        ("dropout: {low: 0.0, high: 1.5}", "search.dropout: setting dropout=1.5"),
        ("lr: {low: 0, high: 0.1, log: true}", "search.lr: a log range needs low > 0"),
        ("dataset: [ml-1m]", "search.dataset: not searchable"),
        ("extractor: {low: 1, high: 2}", "search.extractor: not a number setting"),
        ("lr: 0.1", "search.lr: expected a list of choices or a range"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_file_and_entry(mirec_main, tmp_path, entry, fragment):
    path = tmp_path / "space.yaml"
    path.write_text(f"search:\n  {entry}\n")
    code, _, err = mirec_main(*tune_args(tmp_path / "study", path, 1))
    assert code == 2
    assert err.startswith(f"mirec: error: {path}: {fragment}") and err.count("\n") == 1, err
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_study_name_is_refused_before_any_trial(mirec_main, tmp_path, space, name):
    code, _, err = mirec_main(*tune_args(tmp_path / "study", space, 1), "--study-name", name)
    assert (code, err) == (2, "mirec: error: --study-name: must not be empty (leave it out: "
                              "the model's name)\n")  # fmt: skip
    assert not (tmp_path / "study").exists()


def test_a_bad_space_in_a_real_process_exits_2_without_traceback(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("search:\n  num_interests: [2, 0]\n")
    result = subprocess.run([sys.executable, "-m", "mirec", *tune_args(tmp_path / "s", path, 1)],
                            capture_output=True, text=True, env=ENV, timeout=300)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"mirec: error: {path}: search.num_interests: setting num_interests=0: must be an "
        "integer >= 1"
    ]


def test_without_optuna_tune_names_the_extra_in_one_line(tmp_path, space):
    runner = (
        "import sys\nsys.modules['optuna'] = None\nsys.argv = ['mirec', *sys.argv[1:]]\n"
        "from mirec.cli.main import main\nmain()\n"
    )
    result = subprocess.run([sys.executable, "-c", runner, *tune_args(tmp_path / "s", space, 1)],
                            capture_output=True, text=True, env=ENV, timeout=300)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "mirec: error: mirec tune needs the tune extra: pip install 'mirec[tune]' "
        "(no module named 'optuna')\n"
    )


@pytest.mark.parametrize(
    "model", ["sasrec", "comirec-sa", "comirec-sa-transformer", "remi-plain", "mind", "comirec-dr"]
)
def test_a_published_space_parses_and_leaves_the_settings_alone(model, tmp_path):
    space = TuneSpec(model, tmp_path, 1).space()
    assert {"lr", "embedding_dim"} <= {d.name for d in space}
    assert TuneSpec(model, tmp_path, 1, overrides=("lr=0.01",)).space()[0].name != "lr"
    settings = tmp_path / "with-search.yaml"  # a config file may carry a search section too
    settings.write_text(f"lr: 0.005\n{SPACE}")
    assert load_config(model, settings).lr == 0.005
