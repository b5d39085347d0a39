"""Experiment tracking (``--track mlflow,tensorboard``): what a run, ``auto``'s choice and a
grid log, read back with MLflow's own client and TensorBoard's own event reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import user_error
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mirec.auto import train_plan
from mirec.config import TrainingPlan, load_config

DATASET = "synthetic:n_users=300,n_items=200,seed=3"
TINY = ["max_epochs=2", "embedding_dim=8", "maxlen=10"]


def settings(*extra: str) -> list[str]:
    return sets(*TINY, *extra)


def sets(*settings: str) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


def scalars(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def steps(events: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in events.Scalars(tag)]


def test_a_tracked_train_reads_back_in_mlflow_and_tensorboard(tmp_path, mirec_main, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "runs" / "sa"
    code, _, stderr = mirec_main(
        "train", "--dataset", DATASET, "--model", "comirec-sa", *settings(),
        "--output-dir", str(out), "--quiet", "--track", "mlflow", "--track", "tensorboard",
    )  # fmt: skip
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())

    # the default store: a SQLite database beside the output folder
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mirec")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "sa" and run.info.status == "FINISHED"
    assert run.data.params == {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in metrics["config"].items()
    }
    assert run.data.params["max_epochs"] == "2" and run.data.params["model"] == "comirec-sa"
    for name in ("train/loss", "valid/recall_at_50", "train/examples_per_second"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2]
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert losses == pytest.approx([epoch["loss"] for epoch in metrics["history"]])
    assert run.data.metrics["test/recall_at_50"] == pytest.approx(metrics["test"]["recall@50"])
    assert run.data.metrics["test/collapse"] == pytest.approx(metrics["collapse"])
    assert run.data.metrics["diagnostics/effective_interests"] == pytest.approx(
        metrics["diagnostics"]["effective_interests"]
    )
    assert run.data.tags["mirec.model_folder"] == str(out.resolve())
    (folder,) = client.list_artifacts(run.info.run_id)
    files = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, folder.path)}
    assert folder.path == "model" and {"model.safetensors", "metrics.json"} <= files

    events = scalars(out / "tensorboard")
    assert {"train/loss", "valid/recall_at_50", "test/recall_at_50"} <= set(
        events.Tags()["scalars"]
    )
    assert steps(events, "train/loss") == steps(events, "valid/recall_at_50") == [1, 2]
    (test_recall,) = events.Scalars("test/recall_at_50")
    assert test_recall.step == 2
    assert test_recall.value == pytest.approx(metrics["test"]["recall@50"], rel=1e-6)
    (text,) = events.Tensors("settings/text_summary")  # the settings, as a Markdown table
    assert b"| max_epochs | 2 |" in text.tensor_proto.string_val[0]


def test_auto_logs_its_candidates_as_child_runs_and_tags_the_chosen_one(tmp_path):
    from mirec.tracking import open_tracker

    out, database = tmp_path / "auto", f"sqlite:///{tmp_path / 'store.db'}"
    candidates = tuple(
        load_config(name, overrides=TINY, dataset=DATASET) for name in ("gru4rec", "sasrec")
    )
    tracker = open_tracker(("mlflow", "tensorboard"), out, database, "auto-test")
    result = train_plan(TrainingPlan(candidates, "recall@50"), out, progress=False,
                        echo=lambda _: None, tracker=tracker)  # fmt: skip
    chosen = result.auto.chosen

    client = MlflowClient(database)
    experiment = client.get_experiment_by_name("auto-test")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if r is not parent}
    assert set(children) == {"gru4rec", "sasrec"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent.info.run_id}
    assert parent.data.tags["mirec.chosen"] == chosen
    assert {name: r.data.tags["mirec.chosen"] for name, r in children.items()} == {
        name: str(name == chosen).lower() for name in children
    }
    assert parent.data.params["model"] == chosen
    assert parent.data.metrics["test/recall_at_50"] == pytest.approx(result.test["recall@50"])
    for name, child in children.items():
        history = client.get_metric_history(child.info.run_id, "valid/recall_at_50")
        assert [m.step for m in history] == [1, 2]
        assert child.data.params["model"] == name
        events = scalars(out / "tensorboard" / name)
        assert steps(events, "train/loss") == [1, 2]

    # --overwrite: every candidate trains again, and TensorBoard shows the new runs alone
    tracker = open_tracker(("tensorboard",), out)
    train_plan(TrainingPlan(candidates, "recall@50"), out, progress=False, overwrite=True,
               echo=lambda _: None, tracker=tracker)  # fmt: skip
    for name in children:
        assert steps(scalars(out / "tensorboard" / name), "train/loss") == [1, 2]
    (status,) = scalars(out / "tensorboard").Tensors("status/text_summary")
    assert status.tensor_proto.string_val[0] == b"FINISHED"


def test_a_grid_logs_each_cell_as_a_child_of_the_grid_run(tmp_path, mirec_main):
    spec = {
        "name": "tiny-grid",
        "report": str(tmp_path / "out" / "report.md"),
        "runs_dir": str(tmp_path / "runs"),
        "datasets": [DATASET],
        "models": ["most-popular", "youtube-dnn"],
        "settings": {"max_epochs": 2, "embedding_dim": 8, "maxlen": 10},
        "seeds": [1],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    database = f"sqlite:///{tmp_path / 'store.db'}"
    code, _, stderr = mirec_main(
        "experiment", str(path), "--quiet", "--track", "mlflow,tensorboard",
        "--tracking-uri", database,
    )  # fmt: skip
    assert code == 0, stderr

    client = MlflowClient(database)
    runs = client.search_runs([client.get_experiment_by_name("mirec").experiment_id])
    (grid,) = [r for r in runs if r.info.run_name == "tiny-grid"]
    cells = {r.info.run_name: r for r in runs if r is not grid}
    assert all(r.data.tags["mlflow.parentRunId"] == grid.info.run_id for r in cells.values())
    youtube = next(name for name in cells if "youtube-dnn" in name)
    assert len(cells) == 2 and any("most-popular" in name for name in cells)
    cell_dir = tmp_path / "runs" / youtube
    metrics = json.loads((cell_dir / "metrics.json").read_text())
    run = cells[youtube]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]
    assert run.data.metrics["test/recall_at_50"] == pytest.approx(metrics["test"]["recall@50"])
    # TensorBoard: one subfolder per cell, under the grid's
    assert steps(scalars(tmp_path / "runs" / "tensorboard" / youtube), "train/loss") == [1, 2]


def interrupt_after(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Ctrl-C as epoch ``epoch + 1`` begins: once epoch ``epoch``'s checkpoint is written
    (an interrupted run, which ``--resume`` continues from there)."""
    from mirec.training import trainer

    save = trainer.save_checkpoint

    def save_then_interrupt(path: Path, number: int, *args: object) -> None:
        save(path, number, *args)
        if number == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_interrupt)


