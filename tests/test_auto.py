"""``--model auto``, the retrieval default: every candidate trains, the best on validation
Recall@50 becomes the run's model, and metrics.json says which and why."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from mirec.auto import choose
from mirec.cli.main import app
from mirec.config import AUTO_CANDIDATES, load_config, load_plan
from mirec.errors import ConfigError, MirecError
from mirec.experiments.grid import load_experiment
from mirec.experiments.report import write_report
from mirec.experiments.runner import cell_result, run_experiment
from mirec.recommender import Recommender

TINY = "synthetic:n_users=200,n_items=80,n_clusters=4"
# small enough that three candidates train in seconds
SMALL = ["max_epochs=2", "embedding_dim=16", "batch_size=64"]


def test_choose_takes_the_highest_and_the_earlier_on_a_tie():
    assert choose({"a": 0.2, "b": 0.3, "c": 0.1}) == "b"
    assert choose({"a": 0.3, "b": 0.3, "c": 0.1}) == "a"
    assert choose({"a": 0.1, "b": 0.2, "c": 0.2}) == "b"


def test_auto_is_the_retrieval_default_and_ctr_keeps_one_model():
    default = load_plan()
    assert [c.model for c in default.candidates] == list(AUTO_CANDIDATES)
    assert default.name == "auto" and default.selected_on == "recall@50"
    seeded = load_plan("auto", overrides=["seed=3"]).candidates
    assert [c.model for c in seeded] == list(AUTO_CANDIDATES)
    assert all(c.seed == 3 for c in load_plan(overrides=["seed=3"]).candidates)
    ctr = load_plan(task="ctr")
    assert [c.model for c in ctr.candidates] == ["comirec-sa"] and ctr.selected_on is None
    one = load_plan("sasrec")
    assert [c.model for c in one.candidates] == ["sasrec"] and one.name == "sasrec"
    with pytest.raises(ConfigError, match="name one model"):
        load_config("auto")
    with pytest.raises(ConfigError, match="picks among retrieval models"):
        load_plan("auto", task="ctr")


def test_train_without_model_trains_every_candidate_and_keeps_the_best_on_validation(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--dataset", TINY, "--output-dir", str(out), "--quiet"]
    result = CliRunner().invoke(app, [*args, *[a for s in SMALL for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    record = metrics["auto"]
    assert list(record["candidates"]) == list(AUTO_CANDIDATES)
    valid = {}
    for name, candidate in record["candidates"].items():
        own = json.loads((out / candidate["folder"] / "metrics.json").read_text())
        assert own["model"] == name and own["valid"] == candidate["valid"]
        valid[name] = own["valid"]["recall@50"]
    # the choice is the validation maximum, and the folder is that candidate's run
    assert record["chosen"] == choose(valid)
    chosen = json.loads((out / "candidates" / record["chosen"] / "metrics.json").read_text())
    assert metrics["model"] == record["chosen"] and metrics["test"] == chosen["test"]
    assert yaml.safe_load((out / "config.yaml").read_text())["model"] == record["chosen"]
    assert record["train_seconds"] == pytest.approx(
        sum(c["train_seconds"] for c in record["candidates"].values()), abs=0.01
    )
    assert f"default: {record['chosen']}, the highest validation Recall@50" in result.output
    assert "<- chosen" in result.output
    # the folder is a model: it loads and recommends without the data
    rec = Recommender.load(out)
    assert rec.info.name == record["chosen"]
    assert len(rec.recommend([1, 2, 3], n=5)) == 5

    # a second run into the folder is refused; --resume keeps every finished candidate
    again = CliRunner().invoke(app, args)
    assert isinstance(again.exception, MirecError) and "holds a run" in str(again.exception)
    resumed = CliRunner().invoke(
        app, [*args, "--resume", *[a for s in SMALL for a in ("--set", s)]]
    )
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_an_experiment_row_of_auto_reuses_its_candidates_rows(tmp_path):
    spec = {
        "name": "default",
        "report": str(tmp_path / "out" / "report.md"),
        "runs_dir": str(tmp_path / "runs"),
        "datasets": [TINY],
        "models": ["sasrec", {"label": "default", "model": "auto"}],
        "settings": {k: int(v) for k, v in (s.split("=") for s in SMALL)},
        "seeds": [1],
    }
    path = tmp_path / "default.yaml"
    path.write_text(yaml.safe_dump(spec))
    experiment = load_experiment(path)
    sasrec, auto = experiment.cells
    # sasrec's row is auto's candidate: one folder, one training
    assert auto.candidates[0] == (sasrec.config, sasrec.run_dir)
    others = [folder for _, folder in auto.candidates[1:]]
    assert all(f.parent.parent == auto.run_dir.parent / "candidates" for f in others)
    assert run_experiment(experiment, progress=False, echo=lambda _: None) == []
    metrics = cell_result(auto)
    assert metrics is not None and metrics.auto.candidates["sasrec"]["folder"] == (
        "../../sasrec/seed-1"
    )
    write_report(experiment, "mirec experiment default.yaml")
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"default (chose {metrics.auto.chosen} on 1 of 1 seeds)" in report
    # a candidate's changed setting makes the auto cell stale
    spec["settings"]["max_epochs"] = 3
    path.write_text(yaml.safe_dump(spec))
    assert cell_result(load_experiment(path).cells[1]) is None


def test_auto_takes_no_grid(tmp_path):
    spec = {
        "name": "x",
        "datasets": [TINY],
        "models": ["auto"],
        "grid": {"num_interests": [1, 2]},
    }
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="takes no grid"):
        load_experiment(path)