def test_a_resumed_run_continues_its_tracked_run_and_overwrite_starts_afresh(
    tmp_path, mirec_main, monkeypatch
):
    from mirec.run_folder import STAGING_DIR
    from mirec.tracking import TRACKING_FILE

    out, database = tmp_path / "runs" / "sa", f"sqlite:///{tmp_path / 'store.db'}"
    three = ["max_epochs=3", "embedding_dim=8", "maxlen=10"]  # resumed after the first
    train = ["train", "--dataset", DATASET, "--model", "comirec-sa", "--output-dir", str(out),
             "--quiet", "--track", "mlflow,tensorboard", "--tracking-uri", database,
             "--experiment-name", "resume-test"]  # fmt: skip
    client = MlflowClient(database)

    def runs() -> list:
        experiment = client.get_experiment_by_name("resume-test")
        return client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])

    def loss_steps(run_id: str) -> list[int]:
        return [m.step for m in client.get_metric_history(run_id, "train/loss")]

    with monkeypatch.context() as patched:
        interrupt_after(patched, 1)
        code, _, stderr = mirec_main(*train, *sets(*three))
    assert code == 130, stderr  # interrupted
    (first,) = runs()
    assert first.info.status == "KILLED" and loss_steps(first.info.run_id) == [1]
    kept = json.loads((out / STAGING_DIR / TRACKING_FILE).read_text())
    assert kept == {"mlflow": first.info.run_id}
    assert steps(scalars(out / "tensorboard"), "train/loss") == [1]

    # resumed with another inference-time setting: MLflow keeps the parameter, and tags it
    code, _, stderr = mirec_main(*train, "--resume", *sets(*three, "diversity_lambda=0.5"))
    assert code == 0, stderr
    (resumed,) = runs()  # the same run, FINISHED, every epoch in it
    metrics = json.loads((out / "metrics.json").read_text())
    assert resumed.info.run_id == first.info.run_id and resumed.info.status == "FINISHED"
    assert loss_steps(resumed.info.run_id) == [1, 2, 3]
    losses = [m.value for m in client.get_metric_history(resumed.info.run_id, "train/loss")]
    assert losses == pytest.approx([epoch["loss"] for epoch in metrics["history"]])
    assert resumed.data.metrics["test/recall_at_50"] == pytest.approx(metrics["test"]["recall@50"])
    assert resumed.data.params["diversity_lambda"] == "null"
    assert resumed.data.tags["mirec.resumed_with.diversity_lambda"] == "0.5"
    # TensorBoard: the resumed run's event file beside the first, its steps after them
    # (sorted: TensorBoard reads the files in name order, by the second each was opened,
    # and both were opened in one second here)
    events = scalars(out / "tensorboard")
    assert sorted(steps(events, "train/loss")) == [1, 2, 3]
    assert sorted(steps(events, "valid/recall_at_50")) == [1, 2, 3]
    old_files = sorted(path.name for path in (out / "tensorboard").iterdir())
    assert len(old_files) == 2

    # --overwrite: a new MLflow run, and TensorBoard shows it alone
    code, _, stderr = mirec_main(*train, "--overwrite", *sets(*three))
    assert code == 0, stderr
    old, new = runs()
    assert old.info.run_id == first.info.run_id and new.info.status == "FINISHED"
    assert loss_steps(new.info.run_id) == [1, 2, 3]
    assert new.data.params["diversity_lambda"] == "null"
    events = scalars(out / "tensorboard")
    assert steps(events, "train/loss") == steps(events, "valid/recall_at_50") == [1, 2, 3]
    (status,) = events.Tensors("status/text_summary")
    assert status.tensor_proto.string_val[0] == b"FINISHED"
    assert not set(old_files) & {path.name for path in (out / "tensorboard").iterdir()}


def test_the_python_api_tracks_as_the_command_does(tmp_path):
    import mirec

    database = f"sqlite:///{tmp_path / 'api.db'}"
    mirec.train(dataset=DATASET, model="youtube-dnn", output_dir=tmp_path / "yt", progress=False,
                track="mlflow", tracking_uri=database, experiment_name="from-python",
                max_epochs=2, embedding_dim=8, maxlen=10)  # fmt: skip
    client = MlflowClient(database)
    (run,) = client.search_runs([client.get_experiment_by_name("from-python").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["model"] == "youtube-dnn"
    assert "test/recall_at_50" in run.data.metrics
    assert not (tmp_path / "yt" / "tensorboard").exists()


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["--track", "wandb"], ["--track 'wandb'", "expected mlflow or tensorboard"]),
        (["--track", "mlflow,tb"], ["--track 'mlflow,tb'"]),
        (["--tracking-uri", "sqlite:///x.db"], ["--tracking-uri: goes with --track mlflow"]),
        (["--track", "mlflow", "--experiment-name", " "], ["--experiment-name: must not be"]),
        (["--track", "mlflow", "--tracking-uri", ""], ["--tracking-uri: must not be empty"]),
        (["--track", "mlflow", "--tracking-uri", "nosuch://x"], ["--tracking-uri nosuch://x"]),
    ],
)
def test_bad_tracking_options_are_one_line_before_anything_trains(
    tmp_path, mirec_main, options, fragments
):
    out = tmp_path / "run"
    code, _, stderr = mirec_main(
        "train", "--dataset", DATASET, "--model", "comirec-sa", "--output-dir", str(out),
        "--quiet", *options,
    )  # fmt: skip
    assert code == 2, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("mirec: error: ") and all(f in line for f in fragments), line
    assert not out.exists()


# `python -c BLOCKER MODULE ARGS...`: mirec's entry point with MODULE unimportable, as when
# the track extra is not installed
BLOCKER = """
import sys
sys.modules[sys.argv[1]] = None
sys.argv = ["mirec", *sys.argv[2:]]
from mirec.cli.main import main
main()
"""


@pytest.mark.parametrize("backend", ["mlflow", "tensorboard"])
def test_a_missing_track_extra_is_one_line_naming_it(tmp_path, backend):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, backend, "train", "--dataset", DATASET, "--model",
         "comirec-sa", "--output-dir", str(out), "--quiet", "--track", backend],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
    )  # fmt: skip
    user_error(result, f"--track {backend} needs the track extra", "pip install 'mirec[track]'")
    assert not out.exists()
